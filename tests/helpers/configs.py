"""``conf/train.yaml`` composed as ``ghmdet-train`` composes it, without running anything."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig

from ghmdet.paths import CONFIG_DIR  # also registers the project_root resolver


@contextlib.contextmanager
def hydra_on_conf() -> Iterator[None]:
    """Hydra initialised on ``conf/`` (what ``compose`` and the multirun loader need) for the block."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def compose_train(overrides: Sequence[str] = (), hydra: bool = False) -> DictConfig:
    """The config one job of ``ghmdet-train <overrides>`` sees (no sweeps), with the ``hydra`` node if asked.

    Runs inside a caller's :func:`hydra_on_conf` (or the ``hydra_conf`` fixture) when one is active, else
    initialises Hydra for this one call.
    """
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)
    with hydra_on_conf():
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def compose_multirun(overrides: Sequence[str]) -> DictConfig:
    """The config of ``ghmdet-train -m <overrides>`` (sweeps allowed) as the sweep's callback sees it.

    Needs Hydra initialised (:func:`hydra_on_conf` or the ``hydra_conf`` fixture).
    """
    loader = GlobalHydra.instance().config_loader()
    return loader.load_configuration("train", list(overrides), run_mode=RunMode.MULTIRUN)
