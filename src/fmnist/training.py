"""``train(recipe, **overrides) -> Run``: a run folder from a recipe and a dataset.

This module prepares a training job -- the splits, the model, the
:class:`~fmnist.loop.TrainState`, the callbacks, ``config.json`` -- hands it to
:func:`fmnist.loop.fit`, then fits the calibration, evaluates the test set and writes
``model.pt``. Every epoch appends a row to ``history.csv`` and writes
``checkpoints/last.pt`` (and ``best.pt`` on improvement) atomically. SIGINT/SIGTERM
finish the current step, write ``last.pt`` mid-epoch and raise
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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from .callbacks import (
    EMA,
    Callback,
    CallbackList,
    Checkpoint,
    EarlyStopping,
    History,
    ProgressBar,
    TerminateOnNaN,
    TrainingDiverged,
    callback_states,
    restore_best,
    should_stop,
)
from .checkpoints import ModelMeta, atomic_write_json, safe_load, save_model
from .datasets import Dataset, Split, load_dataset
from .devices import environment, select_device
from .distributed import DistContext
from .distributed import setup as setup_distributed
from .errors import ConfigError
from .evaluation import metrics_from_probs, normalize, predict_probs
from .finetune import Freezer, apply_init, load_init, recipe_for_init
from .loop import EpochState, Loop, TrainData, TrainingInterrupted, TrainState, fit
from .models import count_params, create_model
from .optim import MAX_WARMUP_FRACTION, lr_factor, make_optimizer, make_scheduler
from .recipes import Recipe, resolve_recipe
from .runs import (
    HISTORY_FIELDS,
    Run,
    RunLock,
    create_run,
    dataset_checksums,
    prepare_data,
    read_config,
    read_history,
    run_dataset,
    set_status,
    write_config,
    write_predictions,
)

log = logging.getLogger("fmnist")

DATA_INIT_IMAGES = 5000  # training images a model's data-dependent init (init_from_data) sees
GPU_SYNC_EVERY = 25  # on a GPU, steps between host reads of the loss for the NaN check
BAR_EVERY = 10  # steps between updates of the bar's loss and accuracy (a host read each)

# names other modules and older code import from here
__all__ = ["HISTORY_FIELDS", "MAX_WARMUP_FRACTION", "Callback", "EMA", "EarlyStopping",
           "EpochState", "Run", "TrainingDiverged", "TrainingInterrupted", "check_resume",
           "fit_augment", "lr_factor", "make_optimizer", "make_scheduler", "prepare_data",
           "read_config", "read_history", "should_stop", "train"]


class _RunGuard:
    """The run folder's lock and status around a training: on an error the status says
    "failed" once config.json is written, and before that no empty folder is left."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.lock: RunLock | None = None
        self.run_dir: Path | None = None
        self.started = False  # config.json says "running"

    def __enter__(self) -> _RunGuard:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 _tb: Any) -> None:
        try:
            if isinstance(error, Exception):
                if (self.started and self.ctx.is_main
                        and not isinstance(error, TrainingInterrupted)):
                    set_status(self.run_dir, "failed",
                               error=(str(error).splitlines() or [type(error).__name__])[0])
                elif self.lock is not None and not self.started:
                    self.lock.discard()  # nothing written: leave no empty run folder behind
        finally:
            if self.lock is not None:
                self.lock.release()
            self.ctx.close()


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
    data: Dataset | None = None,
    calibrate: bool = True,
    **overrides: Any,
) -> Run:
    """Train a recipe (with ``overrides`` of its fields) and write the run folder.

    ``data`` is an already loaded :class:`~fmnist.datasets.Dataset`; without it the
    recipe's ``dataset`` is loaded from ``data_dir`` or the usual places, before any run
    folder is made. Augmentations that change the dataset's labels are left out unless
    ``augment`` is given (:func:`fit_augment`). ``resume=RUN_DIR`` continues an
    interrupted run from ``checkpoints/last.pt`` with its stored recipe (no overrides), on
    the data it was trained on only. ``out`` must be a new or empty folder
    (``overwrite=True``: or an earlier run, which is replaced); it is locked while this
    process trains in it. ``callbacks`` (:class:`~fmnist.callbacks.Callback`) run before
    the built-in ones. ``calibrate`` holds out images to fit the temperature and the OOD
    score (:mod:`fmnist.calibration`). The report is not written here: see
    :func:`fmnist.report.write_report`.
    """
    previous: dict[str, Any] | None = None  # the resumed run's config.json
    if resume is not None:
        run_dir, previous, recipe = check_resume(resume, overrides)
    else:
        recipe = resolve_recipe(recipe, **overrides)
    ctx, dev = setup_distributed(select_device(device))
    with _RunGuard(ctx) as guard:
        augmentation = None
        if previous is not None:  # refuses data other than the run's
            ds = run_dataset(run_dir, previous, data_dir=data_dir, offline=offline, data=data)
            data_dir = data_dir or previous.get("data_dir")
        elif ctx.is_main:  # a bad --out is refused before the data is even looked for
            run_dir, guard.lock = create_run(out, recipe.name, overwrite=overwrite)
        if previous is None:  # a bad data folder: the guard leaves no run folder behind
            ds = data or load_dataset(recipe.dataset, data_dir, offline=offline)
            recipe, augmentation = fit_augment(recipe, ds, explicit=set(overrides))
        elif ctx.is_main:
            guard.lock = RunLock.acquire(run_dir)
        guard.run_dir = run_dir = Path(ctx.broadcast(str(run_dir) if ctx.is_main else None))
        checkpoint = (safe_load(run_dir / "checkpoints" / "last.pt")
                      if previous is not None else None)
        job = _job(recipe, run_dir, ctx, dev, ds, calibrate)
        return _train(job, checkpoint, guard, callbacks=callbacks, data_dir=data_dir,
                      augmentation=augmentation, previous=previous,
                      evaluate_test=evaluate_test)


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


