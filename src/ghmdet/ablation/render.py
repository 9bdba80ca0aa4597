"""One :class:`~ghmdet.ablation.aggregate.AblationTable` -> Markdown, CSV and LaTeX (figure: `summary_plot`).

All formats show the same columns: the row (the swept value), ``runs`` (completed / launched), then for each
metric ours (mean ± std), the paper's and the delta ours - paper, with ``ablation.reference`` the paired
bootstrap difference to the reference row (``ΔAP [lo, hi]``, ``*`` where the 95 % interval excludes 0),
optionally each row relative to a reference row (``× CE``), and the row's status. A row whose val AP still
rose in the last quarter of training carries ``†`` (not converged). AP-type metrics are in percent, like the
paper's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ghmdet.ablation.aggregate import RATIO_DECIMALS, AblationTable, Row
from ghmdet.ablation.convergence import CONVERGENCE_FRACTION, NOT_CONVERGED, val_ap_at
from ghmdet.ablation.job_results import Metric
from ghmdet.files import write_text_atomic
from ghmdet.paths import PROJECT_ROOT

NONE = "—"
TIMES = "\N{MULTIPLICATION SIGN}"
MINUS = "\N{MINUS SIGN}"


@dataclass(frozen=True)
class Num:
    """A number cell: value (None: no number), decimals, optional std, signed for deltas."""

    value: float | None
    decimals: int
    std: float | None = None
    signed: bool = False

    def text(self, pm: str = " ± ") -> str:
        if self.value is None:
            return NONE
        value = round(self.value, self.decimals) + 0.0  # no "-0.0"
        text = f"{value:+.{self.decimals}f}" if self.signed else f"{value:.{self.decimals}f}"
        if self.std is not None:
            text += f"{pm}{self.std:.{self.decimals}f}"
        return text


SIGNIFICANT = "*"
REFERENCE = "ref"


@dataclass(frozen=True)
class CI:
    """A paired-bootstrap cell: the difference to the reference and its interval (already scaled)."""

    delta: float
    lo: float
    hi: float
    decimals: int
    significant: bool

    def _num(self, value: float) -> str:
        return Num(value, self.decimals, signed=True).text()

    def text(self) -> str:
        marker = f" {SIGNIFICANT}" if self.significant else ""
        return f"{self._num(self.delta)} [{self._num(self.lo)}, {self._num(self.hi)}]{marker}"

    def tex(self) -> str:
        marker = f"^{{{SIGNIFICANT}}}" if self.significant else ""
        return f"${self._num(self.delta)}{marker}$ [${self._num(self.lo)}$, ${self._num(self.hi)}$]"

    def __str__(self) -> str:
        return self.text()


Cell = str | Num | CI


def _ratio_name(table: AblationTable, name: str) -> str:
    ref = table.reference_label
    return f"{TIMES} {ref}" if len(table.metrics) == 1 else f"{name} {TIMES} {ref}"


def _boot_name(table: AblationTable, m: Metric) -> str:
    return f"Δ {m.name} vs {table.reference_row_label} [95 % CI]"


def header(table: AblationTable) -> list[str]:
    """Column headings shared by the Markdown and LaTeX tables."""
    columns = [table.row_label, *table.spec.group_keys[1:], "runs"]
    boot = {m.key for m in table.bootstrap_metrics}
    for m in table.metrics:
        columns += [m.name, f"{m.name} paper", f"Δ {m.name}"]
        if m.key in boot:
            columns.append(_boot_name(table, m))
    if table.spec.relative_to is not None:
        for m in table.metrics:
            name = _ratio_name(table, m.name)
            columns += [name, f"{name} paper", f"Δ {name}"]
    return [*columns, "status"]


def _paper_cell(row: Row, key: str, decimals: int) -> Cell:
    if row.paper is not None and row.paper.status is not None and key not in row.paper.metrics:
        return row.paper.status
    return Num(row.paper_value(key), decimals)


def _boot_cell(row: Row, m: Metric) -> Cell:
    if row.is_reference:
        return REFERENCE
    interval = row.bootstrap.get(m.key)
    if interval is None:
        return NONE
    scaled = [v * m.scale for v in (interval.delta, interval.lo, interval.hi)]
    return CI(*scaled, decimals=m.decimals, significant=interval.excludes_zero)


def label(row: Row) -> str:
    """The row's label, marked when its training had not converged."""
    return f"{row.label} {NOT_CONVERGED}" if row.convergence.status == "not converged" else row.label


