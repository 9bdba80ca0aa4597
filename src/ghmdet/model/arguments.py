"""The model's argument rules, stated once: :mod:`ghmdet.model.retinanet` raises them, start-up validation
(:mod:`ghmdet.config_validation`) reports every one of them for a config before any data loads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ghmdet.model.backbones import BACKBONES
from ghmdet.model.tta import VIEWS

_STATS_SCOPES = ("per_level", "batch")
_NORMALIZERS = ("batch", "per_image")
_HEAD_NORMS = (None, "group")
_FRACTIONS = ("score_thresh", "nms_thresh", "fg_iou_thresh", "bg_iou_thresh")
_COUNTS = ("max_size", "detections_per_img", "topk_candidates", "num_classes")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_fraction(value: object, low_open: bool = False, high_open: bool = False) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    above_low = value > 0 if low_open else value >= 0
    return above_low and (value < 1 if high_open else value <= 1)


def _arg_problem(name: str, args: Mapping[str, Any]) -> str | None:
    """The error message of argument ``name`` of ``args``, or None when it is valid."""
    value = args[name]
    if name == "backbone":
        backbone_name = value.get("name") if isinstance(value, Mapping) else None
        if backbone_name is None:
            return "backbone.name is required"
        if backbone_name not in BACKBONES:
            return f"unknown backbone {backbone_name!r}; choices: {', '.join(sorted(BACKBONES))}"
    elif name == "stats_scope" and value not in _STATS_SCOPES:
        return f"stats_scope must be one of {_STATS_SCOPES}, got {value!r}"
    elif name == "loss_normalizer" and value not in _NORMALIZERS:
        return f"loss_normalizer must be one of {_NORMALIZERS}, got {value!r}"
    elif name == "head_norm" and value not in _HEAD_NORMS:
        return f"head_norm must be one of {_HEAD_NORMS}, got {value!r}"
    elif name == "head_convs" and (not _is_int(value) or value < 0):
        return f"head_convs must be an integer >= 0, got {value!r}"
    elif name == "prior_probability" and not _is_fraction(value, low_open=True, high_open=True):
        return f"prior_probability must be in (0, 1), got {value!r}"
    elif name == "min_size":
        sizes = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if not sizes or not all(_is_int(size) and size >= 1 for size in sizes):
            return f"min_size must be a positive integer or a list of them, got {value!r}"
    elif name in _COUNTS and (not _is_int(value) or value < 1):
        return f"{name} must be an integer >= 1, got {value!r}"
    elif name in _FRACTIONS and not _is_fraction(value):
        return f"{name} must be in [0, 1], got {value!r}"
    elif name == "tta" and value is not None and value not in VIEWS:
        return f"tta must be null or one of {tuple(VIEWS)}, got {value!r}"
    elif name == "tta_iou" and not _is_fraction(value, low_open=True):
        return f"tta_iou must be in (0, 1], got {value!r}"
    return None


def retinanet_arg_problems(args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every invalid argument of :func:`ghmdet.model.build_retinanet` among ``args``, with its message.

    The one statement of the model's argument rules: the model's constructors raise the first of these, and
    start-up validation (:mod:`ghmdet.config_validation`) reports all of them, before any data loads.

    Args:
        args: argument name -> value (e.g. the model config); names that are not checked are ignored, and
            an argument that is absent is not checked.

    Returns:
        ``(argument, message)`` pairs in the order of ``args``; empty when every argument is valid.
    """
    problems = []
    for name in args:
        message = _arg_problem(str(name), args)
        if message is not None:
            problems.append((str(name), message))
    return problems


def check_args(**args: Any) -> None:
    """Raise ``ValueError`` with the message of the first invalid argument (the model's constructors)."""
    problems = retinanet_arg_problems(args)
    if problems:
        raise ValueError(problems[0][1])
