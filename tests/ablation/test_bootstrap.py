"""The paired bootstrap: its AP is COCOeval's (identity draw, a draw with repeated images), and its interval
behaves on rows with a known answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ghmdet.ablation.bootstrap import (
    METRIC_IOUS,
    BootstrapError,
    draw_counts,
    identity_counts,
    load_ground_truth,
    match,
    paired_intervals,
    read_results,
    replicate_ap,
)
from tests.ablation.coco_fixtures import CATEGORIES, cocoeval_ap, detection_fixture


def _write(tmp_path: Path, name: str, payload: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def test_identity_draw_gives_cocoevals_ap(tmp_path: Path) -> None:
    gt_dict, dets = detection_fixture()
    gt = load_ground_truth(_write(tmp_path, "gt.json", gt_dict))
    run = match(gt, read_results(_write(tmp_path, "dets.json", dets)))
    ours = replicate_ap(run, identity_counts(gt.n_images), list(METRIC_IOUS))
    expected = cocoeval_ap(gt_dict, dets)
    assert 0.1 < expected["AP"] < 0.9 and any(a["iscrowd"] for a in gt_dict["annotations"])
    for name, value in expected.items():
        assert ours[name][0] == pytest.approx(value, abs=1e-9), name


def test_a_draw_with_repeated_images_gives_cocoevals_ap_on_the_reidd_images(tmp_path: Path) -> None:
    gt_dict, dets = detection_fixture(seed=1)
    gt = load_ground_truth(_write(tmp_path, "gt.json", gt_dict))
    run = match(gt, dets)
    counts = np.array([[2, 0, 1, 3, 0, 1, 1, 0, 2, 1, 1, 0]])
    # the same draw as a data set of its own: every copy of an image is a new image
    drawn_gt = {"images": [], "annotations": [], "categories": CATEGORIES}
    drawn_dets = []
    for index, count in enumerate(counts[0]):
        image = gt_dict["images"][index]
        for _ in range(count):
            new_id = len(drawn_gt["images"]) + 1
            drawn_gt["images"].append({**image, "id": new_id})
            for ann in (a for a in gt_dict["annotations"] if a["image_id"] == image["id"]):
                drawn_gt["annotations"].append(
                    {**ann, "id": len(drawn_gt["annotations"]) + 1, "image_id": new_id}
                )
            drawn_dets += [{**d, "image_id": new_id} for d in dets if d["image_id"] == image["id"]]
    ours = replicate_ap(run, counts, list(METRIC_IOUS))
    expected = cocoeval_ap(drawn_gt, drawn_dets)
    for name, value in expected.items():
        assert ours[name][0] == pytest.approx(value, abs=1e-9), name


def test_many_replicates_at_once_equal_one_by_one(tmp_path: Path) -> None:
    gt_dict, dets = detection_fixture(seed=2)
    run = match(load_ground_truth(_write(tmp_path, "gt.json", gt_dict)), dets)
    counts = draw_counts(len(gt_dict["images"]), 7, seed=5)
    together = replicate_ap(run, counts, ["AP", "AP75"])
    for b in range(len(counts)):
        alone = replicate_ap(run, counts[b : b + 1], ["AP", "AP75"])
        assert alone["AP"][0] == together["AP"][b] and alone["AP75"][0] == together["AP75"][b]


def test_draws_are_seeded_and_take_every_image_count_once() -> None:
    a, b = draw_counts(50, 20, seed=3), draw_counts(50, 20, seed=3)
    assert (a == b).all() and (a.sum(axis=1) == 50).all() and not (a == draw_counts(50, 20, seed=4)).all()
    assert (a != 1).any()  # some images drawn twice or never


def _rows(tmp_path: Path, rows: dict[str, dict[str, list[dict[str, Any]]]], gt_dict: dict[str, Any]):
    gt = load_ground_truth(_write(tmp_path, "gt.json", gt_dict))
    return gt, {row: {seed: match(gt, d) for seed, d in seeds.items()} for row, seeds in rows.items()}


def test_identical_rows_give_exactly_zero_and_a_better_row_excludes_zero(tmp_path: Path) -> None:
    gt_dict, dets = detection_fixture(seed=4, n_images=30)
    # "perfect": the ground truth itself at score 1 beside the same detections, so it is better on every image
    perfect = dets + [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt_dict["annotations"]
        if not a["iscrowd"]
    ]
    _, other = detection_fixture(seed=5, n_images=30)  # another seed's detections for seed "1"
    gt, rows = _rows(
        tmp_path,
        {
            "ce": {"0": dets, "1": other},
            "same": {"0": dets, "1": other},
            "better": {"0": perfect, "1": perfect},
        },
        gt_dict,
    )
    counts = draw_counts(gt.n_images, 200, seed=0)
    intervals = paired_intervals(rows, "ce", counts, ["AP", "AP50"])
    same = intervals["same"]["AP"]
    assert (same.delta, same.lo, same.hi) == (0.0, 0.0, 0.0) and not same.excludes_zero
    assert same.n_seeds == 2 and same.n_boot == 200
    better = intervals["better"]["AP"]
    assert better.lo > 0 and better.excludes_zero and better.lo <= better.delta <= better.hi
    assert intervals["ce"]["AP"].delta == 0.0
    # the estimate is the mean over seeds of the plain AP differences
    expected = np.mean(
        [cocoeval_ap(gt_dict, perfect)["AP"] - cocoeval_ap(gt_dict, d)["AP"] for d in (dets, other)]
    )
    assert better.delta == pytest.approx(expected, abs=1e-9)


def test_seeds_pair_by_name_and_a_missing_reference_is_named(tmp_path: Path) -> None:
    gt_dict, dets = detection_fixture(seed=6)
    gt, rows = _rows(tmp_path, {"ce": {"0": dets, "2": dets}, "x": {"1": dets, "2": dets}}, gt_dict)
    intervals = paired_intervals(rows, "ce", draw_counts(gt.n_images, 10))
    assert intervals["x"]["AP"].n_seeds == 1
    with pytest.raises(BootstrapError, match="reference row 'focal'"):
        paired_intervals(rows, "focal", draw_counts(gt.n_images, 10))


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(BootstrapError, match=r"gt\.json: test annotation file not found"):
        load_ground_truth(tmp_path / "gt.json")
    with pytest.raises(BootstrapError, match=r"d\.json: not a readable COCO results file"):
        read_results(_bad(tmp_path))
    gt_dict, _ = detection_fixture()
    with pytest.raises(BootstrapError, match=r"image ids \[999\]"):
        load_ground_truth(_write(tmp_path, "gt.json", gt_dict), [10, 999])


def _bad(tmp_path: Path) -> Path:
    path = tmp_path / "d.json"
    path.write_text("{not json")
    return path


def test_no_detections_score_zero(tmp_path: Path) -> None:
    gt_dict, _ = detection_fixture()
    run = match(load_ground_truth(_write(tmp_path, "gt.json", gt_dict)), [])
    assert replicate_ap(run, identity_counts(len(gt_dict["images"])))["AP"][0] == 0.0
