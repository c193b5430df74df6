"""Which training images an epoch trains on: all of them, or a share drawn towards the hard.

``Recipe.epoch_fractions`` gives each epoch's share of a full epoch's optimizer steps
(epochs past the tuple's end take its last share, so ``--epochs`` trains longer the same
way; the first must be 1, to see every image once; empty: every epoch full).
An epoch with a share below 1 trains on ``steps x batch_size`` images drawn without
replacement, each weighted by the square of its rank in :class:`LossTable` -- the loss it
had when it was last trained on, read from the logits the step computed anyway, so the
choice costs no forward pass. Easy images (most trousers, bags and sneakers) come up less
often; none is left out for good, and a hard image's loss falls once it is learnt. The
epoch visits its draw in the epoch's seeded order, and a checkpoint keeps the table and a
running epoch's draw, so resume stays exact. Under DDP each rank records the images of its
own shard; :meth:`LossTable.merge` (at each epoch's end and on an interrupt) gives every
rank the same table, so every rank draws the same images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from .distributed import DistContext
from .recipes import Recipe


def epoch_share(recipe: Recipe, epoch: int) -> float:
    """Epoch ``epoch``'s (1-based) share of a full epoch's steps."""
    shares = recipe.epoch_fractions or (1.0,)
    return float(shares[min(epoch, len(shares)) - 1])


def epoch_steps(recipe: Recipe, epoch: int, steps_per_epoch: int) -> int:
    """Optimizer steps of epoch ``epoch`` when a full epoch takes ``steps_per_epoch``."""
    return max(1, math.ceil(epoch_share(recipe, epoch) * steps_per_epoch))


def total_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    """Optimizer steps of the whole run (what the learning-rate schedule spans)."""
    return sum(epoch_steps(recipe, e, steps_per_epoch) for e in range(1, recipe.epochs + 1))


class LossTable:
    """Each training image's label-smoothed loss when it was last trained on."""

    def __init__(self, n: int, label_smoothing: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        self.loss = torch.full((n,), math.inf, device=device)  # no host sync per step
        self.fresh = torch.zeros(n, dtype=torch.bool, device=device)  # recorded since merge
        self.label_smoothing = label_smoothing

    def record(self, idx: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Store the loss of images ``idx`` from a step's (detached) logits."""
        loss = F.cross_entropy(logits.float(), labels, reduction="none",
                               label_smoothing=self.label_smoothing)
        self.loss[idx] = loss
        self.fresh[idx] = True

    def merge(self, ctx: DistContext) -> None:
        """Every rank's new records in every rank's table (a collective: all ranks call it;
        each image is in one rank's shard of a step, so the sum is that rank's loss)."""
        if ctx.enabled:  # one all-reduce of (losses, counts)
            values, counts = ctx.sum_tensor_(
                torch.stack([torch.where(self.fresh, self.loss, 0.0), self.fresh.float()]))
            seen = counts > 0
            self.loss[seen] = values[seen] / counts[seen]
        self.fresh.zero_()

    def draw(self, perm: torch.Tensor, k: int, seed: int, epoch: int) -> torch.Tensor:
        """The images of ``perm`` (an epoch's order) that a draw of ``k`` keeps, in that
        order: without replacement, weight (rank by loss, 1 = easiest) squared."""
        n = len(self.loss)
        if k >= n:
            return perm
        rank = torch.empty(n, dtype=torch.float64)
        rank[self.loss.cpu().argsort(stable=True)] = torch.arange(1, n + 1, dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed * 3_000_017 + epoch)
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.multinomial(rank.square(), k, replacement=False, generator=gen)] = True
        return perm[keep.to(perm.device)[perm]]

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        loss = state["loss"]
        if loss.shape != self.loss.shape:
            raise ValueError(f"loss table of {len(loss)} images for {len(self.loss)}")
        self.loss = loss.to(self.loss.device, copy=True)
        self.fresh.zero_()
