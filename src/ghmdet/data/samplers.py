"""Evaluation sampler under DDP: every image exactly once over all ranks (no padding, no drops).

Lightning injects a ``DistributedSampler`` into every loader under DDP. For validation and test that sampler
pads the split to a multiple of the world size by repeating images, and a repeated image counts twice in COCO
mAP. :func:`eval_sampler` returns Lightning's own ``UnrepeatedDistributedSampler`` instead (strided shards:
rank r gets images r, r + W, r + 2W, ...; shard sizes may differ by one). Being a ``DistributedSampler``, it
is left in place by Lightning. The metric side of uneven shards is
:func:`ghmdet.distributed.sync_list_states`.
"""

from __future__ import annotations

from collections.abc import Sized

import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset


def eval_sampler(
    dataset: Dataset, num_replicas: int | None = None, rank: int | None = None
) -> UnrepeatedDistributedSampler | None:
    """An unpadded, unshuffled distributed sampler for ``dataset``, or None outside a multi-process group.

    ``num_replicas`` / ``rank`` default to the initialised process group's. Raises ``ValueError`` when the
    split has fewer images than there are ranks (a rank with no batch would stall the others in the first
    evaluation forward, where DDP synchronises buffers).
    """
    if num_replicas is None:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        num_replicas = dist.get_world_size()
    if num_replicas <= 1:
        return None
    if rank is None:
        rank = dist.get_rank()
    if not isinstance(dataset, Sized):
        raise TypeError("eval_sampler needs a dataset with __len__")
    if 0 < len(dataset) < num_replicas:
        raise ValueError(
            f"the evaluation split has {len(dataset)} image(s) for {num_replicas} processes; every process "
            "needs at least one: evaluate on fewer devices or a larger split"
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
