"""Data layer: one COCO-format path for the embedded tree-crown set and COCO 2017.

- :mod:`ghmdet.data.treecrowns` converts the ``deepforest`` wheel's tree crowns to tiles + COCO JSON.
- :mod:`ghmdet.data.annotations` parses and strictly validates a COCO annotation file.
- :mod:`ghmdet.data.coco` holds the dataset (``CocoDetectionDataset``) and ``DetectionDataModule``.
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
    "CocoDetectionDataset": "ghmdet.data.coco",
    "DetectionDataModule": "ghmdet.data.coco",
    "collate_detection": "ghmdet.data.coco",
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
