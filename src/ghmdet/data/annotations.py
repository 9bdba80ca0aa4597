"""The rules of a strict COCO-format annotation file (instances JSON) and the checks they share.

The loader is :func:`ghmdet.data.coco_loading.load_coco_annotations`, the column-wise record checks are in
:mod:`ghmdet.data.coco_records`, the per-image storage in :mod:`ghmdet.data.packed`.

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

import json
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

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


# ghmdet.cli recognises this class by its qualified name in a worker's traceback: keep it in this module.
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