@dataclass
class _Job:
    """One training's inputs, resolved: recipe, folder, device, splits, normalization."""

    recipe: Recipe
    run_dir: Path
    ctx: DistContext
    device: torch.device
    ds: Dataset
    train: Split
    val: Split | None
    test: Split
    cal: Split | None
    cal_info: dict[str, Any]
    mean: float
    std: float
    init: Any = None  # fine-tuning's source model (fmnist.finetune), if any


def _job(recipe: Recipe, run_dir: Path, ctx: DistContext, dev: torch.device, ds: Dataset,
         calibrate: bool) -> _Job:
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
    if recipe.freeze_epochs and ctx.enabled:
        raise ConfigError("freeze_epochs does not work with --nproc (DDP needs every "
                          "parameter to get a gradient); set --freeze-epochs 0 or drop --nproc.")
    return _Job(recipe, run_dir, ctx, dev, ds, train_split, val_split, test_split, cal_split,
                cal_info, mean, std, init)


def _build_model(job: _Job, fresh: bool) -> tuple[nn.Module, nn.Module, dict[str, Any] | None]:
    """(model, what the step calls: the model or its DDP wrapper, fine-tuning record)."""
    recipe, ctx, dev = job.recipe, job.ctx, job.device
    model = create_model(recipe.model, num_classes=job.ds.num_classes, **recipe.model_kwargs)
    if recipe.sync_bn and ctx.enabled:
        if dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("sync_bn needs CUDA: on the CPU each rank keeps its own BN statistics")
    model = model.to(dev, memory_format=_memory_format(recipe))
    if fresh and hasattr(model, "init_from_data"):
        # data-dependent initialization (e.g. fastnet's whitening stem) from a fixed sample
        sample = torch.from_numpy(job.train.images[:DATA_INIT_IMAGES]).to(dev)
        model.init_from_data(normalize(sample, job.mean, job.std))
    init_info = apply_init(model, job.init, job.ds.classes) if job.init is not None else None
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
        torch.manual_seed(recipe.seed + 1000 * ctx.rank)  # dropout differs per rank
    return model, net, init_info


def _memory_format(recipe: Recipe) -> torch.memory_format:
    return torch.channels_last if recipe.channels_last else torch.contiguous_format


def _train_data(job: _Job) -> TrainData:
    """The training split on the device, with the recipe's augmentation and batches."""
    return TrainData(torch.from_numpy(job.train.images).to(job.device),
                     torch.from_numpy(job.train.labels).to(job.device),
                     job.recipe.batch_size, job.mean, job.std, build_augment(job.recipe.augment),
                     _memory_format(job.recipe), job.ctx)


