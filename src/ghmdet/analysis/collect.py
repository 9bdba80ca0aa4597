"""Collect the gradient norms of a detector over a data loader, through its loss seam.

:class:`~ghmdet.model.GHMRetinaNet` computes the classification logits/targets/valid flags and the positive
anchors' regression predictions/targets, then hands them to ``model.cls_loss`` and ``model.reg_loss``.
:func:`recorded_loss_inputs` puts recorders in the place of those two modules, so the norms are computed from
exactly what the losses receive (same matching, same ignored anchors, same per-level calls), with nothing of
the forward pass re-implemented here. The real losses do not run, so GHM's EMA state is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ghmdet.analysis.norms import (
    ClassificationNorms,
    GradientNorms,
    RegressionNorms,
    classification_norms,
    regression_norms,
)

LossInputSink = Callable[[Tensor, Tensor, Tensor | None], None]
"""Receives ``(pred, target, valid)`` of one loss call."""


class RecordingLoss(nn.Module):
    """Stands in for a loss module: passes its inputs to ``sink`` and returns a float32 zero.

    It keeps the replaced loss's ``uses_batch_statistics`` flag, so the model splits its calls per FPN level
    exactly as it would for the real loss.
    """

    def __init__(self, replaced: nn.Module, sink: LossInputSink) -> None:
        super().__init__()
        self.uses_batch_statistics = bool(getattr(replaced, "uses_batch_statistics", False))
        self.sink = sink

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        self.sink(pred, target, valid)
        return torch.zeros((), dtype=torch.float32, device=pred.device)


@contextmanager
def recorded_loss_inputs(model: nn.Module, on_cls: LossInputSink, on_reg: LossInputSink) -> Iterator[None]:
    """Within the block, ``model.cls_loss`` / ``model.reg_loss`` are :class:`RecordingLoss` es feeding
    ``on_cls`` / ``on_reg``; the real losses are put back afterwards, also on error."""
    cls_loss, reg_loss = model.cls_loss, model.reg_loss
    model.cls_loss = RecordingLoss(cls_loss, on_cls)
    model.reg_loss = RecordingLoss(reg_loss, on_reg)
    try:
        yield
    finally:
        model.cls_loss, model.reg_loss = cls_loss, reg_loss


@contextmanager
def loss_evaluation_mode(model: nn.Module) -> Iterator[None]:
    """The detector computes its training loss (its own ``training`` flag set) while every submodule is in
    eval mode (frozen batch-norm statistics, no random resizing): the loss inputs of the model as it
    predicts. All modes are restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    model.training = True
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _to_device(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets]


def collect_gradient_norms(
    model: nn.Module,
    loader: Iterable[tuple[list[Tensor], list[dict[str, Tensor]]]],
    *,
    max_images: int | None = None,
    mu: float = 0.02,
    device: torch.device | str | None = None,
) -> GradientNorms:
    """g of every valid (anchor, class) pair and gr / |d| of every positive anchor's deltas, over ``loader``.

    Args:
        model: a detector with the loss seam of :class:`~ghmdet.model.GHMRetinaNet` (``cls_loss``,
            ``reg_loss`` and ``model(images, targets)`` returning losses when ``model.training``).
        loader: batches ``(images, targets)`` as the detection data modules give them.
        max_images: stop after this many images (None: the whole loader). COCO at 1333x800 gives ~10M pairs
            (40 MB) per image, so keep it small there.
        mu: ASL1's mu for gr (paper: 0.02), whatever the model's regression loss is.
        device: where to run the model (default: where its parameters are).

    The model runs without gradients, with its submodules in eval mode (:func:`loss_evaluation_mode`).
    Returns CPU tensors (:class:`~ghmdet.analysis.norms.GradientNorms`).
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"collect_gradient_norms: max_images must be >= 1 or None, got {max_images}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    cls_parts: list[ClassificationNorms] = []
    reg_parts: list[RegressionNorms] = []

    def on_cls(logits: Tensor, targets: Tensor, valid: Tensor | None) -> None:
        cls_parts.append(
            ClassificationNorms(*(t.cpu() for t in classification_norms(logits, targets, valid)))
        )

    def on_reg(pred: Tensor, target: Tensor, valid: Tensor | None) -> None:
        reg_parts.append(RegressionNorms(*(t.cpu() for t in regression_norms(pred, target, valid, mu))))

    seen = 0
    with (
        torch.no_grad(),
        loss_evaluation_mode(model),
        recorded_loss_inputs(model, on_cls, on_reg),
    ):
        for images, targets in loader:
            if max_images is not None:
                images, targets = images[: max_images - seen], targets[: max_images - seen]
            model([image.to(device) for image in images], _to_device(list(targets), device))
            seen += len(images)
            if max_images is not None and seen >= max_images:
                break
    return GradientNorms.concatenate(cls_parts, reg_parts, mu=mu, num_images=seen)
