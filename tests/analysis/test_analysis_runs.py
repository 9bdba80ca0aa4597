"""Run records of the config shape before the configs built the module and the scheduler still load."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from ghmdet.analysis.runs import current_config_shape
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
    older["trainer"] = {"sync_ghm_stats": older.pop("ghm_stats")["sync"]}
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
