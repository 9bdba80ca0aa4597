"""How an exception reads in one line: its non-empty lines, and the first of them."""

from __future__ import annotations


def error_lines(err: BaseException) -> list[str]:
    """The non-empty lines of ``str(err)``, stripped."""
    return [line.strip() for line in str(err).splitlines() if line.strip()]


def first_line(err: BaseException) -> str:
    """The first non-empty line of ``str(err)`` ("" for an empty message)."""
    lines = error_lines(err)
    return lines[0] if lines else ""
