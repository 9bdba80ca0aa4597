"""The one histogram routine shared by GHM-C, GHM-R and the gradient-norm analysis.

Unit regions (paper Eq. 9): ``M = bins`` equal regions of [0, 1]; region ``j`` holds the g with
``edges[j] <= g < edges[j + 1]`` where ``edges = arange(M + 1) / M`` in float32, as the released code builds
them, with the last edge moved out (``1 + 1e-6`` for GHM-C so that g = 1 is counted, ``1e3`` for GHM-R).

Assigning a bin must agree with comparisons against those float32 edges. ``floor(g * M)`` alone can disagree
within an ulp of an edge (e.g. for M = 20 or 40) because ``i / M`` is rounded. :func:`floor_binning_is_exact`
decides, once and on the host, whether the float32 product ``g * M`` followed by truncation reproduces the
edges exactly (it does for M = 5, 10, 30 among others); if not, :func:`bin_index` applies a one-step
correction by comparing against the edges themselves. Both paths are branch-free tensor code without host
synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

GHMC_LAST_EDGE = 1.0 + 1e-6
"""Last edge of GHM-C (released code: ``edges[-1] += 1e-6``) so that g = 1 falls in the last bin."""

GHMR_LAST_EDGE = 1e3
"""Last edge of GHM-R (released code: ``edges[-1] = 1e3``)."""


def bin_edges(bins: int, last_edge: float | None = None) -> Tensor:
    """Float32 edges ``i / bins``, ``i = 0..bins`` (on the CPU), the last one replaced by ``last_edge``."""
    if bins < 1:
        raise ValueError(f"bin_edges: bins must be >= 1, got {bins}")
    edges = torch.arange(bins + 1, dtype=torch.float32) / bins
    if last_edge is not None:
        edges[-1] = last_edge
    return edges


def floor_binning_is_exact(edges: Tensor) -> bool:
    """True when ``clamp(trunc(float32(g * M)), 0, M - 1)`` equals the edge comparison for every float32 g
    in ``[0, edges[-1])``.

    Both maps are monotone step functions of g, so it suffices that they step at the same place: for each
    inner edge ``e_i`` the product must reach ``i`` at ``e_i`` and stay below it at the next float down.
    Runs on the host (call it once, at construction).
    """
    edges32 = edges.detach().to("cpu", torch.float32)
    bins = edges32.numel() - 1
    if bins < 1 or float(edges32[0]) != 0.0:
        return False
    inner = edges32[1:bins]
    levels = torch.arange(1, bins, dtype=torch.float32)
    just_below = torch.nextafter(inner, torch.tensor(float("-inf")))
    reaches = bool(((inner * bins).floor() >= levels).all())
    stays_below = bool(((just_below * bins).floor() < levels).all())
    return reaches and stays_below


def bin_index(
    values: Tensor,
    edges: Tensor,
    *,
    take_abs: bool = False,
    floor_exact: bool | None = None,
    assume_in_range: bool = False,
) -> Tensor:
    """Unit-region index of each value: int32 in ``[0, bins)``, or ``bins`` (an overflow slot) for values
    outside ``[edges[0], edges[-1])`` and NaN.

    Args:
        values: gradient norms g (any shape, float32), or signed gradients with ``take_abs=True`` (bins
            ``|values|`` without materialising it).
        edges: ``bins + 1`` increasing float32 edges (:func:`bin_edges`).
        floor_exact: result of :func:`floor_binning_is_exact` for ``edges``; None computes it here (a host
            round trip: pass it from a cached value in hot code).
        assume_in_range: the caller guarantees ``edges[0] <= g < edges[-1]`` (true for a GHM gradient norm
            of finite inputs with targets in [0, 1]); skips the overflow test. Values that break the promise
            are clamped into the end bins instead of the overflow slot.
    """
    bins = edges.numel() - 1
    if floor_exact is None:
        floor_exact = floor_binning_is_exact(edges)
    # On CPU, write g * M into the index's own storage and convert in place (an element-wise copy between
    # two fully overlapping views): it saves allocating and page-faulting a second input-sized buffer, which
    # costs as much as the arithmetic there. Other devices have caching allocators and get a plain buffer.
    convert_in_place = values.device.type == "cpu"
    if convert_in_place:
        index = torch.empty(values.shape, dtype=torch.int32, device=values.device)
        scaled = index.view(torch.float32)
    else:
        scaled = torch.empty(values.shape, dtype=torch.float32, device=values.device)
    if take_abs:
        torch.abs(values, out=scaled)
        scaled.mul_(bins)
    else:
        torch.mul(values, bins, out=scaled)
    # Truncation == floor for the non-negative values binned here.
    index = index.copy_(scaled) if convert_in_place else scaled.to(torch.int32)
    index.clamp_(0, bins - 1)
    if floor_exact and assume_in_range:
        return index
    norms = values.abs() if take_abs else values
    edges_here = edges.to(device=values.device, dtype=torch.float32)
    if not floor_exact:
        # The float candidate k is off by at most one bin, and only within ulps of an edge:
        # bin = k - 1 + [g >= e_k] + [g >= e_(k+1)], both edges gathered with the same candidate.
        flat_index = index.view(-1)
        bound = edges_here.index_select(0, flat_index).view_as(index)
        reaches_lower = norms >= bound
        torch.index_select(edges_here[1:], 0, flat_index, out=bound.view(-1))
        reaches_upper = norms >= bound
        index.add_(reaches_lower).add_(reaches_upper).sub_(1)
        if assume_in_range:
            index.clamp_(0, bins - 1)
    if not assume_in_range:
        inside = (norms >= edges_here[0]) & (norms < edges_here[-1])
        index.masked_fill_(~inside, bins)
    return index


def bin_counts(index: Tensor, bins: int, valid: Tensor | None = None) -> Tensor:
    """Number of elements per unit region (int64 ``[bins]``), Eq. (9)'s ``R_j``.

    ``index`` holds values in ``[0, bins]``; the overflow slot ``bins`` is not counted. ``valid`` (bool,
    broadcastable to ``index``) excludes elements. Uses ``index_add_`` rather than ``bincount`` because the
    latter reads the maximum back to the host on CUDA.
    """
    if valid is not None:
        index = index.masked_fill(~valid, bins)
    flat = index.reshape(-1)
    ones = torch.ones(1, dtype=torch.int64, device=index.device).expand(flat.numel())
    counts = torch.zeros(bins + 1, dtype=torch.int64, device=index.device)
    counts.index_add_(0, flat, ones)
    return counts[:bins]
