"""The LightningModule: optimisation (warm-up + step/cosine schedule), logging, COCO mAP, divergence stop.

Resume: besides what Lightning checkpoints (weights with the GHM EMA buffers, optimizer, scheduler, loop
position, the train loader's position), ``on_save_checkpoint`` stores the Python/NumPy/torch random states and
``on_train_start`` of a resumed run puts them back, so a killed run continues with the same random draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from ghmdet.evaluation import CocoDetectionMetrics
from ghmdet.losses import NonFiniteInputError
from ghmdet.reliability import (
    RNG_STATES_KEY,
    LossHistory,
    capture_rng_states,
    json_number,
    restore_rng_states,
)

Batch = tuple[list[Tensor], list[dict[str, Tensor]]]


def lr_factor(
    step: int,
    total_steps: int,
    warmup_iters: int = 500,
    warmup_ratio: float = 1.0 / 3.0,
    policy: Literal["step", "cosine", "constant"] = "step",
    milestones: Sequence[float] = (8 / 12, 11 / 12),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``.

    Linear warm-up from ``warmup_ratio`` to 1 over ``warmup_iters`` steps (mmdetection's 'linear'), then
    ``step``: times ``gamma`` at each milestone, given as a fraction of training so that one config serves
    epoch- and iteration-budgeted runs (paper recipe: epochs 8 and 11 of 12); or ``cosine`` to ``min_factor``.
    """
    if policy == "step":
        factor = gamma ** sum(step >= m * total_steps for m in milestones)
    elif policy == "cosine":
        progress = min(step / max(total_steps, 1), 1.0)
        factor = min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif policy == "constant":
        factor = 1.0
    else:
        raise ValueError(f"scheduler.policy must be 'step', 'cosine' or 'constant', got {policy!r}")
    if step < warmup_iters:
        factor *= warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    return factor


class DetectionModule(L.LightningModule):
    """Trains a detector whose ``forward`` returns a loss dict in train mode and detections in eval mode."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: dict[str, Any] | None = None,
        metric_backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_cfg = dict(scheduler or {})
        self.val_metrics = CocoDetectionMetrics(backend=metric_backend)
        self.test_metrics = CocoDetectionMetrics(backend=metric_backend)
        # With test-time augmentation on, the test also scores the single pass (the paper's protocol), so a
        # run's record holds both and TTA results are never compared with single-pass tables by mistake.
        self.test_single_pass_metrics = CocoDetectionMetrics(backend=metric_backend)
        #: Filled when the loss stops being finite (see training_step); read by the entry point.
        self.divergence: dict[str, Any] | None = None
        self.final_metrics: dict[str, dict[str, float]] = {}
        self.loss_history = LossHistory(size=10)
        self._rng_states_to_restore: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training
    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.model(images)

    def record_divergence(self, divergence: Mapping[str, Any]) -> None:
        """Note the first divergence (step, epoch, reason, loss values, the last finite losses) and stop."""
        if self.divergence is not None:
            return
        self.divergence = {**divergence, "recent_losses": self.loss_history.as_records()}
        if self._trainer is not None:
            self.trainer.should_stop = True

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        images, targets = batch
        try:
            losses = self.model(images, targets)
        except ValueError as err:
            # The GHM losses refuse non-finite logits/deltas before touching their EMA state.
            if not is_non_finite_error(err):
                raise
            losses, reason = {}, f"{type(err).__name__}: {err}"
        else:
            reason = None
        loss = sum(losses.values()) if losses else None
        finite = loss is not None and bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:  # every rank skips the step, or DDP's gradient all-reduce hangs
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            # Stop cleanly instead of training on NaN: the weights of this step are never updated (we return
            # None, so Lightning skips backward and the optimizer step); DivergenceGuard keeps the
            # checkpoint callbacks from saving, so the last checkpoint stays the last good one.
            values = {k: json_number(float(v.detach())) for k, v in losses.items()}
            self.record_divergence(
                {
                    "step": int(self.global_step),
                    "epoch": int(self.current_epoch),
                    "reason": reason or f"non-finite loss {values}",
                    "losses": values,
                }
            )
            return None
        self.loss_history.append(int(self.global_step), losses)
        bs = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in losses.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    # ------------------------------------------------------------------ resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the random states next to the weights (plain tensors: loads with ``weights_only=True``)."""
        checkpoint[RNG_STATES_KEY] = capture_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint's random states for :meth:`on_train_start` (set-up code draws in between)."""
        self._rng_states_to_restore = checkpoint.get(RNG_STATES_KEY)

    def on_train_start(self) -> None:
        """On resume, put back the random states of the moment the checkpoint was written."""
        if self._rng_states_to_restore is not None:
            restore_rng_states(self._rng_states_to_restore)
            self._rng_states_to_restore = None

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        total = int(self.trainer.estimated_stepping_batches)
        cfg = self.scheduler_cfg
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, **cfg))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(
        self, batch: Batch, metrics: CocoDetectionMetrics, single_pass: bool = False
    ) -> list[dict[str, Tensor]]:
        images, targets = batch
        detections = self.model.detect_single_pass(images) if single_pass else self.model(images)
        self._update(metrics, detections, targets)
        return detections

    @staticmethod
    def _update(
        metrics: CocoDetectionMetrics, detections: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
    ) -> None:
        metrics.update(
            [{k: d[k] for k in ("boxes", "scores", "labels")} for d in detections],
            [_metric_target(t) for t in targets],
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]]:
        if self.divergence is not None:  # Lightning still validates at the epoch end: nothing to measure
            return []
        # the periodic validation tracks training progress: one pass per image, not one per TTA view (8x
        # cheaper with model.tta=dihedral); the test scores both
        return self._eval_step(batch, self.val_metrics, single_pass=self._uses_tta)

    def test_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]]:
        if self._uses_tta:
            self._eval_step(batch, self.test_single_pass_metrics, single_pass=True)
        return self._eval_step(batch, self.test_metrics)

    @property
    def _uses_tta(self) -> bool:
        return getattr(self.model, "tta", None) is not None

    def _log_metrics(self, stage: str, metrics: CocoDetectionMetrics) -> None:
        values = metrics.compute()
        metrics.reset()
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, prog_bar=k in ("AP", "AP50"), sync_dist=False)
        self.final_metrics[stage] = {k: float(v) for k, v in values.items()}

    def on_validation_epoch_end(self) -> None:
        if self.divergence is not None:  # keep the last validation before the divergence
            self.val_metrics.reset()
            return
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)
        if self._uses_tta:
            self._log_metrics("test_single_pass", self.test_single_pass_metrics)


def is_non_finite_error(err: BaseException) -> bool:
    """Whether ``err`` is a loss refusing non-finite inputs (GHM ``check_finite``), i.e. a divergence."""
    return isinstance(err, NonFiniteInputError)


def _metric_target(target: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {"boxes": target["boxes"], "labels": target["labels"]}
    if "iscrowd" in target:
        out["iscrowd"] = target["iscrowd"]
    return out
