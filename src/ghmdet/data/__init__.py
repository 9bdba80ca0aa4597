"""Data layer: one COCO-format path for the embedded sets (tree crowns, digit scenes) and COCO 2017.

- :mod:`ghmdet.data.treecrowns` converts the ``deepforest`` wheel's tree crowns to tiles + COCO JSON; its
  sources and rules (locating the files, VOC reading, tiling) are in :mod:`ghmdet.data.treecrown_sources`.
- :mod:`ghmdet.data.digits` builds the ablation benchmark (MNIST digits in aerial clutter); one scene is
  composed by :mod:`ghmdet.data.digit_scenes`.
- :mod:`ghmdet.data.atomic_build` is the build protocol both builders share (temporary sibling, rename).
- :mod:`ghmdet.data.annotations` states the rules of a strict COCO annotation file (``DatasetError``, field
  and box checks, ``read_num_classes``); :mod:`ghmdet.data.coco_records` checks the ``images`` and
  ``annotations`` records column-wise; :mod:`ghmdet.data.coco_loading` loads a file
  (``load_coco_annotations``) into :mod:`ghmdet.data.packed`'s flat per-image storage.
- :mod:`ghmdet.data.dataset` holds ``CocoDetectionDataset``, which serves every COCO-format set; its images
  are decoded by the rules of :mod:`ghmdet.data.images`.
- :mod:`ghmdet.data.resumable` holds the train loader that resumes mid-epoch.
- :mod:`ghmdet.data.samplers` holds the evaluation sampler under DDP (every image once over all ranks).
- :mod:`ghmdet.data.datamodule` holds ``DetectionDataModule`` and the embedded sets it can build.
- :mod:`ghmdet.data.transforms` holds the (image, target) flips.
- :mod:`ghmdet.data.synthetic` writes a tiny synthetic COCO set for tests.

Names are resolved lazily so that ``python -m ghmdet.data.treecrowns`` does not import torch/Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetError": "ghmdet.data.annotations",
    "read_num_classes": "ghmdet.data.annotations",
    "CocoDetectionDataset": "ghmdet.data.dataset",
    "DetectionDataModule": "ghmdet.data.datamodule",
    "collate_detection": "ghmdet.data.dataset",
    "build_treecrowns": "ghmdet.data.treecrowns",
    "make_synthetic_coco": "ghmdet.data.synthetic",
    "Compose": "ghmdet.data.transforms",
    "RandomHorizontalFlip": "ghmdet.data.transforms",
    "RandomVerticalFlip": "ghmdet.data.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
