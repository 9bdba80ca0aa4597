"""Is the run in this dir the same run? The config a run started with against the current one.

A finished run is skipped, and a checkpoint resumed, only when the two configs differ at most under
:data:`RESULT_NEUTRAL_KEYS` or by a moved ``paths.*``; anything else ends with
:class:`ConfigMismatchError`, naming each changed key with both values. A config recorded in an older shape
is brought to today's first (:func:`~ghmdet.run.record.current_config_shape`): the same run is still the
same run.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghmdet.run.checkpoint_io import RUN_CONFIG_KEY, load_checkpoint_safely
from ghmdet.run.record import FINISHED, current_config_shape, read_metrics
from ghmdet.run.redaction import redact

log = logging.getLogger(__name__)

#: Config keys (dotted, ``fnmatch`` patterns) whose values cannot change what a run computes: a run resumed
#: or skipped with other values there is still the same run. Everything else is compared.
#: - how the run is executed: torch threads, loader workers and image cache (the augmentation of a sample
#:   has its own random stream, docs/reliability.md), resume / skip switches, the free-space floor;
#: - where things are: ``paths.*`` (a path elsewhere in the config that differs only by where ``paths.*``
#:   point counts as moved, not changed), the W&B group (``task_name``), the ablation table's metadata;
#: - what is logged and shown: loggers, progress bars, LR monitor, prediction pictures, gradient-norm
#:   histograms, the DDP consistency checks, the checkpoint interval (resume is exact from any step).
RESULT_NEUTRAL_KEYS: tuple[str, ...] = (
    "threads",
    "resume",
    "skip_completed",
    "min_free_disk_mb",
    "task_name",
    "paths",
    "paths.*",
    "ablation",
    "ablation.*",
    "logger",
    "logger.*",
    "data.num_workers",
    "data.cache_images",
    "data.pin_memory",
    "data.persistent_workers",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    *(
        f"callbacks.{name}{suffix}"
        for name in (
            "rich_progress_bar",
            "lr_monitor",
            "prediction_images",
            "gradient_norms",
            "ghm_state",
            "eval_coverage",
            "model_checkpoint",
        )
        for suffix in ("", ".*")
    ),
)
_ABSENT = "<absent>"


class ConfigMismatchError(RuntimeError):
    """The run dir holds a run of another configuration: resuming or skipping it would misrecord it."""


@dataclass(frozen=True)
class ConfigChange:
    """One config key whose value differs between the run's start and now."""

    key: str
    was: Any
    now: Any

    def describe(self) -> str:
        """``key = <was> there, <now> now`` (long values shortened)."""
        return f"{self.key} = {_short(self.was)} there, {_short(self.now)} now"

    def as_record(self) -> dict[str, Any]:
        """The change as a JSON object for ``metrics.json``."""
        return {"key": self.key, "was": self.was, "now": self.now}


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) and value == _ABSENT else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _differences(old: Any, new: Any, key: str = "") -> Iterable[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` where two nested configs differ; a subtree present on one side only is one
    difference (its whole value against :data:`_ABSENT`), lists are compared as values."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for name in sorted(set(old) | set(new), key=str):
            dotted = f"{key}.{name}" if key else str(name)
            yield from _differences(old.get(name, _ABSENT), new.get(name, _ABSENT), dotted)
    elif old != new:
        yield key, old, new


def _paths(config: Mapping[str, Any]) -> dict[str, str]:
    paths = config.get("paths")
    if not isinstance(paths, Mapping):
        return {}
    return {f"paths.{k}": v for k, v in paths.items() if isinstance(v, str) and v}


def _relocated(was: Any, now: Any, old_paths: Mapping[str, str], new_paths: Mapping[str, str]) -> bool:
    """Whether two strings differ only by the ``paths.*`` values they start from (a moved data dir)."""
    if not (isinstance(was, str) and isinstance(now, str)):
        return False
    for key in sorted(old_paths, key=lambda k: -len(old_paths[k])):
        if key in new_paths:
            was = was.replace(old_paths[key], f"${{{key}}}")
            now = now.replace(new_paths[key], f"${{{key}}}")
    return was == now


def compare_run_configs(
    started: Mapping[str, Any], now: Mapping[str, Any]
) -> tuple[list[ConfigChange], list[ConfigChange]]:
    """The keys whose values differ between the config a run started with and the current one.

    Both are resolved configs (as recorded in ``metrics.json`` / the checkpoint); secrets are redacted on
    both sides first, so that a redacted field never counts as changed. Returns ``(changes, allowed)``:
    differences that change the result, and those under :data:`RESULT_NEUTRAL_KEYS` or that only follow a
    moved ``paths.*``.
    """
    # JSON round trip: the same types whether the config came from a checkpoint or from metrics.json.
    old = json.loads(json.dumps(redact(dict(started))))
    new = json.loads(json.dumps(redact(dict(now))))
    old_paths, new_paths = _paths(old), _paths(new)
    changes: list[ConfigChange] = []
    allowed: list[ConfigChange] = []
    for key, was, value in _differences(old, new):
        change = ConfigChange(key, was, value)
        neutral = any(fnmatch.fnmatchcase(key, pattern) for pattern in RESULT_NEUTRAL_KEYS)
        if neutral or _relocated(was, value, old_paths, new_paths):
            allowed.append(change)
        else:
            changes.append(change)
    return changes, allowed


def config_mismatch_message(run_dir: str | os.PathLike[str], doing: str, changes: list[ConfigChange]) -> str:
    """One line: the run dir, what was refused, each changed key with both values, how to start afresh."""
    return (
        f"{run_dir} holds a run started with another config, so {doing} it would record what it did not do: "
        + "; ".join(change.describe() for change in changes)
        + ". Start afresh with another hydra.run.dir, or retrain here with resume=false skip_completed=false "
        "(the earlier metrics.json is kept beside, time-stamped)"
    )


def finished_run(out_dir: Path, config: dict[str, Any], skip_completed: bool) -> dict[str, Any] | None:
    """The record of a finished run to skip, None to train; refuses a finished run of another config."""
    previous = read_metrics(out_dir)
    # A diverged run is finished too: rerunning it would diverge again (a sweep's momentum-0.9 row).
    if previous is None or previous.get("status") not in FINISHED or not skip_completed:
        return None
    if isinstance(previous.get("config"), dict):
        changes, allowed = compare_run_configs(current_config_shape(previous["config"]), config)
        if changes:
            raise ConfigMismatchError(config_mismatch_message(out_dir, "skipping", changes))
        if allowed:
            log.info(
                "the config differs from the finished run's only where results cannot change: %s",
                "; ".join(change.describe() for change in allowed),
            )
    log.info(
        "%s already holds a %s run; skipping (skip_completed=false reruns it)", out_dir, previous["status"]
    )
    return previous


def check_resume(
    last_ckpt: Path, previous: dict[str, Any] | None, config: dict[str, Any], out_dir: Path
) -> tuple[int, list[ConfigChange]]:
    """The step of a resume checkpoint and the allowed config changes; refuses another config's run.

    Compared with the config stored in the checkpoint (the one its weights were trained with), or, for a
    checkpoint that holds none, with the run dir's ``metrics.json``.
    """
    # weights_only=True, memory-mapped: a truncated or code-carrying checkpoint is refused before any build.
    checkpoint = load_checkpoint_safely(last_ckpt)
    step = int(checkpoint.get("global_step", 0))
    started_with = checkpoint.get(RUN_CONFIG_KEY)
    del checkpoint
    if not isinstance(started_with, dict) and previous is not None:
        started_with = previous.get("config")
    if not isinstance(started_with, dict):
        log.warning("%s records no config: resuming it without comparing configs", last_ckpt)
        return step, []
    changes, allowed = compare_run_configs(current_config_shape(started_with), config)
    if changes:
        raise ConfigMismatchError(config_mismatch_message(out_dir, "resuming", changes))
    return step, allowed
