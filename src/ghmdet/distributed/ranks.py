"""Which process is this: global rank 0 (the one that writes the run record) or another rank."""

from __future__ import annotations

import os

#: Environment variables whose non-zero value marks a process that is not global rank 0 (torchrun, Lightning's
#: children, Lightning's other nodes, SLURM tasks).
_RANK_ENV_KEYS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


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
