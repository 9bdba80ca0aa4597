"""Fixtures of the reliability tests: one synthetic data set for all CLI runs, a CLI runner."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.reliability_helpers import cli_env, train_command


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the synthetic set (built once; runs would otherwise each build their own)."""
    from ghmdet.data.synthetic import make_synthetic_coco

    root = tmp_path_factory.mktemp("reliability-data")
    make_synthetic_coco(root / "synthetic")
    return root


@pytest.fixture
def train(data_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``train(run_dir, *overrides, env=None, timeout=240)``: run the CLI to completion."""

    def run(
        run_dir: Path, *overrides: str, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            train_command(run_dir, data_dir, *overrides),
            capture_output=True,
            text=True,
            env=env or cli_env(),
            timeout=timeout,
        )

    return run
