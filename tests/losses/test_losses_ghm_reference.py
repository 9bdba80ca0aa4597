"""GHM-C and GHM-R against a plain per-bin loop of the released code, over successive calls (EMA)."""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F

from ghmdet.losses import GHMCLoss, GHMRLoss
from tests.losses.ghm_reference import LoopGHMC, LoopGHMR

RTOL = 1e-6


def logit_of(p: float) -> float:
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def cls_batch(kind: str, generator: torch.Generator, rows: int = 64, classes: int = 6):
    logits = torch.randn(rows, classes, generator=generator) * 3
    targets = (torch.rand(rows, classes, generator=generator) < 0.15).float()
    if kind == "adversarial":
        # Saturated logits (g exactly 0 or 1), logit 0, and logits whose sigmoid lands on or next to edges.
        special = torch.tensor([50.0, -50.0, 1e4, -1e4, 0.0, 17.0, -17.0, 88.0, -104.0])
        near_edges = torch.tensor(
            [logit_of(i / 30) for i in range(1, 30)] + [logit_of(i / 10) for i in range(1, 10)]
        )
        pool = torch.cat([special, near_edges, near_edges.nextafter(torch.tensor(100.0))])
        pick = torch.randint(0, pool.numel(), (rows, classes), generator=generator)
        chosen = torch.rand(rows, classes, generator=generator) < 0.6
        logits = torch.where(chosen, pool[pick], logits)
    return logits, targets


def valid_for(kind: str, generator: torch.Generator, rows: int, cols: int):
    if kind == "none":
        return None, torch.ones(rows, cols)
    if kind == "rows":
        valid = (torch.rand(rows, generator=generator) > 0.25).float()
        return valid, valid[:, None].expand(rows, cols)
    valid = (torch.rand(rows, cols, generator=generator) > 0.25).float()
    return valid, valid


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.75])
@pytest.mark.parametrize("kind", ["random", "adversarial"])
@pytest.mark.parametrize("valid_kind", ["none", "rows", "elements"])
def test_ghmc_matches_released_loop(momentum: float, kind: str, valid_kind: str) -> None:
    generator = torch.Generator().manual_seed(zlib.crc32(f"{momentum}-{kind}-{valid_kind}".encode()))
    reference = LoopGHMC(bins=30, momentum=momentum, loss_weight=1.0)
    loss_fn = GHMCLoss(bins=30, momentum=momentum, loss_weight=1.0)
    for _ in range(5):
        logits, targets = cls_batch(kind, generator)
        valid, label_weight = valid_for(valid_kind, generator, *logits.shape)
        ref_logits = logits.clone().requires_grad_()
        expected = reference(ref_logits, targets, label_weight)
        expected.backward()
        our_logits = logits.clone().requires_grad_()
        got = loss_fn(our_logits, targets, valid)
        got.backward()
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=0.0)
        torch.testing.assert_close(loss_fn.acc_sum, reference.acc_sum, rtol=RTOL, atol=0.0)
        torch.testing.assert_close(our_logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.7])
@pytest.mark.parametrize("valid_kind", ["none", "rows", "elements"])
def test_ghmr_matches_released_loop(momentum: float, valid_kind: str) -> None:
    generator = torch.Generator().manual_seed(int(momentum * 100) + len(valid_kind))
    reference = LoopGHMR(mu=0.02, bins=10, momentum=momentum, loss_weight=10.0)
    loss_fn = GHMRLoss(mu=0.02, bins=10, momentum=momentum, loss_weight=10.0)
    for step in range(5):
        pred = torch.randn(40, 4, generator=generator) * 0.05
        target = torch.randn(40, 4, generator=generator) * 0.05
        if step % 2:
            # |d| huge (gr rounds to exactly 1.0), d = 0 (gr = 0) and d on bin edges of gr.
            pred[:4] = torch.tensor([1e4, -1e4, 0.0, 0.0])
            target[:4] = 0.0
            edge_d = [0.02 * r / (1 - r * r) ** 0.5 for r in (0.1, 0.5, 0.9)]
            pred[4, :3] = torch.tensor(edge_d)
            target[4, :3] = 0.0
        valid, label_weight = valid_for(valid_kind, generator, 40, 4)
        ref_pred = pred.clone().requires_grad_()
        expected = reference(ref_pred, target, label_weight)
        expected.backward()
        our_pred = pred.clone().requires_grad_()
        got = loss_fn(our_pred, target, valid)
        got.backward()
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=0.0)
        torch.testing.assert_close(loss_fn.acc_sum, reference.acc_sum, rtol=RTOL, atol=0.0)
        torch.testing.assert_close(our_pred.grad, ref_pred.grad, rtol=1e-5, atol=1e-9)


def test_ghmc_gradient_is_detached_beta_times_sigmoid_minus_target() -> None:
    generator = torch.Generator().manual_seed(7)
    logits, targets = cls_batch("random", generator)
    reference = LoopGHMC(bins=30, momentum=0.75)
    reference.acc_sum += 3.0  # a non-trivial EMA state, mirrored below
    loss_fn = GHMCLoss(bins=30, momentum=0.75)
    loss_fn.acc_sum += 3.0
    weights, total = reference.weights(logits, targets, torch.ones_like(targets))
    x = logits.clone().requires_grad_()
    loss_fn(x, targets).backward()
    expected = weights * (torch.sigmoid(logits) - targets) / total
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-10)


