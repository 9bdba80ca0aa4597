"""W&B unavailable (import error, unwritable offline dir, online without network) never stops a run: it
trains, writes its local results and a warning says why W&B is off. The W&B API key never lands in a file."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghmdet.run.redaction import REDACTED, RedactingFilter, redact, redact_text, secret_values
from tests.reliability.reliability_helpers import cli_env, read_record

pytestmark = pytest.mark.slow


def check_ran_without_wandb(proc: Any, run_dir: Path, reason: str) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "completed" and record["metrics"]
    assert record["wandb"]["enabled"] is False and reason in record["wandb"]["reason"]
    assert (run_dir / "csv" / "metrics.csv").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    warning = [
        line for line in (run_dir / "train.log").read_text().splitlines() if "W&B logging is off" in line
    ]
    assert len(warning) == 1 and reason in warning[0]


def test_wandb_import_error(tmp_path: Path, train: Callable[..., Any]) -> None:
    broken = tmp_path / "site" / "wandb"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('simulated broken wandb install')\n")
    env = cli_env()
    env["PYTHONPATH"] = f"{broken.parent}:{env['PYTHONPATH']}"
    proc = train(tmp_path / "run", "logger=wandb", env=env)
    check_ran_without_wandb(proc, tmp_path / "run", "cannot be imported (ImportError: simulated broken wandb")


def test_wandb_offline_dir_unwritable(tmp_path: Path, train: Callable[..., Any]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb").write_text("a file where W&B's offline dir should be")
    proc = train(run_dir, "logger=wandb")
    check_ran_without_wandb(proc, run_dir, f"its directory {run_dir / 'wandb'} is not writable")


def test_wandb_online_without_network(tmp_path: Path, train: Callable[..., Any]) -> None:
    key = secrets.token_hex(20)
    env = cli_env(
        WANDB_MODE="online",
        WANDB_API_KEY=key,
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there: connection refused
        WANDB_INIT_TIMEOUT="3",
    )
    proc = train(tmp_path / "run", "logger=wandb", env=env)
    check_ran_without_wandb(proc, tmp_path / "run", "wandb.init failed in online mode")
    assert_nowhere(key, tmp_path / "run", proc)


def assert_nowhere(secret: str, run_dir: Path, proc: Any) -> None:
    """The secret is in no file under ``run_dir`` (any bytes) and not in the output."""
    needle = secret.encode()
    leaks = [str(p) for p in run_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert leaks == []
    assert secret not in proc.stdout + proc.stderr


def test_api_key_never_lands_in_metrics_config_or_logs(tmp_path: Path, train: Callable[..., Any]) -> None:
    key = secrets.token_hex(20)
    run_dir = tmp_path / "run"
    # The key is in the environment and a config field reads it (as a careless config might).
    proc = train(run_dir, "logger=wandb", "+notes=${oc.env:WANDB_API_KEY}", env=cli_env(WANDB_API_KEY=key))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "completed" and record["wandb"]["enabled"] is True
    assert record["config"]["notes"] == REDACTED
    assert list((run_dir / "wandb").glob("offline-run-*"))  # W&B did write its run
    assert_nowhere(key, run_dir, proc)


def test_redaction_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "k3y-" + secrets.token_hex(8)
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-" + secrets.token_hex(8))
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to be a secret worth replacing everywhere
    assert key in secret_values() and "abc" not in secret_values()
    assert redact_text(f"login with {key} please") == f"login with {REDACTED} please"
    config = {"logger": {"api_key": "anything", "project": "ghmdet"}, "notes": [f"x{key}x"], "lr": 0.1}
    assert redact(config) == {
        "logger": {"api_key": REDACTED, "project": "ghmdet"},
        "notes": [f"x{REDACTED}x"],
        "lr": 0.1,
    }
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "key is %s", (key,), None)
    assert RedactingFilter().filter(record) and record.getMessage() == f"key is {REDACTED}"
