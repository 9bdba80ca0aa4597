"""Baselines: focal = torchvision, OHEM row selection, regression closed forms, normalisers, config groups."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ghmdet.losses import (
    AuthenticSmoothL1Loss,
    BCELoss,
    FocalLoss,
    GHMCLoss,
    GHMRLoss,
    L1Loss,
    OHEMLoss,
    SmoothL1Loss,
)


def cls_batch(seed: int = 0, rows: int = 40, classes: int = 5):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=generator) * 2
    targets = torch.zeros(rows, classes)
    positive_rows = torch.randperm(rows, generator=generator)[:6]
    targets[positive_rows, torch.randint(0, classes, (6,), generator=generator)] = 1.0
    return logits, targets


def test_config_groups_name_every_loss(cls_losses: dict[str, type], reg_losses: dict[str, type]) -> None:
    assert {"ce": BCELoss, "focal": FocalLoss, "ohem": OHEMLoss, "ghmc": GHMCLoss} == cls_losses
    assert {
        "l1": L1Loss,
        "smooth_l1": SmoothL1Loss,
        "asl1": AuthenticSmoothL1Loss,
        "ghmr": GHMRLoss,
    } == reg_losses


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 1.0), (None, 2.0)])
def test_focal_equals_torchvision(alpha: float | None, gamma: float) -> None:
    logits, targets = cls_batch()
    x = logits.clone().requires_grad_()
    got = FocalLoss(alpha=alpha, gamma=gamma)(x, targets)
    got.backward()
    x_ref = logits.clone().requires_grad_()
    expected = sigmoid_focal_loss(
        x_ref, targets, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="sum"
    )
    expected = expected / 6
    expected.backward()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-9)


def test_classification_normaliser_counts_positive_valid_rows() -> None:
    logits, targets = cls_batch()
    positive = targets.sum(1) > 0
    valid = torch.ones(40)
    valid[positive.nonzero()[0]] = 0  # drop one positive row
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = bce[valid > 0].sum() / 5
    torch.testing.assert_close(BCELoss()(logits, targets, valid), expected)
    element_valid = valid[:, None].expand(40, 5).clone()
    torch.testing.assert_close(BCELoss()(logits, targets, element_valid), expected)
    # No positive at all: divide by 1.
    torch.testing.assert_close(
        BCELoss()(logits, torch.zeros_like(targets)),
        F.binary_cross_entropy_with_logits(logits, torch.zeros_like(targets), reduction="sum"),
    )


def test_alpha_balanced_bce() -> None:
    logits, targets = cls_batch()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weights = torch.where(targets > 0, 0.25, 0.75)
    torch.testing.assert_close(
        BCELoss(alpha=0.25, loss_weight=2.0)(logits, targets), 2.0 * (weights * bce).sum() / 6
    )


def test_ohem_selects_the_expected_rows() -> None:
    # 6 anchors x 2 classes. Row 0 positive; rows 1-5 negative with hand-picked hardness; row 2 invalid.
    logits = torch.tensor([[0.0, -5.0], [3.0, 0.0], [9.0, 9.0], [-4.0, -4.0], [2.0, 2.0], [1.0, -1.0]])
    targets = torch.zeros(6, 2)
    targets[0, 0] = 1.0
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    bce_rows = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    # Negative valid rows by loss: row 4 (2, 2) > row 1 (3, 0) > row 5 (1, -1) > row 3 (-4, -4).
    assert bce_rows[4] > bce_rows[1] > bce_rows[5] > bce_rows[3]
    got = OHEMLoss(neg_pos_ratio=2)(logits, targets, valid)
    torch.testing.assert_close(got, bce_rows[[0, 4, 1]].sum())
    x = logits.clone().requires_grad_()
    OHEMLoss(neg_pos_ratio=2)(x, targets, valid).backward()
    assert (x.grad[[2, 3, 5]] == 0).all() and (x.grad[[0, 1, 4]] != 0).all()
    # Ratio larger than the negatives available: all valid negatives are kept.
    torch.testing.assert_close(
        OHEMLoss(neg_pos_ratio=10)(logits, targets, valid), bce_rows[[0, 1, 3, 4, 5]].sum()
    )
    # No positive: quota is ratio * max(num_pos, 1) = 1 hardest negative, normaliser 1.
    torch.testing.assert_close(OHEMLoss(neg_pos_ratio=1)(logits, torch.zeros(6, 2), valid), bce_rows[4])


def test_regression_closed_forms() -> None:
    pred = torch.tensor([[0.0, 0.05, -0.5, 2.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.zeros(2, 4)
    valid = torch.tensor([1.0, 0.0])
    d = pred[0]
    beta = 1 / 9
    sl1 = torch.where(d.abs() < beta, 0.5 * d * d / beta, d.abs() - 0.5 * beta).sum()
    torch.testing.assert_close(SmoothL1Loss()(pred, target, valid), sl1)
    assert math.isclose(
        float(SmoothL1Loss()(pred, target, valid)),
        0.05**2 / 2 * 9 + (0.5 - 1 / 18) + (2 - 1 / 18),
        rel_tol=1e-6,
    )
    asl1 = (torch.sqrt(d * d + 0.02**2) - 0.02).sum()
    torch.testing.assert_close(AuthenticSmoothL1Loss()(pred, target, valid), asl1)
    torch.testing.assert_close(L1Loss(loss_weight=3.0)(pred, target, valid), 3.0 * d.abs().sum())
    # Normaliser: number of valid rows (2 here).
    torch.testing.assert_close(L1Loss()(pred, target), (d.abs().sum() + 4.0) / 2)
    torch.testing.assert_close(SmoothL1Loss(beta=0.0)(pred, target), L1Loss()(pred, target))
    x = pred.clone().requires_grad_()
    SmoothL1Loss(beta=0.0)(x, target).backward()
    assert torch.isfinite(x.grad).all()
