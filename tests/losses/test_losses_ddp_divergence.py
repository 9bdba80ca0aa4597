"""GHM losses with sync_stats raise together: a non-finite input on one rank never hangs the others."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ghmdet.losses import GHMCLoss


def worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        loss_fn = GHMCLoss(sync_stats=True)
        events = []
        for step in range(3):
            g = torch.Generator().manual_seed(10 * step + rank)
            logits = torch.randn(40, 3, generator=g)
            targets = (torch.rand(40, 3, generator=g) < 0.2).float()
            if step == 1 and rank == 0:
                logits[3, 1] = float("nan")
            try:
                loss_fn(logits, targets)
                events.append("ok")
            except ValueError as err:
                events.append(str(err))
        torch.save({"events": events, "acc_sum": loss_fn.acc_sum.clone()}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_one_rank_with_nan_makes_every_rank_raise(tmp_path: Path) -> None:
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["events"][0] == r1["events"][0] == "ok" and r0["events"][2] == r1["events"][2] == "ok"
    assert "logits contains 1 non-finite" in r0["events"][1]
    assert "on another rank" in r1["events"][1] and "non-finite" in r1["events"][1]
    assert torch.equal(r0["acc_sum"], r1["acc_sum"])  # nobody committed the bad step
