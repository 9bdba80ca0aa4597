"""Writing a file so that a reader never sees half of it: write a sibling, then rename it into place."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_text_atomic(
    path: Path, text: str, fsync: bool = False, before_replace: Callable[[], None] | None = None
) -> Path:
    """Write ``text`` to ``path`` through a sibling that is renamed over it (atomic on one file system).

    Args:
        path: the destination; its folder must exist.
        text: the whole new content.
        fsync: flush the sibling to disk before the rename, so that a crash leaves the old or the new file,
            never an empty one (for records that must survive a power loss).
        before_replace: called once the new content is written, just before the rename.

    The sibling is removed when anything fails; ``path`` then keeps its earlier content.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
