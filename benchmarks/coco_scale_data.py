"""A synthetic COCO-2017-shaped train set for the scale benchmark, built once, atomically, from a seed.

No COCO copy can be downloaded on the development machine, so the benchmark simulates ``train2017`` at its
size and shape. The distributions follow COCO's published statistics (Lin et al., "Microsoft COCO: Common
Objects in Context", ECCV 2014, Sec. 5 and Fig. 5; the 2017 split's figures as pycocotools reports them for
``instances_train2017.json``); where a published figure gives only a summary, the assumption is stated:

- **images**: 118,287 (x ``scale``), ids drawn without replacement from 1..581,929 (COCO's id range),
  ``file_name`` ``%012d.jpg``. Sizes: the longer side is 640 px for nearly all images (Flickr's "z" size
  COCO was collected at); 95 % are 640 on the long side, 5 % smaller (uniform 300..639). Orientation: 73 %
  landscape, 23 % portrait, 4 % square. Aspect of the short side (assumption, after the common camera
  ratios): 4:3 (480) 55 %, 3:2 (427) 30 %, 16:9 (360) 5 %, uniform 0.5..1 of the long side 10 %.
- **boxes**: 860,001 (x ``scale``), 7.27 per image on average, at most 93 on one image (``train2017``'s
  maximum); 1,021 of 118,287 images (0.86 %) have none. Per-image counts of the others: a negative binomial
  with mean ~7.3 and a long tail (Fig. 5: most images have few instances, few have dozens), then adjusted
  to hit the exact total.
- **box sizes**: COCO's area classes (Sec. 5): 41 % small (area < 32^2), 34 % medium, 24 % large
  (> 96^2). Assumption: sqrt(area) log-normal per class within its bounds; aspect ratio w/h log-normal with
  median 1 and sigma 0.6; boxes lie inside the image, coordinates rounded to 2 decimals as in the file.
- **categories**: COCO's 80 category ids 1..90 with its 10 gaps (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
  and names; frequency: "person" 30.5 % of instances (262,465 of 860,001), the others Zipf-like (s = 1).
- **crowd**: 0.9 % of annotations ``iscrowd=1`` with an uncompressed RLE ``segmentation``
  (``{"counts": [...], "size": [h, w]}``), as COCO's crowd regions are stored; the others hold one polygon
  (a jittered ellipse inside the box) with 10..48 vertices by box size (assumption sized so that the file
  is COCO's ~450 MB at full scale), coordinates with 2 decimals.
- **the two zero-height boxes** of ``train2017`` (cocoapi issue #355): two annotations with ``h = 0``,
  so loading needs ``box_policy="repair"`` exactly as on the real file.

Image files: ``train2017/`` holds one file per image. The first ``real_images`` are distinct JPEG files
(smooth random content at their record's size, quality 90: what the loader-throughput part decodes); the
others are hard links to one prototype JPEG per distinct size (their headers are real, so the start-up
header check reads 118k files, without 118k x 160 kB of disk).

The build is cached under ``<data dir>/coco_scale/<key>/`` (``key`` from scale, seed and ``real_images``)
and published with :mod:`ghmdet.data.atomic_build`'s protocol: built in a temporary sibling, renamed into
place, ``manifest.json`` written last; a complete build is reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ghmdet.data.atomic_build import MANIFEST_NAME, build_dir_for, move_into_place, read_manifest

COCO_TRAIN_IMAGES = 118_287
COCO_TRAIN_BOXES = 860_001
COCO_EMPTY_IMAGES = 1_021
COCO_MAX_BOXES_PER_IMAGE = 93
COCO_MAX_IMAGE_ID = 581_929
#: train2017's crowd share of annotations (assumption: ~0.9 %)
CROWD_FRACTION = 0.009
#: COCO's small / medium / large share of instances (Lin et al. 2014, Sec. 5)
AREA_CLASSES = ((0.41, 4.0, 32.0), (0.34, 32.0, 96.0), (0.25, 96.0, 640.0))
PERSON_FRACTION = 262_465 / 860_001
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"),
    (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
    (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"),
    (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"),
    (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"),
    (90, "toothbrush"),
)  # fmt: skip
_CHUNK = 20_000  # annotations serialised per write: bounds the generator's memory at full scale
FORMAT_VERSION = 1


def scaled_counts(scale: float) -> tuple[int, int, int]:
    """``(images, boxes, images without boxes)`` of COCO train2017 times ``scale`` (at least 10 images)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    images = max(10, round(COCO_TRAIN_IMAGES * scale))
    boxes = max(images, round(COCO_TRAIN_BOXES * scale))
    empty = max(1, round(COCO_EMPTY_IMAGES * images / COCO_TRAIN_IMAGES))
    return images, boxes, empty


