"""Shared machinery of GHM-C and GHM-R: histogram, EMA state, harmonizing weights, fused value + gradient.

One call does, for the valid elements of ``pred`` (paper equation numbers, see :mod:`.density`):

1. the signed gradient of the element-wise loss, whose magnitude is the gradient norm g (Eq. 3 / 14);
2. ``density="unit"``: the unit-region histogram of g (Eq. 9), optionally summed over ranks
   (:mod:`.stats_sync`), the EMA of Eq. (11)-(12) and the per-bin weight ``beta_j`` (Eq. 6 with Eq. 10/12,
   normalised as the released code); ``density="exact"``: the windowed density of Eq. (4)-(5), no EMA;
3. the loss ``sum(beta * loss_el) / N * loss_weight`` (Eq. 8 / 16) and, in the same pass, its gradient
   ``beta * direction / N * loss_weight`` with beta treated as a constant (the released code detaches g),
   returned through :class:`.precomputed_gradient.PrecomputedGradient`.

Everything runs in float32 whatever the input dtype or autocast state (sparse bins give weights of 1e5..1e6),
with no Python loop over bins and no host synchronisation except the single optional input check, which
happens *before* the EMA buffer is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from ._validation import (
    NonFiniteInputError,
    check_bins,
    check_choice,
    check_momentum,
    check_pair,
    check_valid,
    valid_mask,
)
from .base import DetectionLoss
from .density import sorted_windows_, unit_region_weights, update_bin_ema
from .histogram import bin_counts, bin_edges, bin_index, floor_binning_is_exact
from .precomputed_gradient import PrecomputedGradient
from .stats_sync import all_ranks_ok, all_reduce_histogram

DENSITIES = ("unit", "exact")


class GradientHarmonizedLoss(DetectionLoss):
    """Base of :class:`GHMCLoss` and :class:`GHMRLoss`; subclasses supply the element-wise loss.

    Buffers: ``acc_sum`` (persistent, float32 ``[bins]``: the EMA sums S_j), ``edges`` (non-persistent,
    derived from ``bins``) and ``last_counts`` (non-persistent: the histogram of the latest call, after any
    cross-rank sum, for logging). All three stay float32 when the module is cast to another dtype and follow
    it across devices.
    """

    uses_batch_statistics: ClassVar[bool] = True
    last_edge: ClassVar[float]
    pred_name: ClassVar[str] = "pred"
    target_name: ClassVar[str] = "target"
    total_is_weight_sum: ClassVar[bool] = False
    """N is the sum of the valid weights (GHM-R) rather than the number of valid elements (GHM-C)."""
    _float32_buffers: ClassVar[tuple[str, ...]] = ("edges", "acc_sum", "last_counts")

    def __init__(
        self,
        *,
        bins: int,
        momentum: float,
        loss_weight: float,
        density: str,
        sync_stats: bool,
        check_finite: bool,
    ) -> None:
        super().__init__(loss_weight)
        owner = type(self).__name__
        self.bins = check_bins(owner, bins)
        self.momentum = check_momentum(owner, momentum)
        self.density = check_choice(owner, "density", density, DENSITIES)
        if sync_stats and density == "exact":
            raise ValueError(f"{owner}: sync_stats=True needs density='unit', got density={density!r}")
        self.sync_stats = bool(sync_stats)
        self.check_finite = bool(check_finite)
        edges = bin_edges(self.bins, self.last_edge)
        # Decided once here so that forward never needs a host round trip to pick the binning path.
        self._floor_exact = floor_binning_is_exact(edges)
        self.register_buffer("edges", edges, persistent=False)
        self.register_buffer("acc_sum", torch.zeros(self.bins, dtype=torch.float32))
        self.register_buffer("last_counts", torch.zeros(self.bins, dtype=torch.float32), persistent=False)

    # --- hooks for the subclasses -------------------------------------------------------------------------

    def _direction(self, pred: Tensor, target: Tensor, out: Tensor | None = None) -> Tensor:
        """Signed d(loss_el)/d(pred) in float32; its absolute value is the gradient norm g."""
        raise NotImplementedError

    def _weighted_loss_sum(
        self, pred: Tensor, target: Tensor, weights: Tensor, scratch: Tensor, workspace: Tensor
    ) -> Tensor:
        """``sum(weights * loss_el)`` as a float32 scalar; may clobber ``scratch`` and ``workspace``."""
        raise NotImplementedError

    def _targets_in_range(self, target: Tensor) -> Tensor | None:
        """A bool scalar tensor saying whether the targets are admissible, or None if any finite is."""
        return None

    def _describe_bad_targets(self, target: Tensor) -> str | None:
        """Error message for inadmissible targets (error path only, may synchronise)."""
        return None

    # --- forward ------------------------------------------------------------------------------------------

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """Scalar float32 loss. ``valid``: None (all), ``[N]`` (per row) or ``[N, C]``; > 0 means valid."""
        owner = type(self).__name__
        check_pair(owner, self.pred_name, pred, self.target_name, target)
        check_valid(owner, valid, pred)
        need_grad = torch.is_grad_enabled() and pred.requires_grad
        with torch.autocast(device_type=pred.device.type, enabled=False), torch.no_grad():
            pred32 = pred.detach().to(torch.float32).contiguous()
            target32 = target.detach().to(torch.float32).contiguous()
            loss, grad, commit = self._loss_and_gradient(pred32, target32, valid, need_grad)
            if self.check_finite:
                self._check_inputs(loss, pred32, target32)
            commit()
        return PrecomputedGradient.apply(pred, loss, grad)

    def _loss_and_gradient(
        self, pred32: Tensor, target32: Tensor, valid: Tensor | None, need_grad: bool
    ) -> tuple[Tensor, Tensor | None, Callable[[], None]]:
        """Loss, gradient w.r.t. ``pred32`` (None unless ``need_grad``) and the deferred buffer update."""
        mask = valid_mask(valid)
        direction = self._direction(pred32, target32)
        if self.density == "unit":
            weights, scratch, commit = self._unit_weights(direction, valid, mask)
        else:
            weights, scratch = self._exact_weights(direction, mask)
            commit = _nothing_to_commit
        workspace = torch.empty_like(pred32)
        loss = self._weighted_loss_sum(pred32, target32, weights, scratch, workspace)
        grad = None
        if need_grad:
            # The direction buffer now holds the weights; recomputing the direction into the workspace is
            # cheaper than keeping a fourth input-sized buffer alive.
            grad = self._direction(pred32, target32, out=workspace).mul_(weights)
        return loss, grad, commit

    def _unit_weights(
        self, direction: Tensor, valid: Tensor | None, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Callable[[], None]]:
        """Per-element ``beta * loss_weight / N`` written over ``direction``; also a free float buffer."""
        index = bin_index(
            direction, self.edges, take_abs=True, floor_exact=self._floor_exact, assume_in_range=True
        )
        if mask is not None:
            index.masked_fill_(~mask, self.bins)  # invalid elements go to the uncounted overflow slot
        counts = bin_counts(index, self.bins)
        total = self._total(valid, direction)
        world_size = 1
        if self.sync_stats:
            counts, total, world_size = all_reduce_histogram(counts, total)
        new_acc_sum = update_bin_ema(self.acc_sum, counts, self.momentum)
        beta = unit_region_weights(counts, new_acc_sum, self.momentum, total)
        scaled = beta * (self.loss_weight * world_size) / total
        table = torch.cat([scaled, scaled.new_zeros(1)])  # slot `bins` (invalid elements) weighs 0
        weights = direction.view(-1)
        torch.index_select(table, 0, index.view(-1), out=weights)

        def commit() -> None:
            if self.momentum > 0:
                self.acc_sum.copy_(new_acc_sum)
            self.last_counts.copy_(counts)

        return weights.view_as(direction), index.view(torch.float32), commit

    def _exact_weights(self, direction: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-element ``beta * loss_weight / N = loss_weight * l_eps / count`` (Eq. 4-6), over ``direction``.

        ``momentum`` plays no role here and the buffers are left untouched.
        """
        # |direction| in place: the buffer is overwritten with the weights below anyway.
        windows = sorted_windows_(direction.abs_(), self.bins, mask)
        sorted_weights = windows.lengths.mul_(self.loss_weight).div_(windows.counts)
        sorted_weights.masked_fill_(windows.counts == 0, 0.0)  # invalid elements (no window of their own)
        weights = direction.view(-1)
        weights.index_copy_(0, windows.order, sorted_weights)
        return weights.view_as(direction), torch.empty_like(direction)

    def _total(self, valid: Tensor | None, like: Tensor) -> Tensor:
        """Normaliser N, floored at 1: valid elements (GHM-C) or the sum of valid weights (GHM-R)."""
        if valid is None:
            return torch.full((), float(max(like.numel(), 1)), dtype=torch.float32, device=like.device)
        if self.total_is_weight_sum:
            per_entry = valid.to(torch.float32).clamp(min=0.0)
        else:
            per_entry = (valid > 0).to(torch.float32)
        total = per_entry.sum()
        if valid.dim() == 1:
            total = total * like.shape[1]
        return total.clamp(min=1.0)

    # --- the single optional host synchronisation ---------------------------------------------------------

    def _check_inputs(self, loss: Tensor, pred: Tensor, target: Tensor) -> None:
        """Raise ValueError on non-finite inputs or inadmissible targets, before any buffer is written.

        A non-finite element anywhere (valid or not) makes the loss sum non-finite, so the fast check is a
        single read-back of one flag; the inputs are inspected only on failure.
        """
        ok = torch.isfinite(loss)
        if target.numel() > 0:
            targets_ok = self._targets_in_range(target)
            if targets_ok is not None:
                ok = ok & targets_ok
        local_ok = ok
        if self.sync_stats:  # all ranks raise, or none: one leaving the collectives would hang the others
            ok = all_ranks_ok(ok)
        if bool(ok):
            return
        owner = type(self).__name__
        if bool(local_ok):
            raise NonFiniteInputError(
                f"{owner}: bad inputs (non-finite values or targets out of range) on another rank; "
                "the statistics were not updated"
            )
        for name, tensor in ((self.pred_name, pred), (self.target_name, target)):
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise NonFiniteInputError(
                    f"{owner}: {name} contains {bad} non-finite value(s) (nan/inf) out of {tensor.numel()}; "
                    "the statistics were not updated"
                )
        message = self._describe_bad_targets(target)
        if message is not None:
            raise ValueError(f"{owner}: {message}; the statistics were not updated")
        largest = float(pred.abs().max()) if pred.numel() else 0.0
        raise NonFiniteInputError(
            f"{owner}: the loss overflowed float32 although the inputs are finite "
            f"(max |{self.pred_name}| = {largest:.3g}); the statistics were not updated"
        )

    # --- module plumbing ----------------------------------------------------------------------------------

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> GradientHarmonizedLoss:
        # Statistics are float32 by design: follow device moves, ignore dtype casts (.half() would overflow
        # the counts, .double() would change the released code's float32 arithmetic).
        before = {name: self._buffers[name] for name in self._float32_buffers}
        super()._apply(fn, recurse)
        for name, kept in before.items():
            moved = self._buffers[name]
            if moved is not None and moved.dtype != torch.float32:
                self._buffers[name] = kept.to(device=moved.device)
        return self

    def extra_repr(self) -> str:
        return (
            f"bins={self.bins}, momentum={self.momentum}, loss_weight={self.loss_weight}, "
            f"density={self.density!r}, sync_stats={self.sync_stats}, check_finite={self.check_finite}"
        )


def _nothing_to_commit() -> None:
    return None
