"""Per-iteration cost of the loss swap: a full training step (forward, loss, backward, SGD step) of the
embedded-preset RetinaNet with GHM-C + GHM-R against the same step with focal + smooth-L1 (and CE + SL1, the
paper's own baseline for its time table), measured in one run, interleaved so that drift hits all alike:
each round times every variant in turn, in an order rotated from round to round.

    python benchmarks/bench_step.py [--steps 15] [--rounds 3] [--json out.json] [model=... overrides]

Target (issue 3): GHM-C + GHM-R <= 1.05x focal + smooth-L1; a missed target exits with status 1. The paper's
code paid 1.46x over CE.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from timing import rotated

from ghmdet.builders import build_datamodule, build_model
from ghmdet.paths import CONFIG_DIR

VARIANTS = {
    "focal+smooth_l1": ["loss/cls=focal", "loss/reg=smooth_l1"],
    "ce+smooth_l1": ["loss/cls=ce", "loss/reg=smooth_l1"],
    "ghmc+ghmr": ["loss/cls=ghmc", "loss/reg=ghmr"],
}
#: GHM-C + GHM-R step time over focal + smooth-L1's, at most
TARGET = 1.05


def _batch(cfg, batch_size: int):
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    images, targets = [], []
    for i in range(batch_size):
        image, target = datamodule.train_dataset[i * 7 % len(datamodule.train_dataset)]
        images.append(image)
        targets.append(target)
    return datamodule.num_classes, images, targets


def report(median: dict[str, float], batch: str) -> int:
    """Print the table of median step times and the verdict; returns the exit status (1: target missed)."""
    ref = median["focal+smooth_l1"]
    print(f"training step, {batch} (median)")
    print("| variant | s / step | vs focal+SL1 | vs CE+SL1 |")
    print("|---|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.4f} | {value / ref:.3f}x | {value / median['ce+smooth_l1']:.3f}x |")
    ratio = median["ghmc+ghmr"] / ref
    passed = ratio <= TARGET
    print(f"GHM-C+GHM-R / focal+SL1 = {ratio:.3f} (target <= {TARGET}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=15, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the model/data config")
    args = parser.parse_args()

    models, optimizers = {}, {}
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        base = compose(config_name="train", overrides=args.overrides)
        num_classes, images, targets = _batch(base, base.data.batch_size)
        for name, loss_overrides in VARIANTS.items():
            cfg = compose(config_name="train", overrides=[*args.overrides, *loss_overrides])
            torch.manual_seed(0)
            model = build_model(cfg, num_classes).train()
            models[name] = model
            optimizers[name] = torch.optim.SGD(
                [p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9
            )

    def step(name: str) -> float:
        model, opt = models[name], optimizers[name]
        start = time.perf_counter()
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    for name in VARIANTS:
        for _ in range(args.warmup):
            step(name)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds):
        for name in rotated(list(VARIANTS), round_):
            times[name].extend(step(name) for _ in range(args.steps))

    median = {name: statistics.median(t) for name, t in times.items()}
    batch = (
        f"batch {len(images)} x {tuple(images[0].shape)}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    status = report(median, batch)
    ratio = median["ghmc+ghmr"] / median["focal+smooth_l1"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"median_seconds": median, "ratio_ghm_vs_focal": ratio, "threads": torch.get_num_threads()},
                f,
                indent=2,
            )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
