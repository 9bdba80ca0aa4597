"""Watch the harmonisation while training: the distribution of g (and gr) and GHM's state, live in W&B.

Every ``every_n_steps`` optimizer steps, :class:`GradientNormLogger` records, during that step's forward pass,
what the loss seam hands to each loss (forward hooks: the losses and the training itself are unchanged) and
logs to the run's W&B logger:

* ``gradient_norms/cls_g`` and ``gradient_norms/reg_gr``: histograms of g over the step's valid
  (anchor, class) pairs (Eq. 3) and of gr over the positive anchors' deltas (Eq. 14), ``bins`` unit regions
  of [0, 1];
  ``..._log10`` the same with log10(1 + count) heights, because W&B draws histograms on a linear scale and
  the spike of easy negatives (paper Fig. 1) would flatten everything else;
* for a GHM loss with unit regions, ``ghm/<cls|reg>/ema_counts``: the EMA bin counts ``acc_sum`` (S_j,
  Eq. 11-12) after the step, and ``ghm/<cls|reg>/weights/<call>``: the harmonizing weight ``beta_j`` each
  bin got in each loss call of the step (``level<i>``, finest level first, under ``stats_scope=per_level``;
  ``batch``; ``image<i>`` under ``loss_normalizer=per_image``);
  ``ghm/<cls|reg>/max_weight`` as a scalar.

Off-steps cost one integer test. Without a W&B logger, or (with ``only_ghm``) when neither loss is a GHM
loss, the callback says so once and does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ghmdet.analysis.per_bin import histogram_edges, norm_histogram
from ghmdet.losses import GradientHarmonizedLoss, gradient_norm_cls, gradient_norm_reg, unit_region_weights
from ghmdet.losses._validation import valid_mask

log = logging.getLogger(__name__)


def _call_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(pred, target, valid)`` of a loss call ``loss(pred, target, valid=None)``."""
    pred, target = args[0], args[1]
    valid = args[2] if len(args) > 2 else kwargs.get("valid")
    return pred, target, valid


def _call_prefix(model: nn.Module) -> str:
    """What one loss call of the model covers: ``image`` (``loss_normalizer=per_image``), ``level`` (an FPN
    level, finest first, under ``stats_scope=per_level``) or ``batch``."""
    if getattr(model, "loss_normalizer", "batch") == "per_image":
        return "image"
    return "level" if getattr(model, "stats_scope", "batch") == "per_level" else "batch"


