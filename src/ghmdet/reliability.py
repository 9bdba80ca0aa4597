"""What keeps a long run dependable: RNG state for resume, divergence stop, safe checkpoints, secrets, disk.

The entry point (:mod:`ghmdet.train`) and the LightningModule (:mod:`ghmdet.lit`) use these; the rules and the
faults they were tested against are in ``docs/reliability.md``.

- :func:`capture_rng_states` / :func:`restore_rng_states`: the Python, NumPy and torch (CPU and CUDA) random
  states as plain tensors and ints, so that a checkpoint holding them still loads with ``weights_only=True``.
- :class:`DivergenceGuard`: stops a run whose loss, gradients or weights stop being finite and keeps every
  checkpoint callback from saving the blown-up state.
- :class:`AtomicCheckpointIO`: checkpoints are written beside the target, fsync'ed and renamed over it.
- :func:`check_checkpoint`: a resume checkpoint must load with ``weights_only=True`` (no code runs from it).
- :func:`check_output_dir`: the run dir must be writable (a probe file is written and fsync'ed) and have free
  space, before anything of an earlier run is moved.
- :func:`redact` / :class:`RedactingFilter`: secrets (``WANDB_API_KEY`` and other ``*KEY``/``*TOKEN``/
  ``*SECRET``/``*PASSWORD`` environment values, and config fields named like that) never reach
  ``metrics.json``, logger hyperparameters, ``.hydra/`` or the log.
- :func:`compare_run_configs`: what differs between the config a run started with and the current one,
  split into changes of the result and :data:`RESULT_NEUTRAL_KEYS` (resume and skip refuse the former).
- :class:`RunDirLock`: one process per run dir.
- :class:`InterruptHandler` / :class:`RunCheckpoints`: SIGTERM / SIGINT stop at a step boundary with a saved
  checkpoint; the final step is always saved; every checkpoint carries the run's config.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

#: Key of the random states in a Lightning checkpoint (written by ``DetectionModule.on_save_checkpoint``).
RNG_STATES_KEY = "ghmdet_rng_states"
#: Errors of an output dir that cannot take results (permissions, read-only, full disk, quota).
UNWRITABLE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
)
REDACTED = "<redacted>"
# Environment variables whose values are secrets, and config keys whose values are.
_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
_SECRET_FIELD = re.compile(r"(api_?key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)
# Shorter values would be redacted inside unrelated text (and are no real secrets).
_MIN_SECRET_LENGTH = 8


class OutputDirError(OSError):
    """The run dir cannot take results (unwritable, read-only, full); raised before anything is written."""


class CheckpointError(RuntimeError):
    """A resume checkpoint is unreadable or holds more than tensors and plain values."""


# ---------------------------------------------------------------------------------------------- RNG states


def capture_rng_states() -> dict[str, Any]:
    """The Python, NumPy and torch random states, as tensors, ints and lists (``weights_only``-safe)."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(numpy_state["state"]["key"], dtype=np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = list(torch.cuda.get_rng_state_all())
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng_states` returned (missing parts are left as they are)."""
    if "python" in states:
        python = states["python"]
        random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    if "numpy" in states:
        state = states["numpy"]
        np.random.set_state(
            {
                "bit_generator": state["bit_generator"],
                "state": {"key": state["key"].numpy().astype(np.uint32), "pos": state["pos"]},
                "has_gauss": state["has_gauss"],
                "gauss": state["gauss"],
            }
        )
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------------------------- divergence


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor is free of NaN/Inf (one fused norm, one host read-back)."""
    floating = [t.detach() for t in tensors if t.is_floating_point() and t.numel()]
    if not floating:
        return True
    # The 2-norm of all tensors is finite iff every element is (barring float32 overflow of the squares
    # beyond 1e19 per element, which is a blow-up as well).
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(floating, norm_type=2.0, foreach=None)))


def model_state_finite(module: torch.nn.Module) -> bool:
    """Parameters and floating-point buffers (GHM EMA sums, BatchNorm statistics) are all finite."""
    return all_finite([*module.parameters(), *module.buffers()])


class LossHistory:
    """The loss terms of the last ``size`` finite steps, kept as device tensors (no host sync per step)."""

    def __init__(self, size: int = 10) -> None:
        self._steps: deque[tuple[int, list[str], torch.Tensor]] = deque(maxlen=size)

    def append(self, step: int, losses: Mapping[str, torch.Tensor]) -> None:
        """Record step ``step``'s loss terms."""
        names = list(losses)
        self._steps.append((step, names, torch.stack([losses[n].detach().float() for n in names])))

    def as_records(self) -> list[dict[str, Any]]:
        """``[{"step", "loss", <term>: value, ...}]``, oldest first (reads the values back)."""
        records = []
        for step, names, values in self._steps:
            terms = {name: float(v) for name, v in zip(names, values.tolist(), strict=True)}
            records.append({"step": step, "loss": float(sum(terms.values())), **terms})
        return records


def json_number(value: float) -> float | str:
    """``value`` for JSON: NaN and +-Inf as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON)."""
    return value if math.isfinite(value) else str(value)


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


# ---------------------------------------------------------------------------------------------- checkpoints


def load_checkpoint_safely(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (memory-mapped, on CPU); CheckpointError names it."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # UnpicklingError (disallowed global), RuntimeError (truncated zip), OSError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: cannot be loaded with weights_only=True ({type(exc).__name__}: {first_line}); it is "
            "truncated or holds more than tensors and plain values. Nothing from it was run. Delete it (or "
            "move it away) to start over, or set resume=false."
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no 'state_dict'); delete it or set resume=false"
        )
    return checkpoint


def check_checkpoint(path: str | os.PathLike[str]) -> int:
    """Validate a resume checkpoint (see :func:`load_checkpoint_safely`); returns its global step."""
    return int(load_checkpoint_safely(path).get("global_step", 0))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves a checkpoint as a sibling temporary file, fsync'ed, then renamed over the target.

    A kill (or a full disk) during a save leaves the previous checkpoint intact. Lightning's own save goes
    through a temporary file in the *system* temp dir and ``shutil.move``, which is a copy (not atomic) when
    the run dir is on another file system, as on clusters with node-local ``/tmp``. Remote paths
    (``s3://``...) keep Lightning's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                writer = _WriteErrorRecorder(handle)
                try:
                    torch.save(checkpoint, writer)
                except RuntimeError as err:
                    # torch's zip writer reports a failed write (a full disk) as "[enforce fail at
                    # inline_container.cc...] unexpected pos": raise the OSError of the write instead.
                    if writer.error is None:
                        raise
                    raise OSError(writer.error.errno, writer.error.strerror, str(path)) from err
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as err:
            if err.filename is None:  # flush / fsync / close on a full disk: name the checkpoint
                raise OSError(err.errno, err.strerror, str(path)) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)


class _WriteErrorRecorder:
    """A binary file's ``write``/``flush`` that remembers the OSError a write raised (torch.save hides it)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as err:
            self.error = err
            raise


# ---------------------------------------------------------------------------------------------- output dir


def check_output_dir(out_dir: str | os.PathLike[str], min_free_mb: float = 0.0) -> None:
    """Raise :class:`OutputDirError` unless ``out_dir`` exists or can be made, takes a file and has space.

    A probe file is written, fsync'ed and removed (this catches read-only mounts, permissions, a full disk
    and quotas, which ``os.access`` does not); ``min_free_mb`` adds a free-space floor.
    """
    out_dir = Path(out_dir)
    probe = out_dir / f".write-probe-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"ghmdet write probe\n" * 64)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OutputDirError(
            exc.errno,
            f"output dir {out_dir} is not writable: {exc.strerror or exc}; nothing was changed there",
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    if min_free_mb > 0:
        free_mb = shutil.disk_usage(out_dir).free / 2**20
        if free_mb < min_free_mb:
            raise OutputDirError(
                errno.ENOSPC,
                f"output dir {out_dir} has {free_mb:.0f} MiB free, less than "
                f"min_free_disk_mb={min_free_mb:g}; nothing was changed there",
            )


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the message and the file it names."""
    if isinstance(exc, OutputDirError):
        return str(exc.strerror)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


# ---------------------------------------------------------------------------------------------- secrets


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables (``WANDB_API_KEY``, ``*_TOKEN``, ...), longest first."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``<redacted>``."""
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of a JSON-like ``value`` with secret values and secret-named fields redacted."""
    secrets = secret_values() if secrets is None else list(secrets)
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and _SECRET_FIELD.search(k) and v not in (None, "")
                else redact(v, secrets)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secrets) for v in value)
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_file(path: str | os.PathLike[str]) -> bool:
    """Rewrite a text file with secrets redacted (atomically); returns whether anything changed."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    cleaned = redact_text(text)
    if cleaned == text:
        return False
    tmp = path.with_name(f".{path.name}.redact-{os.getpid()}")
    tmp.write_text(cleaned)
    os.replace(tmp, path)
    return True


class RedactingFilter(logging.Filter):
    """A logging filter that replaces secret values in the formatted message (installed on the handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        if not secrets:
            return True
        message = record.getMessage()
        cleaned = redact_text(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger), once."""
    logger = logging.getLogger() if logger is None else logger
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# ---------------------------------------------------------------------------------------------- run config

#: Key of the resolved (redacted) config of the run in a checkpoint (written by :class:`RunCheckpoints`).
RUN_CONFIG_KEY = "ghmdet_run_config"
#: Config keys (dotted, ``fnmatch`` patterns) whose values cannot change what a run computes: a run resumed
#: or skipped with other values there is still the same run. Everything else is compared.
#: - how the run is executed: torch threads, loader workers and image cache (the augmentation of a sample
#:   has its own random stream, docs/reliability.md), resume / skip switches, the free-space floor;
#: - where things are: ``paths.*`` (a path elsewhere in the config that differs only by where ``paths.*``
#:   point counts as moved, not changed), the W&B group (``task_name``), the ablation table's metadata;
#: - what is logged and shown: loggers, progress bars, LR monitor, prediction pictures, gradient-norm
#:   histograms, the DDP consistency checks, the checkpoint interval (resume is exact from any step).
RESULT_NEUTRAL_KEYS: tuple[str, ...] = (
    "threads",
    "resume",
    "skip_completed",
    "min_free_disk_mb",
    "task_name",
    "paths",
    "paths.*",
    "ablation",
    "ablation.*",
    "logger",
    "logger.*",
    "data.num_workers",
    "data.cache_images",
    "data.pin_memory",
    "data.persistent_workers",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    *(
        f"callbacks.{name}{suffix}"
        for name in (
            "rich_progress_bar",
            "lr_monitor",
            "prediction_images",
            "gradient_norms",
            "ghm_state",
            "eval_coverage",
            "model_checkpoint",
        )
        for suffix in ("", ".*")
    ),
)
_ABSENT = "<absent>"


class ConfigMismatchError(RuntimeError):
    """The run dir holds a run of another configuration: resuming or skipping it would misrecord it."""


@dataclass(frozen=True)
class ConfigChange:
    """One config key whose value differs between the run's start and now."""

    key: str
    was: Any
    now: Any

    def describe(self) -> str:
        """``key = <was> there, <now> now`` (long values shortened)."""
        return f"{self.key} = {_short(self.was)} there, {_short(self.now)} now"

    def as_record(self) -> dict[str, Any]:
        """The change as a JSON object for ``metrics.json``."""
        return {"key": self.key, "was": self.was, "now": self.now}


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) and value == _ABSENT else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _differences(old: Any, new: Any, key: str = "") -> Iterable[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` where two nested configs differ; a subtree present on one side only is one
    difference (its whole value against :data:`_ABSENT`), lists are compared as values."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for name in sorted(set(old) | set(new), key=str):
            dotted = f"{key}.{name}" if key else str(name)
            yield from _differences(old.get(name, _ABSENT), new.get(name, _ABSENT), dotted)
    elif old != new:
        yield key, old, new


