"""Bad arguments and inputs, the no-valid-element case, and the absence of host synchronisation."""

from __future__ import annotations

import pytest
import torch

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


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: GHMCLoss(momentum=1.5), "GHMCLoss: momentum must be in [0, 1), got 1.5"),
        (lambda: GHMCLoss(momentum=1.0), "momentum must be in [0, 1), got 1.0"),
        (lambda: GHMCLoss(momentum=-0.1), "momentum must be in [0, 1), got -0.1"),
        (lambda: GHMCLoss(bins=0), "GHMCLoss: bins must be an integer >= 1, got 0"),
        (lambda: GHMRLoss(bins=2.5), "GHMRLoss: bins must be an integer >= 1, got 2.5"),
        (lambda: GHMRLoss(mu=0.0), "GHMRLoss: mu must be a finite number > 0, got 0.0"),
        (lambda: GHMRLoss(mu=-1), "mu must be a finite number > 0, got -1"),
        (
            lambda: GHMCLoss(density="approx"),
            "GHMCLoss: density must be one of ('unit', 'exact'), got 'approx'",
        ),
        (lambda: GHMCLoss(loss_weight=-1.0), "GHMCLoss: loss_weight must be a finite number >= 0, got -1.0"),
        (lambda: GHMCLoss(density="exact", sync_stats=True), "sync_stats=True needs density='unit'"),
        (lambda: FocalLoss(gamma=-1), "FocalLoss: gamma must be a finite number >= 0, got -1"),
        (lambda: FocalLoss(alpha=1.5), "FocalLoss: alpha must be None or a number in [0, 1], got 1.5"),
        (lambda: BCELoss(loss_weight=-2), "BCELoss: loss_weight must be a finite number >= 0, got -2"),
        (lambda: OHEMLoss(neg_pos_ratio=-3), "OHEMLoss: neg_pos_ratio must be a finite number >= 0, got -3"),
        (lambda: SmoothL1Loss(beta=-0.1), "SmoothL1Loss: beta must be a finite number >= 0, got -0.1"),
        (lambda: AuthenticSmoothL1Loss(mu=0), "AuthenticSmoothL1Loss: mu must be a finite number > 0, got 0"),
        (
            lambda: L1Loss(loss_weight=float("nan")),
            "L1Loss: loss_weight must be a finite number >= 0, got nan",
        ),
    ],
)
def test_bad_arguments_name_argument_and_value(factory, message: str) -> None:
    with pytest.raises(ValueError) as info:
        factory()
    assert message in str(info.value)


@pytest.mark.parametrize("loss_fn", [GHMCLoss(), GHMRLoss(), FocalLoss(), BCELoss(), OHEMLoss(), L1Loss()])
def test_shape_mismatches(loss_fn) -> None:
    pred = torch.zeros(6, 4)
    with pytest.raises(ValueError, match=r"shape \(6, 3\) does not match .* shape \(6, 4\)"):
        loss_fn(pred, torch.zeros(6, 3))
    with pytest.raises(ValueError, match=r"must have shape \[N, C\], got \(24,\)"):
        loss_fn(torch.zeros(24), torch.zeros(24))
    with pytest.raises(ValueError, match=r"valid must have shape \[6\] or \[6, 4\], got \[5\]"):
        loss_fn(pred, torch.zeros(6, 4), torch.ones(5))


def test_targets_outside_unit_interval() -> None:
    loss_fn = GHMCLoss()
    targets = torch.zeros(4, 3)
    targets[0, 0] = 2.0
    with pytest.raises(ValueError, match=r"GHMCLoss: targets must be in \[0, 1\], got values in \[0, 2\]"):
        loss_fn(torch.zeros(4, 3), targets)
    targets[0, 0] = -0.5
    with pytest.raises(ValueError, match=r"got values in \[-0.5, 0\]"):
        loss_fn(torch.zeros(4, 3), targets)
    assert torch.equal(loss_fn.acc_sum, torch.zeros(30))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("density", ["unit", "exact"])
