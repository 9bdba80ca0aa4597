"""A tiny ablation multirun through the real CLI: 2 jobs (one failing), the table, the W&B run, a rerun."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _sweep(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("GHMDET_LOG_DIR", None)
    cmd = [
        sys.executable, "-m", "ghmdet.train", "-m", "+ablation=bins", "experiment=tiny",
        # M = 0 is rejected by GHMCLoss: that job fails, the sweep must go on and table it
        "loss.cls.bins=0,10", "seed=0", "threads=1",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}",
        f"ablation.out_dir={tmp_path / 'experiments' / 'bins'}", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_tiny_ablation_writes_the_table_and_the_wandb_run_and_reruns_skip(tmp_path: Path) -> None:
    proc = _sweep(tmp_path)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log  # the failed job does not fail the sweep

    sweep = tmp_path / "logs" / "ablation" / "treecrowns" / "bins"
    done, failed = (sweep / f"experiment=tiny,loss.cls.bins={m},seed=0,threads=1" for m in (10, 0))
    assert json.loads((done / "metrics.json").read_text())["status"] == "completed"
    record = json.loads((failed / "metrics.json").read_text())
    assert record["status"] == "failed" and "bins must be an integer >= 1" in record["reason"]
    assert json.loads((sweep / "ablation.json").read_text())["table"] == "bins"

    out = tmp_path / "experiments" / "bins"
    text = (out / "treecrowns.md").read_text()
    columns = "AP | AP paper | Δ AP | AP50 | AP50 paper | Δ AP50 | AP75 | AP75 paper | Δ AP75"
    assert f"| M | runs | {columns} | status |" in text
    assert "| 0 | 0/1 | — | — | — | — | — | — | — | — | — | 1 failed |" in text
    assert "| 10 | 1/1 | " in text and "| 34.6 | " in text and "| 53.9 | " in text
    assert "`experiment=tiny,loss.cls.bins=0,seed=0,threads=1` failed: invalid config" in text
    rows = list(csv.DictReader(io.StringIO((out / "treecrowns.csv").read_text())))
    assert [(r["loss.cls.bins"], r["status"]) for r in rows] == [("0", "1 failed"), ("10", "completed")]
    assert (out / "treecrowns.tex").is_file() and (out / "treecrowns.png").stat().st_size > 0

    runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    tables = list(runs[0].glob("files/media/table/bins/table_*.table.json"))
    assert len(tables) == 1
    logged = json.loads(tables[0].read_text())
    assert logged["columns"][:3] == ["M", "runs", "AP"] and [r[0] for r in logged["data"]] == ["0", "10"]

    # Rerun: the completed job is skipped (its metrics.json untouched), the failed one is tried again.
    before = (done / "metrics.json").read_text()
    proc = _sweep(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (done / "metrics.json").read_text() == before
    assert len(list(failed.glob("metrics.*.json"))) == 1  # the earlier failure is kept beside
    assert len(list((sweep / "wandb").glob("offline-run-*"))) == 2
