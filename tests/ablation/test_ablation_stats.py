"""The table's statistics: paired-bootstrap columns against the reference row and the convergence flag."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from ghmdet.ablation import main
from ghmdet.ablation.aggregate import build_table
from ghmdet.ablation.paper import load_paper_numbers
from ghmdet.ablation.render import csv_text, latex, markdown, runs_csv_text
from tests.ablation.coco_fixtures import detection_fixture
from tests.ablation.test_ablation_tables import _completed, _spec, _write


def _history(*points: tuple[int, float]) -> list[dict[str, float]]:
    return [{"step": step, "AP": ap, "AP50": ap} for step, ap in points]


@pytest.fixture
def bins_sweep(tmp_path: Path):
    """M = 10 (same detections as the reference, val AP still rising), 30 (reference), 40 (better, no
    val history); seeds 0 and 1."""
    spec = _spec(tmp_path, "bins", {"seed": "0,1", "loss.cls.bins": "10,30,40"}, "loss.cls.bins", ["AP"])
    spec.reference, spec.n_boot = "30", 200
    gt, dets = detection_fixture(seed=4, n_images=30)
    _, other = detection_fixture(seed=5, n_images=30)
    ann_file = tmp_path / "instances_test.json"
    ann_file.write_text(json.dumps(gt))
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    detections = {"10": (dets, other), "30": (dets, other), "40": (dets + perfect, other + perfect)}
    histories = {
        "10": _history((50, 0.1), (150, 0.2), (187, 0.25), (200, 0.9), (250, 0.32)),
        "30": _history((100, 0.3), (187, 0.31), (250, 0.312)),
        "40": None,
    }
    for m, per_seed in detections.items():
        for seed, found in enumerate(per_seed):
            job = f"loss.cls.bins={m},seed={seed}"
            (Path(spec.sweep_dir) / job).mkdir(parents=True)
            (Path(spec.sweep_dir) / job / "detections_test.json").write_text(json.dumps(found))
            # the recorded test AP: a small seed spread (the convergence threshold is then 1 AP point)
            record: dict[str, Any] = _completed(0.31 + 0.002 * seed, 0.5)
            record["detections_test"] = {
                "file": "detections_test.json",
                "metrics": "metrics",
                "ann_file": str(ann_file),
                "image_ids": [i["id"] for i in gt["images"]],
            }
            if histories[m] is not None:
                record["val_history"] = histories[m]
            _write(spec, job, record)
    return spec


def test_bootstrap_columns_and_convergence_flags_in_every_format(bins_sweep) -> None:
    table = build_table(bins_sweep, load_paper_numbers())
    text = markdown(table)
    assert "| M | runs | AP | AP paper | Δ AP | Δ AP vs 30 [95 % CI] | status |" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    # the same detections as the reference: exactly 0 in every replicate
    assert "| +0.0 [+0.0, +0.0] | completed |" in lines["| 10 †"]
    assert "| ref | completed |" in lines["| 30"]
    assert lines["| 40"].endswith("] * | completed |")
    assert "† M = 10 not converged: val AP rose +7.0 (25.0 at 75 % -> 32.0 at 100 % of the iterations" in text
    assert "convergence n/a (no val_history) for M = 40" in text
    assert "200 replicates" in text and "* = the interval excludes 0" in text

    rows = {r["loss.cls.bins"]: r for r in csv.DictReader(io.StringIO(csv_text(table)))}
    assert rows["10"]["AP_vs_ref"] == "0" and rows["10"]["AP_vs_ref_lo"] == "0"
    assert rows["10"]["AP_vs_ref_excludes_0"] == "false" and rows["40"]["AP_vs_ref_excludes_0"] == "true"
    assert float(rows["40"]["AP_vs_ref_lo"]) > 0 and rows["40"]["vs_ref_seeds"] == "2"
    assert rows["30"]["is_reference"] == "true" and rows["30"]["AP_vs_ref"] == "0"
    # the validation at or nearest below 75 % of 250 iterations is step 187, not the higher step 200
    assert (rows["10"]["val_AP_75"], rows["10"]["val_AP_100"], rows["10"]["convergence"]) == (
        "25",
        "32",
        "not converged",
    )
    assert rows["30"]["convergence"] == "converged" and rows["40"]["convergence"] == "n/a"
    runs = {(r["loss.cls.bins"], r["seed"]): r for r in csv.DictReader(io.StringIO(runs_csv_text(table)))}
    assert (runs["10", "1"]["val_AP_75"], runs["10", "1"]["val_AP_100"]) == ("25", "32")
    assert runs["40", "0"]["val_AP_75"] == ""

    tex = latex(table)
    assert "10 $^\\dagger$ & 2/2" in tex and "$+0.0$ [$+0.0$, $+0.0$]" in tex
    assert "^{*}$ [$" in tex and "& ref &" in tex


def test_a_rise_within_the_seed_spread_is_converged(bins_sweep) -> None:
    # seed std of test AP larger than the 7-point rise: not flagged
    for seed, ap in ((0, 0.10), (1, 0.30)):
        path = Path(bins_sweep.sweep_dir) / f"loss.cls.bins=10,seed={seed}" / "metrics.json"
        record = json.loads(path.read_text())
        record["metrics"]["AP"] = ap
        path.write_text(json.dumps(record))
    row = build_table(bins_sweep, load_paper_numbers()).rows[0]
    assert row.convergence.threshold == pytest.approx(14.142, abs=1e-3)
    assert row.convergence.status == "converged"


def test_runs_without_detections_say_why_there_is_no_interval(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "bins", {"seed": "0", "loss.cls.bins": "10,30"}, "loss.cls.bins", ["AP"])
    spec.reference = "30"
    for m in ("10", "30"):
        _write(spec, f"loss.cls.bins={m},seed=0", _completed(0.3, 0.5))
    table = build_table(spec, load_paper_numbers())
    text = markdown(table)
    assert "vs 30" not in text.splitlines()[2]  # no bootstrap column
    assert "- bootstrap: n/a: no completed run has a detections_test file" in text
    missing = _spec(tmp_path, "bins", {"seed": "0", "loss.cls.bins": "10,20"}, "loss.cls.bins", ["AP"])
    missing.reference = "30"
    assert "- bootstrap: the reference row loss.cls.bins = 30 is not in this sweep" in markdown(
        build_table(missing, load_paper_numbers())
    )


def test_ghmdet_tables_takes_the_replicates_and_names_single_pass_intervals(
    bins_sweep, tmp_path: Path
) -> None:
    path = Path(bins_sweep.sweep_dir) / "loss.cls.bins=30,seed=0" / "metrics.json"
    record = json.loads(path.read_text())
    record["detections_test"]["metrics"] = "metrics_single_pass"  # a TTA run: the file is its single pass
    path.write_text(json.dumps(record))
    bins_sweep.save()
    out = tmp_path / "rebuilt"
    assert main([bins_sweep.sweep_dir, "--no-wandb", "--n-boot", "50", "--out-dir", str(out)]) == 0
    text = (out / "bins" / "treecrowns.md").read_text()
    assert "(50 replicates," in text
    assert (out / "bins" / "treecrowns.png").stat().st_size > 0  # the plot, with its markers, was drawn
    assert "- bootstrap: the intervals are of the single pass; the mean columns are with TTA" in text
    assert main([bins_sweep.sweep_dir, "--no-wandb", "--n-boot", "0", "--out-dir", str(out)]) == 1
