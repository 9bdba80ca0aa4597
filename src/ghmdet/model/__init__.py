"""RetinaNet with a pluggable loss seam, and its backbones."""

from ghmdet.model.arguments import retinanet_arg_problems
from ghmdet.model.backbones import BACKBONES, build_backbone
from ghmdet.model.retinanet import GHMRetinaNet, build_anchor_generator, build_head, build_retinanet

__all__ = [
    "BACKBONES",
    "GHMRetinaNet",
    "build_anchor_generator",
    "build_backbone",
    "build_head",
    "build_retinanet",
    "retinanet_arg_problems",
]
