"""How an image file becomes the pixels a detector sees: modes, EXIF orientation, size checks.

Images (every mode Pillow opens is either served with its content or refused with one line naming the file
and its mode):

- EXIF orientation is applied (``ImageOps.exif_transpose``), as detectron2's ``read_image`` and OpenCV's
  ``imread`` (mmdetection) do: the image is served as a viewer displays it, and COCO's ``width``/``height``
  and boxes describe that displayed image. The displayed size must equal the record's size; a file whose
  record matches only its stored (unturned) pixels is refused: its boxes would land turned by 90 degrees.
- 8-bit modes ``1``, ``L``, ``P``, ``LA``, ``PA``, ``RGB``, ``RGBA``, ``RGBX``, ``CMYK``, ``YCbCr`` go through
  ``Image.convert("RGB")``: grayscale is replicated, a palette is looked up, CMYK is
  ``R = (255 - C)(255 - K) / 255`` (no colour profile), YCbCr is the JPEG (BT.601 full-range) transform.
  Alpha is dropped, not composited: the colour values are served as stored, as torchvision's
  ``decode_image(mode=RGB)`` and detectron2 serve them.
- Unsigned 16-bit grayscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``, and the ``I`` mode older Pillow
  opens a 16-bit PNG in): a value ``v`` of ``0..65535`` means the fraction ``v / 65535`` of full scale
  (PNG and TIFF store the full range whatever the sensor's bit count). It is served as its high byte
  ``v >> 8``, replicated to RGB. Pillow itself decodes 16-bit RGB(A) and gray+alpha files to their high
  bytes, so every 16-bit file is served by one rule (torchvision's ``to_dtype(uint16 -> uint8, scale=True)``
  is the same shift).
- Refused: 32-bit integer ``I`` and float ``F`` pixels (and signed 16-bit), whose range no file records, and
  modes without a defined RGB conversion (``LAB``, ``HSV``, ...). The check reads only file headers and runs
  at construction for every image served, so a refused mode, a size that does not match the annotation or
  an unreadable header fails before training starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ghmdet.data.packed import ImageRecord

#: Exceptions PIL raises for unreadable, truncated or hostile image files.
IMAGE_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

#: Pillow modes served through ``Image.convert("RGB")`` (8-bit data with a fixed RGB meaning).
RGB_CONVERTIBLE_MODES = frozenset({"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
#: unsigned 16-bit grayscale modes (and raw modes), served as their high byte
SIXTEEN_BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_AXES = frozenset({5, 6, 7, 8})  # transpose, 90 and 270 degree turns


def _is_16_bit_gray(image: Image.Image) -> bool:
    """Whether an opened, not yet decoded image holds unsigned 16-bit grayscale pixels."""
    if image.mode in SIXTEEN_BIT_GRAY_MODES:
        return True
    if image.mode != "I" or not image.tile:
        return False
    # Older Pillow opens a 16-bit grayscale PNG as 32-bit "I", decoded from a 16-bit raw mode.
    rawmodes = [tile[3][0] if isinstance(tile[3], tuple) else tile[3] for tile in image.tile]
    return all(rawmode in SIXTEEN_BIT_GRAY_MODES for rawmode in rawmodes)


def image_mode_problem(image: Image.Image) -> str | None:
    """Why an opened (not yet decoded) image is refused, or None when its mode is served.

    Args:
        image: a file opened with ``Image.open`` (its pixels not loaded: the raw mode is read from it).

    Returns:
        ``"mode <mode> is refused: <why and what to do>"``, or None.
    """
    mode = image.mode
    if mode in RGB_CONVERTIBLE_MODES or _is_16_bit_gray(image):
        return None
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        why = "32-bit integer, floating-point or signed pixels have no recorded range to map to 8 bits"
    else:
        why = "it has no defined conversion to RGB"
    advice = "store the image as 8-bit RGB or grayscale, or as unsigned 16-bit grayscale"
    return f"mode {mode} is refused: {why}; {advice}"


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 without a tag) of an opened image, read without decoding its pixels.

    A PNG's ``eXIf`` chunk after the pixel data is seen only once the image is decoded (asking Pillow for it
    earlier decodes the whole file); :func:`decode_rgb` applies it then and the size check runs again.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    value = image.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(stored_size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed: EXIF orientations 5-8 turn it by 90 degrees."""
    width, height = stored_size
    return (height, width) if orientation in _ORIENTATIONS_SWAPPING_AXES else (width, height)


def decode_rgb(image: Image.Image) -> tuple[np.ndarray, int]:
    """Decode an opened image to ``[H, W, 3]`` uint8 RGB as displayed (the rules of the module docstring).

    Args:
        image: a file opened with ``Image.open`` whose mode passed :func:`image_mode_problem`; it is
            decoded and turned in place.

    Returns:
        The pixels with the EXIF orientation applied, and that orientation (1: none).
    """
    sixteen_bit = _is_16_bit_gray(image)  # before load(): the raw mode is gone afterwards
    image.load()  # decode now, so truncation surfaces here and not later in convert()
    orientation = exif_orientation(image)  # after load(): a PNG's late eXIf chunk is known now
    ImageOps.exif_transpose(image, in_place=True)
    if sixteen_bit:
        high_bytes = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(high_bytes[:, :, None], 3, axis=2), orientation
    return np.array(image.convert("RGB"), dtype=np.uint8), orientation


def size_problem(
    record: ImageRecord, ann_file: Path, stored_size: tuple[int, int], orientation: int
) -> str | None:
    """Why the image's displayed size does not fit its annotation record, or None."""
    width, height = displayed_size(stored_size, orientation)
    if (width, height) == (record.width, record.height):
        return None
    turned = orientation in _ORIENTATIONS_SWAPPING_AXES
    displayed = f"{width}x{height}" + (
        f" as displayed (EXIF orientation {orientation} turns its stored {stored_size[0]}x{stored_size[1]})"
        if turned
        else ""
    )
    problem = f"is {displayed} but {ann_file} says {record.width}x{record.height}"
    if turned and stored_size == (record.width, record.height):
        return (
            f"{problem}: the annotation describes the stored pixels, not the image as displayed; remove the "
            "EXIF orientation tag (or annotate the displayed image), or the boxes would land turned"
        )
    return f"{problem}; the boxes would not match"
