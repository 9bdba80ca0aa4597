"""Column-wise validation of the ``images`` and ``annotations`` records of a COCO annotation file.

Each kind has a fast path testing a whole column at a time and a record-by-record loop that names the first
problem (the rules: :mod:`ghmdet.data.annotations`); the fast path accepts nothing the loop refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ghmdet.data.annotations import (
    _ANNOTATION_FIELDS,
    _AREA_TYPES,
    _BBOX_TYPE_REASON,
    _HUGE,
    _IMAGE_FIELDS,
    _INT64_MAX,
    _NUMBER_TYPES,
    _fail,
    _is_finite_number,
    _is_int,
    _require_field,
    _require_id,
)


@dataclass(frozen=True)
class _ImageColumns:
    """The validated ``images`` records, column by column (file order)."""

    ids: list[int]
    file_names: list[str]
    sizes: list[tuple[int, int]]  # (width, height)


def _image_columns_at_once(raw_images: list[Any]) -> _ImageColumns | None:
    """The columns when every image record is valid, tested a column at a time (C-level type tests);
    None when any test fails: :func:`_parse_images` then names the first problem, record by record."""
    try:
        if not raw_images or set(map(type, raw_images)) != {dict}:
            return None
        ids, names, widths, heights = ([entry[key] for entry in raw_images] for key in _IMAGE_FIELDS)
    except KeyError:
        return None
    if not (set(map(type, ids)) == {int} and set(map(type, widths)) == {int} == set(map(type, heights))):
        return None
    if not (min(ids) >= 0 and max(ids) <= _INT64_MAX and len(set(ids)) == len(ids)):
        return None
    if min(widths) <= 0 or min(heights) <= 0 or set(map(type, names)) != {str} or not all(names):
        return None
    # Joined by "/", the names' path parts are the union of every name's parts.
    joined = "/".join(names)
    if "\x00" in joined or ".." in joined.replace("\\", "/").split("/"):
        return None
    if any(name.startswith(("/", "\\")) for name in names):
        return None
    return _ImageColumns(list(ids), list(names), list(zip(widths, heights, strict=True)))


def _parse_images(ann_file: Path, raw_images: list[Any]) -> _ImageColumns:
    at_once = _image_columns_at_once(raw_images)
    if at_once is not None:
        return at_once
    columns = _ImageColumns([], [], [])
    seen_ids: set[int] = set()
    for index, entry in enumerate(raw_images):
        record = f"images[{index}]"
        if not isinstance(entry, dict):
            raise _fail(ann_file, record, "(record)", entry, "must be an object")
        image_id = _require_id(ann_file, record, entry, "id")
        record = f"images[{index}] (id={image_id})"
        if image_id in seen_ids:
            raise _fail(ann_file, record, "id", image_id, "duplicate image id")
        seen_ids.add(image_id)
        file_name = _require_field(ann_file, record, entry, "file_name")
        if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
            raise _fail(ann_file, record, "file_name", file_name, "must be a non-empty string")
        posix = PurePosixPath(file_name.replace("\\", "/"))
        if posix.is_absolute() or ".." in posix.parts or file_name.startswith(("/", "\\")):
            raise _fail(
                ann_file, record, "file_name", file_name, "must be a relative path inside the image folder"
            )
        sizes = []
        for key in ("width", "height"):
            value = _require_field(ann_file, record, entry, key)
            if not _is_int(value) or value <= 0:
                raise _fail(ann_file, record, key, value, "must be a positive integer")
            sizes.append(value)
        columns.ids.append(image_id)
        columns.file_names.append(file_name)
        columns.sizes.append((sizes[0], sizes[1]))
    return columns


def _check_annotation(
    ann_file: Path,
    index: int,
    entry: dict[str, Any],
    seen_annotation_ids: set[int],
    image_index: dict[int, int],
    known_category_ids: set[int],
) -> None:
    """Detailed check of one annotation record; raises :class:`DatasetError` naming the first problem."""
    record = f"annotations[{index}]"
    annotation_id = _require_id(ann_file, record, entry, "id")
    record = f"annotations[{index}] (id={annotation_id})"
    if annotation_id in seen_annotation_ids:
        raise _fail(ann_file, record, "id", annotation_id, "duplicate annotation id")
    image_id = _require_id(ann_file, record, entry, "image_id")
    record = f"annotations[{index}] (id={annotation_id}, image_id={image_id})"
    if image_id not in image_index:
        raise _fail(ann_file, record, "image_id", image_id, "no image with this id in 'images'")
    category_id = _require_id(ann_file, record, entry, "category_id")
    if category_id not in known_category_ids:
        raise _fail(ann_file, record, "category_id", category_id, "no category with this id in 'categories'")
    bbox = _require_field(ann_file, record, entry, "bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_finite_number(v) for v in bbox):
        raise _fail(ann_file, record, "bbox", bbox, _BBOX_TYPE_REASON)
    iscrowd = entry.get("iscrowd", 0)
    if not _is_int(iscrowd) or iscrowd not in (0, 1):
        raise _fail(ann_file, record, "iscrowd", iscrowd, "must be 0 or 1")
    area = entry.get("area")
    if area is not None and (not _is_finite_number(area) or area < 0):
        raise _fail(ann_file, record, "area", area, "must be a finite number >= 0")


_AnnotationColumns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _annotation_columns_at_once(
    raw_annotations: list[Any], images: _ImageColumns, known_category_ids: set[int]
) -> _AnnotationColumns | None:
    """What :func:`_annotation_columns` returns, when every annotation passes its per-record test, tested a
    column at a time (C-level type tests, numpy range and reference checks); None when any test fails:
    the record-by-record loop then names the first problem. Accepts nothing that loop refuses."""
    count = len(raw_annotations)
    try:
        if not count or not images.ids or set(map(type, raw_annotations)) != {dict}:
            return None
        ids, image_ids, category_ids, bboxes = (
            [entry[key] for entry in raw_annotations] for key in _ANNOTATION_FIELDS
        )
    except KeyError:
        return None
    crowd = [entry.get("iscrowd", 0) for entry in raw_annotations]
    areas = [entry.get("area") for entry in raw_annotations]
    if not (set(map(type, ids)) == set(map(type, image_ids)) == set(map(type, category_ids)) == {int}):
        return None
    if not (set(map(type, crowd)) == {int} and set(crowd) <= {0, 1} and set(map(type, bboxes)) == {list}):
        return None
    if set(map(len, bboxes)) != {4} or not _NUMBER_TYPES.issuperset(map(type, chain.from_iterable(bboxes))):
        return None
    if not _AREA_TYPES.issuperset(map(type, areas)):
        return None
    try:
        id_array = np.asarray(ids, dtype=np.int64)
        image_id_array = np.asarray(image_ids, dtype=np.int64)
        category_array = np.asarray(category_ids, dtype=np.int64)
        box_array = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        area_array = np.asarray([math.nan if area is None else area for area in areas], dtype=np.float64)
    except OverflowError:  # an int beyond int64 or float range
        return None
    missing_area = np.fromiter((area is None for area in areas), dtype=bool, count=count)
    with np.errstate(invalid="ignore"):
        areas_valid = missing_area | ((area_array >= 0) & (area_array < _HUGE))
    if id_array.min() < 0 or not areas_valid.all() or len(np.unique(id_array)) != count:
        return None
    if not np.isin(category_array, np.fromiter(known_category_ids, dtype=np.int64)).all():
        return None
    known_images = np.asarray(images.ids, dtype=np.int64)
    order = np.argsort(known_images, kind="stable")
    found = np.minimum(np.searchsorted(known_images[order], image_id_array), len(order) - 1)
    if not (known_images[order][found] == image_id_array).all():
        return None
    crowd_array = np.asarray(crowd, dtype=np.int64)
    return id_array, order[found], category_array, box_array, crowd_array, area_array


def _annotation_columns(
    ann_file: Path, raw_annotations: list[Any], images: _ImageColumns, known_category_ids: set[int]
) -> _AnnotationColumns:
    """Annotation ids, image positions, category ids, ``(N, 4)`` float64 xywh boxes, crowd flags and areas
    (NaN: none given), checked record by record: the first problem raises :class:`DatasetError`."""
    image_index = {image_id: position for position, image_id in enumerate(images.ids)}
    # A fast test per record; the detailed check that names the problem runs only when it fails.
    annotation_ids: list[int] = []
    image_positions: list[int] = []
    category_ids: list[int] = []
    bboxes: list[list[float]] = []
    crowd_flags: list[int] = []
    areas: list[float] = []
    seen_annotation_ids: set[int] = set()
    for index, entry in enumerate(raw_annotations):
        if type(entry) is not dict:
            raise _fail(ann_file, f"annotations[{index}]", "(record)", entry, "must be an object")
        annotation_id, image_id = entry.get("id"), entry.get("image_id")
        category_id, bbox = entry.get("category_id"), entry.get("bbox")
        iscrowd, area = entry.get("iscrowd", 0), entry.get("area")
        looks_valid = (
            type(annotation_id) is int
            and 0 <= annotation_id <= _INT64_MAX
            and annotation_id not in seen_annotation_ids
            and type(image_id) is int
            and image_id in image_index
            and type(category_id) is int
            and category_id in known_category_ids
            and type(bbox) is list
            and len(bbox) == 4
            and _NUMBER_TYPES.issuperset(map(type, bbox))
            and type(iscrowd) is int
            and iscrowd in (0, 1)
            and (area is None or (type(area) in _NUMBER_TYPES and 0 <= area < _HUGE))
        )
        if looks_valid:
            try:
                floats = [float(v) for v in bbox]
            except OverflowError:  # an int beyond float range
                looks_valid = False
        if not looks_valid:
            _check_annotation(ann_file, index, entry, seen_annotation_ids, image_index, known_category_ids)
            floats = [float(v) for v in bbox]
        seen_annotation_ids.add(annotation_id)
        annotation_ids.append(annotation_id)
        image_positions.append(image_index[image_id])
        category_ids.append(category_id)
        bboxes.append(floats)
        crowd_flags.append(iscrowd)
        areas.append(math.nan if area is None else float(area))

    return (
        np.asarray(annotation_ids, dtype=np.int64),
        np.asarray(image_positions, dtype=np.int64),
        np.asarray(category_ids, dtype=np.int64),
        np.asarray(bboxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(crowd_flags, dtype=np.int64),
        np.asarray(areas, dtype=np.float64).reshape(-1),
    )
