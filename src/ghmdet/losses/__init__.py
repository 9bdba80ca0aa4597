"""Losses of the GHM suite: GHM-C, GHM-R, their baselines and the functional gradient-density layer.

Every loss is an ``nn.Module`` called as ``loss(pred, target, valid=None) -> float32 scalar``; the class
attribute ``uses_batch_statistics`` is True for the two GHM losses (their value depends on the whole call).
See ``docs/losses.md``.
"""

from __future__ import annotations

from ._validation import NonFiniteInputError
from .base import DetectionLoss
from .cross_entropy import BCELoss
from .density import (
    SortedWindows,
    exact_gradient_density,
    exact_sorted_windows,
    exact_window_counts,
    unit_region_weights,
    update_bin_ema,
)
from .focal import FocalLoss
from .ghm import GradientHarmonizedLoss
from .ghmc import GHMCLoss
from .ghmr import GHMRLoss
from .gradient_norm import asl1_gradient, gradient_norm_cls, gradient_norm_reg, sigmoid_ce_gradient
from .histogram import (
    GHMC_LAST_EDGE,
    GHMR_LAST_EDGE,
    bin_counts,
    bin_edges,
    bin_index,
    floor_binning_is_exact,
)
from .ohem import OHEMLoss
from .regression import AuthenticSmoothL1Loss, L1Loss, SmoothL1Loss
from .stats_sync import all_reduce_histogram

__all__ = [
    "GHMC_LAST_EDGE",
    "GHMR_LAST_EDGE",
    "AuthenticSmoothL1Loss",
    "BCELoss",
    "DetectionLoss",
    "FocalLoss",
    "GHMCLoss",
    "GHMRLoss",
    "GradientHarmonizedLoss",
    "L1Loss",
    "NonFiniteInputError",
    "OHEMLoss",
    "SmoothL1Loss",
    "SortedWindows",
    "all_reduce_histogram",
    "asl1_gradient",
    "bin_counts",
    "bin_edges",
    "bin_index",
    "exact_gradient_density",
    "exact_sorted_windows",
    "exact_window_counts",
    "floor_binning_is_exact",
    "gradient_norm_cls",
    "gradient_norm_reg",
    "sigmoid_ce_gradient",
    "unit_region_weights",
    "update_bin_ema",
]
