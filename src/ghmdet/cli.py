"""How ``ghmdet-train`` ends: exit statuses and one-line errors for what a user can fix.

========  =====================================================================================
0         the run completed, diverged (recorded) or was skipped (already finished)
1         a bug or an unexpected failure: the traceback (recorded as ``failed`` where possible)
2         a problem the user fixes (config, data, checkpoint, output dir, busy dir, another config's
          run dir): one line ``ghmdet-train: error: ...`` on stderr, no traceback
128 + n   stopped by signal n (143 SIGTERM, 130 SIGINT): one line ``ghmdet-train: interrupted by ...``
========  =====================================================================================

``HYDRA_FULL_ERROR=1`` set by the user keeps every traceback. A stop becomes its exit status inside the Hydra
job (:func:`interrupt_exit`). A single run's error is turned into its line inside the Hydra job
(:func:`one_line_errors`), before Hydra would print its own report; in a multirun a
failing job does not end the sweep: Hydra re-raises it once the sweep is done, and :func:`main` ends that.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf.errors import OmegaConfBaseException

from ghmdet.config_validation import ConfigError, override_parse_problem
from ghmdet.data.annotations import DatasetError
from ghmdet.errors import error_lines
from ghmdet.run.checkpoint_io import CheckpointError
from ghmdet.run.config_compare import ConfigMismatchError
from ghmdet.run.interrupts import RunInterrupted
from ghmdet.run.redaction import redact
from ghmdet.run.run_dir import UNWRITABLE_ERRNOS, OutputDirError, RunDirBusyError, describe_os_error

#: errors a user fixes (config, data, checkpoint, output dir): one line on stderr, exit status 2
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DatasetError,
    CheckpointError,
    OutputDirError,
    ConfigMismatchError,
    RunDirBusyError,
    HydraException,
    OmegaConfBaseException,
    MisconfigurationException,
)


def main(make_app: Callable[[bool], Callable[[], Any]]) -> None:
    """Run the Hydra app that ``make_app(one_line)`` returns, with the exit statuses above.

    ``one_line`` tells the app's job whether to end a user error with one line (:func:`one_line_errors`):
    not when the user set ``HYDRA_FULL_ERROR=1``. Hydra re-raises every error to here when
    ``HYDRA_FULL_ERROR=1``, so it is set for the app's duration.
    """
    full_errors = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises (composition errors, multirun failures) to here
    try:
        make_app(not full_errors)()
    except Exception as err:
        line = None if full_errors else error_line(err)
        if line is None and not full_errors and (unwritable := _unwritable_cause(err)) is not None:
            line = error_line(unwritable)  # e.g. Hydra's log file handler in a read-only run dir
        if line is None:
            raise
        _exit_with(line)
    finally:
        if not full_errors:
            os.environ.pop("HYDRA_FULL_ERROR", None)


@contextlib.contextmanager
def interrupt_exit() -> Iterator[None]:
    """Around a Hydra job: a stopped run (recorded as interrupted) ends with its line and 128 + the signal.

    In the job, so that the process the job runs in exits so: under a remote launcher (submitit, joblib)
    that is the worker, which the scheduler watches, not the process that launched the sweep.
    """
    try:
        yield
    except RunInterrupted as err:
        print(f"ghmdet-train: {err.message}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_status) from None


@contextlib.contextmanager
def one_line_errors(enabled: bool) -> Iterator[None]:
    """Around a Hydra job: a user error of a single run ends with its one line and exit status 2 (when
    ``enabled``); in a multirun the job fails and the sweep goes on (Hydra reports it at the end)."""
    try:
        yield
    except Exception as err:
        line = error_line(err) if enabled else None
        if line is None or (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
            raise
        _exit_with(line)


def _exit_with(line: str) -> None:
    # Secrets never reach the terminal either.
    print(f"ghmdet-train: error: {redact(line)}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def error_line(err: BaseException) -> str | None:
    """One line for an error a user can fix (config, data, checkpoint, output dir); None for anything else."""
    if isinstance(err, OutputDirError):
        return str(err.strerror)
    parse_problem = override_parse_problem(err)
    if parse_problem is not None:
        return f"config error: {parse_problem}"
    if isinstance(err, HydraException):
        # Composition errors ("Could not find 'loss/cls/ghm'", then the options and the search path) and
        # instantiation errors ("Error in call to target ...", then the cause).
        lines = error_lines(err)
        if "Config search path:" in lines:
            lines = lines[: lines.index("Config search path:")]
        if lines and lines[-1].startswith("Available options in"):
            lines[-1] = lines[-1].rstrip(":") + ":"
        options = [line for line in lines if " " not in line and not line.endswith(".")]
        text = " ".join(line for line in lines if line not in options)
        if options:
            text += " " + ", ".join(options)
        cause = err.__cause__
        if cause is not None and str(cause).strip() and str(cause).strip() not in text:
            text += f" ({type(cause).__name__}: {' '.join(error_lines(cause))})"
        text = " ".join(part for part in text.split() if not part.startswith("https://hydra.cc"))
        return f"config error: {text}"
    if isinstance(err, OSError):
        if err.errno not in UNWRITABLE_ERRNOS:
            return None
        return f"cannot write results: {describe_os_error(err)}"
    if not isinstance(err, USER_ERRORS):
        return None
    lines = error_lines(err)
    if isinstance(err, DatasetError) and len(lines) > 1:
        # Raised in a DataLoader worker: torch wraps the message in the worker's traceback, whose last line
        # is the original message (naming the file and record) after the exception's qualified name.
        return lines[-1].removeprefix("ghmdet.data.annotations.DatasetError: ")
    return " ".join(lines)


def _unwritable_cause(err: BaseException) -> OSError | None:
    """The OSError of an unwritable or full dir behind ``err`` (``logging.config`` wraps the one of a log
    file handler in ``ValueError: Unable to configure handler``), or None."""
    cause = err.__cause__ or err.__context__
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in UNWRITABLE_ERRNOS:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None
