"""The checked-image manifest: a restart skips the image-file check while nothing it depends on changed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import ghmdet.data.dataset as dataset_module
from ghmdet.data.annotations import DatasetError
from ghmdet.data.dataset import CocoDetectionDataset


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The image files the dataset opens (header check and decoding), in order."""
    calls: list[str] = []
    real_open = dataset_module.Image.open

    def spy(path: object, *args: object, **kwargs: object) -> object:
        calls.append(Path(str(path)).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module.Image, "open", spy)
    return calls


def _targets(dataset: CocoDetectionDataset) -> list[dict[str, list]]:
    return [{k: v.tolist() for k, v in dataset.get_target(i).items()} for i in range(len(dataset))]


def test_a_matching_manifest_skips_the_check_and_serves_the_same(
    coco_set: Callable[..., tuple[Path, Path]], opened: list[str], tmp_path: Path
) -> None:
    image_dir, ann_file = coco_set()
    manifest = tmp_path / "instances_test.checked.json"
    first = CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    assert sorted(opened) == ["a.png", "b.png", "empty.png"] and manifest.is_file()
    opened.clear()
    again = CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    assert opened == []
    assert _targets(again) == _targets(first) and again.image_ids == first.image_ids
    plain = CocoDetectionDataset(image_dir, ann_file)  # without the argument: always checked
    assert len(opened) == 3 and _targets(plain) == _targets(first)


def test_a_removed_image_is_found_again(coco_set: Callable[..., tuple[Path, Path]], tmp_path: Path) -> None:
    image_dir, ann_file = coco_set()
    manifest = tmp_path / "checked.json"
    CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    (image_dir / "b.png").unlink()  # changes the folder's mtime
    with pytest.raises(DatasetError, match=r"file_name 'b.png' not found in"):
        CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)


def test_changed_annotations_are_checked_again(
    coco_set: Callable[..., tuple[Path, Path]], opened: list[str], tmp_path: Path
) -> None:
    image_dir, ann_file = coco_set()
    manifest = tmp_path / "checked.json"
    CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    document = json.loads(ann_file.read_text())
    document["images"][1]["width"] = 33  # same byte count: only the hash tells
    stat = ann_file.stat()
    ann_file.write_text(json.dumps(document))
    os.utime(ann_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ann_file.stat().st_size == stat.st_size
    opened.clear()
    with pytest.raises(DatasetError, match=r"b.png: image id=20 is 32x32 but .* says 33x32"):
        CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    assert opened


@pytest.mark.parametrize("content", ["{not json", '{"key": {}, "images_checked": 3}', "[]"])
def test_a_corrupt_or_foreign_manifest_means_a_full_check_and_a_rewrite(
    coco_set: Callable[..., tuple[Path, Path]], opened: list[str], tmp_path: Path, content: str
) -> None:
    image_dir, ann_file = coco_set()
    manifest = tmp_path / "checked.json"
    manifest.write_text(content)
    CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    assert len(opened) == 3
    assert json.loads(manifest.read_text())["images_checked"] == 3


def test_a_manifest_of_fewer_images_does_not_cover_more(
    coco_set: Callable[..., tuple[Path, Path]], opened: list[str], tmp_path: Path
) -> None:
    image_dir, ann_file = coco_set()
    manifest = tmp_path / "checked.json"
    CocoDetectionDataset(image_dir, ann_file, limit=1, checked_manifest=manifest)
    assert opened == ["a.png"]
    CocoDetectionDataset(image_dir, ann_file, limit=1, checked_manifest=manifest)
    assert opened == ["a.png"]
    CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    assert len(opened) == 4


def test_an_unwritable_manifest_warns_and_loads(
    coco_set: Callable[..., tuple[Path, Path]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image_dir, ann_file = coco_set()
    manifest = tmp_path / "no_such_dir" / "checked.json"
    dataset = CocoDetectionDataset(image_dir, ann_file, checked_manifest=manifest)
    assert len(dataset) == 3 and not manifest.exists()
    assert "cannot write the checked-image manifest" in caplog.text
