"""SIGTERM / SIGINT during a run: stop at a step boundary with a saved checkpoint, exit with 128 + signal."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT stopped the run (a BaseException, like KeyboardInterrupt: no ``except Exception``
    on the way swallows it). ``message`` is the line for the user once the run is recorded."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or signal.Signals(signum).name)
        self.signum = signum
        self.message = message

    def __reduce__(self) -> tuple[type[RunInterrupted], tuple[int, str], dict[str, Any]]:
        # A launcher (joblib, submitit) pickles a job's exception back to the parent; the default rebuilds
        # it from ``args`` (the message), which is not what __init__ takes.
        return type(self), (self.signum, self.message), self.__dict__

    @property
    def exit_status(self) -> int:
        """128 + the signal number (143 for SIGTERM, 130 for SIGINT), as a shell reports a signal's kill."""
        return 128 + self.signum


class InterruptHandler:
    """SIGTERM (schedulers, ``timeout``, SLURM preemption) and SIGINT (Ctrl+C) during a run.

    Installed for the run's duration. Inside ``trainer.fit`` / ``trainer.test`` Lightning has its own
    SIGTERM handler, which calls the one installed before it (this one): Lightning sets
    ``trainer.received_sigterm`` and its loops raise ``SIGTERMException`` after the current batch, hooks
    and checkpoint callbacks included; :class:`~ghmdet.callbacks.RunCheckpoints` then saves ``last.ckpt``.
    This handler only notes the signal there. A first SIGINT takes the same path (Lightning's own
    KeyboardInterrupt handling stops wherever the interrupt lands, mid-update included, and exits 1); a
    second one stops at once.
    Outside Lightning's loops (building, after the test) either signal raises :class:`RunInterrupted`.
    Set :attr:`trainer` once the Trainer exists.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptHandler:
        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def stop_signal(self, err: BaseException) -> int | None:
        """The signal that ``err`` (raised out of the run) is the stop of; None when it is not a stop.

        ``RunInterrupted`` and ``KeyboardInterrupt`` are stops, and so is ``SIGTERMException`` (Lightning's
        stop on SIGTERM, a ``SystemExit``); any other ``SystemExit`` is one only after this handler saw a
        signal.
        """
        if isinstance(err, SystemExit) and not isinstance(err, SIGTERMException) and not self.signum:
            return None
        if not isinstance(err, (RunInterrupted, KeyboardInterrupt, SystemExit)):
            return None
        return self.signum or (signal.SIGTERM if isinstance(err, SIGTERMException) else signal.SIGINT)

    @property
    def signal_name(self) -> str:
        """The name of the first signal received (``SIGTERM``), or ``SIGINT`` when none was seen."""
        return signal.Signals(self.signum or signal.SIGINT).name

    def _in_lightning_loop(self) -> bool:
        trainer = self.trainer
        if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
            return False
        # Lightning installs its SIGTERM handler for the duration of fit / test and restores this one after.
        return signal.getsignal(signal.SIGTERM) != self._handle

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self._in_lightning_loop() and (first or signum == signal.SIGTERM):
            if signum == signal.SIGINT:
                self.trainer._signal_connector.received_sigterm = True  # type: ignore[union-attr]
            log.warning(
                "%s received: stopping after the current step, saving a checkpoint%s",
                signal.Signals(signum).name,
                " (Ctrl+C again stops at once, without one)" if signum == signal.SIGINT else "",
            )
            return
        raise RunInterrupted(signum)
