"""SIGTERM (a scheduler's preemption, ``timeout``) and SIGINT (Ctrl+C) stop a run at a step boundary: it saves
``last.ckpt`` at that step, records ``interrupted`` (signal, step, checkpoint), prints one line and exits with
128 + the signal, so that a scheduler or ``make`` sees the stop; the same command resumes. (Bit-exact resume
after a SIGTERM: ``test_reliability_resume.py``.)"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.reliability.reliability_helpers import (
    read_record,
    run_and_signal_after_next_checkpoint,
    train_command,
)

pytestmark = pytest.mark.slow


def saved_step(run_dir: Path) -> int:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return int(checkpoint["global_step"])


def test_sigterm_from_outside(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    command = train_command(
        run_dir,
        data_dir,
        "trainer.max_steps=40",
        "data.batch_size=1",
        "callbacks.model_checkpoint.every_n_train_steps=10",
    )
    status, stderr = run_and_signal_after_next_checkpoint(
        command, run_dir / "checkpoints" / "last.ckpt", signal.SIGTERM
    )
    assert status == 143, stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and record["interrupted"]["signal"] == "SIGTERM"
    step = record["interrupted"]["step"]
    assert 10 <= step < 40 and record["iterations"] == step
    assert saved_step(run_dir) == step == record["interrupted"]["checkpoint"]["step"]
    assert stderr.strip().splitlines()[-1].startswith(f"ghmdet-train: interrupted by SIGTERM at step {step}")


def test_ctrl_c_stops_after_the_step_and_the_same_command_resumes(
    tmp_path: Path, train: Callable[..., Any]
) -> None:
    run_dir = tmp_path / "run"
    sigint = f"+callbacks.fault={{_target_:reliability_faults.SendSignal,step:5,signum:{int(signal.SIGINT)}}}"
    proc = train(run_dir, "trainer.max_steps=12", sigint)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ghmdet-train: interrupted by SIGINT at step 6: ")
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and record["reason"] == "stopped by SIGINT at step 6"
    assert record["interrupted"]["signal"] == "SIGINT" and record["interrupted"]["step"] == 6
    assert saved_step(run_dir) == 6  # saved there, not at the step-4 checkpoint of the interval

    proc = train(run_dir, "trainer.max_steps=12", sigint)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "completed" and record["resumed_from_step"] == 6
    assert record["iterations"] == 12 and saved_step(run_dir) == 12
