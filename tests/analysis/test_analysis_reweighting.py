"""The reweighted gradient norms against closed forms and against autograd through the suite's own losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import sigmoid_focal_loss

from ghmdet.analysis import (
    asl1_gradient_norm,
    ce_gradient_norm,
    focal_gradient_norm,
    harmonized_gradient_norm,
    harmonizing_weights,
    smooth_l1_gradient_norm,
)
from ghmdet.losses import (
    GHMR_LAST_EDGE,
    AuthenticSmoothL1Loss,
    GHMCLoss,
    GHMRLoss,
    gradient_norm_cls,
    gradient_norm_reg,
)


def logits_and_targets(seed: int, rows: int = 400, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits spread over easy, medium and hard pairs (|x| up to 8), sparse 0/1 targets."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=generator, dtype=torch.float64) * 4
    targets = (torch.rand(rows, classes, generator=generator) < 0.1).to(torch.float64)
    return logits, targets


def autograd_norm(loss_fn, pred: torch.Tensor, *args: object) -> torch.Tensor:
    """|d loss / d pred| element-wise."""
    pred = pred.detach().clone().requires_grad_(True)
    loss_fn(pred, *args).backward()
    return pred.grad.abs()


def test_ce_gradient_norm_is_the_bce_gradient() -> None:
    logits, targets = logits_and_targets(0)
    expected = autograd_norm(
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="sum"), logits, targets
    )
    g = gradient_norm_cls(logits, targets)
    torch.testing.assert_close(ce_gradient_norm(g).double(), expected, rtol=1e-5, atol=1e-7)


@settings(deadline=None, max_examples=20)
@given(gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), seed=st.integers(0, 1000))
def test_focal_closed_form_equals_autograd_of_the_focal_loss(gamma: float, seed: int) -> None:
    """g^gamma (g - gamma (1 - g) log(1 - g)) is |d FL / d x| for positives and negatives alike."""
    logits, targets = logits_and_targets(seed)
    expected = autograd_norm(
        lambda x, y: sigmoid_focal_loss(x, y, alpha=-1, gamma=gamma, reduction="sum"), logits, targets
    )
    g = gradient_norm_cls(logits, targets)
    torch.testing.assert_close(focal_gradient_norm(g, gamma).double(), expected, rtol=2e-4, atol=1e-7)


def test_alpha_balanced_focal_weights_positives_by_alpha_and_negatives_by_one_minus_alpha() -> None:
    logits, targets = logits_and_targets(1)
    expected = autograd_norm(
        lambda x, y: sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="sum"), logits, targets
    )
    g = gradient_norm_cls(logits, targets)
    norm = focal_gradient_norm(g, 2.0, alpha=0.25, positive=targets > 0)
    torch.testing.assert_close(norm.double(), expected, rtol=2e-4, atol=1e-7)
    with pytest.raises(ValueError, match="positive"):
        focal_gradient_norm(g, 2.0, alpha=0.25)


def test_focal_norm_limits() -> None:
    """FL keeps CE's norm 1 at g = 1 (the log term vanishes) and suppresses easy pairs by g^gamma."""
    g = torch.tensor([0.0, 1e-3, 0.5, 1.0])
    norm = focal_gradient_norm(g, 2.0)
    assert norm[0] == 0 and norm[-1] == 1.0 and torch.isfinite(norm).all()
    assert norm[1] < 1e-8  # 1e-6 * (1e-3 + 2 * ~1e-3) ~ 3e-9
    assert focal_gradient_norm(g, 0.0).equal(g)  # gamma = 0 is CE


@pytest.mark.parametrize("density", ["unit", "exact"])
@pytest.mark.parametrize("bins", [10, 20, 30])
def test_ghmc_harmonized_norm_is_n_times_the_ghmc_gradient(density: str, bins: int) -> None:
    """g * N / GD(g) is what GHM-C (no EMA) back-propagates per pair, times its 1/N normaliser."""
    logits, targets = logits_and_targets(bins)
    loss = GHMCLoss(bins=bins, momentum=0.0, density=density)
    gradient = autograd_norm(loss, logits.float(), targets.float())
    g = gradient_norm_cls(logits.float(), targets.float())
    torch.testing.assert_close(
        harmonized_gradient_norm(g, bins, density).reshape(g.shape),
        gradient * g.numel(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_ghmr_harmonized_norm_is_n_times_the_ghmr_gradient() -> None:
    generator = torch.Generator().manual_seed(3)
    pred, target = (
        torch.randn(300, 4, generator=generator) * 0.2,
        torch.randn(300, 4, generator=generator) * 0.2,
    )
    loss = GHMRLoss(mu=0.02, bins=10, momentum=0.0, loss_weight=1.0)
    gradient = autograd_norm(loss, pred, target)
    gr = gradient_norm_reg(pred, target, 0.02)
    norm = harmonized_gradient_norm(gr, 10, "unit", GHMR_LAST_EDGE)
    torch.testing.assert_close(norm, gradient * gr.numel(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("density", ["unit", "exact"])
def test_uniform_gradient_norms_are_not_reweighted(density: str) -> None:
    """beta = N / GD = 1 when g is uniform on [0, 1] (away from the border for the exact window)."""
    count = 30_000
    g = (torch.arange(count, dtype=torch.float32) + 0.5) / count
    beta = harmonizing_weights(g, 30, density)
    interior = (g > 1 / 60) & (g < 1 - 1 / 60)
    # the exact window holds 1000 +- 1 of the 30000 evenly spaced values
    torch.testing.assert_close(beta[interior], torch.ones_like(beta[interior]), rtol=1.5e-3, atol=0)


def test_unit_weights_follow_the_released_normalisation() -> None:
    """beta_j = N / R_j / n with n the non-empty bins: 3 pairs in bin 0 and 1 in bin 9 of 10."""
    g = torch.tensor([0.01, 0.02, 0.03, 0.95])
    beta = harmonizing_weights(g, 10, "unit")
    torch.testing.assert_close(beta, torch.tensor([4 / 3 / 2] * 3 + [4 / 1 / 2]))


def test_unknown_density_is_rejected() -> None:
    with pytest.raises(ValueError, match="density"):
        harmonizing_weights(torch.rand(5), 10, "standard")  # type: ignore[arg-type]


def test_smooth_l1_and_asl1_norms_equal_autograd() -> None:
    generator = torch.Generator().manual_seed(4)
    pred = torch.randn(200, 4, generator=generator, dtype=torch.float64) * 0.3
    target = torch.zeros_like(pred)
    beta = 1 / 9
    sl1 = autograd_norm(lambda x, y: F.smooth_l1_loss(x, y, beta=beta, reduction="sum"), pred, target)
    torch.testing.assert_close(smooth_l1_gradient_norm(pred.abs(), beta).double(), sl1, rtol=1e-5, atol=1e-7)
    # The suite's ASL1 divides by the number of rows: undo it.
    asl1 = autograd_norm(AuthenticSmoothL1Loss(mu=0.02), pred, target) * pred.shape[0]
    torch.testing.assert_close(asl1_gradient_norm(pred.abs(), 0.02).double(), asl1, rtol=1e-5, atol=1e-7)
    assert smooth_l1_gradient_norm(pred.abs(), 0.0).eq(1).all()
