"""One job of a sweep as its ``metrics.json`` says: status, reason, the table's metrics (never raises).

A job that never wrote ``metrics.json`` is ``missing``, one whose file does not parse (or lacks its fields) is
``unreadable`` with the file named, a killed one is ``running``, one stopped by SIGTERM / SIGINT
``interrupted``; ``failed`` and ``diverged`` jobs carry the reason that the run recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghmdet.ablation.spec import SEED_KEY, Job
from ghmdet.run.record import METRICS_FILE, load_record
from ghmdet.run.record import STATUSES as RUN_STATUSES

#: statuses in the order a row's status cell lists them: a record's (:data:`RUN_STATUSES`) and two of a job
#: without a readable record
STATUSES = ("completed", "diverged", "failed", "interrupted", "running", "missing", "unreadable")


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


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
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
        record = load_record(path)
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
        value = finite_number(raw)
        if value is not None and m.source == "metrics" and value < 0:
            value = None  # COCO's -1: no ground truth of that size
        result.values[key] = None if value is None else value * m.scale
        if status == "completed" and value is None:
            where = f"metrics.{key}" if m.source == "metrics" else key
            result.problems.append(f"{path}: completed, but {where} is {raw!r}")
    return result
