"""The commit recorded in metrics.json: '-dirty' for changed code, not for regenerated result tables."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ghmdet.run import record


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "loss.py").write_text("x = 1\n")
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "table.md").write_text("| AP |\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(record, "PROJECT_ROOT", tmp_path)
    return tmp_path


def test_regenerated_results_do_not_mark_the_code_dirty(repo: Path) -> None:
    clean = record.git_commit()
    assert clean is not None and len(clean) == 40
    (repo / "experiments" / "table.md").write_text("| AP |\n| 1.0 |\n")
    assert record.git_commit() == clean


def test_changed_code_is_marked_dirty(repo: Path) -> None:
    clean = record.git_commit()
    (repo / "src" / "loss.py").write_text("x = 2\n")
    assert record.git_commit() == f"{clean}-dirty"


def test_outside_git_there_is_no_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "PROJECT_ROOT", tmp_path)
    assert record.git_commit() is None
