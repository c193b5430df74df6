"""Batched prediction over uint8 image arrays: the one path from pixels to probabilities.

Training (validation each epoch), ``fmnist evaluate`` and the torch Predictor all go
through :func:`predict_probs`, so normalization, precision and TTA are the same everywhere.
:func:`load_run` brings a run folder back (model, recipe, the same data splits) and
:func:`evaluate_run` evaluates it and writes ``metrics.json``, for any front end.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .devices import autocast
from .errors import ConfigError


def normalize_batch(x_uint8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(B, 28, 28) or (B, 1, 28, 28) uint8 -> (B, 1, 28, 28) float normalized."""
    x = x_uint8.float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return (x - mean) / std


def predict_probs(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    channels_last: bool = True,
    batch_size: int = 1024,
    tta: bool = False,
    temperature: float = 1.0,
) -> np.ndarray:
    """Class probabilities (N, C) float64 for uint8 images (N, 28, 28) or (N, 1, 28, 28).

    With ``tta`` the probabilities are averaged over flipped and one-pixel-shifted views
    (:func:`fmnist.metrics.tta_probs`); ``temperature`` divides the logits of every view
    (:mod:`fmnist.calibration`)."""
    return predict_scored(model, images, mean=mean, std=std, device=device, bf16=bf16,
                          channels_last=channels_last, batch_size=batch_size, tta=tta,
                          temperature=temperature)[0]


