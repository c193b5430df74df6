"""The callback protocol and the list that calls it (Lightning/Keras style).

A callback overrides the hooks it needs; each receives the :class:`~fmnist.loop.Loop`
(``loop.epoch``, ``loop.step``, ``loop.row``, ``loop.model``, ``loop.predict_probs`` ...).
``on_epoch_end`` may return a reason string to stop training after this epoch. A callback
with state implements ``state_dict``/``load_state_dict``: the loop stores every
callback's state in the checkpoint under its ``state_key`` without knowing which
callbacks exist, and hands it back on resume.

Under DDP a callback runs on rank 0 only unless ``every_rank`` is true.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..distributed import DistContext

if TYPE_CHECKING:
    from ..loop import Loop

HOOKS = ("on_train_begin", "on_epoch_begin", "on_step_end", "on_epoch_end", "on_train_end",
         "on_interrupt")


class Callback:
    """Base class of training callbacks; every hook does nothing by default.

    ``on_train_end`` runs however training ends (finished, stopped early, interrupted or
    failed): close files and bars there. ``on_interrupt`` runs after SIGINT/SIGTERM,
    before :class:`~fmnist.loop.TrainingInterrupted` is raised."""

    every_rank = False  # run on every DDP rank (default: rank 0 alone)

    @property
    def state_key(self) -> str:
        """Where the checkpoint keeps this callback's state."""
        return type(self).__qualname__

    def on_train_begin(self, loop: Loop) -> None: ...

    def on_epoch_begin(self, loop: Loop) -> None: ...

    def on_step_end(self, loop: Loop) -> None: ...

    def on_epoch_end(self, loop: Loop) -> str | None:
        """Return a reason string to stop training after this epoch, else None."""
        return None

    def on_train_end(self, loop: Loop) -> None: ...

    def on_interrupt(self, loop: Loop) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class CallbackList:
    """Calls a hook on each callback in order. Plain objects with only some hooks (e.g. a
    user's ``on_epoch_end``) work too."""

    def __init__(self, callbacks: Iterable[Any], ctx: DistContext | None = None) -> None:
        self.callbacks = list(callbacks)
        self.ctx = ctx or DistContext()
        counts: dict[str, int] = {}
        self.keys: list[str] = []
        for cb in self.callbacks:
            key = getattr(cb, "state_key", type(cb).__qualname__)
            counts[key] = counts.get(key, 0) + 1
            self.keys.append(key if counts[key] == 1 else f"{key}#{counts[key]}")

    def _active(self) -> list[Any]:
        return [cb for cb in self.callbacks if self.ctx.is_main or getattr(cb, "every_rank", False)]

    def call(self, hook: str, loop: Loop) -> None:
        for cb in self._active():
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(loop)

    def epoch_end(self, loop: Loop) -> str:
        """Every callback's ``on_epoch_end``; the first reason to stop (rank 0's), or ""."""
        reasons = [r for cb in self._active()
                   if (fn := getattr(cb, "on_epoch_end", None)) is not None and (r := fn(loop))]
        reason = self.ctx.broadcast(reasons[0] if reasons else "")
        self.ctx.barrier()
        return reason

    def state_dict(self) -> dict[str, Any]:
        return {key: cb.state_dict() for key, cb in zip(self.keys, self.callbacks, strict=True)
                if hasattr(cb, "state_dict")}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for key, cb in zip(self.keys, self.callbacks, strict=True):
            if key in states and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(states[key])
