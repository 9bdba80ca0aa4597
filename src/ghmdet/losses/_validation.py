"""Argument and shape checks shared by every loss.

All checks here read host-side metadata only (Python numbers, shapes, dtypes), so they never synchronise
with an accelerator. Messages name the owner, the argument and the offending value so that a wrong config
entry is found without reading a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import Tensor


class NonFiniteInputError(ValueError):
    """A loss was given NaN/Inf inputs or overflowed float32: the training diverged (not a data error)."""


def check_loss_weight(owner: str, loss_weight: float) -> float:
    """``loss_weight`` must be a finite number >= 0."""
    if not isinstance(loss_weight, (int, float)) or not math.isfinite(loss_weight) or loss_weight < 0:
        raise ValueError(f"{owner}: loss_weight must be a finite number >= 0, got {loss_weight!r}")
    return float(loss_weight)


def check_bins(owner: str, bins: int) -> int:
    """``bins`` must be an integer >= 1 (booleans are rejected: ``True`` is not a bin count)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"{owner}: bins must be an integer >= 1, got {bins!r}")
    return bins


def check_momentum(owner: str, momentum: float) -> float:
    """``momentum`` must lie in [0, 1): 1 would freeze the statistics at zero forever."""
    if not isinstance(momentum, (int, float)) or not (0.0 <= momentum < 1.0):
        raise ValueError(f"{owner}: momentum must be in [0, 1), got {momentum!r}")
    return float(momentum)


def check_positive(owner: str, name: str, value: float) -> float:
    """``value`` must be a finite number > 0."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(owner: str, name: str, value: float) -> float:
    """``value`` must be a finite number >= 0."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_choice(owner: str, name: str, value: str, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices``."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"{owner}: {name} must be one of {allowed}, got {value!r}")
    return value


def check_pair(owner: str, pred_name: str, pred: Tensor, target_name: str, target: Tensor) -> None:
    """Prediction and target must be 2-D tensors of the same shape ``[N, C]``."""
    if not isinstance(pred, Tensor):
        raise ValueError(f"{owner}: {pred_name} must be a torch.Tensor, got {type(pred).__name__}")
    if not isinstance(target, Tensor):
        raise ValueError(f"{owner}: {target_name} must be a torch.Tensor, got {type(target).__name__}")
    if pred.dim() != 2:
        raise ValueError(f"{owner}: {pred_name} must have shape [N, C], got {tuple(pred.shape)}")
    if not pred.is_floating_point():
        raise ValueError(f"{owner}: {pred_name} must be a floating-point tensor, got dtype {pred.dtype}")
    if target.shape != pred.shape:
        raise ValueError(
            f"{owner}: {target_name} shape {tuple(target.shape)} does not match "
            f"{pred_name} shape {tuple(pred.shape)}"
        )
    if target.device != pred.device:
        raise ValueError(f"{owner}: {target_name} is on {target.device} but {pred_name} is on {pred.device}")


def check_valid(owner: str, valid: Tensor | None, pred: Tensor) -> None:
    """``valid`` must be None, ``[N]`` (one flag per row) or ``[N, C]`` (one flag per element)."""
    if valid is None:
        return
    if not isinstance(valid, Tensor):
        raise ValueError(f"{owner}: valid must be a torch.Tensor or None, got {type(valid).__name__}")
    rows = pred.shape[0]
    if valid.shape != (rows,) and valid.shape != pred.shape:
        raise ValueError(
            f"{owner}: valid must have shape [{rows}] or {list(pred.shape)}, got {list(valid.shape)}"
        )
    if valid.device != pred.device:
        raise ValueError(f"{owner}: valid is on {valid.device} but the predictions are on {pred.device}")


def valid_mask(valid: Tensor | None) -> Tensor | None:
    """Boolean mask broadcastable to ``[N, C]`` (``[N, 1]`` for row flags); None when all are valid.

    Anything > 0 is valid, as ``label_weight > 0`` in the released code.
    """
    if valid is None:
        return None
    mask = valid > 0
    return mask.unsqueeze(1) if mask.dim() == 1 else mask


def check_unit_interval(owner: str, name: str, value: float | None, allow_none: bool = False) -> float | None:
    """``value`` must be a number in [0, 1] (or None when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        expected = "None or a number in [0, 1]" if allow_none else "a number in [0, 1]"
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return float(value)
