"""Config validation at start-up: every invalid value (and an unknown choice) gives one readable line naming
the config key, before any data loads; valid presets pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from ghmdet.config_validation import ConfigError, config_problems, validate_config
from tests.helpers.configs import compose_train
from tests.reliability.reliability_helpers import read_record


def _compose(overrides: list[str]) -> DictConfig:
    return compose_train([*overrides, "paths.output_dir=/tmp/unused"])


@pytest.mark.parametrize(
    "overrides",
    [[], ["experiment=tiny"], ["loss/cls=focal", "loss/reg=smooth_l1"], ["optimizer=sgd", "scheduler=step"]],
)
def test_valid_configs_pass(overrides: list[str]) -> None:
    assert config_problems(_compose(overrides)) == []


# (overrides, fragments of the one-line message)
INVALID: list[tuple[list[str], list[str]]] = [
    (["loss.cls.bins=0"], ["loss.cls.bins = 0", "GHMCLoss: bins must be an integer >= 1"]),
    (["loss.cls.bins=2.5"], ["loss.cls.bins = 2.5"]),
    (["loss.cls.bins=abc"], ["loss.cls.bins = 'abc'"]),
    (["loss.reg.bins=-1"], ["loss.reg.bins = -1", "GHMRLoss"]),
    (["loss.cls.momentum=1.0"], ["loss.cls.momentum = 1.0", "[0, 1)"]),
    (["loss.reg.momentum=-0.1"], ["loss.reg.momentum = -0.1"]),
    (["loss.reg.mu=0"], ["loss.reg.mu = 0", "mu must be a finite number > 0"]),
    (["loss.reg.mu=-0.02"], ["loss.reg.mu = -0.02"]),
    (["loss.cls.density=fast"], ["loss.cls.density = 'fast'", "('unit', 'exact')"]),
    (["loss.cls.loss_weight=-1"], ["loss.cls.loss_weight = -1"]),
    (["+loss.cls.gamma=2"], ["loss.cls.gamma = 2", "not a parameter of ghmdet.losses.GHMCLoss"]),
    (["loss/cls=focal", "loss.cls.gamma=-1"], ["loss.cls.gamma = -1"]),
    (["optimizer.lr=0"], ["optimizer.lr = 0", "learning rate"]),
    (["optimizer.lr=-0.01"], ["optimizer.lr = -0.01"]),
    (["optimizer.lr=nan"], ["optimizer.lr = nan"]),
    (["optimizer.lr=fast"], ["optimizer.lr = 'fast'"]),
    (["optimizer=sgd", "optimizer.momentum=1.5"], ["optimizer.momentum = 1.5"]),
    (["optimizer.weight_decay=-1"], ["optimizer.weight_decay = -1"]),
    (["+optimizer.betas=[1.5,0.9]"], ["optimizer (torch.optim.AdamW)", "beta"]),
    (["scheduler.policy=linear"], ["scheduler", "'linear'"]),
    (["scheduler.warmup_iters=-5"], ["scheduler.warmup_iters = -5"]),
    (["scheduler.warmup_ratio=0"], ["scheduler.warmup_ratio = 0"]),
    (["trainer.max_steps=0"], ["trainer.max_steps = 0"]),
    (["trainer.max_steps=-1"], ["never end"]),
    (["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val = -1"]),
    (["model.stats_scope=global"], ["model.stats_scope = 'global'", "per_level"]),
    (["model.backbone.name=vgg16"], ["model.backbone.name = 'vgg16'"]),
    (["model.min_size=0"], ["model.min_size = 0"]),
    (["data.hflip_prob=1.5"], ["data.hflip_prob = 1.5", "probability"]),
    (["data.batch_size=0"], ["data.batch_size = 0", "batch_size must be an integer >= 1"]),
    (["data.num_workers=-1"], ["data.num_workers = -1"]),
    (["data.box_policy=ignore"], ["data.box_policy = 'ignore'"]),
    (["seed=-1"], ["seed = -1"]),
    (["seed=4294967296"], ["seed = 4294967296"]),
    (["threads=0"], ["threads = 0"]),
    (["metric_backend=coco"], ["metric_backend = 'coco'"]),
    (["resume=maybe"], ["resume = 'maybe'"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), INVALID, ids=[" ".join(o) for o, _ in INVALID])
def test_invalid_values_give_one_line_naming_the_key(overrides: list[str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(_compose(overrides))
    message = str(error.value)
    assert "\n" not in message and message.startswith("invalid config: ")
    for fragment in fragments:
        assert fragment in message


def test_all_problems_are_reported_at_once() -> None:
    problems = config_problems(_compose(["loss.cls.bins=0", "loss.reg.mu=0", "optimizer.lr=0", "seed=-1"]))
    assert [p.split(" = ")[0] for p in problems] == ["seed", "loss.cls.bins", "loss.reg.mu", "optimizer.lr"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["loss/cls=ghm"],
            "Could not find 'loss/cls/ghm' Available options in 'loss/cls': ce, focal, ghmc, ohem",
        ),
        (["loss.cls.bins=0"], "invalid config: loss.cls.bins = 0: GHMCLoss: bins must be an integer >= 1"),
        (["loss.cls.momentum=1"], "loss.cls.momentum = 1: GHMCLoss: momentum must be in [0, 1)"),
        (["loss.reg.mu=-1", "optimizer.lr=0"], "loss.reg.mu = -1: GHMRLoss: mu must be a finite number > 0"),
        (["trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'"),
    ],
)
def test_cli_prints_one_line_and_loads_no_data(
    tmp_path: Path, train: Callable[..., Any], overrides: list[str], expected: str
) -> None:
    data_dir = tmp_path / "data"  # a fresh data dir: the synthetic set would be built there on first use
    proc = train(tmp_path / "run", *overrides, f"paths.data_dir={data_dir}", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghmdet-train: error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not data_dir.exists()  # failed before any data was built or loaded
    if not overrides[0].startswith(("loss/cls=", "trainer.max_stepz")):  # composed: the job ran
        record = read_record(tmp_path / "run")
        assert record["status"] == "failed" and record["reason"].startswith("invalid config: ")
