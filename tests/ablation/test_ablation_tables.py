"""The aggregator on hand-made sweeps: completed, failed, diverged, unreadable and missing jobs."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from ghmdet.ablation import AblationCallback, main
from ghmdet.ablation.aggregate import build_table
from ghmdet.ablation.paper import PaperNumbersError, load_paper_numbers
from ghmdet.ablation.render import csv_text, latex, markdown
from ghmdet.ablation.report import write_report
from ghmdet.ablation.spec import AblationSpec, expand_jobs

COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: expected outputs; {{sweep}} and {{commit}} stand for the fixture's sweep dir and commit
DATA = Path(__file__).parent / "data"


def _record(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, "git_commit": COMMIT, "started": "2026-11-24T10:00:00+0000", **fields}


def _completed(ap: float, ap50: float, spi: float = 0.5) -> dict[str, Any]:
    return _record(
        "completed",
        metrics={"AP": ap, "AP50": ap50, "AP75": 0.1, "APL": -1.0},
        seconds_per_iteration=spi,
        iterations=250,
        wall_seconds=140.0,
    )


def _spec(tmp_path: Path, table: str, params: dict[str, str], row: str, metrics: list[str], **kw: Any):
    sweep = tmp_path / "logs" / "ablation" / "treecrowns" / table
    jobs, swept = expand_jobs(params, [f"+ablation={table}"], exclude_keys=["ablation"])
    return AblationSpec(
        table=table,
        preset="treecrowns",
        row=row,
        metrics=metrics,
        sweep_dir=str(sweep),
        out_dir=str(tmp_path / "experiments" / table),
        jobs=jobs,
        swept=swept,
        data_description="embedded test preset",
        task_name=f"ablation_treecrowns_{table}",
        command=f"ghmdet-train -m +ablation={table}",
        wandb=False,
        **kw,
    )


def _write(spec: AblationSpec, job_dir: str, payload: dict[str, Any] | str) -> Path:
    path = Path(spec.sweep_dir) / job_dir / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


@pytest.fixture
def momentum_sweep(tmp_path: Path) -> AblationSpec:
    """alpha 0.5: 3 completed; 0.75: completed, failed, unreadable; 0.9: diverged twice, one never ran."""
    spec = _spec(
        tmp_path, "momentum", {"seed": "0,1,2", "loss.cls.momentum": "0.5,0.75,0.9"}, "loss.cls.momentum",
        ["AP", "AP50"],
    )  # fmt: skip
    for seed, (ap, ap50) in enumerate([(0.30, 0.50), (0.32, 0.52), (0.34, 0.54)]):
        _write(spec, f"loss.cls.momentum=0.5,seed={seed}", _completed(ap, ap50))
    _write(spec, "loss.cls.momentum=0.75,seed=0", _completed(0.351, 0.6))
    _write(
        spec, "loss.cls.momentum=0.75,seed=1",
        _record("failed", reason="RuntimeError: boom\nsecond line", traceback="...", metrics={}),
    )  # fmt: skip
    _write(spec, "loss.cls.momentum=0.75,seed=2", "not json")
    for seed in (0, 1):
        reason = f"non-finite training state at step {40 + seed}: loss nan"
        _write(spec, f"loss.cls.momentum=0.9,seed={seed}", _record("diverged", reason=reason, metrics={}))
    return spec


def test_markdown_of_a_sweep_with_failed_diverged_unreadable_and_missing_jobs(
    momentum_sweep: AblationSpec,
) -> None:
    sweep = Path(momentum_sweep.sweep_dir)
    table = build_table(momentum_sweep, load_paper_numbers())
    expected = (DATA / "momentum_treecrowns.md").read_text()
    expected = expected.replace("{{sweep}}", str(sweep)).replace("{{commit}}", COMMIT)
    assert markdown(table) == expected


def test_csv_and_latex_carry_the_same_numbers(momentum_sweep: AblationSpec) -> None:
    table = build_table(momentum_sweep, load_paper_numbers())
    rows = list(csv.DictReader(io.StringIO(csv_text(table))))
    assert [r["loss.cls.momentum"] for r in rows] == ["0.5", "0.75", "0.9"]
    assert rows[0]["AP"] == "32" and rows[0]["AP_std"] == "2" and rows[0]["AP_n"] == "3"
    assert rows[0]["AP_paper"] == "34.4" and rows[0]["AP_delta"] == "-2.4"
    assert rows[1]["status"] == "1 completed, 1 failed, 1 unreadable" and rows[1]["AP_std"] == ""
    assert rows[2]["AP"] == "" and rows[2]["paper_status"] == "diverged" and rows[2]["completed"] == "0"
    tex = latex(table)
    assert "\\begin{tabular}{lrrrrrrrl}" in tex and "\\toprule" in tex
    assert "$\\alpha$ & runs & AP & AP paper & $\\Delta$ AP" in tex
    assert "0.5 & 3/3 & $32.0 \\pm 2.0$ & $34.4$ & $-2.4$ & $52.0 \\pm 2.0$ & -- & -- & completed \\\\" in tex
    assert "0.9 & 0/3 & -- & diverged & -- & -- & diverged & -- & 2 diverged, 1 missing \\\\" in tex


def test_report_writes_every_file_and_a_png(momentum_sweep: AblationSpec, tmp_path: Path) -> None:
    report = write_report(momentum_sweep, paper_numbers=load_paper_numbers())
    out = tmp_path / "experiments" / "momentum"
    assert report.markdown == out / "treecrowns.md" and report.latex == out / "treecrowns.tex"
    assert report.csv.is_file() and report.runs_csv.is_file() and report.wandb_run is None
    assert report.plot is not None and report.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = list(csv.DictReader(io.StringIO(report.runs_csv.read_text())))
    assert len(runs) == 9 and {r["status"] for r in runs} == {
        "completed", "failed", "unreadable", "diverged", "missing",
    }  # fmt: skip


def test_timing_table_shows_each_method_relative_to_ce(tmp_path: Path) -> None:
    params = {"seed": "0", "ablation/method": "ce,ghmc_exact,ghmc_unit,focal"}
    spec = _spec(tmp_path, "timing", params, "ablation/method", ["seconds_per_iteration"], relative_to="ce")
    for method, spi in [("ce", 0.5), ("ghmc_exact", 0.6), ("ghmc_unit", 0.55), ("focal", 0.52)]:
        _write(spec, f"ablation/method={method},seed=0", _completed(0.0, 0.0, spi))
    text = markdown(build_table(spec, load_paper_numbers()))
    head = "| method | runs | s / iter | s / iter paper | Δ s / iter | × CE | × CE paper | Δ × CE | status |"  # noqa: RUF001
    assert head in text
    assert "| CE | 1/1 | 0.500 | 0.566 | -0.066 | 1.00 | 1.00 | +0.00 | completed |" in text
    assert (
        "| GHM-C standard (exact density) | 1/1 | 0.600 | 13.675 | -13.075 | 1.20 | 24.16 | -22.96 |" in text
    )
    assert "| GHM-C unit regions (M = 30) | 1/1 | 0.550 | 0.824 | -0.274 | 1.10 | 1.46 | -0.36 |" in text
    assert "| FL | 1/1 | 0.520 | — | — | 1.04 | — | — | completed |" in text
    assert "- paper, method = FL: not in the paper's time table" in text


def test_a_table_without_paper_numbers_still_renders(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "my_table", {"seed": "0", "loss.cls.bins": "7"}, "loss.cls.bins", ["AP"])
    _write(spec, "loss.cls.bins=7,seed=0", _completed(0.25, 0.5))
    text = markdown(build_table(spec, load_paper_numbers()))
    assert "| loss.cls.bins | runs | AP | AP paper | Δ AP | status |" in text
    assert "| 7 | 1/1 | 25.0 | — | — | completed |" in text and "The paper has no such table." in text


def test_a_completed_record_without_a_requested_metric_is_named(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "reg_loss", {"seed": "0", "loss/reg": "ghmr"}, "loss/reg", ["AP", "AP90"])
    _write(spec, "loss/reg=ghmr,seed=0", _completed(0.3, 0.5))  # no AP90 in it
    text = markdown(build_table(spec, load_paper_numbers()))
    assert "| GHM-R | 1/1 | 30.0 | 36.4 | -6.4 | — | 13.1 | — | completed |" in text
    assert "reg_loss/loss/reg=ghmr,seed=0/metrics.json: completed, but metrics.AP90 is None" in text


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("[1, 2]", "expected a JSON object, got a JSON list"),
        ('{"status": "done"}', "field 'status' is 'done', expected one of"),
        ('{"status": "completed", "metrics": [0.3]}', "field 'metrics' is not an object"),
    ],
)
def test_malformed_metrics_files_are_unreadable_and_named(tmp_path: Path, payload: str, reason: str) -> None:
    spec = _spec(tmp_path, "bins", {"seed": "0", "loss.cls.bins": "5"}, "loss.cls.bins", ["AP"])
    path = _write(spec, "loss.cls.bins=5,seed=0", payload)
    table = build_table(spec, load_paper_numbers())
    assert table.rows[0].status == "1 unreadable"
    assert any(str(path) in note and reason in note for note in table.notes())


def test_cli_rebuilds_the_tables_from_the_sweep_dir(
    momentum_sweep: AblationSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    momentum_sweep.save()
    out = tmp_path / "elsewhere"
    assert main([momentum_sweep.sweep_dir, "--out-dir", str(out), "--no-wandb"]) == 0
    assert (out / "momentum" / "treecrowns.md").read_text().startswith("# GHM-C: momentum")
    assert "[4 completed, 1 failed, 1 unreadable, 2 diverged, 1 missing]" in capsys.readouterr().out
    assert AblationSpec.load(Path(momentum_sweep.sweep_dir)).jobs == momentum_sweep.jobs


def test_cli_names_a_dir_that_is_not_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--no-wandb"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/ablation.json: no such file" in err


def test_cli_finds_every_sweep_under_the_log_dir(
    momentum_sweep: AblationSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    momentum_sweep.save()
    monkeypatch.setenv("GHMDET_LOG_DIR", str(tmp_path / "logs"))
    assert main(["--no-wandb", "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "momentum" / "treecrowns.csv").is_file()
    monkeypatch.setenv("GHMDET_LOG_DIR", str(tmp_path / "empty"))
    assert main(["--no-wandb"]) == 1


def test_bad_paper_numbers_name_file_table_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "paper.yaml"
    table = "tables:\n  bins:\n    caption: c\n    row_label: M\n    source: s\n    rows:\n"
    path.write_text(table + "      - {value: 5, AP: high}\n")
    with pytest.raises(
        PaperNumbersError, match=r"paper\.yaml: tables\.bins\.rows\[0\]\.AP: must be a finite number"
    ):
        load_paper_numbers(path)
    path.write_text(table + "      - {value: 5, APx: 1}\n")
    with pytest.raises(PaperNumbersError, match=r"tables\.bins\.rows\[0\]: unknown field\(s\) \['APx'\]"):
        load_paper_numbers(path)


def test_callback_hands_a_failed_job_back_as_done_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": "/sweep/job"}}})
    failed = JobReturn(overrides=["loss.cls.bins=0"], status=JobStatus.FAILED)
    failed.return_value = ValueError("bins must be >= 1")
    with caplog.at_level(logging.ERROR):
        AblationCallback(tolerate_failures=True).on_job_end(config=config, job_return=failed)
    assert failed.status == JobStatus.COMPLETED and failed.return_value is None
    assert "job loss.cls.bins=0 failed (ValueError: bins must be >= 1)" in caplog.text
    strict = JobReturn(overrides=["loss.cls.bins=0"], status=JobStatus.FAILED)
    strict.return_value = ValueError("x")
    AblationCallback(tolerate_failures=False).on_job_end(config=config, job_return=strict)
    assert strict.status == JobStatus.FAILED


def test_an_interrupted_job_is_tabled_as_interrupted_with_its_signal_and_step(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "bins", {"seed": "0", "loss.cls.bins": "5"}, "loss.cls.bins", ["AP"])
    stop = {"signal": "SIGTERM", "step": 12, "checkpoint": None}
    _write(spec, "loss.cls.bins=5,seed=0", json.dumps(_record("interrupted", interrupted=stop)))
    table = build_table(spec, load_paper_numbers())
    assert table.rows[0].status == "1 interrupted"
    assert any("interrupted by SIGTERM at step 12" in note for note in table.notes())
