"""Forward + backward timing of the classification / regression losses on a RetinaNet-sized batch.

Run ``python benchmarks/bench_losses.py`` (full size: 2 images x 120k anchors x 80 classes = 19.2M logits,
~0.1% positives; GHM-R on 2k positive anchors x 4 deltas) or ``--quick`` for a 10x smaller batch. Methods
are timed round-robin (one repeat of each method in turn, after the warm-up), so that load from other
processes affects all of them alike; the table reports the median of the repeats and ratios against a
baseline on the same inputs: the classification losses against torchvision's focal loss (and against GHM-C
with unit regions), GHM-R against smooth-L1 on the same deltas. ``--json PATH`` also writes the raw timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timing import rotated
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from ghmdet.losses import GHMCLoss, GHMRLoss, SmoothL1Loss

# The released code's per-bin loop (a Python loop over bins with a host read per bin) is the tests' reference
# implementation; the benchmark times that same code rather than a second copy of it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "losses"))
from ghm_reference import LoopGHMC

FOCAL, GHMC_UNIT, SMOOTH_L1 = "focal (torchvision)", "GHM-C unit (M=30)", "smooth-L1 (2k x 4)"
#: the methods timed on the box deltas (the rest on the classification logits)
REGRESSION = (SMOOTH_L1, "GHM-R (2k x 4)")


def make_inputs(anchors: int, classes: int, positives: int, seed: int = 0) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(anchors, classes, generator=generator)
    targets = (torch.rand(anchors, classes, generator=generator) < 1e-3).float()
    box_pred = torch.randn(positives, 4, generator=generator) * 0.1
    box_target = torch.randn(positives, 4, generator=generator) * 0.1
    return {"logits": logits, "targets": targets, "box_pred": box_pred, "box_target": box_target}


def forward_backward(
    loss_fn: Callable[[Tensor, Tensor], Tensor], pred: Tensor, target: Tensor
) -> Callable[[], None]:
    def run() -> None:
        leaf = pred.detach().requires_grad_()
        loss_fn(leaf, target).backward()

    return run


def build_methods(inputs: dict[str, Tensor], include_loop: bool) -> dict[str, Callable[[], None]]:
    logits, targets = inputs["logits"], inputs["targets"]
    ones = torch.ones_like(logits)
    methods = {
        FOCAL: forward_backward(lambda x, y: sigmoid_focal_loss(x, y, reduction="sum"), logits, targets),
        GHMC_UNIT: forward_backward(GHMCLoss(bins=30), logits, targets),
        "GHM-C unit (M=20)": forward_backward(GHMCLoss(bins=20), logits, targets),
        "GHM-C exact": forward_backward(GHMCLoss(bins=30, density="exact"), logits, targets),
    }
    if include_loop:
        loop = LoopGHMC(bins=30)
        methods["GHM-C released loop"] = forward_backward(lambda x, y: loop(x, y, ones), logits, targets)
    methods[SMOOTH_L1] = forward_backward(SmoothL1Loss(beta=1 / 9), inputs["box_pred"], inputs["box_target"])
    methods["GHM-R (2k x 4)"] = forward_backward(GHMRLoss(), inputs["box_pred"], inputs["box_target"])
    return methods


def time_round_robin(
    methods: dict[str, Callable[[], None]], warmup: int, repeats: int
) -> dict[str, list[float]]:
    for run in methods.values():
        for _ in range(warmup):
            run()
    timings: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for repeat in range(repeats):
        for name in rotated(names, repeat):
            start = time.perf_counter()
            methods[name]()
            timings[name].append(time.perf_counter() - start)
    return timings


def summarise(timings: dict[str, list[float]]) -> list[dict[str, float | str]]:
    """One row per method: median and min time, and ratios against the baselines of its own inputs (a
    regression loss on 8k deltas is never compared with a classification loss on 19.2M logits)."""
    medians = {name: statistics.median(values) for name, values in timings.items()}
    rows: list[dict[str, float | str]] = []
    for name, median in medians.items():
        row: dict[str, float | str] = {
            "method": name,
            "median_ms": 1e3 * median,
            "min_ms": 1e3 * min(timings[name]),
        }
        if name in REGRESSION:
            row["vs_smooth_l1"] = median / medians[SMOOTH_L1]
        else:
            row["vs_focal"] = median / medians[FOCAL]
            row["vs_ghmc_unit"] = median / medians[GHMC_UNIT]
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, float | str]]) -> None:
    header = f"{'method':<24}{'median ms':>12}{'min ms':>10}{'x focal':>10}{'x GHM-C unit':>14}{'x SL1':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratios = [
            f"{row[key]:>{width}.2f}" if key in row else f"{'-':>{width}}"
            for key, width in (("vs_focal", 10), ("vs_ghmc_unit", 14), ("vs_smooth_l1", 8))
        ]
        print(f"{row['method']:<24}{row['median_ms']:>12.1f}{row['min_ms']:>10.1f}{''.join(ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 x 12k anchors instead of 2 x 120k")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per method (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per method first")
    parser.add_argument("--no-loop", action="store_true", help="skip the (slow) released per-bin loop")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}")

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    images, anchors_per_image, classes, positives = 2, (12_000 if args.quick else 120_000), 80, 2_000
    anchors = images * anchors_per_image
    inputs = make_inputs(anchors, classes, positives)
    print(
        f"torch {torch.__version__}, {threads} threads, {platform.processor() or platform.machine()}; "
        f"classification {anchors} x {classes} = {anchors * classes / 1e6:.1f}M logits, "
        f"regression {positives} x 4; warm-up {args.warmup}, median of {args.repeats}"
    )
    timings = time_round_robin(build_methods(inputs, not args.no_loop), args.warmup, args.repeats)
    rows = summarise(timings)
    print_table(rows)
    if args.json is not None:
        payload = {
            "config": {
                "anchors": anchors,
                "classes": classes,
                "elements": anchors * classes,
                "regression_positives": positives,
                "threads": threads,
                "repeats": args.repeats,
                "warmup": args.warmup,
                "torch": torch.__version__,
            },
            "results": rows,
            "timings_s": timings,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
