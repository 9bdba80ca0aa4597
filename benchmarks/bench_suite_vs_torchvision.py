"""Training throughput of the suite (Lightning + loss seam) against a plain training loop, GHM against focal.

One RetinaNet (``--model r50``: the paper recipe ``experiment=paper_r50_1x``, ResNet-50-FPN, 4-conv heads,
random weights; ``--model effl0``: the embedded CPU default, EfficientNet-Lite0 FPN 64 with ImageNet weights),
trained with the recipe's SGD, warm-up schedule and gradient clipping 35 on the same in-memory batches of the
embedded tree-crown tiles, timed interleaved in one process (round-robin over the variants, so that machine
drift hits all alike):

- ``suite``: ``lightning.Trainer.fit`` of ``ghmdet.module.DetectionModule`` (what ``ghmdet-train`` runs),
  timed from one ``on_train_batch_end`` to the next (data fetch, hooks, forward, loss, backward, clipping, SGD
  and scheduler steps, logging);
- ``loop``: the same module driven by hand (forward, loss sum, backward, ``clip_grad_norm_``, SGD and
  scheduler steps), timed iteration end to iteration end;
- ``torchvision``: torchvision's own ``RetinaNet`` class built from the same backbone, anchors and head, with
  its built-in loss (focal + smooth-L1 beta 1/9, per-image normalisation), driven by the same loop.

After ``--warmup-rounds`` untimed rounds, each round runs ``--steps + 1`` iterations per variant and drops
the first (set-up); images/s = batch / median step time over all rounds. Ratios: GHM-C + GHM-R vs
focal + smooth-L1 (issue target >= 0.95) and suite vs loop on the same model (target >= 0.95).
``--device cuda`` adds the peak GPU memory of each variant. On shared CPU cores, ``--threads 1`` gives far
steadier figures than oversubscribed intra-op threads.

    python benchmarks/bench_suite_vs_torchvision.py [--model effl0|r50] [--device cpu|cuda] [--size 400]
        [--batch 2] [--steps 4] [--rounds 3] [--threads N] [--json out.json]

GPU (the issue's measurement): --model r50 --device cuda --size 800 --steps 100 --rounds 3.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.utils.data import DataLoader

import ghmdet.distributed  # noqa: F401  (registers the ghmdet.scaled_lr resolver of the paper recipes)
from ghmdet.builders import build_model
from ghmdet.module import DetectionModule
from ghmdet.paths import CONFIG_DIR

Batch = tuple[list[Tensor], list[dict[str, Tensor]]]
LOSSES = {
    "ghmc+ghmr": ["loss/cls=ghmc", "loss/reg=ghmr"],
    "focal+smooth_l1": ["loss/cls=focal", "loss/reg=smooth_l1"],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_batches(
    data_dir: Path, batch_size: int, count: int, device: torch.device
) -> tuple[int, list[Batch]]:
    """``count`` training batches of the embedded tiles (built if missing), augmented once, on ``device``."""
    from ghmdet.data.datamodule import DetectionDataModule

    datamodule = DetectionDataModule(
        root=data_dir / "treecrowns",
        train_images="images/train",
        train_annotations="annotations/instances_train.json",
        val_images="images/val",
        val_annotations="annotations/instances_val.json",
        batch_size=batch_size,
        prepare="treecrowns",
        cache_images=False,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = datamodule.train_dataset
    assert dataset is not None
    batches: list[Batch] = []
    for b in range(count):
        images, targets = [], []
        for i in range(batch_size):
            image, target = dataset[(b * batch_size + i) * 5 % len(dataset)]
            images.append(image.to(device))
            targets.append({k: v.to(device) for k, v in target.items()})
        batches.append((images, targets))
    return datamodule.num_classes, batches


MODELS = {
    "r50": ["experiment=paper_r50_1x", "trainer=cpu"],
    # the embedded default model, trained with the recipe's optimiser and schedule for a like-for-like step
    "effl0": ["optimizer=sgd", "scheduler=step", "optimizer.lr=0.01"],
}


def build_suite_model(
    model_name: str, loss_overrides: list[str], size: int, num_classes: int
) -> tuple[nn.Module, Any]:
    """The chosen RetinaNet with the given losses at ``size`` px, and the composed config."""
    overrides = [*MODELS[model_name], f"model.min_size={size}", f"model.max_size={size}", *loss_overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    torch.manual_seed(0)
    return build_model(cfg, num_classes), cfg


def build_torchvision_model(model: nn.Module, num_classes: int, size: int) -> nn.Module:
    """torchvision's ``RetinaNet`` (its forward, matcher and loss) around copies of ``model``'s parts."""
    from torchvision.models.detection import RetinaNet

    head = copy.deepcopy(model.head)
    head.regression_head._loss_type = "smooth_l1"  # torchvision's smooth-L1 has beta 1/9, as the recipe
    return RetinaNet(
        copy.deepcopy(model.backbone),
        num_classes=num_classes,
        min_size=size,
        max_size=size,
        image_mean=list(model.transform.image_mean),
        image_std=list(model.transform.image_std),
        anchor_generator=copy.deepcopy(model.anchor_generator),
        head=head,
    )


class _BatchTimer(L.Callback):
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        _sync(self.device)
        self.ends.append(time.perf_counter())


def _identity(batch: Batch) -> Batch:
    return batch


def suite_round(module: DetectionModule, batches: list[Batch], device: torch.device, cfg: Any) -> list[float]:
    """One ``Trainer.fit`` over ``batches``; the step times after the first."""
    timer = _BatchTimer(device)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=-1,
        max_steps=len(batches),
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        gradient_clip_algorithm="norm",
        precision="32-true",
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=10,
    )
    loader = DataLoader(batches, batch_size=None, collate_fn=_identity)  # type: ignore[arg-type]
    trainer.fit(module, train_dataloaders=loader)
    return [b - a for a, b in itertools.pairwise(timer.ends)]


def loop_round(model: nn.Module, batches: list[Batch], device: torch.device, cfg: Any) -> list[float]:
    """The same work by hand: forward, loss sum, backward, clipping, SGD and scheduler steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.optimizer.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=len(batches))
    model.train()
    ends = []
    for images, targets in batches:
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        _sync(device)
        ends.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(ends)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="effl0", choices=sorted(MODELS), help="which RetinaNet")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", type=int, default=400, help="image size (paper: 800; CPU default 400)")
    parser.add_argument("--batch", type=int, default=2, help="images per step (paper: 2 per GPU)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument(
        "--warmup-rounds", type=int, default=1, help="untimed rounds first (allocator, caches)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1] / "data"))
    parser.add_argument("--no-torchvision", action="store_true", help="skip torchvision's own RetinaNet")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    num_classes, batches = load_batches(Path(args.data_dir), args.batch, args.steps + 1, device)

    runners: dict[str, Callable[[], list[float]]] = {}
    cfg = None
    model = None
    for loss_name, loss_overrides in LOSSES.items():
        model, cfg = build_suite_model(args.model, loss_overrides, args.size, num_classes)
        module = DetectionModule(
            copy.deepcopy(model).to(device),
            optimizer=functools.partial(
                torch.optim.SGD, lr=cfg.optimizer.lr, momentum=0.9, weight_decay=1e-4
            ),
            scheduler=instantiate(cfg.scheduler),
        )
        runners[f"suite {loss_name}"] = functools.partial(suite_round, module, batches, device, cfg)
        runners[f"loop {loss_name}"] = functools.partial(loop_round, model.to(device), batches, device, cfg)
    if not args.no_torchvision:
        tv_model = build_torchvision_model(model, num_classes, args.size).to(device)
        runners["torchvision focal+smooth_l1"] = functools.partial(loop_round, tv_model, batches, device, cfg)

    times: dict[str, list[float]] = {name: [] for name in runners}
    peak: dict[str, int] = dict.fromkeys(runners, 0)
    for _ in range(args.warmup_rounds):
        for run in runners.values():
            run()
    started = time.perf_counter()
    for _ in range(args.rounds):
        for name, run in runners.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].extend(run())
            if device.type == "cuda":
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))
    wall = time.perf_counter() - started

    results: dict[str, Any] = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "size": args.size,
        "batch": args.batch,
        "steps_per_variant": len(next(iter(times.values()))),
        "wall_seconds": round(wall, 1),
        "variants": {},
    }
    results["model"] = args.model
    print(
        f"\n{args.model} RetinaNet, {args.size} px, batch {args.batch}, {results['device']}, "
        f"{results['threads']} threads, {args.rounds} rounds x {args.steps} steps (median), {wall:.0f} s\n"
    )
    header = f"{'variant':32s} {'s/step':>8s} {'images/s':>9s}"
    print(header + ("  peak GPU MiB" if device.type == "cuda" else ""))
    for name, values in times.items():
        median = statistics.median(values)
        entry = {"seconds_per_step": median, "images_per_second": args.batch / median, "steps": values}
        if device.type == "cuda":
            entry["peak_memory_mib"] = peak[name] / 2**20
        results["variants"][name] = entry
        line = f"{name:32s} {median:8.3f} {args.batch / median:9.2f}"
        print(line + (f"  {peak[name] / 2**20:12.0f}" if device.type == "cuda" else ""))

    def ips(name: str) -> float:
        return results["variants"][name]["images_per_second"]

    ratios = {
        "suite: ghmc+ghmr / focal+smooth_l1 (target >= 0.95)": ips("suite ghmc+ghmr")
        / ips("suite focal+smooth_l1"),
        "loop: ghmc+ghmr / focal+smooth_l1": ips("loop ghmc+ghmr") / ips("loop focal+smooth_l1"),
        "focal+smooth_l1: suite / loop (target >= 0.95)": ips("suite focal+smooth_l1")
        / ips("loop focal+smooth_l1"),
        "ghmc+ghmr: suite / loop (target >= 0.95)": ips("suite ghmc+ghmr") / ips("loop ghmc+ghmr"),
    }
    if "torchvision focal+smooth_l1" in times:
        ratios["suite focal+smooth_l1 / torchvision RetinaNet loop"] = ips("suite focal+smooth_l1") / ips(
            "torchvision focal+smooth_l1"
        )
        ratios["suite ghmc+ghmr / torchvision RetinaNet loop"] = ips("suite ghmc+ghmr") / ips(
            "torchvision focal+smooth_l1"
        )
    results["ratios_images_per_second"] = ratios
    print()
    for name, value in ratios.items():
        print(f"{name:60s} {value:6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
