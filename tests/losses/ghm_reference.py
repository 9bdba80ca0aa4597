"""Deliberately plain re-statements of the released GHM losses and of the exact density, for the tests.

Written from the released code's description (per-bin Python loop, boolean masks, host reads), not from the
library, so that the tests compare two independent implementations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class LoopGHMC:
    """mmdetection's GHMC, one bin at a time."""

    def __init__(self, bins: int = 30, momentum: float = 0.75, loss_weight: float = 1.0) -> None:
        self.bins = bins
        self.momentum = momentum
        self.loss_weight = loss_weight
        self.edges = torch.arange(bins + 1).float() / bins
        self.edges[-1] += 1e-6
        self.acc_sum = torch.zeros(bins)

    def weights(self, logits: Tensor, targets: Tensor, label_weight: Tensor) -> tuple[Tensor, float]:
        g = torch.abs(logits.float().sigmoid().detach() - targets.float())
        valid = label_weight > 0
        tot = max(valid.float().sum().item(), 1.0)
        weights = torch.zeros_like(g)
        n = 0
        for i in range(self.bins):
            inds = (g >= self.edges[i]) & (g < self.edges[i + 1]) & valid
            num_in_bin = inds.sum().item()
            if num_in_bin > 0:
                if self.momentum > 0:
                    self.acc_sum[i] = self.momentum * self.acc_sum[i] + (1 - self.momentum) * num_in_bin
                    weights[inds] = tot / self.acc_sum[i]
                else:
                    weights[inds] = tot / num_in_bin
                n += 1
        if n > 0:
            weights = weights / n
        return weights, tot

    def __call__(self, logits: Tensor, targets: Tensor, label_weight: Tensor) -> Tensor:
        weights, tot = self.weights(logits, targets, label_weight)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
        return (loss * weights).sum() / tot * self.loss_weight


class LoopGHMR:
    """mmdetection's GHMR, one bin at a time."""

    def __init__(self, mu: float = 0.02, bins: int = 10, momentum: float = 0.7, loss_weight: float = 10.0):
        self.mu = mu
        self.bins = bins
        self.momentum = momentum
        self.loss_weight = loss_weight
        self.edges = torch.arange(bins + 1).float() / bins
        self.edges[-1] = 1e3
        self.acc_sum = torch.zeros(bins)

    def __call__(self, pred: Tensor, target: Tensor, label_weight: Tensor) -> Tensor:
        mu = self.mu
        diff = pred.float() - target.float()
        loss = torch.sqrt(diff * diff + mu * mu) - mu
        g = torch.abs(diff / torch.sqrt(mu * mu + diff * diff)).detach()
        weights = torch.zeros_like(g)
        valid = label_weight > 0
        tot = max(label_weight.float().sum().item(), 1.0)
        n = 0
        for i in range(self.bins):
            inds = (g >= self.edges[i]) & (g < self.edges[i + 1]) & valid
            num_in_bin = inds.sum().item()
            if num_in_bin > 0:
                n += 1
                if self.momentum > 0:
                    self.acc_sum[i] = self.momentum * self.acc_sum[i] + (1 - self.momentum) * num_in_bin
                    weights[inds] = tot / self.acc_sum[i]
                else:
                    weights[inds] = tot / num_in_bin
        if n > 0:
            weights /= n
        loss = loss * weights
        return loss.sum() / tot * self.loss_weight


def brute_force_window_counts(g: Tensor, bins: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """O(N^2) window counts and lengths of Eq. (4)-(5), float32 bounds ``g -/+ 0.5 / bins``."""
    flat = g.reshape(-1).float()
    keep = torch.ones_like(flat, dtype=torch.bool) if valid is None else valid.expand(g.shape).reshape(-1)
    lower = flat - 0.5 / bins
    upper = flat + 0.5 / bins
    members = (flat[None, :] >= lower[:, None]) & (flat[None, :] < upper[:, None]) & keep[None, :]
    counts = members.sum(dim=1)
    counts = torch.where(keep, counts, torch.zeros_like(counts))
    lengths = upper.clamp(max=1.0) - lower.clamp(min=0.0)
    return counts.view(g.shape), lengths.view(g.shape)


def brute_force_exact_ghmc(logits: Tensor, targets: Tensor, bins: int, valid: Tensor | None = None) -> Tensor:
    """Exact-density GHM-C: sum_i N * l_i / count_i * CE_i / N over valid elements."""
    g = torch.abs(torch.sigmoid(logits.float()) - targets.float()).detach()
    counts, lengths = brute_force_window_counts(g, bins, valid)
    beta_over_n = torch.where(counts > 0, lengths / counts.clamp(min=1), torch.zeros_like(lengths))
    ce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return (beta_over_n * ce).sum()
