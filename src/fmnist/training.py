"""The fit loop: ``train(recipe, **overrides) -> Run``.

The whole dataset sits on the device as a uint8 tensor; each epoch draws a seeded
permutation, slices batches, augments them on the device, and steps the optimizer under
bf16 autocast where supported, with channels-last memory. Every epoch appends a row to
``history.csv`` and writes ``checkpoints/last.pt`` (and ``best.pt`` on improvement)
atomically. SIGINT/SIGTERM finish the current step, write ``last.pt`` mid-epoch and raise
:class:`TrainingInterrupted`; ``train(resume=RUN_DIR)`` continues exactly where it stopped.

Determinism: shuffling and augmentation use generators seeded from (seed, epoch), and the
global RNG (dropout) is saved in checkpoints, so on the CPU an interrupted and resumed
run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .augment import build_augment
from .calibration import (
    calibration_block,
    calibration_size,
    calibration_split,
    fit_calibration,
    served_before_after,
)
from .checkpoints import (
    ModelMeta,
    atomic_save,
    atomic_write_json,
    safe_load,
    save_model,
)
from .datasets import Dataset, load_dataset
from .devices import autocast, environment, select_device, use_bf16
from .distributed import DistContext
from .distributed import setup as setup_distributed
from .errors import ConfigError, FmnistError
from .evaluation import metrics_from_probs, normalize, predict_probs
from .finetune import Freezer, apply_init, load_init, recipe_for_init
from .models import count_params, create_model
from .progress import Progress
from .recipes import Recipe, resolve_recipe
from .runs import (
    HISTORY_FIELDS,  # noqa: F401  (re-exported: fmnist.training.HISTORY_FIELDS)
    Run,
    RunLock,
    create_run,
    dataset_checksums,
    prepare_data,
    read_config,
    read_history,  # noqa: F401  (re-exported: fmnist.training.read_history)
    run_dataset,
    set_status,
    write_config,
    write_history,
    write_predictions,
)

log = logging.getLogger("fmnist")


class TrainingInterrupted(Exception):
    """Raised after SIGINT/SIGTERM once ``last.pt`` is written; carries the run folder."""

    def __init__(self, run_dir: Path, epoch: int, step: int) -> None:
        self.run_dir, self.epoch, self.step = run_dir, epoch, step
        super().__init__(
            f"interrupted at epoch {epoch} step {step}; checkpoint saved. "
            f"Resume with: fmnist train --resume {run_dir}"
        )


class TrainingDiverged(FmnistError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------- small parts


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


class EarlyStopping:
    """Tracks the monitored metric; :meth:`state_dict` makes it resumable."""

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

    def update(self, row: dict[str, float]) -> tuple[bool, str]:
        self.values.append(float(row[self.monitor]))
        if self.patience is None:
            return False, ""
        return should_stop(self.values, mode=self.mode, patience=self.patience,
                           min_delta=self.min_delta)

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = [float(v) for v in state["values"]]


class EMA:
    """Exponential moving average of a model's weights (buffers copied as they are)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

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

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)


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