class _Unfreeze(Callback):
    """Fine-tuning: the body stays frozen for the recipe's first ``freeze_epochs``."""

    every_rank = True

    def __init__(self, freezer: Freezer) -> None:
        self.freezer = freezer

    def on_epoch_begin(self, loop: Loop) -> None:
        self.freezer.start_epoch(loop.epoch)


def _callbacks(job: _Job, model: nn.Module, user: Sequence[Callback]
               ) -> tuple[CallbackList, EarlyStopping, EMA | None, History]:
    """The built-in callbacks around the user's: theirs see the row before history.csv
    and the checkpoint keep it, and may ask to stop before early stopping does."""
    recipe = job.recipe
    freezer = (_Unfreeze(Freezer(model, job.ds.num_classes, recipe.freeze_epochs))
               if job.init is not None else None)
    ema = EMA(model, recipe.ema_decay) if recipe.ema_decay else None
    stopper = EarlyStopping(recipe.resolved_monitor, recipe.patience, recipe.min_delta)
    history = History(job.run_dir)
    nan_every = 1 if job.device.type == "cpu" else GPU_SYNC_EVERY
    first = [cb for cb in (freezer, ema, TerminateOnNaN(nan_every)) if cb is not None]
    last = [history, stopper, Checkpoint(job.run_dir / "checkpoints", stopper.improved),
            ProgressBar(BAR_EVERY)]
    return CallbackList([*first, *user, *last], job.ctx), stopper, ema, history


def _train(job: _Job, checkpoint: dict[str, Any] | None, guard: _RunGuard, *,
           callbacks: Sequence[Callback], data_dir: str | Path | None,
           augmentation: dict[str, Any] | None, previous: dict[str, Any] | None,
           evaluate_test: bool) -> Run:
    model, net, init_info = _build_model(job, fresh=checkpoint is None)
    steps_per_epoch = math.ceil(len(job.train) / job.recipe.batch_size)
    state = TrainState.create(job.recipe, model, job.device, steps_per_epoch, net)
    hooks, stopper, ema, history = _callbacks(job, model, callbacks)
    loop = Loop(state, _train_data(job), job.recipe, job.run_dir, hooks, job.ctx)
    if checkpoint is not None:
        loop.restore(checkpoint, callback_states(checkpoint))
        log.info("resuming %s at epoch %d step %d", job.run_dir, loop.epoch, loop.step)
    config = _config(job, state, init_info, steps_per_epoch, data_dir=data_dir,
                     augmentation=augmentation, previous=previous)
    job.ctx.barrier()  # every rank has read what it needs of the old config and checkpoint
    if job.ctx.is_main:
        write_config(job.run_dir, config)
        guard.started = True
    stop_reason = fit(loop, job.val)
    weights_epoch = _restore_best(job, stopper, model, ema)
    return _finish(job, loop, history.rows, weights_epoch, stop_reason, evaluate_test)


