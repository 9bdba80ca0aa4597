"""Every ablation config composes and expands to exactly the paper table's job list (no training)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import DictConfig

from ghmdet.ablation.paper import load_paper_numbers, values_match
from ghmdet.ablation.spec import AblationSpec, spec_from_config
from ghmdet.paths import CONFIG_DIR, PROJECT_ROOT
from tests.helpers.configs import compose_multirun, compose_train

TABLES = ["bins", "momentum", "cls_loss", "reg_loss", "timing"]
SEEDS = (0, 1, 2)

#: the rows of each table, in the sweep's order (the paper's tables, issue 4)
ROWS = {
    "bins": ("loss.cls.bins", ["1", "5", "10", "20", "30", "40"]),
    "momentum": ("loss.cls.momentum", ["0", "0.25", "0.5", "0.75", "0.9"]),
    "cls_loss": ("loss/cls", ["ce", "ohem", "focal", "ghmc"]),
    "reg_loss": ("loss/reg", ["smooth_l1", "asl1", "ghmr"]),
    "timing": ("ablation/method", ["ce", "ghmc_exact", "ghmc_unit", "focal"]),
}


pytestmark = pytest.mark.usefixtures("hydra_conf")


def _compose(overrides: list[str]) -> DictConfig:
    """The config one job sees (no sweeps allowed, as in a single run)."""
    return compose_train(overrides, hydra=True)


def _compose_multirun(overrides: list[str]) -> DictConfig:
    """The config of a multirun (``-m``: sweeps allowed), as the sweep's callback sees it."""
    return compose_multirun(overrides)


def _spec(table: str, *overrides: str) -> AblationSpec:
    return spec_from_config(_compose_multirun([f"+ablation={table}", *overrides]))


def _expected_dirs(table: str, seeds: tuple[int, ...]) -> list[str]:
    key, values = ROWS[table]
    return [f"{key}={v},seed={s}" for s in seeds for v in values]


def test_every_table_has_a_config() -> None:
    assert sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")) == sorted(TABLES)


@pytest.mark.parametrize("table", TABLES)
def test_embedded_sweep_expands_to_the_table_rows_times_the_seeds(table: str) -> None:
    spec = _spec(table)
    seeds = (0,) if table == "timing" else SEEDS  # timing: one seed of short runs
    assert [job.dir for job in spec.jobs] == _expected_dirs(table, seeds)
    assert spec.table == table and spec.preset == "treecrowns" and spec.row == ROWS[table][0]
    assert spec.group_keys == [ROWS[table][0]]
    assert Path(spec.sweep_dir) == PROJECT_ROOT / "outputs" / "ablation" / "treecrowns" / table
    assert Path(spec.out_dir) == PROJECT_ROOT / "experiments" / table


def test_the_embedded_ablation_is_54_training_jobs_and_4_timing_jobs() -> None:
    counts = {t: len(_spec(t).jobs) for t in TABLES}
    assert counts == {"bins": 18, "momentum": 15, "cls_loss": 12, "reg_loss": 9, "timing": 4}


def _job_config(job_overrides: tuple[str, ...]) -> DictConfig:
    return _compose(list(job_overrides))


@pytest.mark.parametrize("table", TABLES)
def test_each_job_composes_to_the_paper_setting(table: str) -> None:
    spec = _spec(table)
    for job in [j for j in spec.jobs if j.values.get("seed") == "0"]:
        cfg = _job_config(job.overrides)
        row = job.values[spec.row]
        cls, reg = cfg.loss.cls, cfg.loss.reg
        assert cfg.task_name == f"ablation_treecrowns_{table}"
        assert cfg.hydra.runtime.choices.experiment == "ablation_treecrowns"
        assert cfg.trainer.limit_val_batches == 0
        assert cfg.hydra.callbacks.ablation_tables._target_ == "ghmdet.ablation.AblationCallback"
        if table == "bins":
            assert cls._target_.endswith("GHMCLoss") and cls.bins == int(row) and cls.momentum == 0.75
            assert reg._target_.endswith("SmoothL1Loss")
        elif table == "momentum":
            assert cls._target_.endswith("GHMCLoss") and cls.bins == 10 and cls.momentum == float(row)
            assert reg._target_.endswith("SmoothL1Loss")
        elif table == "cls_loss":
            expected = {"ce": "BCELoss", "ohem": "OHEMLoss", "focal": "FocalLoss", "ghmc": "GHMCLoss"}[row]
            assert cls._target_.endswith(expected) and reg._target_.endswith("SmoothL1Loss")
            if row == "ghmc":
                assert (cls.bins, cls.momentum, cls.density) == (30, 0.75, "unit")
        elif table == "reg_loss":
            expected = {"smooth_l1": "SmoothL1Loss", "asl1": "AuthenticSmoothL1Loss", "ghmr": "GHMRLoss"}[row]
            assert reg._target_.endswith(expected) and cls._target_.endswith("GHMCLoss")
        else:
            expected = {
                "ce": ("BCELoss", None),
                "ghmc_exact": ("GHMCLoss", "exact"),
                "ghmc_unit": ("GHMCLoss", "unit"),
                "focal": ("FocalLoss", None),
            }[row]
            assert cls._target_.endswith(expected[0]) and cls.get("density") == expected[1]
            assert reg._target_.endswith("SmoothL1Loss")
            assert cfg.trainer.max_steps == 60 and cfg.trainer.limit_test_batches == 0
        if table != "timing":
            assert cfg.trainer.max_steps == 250
        # the lr the committed tables ran with, whatever the default recipe's lr is now
        assert cfg.optimizer.lr == pytest.approx(2e-4)
        assert cfg.data.rot90_prob == 0.0 and cfg.data.photometric == 0.0 and cfg.model.tta is None


