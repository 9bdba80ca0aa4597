"""The LightningModule: optimisation, logging, COCO mAP, divergence stop.

Built from ``conf/module/``: the detector is passed in, the optimizer and the schedule come as partial
configs (``conf/optimizer/``, ``conf/scheduler/``) that :meth:`DetectionModule.configure_optimizers`
completes with the trainable parameters and the run's number of optimizer steps.

Resume: besides what Lightning checkpoints (weights with the GHM EMA buffers, optimizer, scheduler, loop
position, the train loader's position), ``on_save_checkpoint`` stores the Python/NumPy/torch random states and
``on_train_start`` of a resumed run puts them back, so a killed run continues with the same random draws.

What the run record gets from here (:meth:`DetectionModule.record_fields`): ``val_history`` (every periodic
validation with its global step, kept across a resume), ``per_class`` AP / AP50 of the test by category name,
and ``detections_test``: the single-pass test detections written (by global rank 0) as a COCO results file in
the run dir, with original image and category ids and boxes in the original image's pixels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from ghmdet.distributed import is_rank_zero
from ghmdet.evaluation import CocoDetectionMetrics, coco_results
from ghmdet.files import write_text_atomic
from ghmdet.losses import NonFiniteInputError
from ghmdet.run.divergence import LossHistory, json_number
from ghmdet.run.rng_state import RNG_STATES_KEY, capture_rng_states, restore_rng_states
from ghmdet.schedule import warmup_lr_scheduler

Batch = tuple[list[Tensor], list[dict[str, Tensor]]]
#: ``(optimizer, total_steps) -> scheduler`` stepped once per optimizer step (``conf/scheduler/``)
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
#: the COCO results file of the test's single pass, in the run dir (named in metrics.json)
DETECTIONS_FILE = "detections_test.json"
_VAL_HISTORY_KEY = "ghmdet_val_history"


class DetectionModule(L.LightningModule):
    """Trains a detector whose ``forward`` returns a loss dict in train mode and detections in eval mode.

    Args:
        model: the detector (``ghmdet.model.build_retinanet``).
        optimizer: ``params -> optimizer`` (a partial ``torch.optim`` class).
        scheduler: ``(optimizer, total_steps=...) -> scheduler``, stepped every optimizer step; None is
            :func:`ghmdet.schedule.warmup_lr_scheduler` with its defaults (the released recipe).
        metric_backend: the COCO evaluation backend.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: SchedulerFactory | None = None,
        metric_backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory: SchedulerFactory = scheduler or warmup_lr_scheduler
        self.val_metrics = CocoDetectionMetrics(backend=metric_backend)
        self.test_metrics = CocoDetectionMetrics(backend=metric_backend, keep_detections=True)
        # With test-time augmentation on, the test also scores the single pass (the paper's protocol), so a
        # run's record holds both and TTA results are never compared with single-pass tables by mistake.
        self.test_single_pass_metrics = CocoDetectionMetrics(backend=metric_backend, keep_detections=True)
        #: Filled when the loss stops being finite (see training_step); read by the entry point.
        self.divergence: dict[str, Any] | None = None
        self.final_metrics: dict[str, dict[str, float]] = {}
        #: every periodic validation: {"step": global step, "AP": ..., ...}
        self.val_history: list[dict[str, float | int]] = []
        #: per stage ("test", "test_single_pass"): {name: {"category_id", "AP", "AP50"}}
        self.per_class: dict[str, dict[str, dict[str, Any]]] = {}
        #: what metrics.json says about the detections file (None until the test wrote it)
        self.detections_test: dict[str, Any] | None = None
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
        checkpoint[_VAL_HISTORY_KEY] = [dict(entry) for entry in self.val_history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint's random states for :meth:`on_train_start` (set-up code draws in between)."""
        self._rng_states_to_restore = checkpoint.get(RNG_STATES_KEY)
        # a resumed run's record still holds the validations before the kill
        self.val_history = [dict(entry) for entry in checkpoint.get(_VAL_HISTORY_KEY, [])]

    def on_train_start(self) -> None:
        """On resume, put back the random states of the moment the checkpoint was written."""
        if self._rng_states_to_restore is not None:
            restore_rng_states(self._rng_states_to_restore)
            self._rng_states_to_restore = None

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        scheduler = self.scheduler_factory(
            optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
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
        image_ids = None
        if metrics.keep_detections and all("image_id" in t for t in targets):
            image_ids = [int(t["image_id"]) for t in targets]
        metrics.update(
            [{k: d[k] for k in ("boxes", "scores", "labels")} for d in detections],
            [_metric_target(t) for t in targets],
            image_ids=image_ids,
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

    def _log_metrics(self, stage: str, metrics: CocoDetectionMetrics) -> dict[str, float]:
        values = metrics.compute()
        metrics.reset()
        for k, v in values.items():
            self.log(f"{stage}/{k}", v, prog_bar=k in ("AP", "AP50"), sync_dist=False)
        self.final_metrics[stage] = {k: float(v) for k, v in values.items()}
        return self.final_metrics[stage]

    def on_validation_epoch_end(self) -> None:
        if self.divergence is not None:  # keep the last validation before the divergence
            self.val_metrics.reset()
            return
        values = self._log_metrics("val", self.val_metrics)
        if not self.trainer.sanity_checking:
            self.val_history.append({"step": int(self.global_step), **values})

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)
        self.per_class["test"] = self._named_per_class(self.test_metrics)
        single = self.test_metrics
        if self._uses_tta:
            self._log_metrics("test_single_pass", self.test_single_pass_metrics)
            self.per_class["test_single_pass"] = self._named_per_class(self.test_single_pass_metrics)
            single = self.test_single_pass_metrics
        self._write_detections(single)

    def _categories(self) -> tuple[list[int] | None, list[str] | None, Any]:
        """(label -> COCO category id, label -> name, test dataset) of the datamodule, where it says."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        try:
            ids = list(datamodule.category_ids) if datamodule is not None else None
            names = list(datamodule.category_names) if datamodule is not None else None
        except (AttributeError, RuntimeError):  # not a DetectionDataModule, or not set up
            ids = names = None
        return ids, names, getattr(datamodule, "test_dataset", None)

    def _named_per_class(self, metrics: CocoDetectionMetrics) -> dict[str, dict[str, Any]]:
        ids, names, _ = self._categories()
        labels = range(len(ids)) if ids is not None else sorted(metrics.per_class)
        out: dict[str, dict[str, Any]] = {}
        for label in labels:
            category_id = ids[label] if ids is not None else label
            name = names[label] if names is not None else str(label)
            if name in out:  # two categories of one name: the id tells them apart
                name = f"{name} ({category_id})"
            values = metrics.per_class.get(label, {"AP": None, "AP50": None})
            out[name] = {"category_id": category_id, **values}
        return out

    def _write_detections(self, metrics: CocoDetectionMetrics) -> None:
        """Write the single pass's detections as ``<run dir>/detections_test.json`` (global rank 0)."""
        if self._trainer is None or not metrics.detections:
            return
        ids, _, dataset = self._categories()
        if ids is None:  # labels are the category ids then
            ids = {label: label for d in metrics.detections for label in d.labels.tolist()}
        results = coco_results(metrics.detections, ids)
        path = Path(self.trainer.default_root_dir) / DETECTIONS_FILE
        if is_rank_zero():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(results) + "\n")
        ann_file = getattr(dataset, "ann_file", None)
        self.detections_test = {
            "file": DETECTIONS_FILE,
            # which record numbers the file re-scores to: the single pass's
            "metrics": "metrics_single_pass" if metrics is self.test_single_pass_metrics else "metrics",
            "ann_file": str(Path(ann_file).resolve()) if ann_file is not None else None,
            "image_ids": [d.image_id for d in metrics.detections],
            "detections": len(results),
        }

    def record_fields(self) -> dict[str, Any]:
        """What ``metrics.json`` gets from this module besides the metrics: val_history, per_class, files."""
        fields: dict[str, Any] = {"val_history": [dict(entry) for entry in self.val_history]}
        if "test" in self.per_class:
            fields["per_class"] = self.per_class["test"]
        if "test_single_pass" in self.per_class:
            fields["per_class_single_pass"] = self.per_class["test_single_pass"]
        if self.detections_test is not None:
            fields["detections_test"] = dict(self.detections_test)
        return fields


def is_non_finite_error(err: BaseException) -> bool:
    """Whether ``err`` is a loss refusing non-finite inputs (GHM ``check_finite``), i.e. a divergence."""
    return isinstance(err, NonFiniteInputError)


def _metric_target(target: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {"boxes": target["boxes"], "labels": target["labels"]}
    if "iscrowd" in target:
        out["iscrowd"] = target["iscrowd"]
    return out
