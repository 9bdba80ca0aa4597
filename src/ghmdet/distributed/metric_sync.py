"""torchmetrics over uneven per-rank lists: COCO mAP over an unpadded split (:mod:`ghmdet.data.samplers`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


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
