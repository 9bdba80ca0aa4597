"""Sigmoid cross-entropy computed into caller-provided buffers, without autograd (the fused GHM-C path)."""

from __future__ import annotations

import torch
from torch import Tensor


def sigmoid_bce(
    logits: Tensor, targets: Tensor, out: Tensor | None = None, workspace: Tensor | None = None
) -> Tensor:
    """Sigmoid cross-entropy ``max(x, 0) - x * y + log1p(exp(-|x|))`` in float32 (Eq. 1), no autograd.

    Numerically stable for any finite logit. ``out`` receives the result and ``workspace`` is clobbered
    (both float32, shaped like ``logits``; allocated when None). ``log1p`` is evaluated as
    ``log(u) + (z - (u - 1)) / u`` with ``u = fl(1 + z)`` (the rounding error of ``1 + z`` is exact by
    Sterbenz's lemma), because ATen's CPU ``log1p`` is several times slower than ``log``; the result is
    within a few float32 ulps of ``log1p``. Non-finite logits give a non-finite result.
    """
    with torch.no_grad():
        if out is None:
            out = torch.empty_like(logits, dtype=torch.float32)
        if workspace is None:
            workspace = torch.empty_like(logits, dtype=torch.float32)
        tail = torch.abs(logits, out=out).neg_().exp_()  # z = exp(-|x|), in (0, 1]
        one_plus = torch.add(tail, 1.0, out=workspace)  # u = fl(1 + z)
        one_plus.sub_(1.0)  # u - 1, exact
        tail.sub_(one_plus)  # z - (u - 1): the rounding error of 1 + z, exact
        one_plus.add_(1.0)  # u again, exactly
        tail.div_(one_plus)  # first-order correction (z - (u - 1)) / u, below 2**-24 in magnitude
        tail.add_(one_plus.log_())  # log1p(z) = log(u) + correction + O(2**-49)
        # max(x, 0) - x*y is added last so that tiny log terms of confident logits are not absorbed first.
        linear = torch.clamp(logits, min=0.0, out=workspace).addcmul_(logits, targets, value=-1.0)
        return tail.add_(linear)
