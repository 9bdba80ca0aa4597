"""A scalar loss whose gradient was computed together with its value (the fused GHM path)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class PrecomputedGradient(torch.autograd.Function):
    """Returns ``loss`` (a detached scalar) and, in backward, ``grad * grad_output`` w.r.t. ``pred``.

    The GHM weights are constants (the released code detaches g), so d(loss)/d(pred) is known as soon as the
    forward pass has computed the weights; computing it there avoids keeping the inputs, re-reading them and
    letting autograd record a chain of element-wise ops.

    The stored gradient is scaled *in place* in backward and then released, which saves one input-sized
    allocation per step. The price: backpropagating twice through the same loss value (``retain_graph=True``)
    raises a RuntimeError instead of returning a wrong gradient; recompute the loss instead.
    """

    @staticmethod
    def forward(ctx: Any, pred: Tensor, loss: Tensor, grad: Tensor | None) -> Tensor:
        # Not save_for_backward: the gradient is an intermediate that backward consumes, not an input.
        ctx.precomputed_grad = grad
        ctx.pred_dtype = pred.dtype
        return loss.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        grad = ctx.precomputed_grad
        if grad is None:
            raise RuntimeError(
                "GHM loss: the precomputed gradient was already used by a previous backward pass "
                "(backward twice through the same loss is not supported; recompute the loss)"
            )
        ctx.precomputed_grad = None
        grad = grad.mul_(grad_output.to(grad.dtype))
        return grad.to(ctx.pred_dtype), None, None
