"""A run dir holds one configuration's run: resuming or skipping it with a config that would change the result
is refused with one line naming each key and both values (nothing changed there); differences that cannot
change the result (threads, loggers, paths, ...) are allowed, and recorded when the run resumes."""

from __future__ import annotations

import fnmatch
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from ghmdet.ablation.spec import JOB_DIR_IGNORE
from ghmdet.paths import CONFIG_DIR
from ghmdet.run.config_compare import RESULT_NEUTRAL_KEYS, compare_run_configs
from ghmdet.run.redaction import REDACTED
from tests.reliability.reliability_helpers import read_record

STARTED = {
    "seed": 0,
    "threads": 1,
    "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.0005},
    "loss": {"cls": {"_target_": "ghmdet.losses.GHMCLoss", "bins": 30}},
    "data": {"root": "/old/data/synthetic", "num_workers": 0},
    "paths": {"data_dir": "/old/data", "output_dir": "/runs/a"},
    "logger": {"csv": {"save_dir": "/runs/a"}},
    "ablation": {"table": "bins", "out_dir": "/old/experiments/bins"},
    "notes": REDACTED,
}


def changed(**updates: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(STARTED))
    for dotted, value in updates.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is ...:
            node.pop(leaf)
        else:
            node[leaf] = value
    return config


def keys(changes: list[Any]) -> list[str]:
    return [c.key for c in changes]


def test_result_changing_keys_are_reported_with_both_values() -> None:
    changes, allowed = compare_run_configs(STARTED, changed(optimizer__lr=0.01, seed=1))
    assert keys(changes) == ["optimizer.lr", "seed"] and allowed == []
    assert changes[0].describe() == "optimizer.lr = 0.0005 there, 0.01 now"


def test_another_loss_is_one_change_per_key_and_a_missing_subtree_is_one_change() -> None:
    other = changed(loss__cls={"_target_": "ghmdet.losses.FocalLoss", "gamma": 2.0})
    changes, _ = compare_run_configs(STARTED, other)
    assert keys(changes) == ["loss.cls._target_", "loss.cls.bins", "loss.cls.gamma"]
    assert changes[1].describe() == "loss.cls.bins = 30 there, <absent> now"
    changes, _ = compare_run_configs(STARTED, changed(callbacks={"fault": {"step": 3}}))
    assert keys(changes) == ["callbacks"]  # an unknown callback can change the result


def test_execution_logging_and_location_keys_are_allowed() -> None:
    now = changed(
        threads=2,
        data__num_workers=2,
        logger__wandb={"mode": "offline"},
        ablation__out_dir="/new/experiments/bins",
        paths__data_dir="/new/place",
        data__root="/new/place/synthetic",  # follows paths.data_dir: moved, not changed
    )
    changes, allowed = compare_run_configs(STARTED, now)
    assert changes == []
    assert keys(allowed) == [
        "ablation.out_dir",
        "data.num_workers",
        "data.root",
        "logger.wandb",
        "paths.data_dir",
        "threads",
    ]


def test_other_data_under_the_same_paths_is_a_change() -> None:
    changes, _ = compare_run_configs(STARTED, changed(data__root="/old/data/treecrowns"))
    assert keys(changes) == ["data.root"]


def test_what_an_ablation_job_dir_hash_ignores_is_result_neutral_for_resume_and_skip() -> None:
    # Two lists on purpose: the job-dir hash ignores fewer keys than resume and skip allow (loader workers,
    # progress bars, callbacks are hashed), and widening it would move every existing shared job dir. But a
    # key left out of the hash must never change a result either.
    defaults = OmegaConf.load(CONFIG_DIR / "ablation" / "sweep" / "default.yaml").ablation.job_dir_ignore
    ignored = [key for key in [*JOB_DIR_IGNORE, *defaults] if key != "hydra"]  # the hydra node: not recorded
    assert ignored
    for key in ignored:
        assert any(fnmatch.fnmatchcase(key, pattern) for pattern in RESULT_NEUTRAL_KEYS), key


def test_a_redacted_secret_is_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-" + "x" * 20
    monkeypatch.setenv("WANDB_API_KEY", secret)
    # The record holds the redacted value; the current config the secret itself: the same value.
    assert compare_run_configs(STARTED, changed(notes=secret)) == ([], [])
    changes, _ = compare_run_configs(STARTED, changed(notes="another note"))
    assert keys(changes) == ["notes"] and secret not in changes[0].describe()


@pytest.mark.slow
def test_cli_refuses_a_changed_result_and_allows_the_rest(
    tmp_path: Path, data_dir: Path, train: Callable[..., Any]
) -> None:
    run_dir = tmp_path / "run"
    proc = train(run_dir, "trainer.max_steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = (run_dir / "metrics.json").read_bytes()
    checkpoint = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    def refused(*overrides: str, doing: str) -> str:
        proc = train(run_dir, "trainer.max_steps=3", *overrides, timeout=120)
        assert proc.returncode == 2, proc.stderr[-3000:]
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("ghmdet-train: error: ") and "Traceback" not in proc.stderr, proc.stderr
        assert f"so {doing} it would record what it did not do" in lines[-1]
        assert "resume=false skip_completed=false" in lines[-1]  # how to start afresh
        # nothing changed in the run dir: its record and checkpoint are the finished run's
        assert (run_dir / "metrics.json").read_bytes() == before
        assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == checkpoint
        assert not list(run_dir.glob("metrics.*.json"))
        return lines[-1]

    # skipping the completed run would credit its result to the new learning rate
    assert "optimizer.lr = 0.0005 there, 0.01 now" in refused("optimizer.lr=0.01", doing="skipping")
    # so would resuming its checkpoint (it trains on with the old one, or not at all)
    line = refused("skip_completed=false", "optimizer.lr=0.01", doing="resuming")
    assert "optimizer.lr = 0.0005 there, 0.01 now" in line
    # another loss: the same line, not "Unexpected key(s) in state_dict"
    line = refused("skip_completed=false", "loss/cls=focal", doing="resuming")
    assert 'loss.cls._target_ = "ghmdet.losses.GHMCLoss" there, "ghmdet.losses.FocalLoss" now' in line
    # other data: another data set under the same data dir
    shutil.copytree(data_dir / "synthetic", tmp_path / "data" / "other")
    line = refused(
        f"paths.data_dir={tmp_path / 'data'}", "data.root=${paths.data_dir}/other", doing="skipping"
    )
    assert "data.root" in line

    # threads, another logger, the data set moved elsewhere: still the same run, skipped
    moved = tmp_path / "moved"
    shutil.copytree(data_dir, moved)
    proc = train(run_dir, "trainer.max_steps=3", "threads=2", "logger=wandb", f"paths.data_dir={moved}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "metrics.json").read_bytes() == before
    # ... and resumed, with the allowed differences recorded
    proc = train(
        run_dir, "trainer.max_steps=3", "skip_completed=false", "threads=2", f"paths.data_dir={moved}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "completed" and record["resumed_from_step"] == 3
    changes = {c["key"]: (c["was"], c["now"]) for c in record["config_changes"]}
    assert changes["threads"] == (1, 2)
    assert changes["paths.data_dir"] == (str(data_dir), str(moved))
    assert changes["data.root"] == (f"{data_dir}/synthetic", f"{moved}/synthetic")
