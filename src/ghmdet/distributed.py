"""Multi-GPU, multi-node and cluster plumbing around Lightning DDP and Hydra's launchers.

Nothing here replaces an engine: Lightning's ``DDPStrategy`` runs the processes, Hydra's submitit / joblib
launchers run the sweeps. This module fixes the seams between them (``docs/scaling.md`` explains each):

- :func:`hydra_ddp_job` wraps one Hydra job (the entry point calls it around ``run(cfg)``). Lightning starts
  ranks > 0 of ``trainer=ddp`` by re-running ``sys.argv`` (``_SubprocessScriptLauncher``). In a Hydra multirun
  that re-runs the whole sweep (``-m`` and the sweep lists) in the single-run output pattern: duplicated jobs,
  stray output dirs and W&B runs. Inside the scope the children are started as
  ``python -m ghmdet.train <this job's overrides> hydra.run.dir=<this job's output dir>`` (no ``-m``), the
  scope waits for them when the job ends, and it then closes the process group and restores the environment
  variables Lightning set, so that the next job of a sequential sweep starts a fresh DDP group.
  Under SLURM (submitit: one task per GPU) Lightning's ``SLURMEnvironment`` creates no processes and none of
  this is needed; the scope is then a no-op apart from the cleanup.
- :func:`is_rank_zero` tells, before any Trainer exists, whether this process is global rank 0 (the one that
  writes ``metrics.json``).
- :func:`claim_gpu` gives each job of the local joblib launcher (``hydra/launcher=joblib_gpus``) one GPU of
  its own via lock files; the ``ghmdet.gpu_count`` resolver sizes ``n_jobs``.
- :func:`scaled_lr` (resolver ``ghmdet.scaled_lr``) is the linear scaling rule of the paper recipe:
  ``lr = base_lr * global_batch / base_batch``.
- :func:`sync_list_states` gathers torchmetrics list states whose length differs between ranks (COCO mAP over
  an unpadded evaluation split, see :mod:`ghmdet.data.samplers`).
- :class:`GHMStateCheck` and :class:`EvalCoverageCheck` are Lightning callbacks that check, under DDP, that
  every rank holds the same GHM statistics and that evaluation saw every image exactly once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

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

#: Environment variables whose non-zero value marks a process that is not global rank 0 (torchrun, Lightning's
#: children, Lightning's other nodes, SLURM tasks).
_RANK_ENV_KEYS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")

#: Hydra overrides (of the ``hydra`` namespace) that describe the sweep or the parent's own run and must not
#: reach a child: a child is a single run in the parent job's output dir.
_PARENT_ONLY_HYDRA_OVERRIDES = re.compile(
    r"^[+~]*hydra(\.|/)(sweep|sweeper|launcher|run|mode|job\.name|job\.id|job\.num|output_subdir)\b"
)

#: Set by ``conf/hydra/launcher/joblib_gpus.yaml`` (``hydra.job.env_set``): give each job one GPU.
ONE_GPU_PER_JOB_ENV = "GHMDET_ONE_GPU_PER_JOB"
#: Optional explicit GPU pool for :func:`claim_gpu` (comma-separated ids); default: CUDA_VISIBLE_DEVICES, then
#: ``nvidia-smi``.
GPU_POOL_ENV = "GHMDET_GPU_POOL"


# ----------------------------------------------------------------------------------------------------- ranks


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, decided from the environment (works before any Trainer exists).

    A process is rank 0 unless one of ``RANK``, ``LOCAL_RANK``, ``NODE_RANK`` or ``SLURM_PROCID`` holds a
    non-zero value: Lightning's re-launched children (``LOCAL_RANK``), the main process of another node
    (``NODE_RANK``), torchrun (``RANK``) and SLURM tasks (``SLURM_PROCID``) are all covered.
    """
    for key in _RANK_ENV_KEYS:
        value = os.environ.get(key, "").strip()
        if value and value != "0":
            return False
    return True


# ------------------------------------------------------------------------------- Lightning + Hydra re-launch


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


# --------------------------------------------------------------------------------- one GPU per joblib job

#: (GPU id, open lock file) held by this process once it has claimed a GPU; kept for the process lifetime,
#: because CUDA reads CUDA_VISIBLE_DEVICES once and a joblib worker runs several jobs.
_CLAIMED: tuple[str, Any] | None = None


