"""How each loss reweights the gradient norm: the per-example gradient magnitude w.r.t. the logit (or delta)
that CE, FL, GHM-C, SL1, ASL1 and GHM-R produce, as functions of the gradient norm (paper Fig. 3 and Fig. 5).

Classification (the loss's gradient w.r.t. the logit x of one (anchor, class) pair, g = |sigmoid(x) - p*|):

* CE, Eq. (1)-(3): ``g``.
* FL (gamma, optional alpha): ``alpha_t * g^gamma * (g - gamma (1 - g) log(1 - g))``, from
  ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``1 - p_t = g``.
* GHM-C, Eq. (6)-(8): ``g * beta``, ``beta = N / GD(g)``; GD from unit regions (Eq. 9-10, as released:
  ``beta_j = N / R_j / n``) or the exact window density (Eq. 4-5).

Regression (gradient w.r.t. one box delta, d = prediction - target):

* SL1 (switch point beta): ``min(|d| / beta, 1)``.
* ASL1, Eq. (13)-(14): ``gr = |d| / sqrt(d^2 + mu^2)``.
* GHM-R, Eq. (15)-(16): ``gr * beta`` with beta from the density of gr, as for GHM-C.

The harmonizing weight depends on the whole set of norms: pass all norms of the set the density is taken
over (e.g. every valid pair collected from a data set). Loss normalisers (number of positives, N) and
``loss_weight`` are left out: these are per-example magnitudes, comparable across losses up to a constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from ghmdet.losses import (
    GHMC_LAST_EDGE,
    bin_counts,
    bin_edges,
    bin_index,
    exact_gradient_density,
    gradient_norm_reg,
    unit_region_weights,
)

if TYPE_CHECKING:
    from ghmdet.analysis.norms import GradientNorms

Density = Literal["unit", "exact"]

FL_BALANCED = r"FL ($\gamma=2, \alpha=0.25$)"
"""Label of the alpha-balanced focal loss in :func:`classification_reweightings`: its norm depends on the
label (alpha for positives, 1 - alpha for negatives), not on g alone."""


def ce_gradient_norm(g: Tensor) -> Tensor:
    """|d CE / d x| = g (Eq. 2-3): cross-entropy does not reweight."""
    return g.detach().to(torch.float32).clone()


def focal_gradient_norm(
    g: Tensor, gamma: float = 2.0, alpha: float | None = None, positive: Tensor | None = None
) -> Tensor:
    """|d FL / d x| = ``alpha_t * g^gamma * (g - gamma (1 - g) log(1 - g))`` (paper Fig. 3's FL curve).

    ``alpha=None`` is the unbalanced focal loss; with ``alpha`` the norm is multiplied by ``alpha`` for
    positive pairs and ``1 - alpha`` for negatives, which needs ``positive`` (bool, shaped like ``g``).
    At g = 1 the log term is taken as its limit 0.
    """
    g = g.detach().to(torch.float32)
    one_minus_g = 1.0 - g
    norm = g.pow(gamma) * (g - gamma * torch.xlogy(one_minus_g, one_minus_g))
    if alpha is None:
        return norm
    if positive is None or positive.shape != g.shape:
        raise ValueError("focal_gradient_norm: alpha-balancing needs `positive` (bool) shaped like g")
    return norm * torch.where(positive, alpha, 1.0 - alpha)


def harmonizing_weights(
    norms: Tensor, bins: int, density: Density = "unit", last_edge: float = GHMC_LAST_EDGE
) -> Tensor:
    """``beta_i = N / GD(g_i)`` (Eq. 6) of every norm, the density taken over all of ``norms`` (N of them).

    ``density="unit"``: ``bins`` unit regions without EMA, normalised as the released GHM losses
    (``beta_j = N / R_j / n``, n = number of non-empty regions; the paper's Eq. 10 writes M for n, equal when
    no region is empty); values outside ``[0, last_edge)`` get 0. ``density="exact"``: Eq. (4)-(5) with
    window ``1 / bins``. A uniform distribution of g gives beta = 1 under both.
    """
    norms = norms.detach().to(torch.float32)
    total = float(max(norms.numel(), 1))
    if density == "exact":
        gd = exact_gradient_density(norms, bins)
        return torch.where(gd > 0, total / gd, torch.zeros_like(gd))
    if density != "unit":
        raise ValueError(f"harmonizing_weights: density must be 'unit' or 'exact', got {density!r}")
    edges = bin_edges(bins, last_edge)
    index = bin_index(norms, edges)
    counts = bin_counts(index, bins)
    beta = unit_region_weights(counts, counts.to(torch.float32), momentum=0.0, total=total)
    table = torch.cat([beta, beta.new_zeros(1)])  # slot `bins`: values outside the edges
    return table[index.to(torch.int64)]


def harmonized_gradient_norm(
    norms: Tensor, bins: int, density: Density = "unit", last_edge: float = GHMC_LAST_EDGE
) -> Tensor:
    """GHM's reweighted gradient norm ``g * beta`` (GHM-C: Fig. 3; GHM-R on gr: Fig. 5)."""
    norms = norms.detach().to(torch.float32)
    return norms * harmonizing_weights(norms, bins, density, last_edge)


def smooth_l1_gradient_norm(abs_d: Tensor, beta: float = 1.0 / 9.0) -> Tensor:
    """|d SL1 / d d| = ``min(|d| / beta, 1)`` (``beta = 0``: L1, norm 1)."""
    abs_d = abs_d.detach().to(torch.float32).abs()
    if beta == 0:
        return torch.ones_like(abs_d)
    return torch.clamp(abs_d / beta, max=1.0)


def asl1_gradient_norm(abs_d: Tensor, mu: float = 0.02) -> Tensor:
    """|d ASL1 / d d| = ``gr = |d| / sqrt(d^2 + mu^2)`` (Eq. 14)."""
    abs_d = abs_d.detach().to(torch.float32)
    return gradient_norm_reg(abs_d, torch.zeros_like(abs_d), mu)


def classification_reweightings(norms: GradientNorms, ghm_bins: int = 30) -> dict[str, Tensor]:
    """The reweighted gradient norm of every pair under each classification loss the paper compares
    (label -> tensor shaped like ``norms.g``): CE, FL (gamma 2) unbalanced and alpha-balanced (0.25), GHM-C
    with ``ghm_bins`` unit regions and with the exact density (window ``1 / ghm_bins``), the density taken
    over all of ``norms.g``."""
    g = norms.g
    return {
        "CE": ce_gradient_norm(g),
        r"FL ($\gamma=2$)": focal_gradient_norm(g, gamma=2.0),
        r"FL ($\gamma=2, \alpha=0.25$)": focal_gradient_norm(
            g, gamma=2.0, alpha=0.25, positive=norms.positive
        ),
        f"GHM-C (M={ghm_bins})": harmonized_gradient_norm(g, ghm_bins, "unit"),
        rf"GHM-C exact ($\epsilon=1/{ghm_bins}$)": harmonized_gradient_norm(g, ghm_bins, "exact"),
    }
