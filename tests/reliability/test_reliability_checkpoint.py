"""Checkpoints load with ``weights_only=True``: a checkpoint carrying a pickled object is refused before
anything from it runs, a truncated one gives a clear error, and the suite's own checkpoints load fine."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ghmdet.run.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointError,
    check_checkpoint,
    load_checkpoint_safely,
)
from tests.reliability.reliability_helpers import read_record


class Payload:
    """Pickles to a call of ``os.system``: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "global_step": 3, "payload": Payload(marker)}, path)
    return path


def test_a_pickled_object_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = malicious_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="weights_only=True") as error:
        check_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "global_step": 7}, good)
    assert check_checkpoint(good) == 7
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint_safely(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.ones(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_checkpoint_safely(foreign)


@pytest.mark.slow
def test_the_cli_refuses_a_malicious_last_checkpoint(tmp_path: Path, train: Callable[..., Any]) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    malicious_checkpoint(run_dir / "checkpoints" / "last.ckpt", marker)
    proc = train(run_dir, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("ghmdet-train: error: ") and "last.ckpt" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
    record = read_record(run_dir)
    assert record["status"] == "failed" and "CheckpointError" in record["reason"]


def test_an_interrupted_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 10}, path)
    real_save = torch.save

    def dies_half_way(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 20}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert check_checkpoint(path) == 10
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


@pytest.mark.slow
def test_the_final_weights_are_saved_and_the_record_names_them(
    tmp_path: Path, train: Callable[..., Any]
) -> None:
    from ghmdet.analysis import checkpoint_path, load_run

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    # The tiny preset saves every 2 steps: 5 is not a multiple, the final save is the run's own.
    proc = train(run_dir, "trainer.max_steps=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(run_dir)
    assert record["iterations"] == 5
    assert record["checkpoint"] == {"file": "checkpoints/last.ckpt", "step": 5}
    assert check_checkpoint(last) == 5
    # The analysis loads the checkpoint the metrics belong to.
    assert checkpoint_path(run_dir) == last
    assert load_run(run_dir).global_step == 5

    # Training afresh into the dir overwrites last.ckpt: no last-v1.ckpt beside it (which no resume reads).
    proc = train(run_dir, "trainer.max_steps=3", "resume=false", "skip_completed=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    assert check_checkpoint(last) == 3 and read_record(run_dir)["checkpoint"]["step"] == 3
