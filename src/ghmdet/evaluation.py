"""COCO box mAP with the paper's columns (AP, AP50, AP75, AP80, AP90, APS, APM, APL).

torchmetrics' ``MeanAveragePrecision`` (faster_coco_eval backend by default, pycocotools selectable) does
the COCO evaluation; it reports AP50/AP75 but not the paper's AP80/AP90 (Table "regression losses"), which
are read from its precision array exactly as COCOeval.summarize reads AP50: the mean of the valid precision
entries at that IoU threshold, area "all", 100 detections. Under DDP, torchmetrics gathers every rank's
detections before computing, so the numbers equal a single-device evaluation.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from ghmdet.distributed import sync_list_states

METRIC_NAMES = ("AP", "AP50", "AP75", "AP80", "AP90", "APS", "APM", "APL", "AR100")
_IOU_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


class CocoDetectionMetrics(MeanAveragePrecision):
    """``MeanAveragePrecision`` whose ``compute`` returns the paper's columns by short name (0-1 scale)."""

    def __init__(
        self, backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval", **kwargs: object
    ):
        super().__init__(
            box_format="xyxy",
            iou_type="bbox",
            iou_thresholds=_IOU_THRESHOLDS,
            extended_summary=True,
            backend=backend,
            **kwargs,
        )

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
        return {k: torch.as_tensor(v, dtype=torch.float32).reshape(()) for k, v in out.items()}


def _ap_at_iou(precision: Tensor, iou: float) -> Tensor:
    """COCOeval.summarize(ap=1, iouThr=iou, areaRng='all', maxDets=100) from a [T, R, K, A, M] precision."""
    t = _IOU_THRESHOLDS.index(round(iou, 2))
    p = precision[t, :, :, 0, -1]
    p = p[p > -1]
    return p.mean() if p.numel() else torch.tensor(-1.0)
