"""A tiny synthetic COCO-format detection set for tests (same layout as the tree-crown build).

Images are dark uniform noise with a few bright axis-aligned rectangles; each rectangle is one box, so a
detector can actually learn something in a few steps. Layout::

    out_dir/images/{train,val}/*.png
    out_dir/annotations/instances_{train,val}.json
    out_dir/manifest.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Dark background and bright, class-specific rectangle colours: easy to separate, like the crowns vs ground.
_BACKGROUND_MAX = 80
_CLASS_COLOURS = ((230, 230, 230), (240, 60, 60), (60, 240, 60), (60, 60, 240))


def _place_boxes(rng: np.random.Generator, size: int, count: int) -> list[tuple[int, int, int, int]]:
    """Random integer xyxy boxes with sides in [size/8, size/3], overlapping each other little."""
    min_side, max_side = max(4, size // 8), max(5, size // 3)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(count * 50):
        if len(boxes) == count:
            break
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        x = int(rng.integers(0, size - w + 1))
        y = int(rng.integers(0, size - h + 1))
        candidate = (x, y, x + w, y + h)
        # Keep rectangles nearly disjoint so each one is a distinct, fully visible object.
        if all(
            min(candidate[2], b[2]) - max(candidate[0], b[0]) <= 0
            or min(candidate[3], b[3]) - max(candidate[1], b[1]) <= 0
            for b in boxes
        ):
            boxes.append(candidate)
    return boxes


def make_synthetic_coco(
    out_dir: str | os.PathLike[str],
    num_train: int = 4,
    num_val: int = 2,
    size: int = 128,
    boxes_per_image: int = 3,
    seed: int = 0,
    num_classes: int = 1,
) -> Path:
    """Write the synthetic set to ``out_dir`` (deterministic for a given ``seed``) and return ``out_dir``.

    ``num_classes`` categories get COCO ids ``1..num_classes`` and names ``class_<i>``; rectangle colours
    depend on the class (up to 4 distinct colours).
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if num_classes < 1 or num_train < 0 or num_val < 0 or boxes_per_image < 0:
        raise ValueError("num_classes must be >= 1 and the counts >= 0")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    categories = [{"id": index + 1, "name": f"class_{index}"} for index in range(num_classes)]
    counts: dict[str, dict[str, int]] = {}
    for split, num_images in (("train", num_train), ("val", num_val)):
        image_dir = out_dir / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_index in range(num_images):
            pixels = rng.integers(0, _BACKGROUND_MAX, size=(size, size, 3), dtype=np.uint8)
            image_id = image_index + 1
            for x1, y1, x2, y2 in _place_boxes(rng, size, boxes_per_image):
                category_index = int(rng.integers(0, num_classes))
                colour = np.array(_CLASS_COLOURS[category_index % len(_CLASS_COLOURS)], dtype=np.int16)
                jitter = rng.integers(-15, 16, size=(y2 - y1, x2 - x1, 3))
                pixels[y1:y2, x1:x2] = np.clip(colour + jitter, 0, 255).astype(np.uint8)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": categories[category_index]["id"],
                        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                        "area": float((x2 - x1) * (y2 - y1)),
                        "iscrowd": 0,
                    }
                )
            file_name = f"{split}_{image_id:04d}.png"
            Image.fromarray(pixels).save(image_dir / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
        document = {
            "info": {"description": f"ghmdet synthetic rectangles ({split}, seed {seed})"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (out_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
        counts[split] = {"images": len(images), "boxes": len(annotations)}
    manifest = {
        "builder": "ghmdet.data.synthetic",
        "parameters": {
            "num_train": num_train,
            "num_val": num_val,
            "size": size,
            "boxes_per_image": boxes_per_image,
            "seed": seed,
            "num_classes": num_classes,
        },
        "counts": counts,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir
