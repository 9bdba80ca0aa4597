"""Flips move boxes with the pixels they cover."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ghmdet.data.transforms import Compose, RandomHorizontalFlip, RandomVerticalFlip, build_train_transforms


def painted(height: int, width: int, boxes: list[list[int]]) -> tuple[torch.Tensor, dict[str, Any]]:
    """An image that is 1 exactly inside the integer boxes and 0 elsewhere, with its target."""
    image = torch.zeros(3, height, width)
    for x1, y1, x2, y2 in boxes:
        image[:, y1:y2, x1:x2] = 1.0
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.zeros(len(boxes)),
    }
    return image, target


def painted_region(image: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = (int(v) for v in box.tolist())
    return image[:, y1:y2, x1:x2]


@pytest.mark.parametrize("flip", [RandomHorizontalFlip(1.0), RandomVerticalFlip(1.0)])
def test_flipped_boxes_still_cover_their_pixels(flip: RandomHorizontalFlip) -> None:
    image, target = painted(20, 30, [[1, 2, 7, 5], [20, 10, 30, 20]])
    flipped_image, flipped_target = flip(image, target)
    assert flipped_image.sum() == image.sum()
    for box in flipped_target["boxes"]:
        assert painted_region(flipped_image, box).min() == 1.0
    assert flipped_target["labels"] is target["labels"]
    assert target["boxes"].tolist() == [[1, 2, 7, 5], [20, 10, 30, 20]]  # the input target is not modified


def test_horizontal_flip_coordinates() -> None:
    image, target = painted(20, 30, [[1, 2, 7, 5]])
    _, flipped = RandomHorizontalFlip(1.0)(image, target)
    assert flipped["boxes"].tolist() == [[23.0, 2.0, 29.0, 5.0]]


def test_vertical_flip_coordinates() -> None:
    image, target = painted(20, 30, [[1, 2, 7, 5]])
    _, flipped = RandomVerticalFlip(1.0)(image, target)
    assert flipped["boxes"].tolist() == [[1.0, 15.0, 7.0, 18.0]]


def test_double_flip_is_identity_and_empty_boxes_work() -> None:
    image, target = painted(9, 13, [[0, 0, 13, 9], [3, 4, 5, 6]])
    flip = Compose(
        [
            RandomHorizontalFlip(1.0),
            RandomVerticalFlip(1.0),
            RandomHorizontalFlip(1.0),
            RandomVerticalFlip(1.0),
        ]
    )
    again_image, again_target = flip(image, target)
    torch.testing.assert_close(again_image, image)
    torch.testing.assert_close(again_target["boxes"], target["boxes"])
    empty = {"boxes": torch.zeros(0, 4)}
    assert RandomHorizontalFlip(1.0)(image, empty)[1]["boxes"].shape == (0, 4)


def test_probability_zero_never_flips_and_half_flips_about_half() -> None:
    image, target = painted(4, 6, [[0, 0, 2, 2]])
    never = RandomHorizontalFlip(0.0)
    assert all(never(image, target)[1] is target for _ in range(50))
    torch.manual_seed(0)
    half = RandomHorizontalFlip(0.5)
    flips = sum(half(image, target)[1]["boxes"][0, 0].item() == 4.0 for _ in range(400))
    assert 150 < flips < 250


def test_invalid_probability() -> None:
    with pytest.raises(ValueError, match="probability"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="probability"):
        build_train_transforms(hflip_prob=-0.1)


def test_paper_recipe_is_horizontal_flip_only() -> None:
    transforms = build_train_transforms()
    assert isinstance(transforms, Compose)
    assert [type(t) for t in transforms.transforms] == [RandomHorizontalFlip]
    assert transforms.transforms[0].p == 0.5
    assert build_train_transforms(0.0, 0.0) is None
    assert [type(t) for t in build_train_transforms(0.5, 0.5).transforms] == [
        RandomHorizontalFlip,
        RandomVerticalFlip,
    ]
