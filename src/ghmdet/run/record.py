"""The run record, ``<run dir>/metrics.json``: the one contract between a run and everything that reads it.

The trainer writes it (:class:`RecordWriter`; global rank 0 only: DDP ranks share the run dir),
``ghmdet-tables`` and the analysis read it, all through this module (which loads neither torch nor Lightning,
so that ``ghmdet-tables`` starts fast). It is written atomically (a sibling file, fsync'ed, renamed over it)
with secrets redacted; a rerun keeps an earlier record beside it as ``metrics.<time>.json``.

What a record holds (a JSON object; every run has the first group, the rest as the run gets there):

==========================  ===============================================================================
``status``                  one of :data:`STATUSES`: ``running`` (written at start-up, so a job killed
                            half-way shows), ``completed``, ``diverged``, ``failed``, ``interrupted``
``config``                  the resolved config (the raw one where an interpolation does not resolve;
                            an older record's shape is brought up to date by :func:`current_config_shape`)
``overrides``               Hydra's task overrides (the command line), ``[]`` outside Hydra
``git_commit``              the commit of the code (``-dirty`` for changed code), null outside git
``seed``, ``started``       the seed; the start time (``%Y-%m-%dT%H:%M:%S%z``)
``resumed_from_step``       a resumed run: the step of ``checkpoints/last.ckpt`` it went on from
``config_changes``          a resumed run: ``[{"key", "was", "now"}]`` of the result-neutral changes
``wandb``                   ``{"enabled", "mode", "run_id"}``, or ``{"enabled": false, "reason"}``
``metrics``                 the test's COCO metrics (fractions: ``AP``, ``AP50``, ...); with TTA, of TTA
``metrics_single_pass``     with TTA: the test metrics without it
``val_metrics``             the last validation's metrics; ``val_history``: every periodic validation
``per_class``               test AP / AP50 by category name (``per_class_single_pass`` with TTA)
``detections_test``         the COCO results file of the test's single pass (``file``, ``ann_file``, ...)
``checkpoint``              completed: ``{"file", "step"}`` of the checkpoint holding the tested weights
``seconds_per_iteration``   mean training step time; ``iterations``: global steps; ``wall_seconds``
``reason``                  failed / diverged / interrupted: why, in one line (``traceback`` when failed)
``divergence``              diverged: step, epoch, reason, losses, recent_losses, last good ``checkpoint``
``interrupted``             interrupted: ``{"signal", "step", "checkpoint"}``
==========================  ===============================================================================

``checkpoint`` summaries (``divergence.checkpoint``, ``interrupted.checkpoint``) are ``{"path", "step"}``
(``{"path", "error"}`` for an unloadable file) or null when none was saved.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ghmdet.files import write_text_atomic
from ghmdet.paths import CONFIG_DIR, PROJECT_ROOT
from ghmdet.run.redaction import redact
from ghmdet.run.run_dir import check_output_dir, describe_os_error

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
RUNNING = "running"
COMPLETED = "completed"
DIVERGED = "diverged"
FAILED = "failed"
INTERRUPTED = "interrupted"
#: every status a record can hold
STATUSES = (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED)
#: a run in one of these is done: it is skipped, not rerun (a diverged run would diverge again)
FINISHED = (COMPLETED, DIVERGED)
#: the run's checkpoint, relative to the run dir: what a rerun resumes from and the analysis loads
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
RESULT_DIRS = ("experiments",)
"""Tracked folders that hold results, not code: the tables a sweep regenerates there while its later jobs
still run must not mark those jobs' code as modified."""


def last_checkpoint(run_dir: Path) -> Path:
    """``<run dir>/checkpoints/last.ckpt``."""
    return Path(run_dir) / LAST_CHECKPOINT


def git_commit() -> str | None:
    """The commit of the code that ran (with '-dirty' when tracked files outside :data:`RESULT_DIRS` have
    changes), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        results = [f":(exclude){folder}" for folder in RESULT_DIRS]
        status = ["status", "--porcelain", "--untracked-files=no", "--", ".", *results]
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *status],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(
    path: Path, payload: dict[str, Any], before_replace: Callable[[], None] | None = None
) -> None:
    """Write JSON so that a crash never leaves a half-written file (write + fsync a sibling, then rename).

    Secrets (``WANDB_API_KEY`` and the like) are redacted from the payload first. ``before_replace`` runs
    once the new content is safely on disk, just before the rename.
    """
    text = json.dumps(redact(payload), indent=2, sort_keys=False) + "\n"
    write_text_atomic(path, text, fsync=True, before_replace=before_replace)


def load_record(path: Path) -> Any:
    """The parsed JSON of a record file (raises ``OSError``, ``UnicodeDecodeError``, ``JSONDecodeError``)."""
    return json.loads(Path(path).read_text())


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run dir's record, or None when there is none or it does not parse."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return load_record(path)
    except json.JSONDecodeError:
        return None


def config_record(cfg: DictConfig) -> dict[str, Any]:
    """The config as the record keeps it: resolved, or raw where an interpolation does not resolve."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException:  # an unresolvable interpolation: keep the raw config
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def current_config_shape(config: dict[str, Any]) -> dict[str, Any]:
    """A run record's config in the shape the configs compose today.

    Records written before the configs built the LightningModule and the scheduler have no ``module`` node,
    a scheduler without ``_target_`` and the GHM statistics sync as ``trainer.sync_ghm_stats``; they get the
    nodes ``conf/`` composes now (``conf/module/detection.yaml``, the scheduler file of their policy,
    ``ghm_stats.sync``), so that their checkpoints load and skip / resume compare them with a config of
    today. A record of the current shape is returned unchanged.
    """
    if "module" in config:
        return config
    upgraded = copy.deepcopy(config)
    trainer = upgraded.get("trainer", {})
    upgraded.setdefault("ghm_stats", {"sync": bool(trainer.pop("sync_ghm_stats", False))})
    scheduler = upgraded.get("scheduler")
    if isinstance(scheduler, dict) and "_target_" not in scheduler:
        policy = scheduler.get("policy", "cosine")
        composed = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "scheduler" / f"{policy}.yaml"))
        upgraded["scheduler"] = {k: composed[k] for k in ("_target_", "_partial_")} | scheduler
    module = OmegaConf.create({"module": OmegaConf.load(CONFIG_DIR / "module" / "detection.yaml")})
    # Resolved as the entry point records a config: raw where the record holds unresolvable interpolations.
    upgraded["module"] = config_record(OmegaConf.merge(OmegaConf.create(upgraded), module))["module"]
    return upgraded


