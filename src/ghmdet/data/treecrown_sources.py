"""The tree-crown sources and the rules applied to them: locating the wheel's files, reading VOC, tiling.

The build that uses them, and the rules in full (split, tiling, box rule, coordinates), are in
:mod:`ghmdet.data.treecrowns`.
"""

from __future__ import annotations

import importlib.metadata
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ghmdet.data.atomic_build import installed_package_file

DEEPFOREST_REQUIREMENT = "deepforest==2.1.0"
# Every VOC label in the wheel is a tree crown; "Alive"/"Dead" (SOAP_061) are health states, not classes here.
VOC_NAMES_TO_TREE = frozenset({"Tree", "Alive", "Dead"})


class TreeCrownsError(RuntimeError):
    """The tree-crown build cannot proceed (missing source, bad source file, refusing to overwrite)."""


# --------------------------------------------------------------------------------------------- locating


def deepforest_data_dir() -> Path:
    """Return the ``data/`` folder of the installed ``deepforest`` package, without importing it."""
    return installed_package_file(
        "deepforest", "data", DEEPFOREST_REQUIREMENT, "The embedded tree-crown data", TreeCrownsError
    )


def _deepforest_version() -> str | None:
    try:
        return importlib.metadata.version("deepforest")
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------- VOC reading


@dataclass(frozen=True)
class VocAnnotation:
    """The boxes of one VOC XML file: ``boxes`` is ``(N, 4)`` float64 xyxy pixel edges."""

    xml_path: Path
    width: int
    height: int
    boxes: np.ndarray


def read_voc(xml_path: Path) -> VocAnnotation:
    """Parse a Pascal VOC XML file of tree crowns, checking names and coordinates."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise TreeCrownsError(f"{xml_path}: cannot read VOC XML: {exc}") from exc

    def number(node: ET.Element | None, what: str) -> float:
        if node is None or node.text is None:
            raise TreeCrownsError(f"{xml_path}: {what}: missing")
        try:
            return float(node.text)
        except ValueError:
            raise TreeCrownsError(f"{xml_path}: {what}: not a number: {node.text!r}") from None

    width = int(number(root.find("size/width"), "size/width"))
    height = int(number(root.find("size/height"), "size/height"))
    boxes = []
    for index, obj in enumerate(root.iter("object")):
        name_node = obj.find("name")
        name = None if name_node is None else (name_node.text or "").strip()
        if name not in VOC_NAMES_TO_TREE:
            raise TreeCrownsError(
                f"{xml_path}: object #{index}: name {name!r} is not one of {sorted(VOC_NAMES_TO_TREE)} "
                f"(all map to the single category 'tree'; any other name is unexpected)"
            )
        coords = [
            number(obj.find(f"bndbox/{key}"), f"object #{index} {key}")
            for key in ("xmin", "ymin", "xmax", "ymax")
        ]
        x1, y1, x2, y2 = coords
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise TreeCrownsError(
                f"{xml_path}: object #{index}: box {coords} is empty or outside the {width}x{height} image"
            )
        boxes.append(coords)
    return VocAnnotation(xml_path, width, height, np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


# --------------------------------------------------------------------------------------------- tiling rule


def tile_origins(length: int, tile_size: int, stride: int) -> list[int]:
    """Tile start offsets along one axis: ``0, stride, ...`` plus a last one aligned to the border.

    Covers ``[0, length)`` completely. ``length <= tile_size`` gives ``[0]`` (one tile, the whole axis).
    """
    if tile_size <= 0 or stride <= 0:
        raise ValueError(f"tile_size and stride must be positive, got {tile_size}, {stride}")
    if stride > tile_size:
        raise ValueError(f"stride {stride} > tile_size {tile_size} would leave gaps between tiles")
    if length <= tile_size:
        return [0]
    last = length - tile_size
    origins = list(range(0, last + 1, stride))
    if origins[-1] != last:
        origins.append(last)
    return origins


@dataclass(frozen=True)
class TileBoxes:
    """Result of :func:`boxes_in_tile`.

    ``boxes``: ``(K, 4)`` kept boxes, xyxy, clipped and relative to the tile origin; ``source_index``:
    ``(K,)`` index of each kept box in the input; ``num_clipped``: kept boxes cut by the tile border;
    ``num_dropped``: boxes intersecting the tile with less than ``min_visible`` of their area inside.
    """

    boxes: np.ndarray
    source_index: np.ndarray
    num_clipped: int
    num_dropped: int


def boxes_in_tile(boxes_xyxy: np.ndarray, tile_xyxy: Sequence[float], min_visible: float) -> TileBoxes:
    """Apply the box rule to one tile: clip, keep when ``>= min_visible`` of the original area is inside."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    tx1, ty1, tx2, ty2 = (float(v) for v in tile_xyxy)
    clipped = np.stack(
        [
            np.clip(boxes[:, 0], tx1, tx2),
            np.clip(boxes[:, 1], ty1, ty2),
            np.clip(boxes[:, 2], tx1, tx2),
            np.clip(boxes[:, 3], ty1, ty2),
        ],
        axis=1,
    )
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    intersects = visible > 0
    # The relative epsilon only absorbs float rounding; with integer VOC coordinates the test is exact.
    keep = intersects & (visible >= min_visible * area * (1.0 - 1e-12))
    was_clipped = keep & (visible < area)
    kept = clipped[keep] - np.array([tx1, ty1, tx1, ty1])
    return TileBoxes(
        boxes=kept,
        source_index=np.flatnonzero(keep),
        num_clipped=int(was_clipped.sum()),
        num_dropped=int((intersects & ~keep).sum()),
    )
