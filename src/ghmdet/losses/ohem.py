"""Online hard example mining baseline (the paper's "OHEM" row), over anchors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import check_non_negative, check_pair, check_valid, valid_mask
from .base import DetectionLoss
from .elementwise import positive_rows, valid_rows


class OHEMLoss(DetectionLoss):
    """Sigmoid CE on all positive rows plus the hardest negative rows.

    A row (anchor) is positive when one of its valid targets is > 0 (= 1 for 0/1 targets). Its loss is the
    BCE summed over its valid classes. All valid positive rows are kept, and among the valid negative rows
    the ``neg_pos_ratio * max(num_pos, 1)`` with the highest loss (ties: lower row index first). Selection
    is a stable sort and a rank comparison on tensors, with no host synchronisation; it does not carry
    gradients.

    Normaliser: ``sum of the kept rows' losses / max(1, number of positive rows among the valid rows)``, times
    ``loss_weight``.
    """

    def __init__(self, neg_pos_ratio: float = 3, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.neg_pos_ratio = check_non_negative(type(self).__name__, "neg_pos_ratio", neg_pos_ratio)

    def forward(self, logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> Tensor:
        """``logits``/``targets`` ``[N, C]``, ``valid`` None, ``[N]`` or ``[N, C]``; float32 scalar."""
        owner = type(self).__name__
        check_pair(owner, "logits", logits, "targets", targets)
        check_valid(owner, valid, logits)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits32 = logits.to(torch.float32)
            targets32 = targets.detach().to(torch.float32)
            loss = F.binary_cross_entropy_with_logits(logits32, targets32, reduction="none")
            mask = valid_mask(valid)
            if mask is not None:
                loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
            row_loss = loss.sum(dim=1)
            rows_valid = valid_rows(mask, logits.shape[0], logits.device)
            positive = positive_rows(targets32, mask) & rows_valid
            negative = rows_valid & ~positive
            num_positive = positive.sum()
            quota = self.neg_pos_ratio * num_positive.clamp(min=1)
            hardness = torch.where(negative, row_loss.detach(), torch.full_like(row_loss, float("-inf")))
            order = torch.argsort(hardness, descending=True, stable=True)
            rank = torch.empty_like(order)
            rank.scatter_(0, order, torch.arange(order.numel(), device=order.device))
            keep = positive | (negative & (rank < quota))
            kept = torch.where(keep, row_loss, torch.zeros((), dtype=row_loss.dtype, device=row_loss.device))
            return kept.sum() / num_positive.clamp(min=1).to(torch.float32) * self.loss_weight

    def extra_repr(self) -> str:
        return f"neg_pos_ratio={self.neg_pos_ratio}, " + super().extra_repr()
