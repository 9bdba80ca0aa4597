"""Corrupt data through the real CLI: one line naming the file and record, exit status 2, a ``failed`` record.

The file-level rules (every corruption of the annotation JSON, images, repairs) are tested in ``tests/data``;
here the same errors must reach the user intact from a training run: from ``setup`` (cached images,
annotation checks) and from a DataLoader worker process (torch wraps the worker's exception).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.reliability.reliability_helpers import read_record

pytestmark = pytest.mark.slow


@pytest.fixture
def own_data(tmp_path: Path, data_dir: Path) -> Path:
    """A private copy of the synthetic set, free to corrupt."""
    shutil.copytree(data_dir, tmp_path / "data")
    return tmp_path / "data"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def one_error_line(proc: Any) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("ghmdet-train: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return lines[-1]


@pytest.mark.parametrize(
    "loading",
    [["data.cache_images=true"], ["data.cache_images=false", "data.num_workers=1"]],
    ids=["cached-at-setup", "in-a-worker"],
)
def test_truncated_image(
    tmp_path: Path, own_data: Path, train: Callable[..., Any], loading: list[str]
) -> None:
    images = own_data / "synthetic" / "images" / "train"
    victim = sorted(images.glob("*.png"))[0]
    truncate(victim)
    proc = train(tmp_path / "run", f"paths.data_dir={own_data}", "data.batch_size=4", *loading, timeout=180)
    line = one_error_line(proc)
    assert str(victim) in line and "cannot read image id=" in line and "truncated" in line
    record = read_record(tmp_path / "run")
    assert record["status"] == "failed" and str(victim) in record["reason"]


def test_annotation_missing_a_field(tmp_path: Path, own_data: Path, train: Callable[..., Any]) -> None:
    ann_file = own_data / "synthetic" / "annotations" / "instances_train.json"
    document = json.loads(ann_file.read_text())
    del document["annotations"][1]["bbox"]
    ann_file.write_text(json.dumps(document))
    proc = train(tmp_path / "run", f"paths.data_dir={own_data}", timeout=180)
    line = one_error_line(proc)
    assert str(ann_file) in line and "annotations[1] (id=" in line and "'bbox' is missing" in line


def test_changed_training_data_on_resume(tmp_path: Path, own_data: Path, train: Callable[..., Any]) -> None:
    run_dir = tmp_path / "run"
    stop = "+callbacks.fault={_target_:reliability_faults.SendSignal,step:3}"  # SIGTERM: saved at step 4
    args = (f"paths.data_dir={own_data}", "trainer.max_steps=8", "data.batch_size=1", stop)
    proc = train(run_dir, *args, timeout=180)
    assert proc.returncode == 143, proc.stderr[-3000:]
    ann_file = own_data / "synthetic" / "annotations" / "instances_train.json"
    document = json.loads(ann_file.read_text())
    dropped = document["images"].pop()["id"]
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] != dropped]
    ann_file.write_text(json.dumps(document))
    line = one_error_line(train(run_dir, *args, timeout=180))
    assert f"cannot resume from {run_dir / 'checkpoints' / 'last.ckpt'}" in line
    assert "the training data changed" in line
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4  # the checkpoint is left as it was
