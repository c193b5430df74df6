"""One row per epoch, kept in the checkpoint and written to ``history.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runs import write_history
from .base import Callback

if TYPE_CHECKING:
    from ..loop import Loop


class History(Callback):
    """Commits the epoch's row: rank 0's row (callbacks before this one may have added to
    it) becomes every rank's, is appended to :attr:`rows` and written to history.csv."""

    every_rank = True

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, loop: Loop) -> None:
        loop.row = loop.ctx.broadcast(loop.row)
        self.rows.append(loop.row)
        if loop.ctx.is_main:
            write_history(self.run_dir, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])
