"""The Hydra callback of the ablation sweeps (``hydra.callbacks.ablation_tables``, conf/ablation/sweep).

- ``on_multirun_start``: writes ``<sweep dir>/ablation.json`` (the table, preset and every job's dir) and says
  how many jobs are complete already (they will be skipped);
- ``on_job_end``: a job that raised is already recorded in its ``metrics.json`` (status ``failed`` + reason,
  written by ``ghmdet.train``); with ``tolerate_failures`` the failure is logged and the job handed back to
  the sweeper as done, so that the sweep goes on and ends with its tables (Hydra's basic sweeper re-raises
  the first failure after the batch and never calls ``on_multirun_end``). This runs in the job's process,
  so it works with the basic, joblib and submitit launchers alike;
- ``on_multirun_end``: aggregates the jobs into the tables (:func:`ghmdet.ablation.report.write_report`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ghmdet.ablation.job_results import read_run
from ghmdet.ablation.spec import SPEC_FILE, spec_from_config

log = logging.getLogger(__name__)


class AblationCallback(Callback):
    """Stable ablation sweeps: spec at the start, failures recorded not fatal, tables at the end."""

    def __init__(self, tolerate_failures: bool = True, write_tables: bool = True) -> None:
        self.tolerate_failures = tolerate_failures
        self.write_tables = write_tables

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        spec = spec_from_config(config)
        path = spec.save()
        done = sum(read_run(Path(spec.sweep_dir), job, []).status == "completed" for job in spec.jobs)
        log.info(
            "ablation %s (%s): %d jobs under %s, %d complete already (skipped; skip_completed=false reruns "
            "them); plan in %s",
            spec.table,
            spec.preset,
            len(spec.jobs),
            spec.sweep_dir,
            done,
            path,
        )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.tolerate_failures or job_return.status != JobStatus.FAILED:
            return
        err = job_return._return_value
        where = config.hydra.runtime.output_dir if "runtime" in config.hydra else "?"
        log.error(
            "job %s failed (%s: %s); recorded in %s/metrics.json, the sweep goes on",
            " ".join(job_return.overrides or []),
            type(err).__name__,
            err,
            where,
            exc_info=err,
        )
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.write_tables:
            return
        from ghmdet.ablation.report import write_report

        spec = spec_from_config(config)
        report = write_report(spec)
        table = report.table
        log.info(
            "ablation %s (%s): tables %s, %s, %s, %s%s",
            spec.table,
            spec.preset,
            report.markdown,
            report.csv,
            report.latex,
            report.plot,
            f"; W&B run {report.wandb_run}" if report.wandb_run else "",
        )
        bad = [r for r in table.runs if r.status != "completed"]
        if bad:
            log.warning(
                "ablation %s: %d of %d jobs did not complete: %s (details: %s, notes)",
                spec.table,
                len(bad),
                len(table.runs),
                ", ".join(f"{r.name} {r.status}" for r in bad),
                report.markdown,
            )
        print(report.markdown.read_text())  # the table is the sweep's result
        log.debug("spec: %s", Path(spec.sweep_dir) / SPEC_FILE)
