"""COCO box mAP with the paper's columns (AP, AP50, AP75, AP80, AP90, APS, APM, APL).

torchmetrics' ``MeanAveragePrecision`` (faster_coco_eval backend by default, pycocotools selectable) does
the COCO evaluation; it reports AP50/AP75 but not the paper's AP80/AP90 (Table "regression losses"), which
are read from its precision array exactly as COCOeval.summarize reads AP50: the mean of the valid precision
entries at that IoU threshold, area "all", 100 detections; per-class AP and AP50 come from the same array.
Under DDP, torchmetrics gathers every rank's detections before computing, so the numbers equal a
single-device evaluation. With ``keep_detections`` the metric also keeps every image's detections with its
COCO image id (gathered over ranks), for the run's COCO results file (:func:`coco_results`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from ghmdet.distributed import sync_list_states

METRIC_NAMES = ("AP", "AP50", "AP75", "AP80", "AP90", "APS", "APM", "APL", "AR100")
_IOU_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections: its COCO id, xywh boxes in its pixels, scores and contiguous labels."""

    image_id: int
    boxes: Tensor
    scores: Tensor
    labels: Tensor


class CocoDetectionMetrics(MeanAveragePrecision):
    """``MeanAveragePrecision`` whose ``compute`` returns the paper's columns by short name (0-1 scale).

    After ``compute``: :attr:`per_class` holds AP and AP50 by contiguous label (None for a class without
    ground truth), and with ``keep_detections`` :attr:`detections` holds every image's detections, in update
    order and gathered over ranks, when every ``update`` got ``image_ids`` (else it is empty). Both survive
    ``reset``.
    """

    def __init__(
        self,
        backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
        keep_detections: bool = False,
        **kwargs: object,
    ):
        super().__init__(
            box_format="xyxy",
            iou_type="bbox",
            iou_thresholds=_IOU_THRESHOLDS,
            extended_summary=True,
            backend=backend,
            **kwargs,
        )
        self.keep_detections = keep_detections
        self.add_state("image_ids", default=[], dist_reduce_fx=None)
        self.per_class: dict[int, dict[str, float | None]] = {}
        self.detections: list[ImageDetections] = []

    def update(  # type: ignore[override]
        self,
        preds: list[dict[str, Tensor]],
        target: list[dict[str, Tensor]],
        image_ids: Sequence[int] | None = None,
    ) -> None:
        """Add a batch; :attr:`detections` needs ``image_ids``, the COCO ids of the batch's images."""
        super().update(preds, target)
        if image_ids is not None:
            if len(image_ids) != len(preds):
                raise ValueError(f"{len(image_ids)} image ids for {len(preds)} images")
            self.image_ids.extend(torch.tensor(int(i), dtype=torch.int64) for i in image_ids)

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        # ranks may hold different numbers of images (unpadded DDP evaluation): gather whole lists
        sync_list_states(self, process_group)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        raw = super().compute()
        out = {
            "AP": raw["map"],
            "AP50": raw["map_50"],
            "AP75": raw["map_75"],
            "AP80": _ap_at_iou(raw["precision"], 0.8),
            "AP90": _ap_at_iou(raw["precision"], 0.9),
            "APS": raw["map_small"],
            "APM": raw["map_medium"],
            "APL": raw["map_large"],
            "AR100": raw["mar_100"],
        }
        # inside compute the list states hold every rank's images
        self.per_class = per_class_ap(raw.get("precision"), raw.get("classes"))
        self.detections = []
        # without an id for every image (targets lacking image_id) no results file can name the images
        if self.keep_detections and len(self.image_ids) == len(self.detection_box):
            self.detections = [
                ImageDetections(int(i), b.detach().cpu(), s.detach().cpu(), lab.detach().cpu())
                for i, b, s, lab in zip(
                    self.image_ids, self.detection_box, self.detection_scores, self.detection_labels
                )
            ]
        return {k: torch.as_tensor(v, dtype=torch.float32).reshape(()) for k, v in out.items()}


def per_class_ap(precision: Tensor | None, classes: Tensor | None) -> dict[int, dict[str, float | None]]:
    """AP (IoU .50:.95) and AP50 of each class from COCOeval's ``[T, R, K, A, M]`` precision array.

    As COCOeval.summarize with ``params.catIds`` set to that class: the mean of its valid precision entries,
    area "all", 100 detections; None for a class without ground truth. ``classes[k]`` is column ``k``'s label.
    """
    if precision is None or classes is None or precision.ndim != 5:
        return {}
    out: dict[int, dict[str, float | None]] = {}
    for k, label in enumerate(torch.as_tensor(classes).reshape(-1).tolist()):
        p = precision[:, :, k, 0, -1]
        out[int(label)] = {"AP": _valid_mean(p), "AP50": _valid_mean(p[0])}
    return out


def _valid_mean(p: Tensor) -> float | None:
    p = p[p > -1]
    return float(p.double().mean()) if p.numel() else None


def coco_results(
    detections: Sequence[ImageDetections], category_ids: Sequence[int] | Mapping[int, int]
) -> list[dict[str, Any]]:
    """COCO results (``loadRes`` format): ``{image_id, category_id, bbox [x, y, w, h], score}`` per box.

    ``category_ids[label]`` is the COCO category id of a contiguous label. The boxes are the xywh ones the
    metric scored (it converts at ``update``), so the file re-scores to the recorded numbers.
    """
    results = []
    for image in detections:
        for box, score, label in zip(image.boxes.tolist(), image.scores.tolist(), image.labels.tolist()):
            try:
                category = int(category_ids[int(label)])
            except (IndexError, KeyError):
                raise ValueError(f"label {label} of image {image.image_id} has no category id") from None
            results.append({"image_id": image.image_id, "category_id": category, "bbox": box, "score": score})
    return results


def _ap_at_iou(precision: Tensor, iou: float) -> Tensor:
    """COCOeval.summarize(ap=1, iouThr=iou, areaRng='all', maxDets=100) from a [T, R, K, A, M] precision."""
    t = _IOU_THRESHOLDS.index(round(iou, 2))
    p = precision[t, :, :, 0, -1]
    p = p[p > -1]
    return p.mean() if p.numel() else torch.tensor(-1.0)
