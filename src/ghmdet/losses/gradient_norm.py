"""Gradient norms g of the paper: the quantity whose distribution GHM harmonizes.

Classification, Eq. (2)-(3): for sigmoid cross-entropy with logit x and target p* the gradient w.r.t. x is
``p - p*`` with ``p = sigmoid(x)``, so ``g = |p - p*|`` in [0, 1].

Regression (GHM-R section, ASL1, Eq. (13)-(14)): for ``ASL1(d) = sqrt(d^2 + mu^2) - mu`` with
``d = prediction - target`` the gradient is ``d / sqrt(d^2 + mu^2)``, so ``gr = |d| / sqrt(d^2 + mu^2)`` in
[0, 1).

The *signed* gradients are exposed too: the GHM losses bin ``|direction|`` and reuse the same tensor, scaled
by the harmonizing weight, as their gradient, which saves a pass over memory. Everything is float32 and
detached: g is a statistic, not part of the graph (the released code calls ``.detach()``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sigmoid_ce_gradient(logits: Tensor, targets: Tensor, out: Tensor | None = None) -> Tensor:
    """``sigmoid(logits) - targets`` in float32: d(BCE)/d(logit), Eq. (2). Written into ``out`` if given."""
    with torch.no_grad():
        logits = logits.to(torch.float32)
        direction = torch.sigmoid(logits, out=out) if out is not None else torch.sigmoid(logits)
        return direction.sub_(targets)


def asl1_gradient(pred: Tensor, target: Tensor, mu: float, out: Tensor | None = None) -> Tensor:
    """``d / sqrt(mu^2 + d^2)`` with ``d = pred - target`` in float32: d(ASL1)/d(pred), Eq. (14).

    The expression is evaluated in the released code's order so that bin assignment matches it bit for bit.
    """
    with torch.no_grad():
        pred = pred.to(torch.float32)
        diff = torch.sub(pred, target, out=out) if out is not None else torch.sub(pred, target)
        return diff.div_(torch.sqrt(mu * mu + diff * diff))


def gradient_norm_cls(logits: Tensor, targets: Tensor) -> Tensor:
    """Classification gradient norm ``g = |sigmoid(x) - p*|`` (Eq. 3), float32, detached."""
    return sigmoid_ce_gradient(logits.detach(), targets.detach().to(torch.float32)).abs_()


def gradient_norm_reg(pred: Tensor, target: Tensor, mu: float = 0.02) -> Tensor:
    """Regression gradient norm ``gr = |d| / sqrt(d^2 + mu^2)`` (Eq. 14), float32, detached."""
    return asl1_gradient(pred.detach(), target.detach().to(torch.float32), mu).abs_()
