"""Under DDP, every rank must hold the same GHM statistics when they are synchronised (``sync_stats``)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from ghmdet.losses.ghm import GradientHarmonizedLoss

log = logging.getLogger(__name__)


def _ghm_losses(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, GradientHarmonizedLoss)]


class GHMStateCheck(L.Callback):
    """Checks at the end of training that every rank holds the same GHM statistics (``sync_stats=True``).

    With ``sync_stats`` on, the histogram is all-reduced, so the EMA buffers (``acc_sum``) and the latest
    histogram (``last_counts``) must agree bit for bit on all ranks; a difference means the statistics were
    not global, and ``strict`` turns it into an error. Losses with ``sync_stats=False`` are reported, not
    checked (per-rank statistics are then expected). ``dump=True`` also writes each rank's buffers to
    ``<run dir>/ghm_state/rank<r>.pt``.
    """

    def __init__(self, strict: bool = True, dump: bool = False) -> None:
        self.strict = strict
        self.dump = dump

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {
            f"{name}.{buffer}": getattr(loss, buffer).detach().clone()
            for name, loss in _ghm_losses(pl_module)
            for buffer in ("acc_sum", "last_counts")
        }
        if self.dump:
            out_dir = Path(trainer.default_root_dir) / "ghm_state"
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.cpu() for k, v in state.items()}, out_dir / f"rank{trainer.global_rank}.pt")
        if trainer.world_size == 1:
            return
        synced = {name for name, loss in _ghm_losses(pl_module) if getattr(loss, "sync_stats", False)}
        mismatched = []
        for key, value in state.items():
            gathered = trainer.strategy.all_gather(value)  # [world, bins]; every rank takes part
            if key.rsplit(".", 1)[0] in synced and not bool((gathered == gathered[0]).all()):
                mismatched.append(key)
        if mismatched:
            message = f"GHM statistics differ between ranks although sync_stats=True: {mismatched}"
            if self.strict:
                raise RuntimeError(message)
            log.warning(message)
