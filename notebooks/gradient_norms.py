# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Gradient norms: why GHM works
#
# Li, Liu, Wang, *Gradient Harmonized Single-stage Detector* (AAAI 2019), Fig. 1-5, regenerated from two
# trained checkpoints side by side: one trained with the paper's CE baseline (+ smooth L1), one with
# GHM-C + GHM-R.
#
# * **g** = |p - p\*| of every valid (anchor, class) pair (Eq. 3): its distribution (Fig. 1/2), how CE, FL and
#   GHM-C reweight it (Fig. 3) and how much of each loss's total gradient every g bin carries (Fig. 1, right).
# * **gr** = |d| / sqrt(d² + μ²) of every box delta of the positive anchors (Eq. 14, μ = 0.02): its
#   distribution (Fig. 4) and the SL1 / ASL1 / GHM-R gradients vs |d| (Fig. 5).
#
# All computation is library code (`ghmdet.analysis`, see `docs/analysis.md`); this notebook only wires it.
# Run it headless with `make notebook` (papermill); the parameters below can be set with
# `make notebook ARGS="-p ce_checkpoint outputs/train/runs/<run> -p ghm_checkpoint ..."`. Without checkpoints
# it trains a short CE + SL1 and a GHM-C + GHM-R run itself: on the embedded tree crowns by default, or with
# `-p benchmark digits` on the ablation benchmark with its preset's recipe (e.g. `-p steps 2000`), where CE
# and GHM converge.

# %% tags=["parameters"]
ce_checkpoint = None  # run dir or .ckpt of a CE (+ SL1) ghmdet-train run; None: train one here
ghm_checkpoint = None  # the same for GHM-C + GHM-R
benchmark = "treecrowns"  # self-trained runs on "treecrowns" (make train's data) or "digits" (the ablations')
output_dir = None  # PNG figures + summary.json; None: experiments/gradient_norms[/<benchmark>]
work_dir = None  # self-trained runs, the W&B run; None: outputs/gradient_norms[/<benchmark>]
train_overrides = []  # extra Hydra overrides of both self-trained runs (a list of strings)
steps = 200  # iterations of each self-trained run
retrain = False  # True: train again even if work_dir holds a completed run
seed = 0
split = "train"  # images the norms are collected on: "train" (as trained on) or "val"
max_images = None  # None: the whole split
histogram_bins = 100  # unit regions of the distribution / contribution figures
wandb_mode = None  # None: $WANDB_MODE, else "offline"; "disabled" skips W&B

# %%
import json
import time
from pathlib import Path

import matplotlib
import torch
from IPython.display import Image, display

from ghmdet.analysis import (
    FL_BALANCED,
    analysis_loader,
    benchmark_run_overrides,
    checkpoint_path,
    classification_reweightings,
    collect_gradient_norms,
    contribution_shares,
    load_run,
    log_to_wandb,
    paper_figures,
    resolve_wandb_mode,
    save_figures,
    short_run_overrides,
    train_run,
    write_summary,
)
from ghmdet.paths import PROJECT_ROOT

matplotlib.use("Agg")  # headless: figures are rendered to PNG and shown from the files
mode = resolve_wandb_mode(wandb_mode)
benchmark_overrides = benchmark_run_overrides(benchmark)
suffix = "" if benchmark == "treecrowns" else f"/{benchmark}"
out = PROJECT_ROOT / (output_dir or f"experiments/gradient_norms{suffix}")
work = PROJECT_ROOT / (work_dir or f"outputs/gradient_norms{suffix}")
timings: dict[str, float] = {}


def timed(name: str, since: float) -> None:
    timings[name] = round(time.perf_counter() - since, 1)
    print(f"{name}: {timings[name]} s")


