"""trainer=ddp, the paper recipes' lr scaling and the cluster launchers compose (nothing is submitted)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ghmdet.distributed.gpu_claim import ONE_GPU_PER_JOB_ENV
from ghmdet.distributed.lr_scaling import scaled_lr
from tests.helpers.configs import compose_train


def test_ddp_trainer_syncs_ghm_statistics_and_builds_lightning_ddp() -> None:
    from lightning.pytorch.strategies import DDPStrategy

    cfg = compose_train(["trainer=ddp"])
    assert cfg.ghm_stats.sync is True
    assert cfg.loss.cls.sync_stats is True and cfg.loss.reg.sync_stats is True
    assert (cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.accelerator) == (8, 1, "gpu")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs == {"find_unused_parameters": False, "broadcast_buffers": False}
    # single-process trainers keep per-process statistics (no collective)
    for trainer in ("cpu", "gpu"):
        assert compose_train([f"trainer={trainer}"]).loss.cls.sync_stats is False


@pytest.mark.parametrize(
    ("overrides", "lr", "global_batch"),
    [
        ([], 0.01, 16),  # the released recipe: 8 GPUs x 2 images
        (["trainer.devices=4"], 0.005, 8),
        (["trainer.devices=4", "data.batch_size=4"], 0.01, 16),
        (["trainer.devices=2"], 0.0025, 4),
        (["trainer=gpu"], 0.00125, 2),
        (["trainer.num_nodes=2"], 0.02, 32),
        (["optimizer.lr=0.003"], 0.003, 16),  # an explicit lr wins
    ],
)
@pytest.mark.parametrize("experiment", ["paper_r50_1x", "paper_r101_1x", "paper_x101_1x"])
def test_paper_lr_follows_the_global_batch(
    experiment: str, overrides: list[str], lr: float, global_batch: int
) -> None:
    cfg = compose_train([f"experiment={experiment}", *overrides])
    devices = cfg.trainer.devices * cfg.trainer.get("num_nodes", 1)
    assert cfg.data.batch_size * devices == global_batch
    assert cfg.optimizer.lr == pytest.approx(lr)
    assert cfg.ghm_stats.sync is (cfg.trainer.get("strategy") is not None)


def test_paper_recipe_is_the_released_one() -> None:
    cfg = compose_train(["experiment=paper_r50_1x"])
    assert cfg.data.train_images == "train2017" and cfg.data.val_images == "val2017"
    assert cfg.data.train_annotations == "annotations/instances_train2017.json"
    assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.9, 1e-4)
    assert (cfg.scheduler.warmup_iters, cfg.scheduler.warmup_ratio) == (500, pytest.approx(1 / 3))
    assert cfg.trainer.max_epochs == 12 and cfg.trainer.gradient_clip_val == 35
    assert (cfg.model.min_size, cfg.model.max_size, cfg.data.hflip_prob) == (800, 1333, 0.5)


def test_coco_root_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCO_ROOT", "/datasets/coco2017")
    assert compose_train(["experiment=paper_r50_1x"]).data.root == "/datasets/coco2017"
    assert compose_train(["experiment=paper_r50_1x", "data.root=/x"]).data.root == "/x"


@pytest.mark.parametrize("devices", ["auto", -1, 0])
def test_lr_scaling_refuses_an_unknown_device_count(devices: object) -> None:
    with pytest.raises(ValueError, match=r"trainer.devices=8"):
        scaled_lr(0.01, 16, 2, devices, 1)
    assert scaled_lr(0.01, 16, 2, [0, 1, 2, 3], 1) == pytest.approx(0.005)
    assert scaled_lr(0.01, 16, 2, "0,1", 1) == pytest.approx(0.0025)


# ------------------------------------------------------------------------------------------------ SLURM


def test_slurm_launcher_follows_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setenv("GHMDET_SLURM_PARTITION", "a100")
    monkeypatch.setenv("GHMDET_SLURM_TIMEOUT_MIN", "720")
    cfg = compose_train(["hydra/launcher=slurm", "experiment=paper_r50_1x", "trainer.num_nodes=2"], True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 8, 8)
    assert (params["partition"], params["timeout_min"], params["cpus_per_task"]) == ("a100", 720, 8)
    assert params["max_num_timeout"] >= 1  # requeued on time-out; the job resumes from last.ckpt
    single = instantiate(compose_train(["hydra/launcher=slurm", "trainer=gpu"], True).hydra.launcher).params
    assert (single["nodes"], single["gpus_per_node"], single["tasks_per_node"]) == (1, 1, 1)


def test_slurm_batch_script_has_one_task_per_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sbatch script submitit would submit, built with the launcher's own parameter mapping."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake_srun = tmp_path / "bin" / "srun"  # submitit only checks that srun exists; nothing is run
    fake_srun.parent.mkdir()
    fake_srun.write_text("#!/bin/sh\nexit 1\n")
    fake_srun.chmod(fake_srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_srun.parent}{os.pathsep}{os.environ['PATH']}")
    cfg = compose_train(
        ["hydra/launcher=slurm", "experiment=paper_r50_1x", f"hydra.sweep.dir={tmp_path}"], True
    )
    params = dict(instantiate(cfg.hydra.launcher).params)
    executor = submitit.AutoExecutor(
        folder=tmp_path / "submitit", cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m ghmdet.train", "uid")
    for line in (
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=1440",
        "#SBATCH --job-name=ghmdet_paper_r50_1x",
    ):
        assert line in script, script
    assert "srun" in script


# ------------------------------------------------------------------------------------------------ joblib


def test_joblib_launcher_runs_one_job_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    monkeypatch.setenv("GHMDET_GPU_POOL", "0,1,2")
    cfg = compose_train(["hydra/launcher=joblib_gpus", "trainer=gpu"], True)
    assert cfg.hydra.launcher.n_jobs == 3
    assert cfg.hydra.job.env_set[ONE_GPU_PER_JOB_ENV] == "1"
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "JoblibLauncher"
    assert (
        compose_train(["hydra/launcher=joblib_gpus", "hydra.launcher.n_jobs=2"], True).hydra.launcher.n_jobs
        == 2
    )
