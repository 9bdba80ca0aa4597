"""The paper's figures build headless from collected norms; PNG files, summary and W&B output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ghmdet.analysis import (
    GradientNorms,
    curve_points,
    log_to_wandb,
    paper_figures,
    resolve_wandb_mode,
    save_figures,
    write_summary,
)
from ghmdet.analysis.figures import REWEIGHTED_NORM_FLOOR


def synthetic_norms(seed: int) -> GradientNorms:
    """A spike of easy pairs near 0, a few hard ones near 1 (the shape of the paper's Fig. 1)."""
    generator = torch.Generator().manual_seed(seed)
    g = torch.cat([torch.rand(5000, generator=generator) ** 6, 1 - torch.rand(50, generator=generator) ** 3])
    positive = torch.zeros_like(g, dtype=torch.bool)
    positive[-60:] = True
    abs_d = torch.rand(400, generator=generator) ** 2
    gr = abs_d / torch.sqrt(abs_d**2 + 0.02**2)
    return GradientNorms(g=g, positive=positive, gr=gr, abs_d=abs_d, mu=0.02, num_images=3)


def test_paper_figures_have_one_log_panel_per_model(tmp_path: Path) -> None:
    norms = {"CE + SL1": synthetic_norms(0), "GHM-C + GHM-R": synthetic_norms(1)}
    figures = paper_figures(norms, bins=50)
    assert set(figures) == {
        "fig1_g_distribution",
        "fig1_total_contribution",
        "fig3_reweighted_norms",
        "fig4_gr_distribution",
        "fig5_regression_gradients",
    }
    for fig in figures.values():
        axes = fig.get_axes()
        assert len(axes) == 2
        assert all(ax.get_yscale() == "log" for ax in axes)
        assert "CE + SL1" in axes[0].get_title() and "GHM-C + GHM-R" in axes[1].get_title()
    paths = save_figures(figures, tmp_path / "figs")
    for stem, path in paths.items():
        assert path == tmp_path / "figs" / f"{stem}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reweighted_norm_axis_stops_above_the_focal_tail() -> None:
    """FL's g^3 goes to ~1e-18 at the easiest pairs; Fig. 3's y axis is clipped at the floor instead."""
    norms = synthetic_norms(0)
    assert float(norms.g.min()) ** 3 < REWEIGHTED_NORM_FLOOR  # without the clip the axis would reach it
    fig = paper_figures({"CE + SL1": norms}, bins=50)["fig3_reweighted_norms"]
    assert fig.get_axes()[0].get_ylim()[0] == pytest.approx(REWEIGHTED_NORM_FLOOR)


def test_figures_need_a_model() -> None:
    with pytest.raises(ValueError, match="empty"):
        paper_figures({})


def test_curve_points_spread_evenly_over_x() -> None:
    x = torch.rand(100_000, generator=torch.Generator().manual_seed(0)) ** 8  # nearly all near 0
    xs, (ys,) = curve_points(x, 2 * x, num=50)
    assert np.all(np.diff(xs) > 0) and len(xs) > 20
    np.testing.assert_allclose(ys, 2 * xs)
    assert xs[len(xs) // 2] > 0.3  # a random sample would have its median near 0.004


def test_summary_json_and_disabled_wandb(tmp_path: Path) -> None:
    path = write_summary({"a": {"b": 1.5}}, tmp_path / "out" / "summary.json")
    assert json.loads(path.read_text()) == {"a": {"b": 1.5}}
    assert log_to_wandb({}, {}, mode="disabled", save_dir=tmp_path) is None
    assert not (tmp_path / "wandb").exists()


def test_wandb_mode_defaults_to_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == "disabled"
    assert resolve_wandb_mode("online") == "online"
    with pytest.raises(ValueError, match="wandb mode"):
        resolve_wandb_mode("dryrun")