@pytest.mark.parametrize("table", TABLES)
def test_coco_preset_runs_the_paper_recipe_with_one_seed(table: str) -> None:
    spec = _spec(table, "ablation/preset=coco")
    assert [job.dir for job in spec.jobs] == _expected_dirs(table, (0,))
    assert Path(spec.sweep_dir) == PROJECT_ROOT / "outputs" / "ablation" / "coco" / table
    cfg = _job_config(spec.jobs[0].overrides)
    assert cfg.hydra.runtime.choices.experiment == "paper_r50_1x"
    assert cfg.hydra.runtime.choices.data == "coco" and cfg.hydra.runtime.choices.model == "retinanet_r50"
    assert cfg.task_name == f"ablation_coco_{table}" and cfg.trainer.limit_val_batches == 0
    # the table's losses win over the recipe's GHM-C + GHM-R (the paper's GHM-C tables use SL1)
    if table in ("bins", "momentum", "cls_loss", "timing"):
        assert cfg.loss.reg._target_.endswith("SmoothL1Loss")
    if table == "timing":
        assert cfg.trainer.max_steps == 60 and cfg.trainer.limit_test_batches == 0


@pytest.mark.parametrize(
    "launcher", sorted(p.stem for p in (CONFIG_DIR / "hydra" / "launcher").glob("*.yaml"))
)
def test_a_launcher_override_composes_and_does_not_move_the_jobs(launcher: str) -> None:
    spec = _spec("cls_loss", "ablation/preset=coco", f"hydra/launcher={launcher}")
    assert [job.dir for job in spec.jobs] == _expected_dirs("cls_loss", (0,))


def test_job_dirs_are_stable_across_reruns_force_and_log_dir() -> None:
    plain = [j.dir for j in _spec("bins").jobs]
    force = _spec("bins", "skip_completed=false", "resume=false", "ablation/preset=treecrowns", "logger=csv")
    assert [j.dir for j in force.jobs] == plain
    moved = _spec("bins", "paths.log_dir=/elsewhere")
    assert [j.dir for j in moved.jobs] == plain and moved.sweep_dir == "/elsewhere/ablation/treecrowns/bins"


def test_seeds_and_extra_overrides_change_the_job_list() -> None:
    spec = _spec("reg_loss", "seed=3,4")
    assert [j.dir for j in spec.jobs] == _expected_dirs("reg_loss", (3, 4))
    # an extra override names the jobs it changes, so they never reuse the default jobs' dirs
    spec = _spec("reg_loss", "seed=0", "trainer.max_steps=10")
    assert [j.dir for j in spec.jobs] == [
        f"loss/reg={v},seed=0,trainer.max_steps=10" for v in ("smooth_l1", "asl1", "ghmr")
    ]
    # a second swept key becomes a second row column
    spec = _spec("cls_loss", "seed=0", "model.stats_scope=per_level,batch")
    assert spec.group_keys == ["loss/cls", "model.stats_scope"] and len(spec.jobs) == 8


def test_no_two_sweeps_share_a_dir() -> None:
    dirs = [Path(_spec(t, f"ablation/preset={p}").sweep_dir) for t in TABLES for p in ("treecrowns", "coco")]
    assert len(set(dirs)) == len(dirs)
    for table in TABLES:
        jobs = [j.dir for j in _spec(table).jobs]
        assert len(set(jobs)) == len(jobs)


@pytest.mark.parametrize("table", TABLES)
def test_every_row_of_every_sweep_has_its_paper_entry(table: str) -> None:
    paper = load_paper_numbers().get(table)
    assert paper is not None
    _, values = ROWS[table]
    assert [str(row.value) for row in paper.rows] == values
    assert all(values_match(v, row.value) for v, row in zip(values, paper.rows))


def test_paper_numbers_match_the_paper() -> None:
    paper = load_paper_numbers()
    assert paper.get("bins").row_for("30").metrics == {
        "AP": 35.8, "AP50": 55.5, "AP75": 38.1, "APS": 19.6, "APM": 39.6, "APL": 46.7,
    }  # fmt: skip
    assert paper.get("momentum").row_for("0.90").status == "diverged"
    assert paper.get("momentum").row_for("0.75").metrics == {"AP": 34.6}
    assert paper.get("cls_loss").row_for("focal").metrics == {"AP": 35.6, "AP50": 55.6, "AP75": 38.2}
    assert paper.get("reg_loss").row_for("ghmr").metrics["AP90"] == 13.1
    assert paper.get("timing").row_for("ghmc_exact").metrics == {"seconds_per_iteration": 13.675}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_ablation_passes_its_variables_to_the_multirun() -> None:
    out = subprocess.run(
        ["make", "-n", "ablation", "TABLE=bins timing", "PRESET=coco", "SEEDS=0,1", "FORCE=1",
         "LAUNCHER=slurm", "ARGS=data.root=/data/coco"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    command = " ".join(out.replace("\\\n", " ").split())
    assert "for table in bins timing;" in command
    assert (
        "-m ghmdet.train -m +ablation=$table ablation/preset=coco seed=0,1 skip_completed=false resume=false "
        "hydra/launcher=slurm data.root=/data/coco" in command
    )
    default = " ".join(
        subprocess.run(
            ["make", "-n", "ablation"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
        .stdout.replace("\\\n", " ")
        .split()
    )
    assert "for table in bins momentum cls_loss reg_loss timing;" in default
    assert "+ablation=$table ablation/preset=digits ||" in default
    assert "skip_completed" not in default and "hydra/launcher" not in default