def test_non_finite_inputs_raise_before_the_ema_changes(bad: float, density: str) -> None:
    generator = torch.Generator().manual_seed(0)
    loss_fn = GHMCLoss(density=density)
    loss_fn(torch.randn(20, 3, generator=generator), torch.zeros(20, 3))
    before = loss_fn.acc_sum.clone()
    counts_before = loss_fn.last_counts.clone()
    logits = torch.randn(20, 3, generator=generator)
    logits[3, 1] = bad
    valid = torch.ones(20)
    valid[3] = 0  # even a masked-out non-finite logit is reported
    with pytest.raises(ValueError, match=r"GHMCLoss: logits contains 1 non-finite value\(s\)"):
        loss_fn(logits, torch.zeros(20, 3), valid)
    assert torch.equal(loss_fn.acc_sum, before)
    assert torch.equal(loss_fn.last_counts, counts_before)


def test_non_finite_regression_inputs_raise() -> None:
    loss_fn = GHMRLoss()
    target = torch.zeros(5, 4)
    target[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"GHMRLoss: target contains 1 non-finite"):
        loss_fn(torch.zeros(5, 4), target)
    pred = torch.zeros(5, 4)
    pred[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"GHMRLoss: pred contains 1 non-finite"):
        loss_fn(pred, torch.zeros(5, 4))
    assert torch.equal(loss_fn.acc_sum, torch.zeros(10))


def test_check_finite_false_skips_the_check() -> None:
    logits = torch.zeros(4, 2)
    logits[0, 0] = float("nan")
    loss = GHMCLoss(check_finite=False)(logits, torch.zeros(4, 2))
    assert torch.isnan(loss)


@pytest.mark.parametrize("make", [lambda: GHMCLoss(), lambda: GHMRLoss(), lambda: GHMCLoss(density="exact")])
@pytest.mark.parametrize("case", ["no_valid_rows", "no_valid_elements", "empty"])
def test_no_valid_element_gives_zero_with_gradient(make, case: str) -> None:
    loss_fn = make()
    loss_fn.acc_sum += 1.5
    rows = 0 if case == "empty" else 7
    pred = torch.randn(rows, 4).requires_grad_()
    target = torch.zeros(rows, 4)
    valid = {"no_valid_rows": torch.zeros(rows), "no_valid_elements": torch.zeros(rows, 4), "empty": None}[
        case
    ]
    loss = loss_fn(pred, target, valid)
    assert loss.requires_grad and loss.dtype == torch.float32
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    assert torch.equal(loss_fn.acc_sum, torch.full_like(loss_fn.acc_sum, 1.5))


def test_backward_twice_raises_clearly() -> None:
    x = torch.randn(5, 3).requires_grad_()
    loss = GHMCLoss()(x, torch.zeros(5, 3))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already used by a previous backward"):
        loss.backward()


def test_no_host_synchronisation_in_forward_and_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(50, 6, generator=generator) * 3).requires_grad_()
    targets = (torch.rand(50, 6, generator=generator) < 0.2).float()
    valid = (torch.rand(50, generator=generator) > 0.2).float()
    pred = torch.randn(20, 4, generator=generator).requires_grad_()
    modules = [GHMCLoss(check_finite=False), GHMCLoss(bins=20, check_finite=False)]
    modules += [GHMCLoss(density="exact", check_finite=False), GHMRLoss(check_finite=False)]

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation inside the loss")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for _ in range(2):
        for module in modules:
            if isinstance(module, GHMRLoss):
                module(pred, torch.zeros(20, 4), valid[:20]).backward()
            else:
                module(logits, targets, valid).backward()
    monkeypatch.undo()
    assert torch.isfinite(logits.grad).all() and (modules[0].acc_sum > 0).any()
    with pytest.raises(AssertionError, match="host synchronisation"):
        monkeypatch.setattr(torch.Tensor, "__bool__", forbidden)
        GHMCLoss(check_finite=True)(logits, targets)
