"""Progress reporting that is a live bar on a terminal and quiet plain lines elsewhere.

Library code asks for a :class:`Progress` and calls ``advance``; whether the user sees a
rich progress bar (interactive terminal), an HTML bar updated in place (Jupyter kernel:
:class:`fmnist.display.NotebookBar`, no ANSI codes) or occasional log lines (CI, pipes)
is decided here, once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from types import TracebackType

log = logging.getLogger("fmnist")


def interactive() -> bool:
    """True when stderr is a terminal and we are not in CI."""
    if os.environ.get("CI") or os.environ.get("FMNIST_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


class Progress:
    """A single task's progress: ``with Progress("download", total) as p: p.advance(n)``.

    ``fields`` shown after the bar (e.g. live loss) are updated with :meth:`set`.
    Non-interactive runs log at most one line per ``log_every`` seconds.
    """

    def __init__(
        self,
        description: str,
        total: float | None,
        *,
        unit: str = "",
        enabled: bool | None = None,
        log_every: float = 30.0,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.enabled = True if enabled is None else enabled
        self.live = self.enabled and interactive()
        self.log_every = log_every
        self.done = 0.0
        self.fields: dict[str, str] = {}
        self._bar = None
        self._task = None
        self._last_log = time.monotonic()
        self._notebook = None  # fmnist.display.NotebookBar under a Jupyter kernel

    def __enter__(self) -> Progress:
        from .display import NotebookBar, in_notebook

        if self.enabled and in_notebook() and not os.environ.get("FMNIST_NO_PROGRESS"):
            self._notebook = NotebookBar(self.description, self.total)
            self._notebook.update(self.done, force=True)
        elif self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, info="")
        return self

    def set(self, **fields: object) -> None:
        self.fields.update({k: str(v) for k, v in fields.items()})

    def _info(self) -> str:
        return "  ".join(f"{k} {v}" for k, v in self.fields.items())

    def advance(self, amount: float = 1.0) -> None:
        self.done += amount
        if self._notebook is not None:
            self._notebook.update(self.done, self._info())
        elif self._bar is not None:
            self._bar.update(self._task, advance=amount, info=self._info())
        elif self.enabled and time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            of = f"/{self.total:.0f}" if self.total else ""
            info = " ".join(f"{k}={v}" for k, v in self.fields.items())
            log.info("%s: %.0f%s %s %s", self.description, self.done, of, self.unit, info)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._notebook is not None:
            self._notebook.update(self.done, self._info(), force=True)
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
