"""One digit scene of the ablation benchmark (:mod:`ghmdet.data.digits`): glyphs, ink masks, placement.

Composition rules (per scene, all draws from ``numpy.random.default_rng([seed, split, scene])``)
    - background: a square crop of side ``U(0.75, 1.5) x image_size`` of the split's regions, resized to
      ``image_size``, with a random flip and 90-degree turn;
    - ``U{min_objects..max_objects}`` digits; class ``k`` with probability proportional to
      ``(k + 1) ** -tail`` (``tail`` 1.3: digit 0 is 20x as frequent as digit 9), each a random source digit
      of that class and split;
    - ``U{min_distractors..max_distractors}`` unannotated distractors drawn like digits: random pen strokes
      (quadratic Bezier curves) and capital letters that do not resemble digits, so that hard negatives exist;
    - every object (digit or distractor): height log-uniform in ``[min_height, max_height]`` px, aspect kept;
      ink opacity ``U(0.8, 1)``; a random colour whose luminance differs from the background under it by at
      least ``min_contrast``; placed where its box (plus a 1 px margin) overlaps no other object, up to 50
      tries, else left out (counted in the manifest as ``placements_failed``);
    - the ink mask is the resized digit with values below ``ink_threshold`` set to 0, so the annotated box
      (``[x, y, w, h]``, integer pixel edges) is exactly the extent of the ink drawn: tight to the pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from ghmdet.data.digits import DigitsParameters

#: capital letters whose shapes are not digit-like (no B, D, G, I, J, L, O, Q, S, Z)
DISTRACTOR_LETTERS = "ACEFHKMNPRTUVWXY"
PLACEMENT_TRIES = 50


def class_probabilities(tail: float) -> np.ndarray:
    """Long-tailed class frequencies: ``p_k`` proportional to ``(k + 1) ** -tail``."""
    weights = (np.arange(10) + 1.0) ** -tail
    return weights / weights.sum()


def ink_mask(glyph: np.ndarray, height: float, threshold: float) -> np.ndarray:
    """The glyph (``uint8``, ink bright) cropped to its ink, resized to ``height`` px, cut at ``threshold``.

    Returns a float mask in [0, 1] whose first/last rows and columns all hold ink, so its shape is exactly
    the box of what is drawn.
    """
    alpha = glyph.astype(np.float32) / 255.0
    rows, cols = np.flatnonzero(alpha.max(1) >= threshold), np.flatnonzero(alpha.max(0) >= threshold)
    alpha = alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h = max(2, round(height))
    w = max(1, round(h * alpha.shape[1] / alpha.shape[0]))
    resized = np.asarray(Image.fromarray(alpha, mode="F").resize((w, h), Image.Resampling.BILINEAR))
    resized = np.where(resized >= threshold, np.clip(resized, 0.0, 1.0), 0.0).astype(np.float32)
    rows, cols = np.flatnonzero(resized.max(1) > 0), np.flatnonzero(resized.max(0) > 0)
    if len(rows) == 0:  # a glyph too faint at this size: keep its brightest pixel
        resized = np.zeros((1, 1), np.float32) + 1.0
        return resized
    return resized[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_glyph(rng: np.random.Generator) -> np.ndarray:
    """A random pen stroke (one or two quadratic Bezier curves) on a 28 x 28 canvas, 4x supersampled."""
    scale = 4
    canvas = Image.new("L", (28 * scale, 28 * scale), 0)
    draw = ImageDraw.Draw(canvas)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    for _ in range(int(rng.integers(1, 3))):
        p0, p1, p2 = (rng.uniform(4, 24, size=2) for _ in range(3))
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        draw.line([tuple(p * scale) for p in curve], fill=255, width=int(rng.integers(2, 4)) * scale)
    return np.asarray(canvas.resize((28, 28), Image.Resampling.LANCZOS))


def letter_glyph(rng: np.random.Generator, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> np.ndarray:
    """A capital letter that does not resemble a digit, drawn on a 28 x 28 canvas."""
    canvas = Image.new("L", (28, 28), 0)
    letter = DISTRACTOR_LETTERS[int(rng.integers(len(DISTRACTOR_LETTERS)))]
    ImageDraw.Draw(canvas).text((14, 14), letter, fill=255, font=font, anchor="mm")
    return np.asarray(canvas)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _ink_colour(rng: np.random.Generator, background_luminance: float, min_contrast: float) -> np.ndarray:
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        if abs(float(_luminance(colour)) - background_luminance) >= min_contrast:
            return colour
    return np.full(3, 0.0 if background_luminance > 127.5 else 255.0)


def _background(rng: np.random.Generator, regions: Sequence[np.ndarray], size: int) -> np.ndarray:
    region = regions[int(rng.integers(len(regions)))]
    h, w = region.shape[:2]
    side = min(round(size * rng.uniform(0.75, 1.5)), h, w)
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(region[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(crop).astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.rot90(out, k=int(rng.integers(4))))


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + 1 and b[0] < x1 + 1 and y0 < b[3] + 1 and b[1] < y1 + 1 for b in placed)


def compose_scene(
    rng: np.random.Generator,
    params: DigitsParameters,
    regions: Sequence[np.ndarray],
    digits: np.ndarray,
    pool: dict[int, np.ndarray],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> tuple[np.ndarray, list[tuple[int, list[int]]], dict[str, int]]:
    """One scene: the ``uint8`` RGB image, its (class, [x, y, w, h]) objects and what was drawn."""
    size = params.image_size
    image = _background(rng, regions, size)
    probabilities = class_probabilities(params.tail)
    n_objects = int(rng.integers(params.min_objects, params.max_objects + 1))
    n_distractors = int(rng.integers(params.min_distractors, params.max_distractors + 1))
    # digits first, then distractors, in one random order of drawing
    kinds = ["digit"] * n_objects + ["distractor"] * n_distractors
    rng.shuffle(kinds)
    placed: list[tuple[int, int, int, int]] = []
    objects: list[tuple[int, list[int]]] = []
    drawn = {"distractors": 0, "placements_failed": 0}
    log_h = (np.log(params.min_height), np.log(params.max_height))
    for kind in kinds:
        height = float(np.exp(rng.uniform(*log_h)))
        if kind == "digit":
            label = int(rng.choice(10, p=probabilities))
            glyph = digits[int(pool[label][int(rng.integers(len(pool[label])))])]
        else:
            label = -1
            glyph = stroke_glyph(rng) if rng.random() < 0.5 else letter_glyph(rng, font)
        mask = ink_mask(glyph, height, params.ink_threshold)
        mh, mw = mask.shape
        if mh > size or mw > size:
            drawn["placements_failed"] += 1
            continue
        for _ in range(PLACEMENT_TRIES):
            x, y = int(rng.integers(0, size - mw + 1)), int(rng.integers(0, size - mh + 1))
            if not _overlaps((x, y, x + mw, y + mh), placed):
                break
        else:
            drawn["placements_failed"] += 1
            continue
        patch = image[y : y + mh, x : x + mw]
        colour = _ink_colour(rng, float(_luminance(patch).mean()), params.min_contrast)
        alpha = (mask * rng.uniform(0.8, 1.0))[..., None]
        image[y : y + mh, x : x + mw] = patch * (1 - alpha) + colour * alpha
        placed.append((x, y, x + mw, y + mh))
        if label >= 0:
            objects.append((label, [x, y, mw, mh]))
        else:
            drawn["distractors"] += 1
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects, drawn
