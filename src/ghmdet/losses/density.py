"""Gradient density and harmonizing weights.

Paper equations (numbering of the AAAI version):

* Eq. (4)  ``GD(g) = 1 / l_eps(g) * sum_k delta_eps(g_k, g)``, ``delta_eps(x, y) = 1`` if
  ``y - eps/2 <= x < y + eps/2``.
* Eq. (5)  ``l_eps(g) = min(g + eps/2, 1) - max(g - eps/2, 0)``.
* Eq. (6)  ``beta_i = N / GD(g_i)``;  Eq. (8) ``L_GHM-C = 1/N * sum_i beta_i * CE_i``.
* Eq. (9)-(10)  unit regions: ``M = 1/eps`` equal bins, ``GD(g) ~= R_ind(g) * M``.
* Eq. (11)-(12)  EMA: ``S_j <- alpha * S_j + (1 - alpha) * R_j``, ``GD(g) ~= S_ind(g) * M``.

The released code (reproduced by :func:`update_bin_ema` and :func:`unit_region_weights`) divides by ``n``,
the number of non-empty bins of the call, where the paper's approximation multiplies by ``M``; it updates
only non-empty bins and starts the sums at 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def update_bin_ema(acc_sum: Tensor, counts: Tensor, momentum: float) -> Tensor:
    """Eq. (12) on every bin counted in this call; empty bins keep their sum (no decay). Returns a new tensor.

    ``momentum == 0`` returns the sums unchanged: the released code then uses the raw counts and never
    writes the buffer. The update is evaluated as the released code does it, ``momentum * S`` in float32 plus
    ``(1 - momentum) * R`` rounded from double, so the buffers agree bit for bit.
    """
    if momentum == 0:
        return acc_sum.clone()
    fresh = ((1.0 - momentum) * counts.to(torch.float64)).to(torch.float32)
    updated = momentum * acc_sum + fresh
    return torch.where(counts > 0, updated, acc_sum)


def unit_region_weights(counts: Tensor, acc_sum: Tensor, momentum: float, total: Tensor | float) -> Tensor:
    """Per-bin harmonizing weight ``beta_j`` (float32 ``[bins]``), Eq. (6) with the unit-region density.

    ``beta_j = (N / D_j) / n`` with ``D_j`` the EMA sum ``S_j`` (already updated with this call's counts,
    :func:`update_bin_ema`) when ``momentum > 0`` and the raw count ``R_j`` otherwise; ``n`` is the number of
    non-empty bins (at least 1) and ``N = total`` the loss normaliser. Empty bins get 0. Useful on its own to
    log the effective weight per bin.
    """
    nonempty = counts > 0
    density = acc_sum if momentum > 0 else counts.to(torch.float32)
    num_nonempty = nonempty.sum().clamp(min=1).to(torch.float32)
    total = torch.as_tensor(total, dtype=torch.float32, device=counts.device)
    beta = (total / density) / num_nonempty
    return torch.where(nonempty, beta, torch.zeros_like(beta))


class SortedWindows(NamedTuple):
    """Exact-density window statistics in ascending-g order (see :func:`exact_sorted_windows`)."""

    order: Tensor
    """int64 positions (into the flattened input) of the sorted values."""
    counts: Tensor
    """int32 number of valid g_k in the window of each sorted value (0 for invalid elements)."""
    lengths: Tensor
    """float32 window length ``l_eps`` (Eq. 5) of each sorted value."""


def exact_sorted_windows(g: Tensor, bins: int, valid: Tensor | None = None) -> SortedWindows:
    """Window counts of Eq. (4) for every element, in O(N log N), without host synchronisation.

    ``eps = 1 / bins``. Element k is in the window of element i when ``lo_i <= g_k < hi_i`` with the float32
    bounds ``lo_i = g_i - eps/2`` and ``hi_i = g_i + eps/2``: so ``count_i = #{g < hi_i} - #{g < lo_i}``,
    two binary searches in the sorted values. Only valid elements are counted (``valid``: bool, broadcastable
    to ``g``); invalid ones are replaced by +inf, which sorts last and lies in no finite window.
    """
    return sorted_windows_(g.detach().to(torch.float32).abs(), bins, valid)


def sorted_windows_(norms: Tensor, bins: int, valid: Tensor | None = None) -> SortedWindows:
    """:func:`exact_sorted_windows` on a float32 tensor of non-negative values that it may overwrite.

    The sort runs on the float32 bit patterns viewed as int32: for non-negative floats (+0.0, not -0.0) the
    order is the same, and PyTorch sorts 32-bit integers with a radix sort, several times faster than its
    float sort on CPU.
    """
    if valid is not None:
        norms.masked_fill_(~valid.expand(norms.shape), float("inf"))
    sorted_keys, order = torch.sort(norms.reshape(-1).view(torch.int32), stable=True)
    sorted_values = sorted_keys.view(torch.float32)
    half_width = 0.5 / bins
    bound = torch.add(sorted_values, half_width)
    counts = torch.searchsorted(sorted_keys, bound.view(torch.int32), out_int32=True)
    torch.sub(sorted_values, half_width, out=bound)
    # Negative lower bounds have negative int32 patterns, below every key: their count is 0, as it should be.
    below = torch.searchsorted(sorted_keys, bound.view(torch.int32), out_int32=True)
    counts.sub_(below)
    # Eq. (5): l = min(g + eps/2, 1) - max(g - eps/2, 0), the bounds recomputed exactly as above.
    lengths = torch.add(sorted_values, half_width, out=below.view(torch.float32)).clamp_(max=1.0)
    lengths.sub_(bound.clamp_(min=0.0))
    return SortedWindows(order=order, counts=counts, lengths=lengths)


def _unsort(sorted_values: Tensor, order: Tensor, shape: torch.Size) -> Tensor:
    out = torch.empty(order.numel(), dtype=sorted_values.dtype, device=sorted_values.device)
    out.index_copy_(0, order, sorted_values)
    return out.view(shape)


def exact_window_counts(g: Tensor, bins: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(counts, lengths)`` of Eq. (4)-(5) for every element, in the layout of ``g``."""
    windows = exact_sorted_windows(g, bins, valid)
    return _unsort(windows.counts, windows.order, g.shape), _unsort(windows.lengths, windows.order, g.shape)


def exact_gradient_density(g: Tensor, bins: int, valid: Tensor | None = None) -> Tensor:
    """The paper's "standard" gradient density ``GD(g_i)`` of Eq. (4) (float32, 0 for invalid elements).

    The harmonizing weight of Eq. (6) is ``N / GD`` with ``N`` the number of valid elements.
    """
    windows = exact_sorted_windows(g, bins, valid)
    density = windows.counts.to(torch.float32).div_(windows.lengths)
    density.masked_fill_(windows.counts == 0, 0.0)
    return _unsort(density, windows.order, g.shape)