@torch.no_grad()
def predict_scored(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    channels_last: bool = True,
    batch_size: int = 1024,
    tta: bool = False,
    temperature: float = 1.0,
    scorer: nn.Module | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`predict_probs` plus, with a ``scorer`` (:class:`fmnist.ood.OodScorer`), the
    (N,) out-of-distribution score of each image, from the same forward pass of the
    un-augmented view (None without a scorer)."""
    from .metrics import tta_probs
    from .ood import feature_tap

    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    data = torch.as_tensor(images)
    scores: list[np.ndarray] = []
    plain: list[torch.Tensor] = []  # the batch's un-augmented view

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, bf16):
            logits = model(x.contiguous(memory_format=memory_format))
        if scorer is not None and x is plain[0]:
            s = scorer.to(device)(tap[0], logits)
            scores.append(s.double().cpu().numpy())
        return torch.softmax(logits.float() / temperature, dim=1)

    was_training = model.training
    model.eval()
    outs: list[np.ndarray] = []
    try:
        with feature_tap(model) if scorer is not None else nullcontext([]) as tap:
            for start in range(0, len(data), batch_size):
                x = normalize_batch(data[start : start + batch_size].to(device), mean, std)
                plain[:] = [x]
                probs = tta_probs(forward, x) if tta else forward(x).double().cpu().numpy()
                outs.append(np.asarray(probs, dtype=np.float64))
    finally:
        model.train(was_training)
    probs = np.concatenate(outs) if outs else np.zeros((0, 0))
    if scorer is None:
        return probs, None
    return probs, np.concatenate(scores) if scores else np.zeros(0)


def evaluate_model(
    model: nn.Module,
    split,
    classes: tuple[str, ...] | list[str],
    *,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    channels_last: bool = True,
    tta: bool = False,
    batch_size: int = 1024,
    temperature: float = 1.0,
) -> dict:
    """Full metrics (see :func:`fmnist.metrics.compute_metrics`) of ``model`` on a split,
    plus timing; JSON-serialisable."""
    t0 = time.perf_counter()
    probs = predict_probs(model, split.images, mean=mean, std=std, device=device, bf16=bf16,
                          channels_last=channels_last, tta=tta, batch_size=batch_size,
                          temperature=temperature)
    seconds = time.perf_counter() - t0
    return metrics_from_probs(probs, split.labels, classes, seconds=seconds, tta=tta,
                              bf16=bf16, device=device)


def metrics_from_probs(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...] | list[str],
    *,
    seconds: float,
    tta: bool,
    bf16: bool,
    device: torch.device | str,
) -> dict[str, Any]:
    """What :func:`evaluate_model` returns, from probabilities already computed (so a
    report that needs the probabilities too predicts only once)."""
    from .metrics import compute_metrics

    metrics = compute_metrics(probs, labels, list(classes))
    metrics.update({
        "tta": tta,
        "precision": "bf16" if bf16 else "fp32",
        "device": str(device),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(labels) / max(seconds, 1e-9), 1),
    })
    return metrics


# --------------------------------------------------------------------------- run folders

SPLITS = ("test", "val")


@dataclass
class LoadedRun:
    """A run folder brought back to life: its model, recipe and the data it was trained on.

    :meth:`split` recreates the exact splits of training (same ``train_limit``,
    ``val_fraction`` and ``seed``) through :func:`fmnist.training.prepare_data`.
    """

    dir: Path
    config: dict[str, Any]
    recipe: Any  # fmnist.recipes.Recipe
    model: nn.Module
    meta: Any  # fmnist.checkpoints.ModelMeta
    dataset: Any  # fmnist.datasets.Dataset
    device: torch.device
    bf16: bool

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta.classes)

    def split(self, name: str = "test"):
        """The ``test``, ``val`` or ``train`` split exactly as training used it."""
        from .training import prepare_data

        if name not in (*SPLITS, "train"):
            raise ConfigError(f"unknown split {name!r}; use test or val.")
        train, val, test = prepare_data(self.recipe, self.dataset)
        if name == "val" and val is None:
            raise ConfigError(
                f"{self.dir}: this run was trained without a validation split "
                f"(val_fraction={self.recipe.val_fraction}); evaluate --split test instead."
            )
        return {"train": train, "val": val, "test": test}[name]

    def predict(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities (N, C) with the run's normalization and precision."""
        return predict_probs(self.model, images, mean=self.meta.mean, std=self.meta.std,
                             device=self.device, bf16=self.bf16,
                             channels_last=self.recipe.channels_last, tta=tta,
                             temperature=self.meta.temperature_for(tta))

    def evaluate(self, split: str = "test", tta: bool | None = None) -> dict[str, Any]:
        """:func:`evaluate_model` on one split; ``tta=None`` follows the recipe. A dict that
        notebooks show as a card (:class:`fmnist.display.EvaluationResult`)."""
        from .display import EvaluationResult

        data = self.split(split)
        use_tta = self.recipe.tta if tta is None else bool(tta)
        return EvaluationResult({"split": split, **evaluate_model(
            self.model, data, self.classes, mean=self.meta.mean, std=self.meta.std,
            device=self.device, bf16=self.bf16, channels_last=self.recipe.channels_last,
            tta=use_tta, temperature=self.meta.temperature_for(use_tta))})


def load_run(
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    offline: bool = False,
    dataset: Any = None,
) -> LoadedRun:
    """Load a run's model and the dataset it was trained on (``dataset`` given, else
    ``data_dir``, else the folder recorded in config.json, else the usual search); data
    other than the run's is refused (:func:`fmnist.runs.run_dataset`)."""
    from .checkpoints import load_model
    from .devices import select_device, use_bf16
    from .recipes import Recipe
    from .runs import read_config, run_dataset

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder. Pass a folder written by "
                          "`fmnist train` (see `fmnist runs`).")
    config = read_config(run_dir)
    try:
        recipe = Recipe.from_dict(config["recipe"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{run_dir}/config.json has no usable recipe ({e}).") from None
    dev = select_device(device)
    model, meta = load_model(run_dir, dev)
    dataset = run_dataset(run_dir, config, data_dir=data_dir, offline=offline, data=dataset)
    if len(dataset.classes) != len(meta.classes):
        raise ConfigError(
            f"{run_dir}: the model has {len(meta.classes)} classes but dataset "
            f"{dataset.name!r} from {dataset.source} has {len(dataset.classes)}; pass the "
            "--data-dir the run was trained on."
        )
    bf16 = use_bf16(dev, recipe.precision)
    return LoadedRun(run_dir, config, recipe, model, meta, dataset, dev, bf16)


def metrics_filename(split: str) -> str:
    """``metrics.json`` for the test split, ``metrics-<split>.json`` otherwise."""
    return "metrics.json" if split == "test" else f"metrics-{split}.json"


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    tta: bool | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    *,
    offline: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a run folder's model on its test (or validation) split.

    Writes ``metrics.json`` (``metrics-val.json`` for ``split="val"``) into the run
    unless ``write=False``, and returns the same dict (see :func:`evaluate_model`). A
    ``data_dir`` holding other data than the run was trained on is refused, so the run's
    metrics are always those of its own test split."""
    from .checkpoints import atomic_write_json

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}.")
    run = load_run(run_dir, data_dir=data_dir, device=device, offline=offline)
    metrics = run.evaluate(split, tta=tta)
    if write:
        atomic_write_json(run.dir / metrics_filename(split), metrics)
    return metrics
