"""Gradient norms of what a detector hands to its losses: g of every valid (anchor, class) pair (Eq. 3) and
gr of every box delta of the positive anchors (Eq. 14), the quantities whose distributions the paper plots
in Fig. 1/2 and Fig. 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ghmdet.losses import gradient_norm_cls, gradient_norm_reg
from ghmdet.losses._validation import valid_mask


class ClassificationNorms(NamedTuple):
    """Flattened over the valid (anchor, class) pairs of one loss call."""

    g: Tensor
    """float32: ``|sigmoid(x) - p*|``."""
    positive: Tensor
    """bool: ``p* > 0``."""


class RegressionNorms(NamedTuple):
    """Flattened over the valid box deltas of one loss call."""

    gr: Tensor
    """float32: ``|d| / sqrt(d^2 + mu^2)``."""
    abs_d: Tensor
    """float32: ``|prediction - target|``."""


def _flatten_valid(values: Sequence[Tensor], valid: Tensor | None) -> list[Tensor]:
    mask = valid_mask(valid)  # the losses' own rule: > 0 is valid, [N] flags cover whole rows
    if mask is None:
        return [v.reshape(-1) for v in values]
    mask = mask.expand(values[0].shape)
    return [v[mask] for v in values]


def classification_norms(logits: Tensor, targets: Tensor, valid: Tensor | None = None) -> ClassificationNorms:
    """g and the positive flag of the valid pairs of ``logits``/``targets`` ``[N, C]`` (``valid``: None,
    ``[N]`` or ``[N, C]``, > 0 = valid, as the losses take it)."""
    with torch.no_grad():
        g = gradient_norm_cls(logits, targets)
        positive = targets.detach() > 0
        g, positive = _flatten_valid((g, positive), valid)
    return ClassificationNorms(g, positive)


def regression_norms(
    pred: Tensor, target: Tensor, valid: Tensor | None = None, mu: float = 0.02
) -> RegressionNorms:
    """gr (with ASL1's ``mu``, paper: 0.02) and |d| of the valid deltas of ``pred``/``target`` ``[N, 4]``."""
    with torch.no_grad():
        gr = gradient_norm_reg(pred, target, mu)
        abs_d = (pred.detach().to(torch.float32) - target.detach().to(torch.float32)).abs_()
        gr, abs_d = _flatten_valid((gr, abs_d), valid)
    return RegressionNorms(gr, abs_d)


@dataclass(frozen=True)
class GradientNorms:
    """Gradient norms of a model on a set of images (CPU tensors), as :func:`collect_gradient_norms` returns.

    The classification part holds every valid (anchor, class) pair (ignored anchors excluded), the
    regression part every delta of the positive anchors, in the order the loss calls saw them.
    """

    g: Tensor
    positive: Tensor
    gr: Tensor
    abs_d: Tensor
    mu: float
    num_images: int

    @classmethod
    def concatenate(
        cls,
        classification: Sequence[ClassificationNorms],
        regression: Sequence[RegressionNorms],
        mu: float,
        num_images: int,
    ) -> GradientNorms:
        """One set from the per-call parts (moved to the CPU)."""

        def cat(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
            return torch.cat([p.cpu() for p in parts]) if parts else torch.zeros(0, dtype=dtype)

        return cls(
            g=cat([c.g for c in classification], torch.float32),
            positive=cat([c.positive for c in classification], torch.bool),
            gr=cat([r.gr for r in regression], torch.float32),
            abs_d=cat([r.abs_d for r in regression], torch.float32),
            mu=mu,
            num_images=num_images,
        )

    def summary(self) -> dict[str, float]:
        """Counts and the shares of easy (g < 0.1) and very hard (g > 0.9) pairs (paper Fig. 1's regions)."""
        pairs = max(self.g.numel(), 1)
        deltas = max(self.gr.numel(), 1)
        return {
            "images": self.num_images,
            "pairs": self.g.numel(),
            "positive_pairs": int(self.positive.sum()),
            "share_g_below_0.1": float((self.g < 0.1).sum()) / pairs,
            "share_g_above_0.9": float((self.g > 0.9).sum()) / pairs,
            "share_of_positives_with_g_above_0.5": float((self.g[self.positive] > 0.5).sum())
            / max(int(self.positive.sum()), 1),
            "deltas": self.gr.numel(),
            "median_abs_d": float(self.abs_d.median()) if self.abs_d.numel() else float("nan"),
            "share_gr_above_0.9": float((self.gr > 0.9).sum()) / deltas,
        }
