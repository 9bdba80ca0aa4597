"""The LightningModule: optimisation (warm-up + step/cosine schedule), logging, COCO mAP, divergence stop."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from ghmdet.evaluation import CocoDetectionMetrics

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
        #: Filled when the loss stops being finite (see training_step); read by the entry point.
        self.divergence: dict[str, Any] | None = None
        self.final_metrics: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ training
    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            # Stop cleanly instead of training on NaN: the weights of this step are never updated (we return
            # None, so Lightning skips backward and the optimizer step), and the last checkpoint stays good.
            self.divergence = {
                "step": int(self.global_step),
                "epoch": int(self.current_epoch),
                "losses": {k: float(v.detach()) for k, v in losses.items()},
            }
            self.trainer.should_stop = True
            return None
        bs = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in losses.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        total = int(self.trainer.estimated_stepping_batches)
        cfg = self.scheduler_cfg
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, **cfg))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Batch, metrics: CocoDetectionMetrics) -> list[dict[str, Tensor]]:
        images, targets = batch
        detections = self.model(images)
        metrics.update(
            [{k: d[k] for k in ("boxes", "scores", "labels")} for d in detections],
            [_metric_target(t) for t in targets],
        )
        return detections

    def validation_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]]:
        return self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]]:
        return self._eval_step(batch, self.test_metrics)

    def _log_metrics(self, stage: str, metrics: CocoDetectionMetrics) -> None:
        values = metrics.compute()
        metrics.reset()
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, prog_bar=k in ("AP", "AP50"), sync_dist=False)
        self.final_metrics[stage] = {k: float(v) for k, v in values.items()}

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)


def _metric_target(target: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {"boxes": target["boxes"], "labels": target["labels"]}
    if "iscrowd" in target:
        out["iscrowd"] = target["iscrowd"]
    return out
