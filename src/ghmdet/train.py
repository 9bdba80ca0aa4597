"""The one entry point: ``ghmdet-train`` / ``python -m ghmdet.train`` (Hydra, ``conf/train.yaml``).

Skip a finished run of the same config, or: validate, lock the run dir, resume (same config only), build,
fit, test, finalise ``metrics.json`` (:mod:`ghmdet.run.record`). Everything a run writes goes under its
Hydra output dir. Exit statuses and one-line errors: :mod:`ghmdet.cli`; faults: ``docs/reliability.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from ghmdet import cli
from ghmdet.builders import build, build_trainer
from ghmdet.callbacks import DivergenceGuard, IterationTimer, RunCheckpoints
from ghmdet.config_validation import ConfigError, validate_config
from ghmdet.distributed import hydra_ddp_job, is_rank_zero  # also registers the ghmdet.* resolvers
from ghmdet.loggers import build_loggers, finish_wandb, log_hyperparams
from ghmdet.paths import CONFIG_DIR
from ghmdet.run import record as run_record
from ghmdet.run.checkpoint_io import CheckpointError, checkpoint_summary, resume_error, scored_checkpoint
from ghmdet.run.config_compare import check_resume, finished_run
from ghmdet.run.interrupts import InterruptHandler, RunInterrupted
from ghmdet.run.record import RecordWriter
from ghmdet.run.redaction import install_log_redaction, redact_hydra_files
from ghmdet.run.run_dir import DEFAULT_MIN_FREE_MB, RunDirBusyError, RunDirLock, check_output_dir

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train + test one configuration; returns what it wrote to ``metrics.json``. The checks (config, output
    dir, lock, resume) come before anything is loaded or written: a bad config, an unwritable, full or busy
    dir, or another config's run dir fail in a second and leave earlier results alone."""
    install_log_redaction()
    out_dir = Path(cfg.paths.output_dir)
    config = run_record.config_record(cfg)
    skip = bool(cfg.get("skip_completed", True))
    if (finished := finished_run(out_dir, config, skip)) is not None:
        return finished
    writer = RecordWriter(out_dir, time.time(), enabled=is_rank_zero())
    try:
        validate_config(cfg)
    except ConfigError as err:
        record = {**run_record.initial_record(cfg, config, writer.started), "status": run_record.FAILED}
        record["reason"] = str(err)
        try:  # recorded unless another process holds the run dir (its record is its own)
            with RunDirLock(out_dir, orphan_wait_s=0, enabled=writer.enabled):
                writer.start_failure(record)
        except (OSError, RunDirBusyError) as busy:
            log.warning("the invalid config is not recorded in %s: %s", writer.path, busy)
        raise
    check_output_dir(out_dir, float(cfg.get("min_free_disk_mb", DEFAULT_MIN_FREE_MB)))
    with RunDirLock(out_dir, enabled=writer.enabled):  # DDP ranks share the dir: rank 0 holds it
        if (finished := finished_run(out_dir, config, skip)) is not None:  # finished while we waited
            return finished
        return _run_locked(cfg, config, writer)


def _run_locked(cfg: DictConfig, config: dict[str, Any], writer: RecordWriter) -> dict[str, Any]:
    """:func:`run` once the config is valid and the run dir's lock is held."""
    record, out_dir = run_record.initial_record(cfg, config, writer.started), writer.out_dir
    last_ckpt, ckpt_path = run_record.last_checkpoint(out_dir), None
    if cfg.resume and last_ckpt.is_file():
        try:
            previous = run_record.read_metrics(out_dir)
            record["resumed_from_step"], allowed = check_resume(last_ckpt, previous, config, out_dir)
        except CheckpointError as err:
            record["status"], record["reason"] = run_record.FAILED, f"{type(err).__name__}: {err}"
            writer.start_failure(record)
            raise
        if allowed:
            record["config_changes"] = [change.as_record() for change in allowed]
        ckpt_path = str(last_ckpt)
        log.info("resuming from %s (step %d)", ckpt_path, record["resumed_from_step"])
    redact_hydra_files(out_dir)
    # Visible while training: a job killed half-way leaves "running", not a stale or missing record.
    writer.start(record)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    timer = IterationTimer()
    module, trainer = None, None

    def finalise() -> dict[str, Any]:
        writer.finish(record, module, trainer, timer.seconds_per_iteration)
        finish_wandb()
        return record

    with InterruptHandler() as interrupts:
        try:
            loggers, record["wandb"] = build_loggers(cfg)
            trainer = build_trainer(cfg, out_dir, loggers, [timer, DivergenceGuard(), RunCheckpoints(config)])
            interrupts.trainer = trainer
            log_hyperparams(trainer.loggers, record["config"])
            datamodule, module = build(cfg)
            # weights_only=True: a checkpoint holds tensors and plain values only; no code from it ever runs.
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            if module.divergence is None:
                trainer.test(module, datamodule=datamodule)
                record["status"] = run_record.COMPLETED
                # The metrics are of the weights at this step; the record names the file that holds them.
                record["checkpoint"] = scored_checkpoint(trainer, out_dir)
            else:
                run_record.mark_diverged(record, module.divergence, checkpoint_summary(last_ckpt))
        except (RunInterrupted, KeyboardInterrupt, SystemExit) as err:
            if (signum := interrupts.stop_signal(err)) is None:
                raise  # a SystemExit that is no stop of ours
            message = run_record.mark_interrupted(record, signum, trainer, checkpoint_summary(last_ckpt))
            finalise()
            log.warning(message)
            raise RunInterrupted(signum, message) from None
        except Exception as err:  # recorded for the sweep tables, then re-raised so the job fails visibly
            user_error = resume_error(err, ckpt_path)
            run_record.mark_failed(record, user_error or err)
            finalise()
            if user_error is not None:
                raise user_error from err
            raise
        return finalise()


def hydra_app(one_line_errors: bool) -> Callable[[], Any]:
    """The Hydra app: one :func:`run` per composed config (a multirun: per job), returning the test AP."""

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
    def job(cfg: DictConfig) -> float | None:
        # The stop's exit status comes from the job's own process, a submitit / joblib worker included;
        # DDP children replay this job only.
        with cli.interrupt_exit(), cli.one_line_errors(one_line_errors), hydra_ddp_job():
            ap = run(cfg).get("metrics", {}).get("AP")
        return float(ap) if ap is not None else None

    return job


def main() -> None:
    """Console entry point (``ghmdet-train``): the Hydra app with the exit statuses of :mod:`ghmdet.cli`."""
    cli.main(hydra_app)


if __name__ == "__main__":
    main()
