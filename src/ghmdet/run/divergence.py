"""Whether training state is still finite, and the last finite losses (what a divergence record shows).

The LightningModule refuses a step with a non-finite loss; the callback
:class:`~ghmdet.callbacks.DivergenceGuard` checks the weights after each update. Both record the divergence
with the losses of the last finite steps (:class:`LossHistory`); NaN and Inf go to JSON as strings
(:func:`json_number`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import torch


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor is free of NaN/Inf (one fused norm, one host read-back)."""
    floating = [t.detach() for t in tensors if t.is_floating_point() and t.numel()]
    if not floating:
        return True
    # The 2-norm of all tensors is finite iff every element is (barring float32 overflow of the squares
    # beyond 1e19 per element, which is a blow-up as well).
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(floating, norm_type=2.0, foreach=None)))


def model_state_finite(module: torch.nn.Module) -> bool:
    """Parameters and floating-point buffers (GHM EMA sums, BatchNorm statistics) are all finite."""
    return all_finite([*module.parameters(), *module.buffers()])


class LossHistory:
    """The loss terms of the last ``size`` finite steps, kept as device tensors (no host sync per step)."""

    def __init__(self, size: int = 10) -> None:
        self._steps: deque[tuple[int, list[str], torch.Tensor]] = deque(maxlen=size)

    def append(self, step: int, losses: Mapping[str, torch.Tensor]) -> None:
        """Record step ``step``'s loss terms."""
        names = list(losses)
        self._steps.append((step, names, torch.stack([losses[n].detach().float() for n in names])))

    def as_records(self) -> list[dict[str, Any]]:
        """``[{"step", "loss", <term>: value, ...}]``, oldest first (reads the values back)."""
        records = []
        for step, names, values in self._steps:
            terms = {name: float(v) for name, v in zip(names, values.tolist(), strict=True)}
            records.append({"step": step, "loss": float(sum(terms.values())), **terms})
        return records


def json_number(value: float) -> float | str:
    """``value`` for JSON: NaN and +-Inf as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON)."""
    return value if math.isfinite(value) else str(value)
