"""Stop when the monitored metric stops improving (Keras' and Lightning's EarlyStopping)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Callback

if TYPE_CHECKING:
    from ..loop import Loop


def should_stop(
    values: Sequence[float], *, mode: str, patience: int, min_delta: float = 0.0
) -> tuple[bool, str]:
    """Early-stopping decision from the monitored values so far (pure, table-testable)."""
    if patience is None or len(values) <= patience:
        return False, ""
    sign = 1.0 if mode == "min" else -1.0
    # an epoch counts as an improvement only if it beats the best before it by min_delta
    best_so_far = values[0]
    best_i = 0
    for i, v in enumerate(values[1:], start=1):
        if sign * (best_so_far - v) > min_delta:
            best_so_far, best_i = v, i
    waited = len(values) - 1 - best_i
    if waited >= patience:
        return True, (f"no improvement of {min_delta:g} in {patience} epochs since epoch "
                      f"{best_i + 1} ({best_so_far:.4f})")
    return False, ""


class EarlyStopping(Callback):
    """Tracks ``monitor`` in each epoch's row; asks to stop after ``patience`` epochs
    without an improvement of ``min_delta`` (``patience=None``: only tracks, for the best
    checkpoint). Runs on every rank, on the row rank 0 committed."""

    every_rank = True

    def __init__(self, monitor: str, patience: int | None, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = "min" if monitor.endswith("loss") else "max"
        self.patience = patience
        self.min_delta = min_delta
        self.values: list[float] = []

    def improved(self) -> bool:
        """Did the latest value beat every earlier one (the best checkpoint rule)?"""
        if not self.values:
            return False
        last, earlier = self.values[-1], self.values[:-1]
        if not earlier:
            return True
        best = min(earlier) if self.mode == "min" else max(earlier)
        return last < best if self.mode == "min" else last > best

    def best_epoch(self) -> int:
        """The epoch (1-based) of the best value so far; 0 before the first."""
        if not self.values:
            return 0
        pick = min if self.mode == "min" else max
        return self.values.index(pick(self.values)) + 1

    def update(self, row: dict[str, Any]) -> tuple[bool, str]:
        self.values.append(float(row[self.monitor]))
        if self.patience is None:
            return False, ""
        return should_stop(self.values, mode=self.mode, patience=self.patience,
                           min_delta=self.min_delta)

    def on_epoch_end(self, loop: Loop) -> str | None:
        stop, why = self.update(loop.row)
        return why if stop else None

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = [float(v) for v in state["values"]]
