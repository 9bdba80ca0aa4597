"""Base classes of the element-wise losses (CE, focal, L1, smooth L1, ASL1): checks, masks, normalisers.

A new element-wise loss subclasses one of them and supplies ``_elementwise``; OHEM shares the row counts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import check_pair, check_valid, valid_mask
from .base import DetectionLoss


def positive_rows(targets: Tensor, mask: Tensor | None) -> Tensor:
    """Boolean ``[N]``: rows (anchors) with a positive target (> 0) among their valid entries."""
    positive = targets > 0
    if mask is not None:
        positive = positive & mask
    return positive.any(dim=1)


def valid_rows(mask: Tensor | None, rows: int, device: torch.device) -> Tensor:
    """Boolean ``[N]``: rows with at least one valid entry."""
    if mask is None:
        return torch.ones(rows, dtype=torch.bool, device=device)
    return mask.any(dim=1)


class ElementwiseClassificationLoss(DetectionLoss):
    """``sum over valid (anchor, class) pairs of loss_el / max(1, #positive rows) * loss_weight``.

    The RetinaNet convention of torchvision and mmdetection: the sum is divided by the number of anchors
    with a positive target among the valid rows (not by the number of elements).
    """

    def _elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
        """``logits``/``targets`` ``[N, C]``, ``valid`` None, ``[N]`` or ``[N, C]``; float32 scalar."""
        owner = type(self).__name__
        check_pair(owner, "logits", logits, "targets", targets)
        check_valid(owner, valid, logits)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits32 = logits.to(torch.float32)
            targets32 = targets.detach().to(torch.float32)
            loss = self._elementwise(logits32, targets32)
            mask = valid_mask(valid)
            if mask is not None:
                loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
            num_positive = positive_rows(targets32, mask).sum().clamp(min=1).to(torch.float32)
            return loss.sum() / num_positive * self.loss_weight


class ElementwiseRegressionLoss(DetectionLoss):
    """``sum over valid deltas of loss_el(pred - target) / max(1, #valid rows) * loss_weight``."""

    def _elementwise(self, diff: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """``pred``/``target`` ``[N, 4]``, ``valid`` None, ``[N]`` or ``[N, 4]``; float32 scalar."""
        owner = type(self).__name__
        check_pair(owner, "pred", pred, "target", target)
        check_valid(owner, valid, pred)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            diff = pred.to(torch.float32) - target.detach().to(torch.float32)
            loss = self._elementwise(diff)
            mask = valid_mask(valid)
            if mask is not None:
                loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
            rows = valid_rows(mask, pred.shape[0], pred.device).sum().clamp(min=1).to(torch.float32)
            return loss.sum() / rows * self.loss_weight
