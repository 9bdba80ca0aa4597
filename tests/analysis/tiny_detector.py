"""A tiny RetinaNet and a batch for the analysis tests (no data on disk, no pretrained weights).

A plain module rather than a conftest: ``tests/data`` has a conftest of its own, and two modules named
``conftest`` cannot both be imported by name."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ghmdet.model import GHMRetinaNet, build_anchor_generator
from ghmdet.model.backbones import efficientnet_lite0_fpn

NUM_CLASSES = 3
Batch = tuple[list[Tensor], list[dict[str, Tensor]]]


def make_batch(seed: int = 0) -> Batch:
    """Two images with three boxes (one crowd box that takes no part in matching)."""
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 96, 128, generator=generator), torch.rand(3, 128, 96, generator=generator)]
    targets = [
        {
            "boxes": torch.tensor(
                [[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 90.0, 44.0], [0.0, 0.0, 20.0, 20.0]]
            ),
            "labels": torch.tensor([0, 2, 1]),
            "iscrowd": torch.tensor([0, 0, 1]),
        },
        {
            "boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]),
            "labels": torch.tensor([1]),
            "iscrowd": torch.tensor([0]),
        },
    ]
    return images, targets


def make_model(cls_loss: nn.Module, reg_loss: nn.Module, **kwargs: object) -> GHMRetinaNet:
    torch.manual_seed(0)
    model = GHMRetinaNet(
        efficientnet_lite0_fpn(pretrained=False, out_channels=16),
        NUM_CLASSES,
        cls_loss,
        reg_loss,
        head_convs=1,
        anchor_generator=build_anchor_generator(base_sizes=(16, 32, 64, 128, 256)),
        min_size=128,
        max_size=128,
        **kwargs,
    )
    with torch.no_grad():  # spread the scores so that g is not one spike at the prior
        model.head.classification_head.cls_logits.weight.normal_(std=0.5)
        model.head.regression_head.bbox_reg.weight.normal_(std=0.05)
    return model
