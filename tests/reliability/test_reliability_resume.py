"""Kill a training job with SIGKILL, rerun the same command: it resumes and ends exactly where an
uninterrupted run with the same seed ends (weights, GHM EMA buffers, optimizer, scheduler, metrics).

The run is the tiny preset with batch 1 (4 steps per epoch), multi-scale training (the model draws a size
from torch's global RNG every step, so a lost RNG state would show) and a checkpoint every 10 steps:
the first kill lands after the step-10 checkpoint (mid-epoch: 2 of 4 batches of epoch 2 done), the second
after the step-20 one (the last batch of epoch 4, before its validation). The final checkpoint (step 30) of
both runs is compared tensor by tensor. A run stopped by SIGTERM (a scheduler's preemption) saves its own
checkpoint at the step it stopped and resumes to the same final state too.
"""

from __future__ import annotations

import math
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from ghmdet.run.rng_state import RNG_STATES_KEY
from tests.reliability.reliability_helpers import (
    cli_env,
    read_record,
    run_and_signal_after_next_checkpoint,
    train_command,
)

pytestmark = pytest.mark.slow

MAX_STEPS = 30
EVERY = 10
RESUME_RUN = (
    f"trainer.max_steps={MAX_STEPS}",
    "data.batch_size=1",
    "optimizer.lr=3e-3",
    "model.min_size=[96,112,128]",
    f"callbacks.model_checkpoint.every_n_train_steps={EVERY}",
)


def assert_same(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Exact equality of nested checkpoint content (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def run_and_kill_after_next_checkpoint(command: list[str], checkpoint: Path) -> int:
    """Start ``command``; SIGKILL it as soon as ``checkpoint`` is (re)written; return the saved step."""
    status, _ = run_and_signal_after_next_checkpoint(command, checkpoint, signal.SIGKILL)
    assert status == -signal.SIGKILL, f"the run ended on its own (status {status})"
    return int(load(checkpoint)["global_step"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    done = subprocess.run(
        train_command(run_dir, data_dir, *RESUME_RUN), capture_output=True, text=True, env=cli_env()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def assert_same_final_state(reference: Path, resumed: Path) -> dict[str, Any]:
    """Equal final records (metrics, steps) and final checkpoints (weights, optimizer, ..., loader)."""
    expected, got = read_record(reference), read_record(resumed)
    assert got["status"] == expected["status"] == "completed"
    assert got["iterations"] == expected["iterations"] == MAX_STEPS
    assert got["metrics"] == expected["metrics"]
    assert got["val_metrics"] == expected["val_metrics"]
    assert expected["metrics"]["AR100"] > 0  # the comparison is not between two all-zero results

    final_expected = load(reference / "checkpoints" / "last.ckpt")
    final_got = load(resumed / "checkpoints" / "last.ckpt")
    assert final_got["global_step"] == final_expected["global_step"] == MAX_STEPS
    for key in ("state_dict", "optimizer_states", "lr_schedulers", RNG_STATES_KEY):
        assert_same(final_expected[key], final_got[key], key)
    assert_same(
        final_expected["loops"]["fit_loop"]["state_dict"]["combined_loader"],
        final_got["loops"]["fit_loop"]["state_dict"]["combined_loader"],
        "train loader position",
    )
    return final_got


def test_sigkilled_run_resumes_to_the_same_final_state(
    tmp_path: Path, data_dir: Path, reference: Path
) -> None:
    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "last.ckpt"
    resumed_from = []
    for _ in range(2):
        step = run_and_kill_after_next_checkpoint(train_command(killed, data_dir, *RESUME_RUN), checkpoint)
        assert read_record(killed)["status"] == "running"  # what a killed job leaves
        saved = load(checkpoint)
        # What a resume needs is in the checkpoint, and it loads with weights_only=True.
        assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", RNG_STATES_KEY} <= set(saved)
        assert saved["state_dict"]["model.cls_loss.acc_sum"].sum() > 0  # GHM EMA state
        position = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
        assert position["consumed"] == step % 4 or (step % 4 == 0 and position["consumed"] == 4)
        resumed_from.append(step)
    assert resumed_from == [EVERY, 2 * EVERY], resumed_from  # mid-epoch, then end of epoch

    done = subprocess.run(
        train_command(killed, data_dir, *RESUME_RUN), capture_output=True, text=True, env=cli_env()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = read_record(killed)
    assert got["resumed_from_step"] == 2 * EVERY
    final_got = assert_same_final_state(reference, killed)
    print(
        f"resume: killed after steps {resumed_from}; equal final metrics {got['metrics']}; "
        f"{len(final_got['state_dict'])} weight/buffer tensors, optimizer, scheduler, RNG states equal"
    )


def test_sigterm_saves_records_and_resumes_to_the_same_final_state(
    tmp_path: Path, data_dir: Path, reference: Path
) -> None:
    stopped = tmp_path / "stopped"
    # SIGTERM during step 14 (3 steps after the step-10 checkpoint, mid-epoch): Lightning stops at the end
    # of that step and the run saves it itself. The rerun is the same command (the fault does not fire again).
    command = train_command(
        stopped, data_dir, *RESUME_RUN, "+callbacks.fault={_target_:reliability_faults.SendSignal,step:13}"
    )
    done = subprocess.run(command, capture_output=True, text=True, env=cli_env())
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    record = read_record(stopped)
    assert record["status"] == "interrupted", record.get("reason")
    assert record["interrupted"]["signal"] == "SIGTERM" and record["interrupted"]["step"] == 14
    assert record["interrupted"]["checkpoint"]["step"] == 14
    assert load(stopped / "checkpoints" / "last.ckpt")["global_step"] == 14
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("ghmdet-train: interrupted by SIGTERM at step 14: ") and "resumes" in line

    done = subprocess.run(command, capture_output=True, text=True, env=cli_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_record(stopped)["resumed_from_step"] == 14
    assert_same_final_state(reference, stopped)
    print("resume: stopped by SIGTERM at step 14 (saved there); equal final state")
