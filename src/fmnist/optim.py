"""The optimizer and the per-step learning-rate schedule a recipe asks for."""

from __future__ import annotations

import math

import torch
from torch import nn

from .recipes import Recipe

MAX_WARMUP_FRACTION = 0.3


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Keras-compatible Adam, or AdamW; no weight decay on
    biases and normalization weights."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=recipe.lr, eps=recipe.adam_eps)


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` of ``total``."""
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle":
        # linear rise from 0.1x to 1x over the warm-up, then linear decay to ~0
        if step < warmup:
            return 0.1 + 0.9 * step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)  # linear


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step LambdaLR; the warm-up is capped at 30% of the run, so a recipe shortened
    with --epochs still ends with its learning rate annealed."""
    total = recipe.epochs * steps_per_epoch
    warmup = min(int(round(recipe.warmup_epochs * steps_per_epoch)),
                 int(MAX_WARMUP_FRACTION * total))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(recipe.schedule, s, total, warmup)
    )
