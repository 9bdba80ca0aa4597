"""Strict loading of COCO-format annotation files (instances JSON) into per-image box arrays.

Every problem raises :class:`DatasetError` (a ``ValueError``) whose message names the annotation file, the
record (``images[i] (id=...)``, ``annotations[i] (id=..., image_id=...)``, ``categories[i]``), the field and
its value. Checked: the file exists and parses (with the JSON error position); ``images``, ``annotations`` and
``categories`` are lists of objects; required fields are present with the right types (ids: non-negative
integers that fit in int64; ``width``/``height``: positive integers; ``file_name``: a relative path inside the
image folder; ``bbox``: 4 finite numbers; optional ``iscrowd`` in {0, 1}; optional ``area`` finite and >= 0);
image, annotation and category ids are unique; each annotation references a known image and category.

Box geometry (``bbox = [x, y, w, h]``, continuous pixel coordinates, image spans ``[0, W] x [0, H]``):

- ``w <= 0`` or ``h <= 0`` is *degenerate*;
- a box extending beyond the image by more than ``BOX_TOLERANCE_PX`` (1 px) is *outside*.
  Overshoots up to 1 px are accepted and clipped to the image without a warning: COCO boxes are rounded
  polygon extents and a few touch or cross the border by a fraction of a pixel; they are counted in
  ``tolerance_clips``. A box that becomes empty after this clipping counts as outside.

``box_policy="error"`` (default) raises on the first degenerate/outside box, naming file, annotation id, bbox
and image size. ``box_policy="repair"`` clips outside boxes to the image, drops boxes that are (or become)
empty, counts each repair in ``repairs`` and logs one warning with the counts.

Crowd annotations (``iscrowd=1``) are kept with their flag: the detector ignores them when matching anchors
and the COCO metric uses them to ignore detections, as in the reference implementations.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import mmap
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any, Literal, overload

import numpy as np

logger = logging.getLogger(__name__)

BoxPolicy = Literal["error", "repair"]
BOX_POLICIES = ("error", "repair")
# Overshoot beyond the image border accepted without counting as a repair (see module docstring).
BOX_TOLERANCE_PX = 1.0
_INT64_MAX = 2**63 - 1
_REQUIRED_TOP_LEVEL = ("images", "annotations", "categories")
_NUMBER_TYPES = frozenset({int, float})  # exact types: bool (an int subclass) is not a number here
_HUGE = 1e300  # below float max, so float() of a number passing `< _HUGE` never overflows
_BBOX_TYPE_REASON = "must be a list of 4 finite numbers [x, y, w, h]"
_AREA_TYPES = frozenset({int, float, type(None)})
_IMAGE_FIELDS = ("id", "file_name", "width", "height")
_ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox")


class DatasetError(ValueError):
    """A dataset (annotation file, image folder or image) is missing or invalid; the message says where."""


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(ann_file: Path, record: str, field_name: str, value: Any, reason: str) -> DatasetError:
    return DatasetError(f"{ann_file}: {record}: field {field_name!r} = {_short_repr(value)}: {reason}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python; JSON true/false are never valid ids or sizes.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True)
class BoxVerdict:
    """Vectorised judgement of ``N`` boxes (see :func:`judge_boxes`)."""

    xyxy: np.ndarray  # (N, 4) float64, as given
    clipped: np.ndarray  # (N, 4) float64, clipped to the image
    degenerate: np.ndarray  # (N,) zero or negative width/height
    outside: np.ndarray  # (N,) beyond the tolerance, or empty once clipped (and not degenerate)
    clipped_non_empty: np.ndarray  # (N,)


def judge_boxes(xywh: np.ndarray, image_sizes: np.ndarray, tolerance_px: float) -> BoxVerdict:
    """Classify COCO ``[x, y, w, h]`` boxes against their images' ``[width, height]``.

    Sizes are judged in float32, the precision boxes are served in: a width of 1e-9 px is zero there, and a
    zero-size box makes the detector's box coder divide by zero.
    """
    # Overflow to inf (boxes near 1e308, or beyond float32 range) is fine: such boxes land in `outside`.
    with np.errstate(over="ignore", invalid="ignore"):
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        limits = np.concatenate([image_sizes, image_sizes], axis=1)
        clipped = np.clip(xyxy, 0.0, limits)
        xyxy32, clipped32 = xyxy.astype(np.float32), clipped.astype(np.float32)
    degenerate = ~((xyxy32[:, 2] > xyxy32[:, 0]) & (xyxy32[:, 3] > xyxy32[:, 1]))
    clipped_non_empty = (clipped32[:, 2] > clipped32[:, 0]) & (clipped32[:, 3] > clipped32[:, 1])
    beyond = (xyxy[:, :2] < -tolerance_px).any(axis=1) | (xyxy[:, 2:] > image_sizes + tolerance_px).any(
        axis=1
    )
    outside = ~degenerate & (beyond | ~clipped_non_empty)
    return BoxVerdict(xyxy, clipped, degenerate, outside, clipped_non_empty)


def _box_problem(verdict: BoxVerdict, index: int, image_sizes: np.ndarray, tolerance_px: float) -> str:
    if verdict.degenerate[index]:
        return "degenerate: zero or negative width/height (in float32)"
    x1, y1, x2, y2 = verdict.xyxy[index].tolist()
    width, height = (int(v) for v in image_sizes[index])
    where = "partly outside" if verdict.clipped_non_empty[index] else "outside"
    return (
        f"outside: box [x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}] lies {where} the {width}x{height} image "
        f"(tolerance {tolerance_px:g} px)"
    )


@dataclass
class ImageRecord:
    """One image and its validated boxes (``boxes``: ``(K, 4)`` float32 xyxy absolute pixels)."""

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    category_ids: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    annotation_ids: np.ndarray


class PackedImages(Sequence[ImageRecord]):
    """The image records of a file held in a few flat numpy arrays: a sequence of :class:`ImageRecord`.

    A Python list of 118k records (COCO train2017) is 118k objects with their own arrays and strings; each
    access writes their reference counts, so every forked dataloader worker gradually copies the pages
    holding them (copy-on-read) until each holds its own copy of the list. Here the per-image fields and the
    per-box columns are flat arrays (file names: one UTF-8 buffer with end offsets, as detectron2's
    ``DatasetFromList(serialize=True)`` keeps its records), whose pages no access writes; ``self[i]`` builds
    the record of image ``i`` on the fly, its box arrays being views into the shared columns. Pickling it
    (spawned workers, DDP) copies the arrays, not one Python object per record.

    Args:
        image_ids: ``(N,)`` COCO image ids.
        file_names: ``N`` file names.
        sizes: ``(N, 2)`` ``[width, height]``, int64 (object when a size does not fit: the header check
            then refuses it naming the size).
        columns: the per-box arrays of :class:`ImageRecord` by field name (``boxes``, ``category_ids``,
            ``iscrowd``, ``area``, ``annotation_ids``); image ``i``'s at ``box_ends[i-1]:box_ends[i]``.
        box_ends: ``(N,)`` end offset of each image's boxes in ``columns``.
    """

    def __init__(
        self,
        image_ids: np.ndarray,
        file_names: Sequence[str],
        sizes: np.ndarray,
        columns: dict[str, np.ndarray],
        box_ends: np.ndarray,
    ) -> None:
        # surrogatepass: a JSON "\ud800" escape is a valid str with a lone surrogate; it must round-trip.
        encoded = [name.encode("utf-8", "surrogatepass") for name in file_names]
        name_ends = np.cumsum([len(name) for name in encoded], dtype=np.int64)
        names = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._set(np.asarray(image_ids, dtype=np.int64), names, name_ends, sizes, columns, box_ends)

    def _set(
        self,
        image_ids: np.ndarray,
        names: np.ndarray,
        name_ends: np.ndarray,
        sizes: np.ndarray,
        columns: dict[str, np.ndarray],
        box_ends: np.ndarray,
    ) -> None:
        self.image_ids = image_ids
        self._names, self._name_ends = names, np.asarray(name_ends, dtype=np.int64)
        self._sizes = sizes
        self._columns = columns
        self._box_ends = np.asarray(box_ends, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _span(self, ends: np.ndarray, index: int) -> tuple[int, int]:
        return (int(ends[index - 1]) if index else 0), int(ends[index])

    @overload
    def __getitem__(self, index: int) -> ImageRecord: ...
    @overload
    def __getitem__(self, index: slice) -> PackedImages: ...
    def __getitem__(self, index: int | slice) -> ImageRecord | PackedImages:
        if isinstance(index, slice):
            return self._take(np.arange(len(self))[index])
        if not -len(self) <= index < len(self):
            raise IndexError(f"image index {index} out of range for {len(self)} images")
        index = int(index) % len(self)
        name_start, name_end = self._span(self._name_ends, index)
        box_start, box_end = self._span(self._box_ends, index)
        width, height = self._sizes[index].tolist()
        return ImageRecord(
            image_id=int(self.image_ids[index]),
            file_name=self._names[name_start:name_end].tobytes().decode("utf-8", "surrogatepass"),
            width=width,
            height=height,
            **{name: column[box_start:box_end] for name, column in self._columns.items()},
        )

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[index] for index in range(len(self)))

    def _take(self, indices: np.ndarray) -> PackedImages:
        """The records at ``indices`` (in that order), packed alike."""

        def gather(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            starts = np.concatenate([[0], ends[:-1]])[indices]
            lengths = ends[indices] - starts
            new_ends = np.cumsum(lengths, dtype=np.int64)
            within = np.arange(int(new_ends[-1]) if len(new_ends) else 0) - np.repeat(
                new_ends - lengths, lengths
            )
            return np.repeat(starts, lengths) + within, new_ends

        name_index, name_ends = gather(self._name_ends)
        box_index, box_ends = gather(self._box_ends)
        taken = PackedImages.__new__(PackedImages)
        columns = {name: column[box_index] for name, column in self._columns.items()}
        taken._set(
            self.image_ids[indices],
            self._names[name_index],
            name_ends,
            self._sizes[indices],
            columns,
            box_ends,
        )
        return taken


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


def _read_json(ann_file: Path) -> Any:
    if not ann_file.exists():
        raise DatasetError(f"annotation file not found: {ann_file}")
    if not ann_file.is_file():
        raise DatasetError(f"annotation path is not a file: {ann_file}")
    try:
        text = ann_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{ann_file}: not UTF-8 text (byte {exc.start}): {exc.reason}") from exc
    except OSError as exc:
        raise DatasetError(f"{ann_file}: cannot read: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{ann_file}: invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise DatasetError(f"{ann_file}: invalid JSON: nested too deeply") from exc


def _require_list(ann_file: Path, document: Any, key: str) -> list[Any]:
    if key not in document:
        raise DatasetError(f"{ann_file}: top level: required field {key!r} is missing")
    value = document[key]
    if not isinstance(value, list):
        raise _fail(ann_file, "top level", key, value, "must be a list")
    return value


def _require_field(ann_file: Path, record: str, entry: dict[str, Any], key: str) -> Any:
    if key not in entry:
        raise DatasetError(f"{ann_file}: {record}: required field {key!r} is missing")
    return entry[key]


def _require_id(ann_file: Path, record: str, entry: dict[str, Any], key: str) -> int:
    value = _require_field(ann_file, record, entry, key)
    if not _is_int(value) or not 0 <= value <= _INT64_MAX:
        raise _fail(ann_file, record, key, value, "must be a non-negative integer that fits in int64")
    return value


def _parse_categories(ann_file: Path, raw_categories: list[Any]) -> list[dict[str, Any]]:
    categories: dict[int, dict[str, Any]] = {}
    for index, entry in enumerate(raw_categories):
        record = f"categories[{index}]"
        if not isinstance(entry, dict):
            raise _fail(ann_file, record, "(record)", entry, "must be an object")
        category_id = _require_id(ann_file, record, entry, "id")
        record = f"categories[{index}] (id={category_id})"
        name = entry.get("name", f"category_{category_id}")
        if not isinstance(name, str):
            raise _fail(ann_file, record, "name", name, "must be a string")
        if category_id in categories:
            raise _fail(ann_file, record, "id", category_id, "duplicate category id")
        categories[category_id] = {"id": category_id, "name": name}
    if not categories:
        raise DatasetError(
            f"{ann_file}: top level: field 'categories' is empty; at least one category is needed"
        )
    return [categories[key] for key in sorted(categories)]


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


def _size_array(sizes: list[tuple[int, int]]) -> np.ndarray:
    """``(N, 2)`` ``[width, height]``: int64, or object when one is beyond int64 (sizes have no bound)."""
    try:
        return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    except OverflowError:
        array = np.empty((len(sizes), 2), dtype=object)
        array[:] = sizes
        return array


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
    """Parse and validate a COCO instances file (see the module docstring for every rule)."""
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


def _validate_category_list(ann_file: Path, raw: Any) -> int:
    if not isinstance(raw, list):
        raise _fail(ann_file, "top level", "categories", raw, "must be a list")
    return len(_parse_categories(ann_file, raw))


def _cheap_categories(ann_file: Path) -> Any:
    """Find the top-level ``"categories"`` value without parsing the whole file (COCO train: ~450 MB).

    Looks for the key from the end (COCO writers put it last) and decodes just the value that follows.
    Returns ``None`` when that does not work; the caller then parses the whole file.
    """
    key = b'"categories"'
    decoder = json.JSONDecoder()
    try:
        with ann_file.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            position = view.rfind(key)
            while position != -1:
                cursor = position + len(key)
                while view[cursor : cursor + 1].isspace():
                    cursor += 1
                if view[cursor : cursor + 1] == b":":
                    cursor += 1
                    chunk = 1 << 16
                    while True:
                        text = view[cursor : cursor + chunk].decode("utf-8", errors="replace").lstrip()
                        try:
                            value, _ = decoder.raw_decode(text)
                            return value
                        except json.JSONDecodeError:
                            if cursor + chunk >= len(view):
                                break
                            chunk *= 4
                position = view.rfind(key, 0, position)
    except (OSError, ValueError):  # mmap of an empty file raises ValueError
        return None
    return None


def read_num_classes(ann_file: str | os.PathLike[str]) -> int:
    """Number of categories in a COCO annotation file, read cheaply (the model needs it at construction).

    Only the ``categories`` list is decoded and validated (ids unique non-negative integers); the full file is
    validated later when the dataset is set up, which also checks that the two agree.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DatasetError(f"annotation file not found: {ann_file}")
    categories = _cheap_categories(ann_file)
    if categories is not None:
        try:
            return _validate_category_list(ann_file, categories)
        except DatasetError:
            pass  # maybe not the top-level key after all: fall through to the full parse
    document = _read_json(ann_file)
    if not isinstance(document, dict):
        raise _fail(ann_file, "top level", "(document)", document, "must be a JSON object")
    if "categories" not in document:
        raise DatasetError(f"{ann_file}: top level: required field 'categories' is missing")
    return _validate_category_list(ann_file, document["categories"])
