"""What a run's record gets from the LightningModule: the test's COCO results file, per-class AP by name, and
the val history (kept across a resume)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ghmdet.module import DETECTIONS_FILE, DetectionModule


class _NoTTA(nn.Module):
    tta = None


def _module(tmp_path: Path) -> DetectionModule:
    """A module whose trainer is a stand-in: run dir and a datamodule with COCO category ids 3 and 7."""
    module = DetectionModule(_NoTTA(), optimizer=torch.optim.SGD)
    datamodule = SimpleNamespace(
        category_ids=[3, 7],
        category_names=["oak", "pine"],
        test_dataset=SimpleNamespace(ann_file=tmp_path / "instances_test.json"),
    )
    module._trainer = SimpleNamespace(default_root_dir=str(tmp_path), datamodule=datamodule)
    return module


def _test_batch(module: DetectionModule) -> None:
    metrics = module.test_metrics
    detections = [
        {"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "scores": torch.tensor([0.9]),
         "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]  # fmt: skip
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "labels": torch.tensor([1]),
         "image_id": torch.tensor(501)},
        {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "labels": torch.tensor([0]),
         "image_id": torch.tensor(502)},
    ]  # fmt: skip
    module._update(metrics, detections, targets)
    metrics.compute()


def test_the_results_file_has_original_ids_and_xywh_boxes(tmp_path: Path) -> None:
    module = _module(tmp_path)
    _test_batch(module)
    module._write_detections(module.test_metrics)
    results = json.loads((tmp_path / DETECTIONS_FILE).read_text())
    assert results == [
        {"image_id": 501, "category_id": 7, "bbox": [10.0, 20.0, 20.0, 40.0], "score": pytest.approx(0.9)}
    ]
    module.per_class["test"] = module._named_per_class(module.test_metrics)
    fields = module.record_fields()
    assert fields["detections_test"] == {
        "file": DETECTIONS_FILE,
        "metrics": "metrics",
        "ann_file": str((tmp_path / "instances_test.json").resolve()),
        "image_ids": [501, 502],
        "detections": 1,
    }
    assert fields["per_class"] == {
        "oak": {"category_id": 3, "AP": 0.0, "AP50": 0.0},
        "pine": {"category_id": 7, "AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)},
    }


def test_only_global_rank_zero_writes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    module = _module(tmp_path)
    _test_batch(module)
    module._write_detections(module.test_metrics)
    assert not (tmp_path / DETECTIONS_FILE).exists()
    assert module.record_fields()["detections_test"]["image_ids"] == [501, 502]


def test_the_val_history_survives_a_checkpoint(tmp_path: Path) -> None:
    module = _module(tmp_path)
    module.val_history = [{"step": 750, "AP": 0.21, "AP50": 0.4}, {"step": 1500, "AP": 0.3, "AP50": 0.5}]
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    resumed = _module(tmp_path)
    resumed.on_load_checkpoint(torch.load(buffer, weights_only=True))
    assert resumed.record_fields()["val_history"] == module.val_history
