"""The optimizer and the per-step learning-rate schedule a recipe asks for."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .recipes import Recipe
from .selection import total_steps

MAX_WARMUP_FRACTION = 0.3
NS_STEPS, NS_EPS = 5, 1e-7


# the quintic Newton-Schulz coefficients of Muon (Keller Jordan), as torch.optim.Muon's
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """Approximately the nearest semi-orthogonal matrix to a 2-D ``matrix`` (U V^T of its
    SVD; singular values land in about [0.5, 1.5], which Muon does not mind), in bf16:
    ``steps`` iterations of X <- aX + (bXX^T + c(XX^T)^2)X on the wide orientation, after
    scaling X to unit Frobenius norm (so its spectral norm is at most 1)."""
    a, b, c = NS_COEFFICIENTS
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.bfloat16()
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=NS_EPS)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def _orthogonalize(update: torch.Tensor) -> torch.Tensor:
    """:func:`newton_schulz` of the (out, in*k*k) flattening of a filter bank's update, in
    the update's shape and dtype, scaled by sqrt(max(1, out/in)) (Muon's "original"
    adjustment)."""
    flat = update.reshape(len(update), -1)
    scale = math.sqrt(max(1.0, flat.shape[0] / flat.shape[1]))
    return (newton_schulz(flat) * scale).reshape(update.shape).to(update.dtype)


class MuonSGD(torch.optim.Optimizer):
    """Muon on the param groups marked ``muon`` (conv filters), SGD with (Nesterov)
    momentum and weight decay on the others (BatchNorm, biases, the head): airbench94_muon's
    split, as one optimizer so one schedule and one state dict serve both.

    A Muon group's update is its (Nesterov) momentum orthogonalized; before each step its
    filter bank is rescaled to norm sqrt(out channels) (airbench: a conv followed by BatchNorm
    is scale-invariant, so this only fixes the step's relative size) and takes no decay."""

    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool) -> None:
        super().__init__(groups, {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                                  "weight_decay": 0.0, "muon": False})

    def _momentum(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        grad = p.grad
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buf = state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
        return grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = self._momentum(p, group)
                if group["muon"]:
                    p.mul_(math.sqrt(len(p)) / p.norm().clamp_min(NS_EPS))
                    update = _orthogonalize(update)
                p.add_(update, alpha=-group["lr"])
        return loss


def _decay_split(params: Iterable[nn.Parameter]) -> tuple[list, list]:
    """The trainable ``params`` that take weight decay (weights) and those that do not
    (biases and normalization weights, 1-D)."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def _muon_sgd(recipe: Recipe, model: nn.Module) -> MuonSGD:
    params = [p for p in model.parameters() if p.requires_grad]
    filters = [p for p in params if p.ndim == 4]
    decay, no_decay = _decay_split(p for p in params if p.ndim != 4)
    groups = [{"params": filters, "muon": True, "lr": recipe.muon_lr,
               "momentum": recipe.muon_momentum, "nesterov": True},
              {"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay}]
    return MuonSGD([g for g in groups if g["params"]], lr=recipe.lr,
                   momentum=recipe.momentum, nesterov=recipe.nesterov)


def make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Keras-compatible Adam, AdamW, or Muon on the conv filters
    with SGD on the rest (``muon-sgd``); no weight decay on biases and normalization
    weights."""
    if recipe.optimizer == "muon-sgd":
        return _muon_sgd(recipe, model)
    decay, no_decay = _decay_split(model.parameters())
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
    """Per-step LambdaLR over the run's steps (short epochs of ``epoch_fractions``
    included); the warm-up is capped at 30% of the run, so a recipe shortened with
    --epochs still ends with its learning rate annealed."""
    total = total_steps(recipe, steps_per_epoch)
    warmup = min(int(round(recipe.warmup_epochs * steps_per_epoch)),
                 int(MAX_WARMUP_FRACTION * total))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(recipe.schedule, s, total, warmup)
    )
