"""Every Lightning callback of the suite lives in ``ghmdet.callbacks``; ``conf/callbacks`` builds it there."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import lightning as L
from hydra.utils import get_class
from omegaconf import OmegaConf

import ghmdet
from ghmdet.paths import CONFIG_DIR

CALLBACK_CONFIGS = CONFIG_DIR / "callbacks"


def suite_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(ghmdet.__path__, prefix="ghmdet.")]


def test_every_lightning_callback_lives_in_the_callbacks_package() -> None:
    outside = set()
    for name in suite_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            defined_here = inspect.isclass(obj) and obj.__module__ == name
            if defined_here and issubclass(obj, L.Callback) and not name.startswith("ghmdet.callbacks."):
                outside.add(f"{name}.{obj.__name__}")
    assert not outside, f"Lightning callbacks outside ghmdet.callbacks: {sorted(outside)}"


def test_the_callbacks_config_builds_the_suites_callbacks_from_the_package() -> None:
    package = importlib.import_module("ghmdet.callbacks")
    for path in sorted(CALLBACK_CONFIGS.glob("*.yaml")):
        for key, node in OmegaConf.to_container(OmegaConf.load(path)).items():
            target = node.get("_target_", "") if isinstance(node, dict) else ""
            if not target.startswith("ghmdet."):
                continue  # Lightning's own callbacks
            where = f"{path.name}: {key}._target_ = {target}"
            module, _, name = target.rpartition(".")
            assert module == "ghmdet.callbacks" and hasattr(package, name), where
            assert issubclass(get_class(target), L.Callback), where
