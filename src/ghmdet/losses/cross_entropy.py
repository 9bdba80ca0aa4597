"""The paper's "CE" baseline: sigmoid binary cross-entropy (Eq. 1), optionally alpha-balanced."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._validation import check_unit_interval
from .elementwise import ElementwiseClassificationLoss


class BCELoss(ElementwiseClassificationLoss):
    """Sigmoid cross-entropy over every valid (anchor, class) pair.

    ``CE = -[p* log p + (1 - p*) log(1 - p)]`` (Eq. 1); with ``alpha`` given, each term is weighted by
    ``alpha`` for positives and ``1 - alpha`` for negatives.

    Normaliser: ``sum over valid pairs / max(1, number of positive rows among the valid rows)``, times
    ``loss_weight`` (torchvision / mmdetection RetinaNet convention).
    """

    def __init__(self, alpha: float | None = None, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.alpha = check_unit_interval(type(self).__name__, "alpha", alpha, allow_none=True)

    def _elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.alpha is not None:
            loss = (self.alpha * targets + (1 - self.alpha) * (1 - targets)) * loss
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, " + super().extra_repr()
