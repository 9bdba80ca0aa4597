"""The Lightning + Hydra re-launch fix and its job scope (ghmdet.distributed.relaunch; no processes run)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from ghmdet.distributed import relaunch
from ghmdet.distributed.ranks import is_rank_zero
from tests.helpers.configs import compose_train, hydra_on_conf

RUN_DIR = "/scratch/sweeps/a b,c=d/it's/0"  # space, comma, equals, quote: all must survive the round trip


@pytest.fixture
def multirun_job(tmp_path: Path) -> Iterator[None]:
    """HydraConfig as Hydra sets it inside job 0 of ``-m seed=0,1 loss/cls=focal``."""
    cfg = compose_train(["seed=0", "loss/cls=focal"], hydra=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["seed=0", "loss/cls=focal", "trainer.precision='bf16-mixed'"]
        cfg.hydra.overrides.hydra = [
            "hydra.mode=MULTIRUN",
            "hydra.sweep.dir=/scratch/sweeps",
            "hydra/launcher=joblib_gpus",
            "hydra.launcher.n_jobs=2",
            "hydra.job.chdir=false",
            "hydra.verbose=true",
        ]
        cfg.hydra.callbacks = {"tables": {"_target_": "ghmdet.ablation.AblationCallback"}}  # a sweep's hook
        cfg.hydra.runtime.output_dir = RUN_DIR
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None


def test_child_replays_this_job_only_in_its_output_dir(multirun_job: None, tmp_path: Path) -> None:
    command, cwd = relaunch.hydra_child_command(local_rank=1)
    assert command[:3] == [sys.executable, "-m", "ghmdet.train"]
    assert cwd == str(tmp_path)
    args = command[3:]
    assert "-m" not in args and "--multirun" not in args
    # this job's values, not the sweep lists; the sweep / launcher / mode overrides stay with the parent
    assert args[:3] == ["seed=0", "loss/cls=focal", "trainer.precision='bf16-mixed'"]
    assert "hydra.job.chdir=false" in args and "hydra.verbose=true" in args
    assert not [
        a for a in args if a.startswith(("hydra.mode", "hydra.sweep", "hydra/launcher", "hydra.launcher"))
    ]
    assert "hydra.job.name=train_ddp_process_1" in args and "hydra.output_subdir=null" in args
    assert "~hydra.callbacks.tables" in args  # job-level hooks run in the parent only
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(args)}
    assert parsed["hydra.run.dir"] == RUN_DIR
    assert parsed["trainer.precision"] == "bf16-mixed"


def test_child_overrides_compose_to_the_same_job(tmp_path: Path) -> None:
    """The child's command line composes to the parent job's config, without the sweep's Hydra callbacks."""
    job = ["+ablation=bins", "loss.cls.bins=5", "seed=1"]
    with hydra_on_conf():
        parent = compose_train(job, hydra=True)
        assert "ablation_tables" in parent.hydra.callbacks
        with open_dict(parent):
            parent.hydra.overrides.task = job
            parent.hydra.runtime.output_dir = str(tmp_path / "job")
            parent.hydra.runtime.cwd = str(tmp_path)
        HydraConfig.instance().set_config(parent)
        try:
            command, _ = relaunch.hydra_child_command(1)
        finally:
            HydraConfig.instance().cfg = None
        child = compose_train(command[3:], hydra=True)
    assert dict(child.hydra.callbacks) == {}
    assert child.hydra.run.dir == str(tmp_path / "job")
    strip = [k for k in parent if k != "hydra"]
    assert OmegaConf.masked_copy(child, strip) == OmegaConf.masked_copy(parent, strip)


def test_child_command_needs_a_hydra_job() -> None:
    with pytest.raises(RuntimeError, match="initialised Hydra job"):
        relaunch.hydra_child_command(1)


def test_job_scope_patches_lightning_and_restores_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    original = pytorch_launcher._hydra_subprocess_cmd
    for key in relaunch.DDP_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = torch.get_num_threads()
    with pytest.raises(KeyError), relaunch.hydra_ddp_job():
        assert pytorch_launcher._hydra_subprocess_cmd is not original
        assert fabric_launcher._hydra_subprocess_cmd is pytorch_launcher._hydra_subprocess_cmd
        # what Lightning's launcher and seed_everything leave in the parent's environment
        os.environ.update(
            LOCAL_RANK="0", NODE_RANK="0", WORLD_SIZE="2", MASTER_PORT="1234", PL_GLOBAL_SEED="1"
        )
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
        raise KeyError("the job failed")
    assert pytorch_launcher._hydra_subprocess_cmd is original
    assert fabric_launcher._hydra_subprocess_cmd is original
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT", "PL_GLOBAL_SEED"):
        assert key not in os.environ, key
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert torch.get_num_threads() == threads


def test_children_are_awaited_and_their_failures_reported(caplog: pytest.LogCaptureFixture) -> None:
    fine = subprocess.Popen([sys.executable, "-c", "pass"])
    relaunch._wait_for_children([fine], timeout_s=60, failed=False)
    assert fine.returncode == 0
    broken = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    relaunch._wait_for_children([broken], timeout_s=60, failed=False)
    assert "exited with code(s) [3]" in caplog.text


def test_children_of_a_failed_job_are_stopped() -> None:
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    relaunch._wait_for_children([stuck], timeout_s=0.5, failed=True)
    assert stuck.poll() is not None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
        ({"RANK": "3"}, False),
        ({"SLURM_PROCID": "0"}, True),
        ({"SLURM_PROCID": "5"}, False),
    ],
)
def test_rank_zero_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_rank_zero() is expected
