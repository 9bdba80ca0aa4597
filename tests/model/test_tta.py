"""Test-time augmentation: views invert exactly, fusion averages, the model fuses in its own frame."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops import box_iou

from ghmdet.losses import FocalLoss, L1Loss
from ghmdet.model import build_retinanet
from ghmdet.model.tta import VIEWS, invert_boxes, transform_image, weighted_box_fusion

ALL_VIEWS = VIEWS["dihedral"]


def _image_with_block(box: tuple[int, int, int, int], size: tuple[int, int] = (60, 90)) -> Tensor:
    image = torch.zeros(3, *size)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 1.0
    return image


def _block_box(image: Tensor) -> Tensor:
    """The xyxy box (pixel edges) of the bright block: what a perfect detector would report."""
    ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
    return torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)


@pytest.mark.parametrize(("turns", "mirror"), ALL_VIEWS)
def test_boxes_found_on_a_view_map_back_to_the_original_frame(turns: int, mirror: bool) -> None:
    box = (7, 11, 30, 20)  # off-centre and not square, on a non-square image: every axis mix-up shows
    image = _image_with_block(box)
    view = transform_image(image, turns, mirror)
    assert view.shape[-2:] == (image.shape[-2:] if turns % 2 == 0 else image.shape[-2:][::-1])
    back = invert_boxes(_block_box(view), turns, mirror, (60, 90))
    torch.testing.assert_close(back, torch.tensor([box], dtype=torch.float32))


def test_the_view_sets() -> None:
    assert len(VIEWS["dihedral"]) == 8 and len(set(VIEWS["dihedral"])) == 8
    assert VIEWS["flips"] == ((0, False), (0, True), (2, False), (2, True))
    assert all(views[0] == (0, False) for views in VIEWS.values())


def test_fusion_averages_overlapping_boxes_by_score_and_scores_by_views() -> None:
    boxes = torch.tensor(
        [
            [10.0, 10.0, 30.0, 30.0],  # view 1
            [12.0, 10.0, 32.0, 30.0],  # view 2, same crown (IoU 0.82)
            [60.0, 60.0, 80.0, 80.0],  # view 2 only
            [10.0, 10.0, 30.0, 30.0],  # view 2, same place, another class
        ]
    )
    scores = torch.tensor([0.6, 0.2, 0.9, 0.4])
    labels = torch.tensor([0, 0, 0, 1])
    fused_boxes, fused_scores, fused_labels = weighted_box_fusion(boxes, scores, labels, num_views=2)
    torch.testing.assert_close(fused_scores, torch.tensor([0.45, 0.4, 0.2]))
    torch.testing.assert_close(
        fused_boxes,
        torch.tensor([[60.0, 60.0, 80.0, 80.0], [10.5, 10.0, 30.5, 30.0], [10.0, 10.0, 30.0, 30.0]]),
    )
    assert fused_labels.tolist() == [0, 0, 1]
    # boxes below the IoU threshold stay apart
    apart = weighted_box_fusion(boxes[:2], scores[:2], labels[:2], num_views=2, iou_threshold=0.9)
    assert len(apart[0]) == 2
    empty = weighted_box_fusion(boxes[:0], scores[:0], labels[:0], num_views=8)
    assert all(len(t) == 0 for t in empty)
    with pytest.raises(ValueError, match="num_views must be >= 1, got 0"):
        weighted_box_fusion(boxes, scores, labels, num_views=0)


def test_a_cluster_never_scores_above_one() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    fused = weighted_box_fusion(boxes, torch.tensor([0.9, 0.9, 0.9]), torch.zeros(3, dtype=torch.long), 2)
    torch.testing.assert_close(fused[1], torch.tensor([1.0]))


def _fusion_by_definition(
    boxes: Tensor, scores: Tensor, labels: Tensor, num_views: int, iou_threshold: float = 0.55
) -> tuple[Tensor, Tensor, Tensor]:
    """The fusion rule written as the plain loop over boxes on the boxes' device: the oracle."""
    order = scores.argsort(descending=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    free = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    overlap = box_iou(boxes, boxes) >= iou_threshold
    same_class = labels[:, None] == labels[None, :]
    fused_boxes, fused_scores, fused_labels = [], [], []
    for seed in range(len(boxes)):
        if not free[seed]:
            continue
        members = free & overlap[seed] & same_class[seed]
        free &= ~members
        weights = scores[members]
        fused_boxes.append((boxes[members] * weights[:, None]).sum(dim=0) / weights.sum())
        fused_scores.append(torch.clamp(weights.sum() / num_views, max=1.0))
        fused_labels.append(labels[seed])
    if not fused_boxes:
        return boxes[:0], scores[:0], labels[:0]
    out_scores = torch.stack(fused_scores)
    order = out_scores.argsort(descending=True)
    return torch.stack(fused_boxes)[order], out_scores[order], torch.stack(fused_labels)[order]


def _views_of_objects(seed: int, num_objects: int, num_views: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Detections of a few objects as ``num_views`` views would report them: jittered copies, some missed,
    some doubled, objects of several classes on top of each other, and a box with no area."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_objects, 2, generator=gen) * 200
    sizes = 10 + torch.rand(num_objects, 2, generator=gen) * 40
    base = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    copies = base.repeat(num_views + 2, 1)  # two spare copies per object: doubled boxes of one view
    jitter = torch.randn(copies.shape, generator=gen) * 3
    boxes = torch.cat([copies + jitter, torch.tensor([[5.0, 5.0, 5.0, 9.0]])])
    keep = torch.rand(len(boxes), generator=gen) < 0.8
    keep[-1] = True
    scores = torch.rand(len(boxes), generator=gen)
    labels = torch.randint(0, 3, (len(boxes),), generator=gen)
    return boxes[keep], scores[keep], labels[keep]


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("seed", "num_objects", "iou"), [(0, 5, 0.55), (1, 20, 0.55), (2, 40, 0.3), (3, 3, 0.75)]
)
def test_fusion_equals_its_definition_to_the_bit(
    seed: int, num_objects: int, iou: float, device: str
) -> None:
    boxes, scores, labels = (t.to(device) for t in _views_of_objects(seed, num_objects))
    fused = weighted_box_fusion(boxes, scores, labels, num_views=8, iou_threshold=iou)
    expected = _fusion_by_definition(boxes, scores, labels, num_views=8, iou_threshold=iou)
    assert 1 < len(expected[0]) < len(boxes)  # clusters formed, and more than one
    for got, want in zip(fused, expected, strict=True):
        assert got.dtype == want.dtype and got.device == want.device
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


class _HostReads(TorchDispatchMode):
    """Counts the ops whose result the host must wait for (a sync on a GPU): reading a value, a boolean mask
    (its size depends on the data) and a copy to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        aten = torch.ops.aten
        masked = func is aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1])
        to_host = func is aten._to_copy.default and (kwargs or {}).get("device") == torch.device("cpu")
        if func in (aten._local_scalar_dense.default, aten.nonzero.default) or masked or to_host:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_fusion_reads_back_from_the_device_once_whatever_the_number_of_boxes() -> None:
    reads = []
    for num_objects in (2, 40):
        inputs = _views_of_objects(0, num_objects)
        with _HostReads() as counter:
            weighted_box_fusion(*inputs, num_views=8)
        reads.append(counter.count)
    # on a CPU tensor the one transfer is free; on a GPU it is the one sync
    assert reads[0] == reads[1] <= 1


def _perfect_detector(label: int, passes: list[int]) -> Callable[..., list[dict[str, Tensor]]]:
    """A ``_forward_single`` stand-in that finds each image's bright block exactly and records the size of
    every batch it is called with."""

    def detect(images: list[Tensor], targets: object) -> list[dict[str, Tensor]]:
        passes.append(len(images))
        found = {"scores": torch.tensor([0.7]), "labels": torch.tensor([label])}
        return [{"boxes": _block_box(img), **found} for img in images]

    return detect


def _model(tta: str | None, **kwargs: Any) -> torch.nn.Module:
    model = build_retinanet(
        2,
        FocalLoss(),
        L1Loss(),
        backbone={"name": "efficientnet_lite0_fpn", "pretrained": False, "out_channels": 16},
        min_size=60,
        max_size=1000,
        tta=tta,
        **kwargs,
    )
    return model.eval()


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_the_model_fuses_an_equivariant_detector_back_to_its_own_answer(
    tta: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector that finds the block exactly in every view: TTA returns the block, in the input's frame."""
    model = _model(tta)
    passes: list[int] = []
    monkeypatch.setattr(model, "_forward_single", _perfect_detector(1, passes))
    images = [_image_with_block((7, 11, 30, 20)), _image_with_block((50, 40, 80, 58))]
    detections = model(images)
    assert passes == [2 * len(VIEWS[tta])]  # one batched pass over every view of every image
    for det, box in zip(detections, ([7, 11, 30, 20], [50, 40, 80, 58]), strict=True):
        torch.testing.assert_close(det["boxes"], torch.tensor([box], dtype=torch.float32))
        torch.testing.assert_close(det["scores"], torch.tensor([0.7]))
        assert det["labels"].tolist() == [1]


def test_tta_is_eval_only_and_real_detections_stay_in_the_image() -> None:
    # no score threshold: an untrained head scores below the default one, and its anchors overhang the image
    model = _model("dihedral", score_thresh=0.0)
    images = [torch.rand(3, 60, 90)]
    with torch.no_grad():
        (det,) = model(images)
    assert det["boxes"].shape[1] == 4 and 0 < len(det["boxes"]) <= model.detections_per_img
    assert float(det["boxes"].min()) >= 0
    assert float(det["boxes"][:, [0, 2]].max()) <= 90 and float(det["boxes"][:, [1, 3]].max()) <= 60
    model.train()
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([0])}]
    assert set(model(images, targets)) == {"loss_cls", "loss_reg"}  # training never sees the views


