"""EMA buffers: checkpoints, dtype casts, device moves; mixed-precision inputs."""

from __future__ import annotations

import io

import pytest
import torch

from ghmdet.losses import GHMCLoss, GHMRLoss


def cls_batches(count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(80, 5, generator=generator) * 2, (torch.rand(80, 5, generator=generator) < 0.1).float())
        for _ in range(count)
    ]


def test_state_dict_round_trip_restores_the_ema() -> None:
    batches = cls_batches(4)
    trained = GHMCLoss()
    for logits, targets in batches[:3]:
        trained(logits, targets)
    assert "acc_sum" in trained.state_dict()
    assert "edges" not in trained.state_dict()  # derived from bins, not saved
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    restored = GHMCLoss()
    restored.load_state_dict(torch.load(buffer))
    assert torch.equal(restored.acc_sum, trained.acc_sum)
    logits, targets = batches[3]
    assert torch.equal(restored(logits, targets), trained(logits, targets))
    assert torch.equal(restored.acc_sum, trained.acc_sum)
    fresh = GHMCLoss()
    assert not torch.equal(fresh(logits, targets), restored(logits, targets))


@pytest.mark.parametrize("cast", [torch.float64, torch.float16, torch.bfloat16])
def test_dtype_casts_keep_float32_statistics(cast: torch.dtype) -> None:
    batches = cls_batches(3)
    reference = GHMCLoss()
    moved = GHMCLoss()
    for logits, targets in batches[:2]:
        reference(logits, targets)
        moved(logits, targets)
    saved = moved.acc_sum.clone()
    moved = moved.to(cast)
    for name in ("acc_sum", "edges", "last_counts"):
        assert getattr(moved, name).dtype == torch.float32
    assert torch.equal(moved.acc_sum, saved)
    logits, targets = batches[2]
    assert torch.equal(moved(logits, targets), reference(logits, targets))


def test_buffers_follow_device_moves() -> None:
    loss_fn = GHMRLoss()
    loss_fn.acc_sum += 2.0
    on_meta = loss_fn.to("meta")
    assert on_meta.acc_sum.device.type == "meta" and on_meta.edges.device.type == "meta"
    assert on_meta.acc_sum.dtype == torch.float32
    back = GHMRLoss().to("cpu")
    assert back.acc_sum.device.type == "cpu"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32_finite_loss(dtype: torch.dtype) -> None:
    ((logits, targets),) = cls_batches(1)
    x = (logits * 4).to(dtype).requires_grad_()
    loss_fn = GHMCLoss()
    loss = loss_fn(x, targets.to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    expected = GHMCLoss()(x.detach().float(), targets)
    torch.testing.assert_close(loss, expected)


def test_autocast_bf16_on_cpu() -> None:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(64, 16, generator=generator)
    layer = torch.nn.Linear(16, 5)
    targets = (torch.rand(64, 5, generator=generator) < 0.1).float()
    box_layer = torch.nn.Linear(16, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features) * 30  # large logits: sparse bins, big weights
        boxes = box_layer(features)
        assert logits.dtype == torch.bfloat16
        cls_loss = GHMCLoss()(logits, targets)
        reg_loss = GHMRLoss()(boxes, torch.zeros(64, 4))
    (cls_loss + reg_loss).backward()
    for loss in (cls_loss, reg_loss):
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(layer.weight.grad).all() and torch.isfinite(box_layer.weight.grad).all()


def test_batch_statistics_flag(cls_losses: dict[str, type], reg_losses: dict[str, type]) -> None:
    flagged = {name for name, cls in {**cls_losses, **reg_losses}.items() if cls.uses_batch_statistics}
    assert flagged == {"ghmc", "ghmr"}
