"""GHM-R: gradient harmonized authentic smooth L1 (paper Eq. 13-16)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._validation import check_positive
from .ghm import GradientHarmonizedLoss
from .gradient_norm import asl1_gradient
from .histogram import GHMR_LAST_EDGE


class GHMRLoss(GradientHarmonizedLoss):
    """Gradient Harmonizing Mechanism for box regression, ``L = 1/N sum_i beta_i * ASL1(d_i)`` (Eq. 16).

    ``ASL1(d) = sqrt(d^2 + mu^2) - mu`` (Eq. 13) with ``d = pred - target`` for each of the box deltas;
    gradient norm ``gr = |d| / sqrt(d^2 + mu^2)`` (Eq. 14) in [0, 1). ``beta`` as in :class:`GHMCLoss`
    (unit regions + EMA as mmdetection's ``GHMR``, or the exact density with ``density="exact"``, where
    ``momentum`` is ignored and the buffers are never written). The last bin edge is 1e3, as released.

    Normaliser: ``N`` = sum of the valid weights expanded to ``[N, 4]`` (the released ``label_weight.sum()``;
    the count of valid deltas for 0/1 weights), floored at 1. Weights only select elements (> 0) and set N;
    they do not multiply the loss, as released.

    Args:
        mu: ASL1 smoothing, > 0 (paper: 0.02).
        bins, momentum, loss_weight, density, sync_stats, check_finite: as :class:`GHMCLoss` (the check
            covers non-finite predictions and targets).

    Shapes: ``pred`` and ``target`` ``[N, 4]`` (any ``[N, D]`` works), ``valid`` ``[N]`` or ``[N, 4]``.
    Returns a float32 scalar. The gradient flows to ``pred`` only.
    """

    last_edge = GHMR_LAST_EDGE
    pred_name = "pred"
    target_name = "target"
    total_is_weight_sum = True

    def __init__(
        self,
        mu: float = 0.02,
        bins: int = 10,
        momentum: float = 0.7,
        loss_weight: float = 10.0,
        density: str = "unit",
        sync_stats: bool = False,
        check_finite: bool = True,
    ) -> None:
        mu = check_positive(type(self).__name__, "mu", mu)
        super().__init__(
            bins=bins,
            momentum=momentum,
            loss_weight=loss_weight,
            density=density,
            sync_stats=sync_stats,
            check_finite=check_finite,
        )
        self.mu = mu

    def _direction(self, pred: Tensor, target: Tensor, out: Tensor | None = None) -> Tensor:
        return asl1_gradient(pred, target, self.mu, out=out)

    def _weighted_loss_sum(
        self, pred: Tensor, target: Tensor, weights: Tensor, scratch: Tensor, workspace: Tensor
    ) -> Tensor:
        diff = torch.sub(pred, target, out=workspace)
        asl1 = torch.sqrt(diff * diff + self.mu * self.mu).sub_(self.mu)
        return asl1.mul_(weights).sum()

    def extra_repr(self) -> str:
        return f"mu={self.mu}, " + super().extra_repr()
