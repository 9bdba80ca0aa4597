"""The learning-rate schedule: linear warm-up, step milestones as fractions of training, cosine."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hydra.utils import instantiate
from torch import nn

from ghmdet.schedule import lr_factor
from tests.helpers.configs import compose_train


def test_linear_warmup_from_ratio() -> None:
    assert lr_factor(0, 1000, warmup_iters=100, warmup_ratio=1 / 3) == pytest.approx(1 / 3)
    assert lr_factor(50, 1000, warmup_iters=100, warmup_ratio=1 / 3) == pytest.approx(1 / 3 + (2 / 3) * 0.5)
    assert lr_factor(100, 1000, warmup_iters=100, warmup_ratio=1 / 3) == pytest.approx(1.0)


def test_step_milestones_follow_the_released_recipe() -> None:
    total = 12 * 100  # 12 epochs of 100 iterations: x0.1 after epochs 8 and 11
    kw = {"warmup_iters": 0, "milestones": (8 / 12, 11 / 12), "gamma": 0.1}
    assert lr_factor(799, total, **kw) == pytest.approx(1.0)
    assert lr_factor(800, total, **kw) == pytest.approx(0.1)
    assert lr_factor(1099, total, **kw) == pytest.approx(0.1)
    assert lr_factor(1100, total, **kw) == pytest.approx(0.01)


def test_cosine_reaches_min_factor() -> None:
    kw = {"warmup_iters": 0, "policy": "cosine", "min_factor": 0.05}
    assert lr_factor(0, 100, **kw) == pytest.approx(1.0)
    assert lr_factor(50, 100, **kw) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(100, 100, **kw) == pytest.approx(0.05)


def test_unknown_policy_is_named() -> None:
    with pytest.raises(ValueError, match="'linear'"):
        lr_factor(0, 10, policy="linear")


# lr of SGD (base lr 0.01) at these steps of a 1500-step run, as the module built its LambdaLR from the
# scheduler config before the config named the factory itself
RECORDED_LR = {
    "cosine": {0: 0.003333333333333333, 50: 0.006648406317894246, 99: 0.009826951824816512,
               100: 0.009890738003669028, 750: 0.005, 1000: 0.0025000000000000014,
               1375: 0.000170370868554659, 1499: 1.0966223103481276e-08},
    "step": {0: 0.003333333333333333, 50: 0.004, 499: 0.009986666666666666, 500: 0.01, 999: 0.01,
             1000: 0.001, 1374: 0.001, 1375: 0.00010000000000000002, 1499: 0.00010000000000000002},
}  # fmt: skip


@pytest.mark.parametrize("policy", sorted(RECORDED_LR))
def test_the_module_built_from_the_config_keeps_the_recorded_lr_at_every_step(policy: str) -> None:
    cfg = compose_train([f"scheduler={policy}", "optimizer=sgd"])
    module = instantiate(cfg.module, model=nn.Linear(2, 2))
    module._trainer = SimpleNamespace(estimated_stepping_batches=1500)  # what configure_optimizers reads
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    schedule = {k: v for k, v in cfg.scheduler.items() if not k.startswith("_")}
    for step in range(1500):
        lr = optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(0.01 * lr_factor(step, 1500, **schedule), rel=1e-12, abs=0), step
        if step in RECORDED_LR[policy]:
            assert lr == pytest.approx(RECORDED_LR[policy][step], rel=1e-12, abs=0), step
        optimizer.step()
        scheduler.step()
