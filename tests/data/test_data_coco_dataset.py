"""CocoDetectionDataset items: types, label mapping, empty images, crowd boxes, unreadable images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from ghmdet.data.annotations import DatasetError
from ghmdet.data.dataset import CocoDetectionDataset


@pytest.fixture
def dataset(coco_set: Callable[..., tuple[Path, Path]]) -> CocoDetectionDataset:
    image_dir, ann_file = coco_set()
    return CocoDetectionDataset(image_dir, ann_file)


def test_item_types_shapes_and_pixels(dataset: CocoDetectionDataset) -> None:
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40)
    assert image.min() >= 0.0 and image.max() <= 1.0
    pixels = np.array(Image.open(dataset.image_dir / "a.png").convert("RGB"))
    torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    assert set(target) == {"boxes", "labels", "image_id", "iscrowd", "area"}
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    assert target["labels"].dtype == torch.int64
    assert (
        target["image_id"].dtype == torch.int64
        and target["image_id"].ndim == 0
        and target["image_id"].item() == 10
    )
    assert target["iscrowd"].dtype == torch.int64 and target["area"].dtype == torch.float32
    # bbox [1, 2, 10, 5] -> xyxy; the second annotation has no area field, so it is w * h.
    assert target["boxes"].tolist() == [[1.0, 2.0, 11.0, 7.0], [20.0, 10.0, 40.0, 30.0]]
    assert target["area"].tolist() == [50.0, 400.0]


def test_non_contiguous_category_ids_map_to_sorted_contiguous_labels(dataset: CocoDetectionDataset) -> None:
    assert dataset.category_ids == [1, 3, 90]
    assert dataset.category_names == ["person", "car", "toothbrush"]
    assert dataset.num_classes == 3
    assert dataset[0][1]["labels"].tolist() == [2, 0]  # category ids 90, 1
    assert dataset[1][1]["labels"].tolist() == [1, 0]  # category ids 3, 1


def test_crowd_boxes_are_kept_with_their_flag(dataset: CocoDetectionDataset) -> None:
    target = dataset[1][1]
    assert target["iscrowd"].tolist() == [1, 0]
    assert target["boxes"][0].tolist() == [0.0, 0.0, 32.0, 32.0]


def test_image_without_annotations_has_empty_targets(dataset: CocoDetectionDataset) -> None:
    image, target = dataset[2]
    assert image.shape == (3, 24, 16)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["iscrowd"].shape == (0,) and target["area"].shape == (0,)


def test_truncated_image_error_names_file_and_image_id(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    data = (image_dir / "b.png").read_bytes()
    (image_dir / "b.png").write_bytes(data[: len(data) // 2])
    dataset = CocoDetectionDataset(image_dir, ann_file)  # file listing is fine; decoding happens per item
    dataset[0]
    with pytest.raises(DatasetError, match=r"b\.png: cannot read image id=20") as error:
        dataset[1]
    assert str(ann_file) in str(error.value)


def test_garbage_image_error_names_file(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    (image_dir / "empty.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"empty\.png: cannot read image id=30"):
        CocoDetectionDataset(image_dir, ann_file, cache_images=True)  # the cache decodes at construction


def test_image_size_must_match_annotation(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    Image.new("RGB", (41, 30)).save(image_dir / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png: image id=10 is 41x30 but .* says 40x30"):
        CocoDetectionDataset(image_dir, ann_file)  # the header check at construction reads the size


def test_image_replaced_after_construction_is_checked_again_when_read(
    coco_set: Callable[..., tuple[Path, Path]],
) -> None:
    image_dir, ann_file = coco_set()
    dataset = CocoDetectionDataset(image_dir, ann_file)
    Image.new("RGB", (41, 30)).save(image_dir / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png: image id=10 is 41x30 but .* says 40x30"):
        dataset[0]


def test_grayscale_images_become_rgb(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    Image.new("L", (16, 24), color=128).save(image_dir / "empty.png")
    image, _ = CocoDetectionDataset(image_dir, ann_file)[2]
    assert image.shape == (3, 24, 16)
    torch.testing.assert_close(image, torch.full((3, 24, 16), 128 / 255))


def test_cache_serves_identical_items(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    plain = CocoDetectionDataset(image_dir, ann_file)
    cached = CocoDetectionDataset(image_dir, ann_file, cache_images=True)
    for index in range(len(plain)):
        torch.testing.assert_close(plain[index][0], cached[index][0])
        torch.testing.assert_close(plain[index][1]["boxes"], cached[index][1]["boxes"])
    cached[0][0].mul_(0)  # callers may modify the image in place without touching the cache
    torch.testing.assert_close(plain[0][0], cached[0][0])


def test_limit_keeps_the_first_images_in_file_order(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    dataset = CocoDetectionDataset(image_dir, ann_file, limit=2)
    assert dataset.image_ids == [10, 20]
    with pytest.raises(ValueError, match="limit"):
        CocoDetectionDataset(image_dir, ann_file, limit=-1)


def test_transforms_are_applied(coco_set: Callable[..., tuple[Path, Path]]) -> None:
    image_dir, ann_file = coco_set()
    calls: list[int] = []

    def record(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        calls.append(int(target["image_id"]))
        return image * 0, target

    dataset = CocoDetectionDataset(image_dir, ann_file, transforms=record)
    assert dataset[1][0].abs().sum() == 0 and calls == [20]


def test_ground_truth_dict_round_trips_through_pycocotools(dataset: CocoDetectionDataset) -> None:
    coco = COCO()
    coco.dataset = dataset.coco_ground_truth()
    coco.createIndex()
    assert sorted(coco.getImgIds()) == [10, 20, 30]
    assert sorted(coco.getCatIds()) == [1, 3, 90]
    annotation = coco.loadAnns([1])[0]
    assert annotation["bbox"] == [1.0, 2.0, 10.0, 5.0] and annotation["category_id"] == 90
    assert coco.loadAnns([3])[0]["iscrowd"] == 1
