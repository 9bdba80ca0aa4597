"""Every image mode Pillow opens is served with its content (known pixel values) or refused in one line.

Rules: :mod:`ghmdet.data.images` (module docstring) and ``docs/data.md``. Each case writes one image whose
pixel values are known, lists it in a one-image COCO file and compares what the dataset serves.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ghmdet.data.annotations import DatasetError
from ghmdet.data.dataset import CocoDetectionDataset
from ghmdet.data.images import decode_rgb, image_mode_problem

ORIENTATION = 0x0112
#: 16-bit values and their 8-bit high bytes (the documented rule: v >> 8)
VALUES_16 = np.array([[0, 255, 256, 1000, 32768, 65535]], dtype=np.uint16)
HIGH_BYTES = [0, 0, 1, 3, 128, 255]


def one_image_set(
    tmp_path: Path, name: str, width: int, height: int, boxes: list[list[float]] | None = None
) -> tuple[Path, Path]:
    """``(image dir, COCO file)`` listing ``images/<name>`` as ``width`` x ``height`` (the test writes it)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    annotations = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box} for i, box in enumerate(boxes or [])
    ]
    document = {
        "images": [{"id": 1, "file_name": name, "width": width, "height": height}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(document))
    return tmp_path / "images", ann_file


def served(tmp_path: Path, image: Image.Image, name: str, **save: object) -> np.ndarray:
    """Save ``image`` as ``name``, list it at its displayed size, return the served ``[H, W, 3]`` uint8."""
    image_dir, ann_file = one_image_set(tmp_path, name, *image.size)
    image.save(image_dir / name, **save)
    pixels = CocoDetectionDataset(image_dir, ann_file).load_image(0)
    assert pixels.dtype == torch.uint8 and pixels.shape[0] == 3
    return pixels.permute(1, 2, 0).numpy()


def gray(values: list[int]) -> list[list[list[int]]]:
    return [[[v, v, v] for v in values]]


def write_png_16(path: Path, pixels: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB); color type 2 RGB, 4 LA, 6 RGBA."""
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------------------- 8-bit modes


def test_bilevel_image_is_black_and_white(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 255, 0]], dtype=np.uint8)).convert("1")
    assert served(tmp_path, image, "a.png").tolist() == gray([0, 255, 0])


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 17, 128, 255]], dtype=np.uint8), "L")
    assert served(tmp_path, image, "a.png").tolist() == gray([0, 17, 128, 255])


def test_palette_image_is_looked_up_and_its_transparency_dropped(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), "P")
    image.putpalette([200, 100, 50, 10, 20, 30, 0, 255, 0])
    # index 0 fully transparent: its palette colour is still what is served
    assert served(tmp_path, image, "a.png", transparency=0).tolist() == [
        [[200, 100, 50], [10, 20, 30], [0, 255, 0]]
    ]


@pytest.mark.parametrize(("mode", "name"), [("LA", "a.png"), ("RGBA", "a.png"), ("RGBA", "a.tif")])
def test_alpha_is_dropped_and_colour_served_as_stored(tmp_path: Path, mode: str, name: str) -> None:
    colour = np.array([[[200, 100, 50], [10, 20, 30]]], dtype=np.uint8)
    alpha = np.array([[[0], [128]]], dtype=np.uint8)
    if mode == "LA":
        pixels = np.concatenate([colour[:, :, :1], alpha], axis=2)
        expected = [[[200] * 3, [10] * 3]]
    else:
        pixels = np.concatenate([colour, alpha], axis=2)
        expected = colour.tolist()
    assert served(tmp_path, Image.fromarray(pixels, mode), name).tolist() == expected


def test_cmyk_is_converted_without_a_profile(tmp_path: Path) -> None:
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 128, 0, 0]]], dtype=np.uint8)
    expected = [[[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 127, 255]]]
    assert served(tmp_path, Image.fromarray(cmyk, "CMYK"), "a.tif").tolist() == expected
    # a CMYK JPEG (Adobe, stored inverted) is decoded the same way, up to the JPEG loss
    jpeg = served(tmp_path, Image.fromarray(np.repeat(cmyk, 8, axis=1), "CMYK"), "b.jpg", quality=100)
    assert np.abs(jpeg[:, ::8].astype(int) - np.array(expected)).max() <= 3


def test_ycbcr_is_converted_with_the_jpeg_transform(tmp_path: Path) -> None:
    ycbcr = np.array([[[128, 128, 128], [255, 128, 128], [0, 128, 128], [76, 85, 255]]], dtype=np.uint8)
    pixels = served(tmp_path, Image.fromarray(ycbcr, "YCbCr"), "a.tif")
    assert pixels[0, :3].tolist() == [[128] * 3, [255] * 3, [0] * 3]
    assert np.abs(pixels[0, 3].astype(int) - [255, 0, 0]).max() <= 2  # BT.601 red


# ------------------------------------------------------------------------------------------ 16-bit modes


@pytest.mark.parametrize(
    ("name", "byte_order"), [("a.png", "<"), ("a.tif", "<"), ("a.tif", ">")], ids=["png", "tiff", "tiff-BE"]
)
def test_16_bit_grayscale_is_scaled_to_its_high_byte(tmp_path: Path, name: str, byte_order: str) -> None:
    mode = "I;16B" if byte_order == ">" else "I;16"
    data = VALUES_16.astype(f"{byte_order}u2").tobytes()
    image = Image.frombytes(mode, (VALUES_16.shape[1], 1), data)
    pixels = served(tmp_path, image, name)
    assert Image.open(tmp_path / "images" / name).mode == mode
    assert pixels.tolist() == gray(HIGH_BYTES)  # 1000 -> 3, not clipped to 255


@pytest.mark.parametrize(
    ("color_type", "channels"), [(2, 3), (6, 4), (4, 2)], ids=["rgb16", "rgba16", "la16"]
)
def test_16_bit_colour_and_alpha_files_use_the_same_rule(
    tmp_path: Path, color_type: int, channels: int
) -> None:
    planes = [VALUES_16, 65535 - VALUES_16, VALUES_16 // 2, np.full_like(VALUES_16, 30000)]
    pixels = np.stack(planes[:channels] if channels != 2 else [planes[0], planes[3]], axis=-1)
    image_dir, ann_file = one_image_set(tmp_path, "a.png", VALUES_16.shape[1], 1)
    write_png_16(image_dir / "a.png", pixels, color_type)
    served_pixels = CocoDetectionDataset(image_dir, ann_file).load_image(0).permute(1, 2, 0).numpy()
    colour = pixels[:, :, : min(channels, 3)] if channels != 2 else pixels[:, :, :1].repeat(3, axis=2)
    assert served_pixels.tolist() == (colour >> 8).astype(np.uint8).tolist()


# ---------------------------------------------------------------------------------------- refused modes


@pytest.mark.parametrize(
    ("array", "mode", "name"),
    [
        (VALUES_16.astype(np.int32), "I", "a.tif"),
        (VALUES_16.astype(np.float32) / 65535, "F", "a.tif"),
        (np.zeros((1, 6, 3), dtype=np.uint8), "LAB", "a.tif"),
    ],
    ids=["I", "F", "LAB"],
)
def test_modes_without_a_defined_8_bit_rgb_meaning_are_refused_at_construction(
    tmp_path: Path, array: np.ndarray, mode: str, name: str
) -> None:
    image = Image.fromarray(array, mode) if mode != "LAB" else Image.frombytes("LAB", (6, 1), array.tobytes())
    image_dir, ann_file = one_image_set(tmp_path, name, 6, 1)
    image.save(image_dir / name)
    assert Image.open(image_dir / name).mode == mode
    with pytest.raises(DatasetError) as error:
        CocoDetectionDataset(image_dir, ann_file)  # the header check, before any pixel is decoded
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"{image_dir / name}: image id=1 (listed in {ann_file}): mode {mode} is refused"
    )


def test_refused_mode_found_when_read_too(tmp_path: Path) -> None:
    image_dir, ann_file = one_image_set(tmp_path, "a.tif", 6, 1)
    Image.fromarray(VALUES_16).save(image_dir / "a.tif")
    dataset = CocoDetectionDataset(image_dir, ann_file)
    Image.fromarray(VALUES_16.astype(np.float32)).save(image_dir / "a.tif")  # replaced after construction
    with pytest.raises(DatasetError, match=r"a\.tif: image id=1 \(listed in .*\): mode F is refused"):
        dataset.load_image(0)


# ------------------------------------------------------------------------------------------------- EXIF


def stored_with_block(width: int = 40, height: int = 20) -> np.ndarray:
    """A dark ``height`` x ``width`` image with one bright block in its top-left quarter (x 2-12, y 3-8)."""
    pixels = np.full((height, width, 3), 20, dtype=np.uint8)
    pixels[3:8, 2:12] = 230
    return pixels


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[ORIENTATION] = orientation
    return tags.tobytes()


@pytest.mark.parametrize(
    ("orientation", "display"),
    [
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # "rotate 90 CW to display"
        (8, lambda a: np.rot90(a, 1)),
        (2, lambda a: a[:, ::-1]),
    ],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, display) -> None:
    stored = stored_with_block()
    expected = np.ascontiguousarray(display(stored))
    image_dir, ann_file = one_image_set(tmp_path, "a.png", expected.shape[1], expected.shape[0])
    Image.fromarray(stored).save(image_dir / "a.png", exif=exif(orientation))
    pixels = CocoDetectionDataset(image_dir, ann_file).load_image(0).permute(1, 2, 0).numpy()
    assert pixels.tolist() == expected.tolist()


def test_exif_rotated_jpeg_serves_the_displayed_image_that_the_boxes_describe(tmp_path: Path) -> None:
    # stored 40x20 with the block at x 2-12, y 3-8; orientation 6 displays it 20x40 with the block at
    # x 12-17, y 2-12: the annotator drew the box there
    box = [12.0, 2.0, 5.0, 10.0]
    image_dir, ann_file = one_image_set(tmp_path, "a.jpg", 20, 40, boxes=[box])
    Image.fromarray(stored_with_block()).save(image_dir / "a.jpg", exif=exif(6), quality=95)
    image, target = CocoDetectionDataset(image_dir, ann_file)[0]
    assert image.shape == (3, 40, 20)
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0].tolist())
    inside = image[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].mean().item()
    outside = image[:, 20:, :].mean().item()
    assert inside > 0.8 and outside < 0.15


def test_annotation_of_the_stored_pixels_of_a_turned_image_is_refused(tmp_path: Path) -> None:
    image_dir, ann_file = one_image_set(tmp_path, "a.jpg", 40, 20)  # the stored size, not the displayed one
    Image.fromarray(stored_with_block()).save(image_dir / "a.jpg", exif=exif(6))
    with pytest.raises(DatasetError) as error:
        CocoDetectionDataset(image_dir, ann_file)
    message = str(error.value)
    assert f"{image_dir / 'a.jpg'}: image id=1 is 20x40 as displayed (EXIF orientation 6" in message
    assert "describes the stored pixels" in message and "\n" not in message


def test_png_exif_after_the_pixels_is_applied_too(tmp_path: Path) -> None:
    """A PNG whose eXIf chunk follows IDAT: the header shows no orientation, the decode applies it."""
    stored = stored_with_block()
    image_dir, ann_file = one_image_set(tmp_path, "a.png", 20, 40)
    path = image_dir / "a.png"
    Image.fromarray(stored).save(path, exif=exif(6))
    data = path.read_bytes()
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append(data[at : at + 12 + length])
        at += 12 + length
    exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
    others = [c for c in chunks if c is not exif_chunk]
    path.write_bytes(data[:8] + b"".join(others[:-1]) + exif_chunk + others[-1])  # just before IEND
    opened = Image.open(path)
    assert "exif" not in opened.info  # the header alone does not show it
    pixels = CocoDetectionDataset(image_dir, ann_file).load_image(0).permute(1, 2, 0).numpy()
    assert pixels.tolist() == np.rot90(stored, -1).tolist()


def test_16_bit_png_opened_as_32_bit_i_by_older_pillow_is_served_by_the_16_bit_rule(tmp_path: Path) -> None:
    """Older Pillow opens a 16-bit grayscale PNG as mode ``I`` decoded from raw mode ``I;16B``; a 32-bit ``I``
    TIFF (raw mode ``I;32S``) stays refused."""
    image_dir, _ = one_image_set(tmp_path, "a.png", 6, 1)
    Image.frombytes("I;16B", (6, 1), VALUES_16.astype(">u2").tobytes()).save(image_dir / "a.png")
    opened = Image.open(image_dir / "a.png")
    opened._mode = "I"  # what older Pillow reported for this file
    assert image_mode_problem(opened) is None
    pixels, orientation = decode_rgb(opened)
    assert pixels.tolist() == gray(HIGH_BYTES) and orientation == 1
    Image.fromarray(VALUES_16.astype(np.int32)).save(image_dir / "b.tif")
    assert "mode I is refused" in (image_mode_problem(Image.open(image_dir / "b.tif")) or "")
