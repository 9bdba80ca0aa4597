"""W&B offline: the live callback in a real training run, and the notebook's figure upload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from ghmdet.analysis import log_to_wandb, save_figures

pytestmark = pytest.mark.slow


def wandb_data(run_dir: Path) -> bytes:
    (data,) = run_dir.glob("wandb/offline-run-*/*.wandb")
    return data.read_bytes()


@pytest.mark.timeout(300)
def test_a_tiny_ghm_run_logs_the_histograms_and_ghm_state_to_wandb(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    command = [
        sys.executable,
        "-m",
        "ghmdet.train",
        "experiment=tiny",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "threads=1",
        "logger=wandb",
        "callbacks.gradient_norms.every_n_steps=2",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = wandb_data(tmp_path / "run")
    for key in (
        "gradient_norms/cls_g",
        "gradient_norms/cls_g_log10",
        "gradient_norms/reg_gr",
        "ghm/cls/ema_counts",
        "ghm/cls/weights/level0",
        "ghm/reg/weights/level4",
        "ghm/reg/max_weight",
    ):
        assert key.encode() in data, key


@pytest.mark.timeout(120)
def test_figures_go_into_an_offline_wandb_run(tmp_path: Path) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    paths = save_figures({"fig_test": fig}, tmp_path / "figs")
    folder = log_to_wandb(paths, {"model": {"pairs": 7}}, mode="offline", save_dir=tmp_path / "work")
    assert folder is not None and folder.parent == tmp_path / "work" / "wandb"
    assert folder.name.startswith("offline-run-")
    data = wandb_data(tmp_path / "work")
    assert b"figures/fig_test" in data and b"model/pairs" in data