class _LossWatch:
    """Hooks on one loss module for one step: the histogram of its gradient norms and, for a GHM loss, the
    EMA state and per-bin weights after each call."""

    def __init__(self, kind: str, loss: nn.Module, bins: int, mu: float) -> None:
        self.kind = kind  # "cls" or "reg"
        self.loss = loss
        self.bins = bins
        self.mu = float(getattr(loss, "mu", mu))
        self.tracks_bins = isinstance(loss, GradientHarmonizedLoss) and loss.density == "unit"
        self.counts: Tensor | None = None
        self.weights: list[Tensor] = []
        self.handles: list[RemovableHandle] = []

    def attach(self) -> None:
        self.counts, self.weights = None, []
        self.handles = [self.loss.register_forward_pre_hook(self._before, with_kwargs=True)]
        if self.tracks_bins:
            self.handles.append(self.loss.register_forward_hook(self._after))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _before(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        pred, target, valid = _call_inputs(args, kwargs)
        if self.kind == "cls":
            norms = gradient_norm_cls(pred, target)
        else:
            norms = gradient_norm_reg(pred, target, self.mu)
        mask = valid_mask(valid)
        counts = norm_histogram(norms, self.bins, mask)
        self.counts = counts if self.counts is None else self.counts + counts

    def _after(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        # After the call the buffers hold this call's histogram and the updated EMA: the weights it used.
        # N = sum of the counts for 0/1 valid flags (every valid norm lies in a bin).
        counts = module.last_counts
        beta = unit_region_weights(counts, module.acc_sum, module.momentum, counts.sum().clamp(min=1))
        self.weights.append(beta.detach().clone())

    def payload(self, call_prefix: str) -> dict[str, Any]:
        import wandb

        edges = histogram_edges(self.bins).numpy()
        norm_name = "g" if self.kind == "cls" else "gr"
        out: dict[str, Any] = {}
        if self.counts is not None:
            counts = self.counts.cpu().numpy().astype(np.float64)
            out[f"gradient_norms/{self.kind}_{norm_name}"] = wandb.Histogram(np_histogram=(counts, edges))
            out[f"gradient_norms/{self.kind}_{norm_name}_log10"] = wandb.Histogram(
                np_histogram=(np.log10(1.0 + counts), edges)
            )
        if self.tracks_bins:
            ghm_edges = histogram_edges(self.loss.bins).numpy()
            ema = self.loss.acc_sum.detach().cpu().numpy().astype(np.float64)
            out[f"ghm/{self.kind}/ema_counts"] = wandb.Histogram(np_histogram=(ema, ghm_edges))
            for i, beta in enumerate(self.weights):
                name = call_prefix if len(self.weights) == 1 else f"{call_prefix}{i}"
                out[f"ghm/{self.kind}/weights/{name}"] = wandb.Histogram(
                    np_histogram=(beta.cpu().numpy().astype(np.float64), ghm_edges)
                )
            if self.weights:
                out[f"ghm/{self.kind}/max_weight"] = float(torch.stack(self.weights).max())
        return out


class GradientNormLogger(L.Callback):
    """Logs the gradient-norm histograms and GHM's EMA counts and per-bin weights to W&B every
    ``every_n_steps`` optimizer steps (see the module docstring for the keys).

    Args:
        every_n_steps: logging period in optimizer steps (step 0 included).
        bins: unit regions of the g / gr histograms.
        only_ghm: log only when the model's classification or regression loss is a GHM loss (the default
            config turns the callback on for GHM runs); False logs the g / gr histograms for any loss.
        mu: ASL1's mu for gr when the regression loss has none of its own (paper: 0.02).

    The model is ``pl_module.model`` with the loss seam of :class:`~ghmdet.model.GHMRetinaNet`
    (``cls_loss``, ``reg_loss``, ``stats_scope``).
    """

    def __init__(self, every_n_steps: int = 50, bins: int = 50, only_ghm: bool = True, mu: float = 0.02):
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(
                f"GradientNormLogger: every_n_steps must be an integer >= 1, got {every_n_steps!r}"
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 512:
            raise ValueError(f"GradientNormLogger: bins must be an integer in [1, 512] (W&B), got {bins!r}")
        self.every_n_steps = every_n_steps
        self.bins = bins
        self.only_ghm = only_ghm
        self.mu = mu
        self._logger: WandbLogger | None = None
        self._watches: list[_LossWatch] = []
        self._call_prefix = "call"
        self._watching_step: int | None = None
        self._last_logged_step: int | None = None

    @property
    def active(self) -> bool:
        """Whether ``setup`` found a W&B logger and losses to watch."""
        return self._logger is not None and bool(self._watches)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._logger, self._watches = None, []
        model = getattr(pl_module, "model", None)
        if not (hasattr(model, "cls_loss") and hasattr(model, "reg_loss")):
            log.info("GradientNormLogger: pl_module.model has no cls_loss / reg_loss seam; nothing is logged")
            return
        losses = {"cls": model.cls_loss, "reg": model.reg_loss}
        is_ghm = any(isinstance(loss, GradientHarmonizedLoss) for loss in losses.values())
        if self.only_ghm and not is_ghm:
            log.info(
                "GradientNormLogger: the losses are %s and %s, not GHM; nothing is logged "
                "(callbacks.gradient_norms.only_ghm=false logs the g / gr histograms for any loss)",
                type(losses["cls"]).__name__,
                type(losses["reg"]).__name__,
            )
            return
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            log.info(
                "GradientNormLogger: no W&B logger in this run (logger=wandb adds one); "
                "the gradient-norm histograms are not logged"
            )
            return
        self._logger = wandb_loggers[0]
        self._watches = [_LossWatch(kind, loss, self.bins, self.mu) for kind, loss in losses.items()]
        self._call_prefix = _call_prefix(model)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self.active or step % self.every_n_steps or step == self._last_logged_step:
            return
        if not trainer.is_global_zero:
            return
        for watch in self._watches:
            watch.attach()
        self._watching_step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._watching_step is None:
            return
        payload: dict[str, Any] = {}
        for watch in self._watches:
            watch.detach()
            payload.update(watch.payload(self._call_prefix))
        if payload and self._logger is not None:
            self._logger.log_metrics(payload, step=self._watching_step)
        self._last_logged_step = self._watching_step
        self._watching_step = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for watch in self._watches:
            watch.detach()
        self._watching_step = None
