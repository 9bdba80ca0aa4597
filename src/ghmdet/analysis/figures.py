"""The paper's gradient-norm figures, one panel per trained model (side by side), from collected norms.

=====================================  ============================================================
function                               paper
=====================================  ============================================================
:func:`figure_g_distribution`          Fig. 1 (left) / Fig. 2: distribution of g, log y
:func:`figure_reweighted_norms`        Fig. 3: reweighted gradient norm vs g (CE, FL, GHM-C)
:func:`figure_total_contribution`      Fig. 1 (right): total gradient contribution per g bin
:func:`figure_gr_distribution`         Fig. 4: distribution of gr (ASL1, mu = 0.02)
:func:`figure_regression_gradients`    Fig. 5: SL1, ASL1 and GHM-R gradient vs |d|
=====================================  ============================================================

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot state) and render
with the Agg backend when saved, so they work headless. ``norms_by_model`` maps a panel title (e.g.
``"CE + SL1"``) to the :class:`~ghmdet.analysis.norms.GradientNorms` of that model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ghmdet.analysis.norms import GradientNorms
from ghmdet.analysis.per_bin import contribution_shares, histogram_edges, norm_histogram
from ghmdet.analysis.reweighting import (
    FL_BALANCED,
    asl1_gradient_norm,
    classification_reweightings,
    harmonized_gradient_norm,
    smooth_l1_gradient_norm,
)
from ghmdet.losses import GHMR_LAST_EDGE

NormsByModel = Mapping[str, GradientNorms]
REWEIGHTED_NORM_FLOOR = 1e-6
"""Lower y limit of Fig. 3: below it the curves only show FL's g^3 tail."""


# ---------------------------------------------------------------------------------------------- helpers


def _panels(norms_by_model: NormsByModel, title: str) -> tuple[Figure, list[Axes]]:
    if not norms_by_model:
        raise ValueError("norms_by_model is empty: give at least one model's gradient norms")
    count = len(norms_by_model)
    fig = Figure(figsize=(5.2 * count, 4.0), layout="constrained")
    axes = fig.subplots(1, count, sharey=True, squeeze=False)[0]
    fig.suptitle(title)
    return fig, list(axes)


def _fractions(values: Tensor, bins: int) -> np.ndarray:
    counts = norm_histogram(values, bins).numpy().astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def _step(ax: Axes, bins: int, heights: np.ndarray, **style: object) -> None:
    """Histogram heights as a step line on the unit-region edges; empty bins are left out on a log axis."""
    edges = histogram_edges(bins).numpy()
    shown = np.where(heights > 0, heights, np.nan)
    ax.stairs(shown, edges, **style)


def curve_points(x: Tensor, *ys: Tensor, num: int = 400) -> tuple[np.ndarray, list[np.ndarray]]:
    """About ``num`` points of the curves ``y(x)`` given per element (one sort of ``x`` for all ``ys``): the
    elements nearest to ``num`` evenly spaced x, an even spread where a random sample would sit in the
    spike near 0. Returns the x points and one array of y points per curve."""
    if x.numel() == 0:
        return np.zeros(0), [np.zeros(0) for _ in ys]
    xs, order = torch.sort(x)
    grid = torch.linspace(float(xs[0]), float(xs[-1]), num, dtype=xs.dtype)
    picked = torch.searchsorted(xs, grid).clamp(max=xs.numel() - 1).unique()
    elements = order[picked]
    return xs[picked].numpy(), [y[elements].numpy() for y in ys]


def _panel_title(label: str, norms: GradientNorms, what: str) -> str:
    count = norms.g.numel() if what == "pairs" else norms.gr.numel()
    return f"{label}\n{count:,} {what}, {norms.num_images} images"


# ---------------------------------------------------------------------------------------------- figures


def _style_panel(ax: Axes, xlabel: str, title: str) -> None:
    """The look every distribution panel shares: log y, g on [0, 1], a light grid."""
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)


def _label_first_panel(fig: Figure, axes: Sequence[Axes], ylabel: str) -> Figure:
    """Y label and legend on the first panel only (the panels share their y axis)."""
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    return fig


def figure_g_distribution(norms_by_model: NormsByModel, bins: int = 100) -> Figure:
    """Fig. 1 (left) / Fig. 2: fraction of the valid (anchor, class) pairs per g bin, log y; all pairs and,
    thinner, the negatives and positives apart."""
    fig, axes = _panels(norms_by_model, "Distribution of the gradient norm g = |p - p*| (paper Fig. 1/2)")
    for ax, (label, norms) in zip(axes, norms_by_model.items()):
        total = max(norms.g.numel(), 1)
        _step(ax, bins, _fractions(norms.g, bins), label="all pairs", color="black", linewidth=1.8)
        for name, mask, color in (
            ("negatives", ~norms.positive, "tab:blue"),
            ("positives", norms.positive, "tab:red"),
        ):
            counts = norm_histogram(norms.g[mask], bins).numpy().astype(np.float64)
            _step(ax, bins, counts / total, label=name, color=color, linewidth=1.0, alpha=0.8)
        _style_panel(ax, "gradient norm g", _panel_title(label, norms, "pairs"))
    return _label_first_panel(fig, axes, "fraction of examples")


