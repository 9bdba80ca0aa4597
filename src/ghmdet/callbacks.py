"""Lightning callbacks of the suite."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes


class IterationTimer(L.Callback):
    """Seconds per training iteration (data loading + forward + backward + step), median over the run.

    Measured end-of-batch to end-of-batch, so the data loading of each batch is included.

    The first ``skip`` iterations (allocator and thread-pool warm-up) are excluded. The median is robust to
    the validation passes and checkpoint writes that fall between two iterations.
    """

    def __init__(self, skip: int = 5):
        self.skip = skip
        self.durations: list[float] = []
        self._last: float | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.durations.append(now - self._last)
        self._last = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None  # the time spent validating is not an iteration

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None

    @property
    def seconds_per_iteration(self) -> float | None:
        values = sorted(self.durations[self.skip :]) or sorted(self.durations)
        if not values:
            return None
        return values[len(values) // 2]


class PredictionImages(L.Callback):
    """Draws the first test images with their ground truth (green) and predictions (red) after testing.

    The pictures go to ``<run dir>/predictions/*.png`` and, when a W&B logger is attached, into the run as
    ``test/predictions`` so that a user sees what the detector finds, not only its AP.
    """

    def __init__(self, num_images: int = 4, score_threshold: float = 0.3):
        self.num_images = num_images
        self.score_threshold = score_threshold
        self._drawn: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._drawn = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if len(self._drawn) >= self.num_images or not outputs:
            return
        images, targets = batch
        for image, target, det in zip(images, targets, outputs):
            if len(self._drawn) >= self.num_images:
                break
            picture = (image.detach().cpu().clamp(0, 1) * 255).to(torch.uint8)
            picture = draw_bounding_boxes(picture, target["boxes"].cpu(), colors="lime", width=1)
            keep = det["scores"] >= self.score_threshold
            picture = draw_bounding_boxes(picture, det["boxes"][keep].detach().cpu(), colors="red", width=2)
            self._drawn.append(picture)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._drawn or not trainer.is_global_zero:
            return
        out_dir = Path(trainer.default_root_dir) / "predictions"
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(self._drawn):
            write_png(picture, str(out_dir / f"test_{i}.png"))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="test/predictions",
                    images=[p.permute(1, 2, 0).numpy() for p in self._drawn],
                    caption=[f"green: ground truth, red: score >= {self.score_threshold}"] * len(self._drawn),
                )
