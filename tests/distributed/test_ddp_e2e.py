"""trainer=ddp through the real entry point, on 2 CPU processes (gloo), with the tiny synthetic preset.

Needs the entry-point hooks (``ghmdet.distributed.hydra_ddp_job`` around ``run``, rank-0-only
``metrics.json``) and the evaluation hooks (unpadded sampler in ``DetectionDataModule``, ``sync_list_states``
in ``CocoDetectionMetrics``): see docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghmdet.data.synthetic import make_synthetic_coco

pytestmark = [pytest.mark.slow, pytest.mark.ddp, pytest.mark.timeout(300)]

# The test split is 3 train images: odd over 2 ranks, so a padding sampler would evaluate one twice.
DDP_OVERRIDES = (
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "+data.test_images=images/train",
    "+data.test_annotations=annotations/instances_train.json",
    "+data.limit_val=3",
    "+callbacks.ghm_state.dump=true",
    "+callbacks.eval_coverage.dump=true",
)


def _tail(proc: subprocess.CompletedProcess[str], chars: int = 5000) -> str:
    return f"--- stdout\n{proc.stdout[-chars:]}\n--- stderr\n{proc.stderr[-chars:]}"


def _check_job_dir(job: Path, seed: int) -> None:
    """One complete DDP job: one record, one W&B run, identical GHM state on both ranks, full evaluation."""
    record = json.loads((job / "metrics.json").read_text())
    assert record["status"] == "completed", record.get("reason")
    assert record["seed"] == seed and record["iterations"] == 4
    assert record["config"]["ghm_stats"]["sync"] is True
    assert record["config"]["loss"]["cls"]["sync_stats"] and record["config"]["loss"]["reg"]["sync_stats"]
    # rank 1 neither moved rank 0's record aside nor wrote its own
    assert not list(job.glob("metrics.*.json")), sorted(p.name for p in job.iterdir())
    runs = list((job / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    # rank 1 was started by Lightning with this job's overrides, in this job's dir
    assert (job / "train_ddp_process_1.log").is_file()
    # GHM statistics are global: both ranks hold bit-identical EMA buffers after 4 steps on different images
    rank0 = torch.load(job / "ghm_state" / "rank0.pt")
    rank1 = torch.load(job / "ghm_state" / "rank1.pt")
    assert set(rank0) == {f"model.{m}_loss.{b}" for m in ("cls", "reg") for b in ("acc_sum", "last_counts")}
    for key, value in rank0.items():
        assert value.dtype == torch.float32
        assert torch.equal(value, rank1[key]), key
    assert rank0["model.cls_loss.acc_sum"].sum() > 0
    # every image evaluated exactly once over the two ranks (val: 2 images, test: 3)
    coverage = json.loads((job / "eval_coverage.json").read_text())
    for stage, images in (("val", 2), ("test", 3)):
        report = coverage[stage]
        assert report["world_size"] == 2
        assert report["images_evaluated"] == report["dataset_images"] == images, report
        assert report["duplicates"] == report["missing"] == 0


def test_ddp_multirun_gives_one_dir_one_record_one_wandb_run_per_job(tmp_path: Path, run_cli) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "seed=0,1", "logger=wandb", f"hydra.sweep.dir={sweep}", *DDP_OVERRIDES)
    assert proc.returncode == 0, _tail(proc)
    # exactly the sweep's two jobs: no re-launched sweep, no run dirs in the single-run pattern
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    assert not (tmp_path / "logs").exists(), list((tmp_path / "logs").rglob("*"))[:20]
    assert proc.stdout.count("Launching 2 jobs") + proc.stderr.count("Launching 2 jobs") == 1
    for seed in (0, 1):
        _check_job_dir(sweep / str(seed), seed)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_slurm_tasks_are_the_ranks_without_relaunch(tmp_path: Path, cli_env) -> None:
    """What submitit does on a node: srun starts one task per device and each runs the entry point.

    SLURM is simulated by its environment variables. Lightning's SLURMEnvironment must take the two tasks as
    the ranks (no re-launch: no train_ddp_process_*.log), and rank 0 alone writes metrics.json and W&B.
    """
    data_dir = tmp_path / "data"
    make_synthetic_coco(data_dir / "synthetic")  # built once beforehand: two tasks would race to build it
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "ghmdet.train",
        "experiment=tiny",
        f"paths.data_dir={data_dir}",
        "threads=1",
        "logger=wandb",
        f"hydra.run.dir={run_dir}",
        "trainer.precision=bf16-mixed",  # DDP and mixed precision together
        *DDP_OVERRIDES,
    ]
    slurm = {
        "SLURM_JOB_NAME": "ghmdet_test",
        "SLURM_JOB_ID": str(4000 + os.getpid() % 1000),
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    procs = [
        subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            env=cli_env(**slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank)),
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(o[-4000:] for o in outputs)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    assert not list(run_dir.glob("train_ddp_process_*.log")), "Lightning re-launched under SLURM"
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["iterations"] == 4
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    assert not list(run_dir.glob("metrics.*.json"))
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    rank0 = torch.load(run_dir / "ghm_state" / "rank0.pt")
    rank1 = torch.load(run_dir / "ghm_state" / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) and rank0[k].dtype == torch.float32 for k in rank0)
    assert json.loads((run_dir / "eval_coverage.json").read_text())["test"]["images_evaluated"] == 3
