"""The model's one check of its arguments: the model raises it, start-up validation reports it."""

from __future__ import annotations

import pytest

from ghmdet.config_validation import config_problems
from ghmdet.losses import FocalLoss, L1Loss
from ghmdet.model import build_retinanet, retinanet_arg_problems
from tests.helpers.configs import compose_train

BACKBONE = {"name": "efficientnet_lite0_fpn", "pretrained": False, "out_channels": 16}
# (argument, bad value as a Python value, the same as a command-line override)
BAD: list[tuple[str, object, str]] = [
    ("stats_scope", "global", "global"),
    ("loss_normalizer", "image", "image"),
    ("head_norm", "batch", "batch"),
    ("head_convs", -1, "-1"),
    ("prior_probability", 0.0, "0.0"),
    ("prior_probability", 1.0, "1.0"),
    ("min_size", 0, "0"),
    ("min_size", [800, 0], "[800,0]"),
    ("max_size", 0, "0"),
    ("detections_per_img", 2.5, "2.5"),
    ("score_thresh", 1.5, "1.5"),
    ("bg_iou_thresh", -0.1, "-0.1"),
    ("tta", "d8", "d8"),
    ("tta_iou", 0.0, "0.0"),
]


@pytest.mark.parametrize(("name", "value", "override"), BAD, ids=[f"{n}={o}" for n, _, o in BAD])
def test_validation_reports_what_the_model_raises(name: str, value: object, override: str) -> None:
    with pytest.raises(ValueError) as raised:
        build_retinanet(2, FocalLoss(), L1Loss(), backbone=BACKBONE, **{name: value})
    problems = config_problems(compose_train([f"model.{name}={override}"]))
    assert [p for p in problems if p.startswith("model.")] == [f"model.{name} = {value!r}: {raised.value}"]


def test_an_unknown_backbone_is_reported_under_its_name_key() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'") as raised:
        build_retinanet(2, FocalLoss(), L1Loss(), backbone={"name": "vgg16"})
    problems = config_problems(compose_train(["model.backbone.name=vgg16"]))
    assert problems == [f"model.backbone.name = 'vgg16': {raised.value}"]


def test_every_problem_at_once_in_argument_order_and_the_presets_have_none() -> None:
    args = {"head_convs": -1, "stats_scope": "x", "score_thresh": 2, "num_classes": 0, "unrelated": None}
    assert [name for name, _ in retinanet_arg_problems(args)] == [
        "head_convs",
        "stats_scope",
        "score_thresh",
        "num_classes",
    ]
    for model in ("retinanet_effl0", "retinanet_r50", "retinanet_r101", "retinanet_x101"):
        assert retinanet_arg_problems(compose_train([f"model={model}"]).model) == [], model
