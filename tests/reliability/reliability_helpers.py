"""Helpers of the reliability tests: run the real CLI on the tiny preset (``reliability_helpers``: a name
that no other test folder uses, unlike ``conftest``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: the tiny preset, one thread, deterministic kernels: seconds per run on a CPU
TINY = ("experiment=tiny", "threads=1", "trainer.deterministic=true")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: offline W&B, this folder importable (fault injectors), no real key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(
        {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
    )
    env.update(extra)
    return env


def train_command(run_dir: Path, data_dir: Path, *overrides: str) -> list[str]:
    """``python -m ghmdet.train`` on the tiny preset writing to ``run_dir``."""
    return [
        sys.executable,
        "-m",
        "ghmdet.train",
        *TINY,
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}",
        *overrides,
    ]


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())
