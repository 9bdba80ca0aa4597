"""Fault injectors for the reliability tests, added to a real run with Hydra overrides such as
``+callbacks.fault={_target_:reliability_faults.CorruptWeights,step:6}`` (with this folder on ``PYTHONPATH``).

Each simulates one way a long run blows up, at a chosen global step, so that the test knows which checkpoint
must survive.
"""

from __future__ import annotations

import builtins
import errno
import math
import os
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


class _FullDiskFile:
    """A binary file that takes ``room`` bytes, then fails every write with ENOSPC (a disk filling up)."""

    def __init__(self, handle: Any, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def full_disk_open(room: int = 4096) -> Any:
    """An ``open`` whose binary files for writing fill up after ``room`` bytes."""

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (the caller closes it)
        return _FullDiskFile(handle, room) if "w" in mode and "b" in mode else handle

    return fake_open


class FullDisk(L.Callback):
    """From global step ``step`` on, the checkpoint writes of :mod:`ghmdet.run.checkpoint_io` hit a full disk.

    Simulates a disk that fills up mid-run (the run's other files, metrics.json among them, still write).
    """

    def __init__(self, step: int, room: int = 4096) -> None:
        self.step, self.room = step, room

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            import ghmdet.run.checkpoint_io

            ghmdet.run.checkpoint_io.open = full_disk_open(self.room)  # type: ignore[attr-defined]


class SendSignal(L.Callback):
    """Before the batch of global step ``step``: the process sends itself ``signum`` (SIGTERM by default).

    A scheduler's SIGTERM or a Ctrl+C landing at a known step, mid-interval of the checkpoints.
    """

    def __init__(self, step: int, signum: int = 15) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class FillDisk(L.Callback):
    """Before the batch of global step ``step``: fill the run dir's file system (a file beside the run dir).

    With the run dir on a small file system of its own (a tmpfs), the next write of the run hits a real
    "No space left on device".
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step != self.step:
            return
        filler = os.path.join(os.path.dirname(trainer.default_root_dir), "filler")
        with builtins.open(filler, "wb", buffering=0) as handle:
            for size in (2**20, 2**12, 1):
                try:
                    while handle.write(b"\0" * size):
                        pass
                except OSError:
                    continue