def figure_reweighted_norms(norms_by_model: NormsByModel, ghm_bins: int = 30) -> Figure:
    """Fig. 3: reweighted gradient norm vs g for CE, FL (gamma 2) and GHM-C (unit regions and exact
    density, from each model's own distribution of g), log y."""
    fig, axes = _panels(norms_by_model, "Reweighted gradient norm vs g (paper Fig. 3)")
    for ax, (label, norms) in zip(axes, norms_by_model.items()):
        curves = classification_reweightings(norms, ghm_bins)
        # FL alpha-balanced depends on the label, not on g alone: it is in the contribution figure
        curves.pop(FL_BALANCED)
        x, ys = curve_points(norms.g, *curves.values())
        for name, y in zip(curves, ys):
            ax.plot(x, y, label=name, linewidth=1.5, drawstyle="steps-mid" if "M=" in name else "default")
        _style_panel(ax, "original gradient norm g", _panel_title(label, norms, "pairs"))
        # FL's g^3 reaches ~1e-18 at the easiest pairs; the paper's plot (and any effect on training) ends
        # far above that, so clip the axis where the curves are still distinguishable
        ax.set_ylim(bottom=REWEIGHTED_NORM_FLOOR)
    return _label_first_panel(fig, axes, "reweighted gradient norm")


def figure_total_contribution(norms_by_model: NormsByModel, bins: int = 100, ghm_bins: int = 30) -> Figure:
    """Fig. 1 (right): each loss's total gradient contribution per g bin (count x reweighted norm), as a
    fraction of that loss's total, log y: CE is dominated by the easy pairs, GHM-C flattens it."""
    fig, axes = _panels(norms_by_model, "Total gradient contribution per g bin (paper Fig. 1, right)")
    for ax, (label, norms) in zip(axes, norms_by_model.items()):
        reweighted = classification_reweightings(norms, ghm_bins)
        for name, share in contribution_shares(norms.g, reweighted, bins).items():
            _step(ax, bins, share, label=name, linewidth=1.5)
        _style_panel(ax, "gradient norm g", _panel_title(label, norms, "pairs"))
    return _label_first_panel(fig, axes, "fraction of the total gradient")


def figure_gr_distribution(norms_by_model: NormsByModel, bins: int = 100) -> Figure:
    """Fig. 4: fraction of the positive anchors' box deltas per gr bin, gr = |d| / sqrt(d^2 + mu^2), log y."""
    mu = next(iter(norms_by_model.values())).mu if norms_by_model else 0.02
    fig, axes = _panels(
        norms_by_model, rf"Distribution of the regression gradient norm gr ($\mu={mu:g}$, paper Fig. 4)"
    )
    for ax, (label, norms) in zip(axes, norms_by_model.items()):
        _step(ax, bins, _fractions(norms.gr, bins), color="black", linewidth=1.8)
        _style_panel(ax, "gradient norm gr", _panel_title(label, norms, "deltas"))
    axes[0].set_ylabel("fraction of deltas")
    return fig


def figure_regression_gradients(
    norms_by_model: NormsByModel, ghm_bins: int = 10, sl1_beta: float = 1.0 / 9.0
) -> Figure:
    """Fig. 5: gradient norm vs |d| for SL1 and ASL1 (closed forms) and GHM-R (weights from each model's
    distribution of gr), log y."""
    fig, axes = _panels(norms_by_model, "Regression gradient norm vs |d| (paper Fig. 5)")
    for ax, (label, norms) in zip(axes, norms_by_model.items()):
        high = float(torch.quantile(norms.abs_d, 0.995)) if norms.abs_d.numel() else 1.0
        grid = torch.linspace(1e-4, max(high, 0.5), 400)
        ax.plot(
            grid.numpy(),
            smooth_l1_gradient_norm(grid, sl1_beta).numpy(),
            label=rf"SL1 ($\beta={sl1_beta:.2g}$)",
        )
        ax.plot(grid.numpy(), asl1_gradient_norm(grid, norms.mu).numpy(), label=rf"ASL1 ($\mu={norms.mu:g}$)")
        ghm_r = harmonized_gradient_norm(norms.gr, ghm_bins, "unit", GHMR_LAST_EDGE)
        x, (y,) = curve_points(norms.abs_d, ghm_r)
        ax.plot(x, y, label=f"GHM-R (M={ghm_bins})", drawstyle="steps-mid")
        ax.set_yscale("log")
        ax.set_xlim(0, float(grid[-1]))
        ax.set_xlabel("|d| (prediction - target, encoded deltas)")
        ax.set_title(_panel_title(label, norms, "deltas"), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    return _label_first_panel(fig, axes, "gradient norm")


def paper_figures(
    norms_by_model: NormsByModel,
    bins: int = 100,
    cls_ghm_bins: int = 30,
    reg_ghm_bins: int = 10,
    sl1_beta: float = 1.0 / 9.0,
) -> dict[str, Figure]:
    """All five figures, by file stem (``fig1_g_distribution``, ...)."""
    return {
        "fig1_g_distribution": figure_g_distribution(norms_by_model, bins),
        "fig1_total_contribution": figure_total_contribution(norms_by_model, bins, cls_ghm_bins),
        "fig3_reweighted_norms": figure_reweighted_norms(norms_by_model, cls_ghm_bins),
        "fig4_gr_distribution": figure_gr_distribution(norms_by_model, bins),
        "fig5_regression_gradients": figure_regression_gradients(norms_by_model, reg_ghm_bins, sl1_beta),
    }
