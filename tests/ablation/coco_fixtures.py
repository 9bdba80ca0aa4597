"""COCO ground truth and detections with a known pycocotools answer, for the bootstrap and table tests."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ghmdet.ablation.bootstrap import METRIC_IOUS

CATEGORIES = [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}, {"id": 9, "name": "nine"}]


def detection_fixture(seed: int = 0, n_images: int = 12) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ground truth (crowd boxes, an image without boxes, a category without any) and jittered detections."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for index in range(n_images):
        image_id = 10 + 3 * index  # not contiguous, not from 0
        images.append({"id": image_id, "width": 200, "height": 200, "file_name": f"{image_id}.png"})
        n = 0 if index == 4 else int(rng.integers(1, 7))
        for _ in range(n):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(6, 60, 2)
            category = int(rng.choice([3, 7]))  # 9 has no ground truth: COCO leaves it out of the mean
            crowd = int(rng.uniform() < 0.1)
            anns.append(
                {"id": len(anns) + 1, "image_id": image_id, "category_id": category, "bbox": [x, y, w, h],
                 "area": w * h, "iscrowd": crowd}
            )  # fmt: skip
            for _ in range(int(rng.integers(0, 3))):  # 0-2 detections per box: misses and duplicates
                jitter = rng.normal(0, 0.12 * min(w, h), 4)
                label = category if rng.uniform() > 0.1 else int(rng.choice([3, 7, 9]))
                box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
                dets.append({"image_id": image_id, "category_id": label, "bbox": box,
                             "score": float(rng.uniform(0.05, 1.0))})  # fmt: skip
        for _ in range(int(rng.integers(0, 4))):  # false positives, some of category 9
            x, y = rng.uniform(0, 170, 2)
            dets.append({"image_id": image_id, "category_id": int(rng.choice([3, 7, 9])),
                         "bbox": [x, y, 25.0, 25.0], "score": float(rng.uniform(0.05, 0.7))})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": CATEGORIES}, dets


def cocoeval_ap(gt_dict: dict[str, Any], dets: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools' AP, AP50, AP75, AP80, AP90 (area all, 100 detections)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {"AP": float(ev.stats[0])}
    for name, t in METRIC_IOUS.items():
        if name != "AP":
            p = ev.eval["precision"][t, :, :, 0, -1]
            out[name] = float(p[p > -1].mean())
    return out
