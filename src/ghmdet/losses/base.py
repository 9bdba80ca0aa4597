"""The tiny base every loss in :mod:`ghmdet.losses` derives from."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ._validation import check_loss_weight


class DetectionLoss(nn.Module):
    """Base class: holds ``loss_weight`` and the ``uses_batch_statistics`` capability flag.

    ``uses_batch_statistics`` tells a caller whether the value of the loss on one element depends on the
    other elements of the same call (the GHM losses build a histogram over the call). A caller that wants the
    released code's behaviour (one histogram per FPN level) uses the flag to decide to call the loss once per
    level; element-wise losses can be called once on everything. The losses know nothing about levels.
    """

    uses_batch_statistics: ClassVar[bool] = False

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = check_loss_weight(type(self).__name__, loss_weight)

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}"
