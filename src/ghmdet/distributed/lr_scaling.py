"""The linear scaling rule of the paper recipe: ``lr = base_lr * global_batch / base_batch``.

Registered on import as the resolver ``ghmdet.scaled_lr``, which the recipes' ``optimizer.lr`` calls.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


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


OmegaConf.register_new_resolver("ghmdet.scaled_lr", scaled_lr, replace=True)
