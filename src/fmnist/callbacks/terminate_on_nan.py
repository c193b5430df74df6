"""Stop with :class:`TrainingDiverged` when the loss becomes NaN or infinite."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import FmnistError
from .base import Callback

if TYPE_CHECKING:
    from ..loop import Loop


class TrainingDiverged(FmnistError):
    """The loss became NaN or infinite."""


class TerminateOnNaN(Callback):
    """Checks the epoch's summed loss every ``every`` steps and at the epoch's last step
    (a host sync each time: 1 on the CPU, where it is free, more on a GPU)."""

    every_rank = True

    def __init__(self, every: int = 1) -> None:
        self.every = max(1, every)

    def on_step_end(self, loop: Loop) -> None:
        if loop.step % self.every and loop.step != loop.steps_per_epoch:
            return
        total = float(loop.meters.loss_sum)
        if math.isfinite(total):
            return
        checked = (loop.step - 1) // self.every * self.every  # the step checked before
        where = (f"step {loop.step}" if self.every == 1 else f"step {checked + 1}-{loop.step}")
        raise TrainingDiverged(
            f"loss became {total} at epoch {loop.epoch} {where} "
            f"(lr {loop.state.scheduler.get_last_lr()[0]:.3g}). Lower --lr, set grad_clip, "
            "or train in fp32 (--precision fp32).")
