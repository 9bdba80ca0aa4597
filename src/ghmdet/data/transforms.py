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


class _RandomGeometric:
    """Apply a deterministic geometric transform (``apply``) with probability ``p``."""

    kind: str  # named in the error message

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{self.kind} probability must be in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.p == 0.0 or torch.rand(()).item() >= self.p:
            return image, target
        return self.apply(image, target)

    def apply(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class _RandomFlip(_RandomGeometric):
    """Flip image and boxes along one axis with probability ``p``."""

    kind = "flip"
    # Tensor dim of the image that is flipped, and the box columns (low, high) that mirror along it.
    image_dim: int
    box_columns: tuple[int, int]

    def apply(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
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


class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right with probability ``p`` (the paper's only augmentation, ``p=0.5``)."""

    image_dim = -1
    box_columns = (0, 2)


class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom with probability ``p`` (for aerial data; off by default)."""

    image_dim = -2
    box_columns = (1, 3)


class RandomRotate90(_RandomGeometric):
    """Rotate image and boxes by 90 degrees counter-clockwise with probability ``p`` (aerial data only).

    With both flips this reaches all 8 orientations of the square's symmetry group. A point ``(x, y)`` of a
    ``W``-wide image moves to ``(y, W - x)``, so a box ``[x1, y1, x2, y2]`` becomes
    ``[y1, W - x2, y2, W - x1]``.
    """

    kind = "rotation"

    def apply(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        return self.rotate(image, target)

    def rotate(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        """Rotate deterministically (used by ``__call__`` and by tests)."""
        width = image.shape[-1]
        boxes = target["boxes"]
        target = dict(target)
        target["boxes"] = torch.stack(
            [boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], dim=1
        )
        return torch.rot90(image, 1, dims=(-2, -1)), target


class RandomPhotometric:
    """Random brightness and contrast (each a factor drawn from ``[1 - strength, 1 + strength]``).

    Boxes are untouched. Meant for small data sets whose held-out images differ in illumination (the
    embedded tree crowns: other flight, other site); the COCO recipe keeps it off (``strength=0``).
    """

    def __init__(self, strength: float = 0.2) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"photometric strength must be in [0, 1), got {strength!r}")
        self.strength = strength

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        brightness, contrast = (1.0 + (torch.rand(2) * 2.0 - 1.0) * self.strength).tolist()
        mean = image.mean()
        image = ((image - mean) * contrast + mean * brightness).clamp_(0.0, 1.0)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength})"


def build_train_transforms(
    hflip_prob: float = 0.5, vflip_prob: float = 0.0, photometric: float = 0.0, rot90_prob: float = 0.0
) -> Compose | None:
    """The train-time augmentation: flips with the given probabilities, then an optional photometric jitter;
    ``None`` when all are off."""
    transforms: list[Transform] = []
    if hflip_prob != 0:  # a negative or >1 probability reaches the flip and raises there
        transforms.append(RandomHorizontalFlip(hflip_prob))
    if vflip_prob != 0:
        transforms.append(RandomVerticalFlip(vflip_prob))
    if rot90_prob != 0:
        transforms.append(RandomRotate90(rot90_prob))
    if photometric != 0:
        transforms.append(RandomPhotometric(photometric))
    return Compose(transforms) if transforms else None
