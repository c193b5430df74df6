"""The epoch's progress bar and one log line per epoch."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..progress import Progress
from .base import Callback

if TYPE_CHECKING:
    from ..loop import Loop

log = logging.getLogger("fmnist")


class ProgressBar(Callback):
    """Advances a bar each step and shows the running loss and accuracy every ``every``
    steps (reading them is a host sync, so not every step)."""

    def __init__(self, every: int = 20) -> None:
        self.every = max(1, every)
        self.bar: Progress | None = None

    def on_epoch_begin(self, loop: Loop) -> None:
        self.bar = Progress(f"epoch {loop.epoch}/{loop.recipe.epochs}", loop.steps_per_epoch)
        self.bar.__enter__()
        self.bar.advance(loop.step)

    def on_step_end(self, loop: Loop) -> None:
        if self.bar is None:
            return
        if loop.step % self.every == 0 or loop.step == loop.steps_per_epoch:
            loss, acc = loop.meters.means()
            self.bar.set(loss=f"{loss:.4f}", acc=f"{acc:.2%}")
        self.bar.advance()
        if loop.step == loop.steps_per_epoch:
            self._close()

    def on_epoch_end(self, loop: Loop) -> None:
        log_epoch(loop.row, loop.recipe.epochs)

    def on_interrupt(self, loop: Loop) -> None:
        self._close()

    def on_train_end(self, loop: Loop) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def log_epoch(row: dict[str, Any], epochs: int) -> None:
    val = ""
    if row["val_acc"] is not None:
        val = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.2%}"
    log.info("epoch %d/%d  loss %.4f  acc %.2f%%%s  lr %.3g  %.1fs", row["epoch"], epochs,
             row["train_loss"], 100 * row["train_acc"], val, row["lr"], row["seconds"])
