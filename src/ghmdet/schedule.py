"""The learning-rate schedule: linear warm-up, then step milestones (fractions of training) or cosine decay.

``conf/scheduler/*.yaml`` are partial :func:`warmup_lr_scheduler` calls; the LightningModule completes them
with its optimizer and the run's number of optimizer steps (known only once the trainer is attached).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

Policy = Literal["step", "cosine", "constant"]


def lr_factor(
    step: int,
    total_steps: int,
    warmup_iters: int = 500,
    warmup_ratio: float = 1.0 / 3.0,
    policy: Policy = "step",
    milestones: Sequence[float] = (8 / 12, 11 / 12),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``.

    Linear warm-up from ``warmup_ratio`` to 1 over ``warmup_iters`` steps (mmdetection's 'linear'), then
    ``step``: times ``gamma`` at each milestone, given as a fraction of training so that one config serves
    epoch- and iteration-budgeted runs (paper recipe: epochs 8 and 11 of 12); or ``cosine`` to ``min_factor``.
    """
    if policy == "step":
        factor = gamma ** sum(step >= m * total_steps for m in milestones)
    elif policy == "cosine":
        progress = min(step / max(total_steps, 1), 1.0)
        factor = min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif policy == "constant":
        factor = 1.0
    else:
        raise ValueError(f"policy must be 'step', 'cosine' or 'constant', got {policy!r}")
    if step < warmup_iters:
        factor *= warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    return factor


def warmup_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_iters: int = 500,
    warmup_ratio: float = 1.0 / 3.0,
    policy: Policy = "step",
    milestones: Sequence[float] = (8 / 12, 11 / 12),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step scheduler whose factor at step ``s`` is :func:`lr_factor` ``(s, total_steps, ...)``.

    Args:
        optimizer: the optimizer whose base learning rates are scaled.
        total_steps: optimizer steps of the whole run (milestones and the cosine are fractions of it).
        warmup_iters: steps of linear warm-up.
        warmup_ratio: the factor at step 0 of the warm-up.
        policy: ``step``, ``cosine`` or ``constant`` after the warm-up.
        milestones: fractions of ``total_steps`` at which ``step`` multiplies by ``gamma``.
        gamma: the ``step`` policy's decay per milestone.
        min_factor: the ``cosine`` policy's final factor.

    Returns:
        A ``LambdaLR`` to step once per optimizer step.
    """
    kwargs = {
        "warmup_iters": warmup_iters,
        "warmup_ratio": warmup_ratio,
        "policy": policy,
        "milestones": tuple(milestones),
        "gamma": gamma,
        "min_factor": min_factor,
    }

    # a plain function, not a callable object: LambdaLR then keeps nothing of it in its state dict, so a
    # checkpoint holds plain values only
    def factor(step: int) -> float:
        return lr_factor(step, total_steps, **kwargs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
