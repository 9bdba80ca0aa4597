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
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import random
import re
import shutil
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

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
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


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
