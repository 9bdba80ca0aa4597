"""Pictures of what the detector finds on the first test images (ground truth and predictions drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes


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
