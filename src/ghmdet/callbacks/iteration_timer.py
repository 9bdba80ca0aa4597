"""Seconds per training iteration: the timing figure of the run record and of the ablation timing table."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


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
