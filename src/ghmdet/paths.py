"""Where the project is: its root (the clone) and its Hydra config dir, with the ``project_root`` resolver.

Importing this module registers ``${project_root:}``, which ``conf/paths/`` uses for the default data and
output dirs.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

#: the clone: ``conf/``, ``experiments/`` and the default ``outputs/`` and ``data/`` are under it
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: the Hydra config dir that ``ghmdet-train`` composes ``train.yaml`` from
CONFIG_DIR = PROJECT_ROOT / "conf"

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
