"""sync_stats=True across a 2-process gloo group equals the single-process loss on the concatenated batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ghmdet.losses import GHMCLoss, GHMRLoss

WORLD_SIZE = 2
STEPS = 4


def rank_batch(step: int, rank: int):
    """Different data on each rank (different sizes too), reproducible from (step, rank)."""
    generator = torch.Generator().manual_seed(1000 * step + rank)
    rows = 30 + 10 * rank
    logits = torch.randn(rows, 4, generator=generator) * 3
    targets = (torch.rand(rows, 4, generator=generator) < 0.2).float()
    valid = (torch.rand(rows, generator=generator) > 0.2).float()
    pred = torch.randn(rows, 4, generator=generator) * 0.05
    return logits, targets, valid, pred


def worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    try:
        cls_loss = GHMCLoss(sync_stats=True)
        reg_loss = GHMRLoss(sync_stats=True)
        records = []
        for step in range(STEPS):
            logits, targets, valid, pred = rank_batch(step, rank)
            x = logits.requires_grad_()
            p = pred.requires_grad_()
            loss_c = cls_loss(x, targets, valid)
            loss_r = reg_loss(p, torch.zeros_like(p), valid)
            (loss_c + loss_r).backward()
            records.append(
                {
                    "cls": loss_c.detach(),
                    "reg": loss_r.detach(),
                    "cls_acc": cls_loss.acc_sum.clone(),
                    "reg_acc": reg_loss.acc_sum.clone(),
                    "cls_grad": x.grad.clone(),
                    "reg_grad": p.grad.clone(),
                }
            )
        torch.save(records, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_sync_stats_matches_single_process(tmp_path: Path) -> None:
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    single_cls = GHMCLoss()
    single_reg = GHMRLoss()
    for step in range(STEPS):
        batches = [rank_batch(step, r) for r in range(WORLD_SIZE)]
        logits = torch.cat([b[0] for b in batches]).requires_grad_()
        targets = torch.cat([b[1] for b in batches])
        valid = torch.cat([b[2] for b in batches])
        pred = torch.cat([b[3] for b in batches]).requires_grad_()
        loss_c = single_cls(logits, targets, valid)
        loss_r = single_reg(pred, torch.zeros_like(pred), valid)
        (loss_c + loss_r).backward()
        records = [ranks[r][step] for r in range(WORLD_SIZE)]
        # identical statistics on every rank, equal to the single-process ones
        for key, single in (("cls_acc", single_cls.acc_sum), ("reg_acc", single_reg.acc_sum)):
            assert torch.equal(records[0][key], records[1][key])
            torch.testing.assert_close(records[0][key], single, rtol=1e-6, atol=0.0)
        # mean over ranks of the losses = single-process loss
        torch.testing.assert_close(
            torch.stack([r["cls"] for r in records]).mean(), loss_c.detach(), rtol=1e-5, atol=0
        )
        torch.testing.assert_close(
            torch.stack([r["reg"] for r in records]).mean(), loss_r.detach(), rtol=1e-5, atol=0
        )
        # DDP averages gradients: (rank gradient) / world_size = single-process gradient of that slice
        cls_grad = torch.cat([r["cls_grad"] for r in records]) / WORLD_SIZE
        reg_grad = torch.cat([r["reg_grad"] for r in records]) / WORLD_SIZE
        torch.testing.assert_close(cls_grad, logits.grad, rtol=1e-5, atol=1e-10)
        torch.testing.assert_close(reg_grad, pred.grad, rtol=1e-5, atol=1e-10)


def test_sync_stats_without_process_group_is_a_no_op() -> None:
    logits, targets, valid, _ = rank_batch(0, 0)
    assert not dist.is_initialized()
    synced, plain = GHMCLoss(sync_stats=True), GHMCLoss()
    assert torch.equal(synced(logits, targets, valid), plain(logits, targets, valid))
    assert torch.equal(synced.acc_sum, plain.acc_sum)
