"""Paired bootstrap over test images: is a row's AP difference to the reference row larger than chance?

Each run's COCO results file (``detections_test.json``) is matched against the test ground truth once, by
pycocotools' own ``COCOeval.evaluate`` (greedy by score, crowd and ignore rules, 100 detections per image and
category, area "all"). What is kept per category: every detection's score, its image and, per IoU threshold,
whether it is a true or a false positive (ignored detections are neither), and each image's number of
non-ignored ground-truth boxes. A bootstrap replicate draws the test images with replacement; an image drawn
``c`` times counts ``c`` times (as if its copies were re-id'd images). Its AP is COCOeval.accumulate's on
the drawn images, vectorised over replicates: detections in score order weighted by their image's draw
count, cumulative true / false positives, precision made non-increasing from the right, precision at the 101
recall thresholds (0 beyond the last recall reached), the mean over thresholds and over the categories with
ground truth in the draw. With one draw of every image this is COCOeval's AP (to rounding); with a copy
drawn twice it equals COCOeval on the re-id'd images except where two different images hold detections of
one category with exactly the same score (COCOeval then orders them by image id).

The paired statistic of a row against the reference row: per replicate, the mean over seeds (paired by seed
number) of ``AP(row, seed) - AP(reference, seed)``, the same draw for every row and seed; the 95 % interval
is the 2.5th to 97.5th percentile over replicates.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: COCOeval's IoU and recall thresholds (``Params.setDetParams``)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = 100
#: the metrics a bootstrap can give: all IoU thresholds or one (index into IOU_THRESHOLDS)
METRIC_IOUS: dict[str, slice | int] = {"AP": slice(None), "AP50": 0, "AP75": 5, "AP80": 6, "AP90": 8}
#: (replicates x IoU thresholds x detections) per vectorised chunk: bounds the memory (~8 bytes each, x ~6)
_CHUNK_ELEMENTS = 4_000_000


class BootstrapError(ValueError):
    """Detections or ground truth cannot be bootstrapped (file missing, other images); names the file."""


@dataclass
class GroundTruth:
    """The test ground truth: the pycocotools COCO object, the evaluated images and the categories."""

    coco: Any
    image_ids: list[int]
    category_ids: list[int]
    source: str

    @property
    def n_images(self) -> int:
        return len(self.image_ids)


@dataclass
class MatchedRun:
    """One run's detections matched once, per category in COCO's score order.

    A detection that is a false positive at every IoU threshold never reaches a new recall and lowers the
    precision of what follows, so only its place counts: such detections are kept as their images
    (``fp_image``) and each other detection knows how many of them rank above it (``fp_before``).
    """

    #: per category: image index (into ``GroundTruth.image_ids``) of each detection that is a true positive
    #: at some IoU threshold
    image_index: list[np.ndarray]
    #: per category: ``[T, N]`` flags of those detections (ignored at a threshold: both False)
    tp: list[np.ndarray]
    fp: list[np.ndarray]
    #: per category: image index of each false-positive-everywhere detection ranking above the last of those
    fp_image: list[np.ndarray]
    #: per category: ``[N]`` how many of ``fp_image`` rank above each detection of ``image_index``
    fp_before: list[np.ndarray]
    #: ``[n_images, K]`` non-ignored ground-truth boxes per image and category
    gt_count: np.ndarray
    source: str


def load_ground_truth(ann_file: str | Path, image_ids: Sequence[int] | None = None) -> GroundTruth:
    """The COCO ground truth of ``ann_file``, restricted to ``image_ids`` (the run's test images)."""
    from pycocotools.coco import COCO

    path = Path(ann_file)
    if not path.is_file():
        raise BootstrapError(f"{path}: test annotation file not found (named in the runs' metrics.json)")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    known = set(coco.getImgIds())
    ids = sorted(known) if image_ids is None else sorted({int(i) for i in image_ids})
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise BootstrapError(f"{path}: image ids {unknown[:5]} of the detections are not in this file")
    return GroundTruth(coco, ids, sorted(coco.getCatIds()), str(path))


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """A COCO results file (list of ``{image_id, category_id, bbox, score}``); the error names the file."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise BootstrapError(f"{path}: detections file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BootstrapError(
            f"{path}: not a readable COCO results file ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(results, list):
        raise BootstrapError(
            f"{path}: expected a JSON list of detections, got a JSON {type(results).__name__}"
        )
    return results


def match(gt: GroundTruth, results: list[dict[str, Any]], source: str = "") -> MatchedRun:
    """Match detections to the ground truth once, with COCOeval.evaluate (area "all", 100 detections)."""
    from pycocotools.cocoeval import COCOeval

    n_images, n_cats, n_iou = gt.n_images, len(gt.category_ids), len(IOU_THRESHOLDS)
    wanted = set(gt.image_ids)
    results = [r for r in results if int(r["image_id"]) in wanted]
    per_cat: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n_cats)]
    gt_count = np.zeros((n_images, n_cats), dtype=np.int64)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.coco.loadRes(results) if results else None
        evaluator = COCOeval(gt.coco, dt if dt is not None else gt.coco.loadRes(_placeholder(gt)), "bbox")
        params = evaluator.params
        params.imgIds, params.catIds = list(gt.image_ids), list(gt.category_ids)
        params.iouThrs, params.recThrs = IOU_THRESHOLDS.copy(), RECALL_THRESHOLDS.copy()
        params.areaRng, params.areaRngLbl, params.maxDets = [[0**2, 1e5**2]], ["all"], [MAX_DETS]
        evaluator.evaluate()
    for k in range(n_cats):
        for i in range(n_images):
            e = evaluator.evalImgs[k * n_images + i]
            if e is None:
                continue
            gt_count[i, k] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            if dt is None:
                continue
            scores = np.asarray(e["dtScores"][:MAX_DETS], dtype=np.float64)
            matches = np.asarray(e["dtMatches"])[:, :MAX_DETS].reshape(n_iou, -1)
            ignore = np.asarray(e["dtIgnore"])[:, :MAX_DETS].reshape(n_iou, -1).astype(bool)
            per_cat[k].append((scores, np.full(len(scores), i, dtype=np.int64), matches, ignore))
    out = MatchedRun([], [], [], [], [], gt_count, source)
    for k in range(n_cats):
        if not per_cat[k]:
            per_cat[k].append(
                (np.zeros(0), np.zeros(0, np.int64), np.zeros((n_iou, 0)), np.zeros((n_iou, 0), bool))
            )
        scores = np.concatenate([p[0] for p in per_cat[k]])
        order = np.argsort(-scores, kind="mergesort")  # COCOeval.accumulate's order
        images = np.concatenate([p[1] for p in per_cat[k]])[order]
        matches = np.concatenate([p[2] for p in per_cat[k]], axis=1)[:, order]
        ignore = np.concatenate([p[3] for p in per_cat[k]], axis=1)[:, order]
        tp = np.logical_and(matches, ~ignore)
        fp = np.logical_and(np.logical_not(matches), ~ignore)
        # a detection ignored at every threshold moves neither recall nor precision: leave it out
        counted = (tp | fp).any(axis=0)
        images, tp, fp = images[counted], tp[:, counted], fp[:, counted]
        pure_fp = fp.all(axis=0)
        fp_before = np.cumsum(pure_fp)[~pure_fp]  # a kept detection is not one of them: at or above
        last = int(fp_before[-1]) if len(fp_before) else 0
        out.image_index.append(images[~pure_fp])
        out.tp.append(tp[:, ~pure_fp])
        out.fp.append(fp[:, ~pure_fp])
        out.fp_image.append(images[pure_fp][:last])
        out.fp_before.append(fp_before.astype(np.int64))
    return out


def _placeholder(gt: GroundTruth) -> list[dict[str, Any]]:
    # loadRes refuses an empty list; one far-away zero-score box of no category stands for "no detections"
    return [{"image_id": gt.image_ids[0], "category_id": -1, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.0}]


def identity_counts(n_images: int) -> np.ndarray:
    """The draw that takes every image once (``[1, n_images]``): the plain AP."""
    return np.ones((1, n_images), dtype=np.int64)


def draw_counts(n_images: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_images]`` draw counts: each replicate draws ``n_images`` images with replacement."""
    if n_boot < 1 or n_images < 1:
        raise ValueError(f"bootstrap: need n_boot >= 1 and images, got n_boot={n_boot}, {n_images} images")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n_boot, n_images))
    flat = (draws + n_images * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_images).reshape(n_boot, n_images)


