"""Mixed precision: the GHM losses stay finite with float32 statistics and weights (CPU autocast here).

On CPU, Lightning runs ``trainer.precision=bf16-mixed``; ``16-mixed`` (fp16 AMP) is CUDA-only and Lightning
replaces it by ``bf16-mixed`` on CPU with a warning. The GPU run of both is a manual check (docs/scaling.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from ghmdet.losses import GHMCLoss
from tests.helpers.configs import compose_train

FP16_MAX = torch.finfo(torch.float16).max


def test_weights_beyond_the_fp16_range_stay_finite() -> None:
    """200k elements, one of them alone in its bin: its harmonizing weight N / (R * n) is ~1e5 > fp16 max."""
    n = 200_000
    logits = torch.full((n, 1), -12.0)  # easy negatives: g ~ 0, all in the first bin
    logits[0, 0] = 12.0  # one confident mistake: g ~ 1, alone in the last bin
    targets = torch.zeros(n, 1)
    loss_fn = GHMCLoss(momentum=0.0)
    for dtype in (torch.float16, torch.bfloat16):
        x = logits.to(dtype).requires_grad_()
        loss = loss_fn(x, targets.to(dtype))
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert torch.isfinite(x.grad).all()
    # the weight of the lone element, in float32, is far beyond what fp16 can hold
    counts = loss_fn.last_counts
    weight = n / (counts[counts > 0].min() * (counts > 0).sum())
    assert weight > FP16_MAX
    assert loss_fn.acc_sum.dtype == torch.float32


def _tiny_model():
    cfg = compose_train(["experiment=tiny"])
    torch.manual_seed(0)
    return instantiate(
        cfg.model, num_classes=2, cls_loss=instantiate(cfg.loss.cls), reg_loss=instantiate(cfg.loss.reg)
    )


def test_retinanet_with_ghm_under_bf16_autocast() -> None:
    model = _tiny_model().train()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 128, generator=generator) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[30.0, 40.0, 100.0, 90.0], [5.0, 5.0, 25.0, 30.0]]),
            "labels": torch.tensor([0, 1]),
        },
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    total = sum(losses.values())
    total.backward()
    for name, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for loss in (model.cls_loss, model.reg_loss):
        assert loss.acc_sum.dtype == torch.float32 and torch.isfinite(loss.acc_sum).all()
        assert loss.acc_sum.sum() > 0


def test_fp16_amp_on_cpu_falls_back_to_bf16() -> None:
    import lightning as L

    with pytest.warns(UserWarning, match="bf16-mixed"):
        trainer = L.Trainer(accelerator="cpu", devices=1, precision="16-mixed", logger=False)
    assert trainer.precision == "bf16-mixed"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tiny_training_run_in_bf16_mixed(tmp_path: Path, run_cli) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli("trainer.precision=bf16-mixed", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["iterations"] == 4  # never diverged
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    for key in ("model.cls_loss.acc_sum", "model.reg_loss.acc_sum"):
        assert state[key].dtype == torch.float32 and torch.isfinite(state[key]).all() and state[key].sum() > 0
    losses = [line for line in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[1:] if line]
    assert losses  # the CSV log holds the per-step losses; all finite (a non-finite one would stop the run)
