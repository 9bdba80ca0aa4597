"""The column-at-a-time validation of the loader: taken for valid files, never accepting what the per-record
loop refuses (the loop then names the problem, so every message stays the loop's)."""

from __future__ import annotations

import copy
import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ghmdet.data.annotations import DatasetError
from ghmdet.data.coco_loading import load_coco_annotations
from ghmdet.data.coco_records import (
    _annotation_columns,
    _annotation_columns_at_once,
    _image_columns_at_once,
    _parse_images,
)
from tests.data.conftest import valid_coco_document
from tests.data.test_data_packed import random_document

KNOWN_CATEGORIES = {1, 3, 90}


def _images(document: dict[str, Any]):
    return _parse_images(Path("f.json"), document["images"])


@pytest.mark.parametrize("document", [valid_coco_document(), random_document(80)])
def test_valid_files_take_the_fast_path_and_agree_with_the_loop(document: dict[str, Any]) -> None:
    images = _image_columns_at_once(document["images"])
    assert images is not None and images == _images(document)
    fast = _annotation_columns_at_once(document["annotations"], images, KNOWN_CATEGORIES)
    assert fast is not None
    loop = _annotation_columns(Path("f.json"), document["annotations"], images, KNOWN_CATEGORIES)
    for fast_column, loop_column in zip(fast, loop, strict=True):
        assert fast_column.dtype == loop_column.dtype
        np.testing.assert_array_equal(fast_column, loop_column)


ANNOTATION_CORRUPTIONS = {
    "not an object": lambda a: [1, 2],
    "id bool": lambda a: {**a, "id": True},
    "id negative": lambda a: {**a, "id": -1},
    "id beyond int64": lambda a: {**a, "id": 2**63},
    "id float": lambda a: {**a, "id": 1.0},
    "id missing": lambda a: {k: v for k, v in a.items() if k != "id"},
    "duplicate id": lambda a: {**a, "id": 2},
    "unknown image": lambda a: {**a, "image_id": 11},
    "unknown category": lambda a: {**a, "category_id": 2},
    "category string": lambda a: {**a, "category_id": "1"},
    "bbox missing": lambda a: {k: v for k, v in a.items() if k != "bbox"},
    "bbox of 3": lambda a: {**a, "bbox": [1, 2, 3]},
    "bbox tuple-like string": lambda a: {**a, "bbox": "1234"},
    "bbox bool": lambda a: {**a, "bbox": [1, 2, True, 4]},
    "bbox None": lambda a: {**a, "bbox": [1, 2, None, 4]},
    "bbox beyond float": lambda a: {**a, "bbox": [1, 2, 10**400, 4]},
    "iscrowd 2": lambda a: {**a, "iscrowd": 2},
    "iscrowd bool": lambda a: {**a, "iscrowd": True},
    "area negative": lambda a: {**a, "area": -1.0},
    "area nan": lambda a: {**a, "area": float("nan")},
    "area inf": lambda a: {**a, "area": float("inf")},
    "area bool": lambda a: {**a, "area": True},
    "area string": lambda a: {**a, "area": "5"},
    "area beyond float": lambda a: {**a, "area": 10**400},
}


@pytest.mark.parametrize("name", sorted(ANNOTATION_CORRUPTIONS))
def test_no_corrupt_annotation_passes_the_fast_path(name: str) -> None:
    document = valid_coco_document()
    document["annotations"][0] = ANNOTATION_CORRUPTIONS[name](copy.deepcopy(document["annotations"][0]))
    images = _images(document)
    assert _annotation_columns_at_once(document["annotations"], images, KNOWN_CATEGORIES) is None
    with pytest.raises(DatasetError):
        _annotation_columns(Path("f.json"), document["annotations"], images, KNOWN_CATEGORIES)


IMAGE_CORRUPTIONS = {
    "not an object": lambda i: "a.png",
    "id bool": lambda i: {**i, "id": False},
    "id negative": lambda i: {**i, "id": -3},
    "id beyond int64": lambda i: {**i, "id": 2**64},
    "duplicate id": lambda i: {**i, "id": 20},
    "width zero": lambda i: {**i, "width": 0},
    "width bool": lambda i: {**i, "width": True},
    "height float": lambda i: {**i, "height": 30.0},
    "height missing": lambda i: {k: v for k, v in i.items() if k != "height"},
    "name empty": lambda i: {**i, "file_name": ""},
    "name not a string": lambda i: {**i, "file_name": 7},
    "name with NUL": lambda i: {**i, "file_name": "a\x00.png"},
    "name absolute": lambda i: {**i, "file_name": "/a.png"},
    "name backslash absolute": lambda i: {**i, "file_name": "\\a.png"},
    "name escaping": lambda i: {**i, "file_name": "x/../../a.png"},
    "name escaping backslashes": lambda i: {**i, "file_name": "x\\..\\..\\a.png"},
    "name parent only": lambda i: {**i, "file_name": ".."},
}


@pytest.mark.parametrize("name", sorted(IMAGE_CORRUPTIONS))
def test_no_corrupt_image_record_passes_the_fast_path(name: str) -> None:
    document = valid_coco_document()
    document["images"][0] = IMAGE_CORRUPTIONS[name](copy.deepcopy(document["images"][0]))
    assert _image_columns_at_once(document["images"]) is None
    with pytest.raises(DatasetError):
        _parse_images(Path("f.json"), document["images"])


def test_names_with_dots_that_stay_inside_take_the_fast_path() -> None:
    document = valid_coco_document()
    for image, name in zip(document["images"], ["..a.png", "sub/./b..png", "c/d/e.png"], strict=True):
        image["file_name"] = name
    images = _image_columns_at_once(document["images"])
    assert images is not None and images.file_names == ["..a.png", "sub/./b..png", "c/d/e.png"]


@pytest.mark.parametrize("fails", [False, True])
def test_loading_leaves_the_garbage_collector_as_it_was(tmp_path: Path, fails: bool) -> None:
    ann_file = tmp_path / "instances.json"
    document = valid_coco_document()
    if fails:
        document["annotations"][0]["bbox"] = [1, 2]
    ann_file.write_text(json.dumps(document))
    for enabled in (True, False):
        gc.enable() if enabled else gc.disable()
        try:
            if fails:
                with pytest.raises(DatasetError):
                    load_coco_annotations(ann_file)
            else:
                load_coco_annotations(ann_file)
            assert gc.isenabled() is enabled
        finally:
            gc.enable()
