"""One summary figure of an ablation table: the first metric per row, ours beside the paper's."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ghmdet.ablation.aggregate import AblationTable
from ghmdet.ablation.convergence import NOT_CONVERGED
from ghmdet.ablation.render import SIGNIFICANT


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot(table: AblationTable, path: Path) -> Path:
    """One summary figure: the table's first metric per row, ours (mean ± std) and the paper's, with the
    table's markers (``†`` not converged, ``*`` interval excluding 0) beside our points.

    With ``relative_to`` the plotted quantity is each row relative to the reference row (same axis for ours
    and the paper's); otherwise our values go on the left axis and the paper's on a right axis, unless the
    preset says they share a scale (COCO). Rows without a completed run, and the paper's diverged settings,
    are marked with their status.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spec, rows, m = table.spec, table.rows, table.metrics[0]
    relative = spec.relative_to is not None
    numeric = len(spec.group_keys) == 1 and all(_as_float(r.key[0]) is not None for r in rows)
    xs = [_as_float(r.key[0]) if numeric else float(i) for i, r in enumerate(rows)]
    ours, err, paper = [], [], []
    for row in rows:
        stat = row.ours[m.key]
        if relative:
            ref = table.reference.ours[m.key].mean if table.reference is not None else None
            ours.append(row.ours_ratio.get(m.key))
            err.append(stat.std / ref if stat.std is not None and ref else 0.0)
            paper.append(row.paper_ratio.get(m.key))
        else:
            ours.append(stat.mean)
            err.append(stat.std or 0.0)
            paper.append(row.paper_value(m.key))

    fig = Figure(figsize=(6.4 if numeric else 7.2, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    quantity = f"{m.name} relative to {table.reference_label}" if relative else m.name
    pts = [(x, y, e) for x, y, e in zip(xs, ours, err) if y is not None]
    if pts:
        ax.errorbar(
            [p[0] for p in pts],
            [p[1] for p in pts],
            yerr=[p[2] for p in pts],
            fmt="o-" if numeric else "o",
            capsize=3,
            color="tab:blue",
            label=f"ours ({spec.preset})",
        )
    shared = relative or spec.same_scale_as_paper
    pax = ax if shared else ax.twinx()
    ppts = [(x, y) for x, y in zip(xs, paper) if y is not None]
    if ppts:
        pax.plot(
            [p[0] for p in ppts],
            [p[1] for p in ppts],
            "s--" if numeric else "s",
            color="tab:orange",
            label=f"paper ({table.setting or 'COCO'})",
        )
    for x, row, y in zip(xs, rows, ours):
        interval = row.bootstrap.get(m.key)
        marks = (NOT_CONVERGED if row.convergence.status == "not converged" else "") + (
            SIGNIFICANT if interval is not None and interval.excludes_zero else ""
        )
        if y is not None and marks:  # the table's markers: not converged, differs from the reference
            ax.annotate(marks, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9, color="tab:red")
        if y is None:
            ax.annotate(
                row.status,
                (x, 0.02),
                xycoords=("data", "axes fraction"),
                ha="center",
                fontsize=8,
                color="tab:blue",
                rotation=90,
                va="bottom",
            )
        if row.paper is not None and row.paper.status is not None:
            ax.annotate(
                f"paper: {row.paper.status}",
                (x, 0.98),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="top",
                fontsize=8,
                color="tab:orange",
            )
    if relative and all(v is None or v > 0 for v in ours + paper):
        values = [v for v in ours + paper if v is not None]
        if values and max(values) / min(values) > 10:
            ax.set_yscale("log")
    ax.set_xlabel(table.row_label)
    ax.set_ylabel(quantity if shared else f"{quantity}, ours")
    if not shared:
        pax.set_ylabel(f"{quantity}, paper", color="tab:orange")
    if numeric:
        pad = 0.08 * ((max(xs) - min(xs)) or 1.0)
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
    else:
        ax.set_xticks(xs, [textwrap.fill(", ".join([r.label, *r.key[1:]]), 16) for r in rows])
        ax.set_xlim(-0.5, len(rows) - 0.5)
    handles, labels = ax.get_legend_handles_labels()
    if pax is not ax:
        more = pax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(f"{table.caption}", fontsize=9)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