# %% [markdown]
# ## The two checkpoints
#
# Given ones are loaded as they are (model and data config from their run's `metrics.json`; for a run dir, the
# checkpoint that `metrics.json` names as the one its metrics belong to). Missing ones are trained here with
# `ghmdet-train` for `steps` iterations (a completed run in `work_dir` is reused). The self-trained runs log
# the live gradient-norm histograms (`GradientNormLogger`) to W&B too.

# %%
given = {"ce": ce_checkpoint, "ghm": ghm_checkpoint}
runs = {}
for key, checkpoint in given.items():
    started = time.perf_counter()
    if checkpoint is None:
        overrides = [
            *benchmark_overrides,
            *train_overrides,
            *short_run_overrides(key, steps, wandb=mode != "disabled"),
            f"seed={seed}",
        ]
        checkpoint = train_run(work / f"{key}_{steps}steps", overrides, wandb_mode=mode, retrain=retrain)
        timed(f"train_{key}", started)
    runs[key] = load_run(checkpoint_path(PROJECT_ROOT / checkpoint))
    print(f"{key}: {runs[key].losses} at step {runs[key].global_step} <- {runs[key].checkpoint}")

# %% [markdown]
# ## Collect the gradient norms
#
# Each model runs over the same images in eval mode (frozen batch-norm statistics); the norms are computed
# from exactly what its loss seam hands to the losses (matching, ignored anchors and all).

# %%
norms = {}
for key, run in runs.items():
    started = time.perf_counter()
    torch.manual_seed(seed)  # the same augmentation draw for both models
    loader = analysis_loader(run.datamodule, split=split, max_images=max_images)
    label = f"{run.losses}, step {run.global_step}"
    norms[label] = collect_gradient_norms(run.model, loader, mu=0.02)
    timed(f"collect_{key}", started)
    print(label, json.dumps(norms[label].summary(), indent=1))

# %% [markdown]
# ## The figures

# %%
started = time.perf_counter()
figures = paper_figures(norms, bins=histogram_bins)
paths = save_figures(figures, out)
timed("figures", started)
for path in paths.values():
    display(Image(filename=str(path)))

# %% [markdown]
# ## Summary
#
# The share of each loss's total gradient carried by the easy pairs (g < 0.1) and by the very hard ones
# (g >= 0.9): the paper's point is that CE spends most of it on the easy negatives, FL shifts it away from
# them and GHM-C spreads it evenly over the g range.


# %%
def shown(path: Path) -> str:
    """A path relative to the project root when it lies inside (the summary is committed)."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


summary = {
    "parameters": {
        "steps": steps,
        "train_overrides": train_overrides,
        "split": split,
        "max_images": max_images,
    },
    "checkpoints": {},
    "models": {},
    "seconds": timings,
}
for (key, run), (label, model_norms) in zip(runs.items(), norms.items()):
    shares = contribution_shares(model_norms.g, classification_reweightings(model_norms), bins=10)
    summary["checkpoints"][key] = shown(run.checkpoint)
    summary["models"][label] = {
        **model_norms.summary(),
        "gradient_share_g_below_0.1": {name: round(float(s[0]), 4) for name, s in shares.items()},
        "gradient_share_g_from_0.9": {name: round(float(s[-1]), 4) for name, s in shares.items()},
    }
summary["notes"] = {FL_BALANCED: "alpha-balanced focal loss (alpha for positives, 1 - alpha for negatives)"}
write_summary(summary, out / "summary.json")
print(json.dumps(summary["models"], indent=1))

# %% [markdown]
# ## W&B
#
# The figures and the summary go into one W&B run (project `ghmdet`, job type `analysis`); offline by default
# (`wandb sync <folder>` uploads it later), skipped with `wandb_mode="disabled"`.

# %%
wandb_run = log_to_wandb(
    paths,
    summary["models"],
    mode=mode,
    save_dir=work,
    config={"checkpoints": summary["checkpoints"], **summary["parameters"]},
)
print(f"W&B run: {wandb_run}" if wandb_run else "W&B disabled: figures written as PNG files only")
