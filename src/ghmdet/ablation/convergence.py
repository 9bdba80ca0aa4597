"""Had training converged? A row's val AP at 75 % and at 100 % of the iterations, and the verdict.

docs/ablation.md, "Statistics": a row is ``not converged`` when its mean val AP (over seeds) rose in the last
quarter of training by more than max(1 AP point, the row's seed std of test AP).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ghmdet.ablation.job_results import RunResult, finite_number

if TYPE_CHECKING:
    from ghmdet.ablation.aggregate import Row

#: marks a row whose val AP still rose in the last quarter of training
NOT_CONVERGED = "\N{DAGGER}"
#: the fraction of the iterations at which the convergence check reads the val AP before the end
CONVERGENCE_FRACTION = 0.75
#: the least rise in the last quarter (AP points) that counts as "not converged"
CONVERGENCE_MIN_RISE = 1.0


def val_ap_at(record: dict[str, Any], fraction: float) -> float | None:
    """A run's val AP (percent) at ``fraction`` of its iterations: the validation at or nearest below."""
    history, iterations = record.get("val_history"), finite_number(record.get("iterations"))
    if not isinstance(history, list) or not iterations:
        return None
    target = fraction * iterations
    best: tuple[float, float] | None = None
    for entry in history:
        if not isinstance(entry, dict):
            continue
        step, ap = finite_number(entry.get("step")), finite_number(entry.get("AP"))
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
            and (v := finite_number((r.record.get("metrics") or {}).get("AP"))) is not None
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


def convergence_notes(rows: list[Row], row_label: str) -> list[str]:
    """The "not converged" rows, and the rows without a val history when others have one."""
    checked = [r for r in rows if r.convergence.status != "n/a"]
    if not checked:
        return []
    lines = []
    frac = f"{100 * CONVERGENCE_FRACTION:.0f} %"
    for row in checked:
        c = row.convergence
        if c.status == "not converged":
            lines.append(
                f"{NOT_CONVERGED} {row_label} = {row.label} not converged: val AP rose "
                f"{c.rise:+.1f} ({c.at_75:.1f} at {frac} -> {c.at_100:.1f} at 100 % of the iterations, "
                f"mean of {c.n} seeds) > max({CONVERGENCE_MIN_RISE:g}, seed std of test AP) = "
                f"{c.threshold:.1f}"
            )
    missing = [r.label for r in rows if r.convergence.status == "n/a"]
    if missing:
        lines.append(f"convergence n/a (no val_history) for {row_label} = {', '.join(missing)}")
    return lines