def gpu_pool() -> list[str]:
    """GPU ids to share among jobs: ``GHMDET_GPU_POOL``, else ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi``.

    Never initialises CUDA (CUDA_VISIBLE_DEVICES must still be settable afterwards). Empty when no GPU is
    found.
    """
    for key in (GPU_POOL_ENV, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(key)
        if value is not None:
            return [part.strip() for part in value.split(",") if part.strip() and part.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_count() -> int:
    """Number of GPUs in :func:`gpu_pool`, at least 1 (resolver ``ghmdet.gpu_count``: joblib ``n_jobs``)."""
    return max(len(gpu_pool()), 1)


def _default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"ghmdet-gpu-locks-{os.getuid()}"


def claim_gpu(
    lock_dir: str | os.PathLike[str] | None = None,
    pool: Sequence[str] | None = None,
    wait_s: float | None = None,
    poll_s: float = 5.0,
) -> str:
    """Give this process one GPU of its own: set ``CUDA_VISIBLE_DEVICES`` to it and return its id.

    Each GPU of ``pool`` (default :func:`gpu_pool`) has a lock file under ``lock_dir`` (default: a per-user
    dir in the temp dir, shared by all sweeps of the user on this machine); the first one this process can
    ``flock`` is its GPU, held until the process exits (the OS releases the lock even after a crash). A
    process keeps the GPU it claimed for all later jobs. With every GPU taken it waits up to ``wait_s``
    seconds (default ``GHMDET_GPU_WAIT_S`` or 3600), then raises ``RuntimeError``.
    """
    global _CLAIMED
    if _CLAIMED is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = _CLAIMED[0]
        return _CLAIMED[0]
    ids = list(pool) if pool is not None else gpu_pool()
    if not ids:
        raise RuntimeError(
            "one GPU per job was requested (hydra/launcher=joblib_gpus) but no GPU was found: set "
            f"{GPU_POOL_ENV}=0,1,... or CUDA_VISIBLE_DEVICES, or use another launcher"
        )
    if wait_s is None:
        wait_s = float(os.environ.get("GHMDET_GPU_WAIT_S", "3600"))
    directory = Path(lock_dir) if lock_dir is not None else _default_lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        for gpu in ids:
            handle = open(directory / f"gpu{gpu}.lock", "a+")  # noqa: SIM115 (held for the process lifetime)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                handle.close()
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _CLAIMED = (gpu, handle)
            os.environ.setdefault(GPU_POOL_ENV, ",".join(ids))
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            log.info("job process %d uses GPU %s (locks in %s)", os.getpid(), gpu, directory)
            return gpu
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"all GPUs {ids} are held by other ghmdet jobs (locks in {directory}); lower "
                "hydra.launcher.n_jobs or wait for them"
            )
        if not announced:
            log.warning("all GPUs %s are busy; waiting up to %.0f s for one", ids, wait_s)
            announced = True
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------- linear lr scaling


def scaled_lr(
    base_lr: float, base_batch: int, batch_per_device: int, devices: Any, num_nodes: Any = 1
) -> float:
    """Linear scaling rule: ``base_lr * (batch_per_device * devices * num_nodes) / base_batch``.

    ``devices`` must be a count (or a list of device ids); ``"auto"`` / ``-1`` cannot be scaled from the
    config, so they are rejected with the fix in the message.
    """
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    else:
        try:
            count = int(devices)
        except (TypeError, ValueError):
            count = -1
    if count < 1:
        raise ValueError(
            f"the learning rate is scaled with the global batch, which needs trainer.devices as a number of "
            f"devices, got {devices!r}; pass e.g. trainer.devices=8 (or set optimizer.lr explicitly)"
        )
    global_batch = int(batch_per_device) * count * int(num_nodes)
    if global_batch < 1 or int(base_batch) < 1:
        raise ValueError(f"batch sizes must be positive, got global {global_batch}, base {base_batch}")
    return float(base_lr) * global_batch / int(base_batch)


def register_resolvers() -> None:
    """Register ``ghmdet.scaled_lr`` and ``ghmdet.gpu_count`` (idempotent; done on import of this module)."""
    OmegaConf.register_new_resolver("ghmdet.scaled_lr", scaled_lr, replace=True)
    OmegaConf.register_new_resolver("ghmdet.gpu_count", gpu_count, replace=True)


register_resolvers()


# ------------------------------------------------------------------ torchmetrics over uneven per-rank lists


def sync_list_states(metric: Any, process_group: Any = None) -> None:
    """All-gather a torchmetrics metric's list states when ranks hold different numbers of entries.

    torchmetrics gathers a list state element by element, one collective each, which deadlocks (or mixes
    up tensors) when ranks evaluated different numbers of images, as they do over an unpadded split. Here each
    list travels whole in one ``all_gather_object`` (on the CPU) and the entries are interleaved rank by
    rank (``r0[0], r1[0], r0[1], ...``), which restores dataset order for the strided
    :class:`lightning.pytorch.overrides.distributed.UnrepeatedDistributedSampler`. Tensor states with a
    reduction are synced as torchmetrics does. Meant as the body of a metric's ``_sync_dist`` override.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    group = process_group if process_group is not None else getattr(metric, "process_group", None)
    world_size = dist.get_world_size(group)
    for attr, reduction in metric._reductions.items():
        value = getattr(metric, attr)
        if isinstance(value, list):
            local = [t.detach().cpu() if isinstance(t, torch.Tensor) else t for t in value]
            gathered: list[list[Any] | None] = [None] * world_size
            dist.all_gather_object(gathered, local, group=group)
            merged = []
            longest = max(len(part or []) for part in gathered)
            for index in range(longest):
                for part in gathered:
                    if part is not None and index < len(part):
                        item = part[index]
                        merged.append(item.to(metric.device) if isinstance(item, torch.Tensor) else item)
            setattr(metric, attr, merged)
        elif isinstance(value, torch.Tensor):
            stacked = torch.stack(_all_gather_tensor(value, group))
            setattr(metric, attr, reduction(stacked) if reduction is not None else stacked)


def _all_gather_tensor(tensor: torch.Tensor, group: Any) -> list[torch.Tensor]:
    from torchmetrics.utilities.distributed import gather_all_tensors

    return gather_all_tensors(tensor, group=group)


# ------------------------------------------------------------------------------------------------ callbacks


def _ghm_losses(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    from ghmdet.losses.ghm import GradientHarmonizedLoss

    return [(name, m) for name, m in module.named_modules() if isinstance(m, GradientHarmonizedLoss)]


class GHMStateCheck(L.Callback):
    """Checks at the end of training that every rank holds the same GHM statistics (``sync_stats=True``).

    With ``sync_stats`` on, the histogram is all-reduced, so the EMA buffers (``acc_sum``) and the latest
    histogram (``last_counts``) must agree bit for bit on all ranks; a difference means the statistics were
    not global, and ``strict`` turns it into an error. Losses with ``sync_stats=False`` are reported, not
    checked (per-rank statistics are then expected). ``dump=True`` also writes each rank's buffers to
    ``<run dir>/ghm_state/rank<r>.pt``.
    """

    def __init__(self, strict: bool = True, dump: bool = False) -> None:
        self.strict = strict
        self.dump = dump

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {
            f"{name}.{buffer}": getattr(loss, buffer).detach().clone()
            for name, loss in _ghm_losses(pl_module)
            for buffer in ("acc_sum", "last_counts")
        }
        if self.dump:
            out_dir = Path(trainer.default_root_dir) / "ghm_state"
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.cpu() for k, v in state.items()}, out_dir / f"rank{trainer.global_rank}.pt")
        if trainer.world_size == 1:
            return
        synced = {name for name, loss in _ghm_losses(pl_module) if getattr(loss, "sync_stats", False)}
        mismatched = []
        for key, value in state.items():
            gathered = trainer.strategy.all_gather(value)  # [world, bins]; every rank takes part
            if key.rsplit(".", 1)[0] in synced and not bool((gathered == gathered[0]).all()):
                mismatched.append(key)
        if mismatched:
            message = f"GHM statistics differ between ranks although sync_stats=True: {mismatched}"
            if self.strict:
                raise RuntimeError(message)
            log.warning(message)


class EvalCoverageCheck(L.Callback):
    """Checks that each validation / test pass saw every image of its split exactly once over all ranks.

    Lightning's default ``DistributedSampler`` pads the split by repeating images, which biases COCO mAP; the
    suite's unpadded sampler must make the union of the ranks' images equal the dataset. The check gathers the
    ``image_id`` of every evaluated target (one all-gather per pass) and raises ``RuntimeError`` on duplicates
    or missing images when ``strict``. ``dump=True`` writes the counts to ``<run dir>/eval_coverage.json``
    (rank 0).
    """

    def __init__(self, strict: bool = True, dump: bool = False) -> None:
        self.strict = strict
        self.dump = dump
        self._seen: list[int] = []
        self.reports: dict[str, dict[str, Any]] = {}

    def _reset(self, *_: Any) -> None:
        self._seen = []

    on_validation_epoch_start = _reset
    on_test_epoch_start = _reset

    def _record(self, batch: Any) -> None:
        _, targets = batch
        self._seen.extend(int(t["image_id"]) for t in targets)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._record(batch)

    on_test_batch_end = on_validation_batch_end

    def _check(self, trainer: L.Trainer, stage: str, dataloaders: Any) -> None:
        if trainer.sanity_checking:
            return
        seen = list(self._seen)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list[list[int] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, seen)
            seen = [i for part in parts for i in (part or [])]
        loader = dataloaders[0] if isinstance(dataloaders, (list, tuple)) else dataloaders
        dataset = getattr(loader, "dataset", None)
        expected = list(getattr(dataset, "image_ids", [])) if dataset is not None else []
        limit = trainer.limit_val_batches if stage == "val" else trainer.limit_test_batches
        if limit != 1.0:
            expected = []  # a deliberately truncated pass: only duplicates are checked
        duplicates = len(seen) - len(set(seen))
        missing = sorted(set(expected) - set(seen)) if expected else []
        report = {
            "images_evaluated": len(seen),
            "unique_images": len(set(seen)),
            "dataset_images": len(expected) if expected else None,
            "duplicates": duplicates,
            "missing": len(missing),
            "world_size": trainer.world_size,
        }
        self.reports[stage] = report
        if self.dump and trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / "eval_coverage.json"
            previous = json.loads(path.read_text()) if path.is_file() else {}
            previous[stage] = report
            path.write_text(json.dumps(previous, indent=2) + "\n")
        if duplicates or missing:
            message = (
                f"{stage} evaluation over {trainer.world_size} rank(s) saw {duplicates} duplicated and "
                f"{len(missing)} missing image(s) (ids {missing[:10]}...); COCO mAP would be biased"
            )
            if self.strict:
                raise RuntimeError(message)
            log.warning(message)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, "test", trainer.test_dataloaders)
