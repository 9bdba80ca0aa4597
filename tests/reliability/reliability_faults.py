"""Fault injectors for the reliability tests, added to a real run with Hydra overrides such as
``+callbacks.fault={_target_:reliability_faults.CorruptWeights,step:6}`` (with this folder on ``PYTHONPATH``).

Each simulates one way a long run blows up, at a chosen global step, so that the test knows which checkpoint
must survive.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch


def _first_weight(module: torch.nn.Module) -> torch.nn.Parameter:
    return next(p for p in module.parameters() if p.requires_grad and p.dim() > 1)


class CorruptWeights(L.Callback):
    """Before the batch of global step ``step``: fill one conv weight with ``value`` (NaN by default).

    Simulates weights that an earlier update made non-finite: the forward pass of this step gives a
    non-finite loss (or a GHM loss refuses its non-finite logits).
    """

    def __init__(self, step: int, value: float = math.nan) -> None:
        self.step, self.value = step, value

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                _first_weight(pl_module).fill_(self.value)


class BlowUpAfterStep(L.Callback):
    """After the optimizer step that makes global step ``step``: set one weight to ``value`` (inf default).

    Simulates an update that blows the weights up while the loss of that step was still finite. Runs before
    the checkpoint callbacks (Lightning orders those last), so a save due at this step must not happen.
    """

    def __init__(self, step: int, value: float = math.inf) -> None:
        self.step, self.value = step, value

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                weight = _first_weight(pl_module)
                weight[(0,) * weight.dim()] = self.value


class ScaleLoss(L.Callback):
    """From global step ``step`` on, multiply the model's loss terms by ``factor`` (inf: an infinite loss)."""

    def __init__(self, step: int, factor: float = math.inf) -> None:
        self.step, self.factor = step, factor
        self._wrapped = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        original = model.forward
        callback = self

        def forward(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if model.training and trainer.global_step >= callback.step and isinstance(out, dict):
                out = {k: v * callback.factor for k, v in out.items()}
            return out

        model.forward = forward  # type: ignore[method-assign]