def _paths(config: Mapping[str, Any]) -> dict[str, str]:
    paths = config.get("paths")
    if not isinstance(paths, Mapping):
        return {}
    return {f"paths.{k}": v for k, v in paths.items() if isinstance(v, str) and v}


def _relocated(was: Any, now: Any, old_paths: Mapping[str, str], new_paths: Mapping[str, str]) -> bool:
    """Whether two strings differ only by the ``paths.*`` values they start from (a moved data dir)."""
    if not (isinstance(was, str) and isinstance(now, str)):
        return False
    for key in sorted(old_paths, key=lambda k: -len(old_paths[k])):
        if key in new_paths:
            was = was.replace(old_paths[key], f"${{{key}}}")
            now = now.replace(new_paths[key], f"${{{key}}}")
    return was == now


def compare_run_configs(
    started: Mapping[str, Any], now: Mapping[str, Any]
) -> tuple[list[ConfigChange], list[ConfigChange]]:
    """The keys whose values differ between the config a run started with and the current one.

    Both are resolved configs (as recorded in ``metrics.json`` / the checkpoint); secrets are redacted on
    both sides first, so that a redacted field never counts as changed. Returns ``(changes, allowed)``:
    differences that change the result, and those under :data:`RESULT_NEUTRAL_KEYS` or that only follow a
    moved ``paths.*``.
    """
    # JSON round trip: the same types whether the config came from a checkpoint or from metrics.json.
    old = json.loads(json.dumps(redact(dict(started))))
    new = json.loads(json.dumps(redact(dict(now))))
    old_paths, new_paths = _paths(old), _paths(new)
    changes: list[ConfigChange] = []
    allowed: list[ConfigChange] = []
    for key, was, value in _differences(old, new):
        change = ConfigChange(key, was, value)
        neutral = any(fnmatch.fnmatchcase(key, pattern) for pattern in RESULT_NEUTRAL_KEYS)
        if neutral or _relocated(was, value, old_paths, new_paths):
            allowed.append(change)
        else:
            changes.append(change)
    return changes, allowed


