"""Write analysis results out: figures as PNG files, a JSON summary, and the same into a W&B run."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


def save_figures(
    figures: Mapping[str, Figure], out_dir: str | os.PathLike[str], dpi: int = 120
) -> dict[str, Path]:
    """``<out_dir>/<stem>.png`` for each figure (rendered by Agg); returns stem -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem, fig in figures.items():
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=dpi)
        paths[stem] = path
    return paths


def write_summary(summary: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """The summary as indented JSON (keys in insertion order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def resolve_wandb_mode(mode: str | None) -> str:
    """``mode``, else ``$WANDB_MODE``, else ``"offline"`` (no account, no network)."""
    resolved = mode or os.environ.get("WANDB_MODE") or "offline"
    if resolved not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {resolved!r}")
    return resolved


def log_to_wandb(
    images: Mapping[str, Path],
    summary: Mapping[str, Any],
    *,
    mode: str | None = None,
    save_dir: str | os.PathLike[str],
    name: str = "gradient_norms",
    config: Mapping[str, Any] | None = None,
) -> Path | None:
    """One W&B run (project ``ghmdet``, job type ``analysis``) holding the PNGs as ``figures/<stem>`` images
    and the flattened summary; returns its local run folder (``<save_dir>/wandb/<offline-run-...>``), or None
    when ``mode`` is ``"disabled"``. The run is on disk when this returns. Offline runs upload later with
    ``wandb sync <folder>``."""
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        log.info("W&B disabled: the figures are only written as PNG files")
        return None
    import wandb

    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project="ghmdet",
        job_type="analysis",
        name=name,
        dir=str(save_dir),
        mode=mode,
        config=dict(config or {}),
    )
    try:
        run.log({f"figures/{stem}": wandb.Image(str(path), caption=stem) for stem, path in images.items()})
        run.summary.update(_flatten(summary))
        run_folder = Path(run.dir).parent
    finally:
        run.finish()
        if wandb.run is None:
            # finish() can return before W&B's writer process has flushed an offline run (measured with wandb
            # 0.31: the .wandb file then holds only its header for a moment); a kernel shut down right after
            # would lose it. teardown() waits for the writer; the next wandb.init starts a new one.
            wandb.teardown()
    return run_folder


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat
