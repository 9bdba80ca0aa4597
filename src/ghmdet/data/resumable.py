"""The train loader: order and augmentation are pure functions of (seed, epoch, position); resumable.

Resumable, reproducible training order (``docs/reliability.md``): the train loader is a
:class:`ResumableDataLoader` over a :class:`ResumableRandomSampler`. The shuffling order of epoch ``e`` is a
function of ``(seed, e)`` alone, and the random augmentation of a sample is a function of
``(seed, e, index)`` alone (each sample's transforms run on a private RNG stream), so neither depends on how
many epochs ran in this process, on worker processes or on prefetching. The loader reports its position
(epoch, samples served) through ``state_dict()``; Lightning stores it in the checkpoint and a resumed run
continues with the very next sample, mid-epoch included.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger(__name__)

#: A training sample key: (dataset index, seed of its augmentation RNG stream).
SampleKey = tuple[int, int]
_UINT64 = 2**64 - 1
# Spawn-key tags keeping the shuffling and the augmentation streams apart.
_PERMUTATION_STREAM, _AUGMENTATION_STREAM = 0, 1


def derive_seed(seed: int, *keys: int) -> int:
    """A 64-bit seed that is a pure function of ``seed`` and ``keys`` (NumPy ``SeedSequence`` mixing)."""
    sequence = np.random.SeedSequence(entropy=seed & _UINT64, spawn_key=tuple(int(k) for k in keys))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


@contextmanager
def private_torch_rng(seed: int) -> Iterator[None]:
    """Run the block on torch's CPU generator seeded with ``seed``, then put the caller's state back.

    Only the CPU generator is touched (``torch.manual_seed`` would also reseed every CUDA device), so code
    that draws from the global generator (the transforms) becomes a pure function of ``seed`` without
    disturbing the training process's own random stream.
    """
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(saved)


def process_group() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group, ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ResumableRandomSampler(DistributedSampler):
    """Shuffles a dataset per epoch, reproducibly and resumably, sharded over ``num_replicas`` processes.

    Epoch ``e`` visits ``randperm(len(dataset))`` drawn from a generator seeded with
    ``derive_seed(seed, 0, e)`` (the same on every process), padded by repetition to a multiple of
    ``num_replicas`` as :class:`DistributedSampler` does; process ``rank`` takes the positions
    ``rank::num_replicas``.
    Each position ``p`` yields ``(index, derive_seed(seed, 1, e, p))``: the second item seeds that sample's
    augmentation (see :meth:`ghmdet.data.dataset.CocoDetectionDataset.__getitem__`). Lightning calls
    :meth:`set_epoch` at each epoch start. :meth:`resume_at` makes the next iteration of an epoch skip the
    samples already consumed.

    It is a :class:`DistributedSampler` so that Lightning keeps it under DDP instead of wrapping it (the
    wrapper would hide the position); with the defaults (one process) no process group is needed.
    """

    def __init__(self, dataset: Sized, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self._skip = 0  # samples of `epoch` to skip at the next iteration (set by resume_at)
        #: (epoch, first position) of the iteration in progress; None before the first one.
        self.active: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (a pending resume offset survives only for its epoch)."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Continue epoch ``epoch`` after this process's first ``consumed`` samples (all: the next epoch)."""
        if consumed >= self.num_samples:
            epoch, consumed = epoch + 1, 0
        self.epoch, self._skip = int(epoch), max(int(consumed), 0)

    def positions(self, epoch: int) -> list[tuple[int, int]]:
        """This process's ``(position, index)`` pairs of ``epoch``, in visiting order."""
        size = len(self.dataset)  # type: ignore[arg-type]
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _PERMUTATION_STREAM, epoch))
        order = torch.randperm(size, generator=generator).tolist()
        if size and self.total_size > size:  # pad as DistributedSampler does
            order += (order * math.ceil(self.total_size / size))[: self.total_size - size]
        return [(p, order[p]) for p in range(self.rank, self.total_size, self.num_replicas)]

    def order(self, epoch: int) -> list[int]:
        """This process's shuffled indices of ``epoch``."""
        return [index for _, index in self.positions(epoch)]

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        epoch, start = self.epoch, self._skip
        self._skip = 0
        self.active = (epoch, start)
        for position, index in self.positions(epoch)[start:]:
            yield index, derive_seed(self.seed, _AUGMENTATION_STREAM, epoch, position)


class ResumableDataLoader(DataLoader):
    """A :class:`DataLoader` over a :class:`ResumableRandomSampler` that checkpoints its position.

    It counts the batches it has handed out in the current epoch; ``state_dict()`` turns that into
    ``{"epoch", "consumed"}`` samples, and ``load_state_dict()`` makes the next iteration continue there.
    Lightning saves and restores this state with the loop state (its ``_Stateful`` protocol). The count is
    taken where batches leave the loader, so worker processes and their prefetching do not shift it.
    """

    def __init__(self, dataset: Dataset[Any], sampler: ResumableRandomSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._served = 0

    @property
    def resumable_sampler(self) -> ResumableRandomSampler:
        """The sampler whose epoch and offset the state describes."""
        if not isinstance(self.sampler, ResumableRandomSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableRandomSampler, got {type(self.sampler)}")
        return self.sampler

    def __iter__(self) -> Iterator[Any]:
        self._served = 0
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Position: ``{"epoch": e, "consumed": samples of e this process handed out, ...sizes}``."""
        sampler = self.resumable_sampler
        if sampler.active is None:  # nothing drawn yet in this process
            epoch, consumed = sampler.epoch, sampler._skip
        else:
            epoch, start = sampler.active
            consumed = min(start + self._served * int(self.batch_size or 1), len(sampler))
        return {
            "epoch": epoch,
            "consumed": consumed,
            "dataset_size": len(self.dataset),  # type: ignore[arg-type]
            "num_replicas": sampler.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` (same training data; a changed process count is mapped)."""
        sampler = self.resumable_sampler
        size = len(self.dataset)  # type: ignore[arg-type]
        if int(state.get("dataset_size", size)) != size:
            raise ValueError(
                f"the checkpointed train loader had {state['dataset_size']} images, this one has {size}: "
                "the training data changed, so the position in the epoch cannot be restored"
            )
        consumed = int(state["consumed"])
        replicas = int(state.get("num_replicas", sampler.num_replicas))
        if replicas != sampler.num_replicas:
            consumed = consumed * replicas // sampler.num_replicas
            logger.warning(
                "resuming on %d processes from a checkpoint of %d: the position in epoch %d is approximate",
                sampler.num_replicas,
                replicas,
                state["epoch"],
            )
        sampler.resume_at(int(state["epoch"]), consumed)
        self._served = 0
