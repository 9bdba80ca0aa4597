"""The learning-rate schedule: linear warm-up, step milestones as fractions of training, cosine."""

from __future__ import annotations

import math

import pytest

from ghmdet.lit import lr_factor


def test_linear_warmup_from_ratio() -> None:
    assert lr_factor(0, 1000, warmup_iters=100, warmup_ratio=1 / 3) == pytest.approx(1 / 3)
    assert lr_factor(50, 1000, warmup_iters=100, warmup_ratio=1 / 3) == pytest.approx(1 / 3 + (2 / 3) * 0.5)
    assert lr_factor(100, 1000, warmup_iters=100, warmup_ratio=1 / 3) == pytest.approx(1.0)


def test_step_milestones_follow_the_released_recipe() -> None:
    total = 12 * 100  # 12 epochs of 100 iterations: x0.1 after epochs 8 and 11
    kw = {"warmup_iters": 0, "milestones": (8 / 12, 11 / 12), "gamma": 0.1}
    assert lr_factor(799, total, **kw) == pytest.approx(1.0)
    assert lr_factor(800, total, **kw) == pytest.approx(0.1)
    assert lr_factor(1099, total, **kw) == pytest.approx(0.1)
    assert lr_factor(1100, total, **kw) == pytest.approx(0.01)


def test_cosine_reaches_min_factor() -> None:
    kw = {"warmup_iters": 0, "policy": "cosine", "min_factor": 0.05}
    assert lr_factor(0, 100, **kw) == pytest.approx(1.0)
    assert lr_factor(50, 100, **kw) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(100, 100, **kw) == pytest.approx(0.05)


def test_unknown_policy_is_named() -> None:
    with pytest.raises(ValueError, match="'linear'"):
        lr_factor(0, 10, policy="linear")
