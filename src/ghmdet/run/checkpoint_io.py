"""Checkpoints that are safe to load and safe to write.

- :func:`load_checkpoint_safely` / :func:`check_checkpoint`: a resume checkpoint must load with
  ``weights_only=True`` (no code runs from it);
- :class:`AtomicCheckpointIO`: checkpoints are written beside the target, fsync'ed and renamed over it;
- :func:`checkpoint_summary` / :func:`scored_checkpoint`: what the run record says about a checkpoint;
- :func:`resume_error`: a resume whose checkpoint or loader state does not fit this config or data, as the
  user error it is.

Every checkpoint of a run also holds the run's resolved config (:data:`RUN_CONFIG_KEY`, written by
:class:`~ghmdet.callbacks.RunCheckpoints`), which a resume compares with the current one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from ghmdet.data.annotations import DatasetError
from ghmdet.data.resumable import ResumableDataLoader
from ghmdet.errors import first_line
from ghmdet.run.record import last_checkpoint

log = logging.getLogger(__name__)

#: Key of the resolved (redacted) config of the run in a checkpoint (written by
#: :class:`~ghmdet.callbacks.RunCheckpoints`).
RUN_CONFIG_KEY = "ghmdet_run_config"


class CheckpointError(RuntimeError):
    """A resume checkpoint is unreadable or holds more than tensors and plain values."""


def load_checkpoint_safely(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (memory-mapped, on CPU); CheckpointError names it."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # UnpicklingError (disallowed global), RuntimeError (truncated zip), OSError
        raise CheckpointError(
            f"{path}: cannot be loaded with weights_only=True ({type(exc).__name__}: {first_line(exc)}); it "
            "is truncated or holds more than tensors and plain values. Nothing from it was run. Delete it "
            "(or move it away) to start over, or set resume=false."
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no 'state_dict'); delete it or set resume=false"
        )
    return checkpoint


def check_checkpoint(path: str | os.PathLike[str]) -> int:
    """Validate a resume checkpoint (see :func:`load_checkpoint_safely`); returns its global step."""
    return int(load_checkpoint_safely(path).get("global_step", 0))


def checkpoint_summary(path: Path) -> dict[str, Any] | None:
    """Where the last good checkpoint is and its step (None when none was saved)."""
    if not path.is_file():
        return None
    try:
        return {"path": str(path), "step": check_checkpoint(path)}
    except CheckpointError as err:
        return {"path": str(path), "error": str(err)}


def scored_checkpoint(trainer: Any, out_dir: Path) -> dict[str, Any] | None:
    """``{"file", "step"}`` of the checkpoint holding the tested weights (file relative to the run dir)."""
    callback = trainer.checkpoint_callback
    path = Path(getattr(callback, "last_model_path", "") or last_checkpoint(out_dir))
    summary = checkpoint_summary(path)
    if summary is None or "step" not in summary:
        return None
    if summary["step"] != trainer.global_step:
        log.warning(
            "%s holds step %d, the tested weights are of step %d", path, summary["step"], trainer.global_step
        )
    try:
        file = str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:  # a checkpoint dir outside the run dir
        file = str(path)
    return {"file": file, "step": summary["step"]}


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


def resume_error(err: Exception, ckpt_path: str | None) -> Exception | None:
    """A resume that cannot fit this config or data, as the user error it is (None for anything else).

    The config comparison (:func:`ghmdet.run.config_compare.check_resume`) catches these first; this covers
    checkpoints that hold no config and data that changed under the same config.
    """
    if ckpt_path is None:
        return None
    if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
        return CheckpointError(
            f"{ckpt_path}: its weights do not fit this config's model ({first_line(err)} ...): the run dir "
            "holds a run of another model or loss. Start afresh with another hydra.run.dir, or retrain here "
            "with resume=false skip_completed=false"
        )
    if isinstance(err, ValueError) and _raised_in(err, ResumableDataLoader.load_state_dict):
        return DatasetError(
            f"cannot resume from {ckpt_path}: {err}. Train on the data it was trained on, or start afresh "
            "with another hydra.run.dir or resume=false skip_completed=false"
        )
    return None


def _raised_in(err: BaseException, function: Any) -> bool:
    """Whether ``err`` was raised inside ``function`` (its innermost traceback frame)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code is function.__code__