def initial_record(cfg: DictConfig, config: dict[str, Any], started: float) -> dict[str, Any]:
    """The ``running`` record of a run that starts now."""
    return {
        "status": RUNNING,
        "config": config,
        "overrides": (
            OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
            if HydraConfig.initialized()
            else []
        ),
        "git_commit": git_commit(),
        "seed": cfg.get("seed"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }


def mark_failed(record: dict[str, Any], err: BaseException) -> None:
    """Status ``failed`` with the error as the reason and the traceback being handled."""
    record["status"] = FAILED
    record["reason"] = f"{type(err).__name__}: {err}"
    record["traceback"] = traceback.format_exc()


def mark_diverged(
    record: dict[str, Any], divergence: dict[str, Any], checkpoint: dict[str, Any] | None
) -> None:
    """Status ``diverged``: the module's divergence record and the last good checkpoint (its summary)."""
    record["status"] = DIVERGED
    record["reason"] = (
        f"non-finite training state at step {divergence['step']}: {divergence.get('reason', '')}"
    )
    record["divergence"] = {**divergence, "checkpoint": checkpoint}
    log.error(
        "run diverged: %s; last good checkpoint: %s", record["reason"], record["divergence"]["checkpoint"]
    )


def mark_interrupted(
    record: dict[str, Any], signum: int, trainer: Any | None, checkpoint: dict[str, Any] | None
) -> str:
    """Status ``interrupted`` by signal ``signum`` at the trainer's step (0 before there is a trainer), the
    last checkpoint's summary with it; returns the line for the user."""
    signal_name = signal.Signals(signum).name
    step = int(trainer.global_step) if trainer is not None else 0
    record["status"] = INTERRUPTED
    record["reason"] = f"stopped by {signal_name} at step {step}"
    record["interrupted"] = {"signal": signal_name, "step": step, "checkpoint": checkpoint}
    if checkpoint is not None and "step" in checkpoint:
        saved = f"{checkpoint['path']} holds step {checkpoint['step']}; the same command resumes from there"
    else:
        saved = "no checkpoint was saved yet; the same command starts over"
    return f"interrupted by {signal_name} at step {step}: {saved}"


class RecordWriter:
    """Writes one run's record into its run dir; on a DDP rank other than 0 (``enabled`` False) nothing:
    the ranks share the run dir, and global rank 0 is its one writer."""

    def __init__(self, out_dir: Path, started: float, enabled: bool = True) -> None:
        self.out_dir, self.started, self.enabled = Path(out_dir), started, enabled
        self.path = self.out_dir / METRICS_FILE

    def start(self, record: dict[str, Any]) -> None:
        """Make ``record`` the run dir's ``metrics.json``, keeping an earlier one beside it (time-stamped).

        The new record is written (and fsync'ed) first; only then is an earlier ``metrics.json`` renamed, so
        a full disk or an unwritable dir leaves the earlier result where it was.
        """
        if not self.enabled:
            return

        def keep_earlier() -> None:
            if self.path.exists():
                # Never lose an earlier result (even an unreadable one): a rerun keeps it, time-stamped.
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.started))
                backup, n = self.out_dir / f"metrics.{stamp}.json", 1
                while backup.exists():
                    backup, n = self.out_dir / f"metrics.{stamp}-{n}.json", n + 1
                os.replace(self.path, backup)

        write_json_atomic(self.path, record, before_replace=keep_earlier)

    def start_failure(self, record: dict[str, Any]) -> None:
        """Best effort: note a start-up failure when the dir takes it (earlier results kept)."""
        try:
            check_output_dir(self.out_dir, 0.0)
            self.start({**record, "wall_seconds": round(time.time() - self.started, 1)})
        except OSError as err:
            log.warning("could not record the failure in %s: %s", self.path, describe_os_error(err))

    def finish(
        self,
        record: dict[str, Any],
        module: Any | None,
        trainer: Any | None,
        seconds_per_iteration: float | None,
    ) -> dict[str, Any]:
        """Add what the run measured (from the LightningModule and the trainer) and write the final record."""
        final = module.final_metrics if module is not None else {}
        record["metrics"] = final.get("test", {})
        if "test_single_pass" in final:  # model.tta on: "metrics" are with TTA, these without
            record["metrics_single_pass"] = final["test_single_pass"]
        record["val_metrics"] = final.get("val", {})
        if module is not None:  # val_history, per_class, detections_test (DetectionModule.record_fields)
            record.update(module.record_fields())
        record["seconds_per_iteration"] = seconds_per_iteration
        record["iterations"] = int(trainer.global_step) if trainer is not None else 0
        record["wall_seconds"] = round(time.time() - self.started, 1)
        try:
            if self.enabled:
                write_json_atomic(self.path, record)
        except OSError as err:
            if record["status"] != FAILED:
                raise
            # Recording a failure must not hide it (a full disk fails both); the "running" record stays.
            log.error("could not record the failure in %s: %s", self.path, describe_os_error(err))
        return record
