"""Run records of the config shape before the configs built the module and the scheduler: they still load,
and a finished run of the same config is skipped, a stopped one resumed; a changed result is still refused."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from ghmdet.run.checkpoint_io import RUN_CONFIG_KEY
from ghmdet.run.config_compare import ConfigMismatchError, check_resume, finished_run
from ghmdet.run.record import COMPLETED, LAST_CHECKPOINT, METRICS_FILE, current_config_shape
from tests.helpers.configs import compose_train

NODES = ("module", "scheduler", "ghm_stats", "optimizer", "metric_backend")


def _recorded(overrides: tuple[str, ...] = ()) -> dict:
    """The nodes these tests need as the record holds them (resolved)."""
    cfg = compose_train(overrides)
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if k != "metric_backend" else cfg[k] for k in NODES
    }


def _older_shape(config: dict) -> dict:
    """What the entry point recorded before: no module node, no scheduler target, the sync in trainer."""
    older = copy.deepcopy(config)
    del older["module"]
    older["scheduler"] = {k: v for k, v in older["scheduler"].items() if k not in ("_target_", "_partial_")}
    older["trainer"] = {**older.get("trainer", {}), "sync_ghm_stats": older.pop("ghm_stats")["sync"]}
    return older


@pytest.mark.parametrize(
    "overrides",
    [(), ("scheduler=step", "optimizer=sgd", "optimizer.lr=0.02"), ("trainer=ddp", "ghm_stats=all_reduce")],
)
def test_an_older_record_gets_the_nodes_the_configs_compose_now(overrides: tuple[str, ...]) -> None:
    current = _recorded(overrides)
    upgraded = current_config_shape(_older_shape(current))
    for node in NODES:
        assert upgraded[node] == current[node], node
    assert upgraded["trainer"] == {}


def test_a_current_record_is_returned_unchanged() -> None:
    current = _recorded()
    assert current_config_shape(current) is current
    assert OmegaConf.create(current).module._target_ == "ghmdet.module.DetectionModule"


def _run_config(overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The whole config a run of ``overrides`` records (resolved: no Hydra run, so no W&B name)."""
    cfg = compose_train(("paths.output_dir=/runs/a", "logger=csv", *overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _finished_run_dir(run_dir: Path, config: dict[str, Any]) -> Path:
    (run_dir / METRICS_FILE).write_text(json.dumps({"status": COMPLETED, "config": config, "metrics": {}}))
    return run_dir


@pytest.mark.parametrize("overrides", [(), ("trainer=ddp", "ghm_stats=all_reduce", "scheduler=step")])
def test_a_finished_run_recorded_in_the_older_shape_is_skipped(
    tmp_path: Path, overrides: tuple[str, ...]
) -> None:
    config = _run_config(overrides)
    run_dir = _finished_run_dir(tmp_path, _older_shape(config))
    previous = finished_run(run_dir, config, skip_completed=True)
    assert previous is not None and previous["status"] == COMPLETED


@pytest.mark.parametrize(
    ("node", "name", "value", "reported"),
    [
        ("optimizer", "lr", 0.123, "optimizer.lr"),
        ("trainer", "sync_ghm_stats", True, "ghm_stats.sync"),  # the older key, compared as today's
        ("scheduler", "warmup_iters", 7, "scheduler.warmup_iters"),
    ],
)
def test_an_older_shape_record_of_another_result_is_still_refused(
    tmp_path: Path, node: str, name: str, value: Any, reported: str
) -> None:
    config = _run_config()
    older = _older_shape(config)
    older[node][name] = value
    with pytest.raises(ConfigMismatchError, match=rf"skipping .*{re.escape(reported)} = "):
        finished_run(_finished_run_dir(tmp_path, older), config, skip_completed=True)


def test_a_checkpoint_recorded_in_the_older_shape_resumes(tmp_path: Path) -> None:
    config = _run_config()
    last_ckpt = tmp_path / LAST_CHECKPOINT
    last_ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 7, RUN_CONFIG_KEY: _older_shape(config)}, last_ckpt)
    assert check_resume(last_ckpt, None, config, tmp_path) == (7, [])
    older = _older_shape(config)
    older["trainer"]["max_steps"] += 1
    torch.save({"state_dict": {}, "global_step": 7, RUN_CONFIG_KEY: older}, last_ckpt)
    with pytest.raises(ConfigMismatchError, match=r"resuming .*trainer\.max_steps = "):
        check_resume(last_ckpt, None, config, tmp_path)
