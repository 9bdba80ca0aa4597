"""``last.ckpt`` is the run's checkpoint: it holds the run's config and its final step; a stop saves it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ghmdet.run.checkpoint_io import RUN_CONFIG_KEY
from ghmdet.run.redaction import redact


class RunCheckpoints(L.Callback):
    """What makes ``last.ckpt`` the run's checkpoint: its config, its final weights, a save on a stop.

    - every checkpoint holds the run's resolved config (:data:`RUN_CONFIG_KEY`), so that a resume compares
      against the config the weights were trained with (:func:`compare_run_configs`);
    - at the end of training, ``last.ckpt`` is saved unless it already holds the final step: Lightning's
      ``ModelCheckpoint`` saves at ``on_train_end`` only when no "last" checkpoint was written yet, so with
      ``max_steps`` not a multiple of ``every_n_train_steps`` it kept an earlier step than the one tested;
    - when Lightning stops on SIGTERM (``SIGTERMException``, raised after a training batch), ``last.ckpt``
      is saved at that step, so a rerun resumes from there; a stop inside a validation pass (between two
      validation batches) keeps the last checkpoint instead.

    After a divergence nothing is saved (:class:`DivergenceGuard`). The saves go through each
    ``ModelCheckpoint``'s own ``save_last`` path, so its bookkeeping stays right.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = redact(dict(config))

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last(trainer, pl_module)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Only a stop at a training batch boundary: any other exception may land mid-update, and a stop
        # inside a validation pass would resume into a half-done validation (the last checkpoint stays).
        if (
            isinstance(exception, SIGTERMException)
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.validating
        ):
            self._save_last(trainer, pl_module)

    @staticmethod
    def _save_last(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "divergence", None) is not None or trainer.sanity_checking:
            return
        for callback in trainer.checkpoint_callbacks:
            if (
                isinstance(callback, ModelCheckpoint)
                and callback.save_last
                and callback._last_global_step_saved != trainer.global_step
            ):
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
