"""What the benchmarks share: the order in which they time their variants."""

from __future__ import annotations

from collections.abc import Sequence


def rotated(names: Sequence[str], shift: int) -> list[str]:
    """``names`` rotated left by ``shift`` (modulo their number).

    Timed round by round in this order (``shift`` = the round), no variant always runs first, last or right
    after the same neighbour, so that warm caches, the allocator and clock drift favour none of them.
    """
    names = list(names)
    if not names:
        return []
    shift %= len(names)
    return names[shift:] + names[:shift]