def _image_sizes(rng: np.random.Generator, count: int) -> np.ndarray:
    """``(count, 2)`` int ``[width, height]`` after COCO's size distribution (module docstring)."""
    long_side = np.where(rng.random(count) < 0.95, 640, rng.integers(300, 640, count))
    ratio = rng.choice([0.75, 427 / 640, 0.5625, -1.0], size=count, p=[0.55, 0.30, 0.05, 0.10])
    ratio = np.where(ratio < 0, rng.uniform(0.5, 1.0, count), ratio)
    short_side = np.maximum(1, np.round(long_side * ratio)).astype(np.int64)
    orientation = rng.choice(3, size=count, p=[0.73, 0.23, 0.04])  # landscape, portrait, square
    short_side = np.where(orientation == 2, long_side, short_side)
    width = np.where(orientation == 1, short_side, long_side)
    height = np.where(orientation == 1, long_side, short_side)
    return np.stack([width, height], axis=1).astype(np.int64)


def _boxes_per_image(rng: np.random.Generator, images: int, boxes: int, empty: int) -> np.ndarray:
    """Per-image box counts: ``empty`` zeros, the rest >= 1 and <= 93, summing to exactly ``boxes``."""
    counts = np.zeros(images, dtype=np.int64)
    annotated = rng.permutation(images)[empty:]
    mean = boxes / len(annotated)
    # Negative binomial with dispersion 1.2 (variance ~ mean^2 / 1.2): many images with few boxes, a tail.
    draws = 1 + rng.negative_binomial(1.2, 1.2 / (1.2 + mean - 1), size=len(annotated))
    draws = np.minimum(draws, COCO_MAX_BOXES_PER_IMAGE)
    while (excess := int(draws.sum()) - boxes) != 0:
        step = 1 if excess < 0 else -1
        candidates = np.flatnonzero(draws < COCO_MAX_BOXES_PER_IMAGE if step > 0 else draws > 1)
        chosen = rng.choice(candidates, size=min(abs(excess), len(candidates)), replace=False)
        draws[chosen] += step
    counts[annotated] = draws
    return counts


