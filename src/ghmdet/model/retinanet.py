"""RetinaNet with a loss seam: head outputs + anchor matching -> pluggable loss modules.

The model knows nothing of which loss it has; the losses know nothing of RetinaNet (tensors in, scalar out).
The one thing the seam decides is the *scope* of batch statistics for losses that have them
(``loss.uses_batch_statistics``, i.e. GHM-C / GHM-R):

- ``stats_scope="per_level"``: the loss is called once per FPN level and the results are summed, so each level
  gets its own histogram while one EMA state is shared by the level calls. This is the released code
  (mmdetection calls its loss per level).
- ``stats_scope="batch"``: one call over all levels and images: the paper's formula (one N, one histogram).

Losses without batch statistics are called once on the whole batch; their own normaliser (number of positive
anchors in the batch, mmdetection's ``num_total_pos``) makes the level split irrelevant for them.
``loss_normalizer="per_image"`` instead calls every loss once per image and averages over images, which is
torchvision's ``RetinaNet.compute_loss`` convention (used to prove the seam equals torchvision's loss).

Anchor matching is torchvision's ``Matcher`` with the paper code's thresholds: IoU >= 0.5 positive, < 0.4
negative, in between ignored (valid = 0), and each ground-truth box's best anchors positive.
Crowd boxes (``iscrowd=1``) take no part in matching.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import box_iou
from torchvision.ops.misc import Conv2dNormActivation

from ghmdet.model.arguments import check_args
from ghmdet.model.backbones import BACKBONE_MEAN_STD, build_backbone
from ghmdet.model.tta import VIEWS, TTAViews, fuse_views, transform_image

StatsScope = Literal["per_level", "batch"]
LossNormalizer = Literal["batch", "per_image"]
HeadNorm = Literal["group"] | None
# torchvision's RetinaNet v2 head: GroupNorm with 32 groups after every tower conv
_HEAD_GROUPS = 32


def _conv_tower(channels: int, num_convs: int, norm: HeadNorm = None) -> nn.Sequential:
    norm_layer = None
    if norm == "group":
        if channels % _HEAD_GROUPS:
            raise ValueError(f"head_norm='group' needs channels divisible by {_HEAD_GROUPS}, got {channels}")
        norm_layer = partial(nn.GroupNorm, _HEAD_GROUPS)
    convs = [Conv2dNormActivation(channels, channels, norm_layer=norm_layer) for _ in range(num_convs)]
    tower = nn.Sequential(*convs)
    for layer in tower.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:  # a conv followed by a norm has none
                nn.init.zeros_(layer.bias)
    return tower


def build_head(
    in_channels: int,
    num_anchors: int,
    num_classes: int,
    num_convs: int = 4,
    prior_probability: float = 0.01,
    norm: HeadNorm = None,
) -> RetinaNetHead:
    """torchvision's RetinaNet head (same parameter names) with ``num_convs`` convs per tower.

    The classification bias starts at -log((1 - prior) / prior) so that every anchor starts with
    p = prior (the focal loss paper's initialisation, used by the GHM code too). ``norm="group"`` puts a
    GroupNorm(32) after every tower conv (torchvision's RetinaNet v2 head); the paper's head has none.
    """
    check_args(head_convs=num_convs, head_norm=norm, prior_probability=prior_probability)
    head = RetinaNetHead(in_channels, num_anchors, num_classes)
    if num_convs != 4 or norm is not None:
        head.classification_head.conv = _conv_tower(in_channels, num_convs, norm)
        head.regression_head.conv = _conv_tower(in_channels, num_convs, norm)
    nn.init.constant_(
        head.classification_head.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability)
    )
    return head


def build_anchor_generator(
    base_sizes: tuple[float, ...] = (32, 64, 128, 256, 512),
    octave_scales: int = 3,
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> AnchorGenerator:
    """Anchors ``base * 2**(i / octave_scales)``, i < octave_scales, per level (paper: base = 4 x stride)."""
    sizes = tuple(tuple(base * 2 ** (i / octave_scales) for i in range(octave_scales)) for base in base_sizes)
    return AnchorGenerator(sizes, (tuple(aspect_ratios),) * len(base_sizes))


class GHMRetinaNet(RetinaNet):
    """torchvision RetinaNet whose training loss comes from the given classification/regression loss modules.

    Inputs and outputs are torchvision's: a list of ``[3, H, W]`` images in [0, 1] and target dicts with
    ``boxes`` (xyxy) and contiguous ``labels`` in [0, num_classes); training returns
    ``{"loss_cls", "loss_reg"}``, evaluation returns detections (boxes, scores, labels) per image.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        cls_loss: nn.Module,
        reg_loss: nn.Module,
        *,
        stats_scope: StatsScope = "per_level",
        loss_normalizer: LossNormalizer = "batch",
        head_convs: int = 4,
        head_norm: HeadNorm = None,
        prior_probability: float = 0.01,
        anchor_generator: AnchorGenerator | None = None,
        tta: TTAViews | None = None,
        tta_iou: float = 0.55,
        **retinanet_kwargs: object,
    ):
        check_args(
            num_classes=num_classes,
            stats_scope=stats_scope,
            loss_normalizer=loss_normalizer,
            tta=tta,
            tta_iou=tta_iou,
        )
        anchor_generator = anchor_generator or build_anchor_generator()
        head = build_head(
            backbone.out_channels,
            anchor_generator.num_anchors_per_location()[0],
            num_classes,
            head_convs,
            prior_probability,
            head_norm,
        )
        super().__init__(
            backbone, num_classes, anchor_generator=anchor_generator, head=head, **retinanet_kwargs
        )
        self.num_classes = num_classes
        self.cls_loss = cls_loss
        self.reg_loss = reg_loss
        self.stats_scope = stats_scope
        self.loss_normalizer = loss_normalizer
        #: test-time augmentation in eval mode (``ghmdet.model.tta``): None = single pass (the paper)
        self.tta = tta
        self.tta_iou = tta_iou

    # ------------------------------------------------------------------ forward
    def forward(  # type: ignore[override]
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("GHMRetinaNet: targets are required in training mode")
        if not self.training and self.tta is not None:
            return self._forward_tta(images)
        return self._forward_single(images, targets)

    def _forward_single(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        features = list(self.backbone(image_list.tensors).values())
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        per_location = self.anchor_generator.num_anchors_per_location()
        num_anchors_per_level = [f.shape[-2] * f.shape[-1] * a for f, a in zip(features, per_location)]
        if self.training:
            return self.compute_loss(targets, head_outputs, anchors, num_anchors_per_level)
        split_outputs = {k: list(v.split(num_anchors_per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(num_anchors_per_level)) for a in anchors]
        detections = self.postprocess_detections(split_outputs, split_anchors, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def detect_single_pass(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Eval-mode detections without test-time augmentation (what the paper evaluates)."""
        if self.training:
            raise RuntimeError("detect_single_pass needs eval mode")
        detections = self._forward_single(images, None)
        assert isinstance(detections, list)
        return detections

    def _forward_tta(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections fused over the ``self.tta`` views of every image (one batched pass over all views)."""
        views = VIEWS[self.tta]
        detections = self.detect_single_pass([transform_image(img, t, m) for img in images for t, m in views])
        n = len(views)
        return [
            fuse_views(
                detections[i * n : (i + 1) * n],
                views,
                (int(img.shape[-2]), int(img.shape[-1])),
                self.tta_iou,
                self.detections_per_img,
            )
            for i, img in enumerate(images)
        ]

    # ------------------------------------------------------------------ the loss seam
    def match(self, targets: list[dict[str, Tensor]], anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Match anchors ``[B, A, 4]`` to ground truth.

        Returns ``matched`` ``[B, A]`` (gt index, -1 negative, -2 ignored), and the padded ground truth
        ``gt_boxes`` ``[B, G, 4]`` and ``gt_labels`` ``[B, G]`` that ``matched`` indexes (no crowd boxes).
        """
        batch, num_anchors = anchors.shape[:2]
        kept = []
        for t in targets:
            keep = t["iscrowd"] == 0 if "iscrowd" in t else torch.ones_like(t["labels"], dtype=torch.bool)
            kept.append((t["boxes"][keep], t["labels"][keep]))
        max_gt = max([1] + [b.shape[0] for b, _ in kept])
        gt_boxes = anchors.new_zeros(batch, max_gt, 4)
        gt_labels = torch.zeros(batch, max_gt, dtype=torch.int64, device=anchors.device)
        matched = torch.full(
            (batch, num_anchors), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=anchors.device
        )
        for i, (boxes, labels) in enumerate(kept):
            if boxes.shape[0] == 0:
                continue  # an image without boxes: every anchor is a negative
            gt_boxes[i, : boxes.shape[0]] = boxes
            gt_labels[i, : labels.shape[0]] = labels
            matched[i] = self.proposal_matcher(box_iou(boxes, anchors[i]))
        return matched, gt_boxes, gt_labels

    def compute_loss(  # type: ignore[override]
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        num_anchors_per_level: list[int] | None = None,
    ) -> dict[str, Tensor]:
        cls_logits = head_outputs["cls_logits"]  # [B, A, C]
        box_deltas = head_outputs["bbox_regression"]  # [B, A, 4]
        anchors_t = torch.stack(anchors)  # every image of a batch is padded to one size: same anchors
        if num_anchors_per_level is None:
            num_anchors_per_level = [anchors_t.shape[1]]
        matched, gt_boxes, gt_labels = self.match(targets, anchors_t)

        positive = matched >= 0
        valid = matched != Matcher.BETWEEN_THRESHOLDS
        safe_idx = matched.clamp(min=0)
        labels = torch.gather(gt_labels, 1, safe_idx)
        # Targets in float32 whatever the logits' dtype: the losses compute in float32.
        cls_targets = torch.zeros(cls_logits.shape, dtype=torch.float32, device=cls_logits.device)
        cls_targets.scatter_(2, labels.unsqueeze(-1), positive.unsqueeze(-1).float())

        matched_boxes = torch.gather(gt_boxes, 1, safe_idx.unsqueeze(-1).expand(-1, -1, 4))
        if self.loss_normalizer == "per_image":
            return self._per_image_losses(
                cls_logits, cls_targets, valid, positive, box_deltas, anchors_t, matched_boxes
            )

        reg_pred = box_deltas[positive]
        reg_target = self.box_coder.encode_single(matched_boxes[positive], anchors_t[positive])
        cls_loss = self._classification_loss(cls_logits, cls_targets, valid, num_anchors_per_level)
        level_of_anchor = torch.repeat_interleave(
            torch.arange(len(num_anchors_per_level), device=cls_logits.device),
            torch.as_tensor(num_anchors_per_level, device=cls_logits.device),
        )
        reg_level = level_of_anchor.expand_as(positive)[positive]
        reg_loss = self._regression_loss(reg_pred, reg_target, reg_level, len(num_anchors_per_level))
        return {"loss_cls": cls_loss, "loss_reg": reg_loss}

    def _split_levels(self, loss: nn.Module) -> bool:
        return self.stats_scope == "per_level" and getattr(loss, "uses_batch_statistics", False)

    def _classification_loss(
        self, logits: Tensor, targets: Tensor, valid: Tensor, num_anchors_per_level: list[int]
    ) -> Tensor:
        c = logits.shape[-1]
        if not self._split_levels(self.cls_loss):
            return self.cls_loss(logits.reshape(-1, c), targets.reshape(-1, c), valid.reshape(-1))
        total = logits.new_zeros((), dtype=torch.float32)
        for lg, tg, vd in zip(
            logits.split(num_anchors_per_level, dim=1),
            targets.split(num_anchors_per_level, dim=1),
            valid.split(num_anchors_per_level, dim=1),
        ):
            total = total + self.cls_loss(lg.reshape(-1, c), tg.reshape(-1, c), vd.reshape(-1))
        return total

    def _regression_loss(self, pred: Tensor, target: Tensor, level: Tensor, num_levels: int) -> Tensor:
        if not self._split_levels(self.reg_loss):
            return self.reg_loss(pred, target)
        total = pred.new_zeros((), dtype=torch.float32)
        for lvl in range(num_levels):
            in_level = level == lvl
            total = total + self.reg_loss(pred[in_level], target[in_level])
        return total

    def _per_image_losses(
        self,
        logits: Tensor,
        cls_targets: Tensor,
        valid: Tensor,
        positive: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        matched_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """torchvision's convention: each loss per image, averaged over the images of the batch."""
        cls_terms, reg_terms = [], []
        for i in range(logits.shape[0]):
            pos = positive[i]
            cls_terms.append(self.cls_loss(logits[i], cls_targets[i], valid[i]))
            reg_target = self.box_coder.encode_single(matched_boxes[i][pos], anchors[i][pos])
            reg_terms.append(self.reg_loss(box_deltas[i][pos], reg_target))
        return {"loss_cls": torch.stack(cls_terms).mean(), "loss_reg": torch.stack(reg_terms).mean()}


def build_retinanet(
    num_classes: int,
    cls_loss: nn.Module,
    reg_loss: nn.Module,
    backbone: dict,
    anchors: dict | None = None,
    head_convs: int = 4,
    head_norm: HeadNorm = None,
    prior_probability: float = 0.01,
    stats_scope: StatsScope = "per_level",
    loss_normalizer: LossNormalizer = "batch",
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    topk_candidates: int = 1000,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
    channels_last: bool = False,
    tta: TTAViews | None = None,
    tta_iou: float = 0.55,
) -> GHMRetinaNet:
    """Build the model from plain config values (what ``conf/model/*.yaml`` holds).

    ``backbone`` is ``{"name": <one of BACKBONES>, **kwargs}``; an unknown name lists the choices.
    ``image_mean``/``image_std`` default to what the backbone's weights were trained with.
    ``channels_last`` stores the conv weights NHWC, which oneDNN runs much faster on CPU (measured: a training
    step of the embedded model with FPN 128 / 4 head convs, 0.74 s -> 0.54 s on 2 cores).
    """
    check_args(
        num_classes=num_classes,
        backbone=backbone,
        head_convs=head_convs,
        head_norm=head_norm,
        prior_probability=prior_probability,
        stats_scope=stats_scope,
        loss_normalizer=loss_normalizer,
        min_size=min_size,
        max_size=max_size,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=topk_candidates,
        fg_iou_thresh=fg_iou_thresh,
        bg_iou_thresh=bg_iou_thresh,
        tta=tta,
        tta_iou=tta_iou,
    )
    backbone = dict(backbone)
    name = backbone.pop("name")
    net = build_backbone(str(name), **backbone)
    default_mean, default_std = BACKBONE_MEAN_STD[str(name)]
    model = GHMRetinaNet(
        net,
        num_classes,
        cls_loss,
        reg_loss,
        stats_scope=stats_scope,
        loss_normalizer=loss_normalizer,
        head_convs=head_convs,
        head_norm=head_norm,
        prior_probability=prior_probability,
        anchor_generator=build_anchor_generator(**(anchors or {})),
        # a list means multi-scale training: torchvision draws one per batch and evaluates at the last one
        min_size=min_size if isinstance(min_size, int) else tuple(int(s) for s in min_size),
        max_size=max_size,
        image_mean=list(image_mean) if image_mean is not None else default_mean,
        image_std=list(image_std) if image_std is not None else default_std,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=topk_candidates,
        fg_iou_thresh=fg_iou_thresh,
        bg_iou_thresh=bg_iou_thresh,
        tta=tta,
        tta_iou=tta_iou,
    )
    return model.to(memory_format=torch.channels_last) if channels_last else model