MAX_WARMUP_FRACTION = 0.3
DATA_INIT_IMAGES = 5000  # training images a model's data-dependent init (init_from_data) sees


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step LambdaLR; the warm-up is capped at 30% of the run, so a recipe shortened
    with --epochs still ends with its learning rate annealed."""
    total = recipe.epochs * steps_per_epoch
    warmup = min(int(round(recipe.warmup_epochs * steps_per_epoch)),
                 int(MAX_WARMUP_FRACTION * total))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(recipe.schedule, s, total, warmup)
    )


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def epoch_generator(seed: int, epoch: int, device: torch.device, rank: int = 0
                    ) -> torch.Generator:
    """Augmentation randomness for one epoch, distinct per rank."""
    return torch.Generator(device=device).manual_seed(seed * 2_000_003 + epoch + 7 + 7919 * rank)


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


# --------------------------------------------------------------------------- callbacks


class Callback(Protocol):
    def on_epoch_end(self, state: EpochState) -> str | None:
        """Return a reason string to stop training after this epoch, else None."""


@dataclass
class EpochState:
    """What a callback sees at the end of an epoch."""

    epoch: int
    row: dict[str, Any]
    model: nn.Module  # the weights being evaluated (EMA when enabled), in eval mode
    run_dir: Path
    recipe: Recipe
    device: torch.device
    bf16: bool
    mean: float
    std: float

    def predict_probs(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        return predict_probs(self.model, images, mean=self.mean, std=self.std,
                             device=self.device, bf16=self.bf16,
                             channels_last=self.recipe.channels_last, tta=tta)


# --------------------------------------------------------------------------- training


def train(
    recipe: str | Recipe | None = "fast",
    *,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    resume: str | Path | None = None,
    overwrite: bool = False,
    offline: bool = False,
    callbacks: Sequence[Callback] = (),
    evaluate_test: bool = True,
    report: bool = False,
    data: Dataset | None = None,
    calibrate: bool = True,
    **overrides: Any,
) -> Run:
    """Train a recipe (with ``overrides`` of its fields) and write the run folder.

    ``data`` is an already loaded :class:`~fmnist.datasets.Dataset`; without it the
    recipe's ``dataset`` (a registered name, e.g. ``dataset="mnist"``) is loaded from
    ``data_dir`` or the usual places, before any run folder is made. Augmentations that
    change the dataset's labels (flips of digits) are left out unless ``augment`` is given
    explicitly (see :func:`fit_augment`). ``resume=RUN_DIR`` continues an interrupted run
    from ``checkpoints/last.pt`` with the recipe stored in its ``config.json`` (overrides
    are not allowed then), on the data it was trained on only. ``out`` must be a new or
    empty folder (``overwrite=True``: or an earlier run, which is replaced); the folder is
    locked while this process trains in it.
    ``calibrate`` holds out images to fit the temperature and the OOD score
    (:mod:`fmnist.calibration`).
    """
    previous: dict[str, Any] | None = None  # the resumed run's config.json
    if resume is not None:
        run_dir, previous, recipe = check_resume(resume, overrides)
    else:
        recipe = resolve_recipe(recipe, **overrides)
    assert isinstance(recipe, Recipe)
    ctx, dev = setup_distributed(select_device(device))
    lock: RunLock | None = None
    started: dict[str, bool] = {}  # set once config.json says "running"
    try:
        augmentation = None
        if previous is not None:  # refuses data other than the run's
            ds = run_dataset(run_dir, previous, data_dir=data_dir, offline=offline,
                             data=data)
            data_dir = data_dir or previous.get("data_dir")
        elif ctx.is_main:  # a bad --out is refused before the data is even looked for
            run_dir, lock = create_run(out, recipe.name, overwrite=overwrite)
        if previous is None:  # a bad data folder: lock.discard() leaves no run folder behind
            ds = data or load_dataset(recipe.dataset, data_dir, offline=offline)
            recipe, augmentation = fit_augment(recipe, ds, explicit=set(overrides))
        elif ctx.is_main:
            lock = RunLock.acquire(run_dir)
        run_dir = Path(ctx.broadcast(str(run_dir) if ctx.is_main else None))
        checkpoint = (safe_load(run_dir / "checkpoints" / "last.pt")
                      if previous is not None else None)
        return _train(recipe, run_dir, checkpoint, ctx, dev, data_dir=data_dir,
                      callbacks=callbacks, evaluate_test=evaluate_test, report=report,
                      ds=ds, augmentation=augmentation, previous=previous, started=started,
                      calibrate=calibrate)
    except Exception as e:
        if started and ctx.is_main and not isinstance(e, TrainingInterrupted):
            set_status(run_dir, "failed", error=(str(e).splitlines() or [type(e).__name__])[0])
        elif lock is not None and not started:
            lock.discard()  # nothing written: leave no empty run folder behind
        raise
    finally:
        if lock is not None:
            lock.release()
        ctx.close()


def fit_augment(recipe: Recipe, ds: Dataset, *, explicit: set[str] = frozenset()
                ) -> tuple[Recipe, dict[str, Any]]:
    """The recipe with only the augmentations that keep ``ds``'s labels, and a record of
    what was applied (for config.json).

    A flip turns a 2 into no digit at all: for such datasets (``ds.augment_policy``) the
    recipe's flips are dropped (with the policy's replacement, e.g. 1-px shifts) and its
    test-time augmentation, which averages over flips, is turned off. An ``augment`` or
    ``tta`` the user set (``explicit`` holds the overridden field names) is kept as given,
    with a warning when it changes labels."""
    policy = ds.augment_policy
    record: dict[str, Any] = {"recipe": list(recipe.augment), "dropped": [],
                              "explicit": "augment" in explicit}
    changes: dict[str, Any] = {}
    if "augment" in explicit:
        bad = [a for a in recipe.augment if not policy.preserves(a)]
        if bad:
            log.warning("--augment %s: %s can change %s's labels; applied as you asked",
                        ",".join(recipe.augment), ",".join(bad), ds.name)
    else:
        applied, dropped = policy.fit(recipe.augment)
        if dropped:
            changes["augment"] = applied
            record["dropped"] = list(dropped)
            log.info("%s: left out %s (changes %s's labels); augmenting with %s", recipe.name,
                     ",".join(dropped), ds.name, ",".join(applied) or "nothing")
    if recipe.tta and not policy.preserves("flip"):
        if "tta" in explicit:
            log.warning("--tta averages over flipped images, which changes %s's labels",
                        ds.name)
        else:
            changes["tta"] = False
            record["tta_off"] = "test-time augmentation averages over flips"
            log.info("%s: test-time augmentation off (its flips change %s's labels)",
                     recipe.name, ds.name)
    fitted = dataclasses.replace(recipe, **changes) if changes else recipe
    record["applied"] = list(fitted.augment)
    return fitted, record


def check_resume(resume: str | Path, overrides: dict[str, Any]
                  ) -> tuple[Path, dict[str, Any], Recipe]:
    """(run folder, its config, its recipe) of a ``--resume``, checked before anything
    is written."""
    run_dir = Path(resume)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"{resume}: no checkpoints/last.pt to resume from; pass a run folder "
                          "that `fmnist train` interrupted (see `fmnist runs`).")
    if overrides:
        raise ConfigError("--resume continues the stored recipe; drop the other options "
                          f"({', '.join(sorted(overrides))}).")
    config = read_config(run_dir)
    try:
        recipe = Recipe.from_dict(config["recipe"]).validate()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{run_dir}/config.json: unusable recipe ({e}); restore the file "
                          "or train the run again.") from None
    return run_dir, config, recipe


def _train(
    recipe: Recipe,
    run_dir: Path,
    checkpoint: dict[str, Any] | None,
    ctx: DistContext,
    dev: torch.device,
    *,
    data_dir: str | Path | None,
    callbacks: Sequence[Callback],
    evaluate_test: bool,
    report: bool,
    ds: Dataset,
    augmentation: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    started: dict[str, bool],
    calibrate: bool = True,
) -> Run:
    bf16 = use_bf16(dev, recipe.precision)
    torch.manual_seed(recipe.seed)

    train_split, val_split, test_split = prepare_data(recipe, ds)
    cal_split, cal_info = None, {"split": None}
    if calibrate and (val_split is not None or calibration_size(len(train_split)) > 0):
        train_split, cal_split, cal_info = calibration_split(train_split, val_split, recipe.seed)
    mean, std = ds.mean, ds.std
    init = load_init(recipe)  # fine-tuning (fmnist.finetune): its architecture and inputs
    if init is not None:
        recipe = recipe_for_init(recipe, init)
        mean, std = init.meta.mean, init.meta.std
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format

    model = create_model(recipe.model, num_classes=ds.num_classes, **recipe.model_kwargs)
    if recipe.sync_bn and ctx.enabled:
        if dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("sync_bn needs CUDA: on the CPU each rank keeps its own BN statistics")
    model = model.to(dev, memory_format=memory_format)
    if checkpoint is None and hasattr(model, "init_from_data"):
        # data-dependent initialization (e.g. fastnet's whitening stem) from a fixed sample
        sample = torch.from_numpy(train_split.images[:DATA_INIT_IMAGES]).to(dev)
        model.init_from_data(normalize(sample, mean, std))
    init_info = apply_init(model, init, ds.classes) if init is not None else None
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
        torch.manual_seed(recipe.seed + 1000 * ctx.rank)  # dropout differs per rank
    steps_per_epoch = math.ceil(len(train_split) / recipe.batch_size)
    optimizer = make_optimizer(recipe, model)
    scheduler = make_scheduler(recipe, optimizer, steps_per_epoch)
    if recipe.freeze_epochs and ctx.enabled:
        raise ConfigError("freeze_epochs does not work with --nproc (DDP needs every "
                          "parameter to get a gradient); set --freeze-epochs 0 or drop --nproc.")
    freezer = Freezer(model, ds.num_classes, recipe.freeze_epochs) if init is not None else None
    ema = EMA(model, recipe.ema_decay) if recipe.ema_decay else None
    stopper = EarlyStopping(recipe.resolved_monitor, recipe.patience, recipe.min_delta)
    augment = build_augment(recipe.augment)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    history: list[dict[str, Any]] = []
    start_epoch, start_step = 1, 0
    partial: dict[str, Any] = {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        stopper.load_state_dict(checkpoint["stopper"])
        history = list(checkpoint["history"])
        start_epoch, start_step = int(checkpoint["epoch"]), int(checkpoint["step"])
        partial = checkpoint.get("partial") or {}
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if dev.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], dev)
        log.info("resuming %s at epoch %d step %d", run_dir, start_epoch, start_step)

    env = environment(dev)
    config = {
        "recipe": recipe.to_dict(),
        "environment": env,
        "precision": "bf16" if bf16 else "fp32",
        "data_dir": str(Path(data_dir).absolute()) if data_dir is not None else None,
        "dataset": {
            "name": ds.name, "source": str(Path(ds.source).absolute()), "format": ds.format,
            "verified": ds.verified, "classes": list(ds.classes), "mean": mean, "std": std,
            "train": len(train_split), "val": len(val_split) if val_split else 0,
            "test": len(test_split), "sha256": dataset_checksums(ds),
        },
        "augmentation": augmentation,
        "calibration": dict(cal_info),
        "params": count_params(model),
        "init": init_info,
        "steps_per_epoch": steps_per_epoch,
        "distributed": {
            "world_size": ctx.world_size,
            "backend": ("nccl" if dev.type == "cuda" else "gloo") if ctx.enabled else None,
            "global_batch": recipe.batch_size,
            "per_rank_batch": math.ceil(recipe.batch_size / ctx.world_size),
            "lr_rule": "batch_size is the global batch, split across ranks; gradients are "
                       "averaged, so the learning rate is used as given",
            "batchnorm": ("SyncBatchNorm" if recipe.sync_bn and dev.type == "cuda"
                          and ctx.enabled else "per-rank statistics" if ctx.enabled
                          else "single process"),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
    }
    if previous is not None:
        config["created"] = previous.get("created", config["created"])
        config["augmentation"] = previous.get("augmentation")
    ctx.barrier()  # every rank has read what it needs of the old config and checkpoint
    if ctx.is_main:
        write_config(run_dir, config)
        started["config"] = True

    x_all = torch.from_numpy(train_split.images).to(dev)  # (N, 28, 28) uint8
    y_all = torch.from_numpy(train_split.labels).to(dev)
    n = len(train_split)

    def checkpoint_state(epoch: int, step: int, gen: torch.Generator | None,
                         meters: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "epoch": epoch, "step": step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "stopper": stopper.state_dict(), "history": history,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
            "partial": {"gen": gen.get_state(), **meters} if gen is not None and meters else None,
        }

    ckpt_dir = run_dir / "checkpoints"
    stop_reason = ""
    eval_model = ema.module if ema is not None else model
    with interrupt_guard() as interrupt:
        for epoch in range(start_epoch, recipe.epochs + 1):
            perm = epoch_permutation(n, recipe.seed, epoch, dev)
            gen = epoch_generator(recipe.seed, epoch, dev, ctx.rank)
            meters = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            if epoch == start_epoch and partial:
                gen.set_state(partial["gen"])
                meters = {k: partial[k] for k in meters}
            model.train()
            if freezer is not None:
                freezer.start_epoch(epoch)
            t0 = time.perf_counter()
            with Progress(f"epoch {epoch}/{recipe.epochs}", steps_per_epoch,
                          enabled=ctx.is_main) as bar:
                bar.advance(start_step if epoch == start_epoch else 0)
                for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
                    idx = perm[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                    if ctx.enabled:
                        idx = idx[ctx.rank :: ctx.world_size]  # this rank's share
                    x = x_all[idx].unsqueeze(1).float().div_(255.0)  # (B, 1, 28, 28) in [0,1]
                    y = y_all[idx]
                    if augment is not None:
                        x = augment(x, gen)
                    x = ((x - mean) / std).contiguous(memory_format=memory_format)
                    with autocast(dev, bf16):
                        logits = net(x)
                    loss = criterion(logits.float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if recipe.grad_clip:
                        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    if ema is not None:
                        ema.update(model)
                    loss_v = loss.item()
                    if not math.isfinite(loss_v):
                        raise TrainingDiverged(
                            f"loss became {loss_v} at epoch {epoch} step {step + 1} "
                            f"(lr {scheduler.get_last_lr()[0]:.3g}). Lower --lr, set grad_clip, "
                            "or train in fp32 (--precision fp32)."
                        )
                    meters["loss_sum"] += loss_v * len(y)
                    meters["correct"] += int((logits.argmax(1) == y).sum())
                    meters["seen"] += len(y)
                    bar.set(loss=f"{meters['loss_sum'] / meters['seen']:.4f}",
                            acc=f"{meters['correct'] / meters['seen']:.2%}")
                    bar.advance()
                    stop_now = (ctx.any(bool(interrupt["signal"])) if ctx.enabled
                                else bool(interrupt["signal"]))
                    if stop_now:
                        # mid-epoch checkpoint; after the last step, resuming runs this
                        # epoch's evaluation with the saved meters
                        meters["seconds"] += time.perf_counter() - t0
                        if ctx.is_main:  # (other ranks' generator states are not kept)
                            atomic_save(checkpoint_state(epoch, step + 1, gen, meters),
                                        ckpt_dir / "last.pt")
                            set_status(run_dir, "interrupted")
                        ctx.barrier()
                        raise TrainingInterrupted(run_dir, epoch, step + 1)
            train_seconds = meters["seconds"] + time.perf_counter() - t0
            start_step = 0

            t1 = time.perf_counter()
            loss_sum, correct, seen = ctx.sum(
                [meters["loss_sum"], meters["correct"], meters["seen"]])
            row: dict[str, Any] = {
                "epoch": epoch,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": loss_sum / max(1, seen),
                "train_acc": correct / max(1, seen),
                "val_loss": None, "val_acc": None,
                "seconds": round(train_seconds, 3),
            }
            if val_split is not None:
                part = val_split.subset(np.arange(len(val_split))[ctx.shard(len(val_split))])
                probs = predict_probs(eval_model, part.images, mean=mean, std=std,
                                      device=dev, bf16=bf16, channels_last=recipe.channels_last)
                p_true = probs[np.arange(len(part)), part.labels]
                nll_sum, hits, count = ctx.sum([
                    float(-np.log(np.clip(p_true, 1e-12, None)).sum()),
                    float((probs.argmax(1) == part.labels).sum()), len(part)])
                row["val_loss"], row["val_acc"] = nll_sum / count, hits / count
            row["eval_seconds"] = round(time.perf_counter() - t1, 3)
            # callbacks may add to the row (e.g. a benchmark's test accuracy) or ask to stop
            epoch_state = EpochState(epoch, row, eval_model, run_dir, recipe, dev, bf16,
                                     mean, std)
            requested = ([r for cb in callbacks if (r := cb.on_epoch_end(epoch_state))]
                         if ctx.is_main else [])  # callbacks run on rank 0 only
            row = ctx.broadcast(row)
            history.append(row)
            should, why = stopper.update(row)
            if requested:
                should, why = True, requested[0]
            should, why = ctx.broadcast((should, why))
            _log_epoch(row, recipe.epochs)

            if ctx.is_main:
                state = checkpoint_state(epoch + 1, 0, None, None)
                if stopper.improved():  # best.pt first: a crash between the two writes
                    atomic_save(state, ckpt_dir / "best.pt")  # reruns this epoch on resume
                atomic_save(state, ckpt_dir / "last.pt")
                write_history(run_dir, history)
            ctx.barrier()
            if should:
                stop_reason = why
                log.info("stopping early: %s", why)
                break
            if ctx.any(bool(interrupt["signal"])):
                if ctx.is_main:
                    set_status(run_dir, "interrupted")
                raise TrainingInterrupted(run_dir, epoch + 1, 0)

    weights_epoch = _restore_best(recipe, stopper, model, ema, ckpt_dir)
    final = eval_model
    classes = tuple(ds.classes)
    meta = ModelMeta(
        arch=recipe.model, arch_kwargs=dict(recipe.model_kwargs), classes=classes,
        mean=mean, std=std, dataset=ds.name, recipe=recipe.name,
        metrics={"weights_epoch": weights_epoch, "epochs_run": len(history),
                 "best_val_acc": _best(history, "val_acc"),
                 "train_seconds": round(sum(r["seconds"] for r in history), 3)},
    )
    if cal_split is not None:  # every rank fits the same numbers on the same images
        meta, cal_fit = fit_calibration(final, meta, calibration=cal_split, train=train_split,
                                        tta=recipe.tta, device=dev)
        cal_info.update(cal_fit)
    test_metrics: dict[str, Any] = {}
    test_probs = None  # saved beside model.pt for the report
    if evaluate_test:
        t0 = time.perf_counter()
        shard = np.arange(len(test_split))[ctx.shard(len(test_split))]
        if cal_split is not None:
            part = served_before_after(final, meta, test_split.images[shard], tta=recipe.tta,
                                       device=dev, bf16=bf16,
                                       channels_last=recipe.channels_last)
        else:
            part = (None, predict_probs(
                final, test_split.images[shard], mean=mean, std=std, device=dev, bf16=bf16,
                channels_last=recipe.channels_last, tta=recipe.tta), None)
        parts = ctx.gather(part)  # each test image evaluated once, on one rank
        if ctx.is_main:
            assert parts is not None
            p1, pt, scores = (None if parts[0][i] is None else np.concatenate(
                [q[i] for q in parts]) for i in range(3))
            test_metrics = metrics_from_probs(
                pt, test_split.labels, classes, seconds=time.perf_counter() - t0,
                tta=recipe.tta, bf16=bf16, device=dev)
            if cal_split is not None:
                test_metrics.update(calibration_block(meta, test_split.labels, p1, pt, scores))
                test_metrics["calibration"].update(cal_info)
            meta = ModelMeta.from_dict({**meta.to_dict(), "metrics": {
                **meta.metrics, "test_acc": test_metrics["accuracy"],
                "test_loss": test_metrics["loss"]}})
            atomic_write_json(run_dir / "metrics.json", {"split": "test", **test_metrics})
            test_probs = pt
        test_metrics = ctx.broadcast(test_metrics)
    identical = _check_identical_params(ctx, model)
    if ctx.is_main:
        save_model(run_dir / "model.pt", final, meta)
        if test_probs is not None:
            write_predictions(run_dir, test_probs, tta=recipe.tta)
        extra = {"stop_reason": stop_reason or None}
        if ctx.enabled:
            extra["distributed"] = {**read_config(run_dir)["distributed"],
                                    "params_identical_across_ranks": identical}
        set_status(run_dir, "finished", **extra)
        if report:
            from .report import write_report

            write_report(run_dir)
    ctx.barrier()
    return Run(run_dir, read_config(run_dir), recipe, final, meta, dev, bf16, ds, test_metrics,
               stop_reason)


def _check_identical_params(ctx: DistContext, model: nn.Module) -> bool:
    """Do all ranks hold the same parameters? (DDP's promise, checked once at the end.)"""
    if not ctx.enabled:
        return True
    flat = torch.cat([p.detach().float().cpu().flatten() for p in model.parameters()])
    digests = ctx.gather(hashlib.sha256(flat.numpy().tobytes()).hexdigest())
    same = ctx.broadcast(None if digests is None else len(set(digests)) == 1)
    if not same:
        log.error("parameters differ across ranks after training")
    return bool(same)


def _best(history: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in history if r.get(key) is not None]
    return max(values) if values else None


def _restore_best(recipe: Recipe, stopper: EarlyStopping, model: nn.Module, ema: EMA | None,
                  ckpt_dir: Path) -> int:
    """With early stopping and ``restore_best`` (Keras' ``restore_best_weights``), load
    best.pt's weights. Returns the epoch whose weights the model now holds."""
    values = stopper.values
    pick = min if stopper.mode == "min" else max
    best_epoch = values.index(pick(values)) + 1 if values else 0
    if recipe.patience is None or not recipe.restore_best or best_epoch == len(values):
        return len(values)
    path = ckpt_dir / "best.pt"
    best = safe_load(path) if path.is_file() else {}
    saved_epoch = int(best.get("epoch", 0)) - 1  # a checkpoint names the epoch to run next
    if saved_epoch != best_epoch:  # e.g. written by an fmnist that saved last.pt first
        log.warning("%s holds the weights of epoch %s, not of the best epoch %d: kept the "
                    "weights of the last epoch, %d", path, saved_epoch if best else "none",
                    best_epoch, len(values))
        return len(values)
    model.load_state_dict(best["model"])
    if ema is not None and best.get("ema") is not None:
        ema.load_state_dict(best["ema"])
    log.info("restored the weights of epoch %d (best %s %.4f)", best_epoch, stopper.monitor,
             pick(values))
    return best_epoch


def _log_epoch(row: dict[str, Any], epochs: int) -> None:
    val = ""
    if row["val_acc"] is not None:
        val = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.2%}"
    log.info("epoch %d/%d  loss %.4f  acc %.2f%%%s  lr %.3g  %.1fs", row["epoch"], epochs,
             row["train_loss"], 100 * row["train_acc"], val, row["lr"], row["seconds"])


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from ``model.pt`` or a run folder: (model, meta)."""
    from .checkpoints import load_model as _load

    return _load(path, select_device(device))


