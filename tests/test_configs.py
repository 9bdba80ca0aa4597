"""Every config composes, and the objects it names instantiate (no data, no weights, no network)."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from ghmdet.module import DetectionModule
from ghmdet.paths import CONFIG_DIR
from tests.helpers.configs import compose_train

CLS = sorted(p.stem for p in (CONFIG_DIR / "loss" / "cls").glob("*.yaml"))
REG = sorted(p.stem for p in (CONFIG_DIR / "loss" / "reg").glob("*.yaml"))


def test_loss_groups_hold_the_issue_choices() -> None:
    assert CLS == ["ce", "focal", "ghmc", "ohem"]
    assert REG == ["asl1", "ghmr", "l1", "smooth_l1"]


@pytest.mark.parametrize("cls", CLS)
@pytest.mark.parametrize("reg", REG)
def test_every_loss_pair_instantiates_and_runs(cls: str, reg: str) -> None:
    cfg = compose_train([f"loss/cls={cls}", f"loss/reg={reg}"])
    cls_loss, reg_loss = instantiate(cfg.loss.cls), instantiate(cfg.loss.reg)
    logits, targets = torch.randn(50, 3), (torch.rand(50, 3) > 0.9).float()
    pred, target = torch.randn(7, 4), torch.randn(7, 4)
    assert torch.isfinite(cls_loss(logits, targets)) and torch.isfinite(reg_loss(pred, target))


@pytest.mark.parametrize("experiment", ["paper_r50_1x", "paper_r101_1x", "paper_x101_1x"])
def test_paper_recipes_compose_and_build_without_data_or_weights(experiment: str) -> None:
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.trainer.max_epochs == 12 and cfg.trainer.gradient_clip_val == 35
    assert list(cfg.scheduler.milestones) == pytest.approx([8 / 12, 11 / 12])
    assert cfg.scheduler.warmup_iters == 500
    assert (cfg.model.min_size, cfg.model.max_size) == (800, 1333)
    assert cfg.data.hflip_prob == 0.5 and cfg.data.vflip_prob == 0.0
    assert cfg.loss.cls.bins == 30 and cfg.loss.cls.momentum == 0.75
    assert (cfg.loss.reg.mu, cfg.loss.reg.bins, cfg.loss.reg.momentum, cfg.loss.reg.loss_weight) == (
        0.02,
        10,
        0.7,
        10.0,
    )
    if experiment == "paper_r50_1x":  # building all three backbones would cost seconds each
        model = instantiate(
            cfg.model, num_classes=80, cls_loss=instantiate(cfg.loss.cls), reg_loss=instantiate(cfg.loss.reg)
        )
        assert model.backbone.out_channels == 256
        assert model.anchor_generator.num_anchors_per_location() == [9] * 5
        assert model.head.classification_head.cls_logits.out_channels == 9 * 80


def test_unknown_loss_choice_lists_the_options() -> None:
    with pytest.raises(ConfigCompositionException, match=r"(?s)loss/cls.*ce.*focal.*ghmc.*ohem"):
        compose_train(["loss/cls=ghm"])


def test_embedded_default_points_at_the_treecrowns_build() -> None:
    cfg = compose_train([])
    assert Path(cfg.data.root).name == "treecrowns"
    assert cfg.data.prepare == "treecrowns"
    assert cfg.model.backbone.name == "efficientnet_lite0_fpn" and cfg.model.backbone.pretrained


TRAINERS = sorted(p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml") if p.stem != "default")


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_key_is_a_lightning_trainer_argument(trainer: str) -> None:
    """``instantiate(cfg.trainer)`` builds the Trainer as it is: nothing has to be stripped first."""
    arguments = set(inspect.signature(L.Trainer.__init__).parameters)
    keys = set(compose_train([f"trainer={trainer}"]).trainer) - {"_target_"}
    assert keys <= arguments, keys - arguments


@pytest.mark.parametrize(
    ("overrides", "synced"),
    [
        ([], False),
        (["trainer=ddp"], True),
        (["experiment=paper_r50_1x"], True),
        (["trainer=ddp", "ghm_stats=per_process"], False),
        (["trainer=ddp", "ghm_stats.sync=false"], False),
        (["trainer=gpu", "ghm_stats=all_reduce"], True),
    ],
)
def test_ghm_statistics_sync_is_its_own_node_that_both_ghm_losses_read(
    overrides: list[str], synced: bool
) -> None:
    cfg = compose_train(overrides)
    assert cfg.ghm_stats.sync is synced
    assert cfg.loss.cls.sync_stats is synced and cfg.loss.reg.sync_stats is synced
    assert instantiate(cfg.loss.cls).sync_stats is synced


def test_the_module_node_builds_the_lightning_module_with_the_configured_optimizer_and_schedule() -> None:
    cfg = compose_train(["optimizer=sgd", "scheduler=step", "metric_backend=pycocotools"])
    model = torch.nn.Linear(2, 2)
    module = instantiate(cfg.module, model=model)
    assert isinstance(module, DetectionModule) and module.model is model
    optimizer = module.optimizer_factory(model.parameters())
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == cfg.optimizer.lr
    scheduler = module.scheduler_factory(optimizer, total_steps=12)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert cfg.module.metric_backend == "pycocotools"  # the top-level switch reaches the module
