"""A composed config -> the objects of a run: data module, model, LightningModule, callbacks, trainer.

The entry point (:mod:`ghmdet.train`) builds its run with these; the analysis, the benchmarks, the notebook
and the tests build the same objects from the same config here (never through the entry point). The
loggers are built by :func:`ghmdet.loggers.build_loggers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ghmdet.module import DetectionModule
from ghmdet.run.checkpoint_io import AtomicCheckpointIO


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The data module of ``cfg.data``, its data prepared (an embedded set is built on first use)."""
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    return datamodule


def build_model(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    """The detector of a composed config with its ``loss/cls`` and ``loss/reg`` modules plugged in."""
    return instantiate(
        cfg.model,
        num_classes=num_classes,
        cls_loss=instantiate(cfg.loss.cls),
        reg_loss=instantiate(cfg.loss.reg),
    )


def build_module(cfg: DictConfig, model: torch.nn.Module) -> DetectionModule:
    """The LightningModule of ``cfg.module`` training ``model`` with the config's optimizer and schedule."""
    return instantiate(cfg.module, model=model)


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, DetectionModule]:
    """Data module and LightningModule from a composed config (no training)."""
    datamodule = build_datamodule(cfg)
    return datamodule, build_module(cfg, build_model(cfg, datamodule.num_classes))


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks of ``cfg.callbacks`` (a null entry is switched off)."""
    return [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c
    ]


def build_trainer(
    cfg: DictConfig, out_dir: Path, loggers: Sequence[Any], callbacks: Sequence[L.Callback] = ()
) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` writing under ``out_dir``, with the configured callbacks, then
    ``callbacks``; checkpoints are written atomically unless the config names its own plugins."""
    extra: dict[str, Any] = {}
    if cfg.trainer.get("plugins") is None:
        extra["plugins"] = [AtomicCheckpointIO()]  # a kill during a save keeps the previous checkpoint
    return instantiate(
        cfg.trainer,
        logger=list(loggers) or False,
        callbacks=[*build_callbacks(cfg), *callbacks],
        default_root_dir=str(out_dir),
        **extra,
    )
