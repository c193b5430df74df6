"""``checkpoints/last.pt`` and ``best.pt``: written after every epoch and on an interrupt,
restored on resume, and best.pt's weights put back at the end (``restore_best``).

Within an epoch best.pt is written before last.pt: a crash between the two leaves a
last.pt of the epoch before, so a resume reruns the epoch and rewrites both, and best.pt
never names an epoch that last.pt does not yet hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoints import atomic_save, safe_load
from ..runs import set_status
from .base import Callback

if TYPE_CHECKING:
    from torch import nn

    from ..loop import Loop
    from .early_stopping import EarlyStopping
    from .ema import EMA

log = logging.getLogger("fmnist")


class Checkpoint(Callback):
    """last.pt after every epoch (and mid-epoch on an interrupt, with the epoch's
    generator and meters); best.pt first when ``improved()`` says this epoch is the best."""

    def __init__(self, folder: str | Path, improved: Callable[[], bool] = lambda: False) -> None:
        self.folder = Path(folder)
        self.improved = improved

    def on_epoch_end(self, loop: Loop) -> None:
        state = loop.checkpoint()
        if self.improved():
            atomic_save(state, self.folder / "best.pt")
        atomic_save(state, self.folder / "last.pt")

    def on_interrupt(self, loop: Loop) -> None:
        if not loop.epoch_done:  # after the epoch's end last.pt is already written
            atomic_save(loop.checkpoint(), self.folder / "last.pt")
        set_status(loop.run_dir, "interrupted")


def callback_states(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The callbacks' states in a checkpoint, also from one written before callbacks had
    their own (top-level "stopper", "ema" and "history")."""
    if "callbacks" in checkpoint:
        return dict(checkpoint["callbacks"])
    legacy = {"EarlyStopping": checkpoint.get("stopper"), "EMA": checkpoint.get("ema"),
              "History": {"rows": checkpoint.get("history") or []}}
    return {k: v for k, v in legacy.items() if v is not None}


def restore_best(path: Path, stopper: EarlyStopping, model: nn.Module, ema: EMA | None
                 ) -> int:
    """Load best.pt's weights (Keras' ``restore_best_weights``) if it holds the best epoch
    ``stopper`` saw; returns the epoch whose weights the model now holds."""
    best_epoch, last = stopper.best_epoch(), len(stopper.values)
    best = safe_load(path) if path.is_file() else {}
    saved_epoch = int(best.get("epoch", 0)) - 1  # a checkpoint names the epoch to run next
    if saved_epoch != best_epoch:  # e.g. written by an fmnist that saved last.pt first
        log.warning("%s holds the weights of epoch %s, not of the best epoch %d: kept the "
                    "weights of the last epoch, %d", path, saved_epoch if best else "none",
                    best_epoch, last)
        return last
    model.load_state_dict(best["model"])
    ema_state = callback_states(best).get(ema.state_key) if ema is not None else None
    if ema is not None and ema_state is not None:
        ema.load_state_dict(ema_state)
    log.info("restored the weights of epoch %d (best %s %.4f)", best_epoch, stopper.monitor,
             stopper.values[best_epoch - 1])
    return best_epoch
