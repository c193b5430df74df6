"""An exponential moving average of the weights, updated after every step; validation,
callbacks and the saved model use the averaged weights."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .base import Callback

if TYPE_CHECKING:
    from ..loop import Loop


class EMA(Callback):
    """Keeps ``module``, the average of ``model``'s parameters (buffers copied as they
    are). Runs on every rank: each evaluates its shard with the averaged weights."""

    every_rank = True

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()],
                             1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def on_train_begin(self, loop: Loop) -> None:
        loop.eval_module = self.module

    def on_step_end(self, loop: Loop) -> None:
        self.update(loop.state.model)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
