"""Exact ("standard") gradient density, Eq. (4)-(6), against an O(N^2) brute force."""

from __future__ import annotations

import pytest
import torch

from ghmdet.losses import GHMCLoss, GHMRLoss, exact_gradient_density, exact_window_counts
from tests.losses.ghm_reference import brute_force_exact_ghmc, brute_force_window_counts


def tricky_norms(generator: torch.Generator, bins: int) -> torch.Tensor:
    """Random values plus ties, 0, 1, and values exactly half a window apart (window-edge members)."""
    half = torch.tensor(0.5 / bins, dtype=torch.float32)
    base = torch.rand(60, generator=generator)
    ties = torch.round(torch.rand(40, generator=generator) * 8) / 8
    anchors = torch.rand(10, generator=generator) * 0.8 + 0.1
    at_edges = torch.cat([anchors, anchors + half, anchors - half, (anchors + half) + half])
    special = torch.tensor([0.0, 0.0, 1.0, 1.0, float(half), 1.0 - float(half), 0.5])
    return torch.cat([base, ties, at_edges, special]).clamp(0.0, 1.0)


@pytest.mark.parametrize("bins", [1, 3, 10, 30])
def test_window_counts_equal_brute_force(bins: int) -> None:
    generator = torch.Generator().manual_seed(bins)
    g = tricky_norms(generator, bins)
    counts, lengths = exact_window_counts(g, bins)
    expected_counts, expected_lengths = brute_force_window_counts(g, bins)
    assert torch.equal(counts.long(), expected_counts.long())
    assert torch.equal(lengths, expected_lengths)


def test_window_counts_with_valid_mask_and_2d_layout() -> None:
    generator = torch.Generator().manual_seed(5)
    g = tricky_norms(generator, 10)[:145].view(29, 5)
    valid = torch.rand(29, 5, generator=generator) > 0.3
    counts, _ = exact_window_counts(g, 10, valid)
    expected, _ = brute_force_window_counts(g, 10, valid)
    assert counts.shape == g.shape
    assert torch.equal(counts.long(), expected.long())
    assert (counts[~valid] == 0).all()


def test_density_is_count_over_window_length() -> None:
    g = torch.tensor([0.0, 0.01, 0.5, 0.5, 0.99, 1.0])
    density = exact_gradient_density(g, 10)
    counts, lengths = brute_force_window_counts(g, 10)
    torch.testing.assert_close(density, counts.float() / lengths)
    # At g = 0 the window [-0.05, 0.05) is clipped to length 0.05 (Eq. 5).
    torch.testing.assert_close(density[0], torch.tensor(2 / 0.05))


@pytest.mark.parametrize("valid_kind", ["none", "rows", "elements"])
def test_exact_ghmc_equals_brute_force(valid_kind: str) -> None:
    generator = torch.Generator().manual_seed(len(valid_kind))
    logits = torch.randn(50, 4, generator=generator) * 3
    logits[:5] = torch.tensor([60.0, -60.0, 0.0, 2.0])  # ties, saturated g = 0 and 1
    targets = (torch.rand(50, 4, generator=generator) < 0.2).float()
    valid = None
    mask = None
    if valid_kind == "rows":
        valid = (torch.rand(50, generator=generator) > 0.2).float()
        mask = (valid > 0)[:, None]
    elif valid_kind == "elements":
        valid = (torch.rand(50, 4, generator=generator) > 0.2).float()
        mask = valid > 0
    loss_fn = GHMCLoss(bins=10, momentum=0.75, density="exact", loss_weight=2.0)
    x = logits.clone().requires_grad_()
    got = loss_fn(x, targets, valid)
    got.backward()
    x_ref = logits.clone().requires_grad_()
    expected = 2.0 * brute_force_exact_ghmc(x_ref, targets, 10, mask)
    expected.backward()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-9)
    # momentum is ignored and the EMA buffer untouched in exact mode
    assert torch.equal(loss_fn.acc_sum, torch.zeros(10))


def test_exact_ghmr_runs_and_leaves_buffers() -> None:
    generator = torch.Generator().manual_seed(2)
    pred = torch.randn(30, 4, generator=generator) * 0.05
    target = torch.zeros(30, 4)
    loss_fn = GHMRLoss(density="exact")
    loss = loss_fn(pred.requires_grad_(), target)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.equal(loss_fn.acc_sum, torch.zeros(10))


def test_exact_density_of_uniform_norms_is_close_to_n() -> None:
    # N evenly spread values on [0, 1]: GD ~= N everywhere, beta ~= 1.
    n = 2000
    g = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    density = exact_gradient_density(g, 20)
    torch.testing.assert_close(density, torch.full_like(density, float(n)), rtol=0.02, atol=0.0)
