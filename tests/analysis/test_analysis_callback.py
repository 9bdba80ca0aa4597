"""GradientNormLogger: what it logs, that the logged weights are the ones GHM applied, when it stays quiet."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger

from ghmdet.analysis import norm_histogram
from ghmdet.analysis.collect import collect_gradient_norms
from ghmdet.callbacks import GradientNormLogger
from ghmdet.losses import BCELoss, FocalLoss, GHMCLoss, GHMRLoss, SmoothL1Loss, gradient_norm_cls
from tests.analysis.tiny_detector import Batch, make_batch, make_model


class RecordingWandbLogger(WandbLogger):
    """A W&B logger that keeps what it is given instead of starting a run."""

    def __init__(self) -> None:
        super().__init__(mode="disabled")
        self.logged: list[tuple[int | None, dict[str, Any]]] = []

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:  # type: ignore[override]
        self.logged.append((step, dict(metrics)))


def fake_trainer(*loggers: object, step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(loggers=list(loggers), global_step=step, is_global_zero=True)


def train_step(
    callback: GradientNormLogger, trainer: SimpleNamespace, module: SimpleNamespace, batch: Batch
) -> None:
    callback.on_train_batch_start(trainer, module, batch, 0)
    losses = module.model(*batch)
    sum(losses.values()).backward()
    callback.on_train_batch_end(trainer, module, None, batch, 0)


def heights(histogram: Any) -> np.ndarray:
    return np.asarray(histogram.histogram, dtype=np.float64)


def test_ghm_run_logs_histograms_ema_counts_and_weights_per_level() -> None:
    batch = make_batch()
    model = make_model(GHMCLoss(bins=30), GHMRLoss(bins=10)).train()
    module, logger = SimpleNamespace(model=model), RecordingWandbLogger()
    callback = GradientNormLogger(every_n_steps=2, bins=20)
    callback.setup(fake_trainer(logger), module, "fit")
    assert callback.active

    train_step(callback, fake_trainer(logger, step=0), module, batch)
    ema_after_step_0 = model.cls_loss.acc_sum.clone()
    train_step(callback, fake_trainer(logger, step=1), module, batch)  # off-step: nothing
    assert [step for step, _ in logger.logged] == [0]
    payload = logger.logged[0][1]
    assert {f"ghm/cls/weights/level{i}" for i in range(5)} <= set(payload)
    assert {f"ghm/reg/weights/level{i}" for i in range(5)} <= set(payload)

    # The g histogram covers every valid pair of the step: the same count as the analysis collection.
    expected = norm_histogram(collect_gradient_norms(model, [batch]).g, 20).numpy()
    np.testing.assert_allclose(heights(payload["gradient_norms/cls_g"]), expected)
    np.testing.assert_allclose(heights(payload["gradient_norms/cls_g_log10"]), np.log10(1 + expected))
    assert heights(payload["gradient_norms/reg_gr"]).sum() > 0
    np.testing.assert_allclose(heights(payload["ghm/cls/ema_counts"]), ema_after_step_0.numpy(), rtol=1e-6)
    assert payload["ghm/cls/max_weight"] > 0

    train_step(callback, fake_trainer(logger, step=2), module, batch)
    assert [step for step, _ in logger.logged] == [0, 2]


def test_logged_weights_are_the_weights_ghm_applied() -> None:
    """Per element, |gradient| * N / |p - p*| equals the logged beta of its bin (one call, batch scope)."""
    loss = GHMCLoss(bins=10, momentum=0.75)
    loss(torch.randn(500, 2) * 3, (torch.rand(500, 2) < 0.1).float())  # an EMA history
    model = SimpleNamespace(cls_loss=loss, reg_loss=SmoothL1Loss(), stats_scope="batch")
    logger = RecordingWandbLogger()
    callback = GradientNormLogger(every_n_steps=1)
    callback.setup(fake_trainer(logger), SimpleNamespace(model=model), "fit")

    logits = (torch.randn(800, 2) * 3).requires_grad_(True)
    targets = (torch.rand(800, 2) < 0.1).float()
    callback.on_train_batch_start(fake_trainer(logger), SimpleNamespace(model=model), None, 0)
    loss(logits, targets).backward()
    callback.on_train_batch_end(fake_trainer(logger), SimpleNamespace(model=model), None, None, 0)

    beta = heights(logger.logged[0][1]["ghm/cls/weights/batch"])
    g = gradient_norm_cls(logits, targets)
    applied = (logits.grad.abs() * logits.numel() / g).reshape(-1)
    bins = torch.clamp((g.reshape(-1) * 10).long(), max=9)
    np.testing.assert_allclose(applied.numpy(), beta[bins.numpy()], rtol=1e-4)


def test_without_a_wandb_logger_it_says_so_and_does_nothing(caplog) -> None:
    model = make_model(GHMCLoss(), GHMRLoss())
    callback = GradientNormLogger()
    with caplog.at_level(logging.INFO, logger="ghmdet.callbacks.gradient_norm_logger"):
        callback.setup(fake_trainer(object()), SimpleNamespace(model=model), "fit")
    assert not callback.active
    assert "no W&B logger" in caplog.text


def test_non_ghm_losses_are_skipped_unless_asked(caplog) -> None:
    batch = make_batch()
    model = make_model(FocalLoss(), SmoothL1Loss()).train()
    logger = RecordingWandbLogger()
    with caplog.at_level(logging.INFO, logger="ghmdet.callbacks.gradient_norm_logger"):
        quiet = GradientNormLogger()
        quiet.setup(fake_trainer(logger), SimpleNamespace(model=model), "fit")
    assert not quiet.active and "not GHM" in caplog.text

    model = make_model(BCELoss(), SmoothL1Loss()).train()
    callback = GradientNormLogger(only_ghm=False)
    callback.setup(fake_trainer(logger), SimpleNamespace(model=model), "fit")
    train_step(callback, fake_trainer(logger), SimpleNamespace(model=model), batch)
    payload = logger.logged[0][1]
    assert {"gradient_norms/cls_g", "gradient_norms/reg_gr"} <= set(payload)
    assert not any(key.startswith("ghm/") for key in payload)
    assert not model.cls_loss._forward_pre_hooks  # hooks removed after the step


@pytest.mark.parametrize(
    "kwargs", [{"every_n_steps": 0}, {"every_n_steps": True}, {"bins": 0}, {"bins": 600}]
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GradientNormLogger(**kwargs)
