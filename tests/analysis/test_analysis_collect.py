"""collect_gradient_norms: the norms of exactly what the loss seam hands to the losses, nothing changed."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ghmdet.analysis import collect_gradient_norms, recorded_loss_inputs
from ghmdet.losses import BCELoss, GHMCLoss, GHMRLoss, SmoothL1Loss
from ghmdet.model import GHMRetinaNet
from tests.analysis.tiny_detector import Batch, make_batch, make_model


def reference_norms(model: GHMRetinaNet, batch: Batch, mu: float = 0.02) -> dict[str, Tensor]:
    """g, positives and |d| recomputed from the model's parts (eval mode), independently of the seam."""
    images, targets = batch
    model.eval()
    with torch.no_grad():
        image_list, targets = model.transform(images, targets)
        features = list(model.backbone(image_list.tensors).values())
        head = model.head(features)
        anchors = torch.stack(model.anchor_generator(image_list, features))
        matched, gt_boxes, gt_labels = model.match(targets, anchors)
    valid, positive = matched != -2, matched >= 0
    labels = torch.gather(gt_labels, 1, matched.clamp(min=0))
    onehot = torch.nn.functional.one_hot(labels, model.num_classes).float() * positive.unsqueeze(-1)
    g = (torch.sigmoid(head["cls_logits"]) - onehot).abs()[valid]
    boxes = torch.gather(gt_boxes, 1, matched.clamp(min=0).unsqueeze(-1).expand(-1, -1, 4))
    deltas = model.box_coder.encode_single(boxes[positive], anchors[positive])
    d = (head["bbox_regression"][positive] - deltas).abs()
    return {
        "g": g.reshape(-1),
        "positive": (onehot[valid] > 0).reshape(-1),
        "abs_d": d.reshape(-1),
        "gr": (d / torch.sqrt(d * d + mu * mu)).reshape(-1),
    }


@pytest.mark.parametrize("stats_scope", ["per_level", "batch"])
@pytest.mark.parametrize("normalizer", ["batch", "per_image"])
def test_collected_norms_equal_a_recomputation_from_the_model_parts(
    stats_scope: str, normalizer: str
) -> None:
    batch = make_batch()
    model = make_model(GHMCLoss(), GHMRLoss(), stats_scope=stats_scope, loss_normalizer=normalizer)
    norms = collect_gradient_norms(model, [batch])
    expected = reference_norms(model, batch)
    assert norms.num_images == 2
    for name in ("g", "abs_d", "gr"):
        got = getattr(norms, name)
        assert got.shape == expected[name].shape, name
        # The seam orders pairs by level (per_level) or by image; compare as sets.
        torch.testing.assert_close(got.sort().values, expected[name].sort().values, rtol=1e-5, atol=1e-6)
    assert int(norms.positive.sum()) == int(expected["positive"].sum()) > 0
    # every positive pair has g = 1 - p, every negative g = p: the positives' g agree as sets too
    torch.testing.assert_close(
        norms.g[norms.positive].sort().values, expected["g"][expected["positive"]].sort().values
    )


def test_collection_leaves_the_model_as_it_was() -> None:
    batch = make_batch()
    model = make_model(GHMCLoss(momentum=0.75), GHMRLoss(momentum=0.7))
    model.train()
    model(*make_batch(1))  # some EMA state to protect
    cls_loss, reg_loss = model.cls_loss, model.reg_loss
    state = {k: v.clone() for k, v in model.state_dict().items()}
    last_counts = cls_loss.last_counts.clone()
    modes = {name: m.training for name, m in model.named_modules()}

    collect_gradient_norms(model, [batch, batch], max_images=3)

    assert model.cls_loss is cls_loss and model.reg_loss is reg_loss
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(cls_loss.last_counts, last_counts)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_max_images_stops_the_collection() -> None:
    batch = make_batch()
    model = make_model(BCELoss(), SmoothL1Loss())
    one_batch = collect_gradient_norms(model, [batch])
    three = collect_gradient_norms(model, [batch, batch, batch], max_images=3)
    assert three.num_images == 3
    first_image = collect_gradient_norms(model, [([batch[0][0]], [batch[1][0]])])
    assert three.g.numel() == one_batch.g.numel() + first_image.g.numel()
    with pytest.raises(ValueError, match="max_images"):
        collect_gradient_norms(model, [batch], max_images=0)


def test_recorders_are_replaced_back_after_an_error() -> None:
    model = make_model(GHMCLoss(), GHMRLoss())
    cls_loss, reg_loss = model.cls_loss, model.reg_loss
    with pytest.raises(RuntimeError, match="boom"), recorded_loss_inputs(model, print, print):
        assert model.cls_loss is not cls_loss and model.cls_loss.uses_batch_statistics
        raise RuntimeError("boom")
    assert model.cls_loss is cls_loss and model.reg_loss is reg_loss


def test_summary_counts() -> None:
    batch = make_batch()
    norms = collect_gradient_norms(make_model(GHMCLoss(), GHMRLoss()), [batch])
    summary = norms.summary()
    assert summary["pairs"] == norms.g.numel() and summary["deltas"] == norms.gr.numel()
    assert summary["deltas"] == 4 * summary["positive_pairs"]  # one positive class per positive anchor
    assert 0 <= summary["share_g_below_0.1"] <= 1
