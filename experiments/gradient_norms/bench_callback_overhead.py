"""Cost of GradientNormLogger on the embedded preset: training steps with and without its work, interleaved.

    python experiments/gradient_norms/bench_callback_overhead.py [--steps 90] [--every 3] [--json out.json]

One real training run (the default GHM-C + GHM-R config, batch 4 x 400 px tiles, an offline W&B logger) with
the callback logging every ``--every`` steps. Each step is timed from the end of the previous batch to the end
of its own (data loading, forward, backward, optimizer step and every callback hook included), so logging
steps and plain steps alternate within the same run and drift hits both alike. The callback's cost per logging
step is the difference of their medians; its overhead at the default period k is that cost / (k x the median
plain step). The time spent inside the callback's own hooks (its loss hooks included) is measured too: a
direct, low-noise figure that leaves out only what W&B's writer process does in the background.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import WandbLogger

from ghmdet.builders import build
from ghmdet.callbacks import GradientNormLogger
from ghmdet.callbacks.gradient_norm_logger import _LossWatch
from ghmdet.paths import CONFIG_DIR

DEFAULT_PERIOD = 50  # conf/callbacks/default.yaml


class SelfTime:
    """Wall time spent inside the wrapped functions, per training step (collected by :class:`StepTimer`)."""

    def __init__(self) -> None:
        self.current = 0.0

    def wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.current += time.perf_counter() - start

        return timed


class StepTimer(L.Callback):
    """Seconds between consecutive ends of training batches, and the callback's own seconds, by global step.

    Placed after the measured callback, so that both of its batch hooks fall inside the step they belong to.
    """

    def __init__(self, self_time: SelfTime) -> None:
        self.self_time = self_time
        self.durations: dict[int, float] = {}
        self.own: dict[int, float] = {}
        self._last: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        step = trainer.global_step - 1  # the optimizer step of this batch has been taken
        if self._last is not None:
            self.durations[step] = now - self._last
        self.own[step] = self.self_time.current
        self.self_time.current = 0.0
        self._last = now


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--every", type=int, default=3, help="logging period of the measured run")
    parser.add_argument("--warmup", type=int, default=6, help="first steps left out")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["paths.output_dir=/tmp/unused"])
    datamodule, module = build(cfg)
    self_time = SelfTime()
    for name in ("_before", "_after"):  # the loss hooks, bound at attach time
        setattr(_LossWatch, name, self_time.wrap(getattr(_LossWatch, name)))
    callback = GradientNormLogger(every_n_steps=args.every)
    for name in ("on_train_batch_start", "on_train_batch_end"):
        setattr(callback, name, self_time.wrap(getattr(callback, name)))
    timer = StepTimer(self_time)
    with tempfile.TemporaryDirectory() as tmp:
        logger = WandbLogger(project="ghmdet-bench", save_dir=tmp, mode="offline")
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=args.steps,
            logger=logger,
            callbacks=[callback, timer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
            gradient_clip_val=35,
        )
        trainer.fit(module, datamodule=datamodule)
        import wandb

        wandb.finish()

    steps = {s: d for s, d in timer.durations.items() if s >= args.warmup}
    logged = [d for s, d in steps.items() if s % args.every == 0]
    plain = [d for s, d in steps.items() if s % args.every != 0]
    median_logged, median_plain = statistics.median(logged), statistics.median(plain)
    cost = median_logged - median_plain
    # the callback's own time in the timed steps (off-steps included), per logging step
    own = sum(timer.own[s] for s in steps) / len(logged)
    result = {
        "threads": torch.get_num_threads(),
        "steps_timed": len(steps),
        "logging_steps": len(logged),
        "median_plain_step_s": round(median_plain, 4),
        "median_logging_step_s": round(median_logged, 4),
        "cost_per_logging_step_s": round(cost, 4),
        "callback_self_time_per_logging_step_s": round(own, 4),
        "callback_self_time_median_logging_step_s": round(
            statistics.median(timer.own[s] for s in steps if s % args.every == 0), 4
        ),
        "overhead_every_step": round(cost / median_plain, 4),
        f"overhead_every_{DEFAULT_PERIOD}_steps": round(cost / (DEFAULT_PERIOD * median_plain), 5),
        f"self_time_overhead_every_{DEFAULT_PERIOD}_steps": round(own / (DEFAULT_PERIOD * median_plain), 5),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
