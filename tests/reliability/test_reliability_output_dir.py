"""An unwritable output dir or a full disk: a clear one-line error at start-up, earlier results untouched."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from ghmdet.reliability import OutputDirError, check_output_dir
from ghmdet.train import CONFIG_DIR, run

EARLIER = {"status": "completed", "metrics": {"AP": 0.25}, "note": "an earlier result"}


def earlier_run(run_dir: Path) -> bytes:
    run_dir.mkdir(parents=True)
    text = json.dumps(EARLIER).encode()
    (run_dir / "metrics.json").write_bytes(text)
    return text


def files(run_dir: Path) -> set[str]:
    """What the run dir holds besides Hydra's own records (``.hydra/``, the appended ``train.log``)."""
    return {
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if ".hydra" not in p.parts and p.name != "train.log"
    }


def test_probe_detects_a_path_that_is_no_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="not writable") as error:
        check_output_dir(blocker / "run")
    assert str(blocker / "run") in str(error.value.strerror)


def test_probe_detects_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputDirError, match="No space left on device") as error:
        check_output_dir(tmp_path / "run")
    assert error.value.errno == errno.ENOSPC
    assert list((tmp_path / "run").iterdir()) == []  # the probe file was removed


def test_probe_enforces_the_free_space_floor(tmp_path: Path) -> None:
    check_output_dir(tmp_path, min_free_mb=1)
    with pytest.raises(OutputDirError, match="min_free_disk_mb"):
        check_output_dir(tmp_path, min_free_mb=1e12)


def test_full_disk_at_start_up_leaves_the_earlier_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    before = earlier_run(run_dir)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=tiny",
                "skip_completed=false",
                f"paths.output_dir={run_dir}",
                f"paths.data_dir={tmp_path / 'data'}",
            ],
        )

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputDirError, match="No space left"):
        run(cfg)
    assert (run_dir / "metrics.json").read_bytes() == before
    assert files(run_dir) == {"metrics.json"}  # no backup, no partial record, no checkpoint
    assert not (tmp_path / "data").exists()  # failed before any data was built


@pytest.mark.slow
def test_cli_reports_an_unwritable_run_dir_in_one_line(tmp_path: Path, train: Callable[..., Any]) -> None:
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the run dir's parent should be")
    proc = train(blocker / "run", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghmdet-train: error: cannot write results"), proc.stderr
    assert str(blocker) in lines[0]
    assert blocker.read_text().startswith("a file")


@pytest.mark.slow
def test_cli_free_space_floor_keeps_the_earlier_result(tmp_path: Path, train: Callable[..., Any]) -> None:
    run_dir = tmp_path / "run"
    before = earlier_run(run_dir)
    proc = train(run_dir, "skip_completed=false", "min_free_disk_mb=1e12", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "min_free_disk_mb" in lines[0] and str(run_dir) in lines[0], proc.stderr
    assert (run_dir / "metrics.json").read_bytes() == before
    assert files(run_dir) == {"metrics.json"}
