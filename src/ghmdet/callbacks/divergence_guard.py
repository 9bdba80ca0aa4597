"""Stop a run whose weights stop being finite, and keep its blown-up state out of every checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from ghmdet.run.divergence import model_state_finite


class DivergenceGuard(L.Callback):
    """Stops training when the module reports a non-finite loss or the weights stop being finite.

    After every optimizer step the parameters and floating buffers are checked (one fused norm). On a
    divergence, ``pl_module.divergence`` is filled (if the module did not already), ``trainer.should_stop`` is
    set and the checkpoint callbacks are switched off: each :class:`ModelCheckpoint` is told that this step is
    already saved (its ``on_train_batch_end`` runs after this hook: Lightning orders checkpoint callbacks
    last), then all are removed from the trainer, so that neither the end-of-epoch, validation nor
    ``on_train_end`` saves (the latter writes ``last.ckpt`` when none was written yet) store the blown-up
    state. ``last.ckpt`` stays the last good one, or does not exist if the run diverged before the first save.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        divergence = getattr(pl_module, "divergence", None)
        if divergence is None and not model_state_finite(pl_module):
            # The update of step global_step - 1 (0-based, = updates applied before it) blew the state up.
            step = int(trainer.global_step) - 1
            divergence = {
                "step": step,
                "epoch": int(trainer.current_epoch),
                "reason": f"parameters or buffers became non-finite in the optimizer update of step {step}",
                "losses": {},
            }
            record = getattr(pl_module, "record_divergence", None)
            if callable(record):
                record(divergence)
            else:
                pl_module.divergence = divergence  # type: ignore[assignment]
        if divergence is None:
            return
        trainer.should_stop = True
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                # ModelCheckpoint skips saving when it believes this global step is saved already.
                callback._last_global_step_saved = trainer.global_step
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, Checkpoint)]
