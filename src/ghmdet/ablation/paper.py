"""The paper's reference numbers (``paper_numbers.yaml``, shipped as package data)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

#: metrics a paper row may give; AP-type ones in percent, seconds_per_iteration in seconds
PAPER_METRICS = ("AP", "AP50", "AP75", "AP80", "AP90", "APS", "APM", "APL", "AR100", "seconds_per_iteration")
_ROW_KEYS = {"value", "label", "status", "note", *PAPER_METRICS}
_TABLE_KEYS = {"caption", "row_label", "source", "notes", "rows"}
_STATUSES = ("diverged",)


class PaperNumbersError(ValueError):
    """``paper_numbers.yaml`` does not have the expected shape; the message names file, table, row, field."""


def values_match(ours: str, paper: Any) -> bool:
    """Whether our swept override value (a string, e.g. ``"0.50"`` or ``"focal"``) names the paper's row.

    Numbers compare as numbers (``0.5`` matches ``"0.50"``); anything else compares as text.
    """
    if isinstance(paper, (int, float)) and not isinstance(paper, bool):
        try:
            return math.isclose(float(ours), float(paper), rel_tol=1e-9, abs_tol=1e-12)
        except ValueError:
            return False
    return str(paper) == ours


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table."""

    value: Any
    label: str
    metrics: dict[str, float] = field(default_factory=dict)
    status: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PaperTable:
    """One paper table: its caption, the heading of its row column, its source and rows."""

    name: str
    caption: str
    row_label: str
    source: str
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = ()

    def row_for(self, value: str) -> PaperRow | None:
        """The paper row that our row value names, or None when the paper has no such row."""
        return next((row for row in self.rows if values_match(value, row.value)), None)


@dataclass(frozen=True)
class PaperNumbers:
    """Every paper table, by ablation table name."""

    setting: str
    tables: dict[str, PaperTable]
    path: str

    def get(self, table: str) -> PaperTable | None:
        return self.tables.get(table)


def default_path() -> Path:
    """The ``paper_numbers.yaml`` that ships with the package."""
    return Path(str(resources.files("ghmdet.ablation").joinpath("paper_numbers.yaml")))


def _fail(path: Path, where: str, message: str) -> PaperNumbersError:
    return PaperNumbersError(f"{path}: {where}: {message}")


def _check_fields(path: Path, where: str, what: str, raw: Any, allowed: set[str]) -> None:
    """``raw`` must be a mapping whose keys are all in ``allowed``."""
    if not isinstance(raw, dict):
        raise _fail(path, where, f"a {what} must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(path, where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _parse_row(path: Path, table: str, index: int, raw: Any) -> PaperRow:
    where = f"tables.{table}.rows[{index}]"
    _check_fields(path, where, "row", raw, _ROW_KEYS)
    if "value" not in raw:
        raise _fail(path, where, "missing field 'value' (the swept override value this row matches)")
    metrics: dict[str, float] = {}
    for key in PAPER_METRICS:
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _fail(path, f"{where}.{key}", f"must be a finite number, got {value!r}")
            metrics[key] = float(value)
    status = raw.get("status")
    if status is not None and status not in _STATUSES:
        raise _fail(path, f"{where}.status", f"must be one of {list(_STATUSES)}, got {status!r}")
    label = str(raw.get("label", raw["value"]))
    return PaperRow(value=raw["value"], label=label, metrics=metrics, status=status, note=raw.get("note"))


def _parse_table(path: Path, name: str, raw: Any) -> PaperTable:
    where = f"tables.{name}"
    _check_fields(path, where, "table", raw, _TABLE_KEYS)
    for key in ("caption", "row_label", "source", "rows"):
        if key not in raw:
            raise _fail(path, where, f"missing field {key!r}")
    if not isinstance(raw["rows"], list):
        raise _fail(path, f"{where}.rows", f"must be a list, got {raw['rows']!r}")
    rows = tuple(_parse_row(path, name, i, row) for i, row in enumerate(raw["rows"]))
    values = [str(row.value) for row in rows]
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise _fail(path, f"{where}.rows", f"duplicate value(s) {duplicates}")
    notes = raw.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _fail(path, f"{where}.notes", f"must be a list of strings, got {notes!r}")
    return PaperTable(
        name=name,
        caption=str(raw["caption"]),
        row_label=str(raw["row_label"]),
        source=str(raw["source"]),
        rows=rows,
        notes=tuple(notes),
    )


def load_paper_numbers(path: Path | None = None) -> PaperNumbers:
    """Read and check ``paper_numbers.yaml`` (the packaged one unless ``path`` is given)."""
    path = Path(path) if path is not None else default_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PaperNumbersError(f"{path}: cannot read the paper's numbers: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("tables"), dict):
        raise PaperNumbersError(f"{path}: expected a mapping with a 'tables' mapping at the top")
    tables = {str(name): _parse_table(path, str(name), table) for name, table in raw["tables"].items()}
    return PaperNumbers(setting=str(raw.get("setting", "")), tables=tables, path=str(path))
