"""Gradient-norm analysis (paper Fig. 1-5): why GHM works, from real checkpoints.

The live view during training is the callback :class:`ghmdet.callbacks.GradientNormLogger`.

==================  ==========================================================================================
module              what it holds
==================  ==========================================================================================
``norms``           g (Eq. 3) and gr (Eq. 14) of one loss call; :class:`GradientNorms` of a whole set
``collect``         :func:`collect_gradient_norms`: a model + a data loader -> :class:`GradientNorms`
``reweighting``     the per-example gradient norm of CE, FL, GHM-C (unit / exact), SL1, ASL1, GHM-R
``per_bin``         histogram of g and per-bin total contribution
``figures``         the paper's figures, one panel per model
``runs``            load a ``ghmdet-train`` checkpoint back; train a short run
``publish``         PNG files, JSON summary, W&B
==================  ==========================================================================================

See ``docs/analysis.md`` and ``notebooks/gradient_norms.py``.
"""

from __future__ import annotations

from ghmdet.analysis.collect import (
    RecordingLoss,
    collect_gradient_norms,
    loss_evaluation_mode,
    recorded_loss_inputs,
)
from ghmdet.analysis.figures import (
    curve_points,
    figure_g_distribution,
    figure_gr_distribution,
    figure_regression_gradients,
    figure_reweighted_norms,
    figure_total_contribution,
    paper_figures,
)
from ghmdet.analysis.norms import (
    ClassificationNorms,
    GradientNorms,
    RegressionNorms,
    classification_norms,
    regression_norms,
)
from ghmdet.analysis.per_bin import (
    contribution_shares,
    histogram_edges,
    norm_bin_index,
    norm_histogram,
    per_bin_total,
)
from ghmdet.analysis.publish import log_to_wandb, resolve_wandb_mode, save_figures, write_summary
from ghmdet.analysis.reweighting import (
    FL_BALANCED,
    asl1_gradient_norm,
    ce_gradient_norm,
    classification_reweightings,
    focal_gradient_norm,
    harmonized_gradient_norm,
    harmonizing_weights,
    smooth_l1_gradient_norm,
)
from ghmdet.analysis.runs import (
    LOSS_PAIRS,
    LoadedRun,
    analysis_loader,
    benchmark_run_overrides,
    checkpoint_path,
    load_run,
    short_run_overrides,
    train_run,
)

__all__ = [
    "FL_BALANCED",
    "LOSS_PAIRS",
    "ClassificationNorms",
    "GradientNorms",
    "LoadedRun",
    "RecordingLoss",
    "RegressionNorms",
    "analysis_loader",
    "asl1_gradient_norm",
    "benchmark_run_overrides",
    "ce_gradient_norm",
    "checkpoint_path",
    "classification_norms",
    "classification_reweightings",
    "collect_gradient_norms",
    "contribution_shares",
    "curve_points",
    "figure_g_distribution",
    "figure_gr_distribution",
    "figure_regression_gradients",
    "figure_reweighted_norms",
    "figure_total_contribution",
    "focal_gradient_norm",
    "harmonized_gradient_norm",
    "harmonizing_weights",
    "histogram_edges",
    "load_run",
    "log_to_wandb",
    "loss_evaluation_mode",
    "norm_bin_index",
    "norm_histogram",
    "paper_figures",
    "per_bin_total",
    "recorded_loss_inputs",
    "regression_norms",
    "resolve_wandb_mode",
    "save_figures",
    "short_run_overrides",
    "smooth_l1_gradient_norm",
    "train_run",
    "write_summary",
]
