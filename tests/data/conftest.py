"""Fixtures for the data-layer tests: a tiny valid COCO set on disk and one shared tree-crown build."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def valid_coco_document() -> dict[str, Any]:
    """Three images (one without boxes), non-contiguous category ids 1/3/90, one crowd box."""
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 20, "file_name": "b.png", "width": 32, "height": 32},
            {"id": 30, "file_name": "empty.png", "width": 16, "height": 24},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 90,
                "bbox": [1.0, 2.0, 10.0, 5.0],
                "area": 50.0,
                "iscrowd": 0,
            },
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [20, 10, 20, 20], "iscrowd": 0},
            {"id": 3, "image_id": 20, "category_id": 3, "bbox": [0, 0, 32, 32], "area": 900.0, "iscrowd": 1},
            {"id": 4, "image_id": 20, "category_id": 1, "bbox": [5.5, 6.5, 3.25, 4.0]},
        ],
        "categories": [
            {"id": 90, "name": "toothbrush"},
            {"id": 1, "name": "person"},
            {"id": 3, "name": "car"},
        ],
    }


def write_images(image_dir: Path, document: dict[str, Any]) -> None:
    """Write a random RGB PNG for every well-formed image record of ``document``."""
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image in document["images"]:
        pixels = rng.integers(0, 255, size=(image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / image["file_name"])


@pytest.fixture
def coco_set(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Factory: ``coco_set(document=None, text=None) -> (image_dir, ann_file)`` with the valid images on disk.

    ``document`` replaces the annotation JSON (the images of the valid document are always written);
    ``text`` writes raw annotation text instead (for JSON syntax errors).
    """

    def make(document: dict[str, Any] | None = None, text: str | None = None) -> tuple[Path, Path]:
        image_dir = tmp_path / "images"
        write_images(image_dir, valid_coco_document())
        ann_file = tmp_path / "instances_test.json"
        if text is None:
            text = json.dumps(valid_coco_document() if document is None else document)
        ann_file.write_text(text)
        return image_dir, ann_file

    return make


@pytest.fixture
def valid_document() -> dict[str, Any]:
    """A fresh deep copy of the valid document, free to mutate."""
    return copy.deepcopy(valid_coco_document())


@pytest.fixture(scope="session")
def treecrowns_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real tree-crown build with default parameters (about 3 s), shared by all tests."""
    from ghmdet.data.treecrowns import build_treecrowns

    return build_treecrowns(tmp_path_factory.mktemp("treecrowns") / "treecrowns")


@pytest.fixture(scope="session")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Session-wide image folder of the valid document, for tests that write many annotation variants."""
    root = tmp_path_factory.mktemp("fuzz")
    write_images(root / "images", valid_coco_document())
    return root, valid_coco_document()
