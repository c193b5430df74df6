"""The fit loop: ``TrainState``, ``train_step``, ``train_epoch``, ``validate``, ``fit``.

The whole training split sits on the device as a uint8 tensor; each epoch draws a seeded
permutation, slices batches, augments them on the device and takes optimizer steps under
bf16 autocast where supported. Loss and accuracy are summed on the device: the host reads
them once per epoch (and when a callback asks, e.g. the bar every few steps). Everything
else -- EMA, checkpoints, history, early stopping, the bar, the NaN check -- is a callback
(:mod:`fmnist.callbacks`). SIGINT/SIGTERM finish the current step, let the callbacks save
(``on_interrupt``) and raise :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .augment import BatchPlace
from .callbacks import CallbackList
from .datasets import Split
from .devices import autocast, use_bf16
from .distributed import DistContext
from .evaluation import predict_probs
from .optim import make_optimizer, make_scheduler
from .recipes import Recipe
from .selection import LossTable, epoch_steps

log = logging.getLogger("fmnist")


class TrainingInterrupted(Exception):
    """Raised after SIGINT/SIGTERM once ``last.pt`` is written; carries the run folder."""

    def __init__(self, run_dir: Path, epoch: int, step: int) -> None:
        self.run_dir, self.epoch, self.step = run_dir, epoch, step
        super().__init__(
            f"interrupted at epoch {epoch} step {step}; checkpoint saved. "
            f"Resume with: fmnist train --resume {run_dir}"
        )


@dataclass
class TrainState:
    """What an optimizer step changes (model, optimizer, scheduler) and how it is taken."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    device: torch.device
    bf16: bool = False
    grad_clip: float | None = None
    net: nn.Module | None = None  # what the step calls: the model or its DDP wrapper

    def __post_init__(self) -> None:
        self.net = self.model if self.net is None else self.net

    @classmethod
    def create(cls, recipe: Recipe, model: nn.Module, device: torch.device,
               steps_per_epoch: int, net: nn.Module | None = None) -> TrainState:
        """The recipe's optimizer, schedule, loss (label smoothing), precision, clipping."""
        optimizer = make_optimizer(recipe, model)
        return cls(model, optimizer, make_scheduler(recipe, optimizer, steps_per_epoch),
                   nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing), device,
                   use_bf16(device, recipe.precision), recipe.grad_clip, net)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a normalized batch ``x`` (B, 1, 28, 28) with labels ``y``
    (B,); returns (loss, logits), detached and still on the device: no host sync."""
    with autocast(state.device, state.bf16):
        logits = state.net(x)  # (B, C)
    loss = state.criterion(logits.float(), y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.grad_clip:
        nn.utils.clip_grad_norm_(state.model.parameters(), state.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    return loss.detach(), logits.detach()


class Meters:
    """An epoch's summed loss and correct predictions, kept on the device."""

    def __init__(self, device: torch.device, loss_sum: float = 0.0, correct: int = 0,
                 seen: int = 0, seconds: float = 0.0) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.loss_sum = torch.tensor(loss_sum, dtype=dtype, device=device)
        self.correct = torch.tensor(correct, dtype=torch.int64, device=device)
        self.seen, self.seconds = int(seen), float(seconds)

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.to(self.loss_sum.dtype) * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self.seen += len(y)

    def totals(self) -> dict[str, float | int]:
        """The sums as numbers (a host sync), as a checkpoint keeps them."""
        return {"loss_sum": float(self.loss_sum), "correct": int(self.correct),
                "seen": self.seen, "seconds": self.seconds}

    def means(self) -> tuple[float, float]:
        """(mean loss, accuracy) so far (a host sync)."""
        n = max(1, self.seen)
        return float(self.loss_sum) / n, int(self.correct) / n


