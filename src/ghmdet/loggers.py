"""The run's Lightning loggers (``conf/logger/``): built from config, W&B started and finished, fed redacted.

W&B never stops a run: when it cannot start (no package, an unwritable dir, a failed ``wandb.init``), it is
dropped with a warning saying why, the record's ``wandb`` field says so, and the other loggers (CSV) and
every local result go on. What a logger receives (its own config, the run's hyperparameters) has its secrets
redacted first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from ghmdet.errors import first_line
from ghmdet.run.redaction import redact
from ghmdet.run.run_dir import OutputDirError, check_output_dir, describe_os_error

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig) -> tuple[list[Any], dict[str, Any]]:
    """The configured loggers, and the W&B status for the run record (``wandb``)."""
    loggers: list[Any] = []
    wandb_status: dict[str, Any] = {"enabled": False, "reason": "no W&B logger configured"}
    for node in (cfg.get("logger") or {}).values():
        if node is None or "_target_" not in node:
            continue
        if not _is_wandb(node):
            loggers.append(instantiate(node))
            continue
        logger, reason = _start_wandb(node)
        if logger is None:
            log.warning("W&B logging is off: %s. Training goes on; results are written locally.", reason)
            wandb_status = {"enabled": False, "reason": reason}
        else:
            loggers.append(logger)
            run = logger.experiment
            wandb_status = {"enabled": True, "mode": str(getattr(run.settings, "mode", "")), "run_id": run.id}
    return loggers, wandb_status


def log_hyperparams(loggers: Iterable[Logger], config: Mapping[str, Any]) -> None:
    """Give every logger the run's config as its hyperparameters, secrets redacted."""
    for logger in loggers:
        logger.log_hyperparams(redact(config))


def finish_wandb() -> None:
    """Close the W&B run so that multirun jobs never share one (a no-op without wandb)."""
    try:
        import wandb
    except Exception:
        return
    try:
        if wandb.run is not None:
            wandb.finish()
    except Exception as err:  # an unfinished upload must not turn a finished run into a crash
        log.warning(
            "closing the W&B run failed (%s: %s); local results are complete", type(err).__name__, err
        )


def _is_wandb(node: DictConfig) -> bool:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1] == "WandbLogger"


def _start_wandb(node: DictConfig) -> tuple[Any | None, str]:
    """A started WandbLogger, or None and why W&B is off (import error, unwritable dir, failed init)."""
    try:
        import wandb
    except Exception as err:  # ImportError, or a broken install failing at import time
        return None, f"the wandb package cannot be imported ({type(err).__name__}: {first_line(err)})"
    mode = str(node.get("mode") or os.environ.get("WANDB_MODE") or "online")
    if mode == "disabled":
        return None, "W&B mode is 'disabled'"
    wandb_dir = Path(str(node.get("save_dir") or ".")) / "wandb"
    try:
        check_output_dir(wandb_dir)
    except OutputDirError as err:
        reason = describe_os_error(err.__cause__) if isinstance(err.__cause__, OSError) else err.strerror
        return None, f"its directory {wandb_dir} is not writable ({reason})"
    logger = None
    try:
        # Resolved and redacted first: the run name (Hydra's override_dirname) or notes could hold a secret
        # through an interpolation such as ${oc.env:WANDB_API_KEY}.
        logger = instantiate(redact(OmegaConf.to_container(node, resolve=True)))
        logger.experiment  # noqa: B018 -- starts the run now (wandb.init), so failures surface here
    except Exception as err:  # CommError (no network), UsageError (no API key), OSError, ...
        try:
            if wandb.run is not None:
                wandb.finish(exit_code=1, quiet=True)
        except Exception:  # pragma: no cover - best effort cleanup of a half-started run
            pass
        return None, f"wandb.init failed in {mode} mode ({type(err).__name__}: {first_line(err)})"
    return logger, ""
