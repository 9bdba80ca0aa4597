"""Helpers of the reliability tests: run the real CLI on the tiny preset (``reliability_helpers``: a name
that no other test folder uses, unlike ``conftest``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
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


def run_and_signal_after_next_checkpoint(
    command: list[str], checkpoint: Path, signum: int, timeout: float = 240
) -> tuple[int, str]:
    """Start ``command``; send it ``signum`` as soon as ``checkpoint`` is (re)written; wait for it to end.

    Returns its exit status (``-signum`` when the signal killed it) and its stderr. Raises when the run
    ends on its own before the checkpoint changes.
    """
    before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=cli_env(), text=True
        )
        deadline = time.monotonic() + timeout
        sent = False
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if checkpoint.exists() and checkpoint.stat().st_mtime_ns != before:
                    os.kill(process.pid, signum)
                    sent = True
                    break
                time.sleep(0.005)
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        stderr.seek(0)
        text = stderr.read()
    assert sent, f"the run ended on its own (status {process.returncode}): {text[-3000:]}"
    return process.returncode, text
