"""The one entry point: ``ghmdet-train`` / ``python -m ghmdet.train`` (Hydra).

Instantiate data, losses, model, LightningModule and trainer from the config; fit (resuming from the run's
``checkpoints/last.ckpt`` when it exists); test; write ``metrics.json``; close the W&B run. Everything a run
writes goes under its Hydra output dir.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ghmdet.callbacks import IterationTimer
from ghmdet.lit import DetectionModule

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
METRICS_FILE = "metrics.json"
#: keys of the trainer config group that configure the suite, not lightning.Trainer
NON_TRAINER_KEYS = ("sync_ghm_stats",)

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


def git_commit() -> str | None:
    """The commit of the code that ran (with '-dirty' when the tree has changes), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that a crash never leaves a half-written file (write a sibling, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]


def _callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c
    ]


def _finish_wandb() -> None:
    """Close the W&B run so that multirun jobs never share one (a no-op without wandb)."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, DetectionModule]:
    """Data module and LightningModule from a composed config (no training)."""
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    model = instantiate(
        cfg.model,
        num_classes=datamodule.num_classes,
        cls_loss=instantiate(cfg.loss.cls),
        reg_loss=instantiate(cfg.loss.reg),
    )
    module = DetectionModule(
        model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        metric_backend=cfg.metric_backend,
    )
    return datamodule, module


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train + test one configuration; returns what it wrote to ``metrics.json``."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_metrics(out_dir)
    if previous is not None and previous.get("status") == "completed" and cfg.skip_completed:
        log.info("%s already holds a completed run; skipping (skip_completed=false reruns it)", out_dir)
        return previous

    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    started = time.time()
    record: dict[str, Any] = {
        "status": "running",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "git_commit": git_commit(),
        "seed": int(cfg.seed),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }
    if (out_dir / METRICS_FILE).exists():
        # Never lose an earlier result (even an unreadable one): a rerun keeps it beside, time-stamped.
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
        os.replace(out_dir / METRICS_FILE, out_dir / f"metrics.{stamp}.json")
    # Visible while training: a job killed half-way leaves "running", not a stale or missing record.
    write_json_atomic(out_dir / METRICS_FILE, record)
    timer = IterationTimer()
    module: DetectionModule | None = None
    trainer: L.Trainer | None = None
    try:
        datamodule, module = build(cfg)
        trainer_cfg = OmegaConf.masked_copy(
            cfg.trainer, [k for k in cfg.trainer if k not in NON_TRAINER_KEYS]
        )
        trainer = instantiate(
            trainer_cfg,
            logger=_loggers(cfg) or False,
            callbacks=[*_callbacks(cfg), timer],
            default_root_dir=str(out_dir),
        )
        for logger in trainer.loggers:
            logger.log_hyperparams(record["config"])
        last_ckpt = out_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last_ckpt) if cfg.resume and last_ckpt.is_file() else None
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if module.divergence is None:
            trainer.test(module, datamodule=datamodule)
            record["status"] = "completed"
        else:
            record["status"] = "diverged"
            record["reason"] = (
                f"non-finite loss at step {module.divergence['step']}: {module.divergence['losses']}"
            )
            record["divergence"] = module.divergence
    except Exception as err:  # recorded for the sweep tables, then re-raised so the job fails visibly
        record["status"] = "failed"
        record["reason"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
        _finalise(record, module, trainer, timer, started, out_dir)
        raise
    return _finalise(record, module, trainer, timer, started, out_dir)


def _finalise(
    record: dict[str, Any],
    module: DetectionModule | None,
    trainer: L.Trainer | None,
    timer: IterationTimer,
    started: float,
    out_dir: Path,
) -> dict[str, Any]:
    final = module.final_metrics if module is not None else {}
    record["metrics"] = final.get("test", {})
    record["val_metrics"] = final.get("val", {})
    record["seconds_per_iteration"] = timer.seconds_per_iteration
    record["iterations"] = int(trainer.global_step) if trainer is not None else 0
    record["wall_seconds"] = round(time.time() - started, 1)
    write_json_atomic(out_dir / METRICS_FILE, record)
    _finish_wandb()
    return record


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    record = run(cfg)
    ap = record.get("metrics", {}).get("AP")
    return float(ap) if ap is not None else None


if __name__ == "__main__":
    main()