def _precision_at_recalls(tp: np.ndarray, fp: np.ndarray, npig: np.ndarray) -> np.ndarray:
    """COCOeval.accumulate's 101-point precision for each row of weighted cumulative tp / fp.

    ``tp``, ``fp``: ``[rows, N]`` cumulative (non-decreasing) counts; ``npig``: ``[rows]`` ground truths
    (> 0). Returns ``[rows, R]``.
    """
    rows, n = tp.shape
    n_rec = len(RECALL_THRESHOLDS)
    if n == 0:
        return np.zeros((rows, n_rec))
    rc = tp / npig[:, None]
    pr = tp / (fp + tp + np.spacing(1))
    envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    # recall thresholds at or below each entry's recall: COCOeval's searchsorted(rc, recThrs, "left") picks
    # the first entry whose recall reaches the threshold; integer keys keep rows apart exactly
    reached = np.searchsorted(RECALL_THRESHOLDS, rc.ravel(), side="right").reshape(rows, n)
    keys = (reached + (n_rec + 1) * np.arange(rows)[:, None]).ravel()
    queries = ((n_rec + 1) * np.arange(rows)[:, None] + np.arange(1, n_rec + 1)[None, :]).ravel()
    pos = np.searchsorted(keys, queries, side="left").reshape(rows, n_rec)
    inside = pos < (np.arange(rows)[:, None] + 1) * n
    flat = envelope.ravel()
    return np.where(inside, flat[np.minimum(pos, rows * n - 1)], 0.0)