def test_bad_tta_settings_are_named() -> None:
    with pytest.raises(ValueError, match=r"tta must be null or one of \('flips', 'dihedral'\), got 'd8'"):
        _model("d8")
    with pytest.raises(ValueError, match=r"tta_iou must be in \(0, 1\], got 0.0"):
        backbone = {"name": "efficientnet_lite0_fpn", "pretrained": False}
        build_retinanet(2, FocalLoss(), L1Loss(), backbone=backbone, tta_iou=0.0)


def test_validation_is_single_pass_and_the_test_scores_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """Periodic validation costs one pass per image; the test step runs the TTA views and the single pass."""
    from ghmdet.module import DetectionModule

    module = DetectionModule(_model("dihedral"), optimizer=torch.optim.SGD)
    passes: list[int] = []
    monkeypatch.setattr(module.model, "_forward_single", _perfect_detector(0, passes))
    images = [_image_with_block((7, 11, 30, 20)), _image_with_block((50, 40, 80, 58))]
    targets = [
        {"boxes": _block_box(img), "labels": torch.tensor([0]), "image_id": torch.tensor(i)}
        for i, img in enumerate(images)
    ]
    module.validation_step((images, targets), 0)
    assert passes == [2]
    passes.clear()
    module.test_step((images, targets), 0)
    assert sorted(passes) == [2, 2 * 8]
    # a perfect detector scores AP 1 both ways
    assert float(module.val_metrics.compute()["AP"]) == pytest.approx(1.0)
    assert float(module.test_metrics.compute()["AP"]) == pytest.approx(1.0)
    assert float(module.test_single_pass_metrics.compute()["AP"]) == pytest.approx(1.0)
