"""Shared helpers of the DDP / cluster tests: the real CLI in a subprocess, with offline W&B."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of a CLI run: offline W&B, stray Hydra dirs land under tmp_path/logs (then asserted)."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
        "GHMDET_LOG_DIR": str(tmp_path / "logs"),
    }
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(key, None)  # never inherit a DDP identity from the test process
    for key in [k for k in env if k.startswith("SLURM_")]:
        env.pop(key)
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> CliRunner:
    """``run_cli(*overrides, env=None, timeout=...)``: ``python -m ghmdet.train`` on the tiny preset."""

    def run(
        *overrides: str, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        cmd: Sequence[str] = [
            sys.executable,
            "-m",
            "ghmdet.train",
            *[o for o in overrides if o == "-m"],  # Hydra's flags go before the overrides
            "experiment=tiny",
            f"paths.data_dir={tmp_path / 'data'}",
            "threads=1",
            *[o for o in overrides if o != "-m"],
        ]
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env or _cli_env(tmp_path), timeout=timeout, cwd=tmp_path
        )

    return run


@pytest.fixture
def cli_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """``cli_env(**extra)``: the environment :func:`run_cli` uses, plus ``extra``."""
    return lambda **extra: _cli_env(tmp_path, **extra)
