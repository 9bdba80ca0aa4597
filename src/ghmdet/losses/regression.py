"""Box-regression baselines: smooth L1 (the paper's "SL1"), authentic smooth L1 ("ASL1", Eq. 13) and L1."""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import check_non_negative, check_positive
from .elementwise import ElementwiseRegressionLoss


class SmoothL1Loss(ElementwiseRegressionLoss):
    """``0.5 d^2 / beta`` for ``|d| < beta``, else ``|d| - 0.5 beta`` (beta = 1/9 ~= 0.11 in the paper).

    ``beta = 0`` is plain L1. Normaliser: ``sum over valid deltas / max(1, number of valid rows)``, times
    ``loss_weight``.
    """

    def __init__(self, beta: float = 1.0 / 9.0, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.beta = check_non_negative(type(self).__name__, "beta", beta)

    def _elementwise(self, diff: Tensor) -> Tensor:
        abs_diff = diff.abs()
        if self.beta == 0:
            return abs_diff
        return torch.where(
            abs_diff < self.beta, 0.5 * abs_diff * abs_diff / self.beta, abs_diff - 0.5 * self.beta
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


class AuthenticSmoothL1Loss(ElementwiseRegressionLoss):
    """ASL1, Eq. (13): ``sqrt(d^2 + mu^2) - mu`` (mu = 0.02 in the paper); GHM-R without the reweighting.

    Normaliser: ``sum over valid deltas / max(1, number of valid rows)``, times ``loss_weight``.
    """

    def __init__(self, mu: float = 0.02, loss_weight: float = 1.0) -> None:
        super().__init__(loss_weight)
        self.mu = check_positive(type(self).__name__, "mu", mu)

    def _elementwise(self, diff: Tensor) -> Tensor:
        return torch.sqrt(diff * diff + self.mu * self.mu) - self.mu

    def extra_repr(self) -> str:
        return f"mu={self.mu}, " + super().extra_repr()


class L1Loss(ElementwiseRegressionLoss):
    """``|d|``.

    Normaliser: ``sum over valid deltas / max(1, number of valid rows)``, times ``loss_weight``.
    """

    def _elementwise(self, diff: Tensor) -> Tensor:
        return diff.abs()
