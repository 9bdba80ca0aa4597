"""Composable train-time transforms acting on ``(image, target)`` pairs.

``image`` is a ``[C, H, W]`` tensor and ``target["boxes"]`` a ``[K, 4]`` xyxy tensor in absolute pixel
coordinates (continuous edges: a box spans ``[x1, x2)``, the image ``[0, W)``), so a horizontal flip maps
``x -> W - x`` and swaps ``x1``/``x2``. The paper's recipe is a horizontal flip with probability 0.5 and
nothing else; the vertical flip exists for aerial imagery (no canonical "up") and is off by default.
Randomness comes from ``torch``'s global generator, which Lightning seeds per worker (``seed_everything``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"


class _RandomFlip:
    """Flip image and boxes along one axis with probability ``p``."""

    # Tensor dim of the image that is flipped, and the box columns (low, high) that mirror along it.
    image_dim: int
    box_columns: tuple[int, int]

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.p == 0.0 or torch.rand(()).item() >= self.p:
            return image, target
        return self.flip(image, target)

    def flip(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        """Flip deterministically (used by ``__call__`` and by tests)."""
        extent = image.shape[self.image_dim]
        flipped_image = image.flip(self.image_dim)
        target = dict(target)
        boxes = target["boxes"].clone()
        low, high = self.box_columns
        boxes[:, low], boxes[:, high] = extent - target["boxes"][:, high], extent - target["boxes"][:, low]
        target["boxes"] = boxes
        return flipped_image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right with probability ``p`` (the paper's only augmentation, ``p=0.5``)."""

    image_dim = -1
    box_columns = (0, 2)


class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom with probability ``p`` (for aerial data; off by default)."""

    image_dim = -2
    box_columns = (1, 3)


def build_train_transforms(hflip_prob: float = 0.5, vflip_prob: float = 0.0) -> Compose | None:
    """The train-time augmentation: flips with the given probabilities; ``None`` when both are zero."""
    transforms: list[Transform] = []
    if hflip_prob != 0:  # a negative or >1 probability reaches the flip and raises there
        transforms.append(RandomHorizontalFlip(hflip_prob))
    if vflip_prob != 0:
        transforms.append(RandomVerticalFlip(vflip_prob))
    return Compose(transforms) if transforms else None
