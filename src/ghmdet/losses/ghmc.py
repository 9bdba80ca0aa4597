"""GHM-C: gradient harmonized sigmoid cross-entropy (paper Eq. 7-8, unit regions Eq. 9-12)."""

from __future__ import annotations

from torch import Tensor

from .fused_bce import sigmoid_bce
from .ghm import GradientHarmonizedLoss
from .gradient_norm import sigmoid_ce_gradient
from .histogram import GHMC_LAST_EDGE


class GHMCLoss(GradientHarmonizedLoss):
    """Gradient Harmonizing Mechanism for classification, ``L = 1/N sum_i beta_i * CE(x_i, p*_i)`` (Eq. 8).

    Every (anchor, class) pair is one binary example with gradient norm ``g = |sigmoid(x) - p*|`` (Eq. 3).
    ``beta_i = N / GD(g_i)`` (Eq. 6) with

    * ``density="unit"`` (default, the released code): ``bins`` unit regions (Eq. 9-10) and, for
      ``momentum > 0``, the EMA of the per-bin counts (Eq. 11-12) kept in the ``acc_sum`` buffer. Matches
      mmdetection's ``GHMC``: ``beta_j = N / S_j / n`` with ``n`` the number of non-empty bins in the call,
      empty bins not updated, ``S`` starting at 0.
    * ``density="exact"``: the "standard" density of Eq. (4)-(5) with window ``eps = 1 / bins``, computed
      in O(N log N); ``momentum`` is ignored and ``acc_sum`` is never written.

    Normaliser: ``N`` = number of valid elements, floored at 1 (``loss = sum(beta * CE) / N * loss_weight``).
    With ``sync_stats=True`` under torch.distributed, see :mod:`ghmdet.losses.stats_sync`.

    Args:
        bins: number of unit regions M (window ``1 / bins`` for ``density="exact"``).
        momentum: EMA coefficient alpha in [0, 1); 0 uses the current counts only.
        loss_weight: multiplier of the loss.
        density: "unit" or "exact".
        sync_stats: sum the histogram over ranks (unit density only).
        check_finite: raise ValueError on non-finite logits/targets or targets outside [0, 1]. This is the
            only host synchronisation of forward; False skips it (non-finite inputs then give a non-finite
            loss and may corrupt the EMA state).

    Shapes: ``logits`` and ``targets`` ``[N, C]`` (targets in [0, 1], one column per class, background = all
    zeros), ``valid`` ``[N]`` or ``[N, C]`` (> 0 = valid). Returns a float32 scalar. The gradient flows to
    ``logits`` only; targets are constants.
    """

    last_edge = GHMC_LAST_EDGE
    pred_name = "logits"
    target_name = "targets"
    total_is_weight_sum = False

    def __init__(
        self,
        bins: int = 30,
        momentum: float = 0.75,
        loss_weight: float = 1.0,
        density: str = "unit",
        sync_stats: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            bins=bins,
            momentum=momentum,
            loss_weight=loss_weight,
            density=density,
            sync_stats=sync_stats,
            check_finite=check_finite,
        )

    def _direction(self, pred: Tensor, target: Tensor, out: Tensor | None = None) -> Tensor:
        return sigmoid_ce_gradient(pred, target, out=out)

    def _weighted_loss_sum(
        self, pred: Tensor, target: Tensor, weights: Tensor, scratch: Tensor, workspace: Tensor
    ) -> Tensor:
        return sigmoid_bce(pred, target, out=scratch, workspace=workspace).mul_(weights).sum()

    def _targets_in_range(self, target: Tensor) -> Tensor | None:
        lowest, highest = target.aminmax()
        return (lowest >= 0) & (highest <= 1)

    def _describe_bad_targets(self, target: Tensor) -> str | None:
        if target.numel() == 0:
            return None
        lowest, highest = (float(v) for v in target.aminmax())
        if lowest < 0 or highest > 1:
            return f"{self.target_name} must be in [0, 1], got values in [{lowest:g}, {highest:g}]"
        return None