def _config(job: _Job, state: TrainState, init_info: dict[str, Any] | None,
            steps_per_epoch: int, *, data_dir: str | Path | None,
            augmentation: dict[str, Any] | None, previous: dict[str, Any] | None
            ) -> dict[str, Any]:
    """config.json of the run (a resumed run keeps its creation time and augmentation)."""
    recipe, ds, ctx, dev = job.recipe, job.ds, job.ctx, job.device
    config = {
        "recipe": recipe.to_dict(),
        "environment": environment(dev),
        "precision": "bf16" if state.bf16 else "fp32",
        "data_dir": str(Path(data_dir).absolute()) if data_dir is not None else None,
        "dataset": {
            "name": ds.name, "source": str(Path(ds.source).absolute()), "format": ds.format,
            "verified": ds.verified, "classes": list(ds.classes), "mean": job.mean,
            "std": job.std, "train": len(job.train), "val": len(job.val) if job.val else 0,
            "test": len(job.test), "sha256": dataset_checksums(ds),
        },
        "augmentation": augmentation,
        "calibration": dict(job.cal_info),
        "params": count_params(state.model),
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
    return config


def _restore_best(job: _Job, stopper: EarlyStopping, model: nn.Module, ema: EMA | None) -> int:
    """With early stopping and ``restore_best`` (Keras' ``restore_best_weights``), load
    best.pt's weights. Returns the epoch whose weights the model now holds."""
    last = len(stopper.values)
    if job.recipe.patience is None or not job.recipe.restore_best or stopper.best_epoch() == last:
        return last
    return restore_best(job.run_dir / "checkpoints" / "best.pt", stopper, model, ema)


def _finish(job: _Job, loop: Loop, history: list[dict[str, Any]], weights_epoch: int,
            stop_reason: str, evaluate_test: bool) -> Run:
    """Calibration, test metrics, model.pt and the "finished" status."""
    recipe, ctx, final = job.recipe, job.ctx, loop.model
    meta = ModelMeta(
        arch=recipe.model, arch_kwargs=dict(recipe.model_kwargs), classes=tuple(job.ds.classes),
        mean=job.mean, std=job.std, dataset=job.ds.name, recipe=recipe.name,
        tta_shifts=recipe.tta_shifts,
        metrics={"weights_epoch": weights_epoch, "epochs_run": len(history),
                 "best_val_acc": _best(history, "val_acc"),
                 "train_seconds": round(sum(r["seconds"] for r in history), 3)},
    )
    views = f", {2 * len(recipe.tta_shifts)} views each" if recipe.tta else ""
    if job.cal is not None:  # every rank fits the same numbers on the same images
        log.info("calibrating on %s held-out images%s", f"{len(job.cal):,}", views)
        meta, cal_fit = fit_calibration(final, meta, calibration=job.cal, train=job.train,
                                        tta=recipe.tta, device=job.device, bf16=loop.bf16)
        job.cal_info.update(cal_fit)
    test_metrics: dict[str, Any] = {}
    test_probs = None  # saved beside model.pt for the report
    if evaluate_test:
        log.info("evaluating the %s test images%s", f"{len(job.test):,}", views)
        test_metrics, meta, test_probs = _evaluate_test(job, final, meta, loop.bf16)
    identical = _check_identical_params(ctx, loop.state.model)
    if ctx.is_main:
        save_model(job.run_dir / "model.pt", final, meta)
        if test_probs is not None:
            write_predictions(job.run_dir, test_probs, tta=recipe.tta)
        extra: dict[str, Any] = {"stop_reason": stop_reason or None}
        if ctx.enabled:
            extra["distributed"] = {**read_config(job.run_dir)["distributed"],
                                    "params_identical_across_ranks": identical}
        set_status(job.run_dir, "finished", **extra)
    ctx.barrier()
    return Run(job.run_dir, read_config(job.run_dir), recipe, final, meta, job.device, loop.bf16,
               job.ds, test_metrics, stop_reason)


def _evaluate_test(job: _Job, final: nn.Module, meta: ModelMeta, bf16: bool
                   ) -> tuple[dict[str, Any], ModelMeta, np.ndarray | None]:
    """Test metrics (and the calibration block) with each image evaluated once, on one
    rank; rank 0 writes metrics.json and adds the accuracy to the model's metadata."""
    recipe, ctx, test, dev = job.recipe, job.ctx, job.test, job.device
    t0 = time.perf_counter()
    shard = np.arange(len(test))[ctx.shard(len(test))]
    if job.cal is not None:
        part = served_before_after(final, meta, test.images[shard], tta=recipe.tta,
                                   device=dev, bf16=bf16, channels_last=recipe.channels_last)
    else:
        part = (None, predict_probs(
            final, test.images[shard], mean=job.mean, std=job.std, device=dev, bf16=bf16,
            channels_last=recipe.channels_last, tta=recipe.tta, tta_shifts=recipe.tta_shifts),
            None)
    parts = ctx.gather(part)
    test_metrics: dict[str, Any] = {}
    pt = None
    if ctx.is_main:
        assert parts is not None
        p1, pt, scores = (None if parts[0][i] is None else np.concatenate(
            [q[i] for q in parts]) for i in range(3))
        test_metrics = metrics_from_probs(pt, test.labels, tuple(job.ds.classes),
                                          seconds=time.perf_counter() - t0, tta=recipe.tta,
                                          bf16=bf16, device=dev)
        if job.cal is not None:
            test_metrics.update(calibration_block(meta, test.labels, p1, pt, scores))
            test_metrics["calibration"].update(job.cal_info)
        meta = ModelMeta.from_dict({**meta.to_dict(), "metrics": {
            **meta.metrics, "test_acc": test_metrics["accuracy"],
            "test_loss": test_metrics["loss"]}})
        atomic_write_json(job.run_dir / "metrics.json", {"split": "test", **test_metrics})
    return ctx.broadcast(test_metrics), meta, pt


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
