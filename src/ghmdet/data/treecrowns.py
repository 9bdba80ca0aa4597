"""Embedded default data: NEON tree crowns from the ``deepforest==2.1.0`` wheel as tiles + COCO JSON.

Source
    The wheel ships four annotated RGB aerial crops (Pascal VOC XML) in its package folder ``data/``.
    The folder is located with ``importlib.util.find_spec`` *without importing deepforest* (its import pulls
    heavy dependencies); install the files with ``pip install --no-deps deepforest==2.1.0``. The PNGs are
    used; ``OSBS_029.tif`` (a duplicate of ``OSBS_029.png``, named in its XML) is ignored.

Split (by source image, so no image contributes tiles to both sides)
    train: ``2019_YELL_2_528000_4978000_image_crop2.png`` + ``SOAP_061.png``
    val:   ``2019_YELL_2_541000_4977000_image_crop.png`` + ``OSBS_029.png`` (OSBS is a different site).

Tiling
    Tiles are ``tile_size`` squares. Along each axis the tile origins are ``0, stride, 2*stride, ...`` and one
    last origin ``length - tile_size`` aligned to the image border, so the whole image is covered
    (:func:`~ghmdet.data.treecrown_sources.tile_origins`). Train uses ``train_stride`` (default 200:
    overlapping tiles); val uses ``val_stride`` (default ``tile_size``: a grid covering the image once,
    except that the last row/column is shifted back to end at the border and so overlaps its neighbour).
    An image no larger than the tile along an axis gives one tile of the image's own length along that axis.

Box rule (:func:`~ghmdet.data.treecrown_sources.boxes_in_tile`)
    A box that intersects a tile is clipped to the tile and kept when at least ``min_visible`` (default 50%)
    of its original area lies inside the tile; otherwise it is dropped from that tile. Every drop is counted
    per split in ``manifest.json`` (``boxes_dropped_visibility``, a count of box-tile pairs), as are kept
    boxes that were clipped (``boxes_clipped``) and source boxes kept in no tile at all
    (``source_boxes_lost``).

Coordinates
    VOC ``xmin, ymin, xmax, ymax`` are used as given and read as 0-based continuous pixel *edges* (so a
    box spans ``xmax - xmin`` pixels; no ±1 shift). The COCO ``bbox`` is ``[x, y, w, h]`` in floats,
    relative to the tile. All VOC names ``Tree``, ``Alive``, ``Dead`` map to the single category
    ``{"id": 1, "name": "tree"}``; any other name is an error naming the file and the object.

Safety
    The build goes into a temporary sibling directory that is renamed into place at the end, so an
    interrupted build never leaves a half-written dataset. A complete build with the same parameters is
    detected through its manifest and left untouched (idempotent). An existing directory holding anything
    else (another build, other files) is never replaced unless ``overwrite=True``.

CLI: ``python -m ghmdet.data.treecrowns --out data/treecrowns [--tile-size 400 --train-stride 200 ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ghmdet.data.atomic_build import (
    MANIFEST_NAME,
    build_dir_for,
    is_complete_build,
    move_into_place,
    read_manifest,
    refuse_foreign,
    sha256_file,
)
from ghmdet.data.treecrown_sources import (
    DEEPFOREST_REQUIREMENT,
    TreeCrownsError,
    _deepforest_version,
    boxes_in_tile,
    deepforest_data_dir,
    read_voc,
    tile_origins,
)

TRAIN_SOURCES = ("2019_YELL_2_528000_4978000_image_crop2.png", "SOAP_061.png")
VAL_SOURCES = ("2019_YELL_2_541000_4977000_image_crop.png", "OSBS_029.png")
TREE_CATEGORY = {"id": 1, "name": "tree"}
MANIFEST_FORMAT = 1
SPLITS = ("train", "val")


# --------------------------------------------------------------------------------------------- build


def _parameters(
    tile_size: int, train_stride: int, val_stride: int, min_visible: float, sources: dict[str, Sequence[str]]
) -> dict[str, Any]:
    return {
        "tile_size": tile_size,
        "train_stride": train_stride,
        "val_stride": val_stride,
        "min_visible": min_visible,
        "splits": {split: list(files) for split, files in sources.items()},
        "coordinates": "VOC xmin,ymin,xmax,ymax used as given, read as 0-based pixel edges",
        "format": MANIFEST_FORMAT,
    }


def _is_complete_build(out_dir: Path, parameters: dict[str, Any]) -> bool:
    return is_complete_build(out_dir, parameters, SPLITS, "tiles")


def _build_into(
    build_dir: Path,
    source_dir: Path,
    sources: dict[str, Sequence[str]],
    strides: dict[str, int],
    tile_size: int,
    min_visible: float,
    parameters: dict[str, Any],
) -> dict[str, Any]:
    source_records = []
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        image_dir = build_dir / "images" / split
        image_dir.mkdir(parents=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        split_counts = dict.fromkeys(
            ("source_images", "source_boxes", "tiles", "boxes_kept", "boxes_clipped"), 0
        ) | {"boxes_dropped_visibility": 0, "source_boxes_lost": 0, "tiles_without_boxes": 0}
        for file_name in sources[split]:
            png_path = source_dir / file_name
            xml_path = png_path.with_suffix(".xml")
            for path in (png_path, xml_path):
                if not path.is_file():
                    raise TreeCrownsError(
                        f"source file missing: {path} (expected in {DEEPFOREST_REQUIREMENT})"
                    )
            voc = read_voc(xml_path)
            with Image.open(png_path) as opened:
                image = opened.convert("RGB")
            if image.size != (voc.width, voc.height):
                raise TreeCrownsError(
                    f"{png_path}: image is {image.size[0]}x{image.size[1]} but {xml_path.name} says "
                    f"{voc.width}x{voc.height}"
                )
            kept_anywhere = np.zeros(len(voc.boxes), dtype=bool)
            stride = strides[split]
            stem = png_path.stem
            for y0 in tile_origins(voc.height, tile_size, stride):
                for x0 in tile_origins(voc.width, tile_size, stride):
                    x1, y1 = min(x0 + tile_size, voc.width), min(y0 + tile_size, voc.height)
                    result = boxes_in_tile(voc.boxes, (x0, y0, x1, y1), min_visible)
                    kept_anywhere[result.source_index] = True
                    image_id = len(images) + 1
                    tile_name = f"{stem}_x{x0:04d}_y{y0:04d}.png"
                    image.crop((x0, y0, x1, y1)).save(image_dir / tile_name)
                    images.append(
                        {
                            "id": image_id,
                            "file_name": tile_name,
                            "width": x1 - x0,
                            "height": y1 - y0,
                            "source_file": file_name,
                            "tile_x": x0,
                            "tile_y": y0,
                        }
                    )
                    for bx1, by1, bx2, by2 in result.boxes.tolist():
                        w, h = bx2 - bx1, by2 - by1
                        annotations.append(
                            {
                                "id": len(annotations) + 1,
                                "image_id": image_id,
                                "category_id": TREE_CATEGORY["id"],
                                "bbox": [bx1, by1, w, h],
                                "area": w * h,
                                "iscrowd": 0,
                            }
                        )
                    split_counts["tiles"] += 1
                    split_counts["boxes_kept"] += len(result.boxes)
                    split_counts["boxes_clipped"] += result.num_clipped
                    split_counts["boxes_dropped_visibility"] += result.num_dropped
                    split_counts["tiles_without_boxes"] += int(len(result.boxes) == 0)
            split_counts["source_images"] += 1
            split_counts["source_boxes"] += len(voc.boxes)
            split_counts["source_boxes_lost"] += int((~kept_anywhere).sum())
            source_records.append(
                {
                    "split": split,
                    "image": file_name,
                    "image_sha256": sha256_file(png_path),
                    "annotation": xml_path.name,
                    "annotation_sha256": sha256_file(xml_path),
                    "width": voc.width,
                    "height": voc.height,
                    "boxes": len(voc.boxes),
                }
            )
        coco = {
            "info": {
                "description": f"NEON tree crowns from {DEEPFOREST_REQUIREMENT} (MIT), {split} tiles",
                "version": str(MANIFEST_FORMAT),
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [dict(TREE_CATEGORY)],
        }
        (build_dir / "annotations").mkdir(exist_ok=True)
        (build_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        counts[split] = split_counts
    manifest = {
        "builder": "ghmdet.data.treecrowns",
        "source_package": {"requirement": DEEPFOREST_REQUIREMENT, "installed_version": _deepforest_version()},
        "source_dir": str(source_dir),
        "parameters": parameters,
        "sources": source_records,
        "counts": counts,
        "box_rule": (
            f"a box cut by a tile border is clipped to the tile and kept only when >= {min_visible} of its "
            "original area lies inside the tile; boxes_dropped_visibility counts dropped box-tile pairs"
        ),
    }
    # Written last: its presence (with matching parameters) is what marks a build as complete.
    (build_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_treecrowns(
    out_dir: str | os.PathLike[str],
    tile_size: int = 400,
    train_stride: int = 200,
    min_visible: float = 0.5,
    val_stride: int | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the deepforest tree crowns to ``out_dir/{images/{train,val},annotations,manifest.json}``.

    Args:
        out_dir: destination; created atomically (built in a temporary sibling, then renamed).
        tile_size: side of the square tiles in pixels.
        train_stride: tile step for the train split (``< tile_size`` gives overlapping tiles).
        min_visible: fraction of a box's area that must lie inside a tile for the (clipped) box to be kept.
        val_stride: tile step for the val split; ``None`` means ``tile_size`` (a grid covering each image
            once).
        source_dir: folder with the PNG/XML pairs; ``None`` means the installed deepforest wheel's ``data/``.
        overwrite: replace an existing ``out_dir`` that holds anything other than this exact build.

    Returns:
        ``out_dir`` as a resolved ``Path``. Nothing is rewritten when it already holds a complete build with
        the same parameters.
    """
    val_stride = tile_size if val_stride is None else val_stride
    for name, value in (("tile_size", tile_size), ("train_stride", train_stride), ("val_stride", val_stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, stride in (("train_stride", train_stride), ("val_stride", val_stride)):
        if stride > tile_size:
            raise ValueError(
                f"{name}={stride} > tile_size={tile_size} would leave parts of the images untiled"
            )
    if not 0.0 < float(min_visible) <= 1.0:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible!r}")

    out_dir = Path(out_dir).resolve()
    sources = {"train": TRAIN_SOURCES, "val": VAL_SOURCES}
    parameters = _parameters(tile_size, train_stride, val_stride, float(min_visible), sources)
    if _is_complete_build(out_dir, parameters) and not overwrite:
        return out_dir
    if not overwrite:
        refuse_foreign(out_dir, parameters, "tree-crown", TreeCrownsError)
    source_path = deepforest_data_dir() if source_dir is None else Path(source_dir)

    with build_dir_for(out_dir) as build_dir:
        strides = {"train": train_stride, "val": val_stride}
        _build_into(build_dir, source_path, sources, strides, tile_size, float(min_visible), parameters)
        move_into_place(build_dir, out_dir, lambda path: _is_complete_build(path, parameters))
    return out_dir


def format_counts(manifest: dict[str, Any]) -> str:
    """Render the per-split counts of a manifest as a small Markdown table."""
    keys = [
        "source_images",
        "source_boxes",
        "tiles",
        "tiles_without_boxes",
        "boxes_kept",
        "boxes_clipped",
        "boxes_dropped_visibility",
        "source_boxes_lost",
    ]
    lines = ["| split | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for split in SPLITS:
        row = manifest["counts"][split]
        lines.append(f"| {split} | " + " | ".join(str(row[key]) for key in keys) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: build (or find) the tile dataset and print its counts."""
    parser = argparse.ArgumentParser(
        prog="python -m ghmdet.data.treecrowns", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. data/treecrowns")
    parser.add_argument("--tile-size", type=int, default=400)
    parser.add_argument("--train-stride", type=int, default=200)
    parser.add_argument("--val-stride", type=int, default=None, help="default: the tile size")
    parser.add_argument("--min-visible", type=float, default=0.5)
    parser.add_argument("--source-dir", type=Path, default=None, help="default: the deepforest wheel's data/")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing different --out")
    args = parser.parse_args(argv)
    try:
        out_dir = build_treecrowns(
            args.out,
            tile_size=args.tile_size,
            train_stride=args.train_stride,
            min_visible=args.min_visible,
            val_stride=args.val_stride,
            source_dir=args.source_dir,
            overwrite=args.overwrite,
        )
    except (TreeCrownsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = read_manifest(out_dir)
    assert manifest is not None
    print(f"tree-crown COCO dataset at {out_dir}")
    print(format_counts(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
