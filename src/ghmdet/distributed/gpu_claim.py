"""One GPU per job of the local joblib launcher (``hydra/launcher=joblib_gpus``), claimed through lock files.

:func:`claim_gpu` gives each job process a GPU of its own before CUDA starts; the ``ghmdet.gpu_count``
resolver (registered on import) sizes the launcher's ``n_jobs``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

#: Set by ``conf/hydra/launcher/joblib_gpus.yaml`` (``hydra.job.env_set``): give each job one GPU.
ONE_GPU_PER_JOB_ENV = "GHMDET_ONE_GPU_PER_JOB"
#: Optional explicit GPU pool for :func:`claim_gpu` (comma-separated ids); default: CUDA_VISIBLE_DEVICES, then
#: ``nvidia-smi``.
GPU_POOL_ENV = "GHMDET_GPU_POOL"


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


OmegaConf.register_new_resolver("ghmdet.gpu_count", gpu_count, replace=True)
