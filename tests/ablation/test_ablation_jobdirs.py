"""Shared job dirs of a versioned preset: one dir per computed configuration, whichever table runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ghmdet.ablation.spec import AblationSpec, SpecError, config_hash, preset_dir, spec_from_config
from ghmdet.paths import PROJECT_ROOT
from tests.helpers.configs import compose_multirun

VERSIONED = "ablation.preset_version=1"


pytestmark = pytest.mark.usefixtures("hydra_conf")


def _spec(table: str, *overrides: str) -> AblationSpec:
    return spec_from_config(compose_multirun([f"+ablation={table}", *overrides]))


def _dirs(spec: AblationSpec, seed: str = "0") -> dict[str, str]:
    """Row value -> job dir of ``seed``."""
    return {job.values[spec.row]: job.dir for job in spec.jobs if job.values.get("seed") == seed}


def test_a_configuration_two_tables_run_resolves_to_one_dir() -> None:
    # a few rows of each table (composing every job's config takes a while)
    bins = _dirs(_spec("bins", VERSIONED, "seed=0", "loss.cls.bins=10,20,30"))
    cls_loss = _dirs(_spec("cls_loss", VERSIONED, "seed=0", "loss/cls=ce,ghmc"))
    reg_loss = _dirs(_spec("reg_loss", VERSIONED, "seed=0", "loss/reg=smooth_l1,ghmr"))
    momentum = _dirs(_spec("momentum", VERSIONED, "seed=0", "loss.cls.momentum=0.5,0.75"))
    # GHM-C M = 30, alpha 0.75, SL1: the bins reference, cls_loss' GHM-C row and reg_loss' SL1 row
    assert bins["30"] == cls_loss["ghmc"] == reg_loss["smooth_l1"]
    assert bins["30"].startswith("../jobs/ghmc-bins30-momentum0.75-densityunit_smooth_l1_seed0_")
    assert bins["10"] == momentum["0.75"]  # GHM-C M = 10, alpha 0.75
    assert len(set(bins.values())) == 3 and cls_loss["ce"].startswith("../jobs/ce_smooth_l1_seed0_")
    assert len({*bins.values(), *cls_loss.values(), *reg_loss.values(), *momentum.values()}) == 6
    # the timing table's GHM-C unit-region run is shorter: another computation, another dir
    timing = _dirs(_spec("timing", VERSIONED, "ablation/method=ghmc_unit"))
    assert timing["ghmc_unit"] != bins["30"] and timing["ghmc_unit"].startswith("../jobs/ghmc-bins30-")


def test_versioned_sweeps_share_one_tree_and_keep_an_index_per_table(tmp_path: Path) -> None:
    spec = _spec("bins", VERSIONED, f"paths.log_dir={tmp_path}", "loss.cls.bins=10,30")
    assert Path(spec.sweep_dir) == tmp_path / "ablation" / "treecrowns-v1" / "bins"
    shared = {spec.job_dir(job).resolve().parent for job in spec.jobs}
    assert shared == {tmp_path / "ablation" / "treecrowns-v1" / "jobs"}
    # a new preset version never reuses an older version's jobs
    v2 = _spec("bins", "ablation.preset_version=2", "loss.cls.bins=10", "seed=0")
    assert Path(v2.sweep_dir).parent.name == "treecrowns-v2"
    # unversioned presets keep the per-table override_dirname layout
    legacy = _spec("bins", "loss.cls.bins=10", "seed=0")
    assert Path(legacy.sweep_dir) == PROJECT_ROOT / "outputs" / "ablation" / "treecrowns" / "bins"
    assert [job.dir for job in legacy.jobs] == ["loss.cls.bins=10,seed=0"]


def test_the_hash_ignores_where_and_how_a_job_runs_but_not_what_it_computes(tmp_path: Path) -> None:
    rows = "loss.cls.bins=10,30"
    plain = _dirs(_spec("bins", VERSIONED, "seed=0", rows))
    elsewhere = _dirs(
        _spec(
            "bins", VERSIONED, "seed=0", rows, f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path}/d",
            "threads=1", "logger=csv", "skip_completed=false", "resume=false", "ablation.n_boot=10",
        )
    )  # fmt: skip
    assert elsewhere == plain
    longer = _dirs(_spec("bins", VERSIONED, "seed=0", rows, "trainer.max_steps=300"))
    assert all(longer[m] != plain[m] for m in plain)
    seed1 = _dirs(_spec("bins", VERSIONED, "seed=1", rows), seed="1")
    assert seed1["30"].split("_seed")[0] == plain["30"].split("_seed")[0] and seed1["30"] != plain["30"]


def test_hash_of_a_config_and_bad_versions() -> None:
    a = OmegaConf.create({"seed": 0, "paths": {"data_dir": "/x"}, "data": {"root": "${paths.data_dir}/t"}})
    b = OmegaConf.create({"seed": 0, "paths": {"data_dir": "/y"}, "data": {"root": "${paths.data_dir}/t"}})
    assert config_hash(a) == config_hash(b) != config_hash(OmegaConf.merge(a, {"data": {"root": "/z"}}))
    assert preset_dir("digits", None) == "digits" and preset_dir("digits", 2) == "digits-v2"
    with pytest.raises(SpecError, match=r"ablation\.preset_version must be letters"):
        preset_dir("digits", "1/2")


def test_the_digit_benchmark_preset_shares_rows_in_its_versioned_tree() -> None:
    digits = "ablation/preset=digits"
    bins = _dirs(_spec("bins", digits, "seed=1", "loss.cls.bins=30"), seed="1")
    cls_loss = _dirs(_spec("cls_loss", digits, "seed=1", "loss/cls=ghmc"), seed="1")
    reg_loss = _dirs(_spec("reg_loss", digits, "seed=1", "loss/reg=smooth_l1"), seed="1")
    assert bins["30"] == cls_loss["ghmc"] == reg_loss["smooth_l1"]
    spec = _spec("bins", digits, "seed=1", "loss.cls.bins=30")
    assert Path(spec.sweep_dir).parent.name == "digits-v2" and spec.reference == "30"