def _boxes(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` float ``[x, y, w, h]`` inside images of ``sizes`` with COCO's area classes."""
    count = len(sizes)
    shares = [share for share, _, _ in AREA_CLASSES]
    size_class = rng.choice(len(AREA_CLASSES), size=count, p=np.asarray(shares) / sum(shares))
    low = np.asarray([lo for _, lo, _ in AREA_CLASSES])[size_class]
    high = np.asarray([hi for _, _, hi in AREA_CLASSES])[size_class]
    root_area = np.exp(rng.uniform(np.log(low), np.log(high)))
    aspect = np.exp(rng.normal(0.0, 0.6, count))
    width = np.clip(root_area * np.sqrt(aspect), 1.0, sizes[:, 0] - 0.01)
    height = np.clip(root_area / np.sqrt(aspect), 1.0, sizes[:, 1] - 0.01)
    x = rng.uniform(0, 1, count) * (sizes[:, 0] - width)
    y = rng.uniform(0, 1, count) * (sizes[:, 1] - height)
    return np.floor(np.stack([x, y, width, height], axis=1) * 100) / 100


def _polygon(rng: np.random.Generator, box: np.ndarray) -> list[list[float]]:
    x, y, w, h = box.tolist()
    vertices = int(np.clip(10 + np.sqrt(w * h) / 4, 10, 48))
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radius = rng.uniform(0.8, 1.0, vertices)
    xs = x + w / 2 * (1 + radius * np.cos(angles))
    ys = y + h / 2 * (1 + radius * np.sin(angles))
    return [np.round(np.stack([xs, ys], axis=1).reshape(-1), 2).tolist()]


def _crowd_rle(rng: np.random.Generator, box: np.ndarray, width: int, height: int) -> dict[str, Any]:
    """An uncompressed RLE (column-major runs, as COCO stores crowd regions) of the box's pixels."""
    x, y, w, h = (int(v) for v in box.tolist())
    w, h = max(w, 1), max(h, 1)
    counts = [x * height + y]
    for column in range(w):
        inside = max(1, h - int(rng.integers(0, max(1, h // 4))))
        counts += [inside, height - inside]
        if column == w - 1:
            counts[-1] = height * width - sum(counts[:-1])
    return {"counts": counts, "size": [height, width]}


def _annotation_json(
    rng: np.random.Generator,
    ids: np.ndarray,
    image_ids: np.ndarray,
    category_ids: np.ndarray,
    boxes: np.ndarray,
    crowd: np.ndarray,
    sizes: np.ndarray,
) -> str:
    parts = []
    for index in range(len(ids)):
        box = boxes[index]
        if crowd[index]:
            segmentation: Any = _crowd_rle(rng, box, int(sizes[index, 0]), int(sizes[index, 1]))
        else:
            segmentation = _polygon(rng, box)
        record = {
            "segmentation": segmentation,
            "area": round(float(box[2] * box[3]) * float(rng.uniform(0.55, 0.8)), 5),
            "iscrowd": int(crowd[index]),
            "image_id": int(image_ids[index]),
            "bbox": box.tolist(),
            "category_id": int(category_ids[index]),
            "id": int(ids[index]),
        }
        parts.append(json.dumps(record, separators=(",", ":")))
    return ",".join(parts)


def _category_probabilities() -> np.ndarray:
    zipf = 1.0 / np.arange(1, len(COCO_CATEGORIES))
    return np.concatenate([[PERSON_FRACTION], zipf / zipf.sum() * (1 - PERSON_FRACTION)])


def file_name(image_id: int) -> str:
    """COCO's file name of an image id."""
    return f"{image_id:012d}.jpg"


def _draw_image_table(rng: np.random.Generator, images: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ids (sorted) and ``[width, height]``: the first draws of a build's generator."""
    image_ids = np.sort(rng.choice(COCO_MAX_IMAGE_ID, size=images, replace=False) + 1)
    return image_ids, _image_sizes(rng, images)


def image_table(scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The image ids and sizes :func:`write_annotations` writes, without reading its (large) file back."""
    return _draw_image_table(np.random.default_rng(seed), scaled_counts(scale)[0])


def write_annotations(path: Path, scale: float, seed: int) -> dict[str, int]:
    """Write the synthetic ``instances_train2017.json`` at ``scale`` to ``path``; returns its counts."""
    rng = np.random.default_rng(seed)
    images, boxes, empty = scaled_counts(scale)
    image_ids, sizes = _draw_image_table(rng, images)
    per_image = _boxes_per_image(rng, images, boxes, empty)
    owner = np.repeat(np.arange(images), per_image)
    box_sizes = sizes[owner]
    xywh = _boxes(rng, box_sizes.astype(np.float64))
    zero_height = rng.choice(boxes, size=2, replace=False)
    xywh[zero_height, 3] = 0.0
    ids = np.sort(rng.choice(2_300_000, size=boxes, replace=False) + 1)
    category_ids = np.asarray([c for c, _ in COCO_CATEGORIES])[
        rng.choice(len(COCO_CATEGORIES), size=boxes, p=_category_probabilities())
    ]
    crowd = rng.random(boxes) < CROWD_FRACTION
    crowd[zero_height] = False
    order = rng.permutation(boxes)  # COCO's file is not grouped by image
    with path.open("w", encoding="utf-8") as handle:
        info = {"description": f"synthetic COCO-2017-shaped train set, scale {scale}, seed {seed}"}
        handle.write(f'{{"info":{json.dumps(info)},"licenses":[],"images":[')
        handle.write(
            ",".join(
                json.dumps(
                    {
                        "license": 1,
                        "file_name": file_name(image_id),
                        "height": int(height),
                        "width": int(width),
                        "id": int(image_id),
                    },
                    separators=(",", ":"),
                )
                for image_id, (width, height) in zip(image_ids.tolist(), sizes.tolist(), strict=True)
            )
        )
        handle.write('],"annotations":[')
        for start in range(0, boxes, _CHUNK):
            chunk = order[start : start + _CHUNK]
            if start:
                handle.write(",")
            handle.write(
                _annotation_json(
                    rng,
                    ids[chunk],
                    image_ids[owner[chunk]],
                    category_ids[chunk],
                    xywh[chunk],
                    crowd[chunk],
                    box_sizes[chunk],
                )
            )
        categories = [{"supercategory": "object", "id": i, "name": n} for i, n in COCO_CATEGORIES]
        handle.write(f'],"categories":{json.dumps(categories, separators=(",", ":"))}}}')
    return {"images": images, "boxes": boxes, "empty_images": empty, "crowd": int(crowd.sum())}


def _smooth_pixels(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random RGB content (upsampled coarse noise): JPEG sizes close to natural photos'."""
    coarse = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    detail = rng.integers(-12, 13, size=(height, width, 3))
    return np.clip(np.asarray(image, dtype=np.int16) + detail, 0, 255).astype(np.uint8)


def write_images(image_dir: Path, scale: float, seed: int, real_images: int) -> None:
    """One JPEG per image record: the first ``real_images`` distinct, the others hard links per size."""
    image_dir.mkdir(parents=True)
    prototypes = image_dir.parent / "prototypes"
    prototypes.mkdir()
    rng = np.random.default_rng(seed + 1)
    image_ids, sizes = image_table(scale, seed)
    for index, (image_id, (width, height)) in enumerate(zip(image_ids.tolist(), sizes.tolist(), strict=True)):
        target = image_dir / file_name(image_id)
        if index < real_images:
            Image.fromarray(_smooth_pixels(rng, width, height)).save(target, quality=90)
            continue
        prototype = prototypes / f"{width}x{height}.jpg"
        if not prototype.exists():
            Image.new("RGB", (width, height), (124, 116, 104)).save(prototype, quality=90)
        os.link(prototype, target)


def build_parameters(scale: float, seed: int, real_images: int) -> dict[str, Any]:
    """What identifies a build (its manifest's ``parameters``)."""
    return {"format": FORMAT_VERSION, "scale": scale, "seed": seed, "real_images": real_images}


def ensure_coco_scale_set(data_dir: Path, scale: float, seed: int = 0, real_images: int = 3000) -> Path:
    """The build for ``(scale, seed, real_images)`` under ``data_dir/coco_scale/``, built when missing.

    Returns the build's root: ``annotations/instances_train2017.json``, ``train2017/``.
    """
    parameters = build_parameters(scale, seed, real_images)
    out_dir = data_dir / "coco_scale" / f"scale{scale:g}-seed{seed}-real{real_images}"

    def complete(path: Path) -> bool:
        manifest = read_manifest(path)
        return manifest is not None and manifest.get("parameters") == parameters

    if complete(out_dir):
        return out_dir
    with build_dir_for(out_dir) as build_dir:
        (build_dir / "annotations").mkdir()
        ann_file = build_dir / "annotations" / "instances_train2017.json"
        counts = write_annotations(ann_file, scale, seed)
        write_images(build_dir / "train2017", scale, seed, min(real_images, counts["images"]))
        manifest = {"parameters": parameters, "counts": counts, "bytes": ann_file.stat().st_size}
        (build_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        move_into_place(build_dir, out_dir, complete)
    return out_dir


COCO_VAL_IMAGES = 5_000
COCO_VAL_BOXES = 36_781
COCO_VAL_EMPTY_IMAGES = 48


def val_ground_truth(scale: float, seed: int) -> dict[str, Any]:
    """A val2017-shaped ground truth (5,000 images, 36,781 boxes, 48 without any; x ``scale``, at least 20
    images) as a COCO dict, with the train set's size, box and category distributions and ``area`` = box
    area (what the suite's metric uses)."""
    rng = np.random.default_rng(seed + 2)
    images = max(20, round(COCO_VAL_IMAGES * scale))
    boxes = max(images, round(COCO_VAL_BOXES * images / COCO_VAL_IMAGES))
    empty = max(1, round(COCO_VAL_EMPTY_IMAGES * images / COCO_VAL_IMAGES))
    sizes = _image_sizes(rng, images)
    owner = np.repeat(np.arange(images), _boxes_per_image(rng, images, boxes, empty))
    xywh = _boxes(rng, sizes[owner].astype(np.float64))
    category_ids = np.asarray([c for c, _ in COCO_CATEGORIES])[
        rng.choice(len(COCO_CATEGORIES), size=boxes, p=_category_probabilities())
    ]
    crowd = rng.random(boxes) < CROWD_FRACTION
    return {
        "images": [
            {"id": index + 1, "file_name": file_name(index + 1), "width": int(w), "height": int(h)}
            for index, (w, h) in enumerate(sizes.tolist())
        ],
        "annotations": [
            {
                "id": index + 1,
                "image_id": int(owner[index]) + 1,
                "category_id": int(category_ids[index]),
                "bbox": xywh[index].tolist(),
                "area": float(xywh[index, 2] * xywh[index, 3]),
                "iscrowd": int(crowd[index]),
            }
            for index in range(boxes)
        ],
        "categories": [{"id": i, "name": n} for i, n in COCO_CATEGORIES],
    }


def detections_for(ground_truth: dict[str, Any], per_image: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``per_image`` detections per image (xyxy boxes, scores, contiguous labels): a jittered copy of each
    ground-truth box with its label, the rest random boxes and labels; scores uniform."""
    rng = np.random.default_rng(seed + 3)
    label_of = {category_id: label for label, (category_id, _) in enumerate(COCO_CATEGORIES)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in ground_truth["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    result = []
    for image in ground_truth["images"]:
        width, height = image["width"], image["height"]
        truth = by_image.get(image["id"], [])[:per_image]
        xywh = np.asarray([a["bbox"] for a in truth], dtype=np.float64).reshape(-1, 4)
        xywh = xywh * rng.normal(1.0, 0.05, xywh.shape)
        labels = [label_of[a["category_id"]] for a in truth]
        extra = per_image - len(truth)
        random_wh = rng.uniform(4, 200, (extra, 2))
        random_xy = rng.uniform(0, 1, (extra, 2)) * np.maximum(np.asarray([width, height]) - random_wh, 1)
        xywh = np.concatenate([xywh, np.concatenate([random_xy, random_wh], axis=1)])
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + np.abs(xywh[:, 2:])], axis=1)
        xyxy = np.clip(xyxy, 0, [width, height, width, height])
        labels = np.asarray(labels + rng.integers(0, len(COCO_CATEGORIES), extra).tolist(), dtype=np.int64)
        result.append(
            {
                "boxes": xyxy.astype(np.float32),
                "scores": rng.random(per_image).astype(np.float32),
                "labels": labels,
            }
        )
    return result