def cells(table: AblationTable, row: Row) -> list[Cell]:
    """One row's cells, in :func:`header` order."""
    out: list[Cell] = [label(row), *row.key[1:], f"{row.n_completed}/{len(row.runs)}"]
    boot = {m.key for m in table.bootstrap_metrics}
    for m in table.metrics:
        stat = row.ours[m.key]
        out += [
            Num(stat.mean, m.decimals, stat.std),
            _paper_cell(row, m.key, m.decimals),
            Num(row.delta(m.key), m.decimals, signed=True),
        ]
        if m.key in boot:
            out.append(_boot_cell(row, m))
    if table.spec.relative_to is not None:
        for m in table.metrics:
            paper_ratio: Cell = Num(row.paper_ratio.get(m.key), RATIO_DECIMALS)
            if row.paper is not None and row.paper.status is not None and row.paper_ratio.get(m.key) is None:
                paper_ratio = row.paper.status
            out += [
                Num(row.ours_ratio.get(m.key), RATIO_DECIMALS),
                paper_ratio,
                Num(row.ratio_delta(m.key), RATIO_DECIMALS, signed=True),
            ]
    return [*out, row.status]


def display_path(path: str | Path) -> str:
    """A path relative to the project root when it lies inside it, else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------- Markdown
def _md_cell(cell: Cell) -> str:
    text = cell.text() if isinstance(cell, (Num, CI)) else str(cell)
    return text.replace("|", "\\|")


def markdown_table(table: AblationTable) -> str:
    """The table alone, as GitHub Markdown (numbers right-aligned)."""
    head = header(table)
    n_keys = len(table.spec.group_keys)
    align = ["---"] * n_keys + ["---:"] * (len(head) - n_keys - 1) + ["---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in cells(table, row)) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def legend(table: AblationTable) -> str:
    """The paragraph under the table: what ours and the paper's numbers are."""
    spec = table.spec
    seeds = table.seeds
    parts = [
        f"Ours: {spec.data_description or spec.preset}; "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} per row ({', '.join(seeds) or 'none'}), "
        "mean ± sample std over the completed runs (runs = completed / launched)."
    ]
    if table.paper is not None:
        parts.append(f"Paper: {table.setting}; {table.paper.source}.")
    else:
        parts.append("The paper has no such table.")
    parts.append(f"AP-type metrics in percent; Δ = ours {MINUS} paper.")
    if spec.relative_to is not None:
        parts.append(
            f"{TIMES} {table.reference_label}: a row's mean over the {table.reference_label} row's mean "
            "(ours and the paper's alike)."
        )
    if table.bootstrap_metrics:
        ref = table.reference_row_label
        parts.append(
            f"Δ vs {ref}: the mean over seeds (paired by seed) of the row's test AP minus the {ref} row's, "
            f"and its 95 % paired-bootstrap interval over test images ({spec.n_boot} replicates, the same "
            f"draws for every row and seed); {SIGNIFICANT} = the interval excludes 0."
        )
    if any(r.convergence.status == "not converged" for r in table.rows):
        parts.append(f"{NOT_CONVERGED} = not converged (val AP still rising at the end; see the notes).")
    return " ".join(parts)


def markdown(table: AblationTable) -> str:
    """The whole Markdown file: title, table, legend, notes and provenance."""
    spec = table.spec
    out = [f"# {table.caption}, preset `{spec.preset}`", "", markdown_table(table), legend(table), ""]
    notes = table.notes()
    if notes:
        out += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    commits = ", ".join(f"`{c}`" for c in table.git_commits) or "unknown"
    source = display_path(spec.sweep_dir)
    out.append(f"Generated by `ghmdet-tables` from `{source}` (`{spec.command}`; code {commits}).")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- CSV
def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{round(value, 6):g}"


