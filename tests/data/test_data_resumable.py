"""The train loader's order and augmentation are pure functions of (seed, epoch, position), and its position
round-trips through ``state_dict``: a resumed run sees exactly the batches an uninterrupted one sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ghmdet.data.datamodule import DetectionDataModule
from ghmdet.data.resumable import ResumableDataLoader, ResumableRandomSampler, derive_seed, private_torch_rng
from ghmdet.data.synthetic import make_synthetic_coco


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_coco(
        tmp_path_factory.mktemp("resumable") / "synthetic", num_train=7, num_val=2, size=48
    )


def loader(root: Path, num_workers: int = 0, seed: int = 3) -> ResumableDataLoader:
    module = DetectionDataModule(
        root=str(root),
        train_images="images/train",
        train_annotations="annotations/instances_train.json",
        val_images="images/val",
        val_annotations="annotations/instances_val.json",
        batch_size=2,
        num_workers=num_workers,
        hflip_prob=0.5,
        vflip_prob=0.5,
        photometric=0.3,
        seed=seed,
    )
    module.setup("fit")
    train = module.train_dataloader()
    assert isinstance(train, ResumableDataLoader)
    return train


def epoch(train: ResumableDataLoader, number: int) -> list[Any]:
    train.sampler.set_epoch(number)
    return list(train)


def assert_same_batches(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for (images_a, targets_a), (images_b, targets_b) in zip(a, b, strict=True):
        for x, y in zip(images_a, images_b, strict=True):
            assert torch.equal(x, y)
        for x, y in zip(targets_a, targets_b, strict=True):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    sampler = ResumableRandomSampler(range(10), seed=5)
    first = sampler.order(0)
    assert sorted(first) == list(range(10)) and first == ResumableRandomSampler(range(10), seed=5).order(0)
    assert sampler.order(1) != first and ResumableRandomSampler(range(10), seed=6).order(0) != first
    sampler.set_epoch(1)
    keys = list(sampler)
    assert [index for index, _ in keys] == sampler.order(1)
    assert len({seed for _, seed in keys}) == 10  # every sample its own augmentation stream


def test_sampler_resumes_mid_epoch_and_rolls_over_at_its_end() -> None:
    sampler = ResumableRandomSampler(range(10), seed=5)
    full = list(ResumableRandomSampler(range(10), seed=5).__iter__())
    sampler.resume_at(0, 4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # the offset applies once
    sampler.resume_at(2, 10)  # epoch 2 was complete: continue with epoch 3
    sampler.set_epoch(3)
    assert [index for index, _ in sampler] == sampler.order(3)


def test_sharded_sampler_covers_the_epoch_like_distributed_sampler() -> None:
    shards = [ResumableRandomSampler(range(7), seed=1, num_replicas=3, rank=r) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    indices = [index for shard in shards for index, _ in shard]
    assert sorted(set(indices)) == list(range(7)) and len(indices) == 9  # padded by repetition
    seeds = [seed for shard in shards for _, seed in shard]
    assert len(set(seeds)) == 9  # a repeated image gets another augmentation


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_state_round_trip_gives_the_uninterrupted_batches(
    synthetic_root: Path, num_workers: int
) -> None:
    reference = loader(synthetic_root, num_workers)
    expected = epoch(reference, 0) + epoch(reference, 1)

    interrupted = loader(synthetic_root, num_workers)
    interrupted.sampler.set_epoch(0)
    iterator = iter(interrupted)
    seen = [next(iterator) for _ in range(2)]
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "consumed": 4, "dataset_size": 7, "num_replicas": 1}

    resumed = loader(synthetic_root, num_workers)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(0)  # Lightning sets the restored epoch again; the offset survives
    rest = list(resumed)
    assert resumed.state_dict()["consumed"] == 7
    assert_same_batches(seen + rest + epoch(resumed, 1), expected)


def test_augmentation_does_not_depend_on_workers_nor_touch_the_global_rng(synthetic_root: Path) -> None:
    before = torch.get_rng_state()
    in_process = epoch(loader(synthetic_root, 0), 4)
    assert torch.equal(torch.get_rng_state(), before)
    assert_same_batches(in_process, epoch(loader(synthetic_root, 2), 4))


def test_a_changed_dataset_refuses_the_position(synthetic_root: Path) -> None:
    train = loader(synthetic_root)
    with pytest.raises(ValueError, match="had 9 images, this one has 7"):
        train.load_state_dict({"epoch": 1, "consumed": 2, "dataset_size": 9, "num_replicas": 1})


def test_private_rng_is_seeded_and_restores_the_caller_state() -> None:
    torch.manual_seed(0)
    outside = torch.rand(3)
    torch.manual_seed(0)
    with private_torch_rng(derive_seed(1, 2, 3)):
        inside = torch.rand(3)
    with private_torch_rng(derive_seed(1, 2, 3)):
        assert torch.equal(torch.rand(3), inside)
    assert torch.equal(torch.rand(3), outside)
    assert derive_seed(1, 2, 3) != derive_seed(1, 2, 4)
