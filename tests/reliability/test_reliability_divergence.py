"""A run whose loss or weights stop being finite stops cleanly: status ``diverged`` in metrics.json with the
step and loss values, exit status 0, and a last checkpoint from before the blow-up (finite weights).

Faults are injected into the real CLI with a callback from ``reliability_faults`` (Hydra
``+callbacks.fault``); one case blows up on its own (a learning rate of 1e30). The tiny preset checkpoints
every 2 steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ghmdet.run.divergence import all_finite
from tests.reliability.reliability_helpers import read_record

pytestmark = pytest.mark.slow

MAX_STEPS = "trainer.max_steps=12"


def fault(name: str, step: int, **kwargs: Any) -> str:
    extra = "".join(f",{k}:{v}" for k, v in kwargs.items())
    return f"+callbacks.fault={{_target_:reliability_faults.{name},step:{step}{extra}}}"


def last_checkpoint(run_dir: Path) -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def check_diverged(run_dir: Path, step: int, saved_step: int) -> dict[str, Any]:
    record = read_record(run_dir)
    assert record["status"] == "diverged", record.get("reason")
    divergence = record["divergence"]
    assert divergence["step"] == step and f"step {step}" in record["reason"]
    # The finite losses up to the blow-up (that step's own loss too when only its update blew up).
    recent = divergence["recent_losses"]
    assert recent and recent[-1]["step"] in (step - 1, step) and all(math.isfinite(r["loss"]) for r in recent)
    # The last checkpoint predates the blow-up and holds a finite state; nothing was saved after it.
    assert divergence["checkpoint"]["step"] == saved_step <= step
    checkpoint = last_checkpoint(run_dir)
    assert checkpoint["global_step"] == saved_step
    assert all_finite(checkpoint["state_dict"].values())
    assert record["metrics"] == {}  # no test on a diverged model
    return record


def test_nan_weights_stop_with_the_last_good_checkpoint(tmp_path: Path, train: Callable[..., Any]) -> None:
    # NaN weights at step 5: the GHM losses refuse the NaN logits (before touching their EMA state).
    proc = train(tmp_path / "run", MAX_STEPS, fault("CorruptWeights", 5), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = check_diverged(tmp_path / "run", step=5, saved_step=4)
    assert "non-finite" in record["divergence"]["reason"]
    assert record["iterations"] < 12  # it stopped, it did not spin through the remaining steps


def test_infinite_loss_records_the_loss_values(tmp_path: Path, train: Callable[..., Any]) -> None:
    # Focal + smooth-L1 return the infinite loss as it is (no GHM input check in the way).
    proc = train(
        tmp_path / "run",
        MAX_STEPS,
        "loss/cls=focal",
        "loss/reg=smooth_l1",
        fault("ScaleLoss", 7),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = check_diverged(tmp_path / "run", step=7, saved_step=6)
    assert record["divergence"]["losses"] == {"loss_cls": "inf", "loss_reg": "inf"}


def test_weights_blown_up_by_an_update_are_never_checkpointed(
    tmp_path: Path, train: Callable[..., Any]
) -> None:
    # The update of step 5 makes a weight infinite; a checkpoint is due at global step 6 and must not happen.
    proc = train(tmp_path / "run", MAX_STEPS, fault("BlowUpAfterStep", 6), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = check_diverged(tmp_path / "run", step=5, saved_step=4)
    assert "optimizer update of step 5" in record["divergence"]["reason"]


def test_an_absurd_learning_rate_diverges_cleanly_without_a_checkpoint(
    tmp_path: Path, train: Callable[..., Any]
) -> None:
    proc = train(tmp_path / "run", MAX_STEPS, "optimizer.lr=1e30", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(tmp_path / "run")
    assert record["status"] == "diverged" and record["divergence"]["step"] == 0
    # It blew up before the first save: no checkpoint at all rather than a non-finite one.
    assert record["divergence"]["checkpoint"] is None
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
