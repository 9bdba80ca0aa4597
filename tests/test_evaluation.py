"""COCO metrics: our wrapper (both backends) equals pycocotools' COCOeval on the same detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ghmdet.evaluation import CocoDetectionMetrics


def _random_dataset(seed: int = 0, num_images: int = 6, num_classes: int = 2):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(num_images):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(8, 100, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, num_classes, n)
        gts.append((boxes, labels))
        # detections: jittered copies (some good, some poor), plus false positives
        m = n + int(rng.integers(0, 4))
        det = np.concatenate([boxes, rng.uniform(0, 200, (m - n, 2)).repeat(2, 1) + np.array([0, 0, 30, 30])])
        det = det + rng.normal(0, 4, det.shape)
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        det_labels = np.concatenate([labels, rng.integers(0, num_classes, m - n)])
        flip = rng.uniform(size=m) < 0.15  # a few wrong classes
        det_labels[flip] = (det_labels[flip] + 1) % num_classes
        preds.append((det, rng.uniform(0.05, 1, m), det_labels))
    return gts, preds


def _pycocotools(gts, preds) -> dict[str, float]:
    images, anns, dets = [], [], []
    for i, ((boxes, labels), (dboxes, scores, dlabels)) in enumerate(zip(gts, preds)):
        images.append({"id": i, "width": 300, "height": 300})
        for b, lab in zip(boxes, labels):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(lab),
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b, s, lab in zip(dboxes, scores, dlabels):
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(lab),
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": float(s),
                }
            )
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 0}, {"id": 1}]}
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    precision = ev.eval["precision"]

    def ap_at(t: int) -> float:
        p = precision[t, :, :, 0, -1]
        return float(p[p > -1].mean())

    s = ev.stats
    return {
        "AP": s[0],
        "AP50": s[1],
        "AP75": s[2],
        "APS": s[3],
        "APM": s[4],
        "APL": s[5],
        "AR100": s[8],
        "AP80": ap_at(6),
        "AP90": ap_at(8),
    }


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_metrics_equal_cocoeval(backend: str) -> None:
    gts, preds = _random_dataset()
    metric = CocoDetectionMetrics(backend=backend)
    metric.update(
        [
            {
                "boxes": torch.tensor(b, dtype=torch.float32),
                "scores": torch.tensor(s, dtype=torch.float32),
                "labels": torch.tensor(lab),
            }
            for b, s, lab in preds
        ],
        [{"boxes": torch.tensor(b, dtype=torch.float32), "labels": torch.tensor(lab)} for b, lab in gts],
    )
    got = {k: float(v) for k, v in metric.compute().items()}
    expected = _pycocotools(gts, preds)
    assert 0.05 < expected["AP"] < 0.95  # a non-degenerate case
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key