@dataclass
class TrainData:
    """The training split on the device, served as augmented, normalized batches."""

    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,)
    batch_size: int
    mean: float
    std: float
    augment: Callable[..., torch.Tensor] | None = None  # (x, gen, place): fmnist.augment
    memory_format: torch.memory_format = torch.contiguous_format
    ctx: DistContext = field(default_factory=DistContext)
    size: int | None = None  # resize batches to size x size (progressive resizing)
    epoch: int = 1  # set by Loop.begin_epoch, with seed: what BatchPlace tells augmentations
    seed: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, perm: torch.Tensor, step: int) -> torch.Tensor:
        """The images of step ``step`` of an epoch in order ``perm`` (this rank's share)."""
        idx = perm[step * self.batch_size : (step + 1) * self.batch_size]
        if self.ctx.enabled:
            idx = idx[self.ctx.rank :: self.ctx.world_size]
        return idx

    def batch(self, perm: torch.Tensor, step: int, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch_of(self.indices(perm, step), gen)

    def batch_of(self, idx: torch.Tensor, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` augmented and normalized (B, 1, H, W), and their labels."""
        x = self.images[idx].unsqueeze(1).float().div_(255.0)  # (B, 1, 28, 28) in [0,1]
        if self.augment is not None:
            x = self.augment(x, gen, BatchPlace(idx, self.epoch, self.seed))
        if self.size is not None and self.size != x.shape[-1]:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              antialias=True, align_corners=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        return x, self.labels[idx]


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def epoch_generator(seed: int, epoch: int, device: torch.device, rank: int = 0
                    ) -> torch.Generator:
    """Augmentation randomness for one epoch, distinct per rank."""
    return torch.Generator(device=device).manual_seed(seed * 2_000_003 + epoch + 7 + 7919 * rank)


@dataclass
class Loop:
    """Where training stands; what every callback hook receives.

    ``epoch`` (1-based) and ``step`` (steps done in it), ``meters`` (device sums), ``row``
    (the epoch's history row, at ``on_epoch_end``), ``model`` (the weights validation
    uses: the EMA's when enabled), :meth:`predict_probs`."""

    state: TrainState
    data: TrainData
    recipe: Recipe
    run_dir: Path
    callbacks: CallbackList
    ctx: DistContext = field(default_factory=DistContext)
    epoch: int = 1
    step: int = 0
    epoch_done: bool = False
    partial: dict[str, Any] | None = None  # a resumed epoch's generator and meters
    meters: Meters | None = None
    perm: torch.Tensor | None = None
    gen: torch.Generator | None = None
    row: dict[str, Any] | None = None
    eval_module: nn.Module | None = None  # set by the EMA callback
    losses: LossTable | None = None  # each image's last loss, when epochs draw a share

    def __post_init__(self) -> None:
        if any(f < 1 for f in self.recipe.epoch_fractions) and self.losses is None:
            self.losses = LossTable(len(self.data), self.recipe.label_smoothing,
                                    self.data.labels.device)

    @property
    def model(self) -> nn.Module:
        return self.eval_module if self.eval_module is not None else self.state.model

    @property
    def device(self) -> torch.device:
        return self.state.device

    @property
    def bf16(self) -> bool:
        return self.state.bf16

    @property
    def mean(self) -> float:
        return self.data.mean

    @property
    def std(self) -> float:
        return self.data.std

    @property
    def steps_per_epoch(self) -> int:
        """Steps of the current epoch (a full one before :meth:`begin_epoch`)."""
        n = len(self.data) if self.perm is None else len(self.perm)
        return math.ceil(n / self.recipe.batch_size)

    def predict_probs(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """(N, C) probabilities of :attr:`model` for uint8 images (N, 28, 28)."""
        return predict_probs(self.model, images, mean=self.mean, std=self.std,
                             device=self.device, bf16=self.bf16,
                             channels_last=self.recipe.channels_last, tta=tta,
                             tta_shifts=self.recipe.tta_shifts)

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.epoch_done, self.row = epoch, False, None
        seed = self.recipe.seed
        partial, self.partial = self.partial, None
        self.perm = self._epoch_order(epoch, partial)
        self.gen = epoch_generator(seed, epoch, self.device, self.ctx.rank)
        sizes = self.recipe.epoch_sizes
        self.data.size = sizes[epoch - 1] if epoch <= len(sizes) else None
        self.data.epoch, self.data.seed = epoch, seed
        if partial:  # resuming mid-epoch: self.step is where it stopped
            self.gen.set_state(partial["gen"])
            self.meters = Meters(self.device, **{k: partial[k] for k in
                                                 ("loss_sum", "correct", "seen", "seconds")})
        else:
            self.step, self.meters = 0, Meters(self.device)
        self.state.model.train()

    def _epoch_order(self, epoch: int, partial: dict[str, Any] | None) -> torch.Tensor:
        """The images of epoch ``epoch`` in the order it visits them: a seeded permutation,
        kept to the epoch's draw when it trains on a share (a resumed epoch: its own)."""
        if partial and partial.get("perm") is not None:
            return partial["perm"].to(self.device)
        n, seed = len(self.data), self.recipe.seed
        perm = epoch_permutation(n, seed, epoch, self.device)
        if self.losses is None:
            return perm
        full = math.ceil(n / self.recipe.batch_size)
        k = epoch_steps(self.recipe, epoch, full) * self.recipe.batch_size
        return self.losses.draw(perm, k, seed, epoch)

    def checkpoint(self) -> dict[str, Any]:
        """The resumable state: after an epoch's end the next epoch at step 0; mid-epoch
        this step with the epoch's generator and meters. Every callback's state included."""
        mid = not self.epoch_done
        return {
            "epoch": self.epoch if mid else self.epoch + 1, "step": self.step if mid else 0,
            **self.state.state_dict(),
            "callbacks": self.callbacks.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(
                self.device) if self.device.type == "cuda" else None},
            "partial": {"gen": self.gen.get_state(), **self.meters.totals(),
                        "perm": self.perm.cpu() if len(self.perm) < len(self.data) else None}
            if mid else None,
            "losses": self.losses.state_dict() if self.losses is not None else None,
        }

    def restore(self, checkpoint: dict[str, Any], callback_states: dict[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` (``callback_states`` taken from it)."""
        self.state.load_state_dict(checkpoint)
        self.callbacks.load_state_dict(callback_states)
        self.epoch, self.step = int(checkpoint["epoch"]), int(checkpoint["step"])
        self.partial = checkpoint.get("partial") or None
        if self.losses is not None and checkpoint.get("losses") is not None:
            self.losses.load_state_dict(checkpoint["losses"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if self.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.device)


def _merge_losses(loop: Loop) -> None:
    """Every rank's image losses in every rank's table (before a draw or a checkpoint)."""
    if loop.losses is not None:
        loop.losses.merge(loop.ctx)


def _interrupt(loop: Loop, epoch: int, step: int) -> NoReturn:
    _merge_losses(loop)
    loop.callbacks.call("on_interrupt", loop)
    loop.ctx.barrier()
    raise TrainingInterrupted(loop.run_dir, epoch, step)


def train_epoch(loop: Loop, interrupted: Callable[[], bool] = lambda: False) -> float:
    """Steps from ``loop.step`` to the epoch's end; returns the epoch's training seconds."""
    t0 = time.perf_counter()
    for step in range(loop.step, loop.steps_per_epoch):
        idx = loop.data.indices(loop.perm, step)
        x, y = loop.data.batch_of(idx, loop.gen)
        loss, logits = train_step(loop.state, x, y)
        loop.meters.update(loss, logits, y)
        if loop.losses is not None:
            loop.losses.record(idx, logits, y)
        loop.step = step + 1
        loop.callbacks.call("on_step_end", loop)
        if interrupted():
            loop.meters.seconds += time.perf_counter() - t0
            _interrupt(loop, loop.epoch, loop.step)
    if loop.device.type == "cuda":
        torch.cuda.synchronize(loop.device)  # the time includes the queued steps
    return loop.meters.seconds + time.perf_counter() - t0


def validate(loop: Loop, split: Split | None) -> dict[str, float | None]:
    """Validation loss and accuracy of ``loop.model``; each rank takes a shard."""
    if split is None:
        return {"val_loss": None, "val_acc": None}
    ctx = loop.ctx
    part = split.subset(np.arange(len(split))[ctx.shard(len(split))])
    probs = loop.predict_probs(part.images)
    p_true = probs[np.arange(len(part)), part.labels]
    nll_sum, hits, count = ctx.sum([float(-np.log(np.clip(p_true, 1e-12, None)).sum()),
                                    float((probs.argmax(1) == part.labels).sum()), len(part)])
    return {"val_loss": nll_sum / count, "val_acc": hits / count}


def epoch_row(loop: Loop, seconds: float, val: dict[str, float | None]) -> dict[str, Any]:
    """The epoch's history row from the meters (summed over ranks) and validation."""
    t = loop.meters.totals()
    loss_sum, correct, seen = loop.ctx.sum([t["loss_sum"], t["correct"], t["seen"]])
    return {"epoch": loop.epoch, "lr": loop.state.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
            "val_loss": val["val_loss"], "val_acc": val["val_acc"],
            "seconds": round(seconds, 3)}


@contextmanager
def interrupt_guard() -> Iterator[dict[str, str | None]]:
    """Turn the first SIGINT/SIGTERM into a flag checked after each step; a second
    signal acts as usual (the handlers are restored on the first)."""
    flag: dict[str, str | None] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        flag["signal"] = signal.Signals(signum).name
        for s, h in previous.items():
            signal.signal(s, h)
        log.warning("%s received: finishing this step and saving a checkpoint "
                    "(press again to abort at once)", flag["signal"])

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def fit(loop: Loop, val: Split | None = None) -> str:
    """Train from ``loop.epoch``/``loop.step`` to the recipe's last epoch, calling the
    callbacks; returns why a callback stopped training early ("" if none did)."""
    hooks, ctx = loop.callbacks, loop.ctx
    reason = ""
    hooks.call("on_train_begin", loop)
    try:
        with interrupt_guard() as flag:
            def interrupted() -> bool:
                return ctx.any(bool(flag["signal"]))

            for epoch in range(loop.epoch, loop.recipe.epochs + 1):
                loop.begin_epoch(epoch)
                hooks.call("on_epoch_begin", loop)
                seconds = train_epoch(loop, interrupted)
                _merge_losses(loop)
                t1 = time.perf_counter()
                loop.row = epoch_row(loop, seconds, validate(loop, val))
                loop.row["eval_seconds"] = round(time.perf_counter() - t1, 3)
                loop.epoch_done = True
                reason = hooks.epoch_end(loop)  # may add to the row; history commits it
                if reason:
                    log.info("stopping early: %s", reason)
                    break
                if interrupted():
                    _interrupt(loop, epoch + 1, 0)
    finally:
        hooks.call("on_train_end", loop)
    return reason


# what callbacks received before the loop had a name (fmnist.training.EpochState)
EpochState = Loop
