"""Every Lightning callback of the suite, one file each (``conf/callbacks/`` names them by these paths).

=========================  ==========================================================================
``IterationTimer``         seconds per training iteration (run record, ablation timing table)
``PredictionImages``       test images with ground truth and predictions drawn, to the run dir and W&B
``GradientNormLogger``     histograms of g / gr and GHM's EMA counts and weights, live in W&B
``GHMStateCheck``          under DDP: every rank holds the same synchronised GHM statistics
``EvalCoverageCheck``      under DDP: each evaluation pass saw every image of its split exactly once
``DivergenceGuard``        stops a run whose weights stop being finite; no checkpoint saves that state
``RunCheckpoints``         ``last.ckpt`` holds the run's config and final step, and is saved on a stop
=========================  ==========================================================================
"""

from ghmdet.callbacks.divergence_guard import DivergenceGuard
from ghmdet.callbacks.eval_coverage_check import EvalCoverageCheck
from ghmdet.callbacks.ghm_state_check import GHMStateCheck
from ghmdet.callbacks.gradient_norm_logger import GradientNormLogger
from ghmdet.callbacks.iteration_timer import IterationTimer
from ghmdet.callbacks.prediction_images import PredictionImages
from ghmdet.callbacks.run_checkpoints import RunCheckpoints

__all__ = [
    "DivergenceGuard",
    "EvalCoverageCheck",
    "GHMStateCheck",
    "GradientNormLogger",
    "IterationTimer",
    "PredictionImages",
    "RunCheckpoints",
]
