"""Unit-region binning: agreement with float32 edge comparisons, counts, edge construction."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ghmdet.losses import (
    GHMC_LAST_EDGE,
    GHMR_LAST_EDGE,
    bin_counts,
    bin_edges,
    bin_index,
    floor_binning_is_exact,
)


def comparison_index(g: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """The released code's definition: bin i holds edges[i] <= g < edges[i + 1]; -> bins otherwise."""
    bins = edges.numel() - 1
    out = torch.full(g.shape, bins, dtype=torch.int64)
    for i in range(bins):
        out[(g >= edges[i]) & (g < edges[i + 1])] = i
    return out


def edge_neighbourhood(edges: torch.Tensor) -> torch.Tensor:
    """Every edge, its two float32 neighbours, and the special values 0 and 1."""
    up = torch.nextafter(edges, torch.tensor(float("inf")))
    down = torch.nextafter(edges, torch.tensor(float("-inf")))
    special = torch.tensor([0.0, 1.0, torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item()])
    return torch.cat([edges, up, down, special]).clamp(min=0.0)


def test_bin_edges_match_released_construction() -> None:
    released = torch.arange(31).float() / 30
    released[-1] += 1e-6
    assert torch.equal(bin_edges(30, GHMC_LAST_EDGE), released)
    released_r = torch.arange(11).float() / 10
    released_r[-1] = 1e3
    assert torch.equal(bin_edges(10, GHMR_LAST_EDGE), released_r)
    assert bin_edges(4).dtype == torch.float32


def test_floor_binning_exactness_is_detected() -> None:
    # The paper's settings take the fast path; 20 and 40 (used in the M ablation) need the correction.
    assert floor_binning_is_exact(bin_edges(30, GHMC_LAST_EDGE))
    assert floor_binning_is_exact(bin_edges(10, GHMR_LAST_EDGE))
    assert not floor_binning_is_exact(bin_edges(20, GHMC_LAST_EDGE))
    assert not floor_binning_is_exact(bin_edges(40, GHMC_LAST_EDGE))


@pytest.mark.parametrize("bins", [1, 2, 3, 5, 7, 10, 11, 20, 29, 30, 40, 64, 97])
@pytest.mark.parametrize("last_edge", [GHMC_LAST_EDGE, GHMR_LAST_EDGE])
def test_bin_index_equals_edge_comparisons_at_edges(bins: int, last_edge: float) -> None:
    edges = bin_edges(bins, last_edge)
    g = torch.cat([edge_neighbourhood(edges), torch.rand(500)])
    g = g[g < edges[-1]]
    expected = comparison_index(g, edges)
    for floor_exact in (None, False):  # False forces the corrected path even where floor is exact
        got = bin_index(g, edges, floor_exact=floor_exact, assume_in_range=True)
        assert got.dtype == torch.int32
        assert torch.equal(got.long(), expected)
        got_checked = bin_index(g, edges, floor_exact=floor_exact)
        assert torch.equal(got_checked.long(), expected)


def test_bin_index_routes_out_of_range_and_nan_to_overflow() -> None:
    edges = bin_edges(10, GHMC_LAST_EDGE)
    g = torch.tensor([-0.5, 0.0, 0.999, 1.0, GHMC_LAST_EDGE, 2.0, float("nan"), float("inf")])
    got = bin_index(g, edges)
    assert got.tolist() == [10, 0, 9, 9, 10, 10, 10, 10]


def test_bin_index_take_abs_bins_magnitudes() -> None:
    edges = bin_edges(30, GHMC_LAST_EDGE)
    signed = torch.linspace(-1, 1, 1001)
    assert torch.equal(bin_index(signed, edges, take_abs=True), bin_index(signed.abs(), edges))


@settings(max_examples=40, deadline=None)
@given(
    bins=st.integers(min_value=1, max_value=120),
    values=st.lists(st.floats(min_value=0.0, max_value=1.0, width=32), min_size=1, max_size=64),
)
def test_bin_index_property(bins: int, values: list[float]) -> None:
    edges = bin_edges(bins, GHMC_LAST_EDGE)
    g = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(bin_index(g, edges).long(), comparison_index(g, edges))


def test_bin_counts_skips_overflow_and_invalid() -> None:
    index = torch.tensor([0, 1, 1, 3, 4, 4], dtype=torch.int32)  # 4 == bins: overflow slot
    assert bin_counts(index, 4).tolist() == [1, 2, 0, 1]
    valid = torch.tensor([True, False, True, True, True, True])
    counts = bin_counts(index, 4, valid)
    assert counts.tolist() == [1, 1, 0, 1]
    assert counts.dtype == torch.int64
