"""The packed per-image storage (``PackedImages``): same records and targets, no per-record Python objects."""

from __future__ import annotations

import gc
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ghmdet.data.coco_loading import load_coco_annotations
from ghmdet.data.dataset import CocoDetectionDataset
from ghmdet.data.packed import PackedImages


def random_document(images: int, seed: int = 0) -> dict[str, Any]:
    """``images`` images (some without boxes, non-ASCII names, sub-folders), boxes in random order."""
    rng = np.random.default_rng(seed)
    records = [
        {
            "id": int(1000 + 7 * i),
            "file_name": f"{'sub/' if i % 5 == 0 else ''}im_{i}{'é' if i % 3 == 0 else ''}.png",
            "width": int(rng.integers(20, 60)),
            "height": int(rng.integers(20, 60)),
        }
        for i in range(images)
    ]
    annotations = []
    for image in records:
        for _ in range(int(rng.integers(0, 5))):
            w, h = float(rng.uniform(1, 10)), float(rng.uniform(1, 10))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": int(rng.choice([1, 3, 90])),
                    "bbox": [float(rng.uniform(0, image["width"] - w)), 2.0, w, h],
                    "iscrowd": int(rng.random() < 0.2),
                    **({"area": float(w * h / 2)} if rng.random() < 0.5 else {}),
                }
            )
    order = rng.permutation(len(annotations))
    return {
        "images": records,
        "annotations": [annotations[i] for i in order],
        "categories": [{"id": 90, "name": "c"}, {"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
    }


def expected_records(document: dict[str, Any]) -> list[dict[str, Any]]:
    """What each image's record must hold, computed from the document without the loader."""
    labels = {category_id: label for label, category_id in enumerate([1, 3, 90])}
    result = []
    for image in document["images"]:
        mine = [a for a in document["annotations"] if a["image_id"] == image["id"]]  # file order
        result.append(
            {
                "image_id": image["id"],
                "file_name": image["file_name"],
                "size": (image["width"], image["height"]),
                "boxes": np.asarray(
                    [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine)], dtype=np.float32
                ).reshape(-1, 4),
                "labels": [labels[a["category_id"]] for a in mine],
                "iscrowd": [a["iscrowd"] for a in mine],
                "area": np.asarray([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in mine], np.float32),
                "annotation_ids": [a["id"] for a in mine],
            }
        )
    return result


def assert_record(record: Any, expected: dict[str, Any]) -> None:
    assert record.image_id == expected["image_id"] and record.file_name == expected["file_name"]
    assert (record.width, record.height) == expected["size"]
    np.testing.assert_allclose(record.boxes, expected["boxes"], rtol=1e-6)
    assert record.iscrowd.tolist() == expected["iscrowd"]
    assert record.annotation_ids.tolist() == expected["annotation_ids"]
    # A missing area is the box's, computed from its float32 corners.
    np.testing.assert_allclose(record.area, expected["area"], rtol=1e-5)


@pytest.fixture
def packed(tmp_path: Path) -> tuple[PackedImages, list[dict[str, Any]]]:
    document = random_document(60)
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(document))
    return load_coco_annotations(ann_file).images, expected_records(document)


def test_every_record_round_trips(packed: tuple[PackedImages, list[dict[str, Any]]]) -> None:
    records, expected = packed
    assert len(records) == len(expected)
    for index, record in enumerate(records):
        assert_record(record, expected[index])
        assert_record(records[index - len(records)], expected[index])  # negative indices
    with pytest.raises(IndexError):
        records[len(records)]


@pytest.mark.parametrize("key", [slice(None, 7), slice(5, 40, 3), slice(None, None, -4), slice(50, 3)])
def test_slices_hold_the_same_records(packed: tuple[PackedImages, list[dict[str, Any]]], key: slice) -> None:
    records, expected = packed
    subset = records[key]
    assert isinstance(subset, PackedImages)
    wanted = expected[key]
    assert len(subset) == len(wanted)
    for record, want in zip(subset, wanted, strict=True):
        assert_record(record, want)


def test_pickling_round_trips(packed: tuple[PackedImages, list[dict[str, Any]]]) -> None:
    records, expected = packed
    for record, want in zip(pickle.loads(pickle.dumps(records)), expected, strict=True):
        assert_record(record, want)


def _reachable_gc_objects(root: Any) -> int:
    """How many garbage-collected (reference-counted container) objects are reachable from ``root``."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen.add(id(item))
        stack.extend(gc.get_referents(item))
    return len(seen)


def _loaded(tmp_path: Path, images: int) -> tuple[Any, dict[str, Any]]:
    document = random_document(images, seed=images)
    ann_file = tmp_path / f"instances_{images}.json"
    ann_file.write_text(json.dumps(document))
    return load_coco_annotations(ann_file).images, document


def test_storage_holds_no_python_object_per_record(tmp_path: Path) -> None:
    """The copy-on-read growth of forked workers comes from per-record objects; none may exist."""
    (small, _), (large, document) = _loaded(tmp_path, 10), _loaded(tmp_path, 1000)
    assert _reachable_gc_objects(large) == _reachable_gc_objects(small)
    # Pickled (spawned workers, DDP), it is the arrays' bytes: per image id, size, two offsets and the name;
    # per box 4 float32 coordinates, float32 area, int64 category, crowd flag and id.
    name_bytes = sum(len(image["file_name"].encode()) for image in document["images"])
    box_bytes = len(document["annotations"]) * (16 + 4 + 3 * 8)
    assert len(pickle.dumps(large)) < name_bytes + 1000 * (8 + 16 + 16) + box_bytes + 4096


def test_dataset_serves_the_same_targets_from_packed_and_listed_records(
    coco_set: Callable[..., tuple[Path, Path]],
) -> None:
    image_dir, ann_file = coco_set()
    dataset = CocoDetectionDataset(image_dir, ann_file)
    assert isinstance(dataset.records, PackedImages)
    packed_targets = [dataset.get_target(i) for i in range(len(dataset))]
    packed_truth = dataset.coco_ground_truth()
    dataset.records = list(dataset.records)
    for index, target in enumerate(packed_targets):
        listed = dataset.get_target(index)
        assert set(listed) == set(target)
        for key, value in target.items():
            assert value.dtype == listed[key].dtype and value.tolist() == listed[key].tolist()
    assert dataset.coco_ground_truth() == packed_truth
    limited = CocoDetectionDataset(image_dir, ann_file, limit=2)
    assert limited.image_ids == dataset.image_ids[:2] and isinstance(limited.records, PackedImages)


def test_records_keep_what_the_file_says_at_the_edges(tmp_path: Path) -> None:
    """Sizes beyond int64 (refused later by the header check, naming them) and lone surrogates round-trip."""
    ann_file = tmp_path / "instances.json"
    image = {"id": 1, "file_name": "a\ud800.png", "width": 10**30, "height": 4}
    ann_file.write_text(json.dumps({"images": [image], "annotations": [], "categories": [{"id": 1}]}))
    (record,) = load_coco_annotations(ann_file).images
    assert (record.file_name, record.width, record.height) == ("a\ud800.png", 10**30, 4)
    assert record.boxes.shape == (0, 4) and record.boxes.dtype == np.float32
    ann_file.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}]}))
    empty = load_coco_annotations(ann_file).images
    assert len(empty) == 0 and list(empty) == [] and len(empty[:3]) == 0
