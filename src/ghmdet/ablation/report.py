"""Write one sweep's table everywhere: ``<out dir>/<preset>.{md,csv,tex,png}``, ``<preset>_runs.csv``, W&B."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghmdet.ablation import render
from ghmdet.ablation.aggregate import AblationTable, build_table
from ghmdet.ablation.paper import PaperNumbers, load_paper_numbers
from ghmdet.ablation.spec import AblationSpec
from ghmdet.ablation.summary_plot import plot

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What :func:`write_report` produced."""

    table: AblationTable
    markdown: Path
    csv: Path
    runs_csv: Path
    latex: Path
    plot: Path | None
    wandb_run: Path | None = None


def write_report(
    spec: AblationSpec,
    out_dir: Path | None = None,
    paper_numbers: PaperNumbers | None = None,
    use_wandb: bool | None = None,
) -> Report:
    """Aggregate the sweep of ``spec`` and write its table files (and W&B run, unless switched off).

    ``out_dir`` defaults to the spec's (``experiments/<table>``); files are named after the preset, so the
    embedded and the COCO tables of one ablation live side by side.
    """
    paper_numbers = paper_numbers if paper_numbers is not None else load_paper_numbers()
    table = build_table(spec, paper_numbers)
    out = Path(out_dir) if out_dir is not None else Path(spec.out_dir)
    stem = spec.preset
    report = Report(
        table=table,
        markdown=render.write_text(out / f"{stem}.md", render.markdown(table)),
        csv=render.write_text(out / f"{stem}.csv", render.csv_text(table)),
        runs_csv=render.write_text(out / f"{stem}_runs.csv", render.runs_csv_text(table)),
        latex=render.write_text(out / f"{stem}.tex", render.latex(table)),
        plot=None,
    )
    try:
        report.plot = plot(table, out / f"{stem}.png")
    except Exception as err:  # a plot is a convenience: the tables are written already
        log.warning("%s: the summary plot failed (%s: %s)", out / f"{stem}.png", type(err).__name__, err)
    if spec.wandb if use_wandb is None else use_wandb:
        report.wandb_run = log_to_wandb(report)
    return report


def _wandb_table(wandb_module: Any, head: list[str], rows: list[list[object]]) -> Any:
    return wandb_module.Table(columns=head, data=[[str(v) if v is not None else "" for v in r] for r in rows])


def log_to_wandb(report: Report) -> Path | None:
    """Log the tables (and the plot) as one W&B run of job type ``ablation`` in the sweep's group.

    The mode comes from ``WANDB_MODE`` (default ``offline``: the run lands in ``<sweep dir>/wandb``; upload it
    with ``wandb sync``). Returns the run's local dir, or None when W&B is unavailable (tables are on disk).
    """
    table, spec = report.table, report.table.spec
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
        run = wandb.init(
            project=spec.wandb_project,
            group=spec.task_name or None,
            job_type="ablation",
            name=f"{spec.table}-{spec.preset}",
            dir=spec.sweep_dir,
            mode=os.environ.get("WANDB_MODE", "offline"),
            config={k: v for k, v in spec.to_json().items() if k != "jobs"} | {"jobs": len(spec.jobs)},
        )
        try:
            head = render.header(table)
            rows = [
                [c.text() if isinstance(c, (render.Num, render.CI)) else c for c in render.cells(table, r)]
                for r in table.rows
            ]
            payload = {
                f"{spec.table}/table": _wandb_table(wandb, head, rows),
                f"{spec.table}/runs": _wandb_table(wandb, *render.runs_rows(table)),
            }
            if report.plot is not None:
                payload[f"{spec.table}/plot"] = wandb.Image(str(report.plot))
            run.log(payload)
            run.summary["markdown"] = render.markdown(table)
            local = Path(run.dir).parent
        finally:
            run.finish()
        return local
    except Exception as err:  # W&B is a mirror of the files on disk: never lose the tables over it
        log.warning(
            "logging the %s tables to W&B failed (%s: %s); the files are written",
            spec.table,
            type(err).__name__,
            err,
        )
        return None
