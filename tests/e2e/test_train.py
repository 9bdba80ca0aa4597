"""End to end through the real CLI: a few iterations on the synthetic set, offline W&B, resume/skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def _train(run_dir: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "ghmdet.train",
        "experiment=tiny",
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_tiny_ghm_run_writes_metrics_checkpoint_and_wandb(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _train(run_dir, tmp_path / "data", "logger=wandb", "threads=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["iterations"] == 4
    assert set(record["metrics"]) >= {"AP", "AP50", "AP75", "AP80", "AP90", "APS", "APM", "APL"}
    assert record["seconds_per_iteration"] > 0
    assert record["config"]["loss"]["cls"]["_target_"] == "ghmdet.losses.GHMCLoss"
    assert "git_commit" in record

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "model.cls_loss.acc_sum" in ckpt["state_dict"]  # the GHM EMA state is checkpointed
    assert ckpt["state_dict"]["model.cls_loss.acc_sum"].sum() > 0

    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, list((run_dir / "wandb").iterdir())
    assert (
        len(list((run_dir / "predictions").glob("test_*.png"))) == 2
    )  # the synthetic val split has 2 images
    assert list(offline_runs[0].glob("*.wandb")), "the offline W&B run holds no data file"

    # A second call of the same command finds the completed run and does not train again.
    before = (run_dir / "metrics.json").read_text()
    proc = _train(run_dir, tmp_path / "data", "logger=wandb", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "metrics.json").read_text() == before
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1


def test_a_failing_rerun_keeps_the_earlier_result(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # (this first run also tests test-time augmentation: the record holds the TTA and the single-pass scores)
    assert _train(run_dir, tmp_path / "data", "threads=1", "model.tta=flips").returncode == 0
    first = (run_dir / "metrics.json").read_text()
    record = json.loads(first)
    assert record["config"]["model"]["tta"] == "flips"
    assert set(record["metrics"]) >= {"AP", "AP50"} and set(record["metrics_single_pass"]) >= {"AP", "AP50"}
    # A rerun that fails (a negative learning rate, rejected by the optimizer) must not destroy it.
    proc = _train(run_dir, tmp_path / "data", "threads=1", "skip_completed=false", "optimizer.lr=-1")
    assert proc.returncode != 0
    failed = json.loads((run_dir / "metrics.json").read_text())
    assert failed["status"] == "failed" and "learning rate" in failed["reason"].lower()
    kept = list(run_dir.glob("metrics.*.json"))
    assert len(kept) == 1 and kept[0].read_text() == first
