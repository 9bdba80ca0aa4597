"""Lightning's DDP re-launch inside a Hydra job (``docs/scaling.md``).

:func:`hydra_ddp_job` wraps one Hydra job (the entry point calls it around ``run(cfg)``). Lightning starts
ranks > 0 of ``trainer=ddp`` by re-running ``sys.argv`` (``_SubprocessScriptLauncher``). In a Hydra multirun
that re-runs the whole sweep (``-m`` and the sweep lists) in the single-run output pattern: duplicated jobs,
stray output dirs and W&B runs. Inside the scope the children are started as ``python -m ghmdet.train <this
job's overrides> hydra.run.dir=<this job's output dir>`` (no ``-m``), the scope waits for them when the job
ends, and it then closes the process group and restores the environment variables Lightning set, so that the
next job of a sequential sweep starts a fresh DDP group. Under SLURM (submitit: one task per GPU) Lightning's
``SLURMEnvironment`` creates no processes and none of this is needed; the scope is then a no-op apart from the
cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from ghmdet.distributed.gpu_claim import ONE_GPU_PER_JOB_ENV, claim_gpu

log = logging.getLogger(__name__)

#: The module Lightning's children run (``python -m ghmdet.train``); never ``__main__``, which is a launcher's
#: worker module under joblib / submitit.
ENTRY_MODULE = "ghmdet.train"

#: Environment variables that Lightning's launcher, ``seed_everything`` and the thread heuristic write into
#: the parent's environment. Left behind, the next job of a sequential sweep would believe it was started
#: externally as rank 0 of a finished group (``LOCAL_RANK`` set) and wait for peers that never come.
DDP_ENV_KEYS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "RANK",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
    "OMP_NUM_THREADS",
)

#: Hydra overrides (of the ``hydra`` namespace) that describe the sweep or the parent's own run and must not
#: reach a child: a child is a single run in the parent job's output dir.
_PARENT_ONLY_HYDRA_OVERRIDES = re.compile(
    r"^[+~]*hydra(\.|/)(sweep|sweeper|launcher|run|mode|job\.name|job\.id|job\.num|output_subdir)\b"
)


def _quote_override_value(value: str) -> str:
    """A Hydra-grammar quoted string holding ``value`` verbatim (paths with spaces, ``=``, ``,``, quotes)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def hydra_child_command(local_rank: int, entry_module: str = ENTRY_MODULE) -> tuple[list[str], str]:
    """Command and working dir for DDP rank ``local_rank`` of the current Hydra job.

    The command replays exactly this job's configuration: its task overrides (for a multirun job, the
    sweep's values for this job, not the sweep lists), the ``hydra`` overrides that shape a single run
    (e.g. ``hydra.job.chdir``), and ``hydra.run.dir`` set to this job's output dir, so that every rank writes
    under the same dir. No ``-m``: a child is one run, and it runs none of the job's Hydra callbacks.
    ``hydra.output_subdir=null`` keeps the children from rewriting ``.hydra/``; ``hydra.job.name`` names
    their log file ``train_ddp_process_<rank>.log``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    if not HydraConfig.initialized():
        raise RuntimeError(
            "hydra_child_command needs an initialised Hydra job (call it from the task function)"
        )
    hydra_cfg = HydraConfig.get()
    task_overrides = [str(o) for o in hydra_cfg.overrides.task]
    hydra_overrides = [
        str(o) for o in hydra_cfg.overrides.hydra if not _PARENT_ONLY_HYDRA_OVERRIDES.match(str(o))
    ]
    output_dir = str(hydra_cfg.runtime.output_dir)
    # Hydra callbacks are job-level hooks (e.g. the ablation sweep's failure bookkeeping, which would report a
    # failed child as a success): they run once per job, in the parent, never in a child.
    no_callbacks = [f"~hydra.callbacks.{name}" for name in (hydra_cfg.get("callbacks") or {})]
    command = [
        sys.executable,
        "-m",
        entry_module,
        *task_overrides,
        *hydra_overrides,
        *no_callbacks,
        f"hydra.run.dir={_quote_override_value(output_dir)}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def _launcher_modules() -> list[Any]:
    """Lightning's launcher modules that hold a reference to ``_hydra_subprocess_cmd``."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

    return [fabric_launcher, pytorch_launcher]


def _terminate(procs: Sequence[subprocess.Popen[Any]], grace_s: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        if proc.poll() is None:
            proc.kill()


def _wait_for_children(procs: Sequence[subprocess.Popen[Any]], timeout_s: float, failed: bool) -> None:
    """Wait for the job's DDP children; stop them when the job failed or they outlive ``timeout_s``."""
    if not procs:
        return
    # After a failure on rank 0 the children may block in a collective that never completes.
    deadline = time.monotonic() + (min(timeout_s, 30.0) if failed else timeout_s)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    alive = [p for p in procs if p.poll() is None]
    if alive:
        log.warning("stopping %d DDP child process(es) still running at the end of the job", len(alive))
        _terminate(alive, grace_s=10.0)
    bad = [p.returncode for p in procs if p.returncode not in (0, None)]
    if bad and not failed:
        # After rank 0 finished (every collective done): its record stands; say where to look.
        log.error("DDP child process(es) exited with code(s) %s; see train_ddp_process_*.log", bad)


def _close_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def hydra_ddp_job(entry_module: str = ENTRY_MODULE, child_timeout_s: float = 600.0) -> Iterator[None]:
    """Scope of one Hydra job under any trainer (a no-op for single-process runs); see the module docstring.

    On entry: claim a GPU when the job runs under ``hydra/launcher=joblib_gpus``; make Lightning start DDP
    children with :func:`hydra_child_command`. On exit: wait for the children (``child_timeout_s``, 30 s after
    a failure), close the process group and restore the DDP environment variables and thread count.
    """
    if os.environ.get(ONE_GPU_PER_JOB_ENV, "") not in ("", "0"):
        claim_gpu()
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    saved_env = {key: os.environ.get(key) for key in DDP_ENV_KEYS}
    saved_threads = torch.get_num_threads()
    spawned: list[subprocess.Popen[Any]] = []
    modules = _launcher_modules()
    saved_builders = [module._hydra_subprocess_cmd for module in modules]
    original_call = _SubprocessScriptLauncher._call_children_scripts

    def build(local_rank: int) -> tuple[list[str], str]:
        return hydra_child_command(local_rank, entry_module)

    def call_children_scripts(launcher: _SubprocessScriptLauncher) -> None:
        original_call(launcher)
        spawned.extend(launcher.procs)

    for module in modules:
        module._hydra_subprocess_cmd = build
    _SubprocessScriptLauncher._call_children_scripts = call_children_scripts  # type: ignore[method-assign]
    failed = True
    try:
        yield
        failed = False
    finally:
        _SubprocessScriptLauncher._call_children_scripts = original_call  # type: ignore[method-assign]
        for module, builder in zip(modules, saved_builders):
            module._hydra_subprocess_cmd = builder
        try:
            _wait_for_children(spawned, child_timeout_s, failed)
        finally:
            _close_process_group()
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            torch.set_num_threads(saved_threads)
