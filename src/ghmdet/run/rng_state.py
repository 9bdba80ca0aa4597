"""The Python, NumPy and torch (CPU and CUDA) random states, saved with a checkpoint for an exact resume.

They are kept as plain tensors and ints, so that a checkpoint holding them still loads with
``weights_only=True``; the LightningModule saves them (:data:`RNG_STATES_KEY`) and a resumed run puts them
back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: Key of the random states in a Lightning checkpoint (written by ``DetectionModule.on_save_checkpoint``).
RNG_STATES_KEY = "ghmdet_rng_states"


def capture_rng_states() -> dict[str, Any]:
    """The Python, NumPy and torch random states, as tensors, ints and lists (``weights_only``-safe)."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(numpy_state["state"]["key"], dtype=np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = list(torch.cuda.get_rng_state_all())
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng_states` returned (missing parts are left as they are)."""
    if "python" in states:
        python = states["python"]
        random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    if "numpy" in states:
        state = states["numpy"]
        np.random.set_state(
            {
                "bit_generator": state["bit_generator"],
                "state": {"key": state["key"].numpy().astype(np.uint32), "pos": state["pos"]},
                "has_gauss": state["has_gauss"],
                "gauss": state["gauss"],
            }
        )
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
