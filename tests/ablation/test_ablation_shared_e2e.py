"""Two tiny ablation tables of a versioned preset through the real CLI: their shared job runs once, each
job writes its val history and its COCO results file, and ghmdet-tables rebuilds both tables."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

pytestmark = pytest.mark.slow


def _sweep(tmp_path: Path, table: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("GHMDET_LOG_DIR", None)
    cmd = [
        sys.executable, "-m", "ghmdet.train", "-m", f"+ablation={table}", "experiment=tiny", "seed=0",
        "threads=1", "ablation.preset_version=1", "ablation.wandb=false", "ablation.n_boot=20",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}",
        f"ablation.out_dir={tmp_path / 'experiments' / table}", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_a_shared_job_runs_once_and_both_tables_rebuild_from_outputs(tmp_path: Path) -> None:
    proc = _sweep(tmp_path, "bins", "loss.cls.bins=30")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / "logs" / "ablation" / "treecrowns-v1"
    (job,) = list((root / "jobs").iterdir())
    assert job.name.startswith("ghmc-bins30-momentum0.75-densityunit_smooth_l1_seed0_")
    record = json.loads((job / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert [e["step"] for e in record["val_history"]] == [2, 4]  # a validation per tiny epoch (2 steps)
    assert set(record["per_class"]) == {"class_0"} and record["per_class"]["class_0"]["category_id"] == 1

    # the results file re-scores to the recorded single-pass AP
    info = record["detections_test"]
    assert info["file"] == "detections_test.json" and info["metrics"] == "metrics_single_pass"
    results = json.loads((job / info["file"]).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(info["ann_file"])
        ev = COCOeval(gt, gt.loadRes(results), "bbox") if results else None
        if ev is not None:
            ev.params.imgIds = info["image_ids"]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    expected = ev.stats[0] if ev is not None else 0.0
    assert record["metrics_single_pass"]["AP"] == pytest.approx(max(expected, 0.0), abs=1e-6)
    assert sorted(info["image_ids"]) == sorted(gt.getImgIds())

    # cls_loss' GHM-C row is the same computation: found completed, not trained again
    before = (job / "metrics.json").read_text()
    proc = _sweep(tmp_path, "cls_loss", "loss/cls=ghmc,ce")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (job / "metrics.json").read_text() == before
    assert len(list((root / "jobs").iterdir())) == 2
    index = json.loads((root / "cls_loss" / "ablation.json").read_text())
    assert f"../jobs/{job.name}" in [j["dir"] for j in index["jobs"]]

    # both tables from the outputs alone
    env = {**os.environ, "GHMDET_LOG_DIR": str(tmp_path / "logs")}
    out = tmp_path / "rebuilt"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from ghmdet.ablation import main; sys.exit(main())", "--no-wandb",
         "--out-dir", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "bins" / "treecrowns.md").is_file() and (out / "cls_loss" / "treecrowns.md").is_file()
    text = (out / "cls_loss" / "treecrowns.md").read_text()
    assert "Δ AP vs CE [95 % CI]" in text and "| ref |" in text