def csv_text(table: AblationTable) -> str:
    """One line per row with raw numbers (mean, std, n, paper, delta per metric)."""
    spec = table.spec
    head = [*spec.group_keys, "label", "runs", "completed", "status"]
    for m in table.metrics:
        head += [m.key, f"{m.key}_std", f"{m.key}_n", f"{m.key}_paper", f"{m.key}_delta"]
    ref = spec.relative_to
    if ref is not None:
        for m in table.metrics:
            head += [f"{m.key}_x_{ref}", f"{m.key}_x_{ref}_paper", f"{m.key}_x_{ref}_delta"]
    head.append("paper_status")
    boot = table.bootstrap_metrics
    for m in boot:
        head += [f"{m.key}_vs_ref", f"{m.key}_vs_ref_lo", f"{m.key}_vs_ref_hi", f"{m.key}_vs_ref_excludes_0"]
    if boot:
        head += ["vs_ref_seeds", "is_reference"]
    head += ["val_AP_75", "val_AP_100", "val_AP_rise", "convergence"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    for row in table.rows:
        line = [*row.key, row.label, len(row.runs), row.n_completed, row.status]
        for m in table.metrics:
            stat = row.ours[m.key]
            line += [
                _csv_number(stat.mean),
                _csv_number(stat.std),
                stat.n,
                _csv_number(row.paper_value(m.key)),
                _csv_number(row.delta(m.key)),
            ]
        if ref is not None:
            for m in table.metrics:
                line += [
                    _csv_number(row.ours_ratio.get(m.key)),
                    _csv_number(row.paper_ratio.get(m.key)),
                    _csv_number(row.ratio_delta(m.key)),
                ]
        line.append((row.paper.status or "") if row.paper is not None else "")
        intervals = [row.bootstrap.get(m.key) for m in boot]
        for m, interval in zip(boot, intervals):
            if interval is None:
                line += ["", "", "", ""]
            else:
                values = (interval.delta, interval.lo, interval.hi)
                line += [*(_csv_number(v * m.scale) for v in values), str(interval.excludes_zero).lower()]
        if boot:
            seeds = next((i.n_seeds for i in intervals if i is not None), "")
            line += [seeds, str(row.is_reference).lower()]
        c = row.convergence
        line += [_csv_number(c.at_75), _csv_number(c.at_100), _csv_number(c.rise), c.status]
        writer.writerow(line)
    return buffer.getvalue()


def runs_rows(table: AblationTable) -> tuple[list[str], list[list[object]]]:
    """One line per job: its dir, row keys, seed, status and reason, metric values, cost, val AP at 75 % and
    100 % of the iterations, code."""
    spec = table.spec
    head = ["dir", *spec.group_keys, "seed", "status", "reason", *spec.metrics]
    extra = [k for k in ("seconds_per_iteration", "iterations", "wall_seconds") if k not in spec.metrics]
    head += [*extra, "val_AP_75", "val_AP_100", "git_commit"]
    rows: list[list[object]] = []
    for row in table.rows:
        for run in row.runs:
            line: list[object] = [run.name, *row.key, run.seed or "", run.status, run.reason or ""]
            line += [_csv_number(run.values.get(m)) for m in spec.metrics]
            line += [run.record.get(k, "") if run.record.get(k) is not None else "" for k in extra]
            line += [_csv_number(val_ap_at(run.record, f)) for f in (CONVERGENCE_FRACTION, 1.0)]
            line.append(run.record.get("git_commit") or "")
            rows.append(line)
    return head, rows


def runs_csv_text(table: AblationTable) -> str:
    head, rows = runs_rows(table)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    writer.writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- LaTeX
_TEX_TEXT = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
    TIMES: r"$\times$",
    "\N{GREEK SMALL LETTER ALPHA}": r"$\alpha$",
    "±": r"$\pm$",
    "—": "--",
    MINUS: "-",
    NOT_CONVERGED: r"$^\dagger$",
}


def tex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell (special characters escaped, a few symbols as math)."""
    return "".join(_TEX_TEXT.get(ch, ch) for ch in str(text))


def _tex_cell(cell: Cell) -> str:
    if isinstance(cell, CI):
        return cell.tex()
    if isinstance(cell, Num):
        return "--" if cell.value is None else "$" + cell.text(pm=r" \pm ") + "$"
    return tex_escape(cell)


def latex(table: AblationTable) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    spec = table.spec
    head = header(table)
    n_keys = len(spec.group_keys)
    columns = "l" * n_keys + "r" * (len(head) - n_keys - 1) + "l"
    lines = [
        f"% ghmdet-tables: {spec.table}, preset {spec.preset}, from {display_path(spec.sweep_dir)}",
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[ht]",
        "  \\centering",
        f"  \\caption{{{tex_escape(table.caption)}: ours ({tex_escape(spec.preset)}) and the paper's "
        f"({tex_escape(table.setting or 'no paper table')}). {tex_escape(legend(table))}}}",
        f"  \\label{{tab:ghmdet-{spec.table.replace('_', '-')}-{spec.preset}}}",
        "  \\small",
        f"  \\begin{{tabular}}{{{columns}}}",
        "    \\toprule",
        "    " + " & ".join(tex_escape(h) for h in head) + " \\\\",
        "    \\midrule",
    ]
    lines += ["    " + " & ".join(_tex_cell(c) for c in cells(table, row)) + " \\\\" for row in table.rows]
    lines += ["    \\bottomrule", "  \\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> Path:
    """Write a file atomically (a reader never sees half a table)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text)
