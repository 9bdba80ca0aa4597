"""Checkpoints for the analysis: load a trained run back (model + its data), or train a short one.

A run dir written by ``ghmdet-train`` holds ``checkpoints/last.ckpt`` and ``metrics.json``, whose ``config``
is the resolved config of the run: that is what rebuilds the model and its data here, with
:func:`ghmdet.builders.build`, the builder the entry point uses. ``metrics.json`` (read through
:mod:`ghmdet.run.record`) also names the checkpoint its metrics belong to (``checkpoint``: file and step); a
run dir is loaded from that one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset

from ghmdet.builders import build
from ghmdet.data.datamodule import DetectionDataModule
from ghmdet.data.dataset import collate_detection
from ghmdet.model import GHMRetinaNet
from ghmdet.module import DetectionModule
from ghmdet.paths import PROJECT_ROOT
from ghmdet.run.record import COMPLETED, METRICS_FILE, current_config_shape, last_checkpoint, read_metrics

LOSS_PAIRS: dict[str, tuple[str, ...]] = {
    "ce": ("loss/cls=ce", "loss/reg=smooth_l1"),
    "ghm": ("loss/cls=ghmc", "loss/reg=ghmr"),
}
"""The two trainings the paper's figures compare: its CE baseline (with SL1) and GHM-C + GHM-R."""


@dataclass
class LoadedRun:
    """A trained run rebuilt from its checkpoint."""

    module: DetectionModule
    datamodule: DetectionDataModule
    config: DictConfig
    checkpoint: Path
    global_step: int

    @property
    def model(self) -> GHMRetinaNet:
        return self.module.model

    @property
    def losses(self) -> str:
        """``"<cls loss class> + <reg loss class>"``, e.g. ``"GHMCLoss + GHMRLoss"``."""
        return f"{type(self.model.cls_loss).__name__} + {type(self.model.reg_loss).__name__}"


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a file; for a run dir, the checkpoint its ``metrics.json`` scored
    (``checkpoint.file``), else ``<path>/checkpoints/last.ckpt``."""
    path = Path(path)
    if path.is_file():
        return path
    scored = (read_metrics(path) or {}).get("checkpoint")
    if isinstance(scored, dict) and scored.get("file"):
        return path / scored["file"]
    return last_checkpoint(path)


def load_run(
    checkpoint: str | os.PathLike[str], overrides: Sequence[str] = (), device: str | torch.device = "cpu"
) -> LoadedRun:
    """Rebuild the model and data module of a ``ghmdet-train`` run and load its checkpoint.

    Args:
        checkpoint: ``<run dir>/checkpoints/last.ckpt`` or the run dir (then the checkpoint that
            ``metrics.json`` names); the config is read from ``<run dir>/metrics.json``. A checkpoint of
            another step than the one the record's metrics are of is refused.
        overrides: dotlist changes of that config, e.g. ``["data.root=/elsewhere/treecrowns"]`` for a run
            trained on another machine.
        device: where to put the model.
    """
    ckpt = checkpoint_path(checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    run_dir = ckpt.parent.parent
    record = read_metrics(run_dir)
    if record is None or "config" not in record:
        raise FileNotFoundError(
            f"{run_dir / METRICS_FILE} is missing or has no config: load_run needs the run dir that "
            "ghmdet-train wrote (checkpoints/last.ckpt + metrics.json)"
        )
    config = OmegaConf.merge(
        OmegaConf.create(current_config_shape(record["config"])), OmegaConf.from_dotlist(list(overrides))
    )
    datamodule, module = build(config)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    scored = record.get("checkpoint")
    step = int(state.get("global_step", 0))
    is_scored = isinstance(scored, dict) and ckpt.resolve() == (run_dir / str(scored.get("file"))).resolve()
    if is_scored and step != scored.get("step"):
        raise ValueError(
            f"{ckpt} holds step {step}, but the metrics in {run_dir / METRICS_FILE} are of step "
            f"{scored.get('step')}: the checkpoint was overwritten after the run was scored"
        )
    module.load_state_dict(state["state_dict"])
    module.to(device)
    return LoadedRun(module, datamodule, config, ckpt, step)


def analysis_loader(
    datamodule: DetectionDataModule,
    split: Literal["train", "val"] = "train",
    max_images: int | None = None,
    batch_size: int | None = None,
) -> DataLoader:
    """The first ``max_images`` images of a split, in file order. ``train`` serves them with the run's
    training augmentation (the images as the model was trained on them; seed torch for a fixed draw),
    ``val`` without."""
    datamodule.setup("fit" if split == "train" else "validate")
    dataset = datamodule.train_dataset if split == "train" else datamodule.val_dataset
    if dataset is None:
        raise ValueError(f"analysis_loader: split must be 'train' or 'val', got {split!r}")
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    return DataLoader(
        Subset(dataset, range(count)),
        batch_size=batch_size or datamodule.batch_size,
        shuffle=False,
        collate_fn=collate_detection,
    )


#: Hydra overrides that put a self-trained run on one of the embedded benchmarks
BENCHMARK_OVERRIDES: dict[str, tuple[str, ...]] = {
    "treecrowns": (),
    "digits": ("experiment=ablation_digits",),
}


def benchmark_run_overrides(benchmark: str) -> list[str]:
    """The overrides of a self-trained run on ``benchmark`` (``treecrowns``: make train's data and recipe;
    ``digits``: the ablation benchmark with its preset's recipe)."""
    if benchmark not in BENCHMARK_OVERRIDES:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARK_OVERRIDES)}, got {benchmark!r}")
    return list(BENCHMARK_OVERRIDES[benchmark])


def short_run_overrides(losses: str, steps: int, wandb: bool) -> list[str]:
    """Hydra overrides of a short training with one of :data:`LOSS_PAIRS`: ``steps`` iterations, a checkpoint
    at the last one, no progress bar, the gradient-norm histograms logged whatever the losses, W&B or CSV."""
    if losses not in LOSS_PAIRS:
        raise ValueError(f"losses must be one of {sorted(LOSS_PAIRS)}, got {losses!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [
        *LOSS_PAIRS[losses],
        f"trainer.max_steps={steps}",
        f"callbacks.model_checkpoint.every_n_train_steps={steps}",
        "callbacks.rich_progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "callbacks.gradient_norms.only_ghm=false",
        f"logger={'wandb' if wandb else 'csv'}",
    ]


def train_run(
    run_dir: str | os.PathLike[str],
    overrides: Sequence[str],
    *,
    wandb_mode: str = "offline",
    retrain: bool = False,
) -> Path:
    """Train (or find already trained) one ``ghmdet-train`` run in ``run_dir``; returns the checkpoint its
    metrics belong to.

    Runs the entry point in a subprocess (a clean Hydra/Lightning/W&B state), so a completed run in
    ``run_dir`` is reused unless ``retrain``. Output goes to ``<run_dir>/stdout.log``; a failure raises with
    its tail.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ghmdet.train", f"hydra.run.dir={run_dir}", *overrides]
    if retrain:
        command.append("skip_completed=false")
    env = {**os.environ, "WANDB_MODE": wandb_mode, "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    log_path = run_dir / "stdout.log"
    with log_path.open("w") as log_file:
        proc = subprocess.run(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, check=False
        )
    record = read_metrics(run_dir) or {}
    if proc.returncode != 0 or record.get("status") != COMPLETED:
        tail = log_path.read_text()[-4000:]
        raise RuntimeError(
            f"training failed (exit {proc.returncode}, status {record.get('status')!r}): "
            f"{' '.join(command)}\n--- {log_path} (tail) ---\n{tail}"
        )
    return checkpoint_path(run_dir)