def replicate_ap(
    run: MatchedRun, counts: np.ndarray, metrics: Sequence[str] = ("AP",)
) -> dict[str, np.ndarray]:
    """AP (0-1) of ``run`` on each replicate's drawn images (``counts``: ``[B, n_images]``), per metric.

    A metric is NaN in a replicate where no category has ground truth (COCO's -1).
    """
    for m in metrics:
        if m not in METRIC_IOUS:
            raise ValueError(f"bootstrap: unknown metric {m!r}; known: {sorted(METRIC_IOUS)}")
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != run.gt_count.shape[0]:
        raise BootstrapError(
            f"{run.source}: draw counts of shape {counts.shape} for {run.gt_count.shape[0]} test images"
        )
    n_boot, n_cats, n_iou = counts.shape[0], run.gt_count.shape[1], len(IOU_THRESHOLDS)
    npig = counts @ run.gt_count  # [B, K]
    # per category and replicate: mean precision over the recall thresholds, per IoU threshold
    per_iou = np.zeros((n_boot, n_cats, n_iou))
    for k in range(n_cats):
        valid = npig[:, k] > 0
        if not valid.any():
            continue
        n, n_fp = len(run.image_index[k]), len(run.fp_image[k])
        if n == 0:  # no true positive at any threshold: precision 0 at every recall
            continue
        chunk = max(1, _CHUNK_ELEMENTS // (n * n_iou + n_fp))
        for start in range(0, n_boot, chunk):
            rows = np.arange(start, min(start + chunk, n_boot))
            rows = rows[valid[rows]]
            if not len(rows):
                continue
            drawn = counts[rows]
            weights = drawn[:, run.image_index[k]].astype(np.float64)  # [b, N]
            tp = np.cumsum(weights[:, None, :] * run.tp[k][None], axis=2)  # [b, T, N]
            fp = np.cumsum(weights[:, None, :] * run.fp[k][None], axis=2)
            if n_fp:  # the false-positive-everywhere detections ranking above each detection
                above = np.cumsum(drawn[:, run.fp_image[k]], axis=1)
                before = run.fp_before[k]
                fp += np.where(before > 0, above[:, np.maximum(before - 1, 0)], 0)[:, None, :]
            g = np.repeat(npig[rows, k].astype(np.float64), n_iou)
            q = _precision_at_recalls(tp.reshape(-1, n), fp.reshape(-1, n), g)
            per_iou[rows, k, :] = q.reshape(len(rows), n_iou, -1).mean(axis=2)
    has_gt = npig > 0
    out = {}
    for m in metrics:
        sel = METRIC_IOUS[m]
        per_cat = per_iou[:, :, sel].mean(axis=2) if isinstance(sel, slice) else per_iou[:, :, sel]
        total = np.where(has_gt, per_cat, 0.0).sum(axis=1)
        n_valid = has_gt.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[m] = np.where(n_valid > 0, total / np.maximum(n_valid, 1), np.nan)
    return out


@dataclass(frozen=True)
class Interval:
    """A row's difference to the reference (in the metric's 0-1 scale): estimate, 95 % interval, seeds."""

    delta: float
    lo: float
    hi: float
    n_seeds: int
    n_boot: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def paired_intervals(
    rows: Mapping[Any, Mapping[str, MatchedRun]],
    reference: Any,
    counts: np.ndarray,
    metrics: Sequence[str] = ("AP",),
    level: float = 0.95,
) -> dict[Any, dict[str, Interval]]:
    """Each row's paired-bootstrap interval of ``mean over seeds (metric(row, s) - metric(reference, s))``.

    ``rows``: row key -> seed -> matched run (the reference among them); seeds pair by name, seeds missing
    from either side are left out; a row without a shared seed gets no interval. ``counts`` is the one draw
    that every row and seed is scored on.
    """
    if reference not in rows:
        raise BootstrapError(f"bootstrap: the reference row {reference!r} has no run with detections")
    n_images = counts.shape[1]
    identity = identity_counts(n_images)
    scores: dict[tuple[Any, str], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    for key, seeds in rows.items():
        for seed, run in seeds.items():
            scores[key, seed] = (replicate_ap(run, identity, metrics), replicate_ap(run, counts, metrics))
    tail = 100.0 * (1.0 - level) / 2.0
    out: dict[Any, dict[str, Interval]] = {}
    for key, seeds in rows.items():
        shared = [s for s in seeds if s in rows[reference]]
        if not shared:
            continue
        out[key] = {}
        for m in metrics:
            point = np.mean([scores[key, s][0][m] - scores[reference, s][0][m] for s in shared], axis=0)
            diffs = np.mean([scores[key, s][1][m] - scores[reference, s][1][m] for s in shared], axis=0)
            lo, hi = np.nanpercentile(diffs, [tail, 100.0 - tail])
            out[key][m] = Interval(float(point[0]), float(lo), float(hi), len(shared), len(diffs))
    return out


def _detections_of(run: Any) -> tuple[Path, str, tuple[int, ...]] | None:
    """(results file, annotation file, image ids) of a completed run's ``detections_test`` record entry."""
    info = run.record.get("detections_test") if run.status == "completed" else None
    if not isinstance(info, dict) or not info.get("file") or not info.get("ann_file"):
        return None
    ids = tuple(sorted(int(i) for i in info.get("image_ids") or ()))
    return Path(run.path).parent / str(info["file"]), str(info["ann_file"]), ids


def table_intervals(
    rows: Sequence[Any], references: Sequence[Any], metrics: Sequence[str], n_boot: int, seed: int
) -> dict[tuple[str, ...], dict[str, Interval]]:
    """Intervals of every row of an ablation table (``aggregate.Row``) against its reference row.

    A row's reference is the one of ``references`` with the same other keys (a second swept key makes one
    reference per value). Every run must have been tested on the same images of the same annotation file.
    """
    found = {}
    for row in rows:
        for run in row.runs:
            entry = _detections_of(run)
            if entry is not None:
                found[row.key, run.seed or str(run.record.get("seed", ""))] = (entry, run)
    if not found:
        raise BootstrapError("no completed run has a detections_test file (metrics.json 'detections_test')")
    (_, ann_file, image_ids), first = next(iter(found.values()))
    for (_, other_ann, other_ids), run in found.values():
        if (other_ann, other_ids) != (ann_file, image_ids):
            raise BootstrapError(
                f"{run.path} was tested on other images than {first.path} "
                f"({other_ann}, {len(other_ids)} images vs {ann_file}, {len(image_ids)} images)"
            )
    gt = load_ground_truth(ann_file, image_ids or None)
    counts = draw_counts(gt.n_images, n_boot, seed)
    matched: dict[tuple[str, ...], dict[str, MatchedRun]] = {}
    for (key, run_seed), ((path, _, _), _) in found.items():
        matched.setdefault(key, {})[run_seed] = match(gt, read_results(path), str(path))
    out: dict[tuple[str, ...], dict[str, Interval]] = {}
    for ref in references:
        if ref.key not in matched:
            continue
        group = {r.key: matched[r.key] for r in rows if r.key[1:] == ref.key[1:] and r.key in matched}
        out.update(paired_intervals(group, ref.key, counts, metrics))
    if not out:
        raise BootstrapError("no run of the reference row has a detections_test file")
    return out
