"""The one entry point: ``ghmdet-train`` / ``python -m ghmdet.train`` (Hydra).

Validate the config; check the run dir can take results and lock it (one process per run dir); instantiate
data, losses, model, LightningModule and trainer; fit (resuming from the run's ``checkpoints/last.ckpt``
when it exists and was trained with a config that gives the same result, loaded with ``weights_only=True``);
test; write ``metrics.json``; close the W&B run. Everything a run writes goes under its Hydra output dir.
Failures a user can fix (config, data, checkpoint, output dir, a busy dir, a run dir of another config) end
with one line on stderr and exit status 2; SIGTERM / SIGINT save a checkpoint and exit with 128 + the
signal; ``metrics.json`` records the status (``completed`` / ``diverged`` / ``failed`` / ``interrupted``)
and why. See ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ghmdet.callbacks import IterationTimer
from ghmdet.config_validation import ConfigError, override_parse_problem, validate_config
from ghmdet.data.annotations import DatasetError
from ghmdet.data.coco import ResumableDataLoader
from ghmdet.distributed import hydra_ddp_job, is_rank_zero  # also registers the ghmdet.* resolvers
from ghmdet.lit import DetectionModule
from ghmdet.reliability import (
    RUN_CONFIG_KEY,
    UNWRITABLE_ERRNOS,
    AtomicCheckpointIO,
    CheckpointError,
    ConfigChange,
    ConfigMismatchError,
    DivergenceGuard,
    InterruptHandler,
    OutputDirError,
    RunCheckpoints,
    RunDirBusyError,
    RunDirLock,
    RunInterrupted,
    check_checkpoint,
    check_output_dir,
    compare_run_configs,
    config_mismatch_message,
    describe_os_error,
    install_log_redaction,
    load_checkpoint_safely,
    redact,
    redact_file,
)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
METRICS_FILE = "metrics.json"
#: keys of the trainer config group that configure the suite, not lightning.Trainer
NON_TRAINER_KEYS = ("sync_ghm_stats",)
#: free space a run dir needs at start-up unless the config sets ``min_free_disk_mb``
DEFAULT_MIN_FREE_MB = 100.0
#: errors a user fixes (config, data, checkpoint, output dir): one line on stderr, exit status 2
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DatasetError,
    CheckpointError,
    OutputDirError,
    ConfigMismatchError,
    RunDirBusyError,
    HydraException,
    OmegaConfBaseException,
    MisconfigurationException,
)

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


RESULT_DIRS = ("experiments",)
"""Tracked folders that hold results, not code: the tables a sweep regenerates there while its later jobs
still run must not mark those jobs' code as modified."""


