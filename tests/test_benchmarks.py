"""The benchmarks' own logic: the timing order, the step verdict, what each loss is compared with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_losses
import bench_step
from timing import rotated


def test_each_variant_takes_every_place_in_the_order_once_over_as_many_rounds() -> None:
    names = ["focal", "ce", "ghm"]
    orders = [rotated(names, r) for r in range(len(names))]
    assert all(sorted(order) == sorted(names) for order in orders)
    for place in range(len(names)):
        assert sorted(order[place] for order in orders) == sorted(names)
    assert rotated(names, len(names)) == names and rotated([], 3) == []


@pytest.mark.parametrize(("ghm", "status"), [(1.0, 0), (1.05, 0), (1.2, 1)])
def test_the_step_benchmark_fails_when_the_target_is_missed(
    ghm: float, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    median = {"focal+smooth_l1": 1.0, "ce+smooth_l1": 0.9, "ghmc+ghmr": ghm}
    assert bench_step.report(median, "batch 2") == status
    assert ("FAIL" if status else "PASS") in capsys.readouterr().out


def test_ghmr_is_compared_with_smooth_l1_on_the_same_deltas_not_with_a_classification_loss() -> None:
    timings = {
        bench_losses.FOCAL: [0.10] * 5,
        bench_losses.GHMC_UNIT: [0.12] * 5,
        bench_losses.SMOOTH_L1: [0.002] * 5,
        "GHM-R (2k x 4)": [0.003] * 5,
    }
    rows = {row["method"]: row for row in bench_losses.summarise(timings)}
    assert rows["GHM-R (2k x 4)"]["vs_smooth_l1"] == pytest.approx(1.5)
    assert "vs_focal" not in rows["GHM-R (2k x 4)"] and "vs_focal" not in rows[bench_losses.SMOOTH_L1]
    assert rows[bench_losses.GHMC_UNIT]["vs_focal"] == pytest.approx(1.2)
    assert "vs_smooth_l1" not in rows[bench_losses.GHMC_UNIT]
    bench_losses.print_table(list(rows.values()))  # a row without a ratio prints a dash, not a KeyError
