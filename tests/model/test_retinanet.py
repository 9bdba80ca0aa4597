"""The loss seam of GHMRetinaNet: equivalence with torchvision, statistics scope, matching edge cases."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.ops import sigmoid_focal_loss

from ghmdet.losses import FocalLoss, GHMCLoss, GHMRLoss, L1Loss
from ghmdet.model import GHMRetinaNet, build_anchor_generator, build_retinanet
from ghmdet.model.backbones import efficientnet_lite0_fpn

NUM_CLASSES = 3


def _images_targets(seed: int = 0) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 128, 96, generator=g)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 90.0, 44.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


def _model(
    cls_loss: nn.Module, reg_loss: nn.Module, backbone_channels: int = 16, **kwargs: object
) -> GHMRetinaNet:
    torch.manual_seed(0)
    backbone = efficientnet_lite0_fpn(pretrained=False, out_channels=backbone_channels)
    return GHMRetinaNet(
        backbone,
        NUM_CLASSES,
        cls_loss,
        reg_loss,
        anchor_generator=build_anchor_generator(base_sizes=(16, 32, 64, 128, 256)),
        min_size=128,
        max_size=128,
        **kwargs,
    )


def test_focal_l1_per_image_equals_torchvision_compute_loss() -> None:
    ours = _model(FocalLoss(alpha=0.25, gamma=2.0), L1Loss(), loss_normalizer="per_image")
    reference = RetinaNet(
        ours.backbone,
        NUM_CLASSES,
        anchor_generator=ours.anchor_generator,
        head=ours.head,
        min_size=128,
        max_size=128,
        image_mean=ours.transform.image_mean,
        image_std=ours.transform.image_std,
    )
    # Make the predictions non-trivial so that the regression loss is not just |target|.
    with torch.no_grad():
        for p in ours.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images, targets = _images_targets()
    ours.train()
    reference.train()
    got = ours(images, targets)
    expected = reference(images, targets)
    torch.testing.assert_close(got["loss_cls"], expected["classification"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["loss_reg"], expected["bbox_regression"], rtol=1e-5, atol=1e-6)


def test_batch_normaliser_is_the_whole_batch_number_of_positives() -> None:
    """mmdetection convention: sum of the focal loss over every valid pair of the batch / total positives."""
    model = _model(FocalLoss(), L1Loss())
    images, targets = _images_targets()
    model.train()
    captured: dict[str, Tensor] = {}

    def spy(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        captured["logits"], captured["targets"], captured["valid"] = args
        captured["loss"] = output

    model.cls_loss.register_forward_hook(spy)
    model(images, targets)
    valid = captured["valid"] > 0
    num_pos = captured["targets"][valid].amax(dim=1).sum().clamp(min=1)
    expected = (
        sigmoid_focal_loss(captured["logits"][valid], captured["targets"][valid], reduction="sum") / num_pos
    )
    torch.testing.assert_close(captured["loss"], expected)
    assert num_pos > 2  # several positives in each image: a per-image average would differ


class _Recorder(nn.Module):
    """A loss that records the row count of each call (optionally claiming batch statistics)."""

    def __init__(self, uses_batch_statistics: bool):
        super().__init__()
        self.uses_batch_statistics = uses_batch_statistics
        self.rows: list[int] = []

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        self.rows.append(pred.shape[0])
        return pred.float().sum() * 0.0


@pytest.mark.parametrize("scope", ["per_level", "batch"])
def test_stats_scope_splits_only_losses_with_batch_statistics(scope: str) -> None:
    cls_stats, reg_stats = _Recorder(True), _Recorder(True)
    model = _model(cls_stats, reg_stats, stats_scope=scope)
    images, targets = _images_targets()
    model.train()
    model(images, targets)
    # images are padded to 128x128 -> P3..P7 feature maps of 16, 8, 4, 2, 1 cells, 9 anchors each, 2 images
    per_level_rows = [2 * 9 * n * n for n in (16, 8, 4, 2, 1)]
    if scope == "per_level":
        assert cls_stats.rows == per_level_rows
        assert len(reg_stats.rows) == 5
        assert sum(reg_stats.rows) > 0
    else:
        assert cls_stats.rows == [sum(per_level_rows)]
        assert len(reg_stats.rows) == 1

    plain_cls, plain_reg = _Recorder(False), _Recorder(False)
    model = _model(plain_cls, plain_reg, stats_scope=scope)
    model.train()
    model(images, targets)
    assert plain_cls.rows == [sum(per_level_rows)]
    assert len(plain_reg.rows) == 1


def test_ghm_losses_train_through_the_seam_and_update_their_state() -> None:
    model = _model(GHMCLoss(), GHMRLoss())
    images, targets = _images_targets()
    model.train()
    losses = model(images, targets)
    total = losses["loss_cls"] + losses["loss_reg"]
    total.backward()
    assert torch.isfinite(total)
    assert model.cls_loss.acc_sum.sum() > 0
    assert model.reg_loss.acc_sum.sum() > 0
    grads = [p.grad for p in model.head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_image_without_boxes_trains_with_all_anchors_negative() -> None:
    cls = _Recorder(False)
    model = _model(cls, L1Loss())
    images, _ = _images_targets()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    model.train()
    captured: dict[str, Tensor] = {}
    model.cls_loss.register_forward_hook(lambda m, a, o: captured.update(targets=a[1], valid=a[2]))
    losses = model(images, empty)
    assert captured["targets"].sum() == 0
    assert bool(captured["valid"].all())
    assert torch.isfinite(losses["loss_reg"]) and losses["loss_reg"] == 0


def test_crowd_boxes_take_no_part_in_matching() -> None:
    model = _model(FocalLoss(), L1Loss())
    _, targets = _images_targets()
    crowd = [dict(t, iscrowd=torch.ones_like(t["labels"])) for t in targets]
    anchors = torch.tensor([[[10.0, 12.0, 50.0, 60.0], [0.0, 0.0, 8.0, 8.0]]] * 2)
    matched, _, _ = model.match(crowd, anchors)
    assert (matched == -1).all()
    matched, _, _ = model.match(targets, anchors)
    assert matched[0, 0] == 0


def test_eval_mode_returns_detections_in_original_coordinates() -> None:
    model = _model(FocalLoss(), L1Loss(), score_thresh=0.0)
    images, _ = _images_targets()
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det, img in zip(detections, images):
        assert set(det) >= {"boxes", "scores", "labels"}
        assert det["boxes"].shape[0] > 0
        assert det["boxes"][:, 2].max() <= img.shape[-1] + 1e-3
        assert det["boxes"][:, 3].max() <= img.shape[-2] + 1e-3


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet5'.*efficientnet_lite0_fpn.*resnet50_fpn"):
        build_retinanet(1, FocalLoss(), L1Loss(), backbone={"name": "resnet5"})


def test_bad_scope_and_normaliser_are_named() -> None:
    with pytest.raises(ValueError, match=r"stats_scope.*'levels'"):
        _model(FocalLoss(), L1Loss(), stats_scope="levels")
    with pytest.raises(ValueError, match=r"loss_normalizer.*'image'"):
        _model(FocalLoss(), L1Loss(), loss_normalizer="image")


def test_classification_prior_bias() -> None:
    model = _model(FocalLoss(), L1Loss())
    bias = model.head.classification_head.cls_logits.bias
    torch.testing.assert_close(torch.sigmoid(bias), torch.full_like(bias, 0.01))


def test_a_list_of_min_sizes_trains_multi_scale_and_evaluates_at_the_last() -> None:
    model = build_retinanet(
        NUM_CLASSES,
        FocalLoss(),
        L1Loss(),
        backbone={"name": "efficientnet_lite0_fpn", "pretrained": False, "out_channels": 16},
        min_size=[96, 160, 128],
        max_size=1000,
    )
    assert model.transform.min_size == (96, 160, 128)
    image = _images_targets()[0][0]  # 96 x 128
    model.eval()
    assert min(model.transform([image])[0].image_sizes[0]) == 128
    model.train()
    torch.manual_seed(0)
    drawn = {min(model.transform([image])[0].image_sizes[0]) for _ in range(30)}
    assert drawn == {96, 160, 128}


def test_group_norm_head_puts_a_groupnorm_after_every_tower_conv_and_trains() -> None:
    model = _model(FocalLoss(), L1Loss(), head_convs=2, head_norm="group", backbone_channels=64)
    for tower in (model.head.classification_head.conv, model.head.regression_head.conv):
        kinds = [type(layer) for block in tower for layer in block]
        assert kinds == [nn.Conv2d, nn.GroupNorm, nn.ReLU] * 2
        assert all(block[1].num_groups == 32 for block in tower)
    images, targets = _images_targets()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert model.head.regression_head.conv[0][1].weight.grad is not None
    # the paper's head (default) has none
    plain = _model(FocalLoss(), L1Loss(), head_convs=2)
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.head.modules())


def test_bad_head_norm_is_named() -> None:
    with pytest.raises(ValueError, match=r"head_norm.*'batch'"):
        _model(FocalLoss(), L1Loss(), head_norm="batch")
    with pytest.raises(ValueError, match=r"divisible by 32, got 16"):
        _model(FocalLoss(), L1Loss(), head_norm="group")