def git_commit() -> str | None:
    """The commit of the code that ran (with '-dirty' when tracked files outside :data:`RESULT_DIRS` have
    changes), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        results = [f":(exclude){folder}" for folder in RESULT_DIRS]
        status = ["status", "--porcelain", "--untracked-files=no", "--", ".", *results]
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *status],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that a crash never leaves a half-written file (write + fsync a sibling, then rename).

    Secrets (``WANDB_API_KEY`` and the like) are redacted from the payload first.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_synced(tmp, json.dumps(redact(payload), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def start_record(out_dir: Path, record: dict[str, Any], started: float) -> None:
    """Make ``record`` the run dir's ``metrics.json``, keeping an earlier one beside it (time-stamped).

    The new record is written (and fsync'ed) first; only then is an earlier ``metrics.json`` renamed, so a
    full disk or an unwritable dir leaves the earlier result where it was.
    """
    if not is_rank_zero():
        return  # DDP ranks share the run dir: global rank 0 is its one writer
    path = out_dir / METRICS_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_synced(tmp, json.dumps(redact(record), indent=2, sort_keys=False) + "\n")
        if path.exists():
            # Never lose an earlier result (even an unreadable one): a rerun keeps it beside, time-stamped.
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
            backup, n = out_dir / f"metrics.{stamp}.json", 1
            while backup.exists():
                backup, n = out_dir / f"metrics.{stamp}-{n}.json", n + 1
            os.replace(path, backup)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _is_wandb(node: DictConfig) -> bool:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1] == "WandbLogger"


def _start_wandb(node: DictConfig) -> tuple[Any | None, str]:
    """A started WandbLogger, or None and why W&B is off (import error, unwritable dir, failed init)."""
    try:
        import wandb
    except Exception as err:  # ImportError, or a broken install failing at import time
        return None, f"the wandb package cannot be imported ({type(err).__name__}: {_first_line(err)})"
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
        return None, f"wandb.init failed in {mode} mode ({type(err).__name__}: {_first_line(err)})"
    return logger, ""


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _loggers(cfg: DictConfig) -> tuple[list[Any], dict[str, Any]]:
    """The configured loggers, and the W&B status for metrics.json.

    W&B never stops a run: when it cannot start, it is dropped with a warning saying why and the other
    loggers (CSV) and every local result go on.
    """
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


def _callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c
    ]


def _finish_wandb() -> None:
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


def build_model(cfg: DictConfig, num_classes: int) -> torch.nn.Module:
    """The detector of a composed config with its ``loss/cls`` and ``loss/reg`` modules plugged in."""
    return instantiate(
        cfg.model,
        num_classes=num_classes,
        cls_loss=instantiate(cfg.loss.cls),
        reg_loss=instantiate(cfg.loss.reg),
    )


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, DetectionModule]:
    """Data module and LightningModule from a composed config (no training)."""
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    model = build_model(cfg, datamodule.num_classes)
    module = DetectionModule(
        model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        metric_backend=cfg.metric_backend,
    )
    return datamodule, module


def _config_record(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException:  # an unresolvable interpolation: keep the raw config
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _redact_hydra_files(out_dir: Path) -> None:
    """Hydra saved the composed config and the command line under ``.hydra/``: redact secrets there."""
    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else ".hydra"
    if subdir is None:
        return
    for path in (out_dir / str(subdir)).glob("*.yaml"):
        redact_file(path)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train + test one configuration; returns what it wrote to ``metrics.json``.

    Start-up order: a finished run is skipped (when its config matches the current one); then config
    validation, the output-dir check, the run dir's lock and the resume check come before anything is
    loaded or written, so that a bad config, an unwritable, full or busy dir, or a resume into a run of
    another config fail in a second and leave earlier results alone.
    """
    install_log_redaction()
    out_dir = Path(cfg.paths.output_dir)
    config = _config_record(cfg)
    finished = _finished_run(out_dir, config, cfg)
    if finished is not None:
        return finished
    started = time.time()
    try:
        validate_config(cfg)
    except ConfigError as err:
        record = {**_initial_record(cfg, config, started), "status": "failed", "reason": str(err)}
        try:  # recorded unless another process holds the run dir (its record is its own)
            with _run_dir_lock(out_dir, orphan_wait_s=0):
                _record_start_failure(out_dir, record, started)
        except (OSError, RunDirBusyError) as busy:
            log.warning("the invalid config is not recorded in %s: %s", out_dir / METRICS_FILE, busy)
        raise
    check_output_dir(out_dir, float(cfg.get("min_free_disk_mb", DEFAULT_MIN_FREE_MB)))
    with _run_dir_lock(out_dir):
        finished = _finished_run(out_dir, config, cfg)  # another process may have finished it meanwhile
        if finished is not None:
            return finished
        return _run_locked(cfg, out_dir, config, started)


def _run_dir_lock(out_dir: Path, orphan_wait_s: float = 30.0) -> contextlib.AbstractContextManager[Any]:
    """The run dir's lock: one process per run dir. DDP ranks share the dir: rank 0 (the launching
    process) holds it."""
    return RunDirLock(out_dir, orphan_wait_s) if is_rank_zero() else contextlib.nullcontext()


def _initial_record(cfg: DictConfig, config: dict[str, Any], started: float) -> dict[str, Any]:
    return {
        "status": "running",
        "config": config,
        "overrides": (
            OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
            if HydraConfig.initialized()
            else []
        ),
        "git_commit": git_commit(),
        "seed": cfg.get("seed"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }


def _finished_run(out_dir: Path, config: dict[str, Any], cfg: DictConfig) -> dict[str, Any] | None:
    """The record of a finished run to skip, None to train; refuses a finished run of another config."""
    previous = read_metrics(out_dir)
    # A diverged run is finished too: rerunning it would diverge again (a sweep's momentum-0.9 row).
    if previous is None or previous.get("status") not in ("completed", "diverged"):
        return None
    if not cfg.get("skip_completed", True):
        return None
    if isinstance(previous.get("config"), dict):
        changes, allowed = compare_run_configs(previous["config"], config)
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


def _check_resume(
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
    changes, allowed = compare_run_configs(started_with, config)
    if changes:
        raise ConfigMismatchError(config_mismatch_message(out_dir, "resuming", changes))
    return step, allowed


def _run_locked(cfg: DictConfig, out_dir: Path, config: dict[str, Any], started: float) -> dict[str, Any]:
    """:func:`run` once the config is valid and the run dir's lock is held."""
    previous = read_metrics(out_dir)
    record = _initial_record(cfg, config, started)
    last_ckpt = out_dir / "checkpoints" / "last.ckpt"
    ckpt_path = None
    if cfg.resume and last_ckpt.is_file():
        try:
            record["resumed_from_step"], allowed = _check_resume(last_ckpt, previous, config, out_dir)
        except CheckpointError as err:
            record["status"], record["reason"] = "failed", f"{type(err).__name__}: {err}"
            _record_start_failure(out_dir, record, started)
            raise
        if allowed:
            record["config_changes"] = [change.as_record() for change in allowed]
        ckpt_path = str(last_ckpt)
        log.info("resuming from %s (step %d)", ckpt_path, record["resumed_from_step"])
    _redact_hydra_files(out_dir)
    # Visible while training: a job killed half-way leaves "running", not a stale or missing record.
    start_record(out_dir, record, started)

    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    timer = IterationTimer()
    module: DetectionModule | None = None
    trainer: L.Trainer | None = None
    with InterruptHandler() as interrupts:
        try:
            loggers, record["wandb"] = _loggers(cfg)
            # Resolved first: masked_copy detaches the node, so ${...} pointing outside trainer would not
            # resolve.
            trainer_node = OmegaConf.create(OmegaConf.to_container(cfg.trainer, resolve=True))
            trainer_cfg = OmegaConf.masked_copy(
                trainer_node, [k for k in trainer_node if k not in NON_TRAINER_KEYS]
            )
            extra: dict[str, Any] = {}
            if trainer_cfg.get("plugins") is None:
                extra["plugins"] = [
                    AtomicCheckpointIO()
                ]  # a kill during a save keeps the previous checkpoint
            trainer = instantiate(
                trainer_cfg,
                logger=loggers or False,
                callbacks=[*_callbacks(cfg), timer, DivergenceGuard(), RunCheckpoints(config)],
                default_root_dir=str(out_dir),
                **extra,
            )
            interrupts.trainer = trainer
            for logger in trainer.loggers:
                logger.log_hyperparams(redact(record["config"]))
            datamodule, module = build(cfg)
            # weights_only=True: a checkpoint holds tensors and plain values only; no code from it ever runs.
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            if module.divergence is None:
                trainer.test(module, datamodule=datamodule)
                record["status"] = "completed"
                # The metrics are of the weights at this step; the record names the file that holds them.
                record["checkpoint"] = _scored_checkpoint(trainer, out_dir)
            else:
                record["status"] = "diverged"
                record["reason"] = (
                    f"non-finite training state at step {module.divergence['step']}: "
                    f"{module.divergence.get('reason', '')}"
                )
                record["divergence"] = {**module.divergence, "checkpoint": _checkpoint_summary(last_ckpt)}
                log.error(
                    "run diverged: %s; last good checkpoint: %s",
                    record["reason"],
                    record["divergence"]["checkpoint"],
                )
        except (RunInterrupted, KeyboardInterrupt, SystemExit) as err:
            # SIGTERMException (Lightning's stop on SIGTERM) is a SystemExit; other SystemExits are not ours.
            if (
                isinstance(err, SystemExit)
                and not isinstance(err, SIGTERMException)
                and not interrupts.signum
            ):
                raise
            signum = interrupts.signum or (
                signal.SIGTERM if isinstance(err, SIGTERMException) else signal.SIGINT
            )
            raise _interrupted(record, signum, module, trainer, timer, started, out_dir) from None
        except Exception as err:  # recorded for the sweep tables, then re-raised so the job fails visibly
            user_error = _resume_error(err, ckpt_path)
            record["status"] = "failed"
            record["reason"] = f"{type(user_error or err).__name__}: {user_error or err}"
            record["traceback"] = traceback.format_exc()
            _finalise(record, module, trainer, timer, started, out_dir)
            if user_error is not None:
                raise user_error from err
            raise
        return _finalise(record, module, trainer, timer, started, out_dir)


def _interrupted(
    record: dict[str, Any],
    signum: int,
    module: DetectionModule | None,
    trainer: L.Trainer | None,
    timer: IterationTimer,
    started: float,
    out_dir: Path,
) -> RunInterrupted:
    """Record a run stopped by a signal (status ``interrupted``); the exception that ends the process."""
    name = signal.Signals(signum).name
    step = int(trainer.global_step) if trainer is not None else 0
    checkpoint = _checkpoint_summary(out_dir / "checkpoints" / "last.ckpt")
    record["status"] = "interrupted"
    record["reason"] = f"stopped by {name} at step {step}"
    record["interrupted"] = {"signal": name, "step": step, "checkpoint": checkpoint}
    _finalise(record, module, trainer, timer, started, out_dir)
    if checkpoint is not None and "step" in checkpoint:
        saved = f"{checkpoint['path']} holds step {checkpoint['step']}; the same command resumes from there"
    else:
        saved = "no checkpoint was saved yet; the same command starts over"
    message = f"interrupted by {name} at step {step}: {saved}"
    log.warning(message)
    return RunInterrupted(signum, message)


def _raised_in(err: BaseException, function: Any) -> bool:
    """Whether ``err`` was raised inside ``function`` (its innermost traceback frame)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code is function.__code__


def _resume_error(err: Exception, ckpt_path: str | None) -> Exception | None:
    """A resume that cannot fit this config or data, as the user error it is (None for anything else).

    The config comparison (:func:`_check_resume`) catches these first; this covers checkpoints that hold
    no config and data that changed under the same config.
    """
    if ckpt_path is None:
        return None
    if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
        return CheckpointError(
            f"{ckpt_path}: its weights do not fit this config's model ({_first_line(err)} ...): the run dir "
            "holds a run of another model or loss. Start afresh with another hydra.run.dir, or retrain here "
            "with resume=false skip_completed=false"
        )
    if isinstance(err, ValueError) and _raised_in(err, ResumableDataLoader.load_state_dict):
        return DatasetError(
            f"cannot resume from {ckpt_path}: {err}. Train on the data it was trained on, or start afresh "
            "with another hydra.run.dir or resume=false skip_completed=false"
        )
    return None


def _scored_checkpoint(trainer: L.Trainer, out_dir: Path) -> dict[str, Any] | None:
    """``{"file", "step"}`` of the checkpoint holding the tested weights (file relative to the run dir)."""
    callback = trainer.checkpoint_callback
    path = Path(getattr(callback, "last_model_path", "") or out_dir / "checkpoints" / "last.ckpt")
    summary = _checkpoint_summary(path)
    if summary is None or "step" not in summary:
        return None
    if summary["step"] != trainer.global_step:
        log.warning(
            "%s holds step %d, the tested weights are of step %d", path, summary["step"], trainer.global_step
        )
    try:
        file = str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:  # a checkpoint dir outside the run dir
        file = str(path)
    return {"file": file, "step": summary["step"]}


def _record_start_failure(out_dir: Path, record: dict[str, Any], started: float) -> None:
    """Best effort: note a start-up failure in metrics.json when the dir takes it (earlier results kept)."""
    try:
        check_output_dir(out_dir, 0.0)
        start_record(out_dir, {**record, "wall_seconds": round(time.time() - started, 1)}, started)
    except OSError as err:
        log.warning("could not record the failure in %s: %s", out_dir / METRICS_FILE, describe_os_error(err))


def _checkpoint_summary(path: Path) -> dict[str, Any] | None:
    """Where the last good checkpoint is and its step (None when none was saved)."""
    if not path.is_file():
        return None
    try:
        return {"path": str(path), "step": check_checkpoint(path)}
    except CheckpointError as err:
        return {"path": str(path), "error": str(err)}


def _finalise(
    record: dict[str, Any],
    module: DetectionModule | None,
    trainer: L.Trainer | None,
    timer: IterationTimer,
    started: float,
    out_dir: Path,
) -> dict[str, Any]:
    final = module.final_metrics if module is not None else {}
    record["metrics"] = final.get("test", {})
    if "test_single_pass" in final:  # model.tta on: "metrics" are with TTA, these without
        record["metrics_single_pass"] = final["test_single_pass"]
    record["val_metrics"] = final.get("val", {})
    if module is not None:  # val_history, per_class, detections_test (DetectionModule.record_fields)
        record.update(module.record_fields())
    record["seconds_per_iteration"] = timer.seconds_per_iteration
    record["iterations"] = int(trainer.global_step) if trainer is not None else 0
    record["wall_seconds"] = round(time.time() - started, 1)
    try:
        if is_rank_zero():  # DDP ranks share the run dir: global rank 0 writes its record
            write_json_atomic(out_dir / METRICS_FILE, record)
    except OSError as err:
        if record["status"] != "failed":
            raise
        # Recording a failure must not hide it (a full disk fails both); the "running" record stays.
        log.error("could not record the failure in %s: %s", out_dir / METRICS_FILE, describe_os_error(err))
    _finish_wandb()
    return record


#: set by :func:`main`: errors a user can fix end with one line instead of a traceback
_ONE_LINE_ERRORS = False


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra app: one run per composed config (a multirun calls it once per job)."""
    try:
        with hydra_ddp_job():  # Lightning's DDP children replay this job only (docs/scaling.md)
            record = run(cfg)
    except RunInterrupted as err:
        # Recorded (status interrupted): 128 + the signal, so that a scheduler or make sees the stop.
        print(f"ghmdet-train: {err.message}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_status) from None
    except Exception as err:
        line = error_line(err) if _ONE_LINE_ERRORS else None
        # In a multirun the job fails and the sweep goes on; Hydra reports the failed job at the end.
        if line is None or (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
            raise
        _print_error(line)
        raise SystemExit(2) from None
    ap = record.get("metrics", {}).get("AP")
    return float(ap) if ap is not None else None


def _lines(err: BaseException) -> list[str]:
    return [line.strip() for line in str(err).splitlines() if line.strip()]


def error_line(err: BaseException) -> str | None:
    """One line for an error a user can fix (config, data, checkpoint, output dir); None for anything else."""
    if isinstance(err, OutputDirError):
        return str(err.strerror)
    parse_problem = override_parse_problem(err)
    if parse_problem is not None:
        return f"config error: {parse_problem}"
    if isinstance(err, HydraException):
        # Composition errors ("Could not find 'loss/cls/ghm'", then the options and the search path) and
        # instantiation errors ("Error in call to target ...", then the cause).
        lines = _lines(err)
        if "Config search path:" in lines:
            lines = lines[: lines.index("Config search path:")]
        if lines and lines[-1].startswith("Available options in"):
            lines[-1] = lines[-1].rstrip(":") + ":"
        options = [line for line in lines if " " not in line and not line.endswith(".")]
        text = " ".join(line for line in lines if line not in options)
        if options:
            text += " " + ", ".join(options)
        cause = err.__cause__
        if cause is not None and str(cause).strip() and str(cause).strip() not in text:
            text += f" ({type(cause).__name__}: {' '.join(_lines(cause))})"
        text = " ".join(part for part in text.split() if not part.startswith("https://hydra.cc"))
        return f"config error: {text}"
    if isinstance(err, OSError):
        if err.errno not in UNWRITABLE_ERRNOS:
            return None
        return f"cannot write results: {describe_os_error(err)}"
    if not isinstance(err, USER_ERRORS):
        return None
    lines = _lines(err)
    if isinstance(err, DatasetError) and len(lines) > 1:
        # Raised in a DataLoader worker: torch wraps the message in the worker's traceback, whose last line
        # is the original message (naming the file and record) after the exception's qualified name.
        return lines[-1].removeprefix("ghmdet.data.annotations.DatasetError: ")
    return " ".join(lines)


def _unwritable_cause(err: BaseException) -> OSError | None:
    """The OSError of an unwritable or full dir behind ``err`` (``logging.config`` wraps the one of a log
    file handler in ``ValueError: Unable to configure handler``), or None."""
    cause = err.__cause__ or err.__context__
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in UNWRITABLE_ERRNOS:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _print_error(line: str) -> None:
    # Secrets never reach the terminal either.
    print(f"ghmdet-train: error: {redact(line)}", file=sys.stderr, flush=True)


def main() -> None:
    """Console entry point (``ghmdet-train``): the Hydra app, with one-line errors for fixable problems.

    An error a user can fix (an unknown choice, an invalid value, corrupt data, an unloadable checkpoint, an
    unwritable or full output dir) ends with one line ``ghmdet-train: error: ...`` on stderr and exit status
    2, instead of Hydra's report or a traceback. Anything else keeps its traceback (a bug). A user who sets
    ``HYDRA_FULL_ERROR=1`` gets full tracebacks for everything.
    """
    global _ONE_LINE_ERRORS
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        hydra_main()
        return
    _ONE_LINE_ERRORS = True
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises (composition errors, multirun failures) to here
    try:
        hydra_main()
    except Exception as err:
        line = error_line(err)
        if line is None and (unwritable := _unwritable_cause(err)) is not None:
            line = error_line(unwritable)  # e.g. Hydra's log file handler in a read-only run dir
        if line is None:
            raise
        _print_error(line)
        raise SystemExit(2) from None
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        _ONE_LINE_ERRORS = False


if __name__ == "__main__":
    main()
