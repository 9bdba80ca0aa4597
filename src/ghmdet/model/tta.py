"""Test-time augmentation: run the detector on flipped / turned copies and fuse the boxes.

Aerial images have no "up", so all 8 symmetries of the square (the dihedral group: 4 turns x optional mirror)
show the same scene. Each view's detections (after the detector's own NMS) are mapped back to the original
frame and fused by a variant of weighted box fusion (WBF; Solovyev et al., "Weighted boxes fusion", 2021).
As in WBF, a cluster's box is the average of its boxes with their scores as weights, and its score is the sum
of its scores over the number of views, so a box that only some views found scores lower. The clusters are
formed as in NMS: the highest-scoring free box seeds a cluster and takes every free box of its class that
overlaps the seed by ``iou_threshold`` or more (WBF compares each box, in score order, with the running fused
box of every cluster and needs IoU above the threshold). A cluster can then hold two boxes of one view; WBF
scores a cluster of more boxes than views by its mean score, this variant by ``min(sum / views, 1)``. Fusion
averages out part of the per-view localisation noise, which NMS over the union of views would keep.

The paper evaluates single-pass; TTA is an opt-in inference setting (``model.tta``), off in every paper
config.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

TTAViews = Literal["flips", "dihedral"]
#: (quarter turns counter-clockwise, then mirror left-right) per view; the identity first.
VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    # identity, mirror, half turn, half turn + mirror (= upside down)
    "flips": ((0, False), (0, True), (2, False), (2, True)),
    "dihedral": tuple((turns, mirror) for turns in range(4) for mirror in (False, True)),
}


def transform_image(image: Tensor, turns: int, mirror: bool) -> Tensor:
    """``image [C, H, W]`` turned ``turns`` quarter turns counter-clockwise, then mirrored left-right."""
    out = torch.rot90(image, turns, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if mirror else out


def invert_boxes(boxes: Tensor, turns: int, mirror: bool, size: tuple[int, int]) -> Tensor:
    """Map xyxy ``boxes`` found on ``transform_image(image, turns, mirror)`` back to ``image`` of ``size``
    (height, width)."""
    height, width = size
    # the view's size: a quarter turn swaps height and width
    view_w = height if turns % 2 else width
    if mirror:
        boxes = torch.stack([view_w - boxes[:, 2], boxes[:, 1], view_w - boxes[:, 0], boxes[:, 3]], dim=1)
    for step in range(turns % 4):
        # undo one counter-clockwise quarter turn: a point (x, y) of the turned image came from (w - y, x),
        # where w is the width of the image before that turn (= the turned image's height)
        w_before = width if (turns - step) % 2 == 1 else height
        x1, y1, x2, y2 = boxes.unbind(dim=1)
        boxes = torch.stack([w_before - y2, x1, w_before - y1, x2], dim=1)
    return boxes


def _greedy_clusters(candidates: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """Seeds and members of the clusters of boxes sorted by score, where ``candidates[i, j]`` says that box
    ``j`` may join a cluster seeded by box ``i``: each still free box seeds one and takes its free
    candidates (itself too, unless it has no area)."""
    free = np.ones(len(candidates), dtype=bool)
    seeds, members = [], []
    for seed in range(len(candidates)):
        if not free[seed]:
            continue
        joined = free & candidates[seed]
        free &= ~joined
        seeds.append(seed)
        members.append(np.flatnonzero(joined))
    return seeds, members


def weighted_box_fusion(
    boxes: Tensor, scores: Tensor, labels: Tensor, num_views: int, iou_threshold: float = 0.55
) -> tuple[Tensor, Tensor, Tensor]:
    """Fuse the detections of ``num_views`` views (concatenated) into one set, highest fused score first.

    The module docstring gives the rule and how it differs from WBF.

    Args:
        boxes: ``[N, 4]`` xyxy boxes of all views, in one frame.
        scores: ``[N]`` their scores.
        labels: ``[N]`` their classes; only boxes of one class fuse.
        num_views: the number of views the boxes come from (divides the cluster's score sum).
        iou_threshold: the IoU with a cluster's seed box from which a box joins the cluster.

    Returns:
        The fused ``boxes``, ``scores`` and ``labels``, highest score first.

    Raises:
        ValueError: ``num_views`` below 1.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    order = scores.argsort(descending=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    candidates = (box_iou(boxes, boxes) >= iou_threshold) & (labels[:, None] == labels[None, :])
    # the clustering is sequential: on the host, after one transfer, so that a GPU never waits per box
    seeds, members = _greedy_clusters(candidates.cpu().numpy())
    if not seeds:
        return boxes[:0], scores[:0], labels[:0]
    # seeds and members go to the device in one transfer: indexing by them then never waits on the host
    indices = torch.from_numpy(np.concatenate([np.asarray(seeds, dtype=np.int64), *members])).to(boxes.device)
    seed_indices, *member_indices = indices.split([len(seeds)] + [len(m) for m in members])
    fused_boxes, fused_scores = [], []
    for part in member_indices:
        weights = scores[part]
        total = weights.sum()
        fused_boxes.append((boxes[part] * weights[:, None]).sum(dim=0) / total)
        # a cluster can hold two boxes of one view: never score above a box that every view found
        fused_scores.append(torch.clamp(total / num_views, max=1.0))
    out_scores = torch.stack(fused_scores)
    order = out_scores.argsort(descending=True)
    return torch.stack(fused_boxes)[order], out_scores[order], labels[seed_indices][order]


def fuse_views(
    detections: list[dict[str, Tensor]],
    views: tuple[tuple[int, bool], ...],
    size: tuple[int, int],
    iou_threshold: float,
    max_detections: int,
) -> dict[str, Tensor]:
    """One image's detections on each of ``views`` -> fused detections in the image's frame."""
    pairs = zip(detections, views, strict=True)
    boxes = torch.cat([invert_boxes(d["boxes"], t, m, size) for d, (t, m) in pairs])
    scores = torch.cat([d["scores"] for d in detections])
    labels = torch.cat([d["labels"] for d in detections])
    boxes, scores, labels = weighted_box_fusion(boxes, scores, labels, len(views), iou_threshold)
    keep = slice(0, max_detections)  # fused boxes come highest score first
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