def test_ghmc_gradient_scales_with_grad_output_and_loss_weight() -> None:
    generator = torch.Generator().manual_seed(3)
    logits, targets = cls_batch("random", generator)
    x1 = logits.clone().requires_grad_()
    GHMCLoss(momentum=0.0)(x1, targets).backward()
    x2 = logits.clone().requires_grad_()
    (GHMCLoss(momentum=0.0, loss_weight=2.0)(x2, targets) * 3.0).backward()
    torch.testing.assert_close(x2.grad, 6.0 * x1.grad)


def test_one_bin_without_momentum_is_mean_bce_over_valid() -> None:
    generator = torch.Generator().manual_seed(11)
    logits, targets = cls_batch("random", generator)
    valid = (torch.rand(logits.shape, generator=generator) > 0.3).float()
    got = GHMCLoss(bins=1, momentum=0.0)(logits, targets, valid)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = bce[valid > 0].mean()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0.0)


def test_uniform_gradient_norms_give_unit_weights() -> None:
    # One element in each bin's middle: every bin has R_j = 1 = N / M, so beta = N / (R_j * n) = 1 and the
    # loss is the mean BCE.
    bins = 10
    g = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    logits = torch.logit(g).float().view(-1, 1)  # targets 0 -> g = sigmoid(x)
    targets = torch.zeros_like(logits)
    weights, _ = LoopGHMC(bins=bins, momentum=0.0).weights(logits, targets, torch.ones_like(logits))
    assert torch.allclose(weights, torch.ones_like(weights))
    got = GHMCLoss(bins=bins, momentum=0.0)(logits, targets)
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("bins", [20, 40])
def test_ghmc_non_floor_exact_bins_match_loop(bins: int) -> None:
    # Logits whose gradient norm lands exactly on, and next to, the float32 edges of M = 20 / 40.
    edges = torch.arange(bins + 1).float() / bins
    near = torch.cat(
        [edges[1:-1], edges[1:-1].nextafter(torch.tensor(0.0)), edges[1:-1].nextafter(torch.tensor(1.0))]
    )
    logits = torch.logit(near.double()).float()
    g_float = torch.sigmoid(logits)
    assert (g_float == edges[1:-1].repeat(3)).float().mean() > 0.2  # many sit exactly on edges
    logits = logits.view(-1, 1)
    targets = torch.zeros_like(logits)
    reference = LoopGHMC(bins=bins, momentum=0.75)
    loss_fn = GHMCLoss(bins=bins, momentum=0.75)
    for _ in range(3):
        expected = reference(logits, targets, torch.ones_like(logits))
        got = loss_fn(logits, targets)
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=0.0)
        torch.testing.assert_close(loss_fn.acc_sum, reference.acc_sum, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
def test_fused_bce_is_accurate_elementwise(target: float) -> None:
    from ghmdet.losses.fused_bce import sigmoid_bce

    logits = torch.cat(
        [torch.linspace(-120, 120, 24001), torch.tensor([0.0, 1e-30, -1e-30, 1e4, -1e4, 3e37])]
    )
    targets = torch.full_like(logits, target)
    got = sigmoid_bce(logits, targets).double()
    x = logits.double()
    expected = torch.clamp(x, min=0) - x * target + torch.log1p(torch.exp(-x.abs()))
    # Relative accuracy wherever the value is a normal float32; below that (|x| > ~87) only absolute.
    error = (got - expected).abs()
    normal = expected > torch.finfo(torch.float32).tiny
    assert (error[normal] / expected[normal]).max() < 5e-7
    assert (error[~normal] < 1e-37).all()


def test_ghmr_weighted_valid_sets_the_normaliser() -> None:
    generator = torch.Generator().manual_seed(21)
    pred = torch.randn(30, 4, generator=generator) * 0.05
    target = torch.zeros(30, 4)
    weights = torch.rand(30, 4, generator=generator) * 2
    weights[weights < 0.5] = 0.0
    reference = LoopGHMR(momentum=0.7)
    loss_fn = GHMRLoss(momentum=0.7)
    for _ in range(3):
        torch.testing.assert_close(
            loss_fn(pred, target, weights), reference(pred, target, weights), rtol=RTOL, atol=0
        )


def test_last_counts_hold_the_histogram_of_the_call() -> None:
    logits = torch.logit(torch.tensor([[0.01, 0.02, 0.55], [0.95, 0.5, 0.51]]))
    loss_fn = GHMCLoss(bins=10)
    loss_fn(logits, torch.zeros_like(logits), torch.tensor([1.0, 1.0]))
    assert loss_fn.last_counts.tolist() == [2, 0, 0, 0, 0, 3, 0, 0, 0, 1]


def test_non_contiguous_float64_inputs_and_no_grad() -> None:
    generator = torch.Generator().manual_seed(4)
    logits, targets = cls_batch("random", generator, rows=12, classes=8)
    transposed = logits.double().t().contiguous().t().requires_grad_()  # column-major, float64
    assert not transposed.is_contiguous()
    loss = GHMCLoss(momentum=0.0)(transposed, targets)
    loss.backward()
    x = logits.clone().requires_grad_()
    GHMCLoss(momentum=0.0)(x, targets).backward()
    assert transposed.grad.dtype == torch.float64
    torch.testing.assert_close(transposed.grad.float(), x.grad)
    with torch.no_grad():
        evaluated = GHMCLoss(momentum=0.0)(logits, targets)
    assert not evaluated.requires_grad
    torch.testing.assert_close(evaluated, loss)
