"""How far a run has brought its background's scores down: for each saved checkpoint step of the given run
dirs, the share of negative (anchor, class) pairs with p > 0.05 (and > 0.5), the mean p of the negatives and
of the positives, on the first N training scenes. The model runs as it predicts (eval mode) and the pairs are
what its loss seam hands to the classification loss (same matching, ignored anchors left out).

    python experiments/digits_recipe/background_scores.py RUN_DIR [RUN_DIR ...] [--images 32] [--watch]

Appends one JSON line per (run, step) to ``background_scores.jsonl`` next to this file, skipping pairs already
there; ``--watch`` polls the runs' ``checkpoints/last.ckpt`` while they train and measures each new multiple
of ``--every`` steps (a run keeps only its last checkpoint, so this is how a curve is measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ghmdet.analysis.collect import collect_gradient_norms
from ghmdet.analysis.runs import analysis_loader, load_run
from ghmdet.run.record import METRICS_FILE

OUT = Path(__file__).with_name("background_scores.jsonl")


def measure(run_dir: Path, images: int) -> dict | None:
    """Measure ``run_dir``'s current ``last.ckpt`` (copied first: the run may overwrite it meanwhile)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        (copy / "checkpoints").mkdir()
        shutil.copy(run_dir / "checkpoints" / "last.ckpt", copy / "checkpoints" / "last.ckpt")
        shutil.copy(run_dir / METRICS_FILE, copy / METRICS_FILE)
        loaded = load_run(copy / "checkpoints" / "last.ckpt")
        torch.manual_seed(0)
        norms = collect_gradient_norms(
            loaded.module.model, analysis_loader(loaded.datamodule, "train", images)
        )
    negative = ~norms.positive
    g_neg, g_pos = norms.g[negative], norms.g[norms.positive]  # g = p for a negative, 1 - p for a positive
    return {
        "run": run_dir.name,
        "step": loaded.global_step,
        "images": images,
        "neg_pairs": int(negative.sum()),
        "pos_pairs": int(norms.positive.sum()),
        "neg_p_gt_0.05": float((g_neg > 0.05).float().mean()),
        "neg_p_gt_0.5": float((g_neg > 0.5).float().mean()),
        "neg_mean_p": float(g_neg.mean()),
        "pos_mean_p": float(1 - g_pos.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--watch", action="store_true")
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    torch.set_num_threads(1)
    done = (
        {(r["run"], r["step"]) for r in map(json.loads, OUT.read_text().splitlines())}
        if OUT.exists()
        else set()
    )
    while True:
        for run_dir in args.run_dirs:
            ckpt = run_dir / "checkpoints" / "last.ckpt"
            if not ckpt.is_file():
                continue
            step = int(torch.load(ckpt, map_location="cpu", weights_only=True).get("global_step", 0))
            if (run_dir.name, step) in done or (args.watch and (step == 0 or step % args.every)):
                continue
            record = measure(run_dir, args.images)
            if record is None or (record["run"], record["step"]) in done:
                continue
            with OUT.open("a") as f:
                f.write(json.dumps(record) + "\n")
            done.add((record["run"], record["step"]))
            print(record, flush=True)
        if not args.watch:
            return
        time.sleep(45)


if __name__ == "__main__":
    main()
