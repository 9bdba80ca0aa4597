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


def _coco_files(tmp_path, gts, category_ids: list[int], image_ids: list[int]):
    """The ground truth as a COCO file with non-contiguous image and category ids."""
    import json

    images, anns = [], []
    for image_id, (boxes, labels) in zip(image_ids, gts):
        images.append({"id": image_id, "width": 300, "height": 300, "file_name": f"{image_id}.png"})
        for b, lab in zip(boxes, labels):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[int(lab)],
                    "bbox": [float(b[0]), float(b[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    path = tmp_path / "instances_test.json"
    categories = [{"id": c, "name": f"class_{c}"} for c in category_ids]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_the_results_file_rescores_to_the_recorded_ap_and_per_class_ap(tmp_path, backend: str) -> None:
    from ghmdet.evaluation import coco_results

    gts, preds = _random_dataset(seed=3, num_images=8, num_classes=3)
    category_ids, image_ids = [3, 7, 12], [101, 205, 307, 410, 512, 618, 720, 833]
    ann_file = _coco_files(tmp_path, gts, category_ids, image_ids)
    metric = CocoDetectionMetrics(backend=backend, keep_detections=True)
    for image_id, (b, s, lab), (gb, glab) in zip(image_ids, preds, gts):
        metric.update(
            [{"boxes": torch.tensor(b, dtype=torch.float32), "scores": torch.tensor(s, dtype=torch.float32),
              "labels": torch.tensor(lab)}],
            [{"boxes": torch.tensor(gb, dtype=torch.float32), "labels": torch.tensor(glab)}],
            image_ids=[image_id],
        )  # fmt: skip
    recorded = {k: float(v) for k, v in metric.compute().items()}
    results = coco_results(metric.detections, category_ids)
    assert {r["image_id"] for r in results} <= set(image_ids)
    assert {r["category_id"] for r in results} == set(category_ids)

    gt = COCO(str(ann_file))
    ev = COCOeval(gt, gt.loadRes(results), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert 0.05 < recorded["AP"] < 0.95
    assert recorded["AP"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert recorded["AP50"] == pytest.approx(ev.stats[1], abs=1e-6)
    for label, category_id in enumerate(category_ids):
        ev.params.catIds = [category_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert metric.per_class[label]["AP"] == pytest.approx(ev.stats[0], abs=1e-6), category_id
        assert metric.per_class[label]["AP50"] == pytest.approx(ev.stats[1], abs=1e-6), category_id


def test_detections_survive_reset_and_need_an_id_per_image() -> None:
    metric = CocoDetectionMetrics(keep_detections=True)
    pred = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([0])}]  # fmt: skip
    target = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}]
    metric.update(pred, target, image_ids=[42])
    metric.compute()
    metric.reset()
    assert [d.image_id for d in metric.detections] == [42]
    assert metric.per_class == {0: {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}}
    metric.update(pred, target)  # no image id: no results file can be written
    metric.compute()
    assert metric.detections == []
    with pytest.raises(ValueError, match="2 image ids for 1 images"):
        metric.update(pred, target, image_ids=[1, 2])
