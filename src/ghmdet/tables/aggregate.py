"""Jobs' ``metrics.json`` -> one table: rows grouped by the swept keys, mean and std over seeds, paper beside.

Every job of the sweep shows up: one that never wrote ``metrics.json`` is ``missing``, one whose file does not
parse (or lacks its fields) is ``unreadable`` with the file named, a killed one is ``running``, one stopped
by SIGTERM / SIGINT ``interrupted``; ``failed`` and
``diverged`` jobs carry the reason that ``ghmdet.train`` recorded. Means and standard deviations use the
completed runs only.

Two checks per row (docs/ablation.md, "Statistics"): whether training had converged (the val AP of the
runs' ``val_history`` at 75 % and at 100 % of the iterations) and, with ``ablation.reference``, the row's
paired-bootstrap AP difference to the reference row over the test images (:mod:`ghmdet.tables.bootstrap`).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghmdet.tables.paper import PaperNumbers, PaperRow, PaperTable, values_match
from ghmdet.tables.spec import SEED_KEY, AblationSpec, Job

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
#: statuses in the order a row's status cell lists them
STATUSES = ("completed", "diverged", "failed", "interrupted", "running", "missing", "unreadable")
RUN_STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


@dataclass(frozen=True)
class Metric:
    """A table column: where a run's value is in ``metrics.json`` and how it is shown."""

    key: str
    name: str
    #: "metrics": under the record's test metrics (fractions, shown x100); "record": a top-level field
    source: str
    scale: float
    decimals: int


_COCO = ("AP", "AP50", "AP75", "AP80", "AP90", "APS", "APM", "APL", "AR100")
METRICS: dict[str, Metric] = {
    **{k: Metric(k, k, "metrics", 100.0, 1) for k in _COCO},
    "seconds_per_iteration": Metric("seconds_per_iteration", "s / iter", "record", 1.0, 3),
}
RATIO_DECIMALS = 2


def metric(key: str) -> Metric:
    """The column definition of ``key``; the error lists the known ones."""
    try:
        return METRICS[key]
    except KeyError:
        raise ValueError(f"ablation.metrics: unknown metric {key!r}; known: {sorted(METRICS)}") from None


