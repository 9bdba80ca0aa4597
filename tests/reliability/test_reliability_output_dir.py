"""An unwritable output dir or a full disk: a clear one-line error at start-up or mid-run (exit status 2),
earlier results and checkpoints untouched."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ghmdet.run import checkpoint_io
from ghmdet.run.checkpoint_io import AtomicCheckpointIO, check_checkpoint
from ghmdet.run.run_dir import OutputDirError, check_output_dir
from ghmdet.train import run
from tests.helpers.configs import compose_train
from tests.reliability.reliability_faults import full_disk_open

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
    cfg = compose_train(
        [
            "experiment=tiny",
            "skip_completed=false",
            f"paths.output_dir={run_dir}",
            f"paths.data_dir={tmp_path / 'data'}",
        ]
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


def test_a_disk_filling_up_during_a_checkpoint_save_names_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 10}, path)
    # torch's zip writer turns the failed write into "RuntimeError: [enforce fail at inline_container.cc]"
    monkeypatch.setattr(checkpoint_io, "open", full_disk_open(room=100), raising=False)
    with pytest.raises(OSError) as error:
        io.save_checkpoint({"state_dict": {"w": torch.ones(10_000)}, "global_step": 20}, path)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(path)
    monkeypatch.undo()
    assert check_checkpoint(path) == 10
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def one_line(proc: Any) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("ghmdet-train: error: ") and "Traceback" not in proc.stderr, proc.stderr[
        -3000:
    ]
    return lines[-1]


@pytest.mark.slow
def test_cli_a_disk_filling_up_mid_run_is_one_line_and_keeps_the_checkpoint(
    tmp_path: Path, train: Callable[..., Any]
) -> None:
    run_dir = tmp_path / "run"
    full = "+callbacks.fault={_target_:reliability_faults.FullDisk,step:5}"
    line = one_line(train(run_dir, "trainer.max_steps=12", full))
    assert f"cannot write results: No space left on device: {run_dir / 'checkpoints' / 'last.ckpt'}" in line
    assert check_checkpoint(run_dir / "checkpoints" / "last.ckpt") == 4  # the one before the full disk
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "No space left on device" in record["reason"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 160 MiB tmpfs of its own: room for two tiny-preset checkpoints (36 MB each) and a bit. Root only:
    skipped where it cannot be mounted."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_cli_a_real_full_disk_mid_run(small_fs: Path, train: Callable[..., Any]) -> None:
    run_dir = small_fs / "run"
    fill = "+callbacks.fault={_target_:reliability_faults.FillDisk,step:5}"
    line = one_line(train(run_dir, "trainer.max_steps=12", "min_free_disk_mb=1", fill))
    assert "cannot write results: No space left on device: " in line and str(run_dir) in line
    assert check_checkpoint(run_dir / "checkpoints" / "last.ckpt") == 4


@pytest.mark.slow
def test_cli_an_existing_read_only_run_dir(small_fs: Path, train: Callable[..., Any]) -> None:
    run_dir = small_fs / "run"
    proc = train(run_dir, "trainer.max_steps=2", "min_free_disk_mb=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = (run_dir / "metrics.json").read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    # Hydra's log file handler fails first (logging wraps its OSError in "Unable to configure handler")
    line = one_line(train(run_dir, "trainer.max_steps=2", "skip_completed=false", "min_free_disk_mb=1"))
    assert "cannot write results: Read-only file system: " in line and str(run_dir) in line
    assert (run_dir / "metrics.json").read_bytes() == before
