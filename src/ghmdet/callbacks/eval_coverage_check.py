"""Under DDP, each evaluation pass must see every image of its split exactly once (unbiased COCO mAP)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist

log = logging.getLogger(__name__)


class EvalCoverageCheck(L.Callback):
    """Checks that each validation / test pass saw every image of its split exactly once over all ranks.

    Lightning's default ``DistributedSampler`` pads the split by repeating images, which biases COCO mAP; the
    suite's unpadded sampler must make the union of the ranks' images equal the dataset. The check gathers the
    ``image_id`` of every evaluated target (one all-gather per pass) and raises ``RuntimeError`` on duplicates
    or missing images when ``strict``. ``dump=True`` writes the counts to ``<run dir>/eval_coverage.json``
    (rank 0).
    """

    def __init__(self, strict: bool = True, dump: bool = False) -> None:
        self.strict = strict
        self.dump = dump
        self._seen: list[int] = []
        self.reports: dict[str, dict[str, Any]] = {}

    def _reset(self, *_: Any) -> None:
        self._seen = []

    on_validation_epoch_start = _reset
    on_test_epoch_start = _reset

    def _record(self, batch: Any) -> None:
        _, targets = batch
        self._seen.extend(int(t["image_id"]) for t in targets)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._record(batch)

    on_test_batch_end = on_validation_batch_end

    def _check(self, trainer: L.Trainer, stage: str, dataloaders: Any) -> None:
        if trainer.sanity_checking:
            return
        seen = list(self._seen)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list[list[int] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, seen)
            seen = [i for part in parts for i in (part or [])]
        loader = dataloaders[0] if isinstance(dataloaders, (list, tuple)) else dataloaders
        dataset = getattr(loader, "dataset", None)
        expected = list(getattr(dataset, "image_ids", [])) if dataset is not None else []
        limit = trainer.limit_val_batches if stage == "val" else trainer.limit_test_batches
        if limit != 1.0:
            expected = []  # a deliberately truncated pass: only duplicates are checked
        duplicates = len(seen) - len(set(seen))
        missing = sorted(set(expected) - set(seen)) if expected else []
        report = {
            "images_evaluated": len(seen),
            "unique_images": len(set(seen)),
            "dataset_images": len(expected) if expected else None,
            "duplicates": duplicates,
            "missing": len(missing),
            "world_size": trainer.world_size,
        }
        self.reports[stage] = report
        if self.dump and trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / "eval_coverage.json"
            previous = json.loads(path.read_text()) if path.is_file() else {}
            previous[stage] = report
            path.write_text(json.dumps(previous, indent=2) + "\n")
        if duplicates or missing:
            message = (
                f"{stage} evaluation over {trainer.world_size} rank(s) saw {duplicates} duplicated and "
                f"{len(missing)} missing image(s) (ids {missing[:10]}...); COCO mAP would be biased"
            )
            if self.strict:
                raise RuntimeError(message)
            log.warning(message)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, "test", trainer.test_dataloaders)
