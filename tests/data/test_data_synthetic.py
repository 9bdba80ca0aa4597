"""The synthetic COCO set used by end-to-end tests elsewhere in the repo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ghmdet.data.dataset import CocoDetectionDataset
from ghmdet.data.synthetic import make_synthetic_coco


def test_layout_validity_and_learnable_signal(tmp_path: Path) -> None:
    root = make_synthetic_coco(tmp_path / "s", num_train=3, num_val=2, size=96, boxes_per_image=4, seed=1)
    for split, count in (("train", 3), ("val", 2)):
        dataset = CocoDetectionDataset(
            root / "images" / split, root / "annotations" / f"instances_{split}.json"
        )
        assert len(dataset) == count and dataset.num_classes == 1
        for index in range(count):
            image, target = dataset[index]
            assert image.shape == (3, 96, 96) and len(target["boxes"]) == 4
            inside = np.zeros((96, 96), dtype=bool)
            for x1, y1, x2, y2 in target["boxes"].int().tolist():
                inside[y1:y2, x1:x2] = True
            brightness = image.mean(0).numpy()
            assert brightness[inside].min() > brightness[~inside].max()  # rectangles are brighter than noise


def test_deterministic_per_seed(tmp_path: Path) -> None:
    first = make_synthetic_coco(tmp_path / "a", seed=5)
    second = make_synthetic_coco(tmp_path / "b", seed=5)
    third = make_synthetic_coco(tmp_path / "c", seed=6)
    read = lambda root: (root / "annotations" / "instances_train.json").read_text()  # noqa: E731
    assert read(first) == read(second) != read(third)
    pixels = [
        np.asarray(Image.open(root / "images" / "train" / "train_0001.png")) for root in (first, second)
    ]
    np.testing.assert_array_equal(*pixels)
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["counts"] == {"train": {"images": 4, "boxes": 12}, "val": {"images": 2, "boxes": 6}}


def test_several_classes(tmp_path: Path) -> None:
    root = make_synthetic_coco(tmp_path / "m", num_classes=3, num_train=6, boxes_per_image=5)
    dataset = CocoDetectionDataset(root / "images" / "train", root / "annotations" / "instances_train.json")
    assert dataset.category_ids == [1, 2, 3]
    labels = np.concatenate([dataset.get_target(i)["labels"].numpy() for i in range(len(dataset))])
    assert set(labels.tolist()) == {0, 1, 2}
