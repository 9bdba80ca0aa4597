"""notebooks/gradient_norms: the jupytext pair is in sync, and the notebook runs headless on the tiny preset,
training its own two runs and writing the figures (W&B off here: its logging is tested on its own in
test_analysis_wandb.py, and each W&B start costs seconds)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jupytext
import pytest

from ghmdet.paths import PROJECT_ROOT
from tests.helpers.configs import compose_train

NOTEBOOK = PROJECT_ROOT / "notebooks" / "gradient_norms.ipynb"
SOURCE = PROJECT_ROOT / "notebooks" / "gradient_norms.py"
FIGURES = {
    "fig1_g_distribution",
    "fig1_total_contribution",
    "fig3_reweighted_norms",
    "fig4_gr_distribution",
    "fig5_regression_gradients",
}
PARAMETERS = {
    "ce_checkpoint",
    "ghm_checkpoint",
    "benchmark",
    "output_dir",
    "work_dir",
    "train_overrides",
    "steps",
    "max_images",
    "wandb_mode",
}


def cells(path: Path) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in jupytext.read(path).cells]


def test_ipynb_is_in_sync_with_its_py_and_has_no_outputs() -> None:
    assert cells(NOTEBOOK) == cells(SOURCE), "run `jupytext --sync notebooks/gradient_norms.py`"
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(tagged) == 1
    assigned = {
        line.split("=")[0].strip() for line in "".join(tagged[0]["source"]).splitlines() if "=" in line
    }
    assert assigned >= PARAMETERS


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_runs_on_the_tiny_preset_and_writes_the_figures(tmp_path: Path) -> None:
    papermill = pytest.importorskip("papermill")
    figures_dir, work_dir = tmp_path / "figures", tmp_path / "work"
    started = time.perf_counter()
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        parameters={
            "output_dir": str(figures_dir),
            "work_dir": str(work_dir),
            "train_overrides": ["experiment=tiny", f"paths.data_dir={tmp_path / 'data'}", "threads=1"],
            "steps": 4,
            "max_images": 4,
            "wandb_mode": "disabled",
        },
        kernel_name="python3",
        progress_bar=False,
    )
    seconds = time.perf_counter() - started
    print(f"notebook on the tiny preset: {seconds:.1f} s")

    assert {p.stem for p in figures_dir.glob("*.png")} == FIGURES
    summary = json.loads((figures_dir / "summary.json").read_text())
    assert set(summary["checkpoints"]) == {"ce", "ghm"}
    models = list(summary["models"])
    assert "BCELoss + SmoothL1Loss" in models[0] and "GHMCLoss + GHMRLoss" in models[1]
    assert all(m["pairs"] > 0 and m["images"] == 4 for m in summary["models"].values())
    assert {
        (work_dir / f"{run}_4steps" / "checkpoints" / "last.ckpt").is_file() for run in ("ce", "ghm")
    } == {True}
    assert not (work_dir / "wandb").exists()


@pytest.mark.parametrize("benchmark", ["treecrowns", "digits"])
def test_the_notebook_self_trains_on_either_benchmark(benchmark: str) -> None:
    from ghmdet.analysis import benchmark_run_overrides, short_run_overrides

    overrides = [*benchmark_run_overrides(benchmark), *short_run_overrides("ghm", 5, wandb=False)]
    cfg = compose_train(overrides)
    assert cfg.data.prepare == benchmark and cfg.trainer.max_steps == 5
    assert cfg.callbacks.gradient_norms.only_ghm is False
    with pytest.raises(ValueError, match="benchmark must be one of"):
        benchmark_run_overrides("coco")
