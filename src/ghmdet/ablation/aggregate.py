"""Jobs' ``metrics.json`` -> one table: rows grouped by the swept keys, mean and std over seeds, paper beside.

Every job of the sweep shows up, with its status (:mod:`ghmdet.ablation.job_results`). Means and standard
deviations use the completed runs only.

Two checks per row (docs/ablation.md, "Statistics"): whether training had converged (the val AP of the
runs' ``val_history`` at 75 % and at 100 % of the iterations) and, with ``ablation.reference``, the row's
paired-bootstrap AP difference to the reference row over the test images (:mod:`ghmdet.ablation.bootstrap`).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghmdet.ablation.convergence import Convergence, convergence_notes
from ghmdet.ablation.job_results import STATUSES, Metric, RunResult, metric, read_run
from ghmdet.ablation.paper import PaperNumbers, PaperRow, PaperTable, values_match
from ghmdet.ablation.spec import AblationSpec

log = logging.getLogger(__name__)

#: decimals of the "x reference" ratio columns
RATIO_DECIMALS = 2


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over the completed runs of a row (std None for fewer than 2)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        if not values:
            return cls(None, None, 0)
        return cls(
            statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)
        )


def _delta(ours: float | None, paper: float | None) -> float | None:
    return None if ours is None or paper is None else ours - paper


@dataclass
class Row:
    """One table row: the runs sharing the values of the group keys."""

    key: tuple[str, ...]
    label: str
    runs: list[RunResult]
    paper: PaperRow | None
    ours: dict[str, Stat] = field(default_factory=dict)
    #: ours / the reference row's (``relative_to``), per metric
    ours_ratio: dict[str, float | None] = field(default_factory=dict)
    paper_ratio: dict[str, float | None] = field(default_factory=dict)
    convergence: Convergence = field(default_factory=lambda: Convergence(None, None, None, None, 0))
    #: paired bootstrap against the reference row, per metric (AP-type metrics the table shows)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    #: this row is the bootstrap's reference
    is_reference: bool = False

    def paper_value(self, key: str) -> float | None:
        return None if self.paper is None else self.paper.metrics.get(key)

    def delta(self, key: str) -> float | None:
        return _delta(self.ours[key].mean, self.paper_value(key))

    def ratio_delta(self, key: str) -> float | None:
        return _delta(self.ours_ratio.get(key), self.paper_ratio.get(key))

    @property
    def counts(self) -> dict[str, int]:
        found = {s: sum(r.status == s for r in self.runs) for s in STATUSES}
        return {s: n for s, n in found.items() if n}

    @property
    def n_completed(self) -> int:
        return sum(r.status == "completed" for r in self.runs)

    @property
    def status(self) -> str:
        counts = self.counts
        if list(counts) == ["completed"]:
            return "completed"
        return ", ".join(f"{n} {s}" for s, n in counts.items())


@dataclass
class AblationTable:
    """A whole table: spec, paper table, rows and the notes printed under it."""

    spec: AblationSpec
    paper: PaperTable | None
    setting: str
    rows: list[Row]
    reference: Row | None = None
    #: why there are no bootstrap intervals (None: there are, or no ``ablation.reference``)
    bootstrap_note: str | None = None

    @property
    def bootstrap_metrics(self) -> list[Metric]:
        """The metrics with a bootstrap column: those of the table that some row has an interval of."""
        return [m for m in self.metrics if any(m.key in r.bootstrap for r in self.rows)]

    @property
    def reference_row_label(self) -> str | None:
        ref = next((r for r in self.rows if r.is_reference), None)
        return ref.label if ref is not None else self.spec.reference

    @property
    def metrics(self) -> list[Metric]:
        return [metric(k) for k in self.spec.metrics]

    @property
    def runs(self) -> list[RunResult]:
        return [run for row in self.rows for run in row.runs]

    @property
    def row_label(self) -> str:
        return self.paper.row_label if self.paper is not None else self.spec.row

    @property
    def caption(self) -> str:
        return self.paper.caption if self.paper is not None else f"Ablation {self.spec.table}"

    @property
    def reference_label(self) -> str | None:
        if self.spec.relative_to is None:
            return None
        return self.reference.label if self.reference is not None else self.spec.relative_to

    @property
    def seeds(self) -> list[str]:
        return sorted({r.seed for r in self.runs if r.seed is not None}, key=_natural)

    @property
    def git_commits(self) -> list[str]:
        commits = {str(r.record.get("git_commit")) for r in self.runs if r.record.get("git_commit")}
        return sorted(commits)

    def notes(self) -> list[str]:
        """Why runs are missing from the means, the statistics' verdicts, the paper's remarks, one a line."""
        lines = []
        for run in self.runs:
            if run.status != "completed":
                lines.append(f"`{run.name}` {run.status}: {_one_line(run.reason or '')}")
            lines.extend(f"`{run.name}`: {_one_line(p)}" for p in run.problems)
        lines.extend(convergence_notes(self.rows, self.row_label))
        if self.bootstrap_note is not None:
            lines.append(f"bootstrap: {_one_line(self.bootstrap_note)}")
        if self.paper is not None:
            for row in self.rows:
                if row.paper is not None and row.paper.note:
                    lines.append(f"paper, {self.row_label} = {row.label}: {_one_line(row.paper.note)}")
            lines.extend(_one_line(n) for n in self.paper.notes)
        return lines


def _natural(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_table(spec: AblationSpec, paper_numbers: PaperNumbers | None = None) -> AblationTable:
    """Read every job of ``spec`` and group them into rows, in the order the sweep first reaches each row."""
    for key in spec.metrics:
        metric(key)
    paper = paper_numbers.get(spec.table) if paper_numbers is not None else None
    keys = spec.group_keys
    grouped: dict[tuple[str, ...], list[RunResult]] = {}
    for job in spec.jobs:
        key = tuple(job.values.get(k, "—") for k in keys)
        grouped.setdefault(key, []).append(read_run(Path(spec.sweep_dir), job, spec.metrics))
    rows = []
    for key, runs in grouped.items():
        paper_row = paper.row_for(key[0]) if paper is not None else None
        label = paper_row.label if paper_row is not None else key[0]
        row = Row(key=key, label=label, runs=runs, paper=paper_row)
        for m in spec.metrics:
            row.ours[m] = Stat.of(
                [r.values[m] for r in runs if r.status == "completed" and r.values.get(m) is not None]
            )
        rows.append(row)
    table = AblationTable(
        spec=spec, paper=paper, setting=paper_numbers.setting if paper_numbers else "", rows=rows
    )
    if spec.relative_to is not None:
        table.reference = next((r for r in rows if values_match(r.key[0], spec.relative_to)), None)
        paper_ref = paper.row_for(spec.relative_to) if paper is not None else None
        for row in rows:
            for m in spec.metrics:
                ref = table.reference.ours[m].mean if table.reference is not None else None
                ours = row.ours[m].mean
                row.ours_ratio[m] = ours / ref if ours is not None and ref else None
                p, p_ref = row.paper_value(m), (paper_ref.metrics.get(m) if paper_ref else None)
                row.paper_ratio[m] = p / p_ref if p is not None and p_ref else None
    for row in rows:
        row.convergence = Convergence.of(row.runs)
    if spec.reference is not None:
        _add_bootstrap(table)
    return table


def _add_bootstrap(table: AblationTable) -> None:
    """Each row's paired-bootstrap interval against the reference row with the same other keys."""
    from ghmdet.ablation import bootstrap

    spec = table.spec
    metrics = [m for m in spec.metrics if m in bootstrap.METRIC_IOUS]
    if not metrics:
        return
    refs = [r for r in table.rows if values_match(r.key[0], spec.reference)]
    for ref in refs:
        ref.is_reference = True
    if not refs:
        table.bootstrap_note = f"the reference row {spec.row} = {spec.reference} is not in this sweep"
        return
    try:
        intervals = bootstrap.table_intervals(table.rows, refs, metrics, spec.n_boot, spec.bootstrap_seed)
    except bootstrap.BootstrapError as err:
        table.bootstrap_note = f"n/a: {err}"
        log.warning("%s: no bootstrap intervals: %s", spec.table, err)
        return
    for row in table.rows:
        row.bootstrap = intervals.get(row.key, {})
    table.bootstrap_note = None
    scored = {str((r.record.get("detections_test") or {}).get("metrics", "metrics")) for r in table.runs}
    if scored - {"metrics"}:  # model.tta on: the mean columns are with TTA, the files single-pass
        table.bootstrap_note = "the intervals are of the single pass; the mean columns are with TTA"
