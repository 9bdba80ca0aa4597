"""Histogram of gradient norms and per-bin totals against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ghmdet.analysis import contribution_shares, histogram_edges, norm_histogram, per_bin_total


def brute_force_bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin i holds i/bins <= v < (i+1)/bins (float32 edges), the last bin also v = 1; -1 outside."""
    edges = torch.arange(bins + 1, dtype=torch.float32) / bins
    out = torch.full(values.shape, -1, dtype=torch.int64)
    for i in range(bins):
        upper = values <= edges[i + 1] if i == bins - 1 else values < edges[i + 1]
        out[(values >= edges[i]) & upper] = i
    return out


def sample_norms(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    spike = torch.rand(500, generator=generator) ** 8  # most near 0, as for easy negatives
    edges = torch.arange(21, dtype=torch.float32) / 20  # values exactly on edges, 0 and 1
    outside = torch.tensor([-0.1, 1.5, float("nan")])
    return torch.cat([spike, torch.rand(200, generator=generator), edges, outside])


@pytest.mark.parametrize("bins", [10, 20, 30, 100])
def test_histogram_equals_brute_force(bins: int) -> None:
    values = sample_norms(bins)
    index = brute_force_bins(values, bins)
    expected = torch.bincount(index[index >= 0], minlength=bins)
    counts = norm_histogram(values, bins)
    assert counts.dtype == torch.int64 and torch.equal(counts, expected)
    assert counts.sum() == values.numel() - 3  # -0.1, 1.5 and NaN fall in no bin


def test_histogram_respects_a_row_mask() -> None:
    g = torch.tensor([[0.05, 0.95], [0.05, 0.55], [0.5, 0.5]])
    valid = torch.tensor([True, False, True]).unsqueeze(1)
    counts = norm_histogram(g, 10, valid)
    assert counts.tolist() == [1, 0, 0, 0, 0, 2, 0, 0, 0, 1]


def test_per_bin_total_sums_values_per_bin() -> None:
    g = torch.tensor([0.01, 0.02, 0.5, 0.99, 1.0, 2.0])
    values = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    totals = per_bin_total(g, values, 4)
    assert totals.dtype == torch.float64
    assert totals.tolist() == [3.0, 0.0, 4.0, 24.0]  # 2.0 is outside [0, 1]
    with pytest.raises(ValueError, match="must match"):
        per_bin_total(g, values[:2], 4)


def test_contribution_shares_are_fractions_of_each_loss_total() -> None:
    g = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    shares = contribution_shares(g, {"CE": g, "flat": torch.ones_like(g)}, 10)
    for share in shares.values():
        assert share.shape == (10,) and np.isclose(share.sum(), 1.0)
    expected_flat = norm_histogram(g, 10).numpy() / 1000
    np.testing.assert_allclose(shares["flat"], expected_flat)


def test_histogram_edges_span_the_unit_interval() -> None:
    edges = histogram_edges(4)
    assert edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
