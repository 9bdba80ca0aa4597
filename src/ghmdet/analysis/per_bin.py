"""Per-bin statistics of gradient norms: the histogram of g (paper Fig. 1 left, Fig. 2, Fig. 4) and the total
gradient contribution of each bin (Fig. 1 right).

Bins are the unit regions of :mod:`ghmdet.losses.histogram` (``bins`` equal regions of [0, 1], the last one
closed so that g = 1 counts), assigned by the same :func:`~ghmdet.losses.bin_index` routine the GHM losses
use. Values outside [0, 1] (and NaN) fall in no bin.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from ghmdet.losses import GHMC_LAST_EDGE, bin_counts, bin_edges, bin_index, floor_binning_is_exact


@lru_cache(maxsize=32)
def _unit_edges(bins: int) -> tuple[Tensor, bool]:
    edges = bin_edges(bins, GHMC_LAST_EDGE)
    return edges, floor_binning_is_exact(edges)


def histogram_edges(bins: int) -> Tensor:
    """Float32 edges ``i / bins`` of the unit regions on the CPU, the last one exactly 1 (for plotting)."""
    return bin_edges(bins, 1.0)


def norm_bin_index(norms: Tensor, bins: int) -> Tensor:
    """Unit-region index of each norm in [0, 1] (int32, ``bins`` for values outside [0, 1] or NaN)."""
    edges, floor_exact = _unit_edges(bins)
    return bin_index(norms.detach().to(torch.float32), edges, floor_exact=floor_exact)


def norm_histogram(norms: Tensor, bins: int, valid: Tensor | None = None) -> Tensor:
    """Number of norms per unit region (int64 ``[bins]``, on the device of ``norms``).

    ``valid`` (bool, broadcastable to ``norms``) excludes elements without copying the valid ones out, so the
    histogram of all valid (anchor, class) pairs costs one pass and no host synchronisation.
    """
    index = norm_bin_index(norms, bins)
    if valid is not None:
        valid = valid.expand(index.shape)
    return bin_counts(index, bins, valid)


def per_bin_total(norms: Tensor, values: Tensor, bins: int) -> Tensor:
    """Sum of ``values`` over the elements of each unit region of ``norms`` (float64 ``[bins]``).

    With ``values`` the reweighted gradient norms of a loss, this is the total gradient contribution per
    bin (count x mean reweighted norm) of the paper's Fig. 1 (right).
    """
    if values.shape != norms.shape:
        raise ValueError(f"per_bin_total: values {tuple(values.shape)} must match norms {tuple(norms.shape)}")
    index = norm_bin_index(norms, bins).reshape(-1).to(torch.int64)
    totals = torch.zeros(bins + 1, dtype=torch.float64, device=norms.device)
    totals.index_add_(0, index, values.detach().reshape(-1).to(torch.float64))
    return totals[:bins]


def contribution_shares(norms: Tensor, reweighted: Mapping[str, Tensor], bins: int) -> dict[str, np.ndarray]:
    """For each loss (label -> reweighted norm per element), the fraction of its total gradient that each
    unit region of ``norms`` contributes (float64 ``[bins]``, summing to 1; Fig. 1 right, normalised so that
    losses with different normalisers compare)."""
    shares = {}
    for label, values in reweighted.items():
        totals = per_bin_total(norms, values, bins).cpu().numpy()
        shares[label] = totals / max(float(totals.sum()), np.finfo(np.float64).tiny)
    return shares
