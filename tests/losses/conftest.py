"""The losses a run can choose, read from the config groups ``conf/loss/cls`` and ``conf/loss/reg``."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from ghmdet.paths import CONFIG_DIR

LOSS_CONFIGS = CONFIG_DIR / "loss"


def losses_of_group(group: str) -> dict[str, type]:
    """Config name -> loss class of every file in ``conf/loss/<group>/``."""
    return {
        path.stem: get_class(OmegaConf.load(path)["_target_"])
        for path in sorted((LOSS_CONFIGS / group).glob("*.yaml"))
    }


@pytest.fixture(scope="session")
def cls_losses() -> dict[str, type]:
    """Classification losses by config name (``loss/cls=<name>``)."""
    return losses_of_group("cls")


@pytest.fixture(scope="session")
def reg_losses() -> dict[str, type]:
    """Regression losses by config name (``loss/reg=<name>``)."""
    return losses_of_group("reg")
