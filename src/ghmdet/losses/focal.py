"""Focal loss baseline (Lin et al. 2017), the paper's "FL" row."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import check_non_negative, check_unit_interval
from .elementwise import ElementwiseClassificationLoss


class FocalLoss(ElementwiseClassificationLoss):
    """``FL = alpha_t * (1 - p_t)^gamma * CE`` over every valid (anchor, class) pair.

    Same arithmetic as ``torchvision.ops.sigmoid_focal_loss``; ``alpha=None`` disables the balancing.
    Normaliser: ``sum over valid pairs / max(1, number of positive rows among the valid rows)``, times
    ``loss_weight``; on all-valid input this is ``sigmoid_focal_loss(..., reduction="sum") / num_pos``.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        owner = type(self).__name__
        self.alpha = check_unit_interval(owner, "alpha", alpha, allow_none=True)
        self.gamma = check_non_negative(owner, "gamma", gamma)

    def _elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        prob = torch.sigmoid(logits)
        ce_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = prob * targets + (1 - prob) * (1 - targets)
        loss = ce_loss * ((1 - p_t) ** self.gamma)
        if self.alpha is not None:
            alpha_t = self.alpha * targets + (1 - self.alpha) * (1 - targets)
            loss = alpha_t * loss
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, " + super().extra_repr()
