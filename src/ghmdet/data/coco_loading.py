"""Loading a COCO-format annotation file into per-image box arrays, strictly validated.

Every rule, and the ``box_policy``, are described in :mod:`ghmdet.data.annotations`.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghmdet.data.annotations import (
    _BBOX_TYPE_REASON,
    _REQUIRED_TOP_LEVEL,
    BOX_POLICIES,
    BOX_TOLERANCE_PX,
    BoxPolicy,
    DatasetError,
    _box_problem,
    _fail,
    _parse_categories,
    _read_json,
    _require_list,
    judge_boxes,
)
from ghmdet.data.coco_records import _annotation_columns, _annotation_columns_at_once, _parse_images
from ghmdet.data.packed import PackedImages

logger = logging.getLogger(__name__)


@dataclass
class CocoAnnotations:
    """A validated annotation file: images in file order, categories sorted by id, repair counts."""

    ann_file: Path
    images: PackedImages
    categories: list[dict[str, Any]]
    repairs: dict[str, int] = field(default_factory=dict)
    tolerance_clips: int = 0

    @property
    def category_ids(self) -> list[int]:
        """COCO category ids in ascending order; the position is the contiguous label."""
        return [category["id"] for category in self.categories]


def _size_array(sizes: list[tuple[int, int]]) -> np.ndarray:
    """``(N, 2)`` ``[width, height]``: int64, or object when one is beyond int64 (sizes have no bound)."""
    try:
        return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    except OverflowError:
        array = np.empty((len(sizes), 2), dtype=object)
        array[:] = sizes
        return array


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (restored on exit).

    Parsing COCO train (~450 MB) creates millions of dicts and lists, and the collector would traverse the
    growing heap again and again: with it paused the whole load, validation included, is faster than
    ``json.load`` alone with it running (``docs/scaling.md``). A parsed JSON document holds no cycles, so
    pausing it frees nothing later. The switch is process-wide (Python has no per-thread one), for the
    duration of the load only.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_coco_annotations(
    ann_file: str | os.PathLike[str], box_policy: BoxPolicy = "error", tolerance_px: float = BOX_TOLERANCE_PX
) -> CocoAnnotations:
    """Parse and validate a COCO instances file (every rule: :mod:`ghmdet.data.annotations`)."""
    ann_file = Path(ann_file)
    if box_policy not in BOX_POLICIES:
        raise ValueError(f"box_policy must be one of {BOX_POLICIES}, got {box_policy!r}")
    with _cyclic_gc_paused():
        return _load_coco_annotations(ann_file, box_policy, tolerance_px)


def _load_coco_annotations(ann_file: Path, box_policy: BoxPolicy, tolerance_px: float) -> CocoAnnotations:
    document = _read_json(ann_file)
    if not isinstance(document, dict):
        raise _fail(ann_file, "top level", "(document)", document, "must be a JSON object")
    raw_images, raw_annotations, raw_categories = (
        _require_list(ann_file, document, k) for k in _REQUIRED_TOP_LEVEL
    )
    categories = _parse_categories(ann_file, raw_categories)
    known_category_ids = {category["id"] for category in categories}
    images = _parse_images(ann_file, raw_images)
    columns_of = _annotation_columns_at_once(raw_annotations, images, known_category_ids)
    if columns_of is None:
        columns_of = _annotation_columns(ann_file, raw_annotations, images, known_category_ids)
    annotation_ids, positions, category_ids, box_array, crowd_flags, areas = columns_of

    non_finite = np.flatnonzero(~np.isfinite(box_array).all(axis=1))
    if len(non_finite):
        index = int(non_finite[0])
        entry = raw_annotations[index]
        record = f"annotations[{index}] (id={entry['id']}, image_id={entry['image_id']})"
        raise _fail(ann_file, record, "bbox", entry["bbox"], _BBOX_TYPE_REASON)
    all_sizes = np.asarray(images.sizes, dtype=np.float64).reshape(-1, 2)
    sizes = all_sizes[positions] if len(positions) else np.zeros((0, 2))
    verdict = judge_boxes(box_array, sizes, tolerance_px)
    problems = verdict.degenerate | verdict.outside
    repairs = {"clipped_to_image": 0, "dropped_degenerate": 0, "dropped_outside": 0}
    if problems.any():
        if box_policy == "error":
            first = int(np.flatnonzero(problems)[0])  # every annotation passed the loop: same index
            entry = raw_annotations[first]
            record = f"annotations[{first}] (id={entry['id']}, image_id={entry['image_id']})"
            reason = _box_problem(verdict, first, sizes, tolerance_px)
            raise _fail(
                ann_file, record, "bbox", entry["bbox"], f"{reason}; use box_policy='repair' to clip/drop it"
            )
        repairs["dropped_degenerate"] = int(verdict.degenerate.sum())
        repairs["dropped_outside"] = int((verdict.outside & ~verdict.clipped_non_empty).sum())
        repairs["clipped_to_image"] = int((verdict.outside & verdict.clipped_non_empty).sum())
    keep = ~verdict.degenerate & verdict.clipped_non_empty
    tolerance_clips = int((~problems & (verdict.clipped != verdict.xyxy).any(axis=1)).sum())

    # Group the kept boxes by image (stable: file order within an image) as views into shared arrays.
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(positions[kept], kind="stable")]
    boxes = verdict.clipped[kept].astype(np.float32)
    box_areas = areas[kept]
    missing_area = np.isnan(box_areas)
    box_areas[missing_area] = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[missing_area]
    columns = {
        "boxes": boxes,
        "category_ids": category_ids[kept],
        "iscrowd": crowd_flags[kept],
        "area": box_areas.astype(np.float32),
        "annotation_ids": annotation_ids[kept],
    }
    image_records = PackedImages(
        image_ids=np.asarray(images.ids, dtype=np.int64),
        file_names=images.file_names,
        sizes=_size_array(images.sizes),
        columns=columns,
        box_ends=np.cumsum(np.bincount(positions[kept], minlength=len(images.ids))),
    )
    if any(repairs.values()):
        logger.warning("%s: box_policy='repair' changed boxes: %s", ann_file, repairs)
    if tolerance_clips:
        logger.info(
            "%s: %d boxes clipped to the image within %g px tolerance",
            ann_file,
            tolerance_clips,
            tolerance_px,
        )
    return CocoAnnotations(ann_file, image_records, categories, repairs, tolerance_clips)


def check_image_files(annotations: CocoAnnotations, image_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`DatasetError` unless the image folder exists and holds every listed image file."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"image folder not found: {image_dir} (images of {annotations.ann_file})")
    # One directory listing instead of one stat per image: COCO train2017 has 118k files.
    flat_names = {entry.name for entry in os.scandir(image_dir)}
    for image in annotations.images:
        name = image.file_name
        present = name in flat_names if "/" not in name and "\\" not in name else (image_dir / name).is_file()
        if not present:
            raise DatasetError(
                f"{annotations.ann_file}: image id={image.image_id}: file_name {name!r} "
                f"not found in {image_dir}"
            )
