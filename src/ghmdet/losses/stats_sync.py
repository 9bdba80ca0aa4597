"""Cross-process gradient-norm histogram for ``sync_stats=True``.

Contract: when ``torch.distributed`` is initialised, the per-bin counts of this call and the loss normaliser
N are summed over all ranks in one collective (a single float64 tensor of ``bins + 1`` values), so every rank
sees the global histogram, updates its EMA identically and computes identical weights. Each rank then returns
``world_size * sum_local(beta * loss) / N_global``: the mean of these over ranks is the single-process loss on
the concatenated batch, and DDP's gradient averaging yields the single-process gradient. Every rank must call
the loss the same number of times (it is a collective). Without an initialised process group this is a no-op.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def distributed_world_size() -> int:
    """World size of the default process group, 1 when torch.distributed is unavailable or uninitialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_histogram(counts: Tensor, total: Tensor) -> tuple[Tensor, Tensor, int]:
    """Sum ``counts`` (``[bins]``) and ``total`` (scalar) over ranks in one all-reduce.

    Returns ``(counts, total, world_size)``; the inputs unchanged and 1 without a process group. Counts travel
    as float64 so that they stay exact far beyond 2**24 elements per bin.
    """
    world_size = distributed_world_size()
    if world_size == 1:
        return counts, total, 1
    packed = torch.cat([counts.to(torch.float64), total.to(torch.float64).reshape(1)])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return packed[:-1], packed[-1].to(torch.float32), world_size


def all_ranks_ok(ok: Tensor) -> Tensor:
    """Whether ``ok`` (a bool scalar) holds on every rank: one all-reduce; ``ok`` itself without a group."""
    if distributed_world_size() == 1:
        return ok
    failures = (~ok).to(torch.float32).reshape(1)
    dist.all_reduce(failures, op=dist.ReduceOp.SUM)
    return failures[0] == 0
