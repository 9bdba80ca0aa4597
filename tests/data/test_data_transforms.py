"""Flips move boxes with the pixels they cover."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ghmdet.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    RandomPhotometric,
    RandomRotate90,
    RandomVerticalFlip,
    build_train_transforms,
)


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


def test_photometric_jitter_keeps_boxes_and_range_and_changes_pixels() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 32, 48)
    target = {"boxes": torch.tensor([[1.0, 2.0, 10.0, 12.0]]), "labels": torch.tensor([0])}
    jitter = RandomPhotometric(0.3)
    outputs = [jitter(image.clone(), target) for _ in range(20)]
    for out_image, out_target in outputs:
        assert out_target["boxes"].equal(target["boxes"])
        assert out_image.shape == image.shape
        assert float(out_image.min()) >= 0.0
        assert float(out_image.max()) <= 1.0
    assert any(not torch.allclose(o, image) for o, _ in outputs)
    # strength 0 is the identity
    same, _ = RandomPhotometric(0.0)(image.clone(), target)
    torch.testing.assert_close(same, image)


def test_photometric_strength_is_validated_and_built_on_request() -> None:
    with pytest.raises(ValueError, match=r"strength.*1\.5"):
        RandomPhotometric(1.5)
    built = build_train_transforms(0.0, 0.0, photometric=0.2)
    assert built is not None and isinstance(built.transforms[0], RandomPhotometric)
    assert build_train_transforms(0.0, 0.0, photometric=0.0) is None


def _box_mask(height: int, width: int, box: list[int]) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    x1, y1, x2, y2 = box
    mask[0, y1:y2, x1:x2] = 1.0
    return mask


def test_rotate90_moves_boxes_with_their_pixels() -> None:
    image = _box_mask(30, 50, [20, 5, 40, 12])
    rotated, target = RandomRotate90(1.0).rotate(image, {"boxes": torch.tensor([[20.0, 5.0, 40.0, 12.0]])})
    assert rotated.shape == (1, 50, 30)
    ys, xs = torch.nonzero(rotated[0], as_tuple=True)
    pixel_box = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert target["boxes"].tolist() == [pixel_box]
    # four turns are the identity
    back, back_target = rotated, target
    for _ in range(3):
        back, back_target = RandomRotate90(1.0).rotate(back, back_target)
    torch.testing.assert_close(back, image)
    assert back_target["boxes"].tolist() == [[20.0, 5.0, 40.0, 12.0]]


def test_rotate90_probability_is_validated_and_built_on_request() -> None:
    with pytest.raises(ValueError, match=r"rotation probability.*-0\.1"):
        RandomRotate90(-0.1)
    built = build_train_transforms(0.0, 0.0, rot90_prob=0.5)
    assert built is not None and isinstance(built.transforms[0], RandomRotate90)