@dataclass
class RunResult:
    """One job as read from its ``metrics.json``."""

    job: Job
    path: Path
    status: str
    reason: str | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> str | None:
        return self.job.values.get(SEED_KEY)

    @property
    def name(self) -> str:
        return self.job.dir


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_run(sweep_dir: Path, job: Job, metrics: list[str]) -> RunResult:
    """Read one job's ``metrics.json`` into a :class:`RunResult` (never raises for a bad file)."""
    path = Path(sweep_dir) / job.dir / METRICS_FILE
    if not path.is_file():
        return RunResult(
            job, path, "missing", f"{path} does not exist (the job has not run or never started)"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return RunResult(job, path, "unreadable", f"{path}: {type(err).__name__}: {err}")
    if not isinstance(record, dict):
        kind = type(record).__name__
        return RunResult(job, path, "unreadable", f"{path}: expected a JSON object, got a JSON {kind}")
    status = record.get("status")
    if status not in RUN_STATUSES:
        expected = list(RUN_STATUSES)
        return RunResult(
            job, path, "unreadable", f"{path}: field 'status' is {status!r}, expected one of {expected}"
        )
    test_metrics = record.get("metrics") or {}
    if not isinstance(test_metrics, dict):
        return RunResult(
            job, path, "unreadable", f"{path}: field 'metrics' is not an object: {test_metrics!r:.80}"
        )
    result = RunResult(job, path, status, record=record)
    if status == "running":
        started = record.get("started", "?")
        result.reason = f"metrics.json says running (started {started}): killed, or still running"
    elif status in ("failed", "diverged"):
        result.reason = str(record.get("reason") or f"no reason recorded in {path}")
    elif status == "interrupted":
        stop = record.get("interrupted") or {}
        result.reason = (
            f"interrupted by {stop.get('signal', 'a signal')} at step {stop.get('step', '?')}: "
            "rerun the sweep to resume it"
        )
    for key in metrics:
        m = metric(key)
        raw = test_metrics.get(key) if m.source == "metrics" else record.get(key)
        value = _number(raw)
        if value is not None and m.source == "metrics" and value < 0:
            value = None  # COCO's -1: no ground truth of that size
        result.values[key] = None if value is None else value * m.scale
        if status == "completed" and value is None:
            where = f"metrics.{key}" if m.source == "metrics" else key
            result.problems.append(f"{path}: completed, but {where} is {raw!r}")
    return result


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


#: the fraction of the iterations at which the convergence check reads the val AP before the end
CONVERGENCE_FRACTION = 0.75
#: the least rise in the last quarter (AP points) that counts as "not converged"
CONVERGENCE_MIN_RISE = 1.0


def val_ap_at(record: dict[str, Any], fraction: float) -> float | None:
    """A run's val AP (percent) at ``fraction`` of its iterations: the validation at or nearest below."""
    history, iterations = record.get("val_history"), _number(record.get("iterations"))
    if not isinstance(history, list) or not iterations:
        return None
    target = fraction * iterations
    best: tuple[float, float] | None = None
    for entry in history:
        if not isinstance(entry, dict):
            continue
        step, ap = _number(entry.get("step")), _number(entry.get("AP"))
        if step is None or ap is None or ap < 0 or step > target + 1e-9:
            continue
        if best is None or step >= best[0]:
            best = (step, ap * 100.0)
    return None if best is None else best[1]


@dataclass(frozen=True)
class Convergence:
    """Val AP (percent, mean over seeds) at 75 % and 100 % of the iterations, and the verdict.

    ``status``: ``not converged`` when the mean rise over the last quarter exceeds ``threshold`` =
    max(1 AP point, the row's seed std of test AP); ``n/a`` without a val history to read.
    """

    at_75: float | None
    at_100: float | None
    rise: float | None
    threshold: float | None
    n: int

    @property
    def status(self) -> str:
        if self.rise is None or self.threshold is None:
            return "n/a"
        return "not converged" if self.rise > self.threshold else "converged"

    @classmethod
    def of(cls, runs: list[RunResult]) -> Convergence:
        pairs = []
        for run in runs:
            if run.status != "completed":
                continue
            start, end = val_ap_at(run.record, CONVERGENCE_FRACTION), val_ap_at(run.record, 1.0)
            if start is not None and end is not None:
                pairs.append((start, end))
        if not pairs:
            return cls(None, None, None, None, 0)
        test_ap = [
            100.0 * v
            for r in runs
            if r.status == "completed"
            and (v := _number((r.record.get("metrics") or {}).get("AP"))) is not None
            and v >= 0
        ]
        std = statistics.stdev(test_ap) if len(test_ap) > 1 else 0.0
        return cls(
            statistics.fmean(p[0] for p in pairs),
            statistics.fmean(p[1] for p in pairs),
            statistics.fmean(p[1] - p[0] for p in pairs),
            max(CONVERGENCE_MIN_RISE, std),
            len(pairs),
        )


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
        lines.extend(self.convergence_notes())
        if self.bootstrap_note is not None:
            lines.append(f"bootstrap: {_one_line(self.bootstrap_note)}")
        if self.paper is not None:
            for row in self.rows:
                if row.paper is not None and row.paper.note:
                    lines.append(f"paper, {self.row_label} = {row.label}: {_one_line(row.paper.note)}")
            lines.extend(_one_line(n) for n in self.paper.notes)
        return lines

    def convergence_notes(self) -> list[str]:
        """The "not converged" rows, and the rows without a val history when others have one."""
        checked = [r for r in self.rows if r.convergence.status != "n/a"]
        if not checked:
            return []
        lines = []
        frac = f"{100 * CONVERGENCE_FRACTION:.0f} %"
        for row in checked:
            c = row.convergence
            if c.status == "not converged":
                lines.append(
                    f"{NOT_CONVERGED} {self.row_label} = {row.label} not converged: val AP rose "
                    f"{c.rise:+.1f} ({c.at_75:.1f} at {frac} -> {c.at_100:.1f} at 100 % of the iterations, "
                    f"mean of {c.n} seeds) > max({CONVERGENCE_MIN_RISE:g}, seed std of test AP) = "
                    f"{c.threshold:.1f}"
                )
        missing = [r.label for r in self.rows if r.convergence.status == "n/a"]
        if missing:
            lines.append(f"convergence n/a (no val_history) for {self.row_label} = {', '.join(missing)}")
        return lines


#: marks a row whose val AP still rose in the last quarter of training
NOT_CONVERGED = "\N{DAGGER}"


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
    from ghmdet.tables import bootstrap

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
