"""COCO mAP under DDP equals the single-device mAP: unpadded shards + whole-list gathering of the metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from ghmdet.data.samplers import eval_sampler
from ghmdet.evaluation import CocoDetectionMetrics

NUM_IMAGES = 7  # odd, and not a multiple of the world size: shards of 4 and 3 images
WORLD_SIZE = 2


def image_entry(index: int) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Detections and ground truth of one image: noisy hits, misses and false positives (0 < AP < 1)."""
    g = torch.Generator().manual_seed(index)
    n_gt = 1 + index % 4
    xy = torch.rand(n_gt, 2, generator=g) * 200
    gt = torch.cat([xy, xy + 20 + torch.rand(n_gt, 2, generator=g) * 60], 1)
    hits = gt + torch.randn(n_gt, 4, generator=g) * (2 + index)
    extra_xy = torch.rand(3, 2, generator=g) * 200
    false_pos = torch.cat([extra_xy, extra_xy + 30], 1)
    boxes = torch.cat([hits, false_pos])
    labels = torch.randint(0, 2, (len(boxes),), generator=g)
    labels[:n_gt] = torch.arange(n_gt) % 2
    preds = [{"boxes": boxes, "scores": torch.rand(len(boxes), generator=g), "labels": labels}]
    targets = [{"boxes": gt, "labels": torch.arange(n_gt) % 2}]
    return preds, targets


def evaluate(indices: list[int]) -> dict[str, float]:
    metric = CocoDetectionMetrics()
    for i in indices:
        metric.update(*image_entry(i))
    return {k: float(v) for k, v in metric.compute().items()}


def worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    try:
        sampler = eval_sampler(list(range(NUM_IMAGES)))  # the sampler DetectionDataModule uses under DDP
        assert sampler is not None
        indices = list(sampler)
        torch.save({"indices": indices, "metrics": evaluate(indices)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _metric_gathers_uneven_lists() -> bool:
    from torchmetrics.detection import MeanAveragePrecision

    return CocoDetectionMetrics._sync_dist is not MeanAveragePrecision._sync_dist


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_ddp_map_equals_single_device_map(tmp_path: Path) -> None:
    if not _metric_gathers_uneven_lists():
        pytest.fail(
            "CocoDetectionMetrics lacks the _sync_dist hook (ghmdet.distributed.sync_list_states): "
            "torchmetrics would deadlock on shards of different sizes; apply the evaluation.py hook "
            "(docs/scaling.md)"
        )
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    # every image exactly once over the ranks, shard sizes 4 and 3
    shards = [r["indices"] for r in ranks]
    assert sorted(i for shard in shards for i in shard) == list(range(NUM_IMAGES))
    assert [len(s) for s in shards] == [4, 3]
    single = evaluate(list(range(NUM_IMAGES)))
    assert 0.05 < single["AP"] < 0.95 and 0.05 < single["AP50"] < 0.99
    for r in ranks:  # every rank computes the same, global, numbers
        assert r["metrics"] == pytest.approx(single, abs=1e-7)


def test_padding_would_have_changed_the_numbers() -> None:
    """The check above is sensitive: Lightning's default (padded) sampler repeats an image, and mAP moves."""
    padded = [
        i
        for rank in range(WORLD_SIZE)
        for i in DistributedSampler(range(NUM_IMAGES), WORLD_SIZE, rank, False)
    ]
    assert len(padded) == NUM_IMAGES + 1
    assert evaluate(padded)["AP"] != pytest.approx(evaluate(list(range(NUM_IMAGES)))["AP"], abs=1e-4)


def test_eval_sampler_shards_without_padding() -> None:
    dataset = list(range(11))
    shards = [list(eval_sampler(dataset, num_replicas=4, rank=r)) for r in range(4)]
    assert shards == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7]]
    assert eval_sampler(dataset) is None  # no process group: the plain sequential loader
    assert eval_sampler(dataset, num_replicas=1, rank=0) is None
    with pytest.raises(ValueError, match="2 image"):
        eval_sampler([0, 1], num_replicas=3, rank=0)