def config_mismatch_message(run_dir: str | os.PathLike[str], doing: str, changes: list[ConfigChange]) -> str:
    """One line: the run dir, what was refused, each changed key with both values, how to start afresh."""
    return (
        f"{run_dir} holds a run started with another config, so {doing} it would record what it did not do: "
        + "; ".join(change.describe() for change in changes)
        + ". Start afresh with another hydra.run.dir, or retrain here with resume=false skip_completed=false "
        "(the earlier metrics.json is kept beside, time-stamped)"
    )


# ---------------------------------------------------------------------------------------------- run dir lock

#: The lock file of a run dir (removed when the run ends; one left by a crash is taken over).
LOCK_FILE = ".ghmdet-run.lock"


class RunDirBusyError(RuntimeError):
    """Another process holds the run dir's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class RunDirLock:
    """An exclusive lock on a run dir, so that two processes never train into one dir.

    ``flock`` on ``<run dir>/.ghmdet-run.lock``: the kernel releases it on any exit (a crash or SIGKILL
    included), so a lock file left behind is free and taken over. The file holds the owner's pid, host,
    start time and command, for the message a second process ends with. When the lock is held but its
    owner (same host) is dead, what holds it are the owner's orphaned children (DataLoader workers exit a
    moment after their parent): the lock is waited for, up to ``orphan_wait_s``.
    """

    def __init__(self, run_dir: str | os.PathLike[str], orphan_wait_s: float = 30.0) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.orphan_wait_s = orphan_wait_s
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunDirBusyError` naming the holder."""
        deadline = time.monotonic() + self.orphan_wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd)
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if self._orphaned(holder) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise RunDirBusyError(self._busy_message(holder)) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:  # the owner removed the file as we opened it: try again
                os.close(fd)
                continue
            holder_text = json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv),
                }
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder_text.encode() + b"\n", 0)
            self._fd = fd
            return

    def release(self) -> None:
        """Remove the lock file and release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)  # while still locked: a waiting process then retries on a new file
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _orphaned(holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        return isinstance(pid, int) and holder.get("host") == socket.gethostname() and not _pid_alive(pid)

    def _busy_message(self, holder: dict[str, Any]) -> str:
        run_dir = self.path.parent
        if not holder:
            who = "another process (its lock file names none)"
        else:
            pid, host = holder.get("pid", "?"), holder.get("host", "?")
            who = f"pid {pid} on {host} since {holder.get('started', '?')} ({holder.get('command', '?')})"
        if self._orphaned(holder):
            who += f"; that process is gone but its child processes still hold {self.path}"
        return (
            f"run dir {run_dir} is in use by {who}: two runs in one dir would overwrite each other's "
            "results. Wait for it to end (a stopped or killed run resumes with the same command) or give "
            "another hydra.run.dir"
        )


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


# ---------------------------------------------------------------------------------------------- interrupts


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT stopped the run (a BaseException, like KeyboardInterrupt: no ``except Exception``
    on the way swallows it). ``message`` is the line for the user once the run is recorded."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or signal.Signals(signum).name)
        self.signum = signum
        self.message = message

    @property
    def exit_status(self) -> int:
        """128 + the signal number (143 for SIGTERM, 130 for SIGINT), as a shell reports a signal's kill."""
        return 128 + self.signum


class InterruptHandler:
    """SIGTERM (schedulers, ``timeout``, SLURM preemption) and SIGINT (Ctrl+C) during a run.

    Installed for the run's duration. Inside ``trainer.fit`` / ``trainer.test`` Lightning has its own
    SIGTERM handler, which calls the one installed before it (this one): Lightning sets
    ``trainer.received_sigterm`` and its loops raise ``SIGTERMException`` after the current batch, hooks
    and checkpoint callbacks included; :class:`RunCheckpoints` then saves ``last.ckpt``. This handler only
    notes the signal there. A first SIGINT takes the same path (Lightning's own KeyboardInterrupt handling
    stops wherever the interrupt lands, mid-update included, and exits 1); a second one stops at once.
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
