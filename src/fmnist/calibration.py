"""Probabilities that mean what they say: one temperature per model, fitted on held-out data.

Label smoothing and TTA averaging leave ``fast`` under-confident (ECE 9.7% without TTA,
13.0% with it). Dividing the logits by a temperature ``T`` fitted to minimise the NLL on
held-out images fixes that without changing any prediction (the arg-max is unchanged).
The held-out images are the recipe's validation split, or, when it has none, a stratified
:func:`calibration_size` share of the training set that training then never sees
(``config.json["calibration"]`` says which and how many). The temperature is fitted on the
probabilities the recipe serves: with TTA, softmax(logits / T) averaged over the views.

The same held-out images choose the out-of-distribution threshold (:mod:`fmnist.ood`);
the class means and covariance come from training images. Everything lands in
``model.pt`` (``ModelMeta.temperature``, ``ModelMeta.ood``), so Predictor, predict, serve,
export and the report use it; :func:`calibrate_run` does it for an existing run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .datasets import Split, stratified_split
from .errors import ConfigError
from .evaluation import BATCH_SIZE, FLIP_ONLY, Shifts, normalize, tta_probs
from .metrics import reliability_table

log = logging.getLogger("fmnist")

CALIBRATION_IMAGES = 2000
"""Training images held out for calibration when the recipe has no validation split."""
CALIBRATION_MAX_FRACTION = 0.1
"""...but never more than this share of a (small) training set."""
UNSURE_BELOW = 0.6
"""A calibrated top probability under this is shown as "not sure" (predict, web page)."""
N_BINS = 15


# --------------------------------------------------------------------------- measures


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over images of the squared distance between probabilities and the one-hot label."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(1).mean())


def classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Mean over classes of the ECE of p(class) against "is this class" (Kull et al. 2019)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for c in range(probs.shape[1]):
        p = probs[:, c]
        hit = (labels == c).astype(np.float64)
        idx = np.clip(np.searchsorted(edges[1:-1], p, side="left"), 0, n_bins - 1)
        gap = np.bincount(idx, weights=p - hit, minlength=n_bins)
        total += np.abs(gap).sum() / len(p)
    return float(total / probs.shape[1])


def calibration_measures(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ECE, classwise ECE, NLL and Brier score of (N, C) probabilities."""
    from .metrics import expected_calibration_error, nll

    return {"ece": expected_calibration_error(probs, labels, N_BINS),
            "classwise_ece": classwise_ece(probs, labels),
            "nll": nll(probs, labels), "brier": brier_score(probs, labels)}


# --------------------------------------------------------------------------- temperature


def _served_probs(view_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(V, N, C) logits of V views -> (N, C) mean of softmax(logits / T) over the views."""
    return torch.softmax(view_logits / temperature, dim=-1).mean(0)


def fit_temperature(view_logits: np.ndarray | torch.Tensor, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of :func:`_served_probs` on these labels.

    ``view_logits`` is (V, N, C) (V = 1 without TTA) or (N, C). A golden-section search
    over log T in [1/20, 20]; the NLL is unimodal in T for one view and in practice for V.
    """
    z = torch.as_tensor(view_logits, dtype=torch.float64)
    z = z.unsqueeze(0) if z.ndim == 2 else z
    y = torch.as_tensor(labels, dtype=torch.long)
    if z.ndim != 3 or z.shape[1] != len(y) or len(y) == 0:
        raise ConfigError(f"fit_temperature needs (V, N, C) logits for {len(y)} labels; "
                          f"got shape {tuple(z.shape)}.")

    def loss(log_t: float) -> float:
        p = _served_probs(z, math.exp(log_t)).gather(1, y[:, None]).clamp_min(1e-12)
        return float(-p.log().mean())

    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    with one_thread():
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa, fb = loss(a), loss(b)
        for _ in range(60):
            if fa < fb:
                hi, b, fb = b, a, fa
                a = hi - g * (hi - lo)
                fa = loss(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + g * (hi - lo)
                fb = loss(b)
    return float(math.exp((lo + hi) / 2))


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside: for a loop of small ops, such as the ~120 softmaxes of
    2,000 images' logits in :func:`fit_temperature`, a second thread only adds waiting
    (0.25 s instead of 1.5-6 s on the shared 2-core machine). The values are the same:
    threads split rows, and sums of fewer than 32,768 values are not split."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the split


def calibration_size(n_train: int) -> int:
    """Images held out of an ``n_train`` training set when there is no validation split."""
    return min(CALIBRATION_IMAGES, int(n_train * CALIBRATION_MAX_FRACTION))


def calibration_split(train: Split, val: Split | None, seed: int
                      ) -> tuple[Split, Split, dict[str, Any]]:
    """(training images left, held-out calibration images, what was taken for config.json).

    The recipe's validation split when there is one (training keeps all its images),
    else a stratified :func:`calibration_size` hold-out of ``train`` (seeded)."""
    if val is not None and len(val):
        return train, val, {"split": "val", "size": len(val), "held_out": True}
    n = calibration_size(len(train))
    if n < 1:
        raise ConfigError(f"a training set of {len(train)} images is too small to hold out "
                          "calibration images; use at least 10 training images.")
    rest, held = stratified_split(train.labels, n / len(train), seed)
    info = {"split": "train-holdout", "size": len(held), "seed": seed, "held_out": True}
    return train.subset(rest), train.subset(held), info


# --------------------------------------------------------------------------- fitting


@torch.no_grad()
def view_logits_and_features(model: nn.Module, images: np.ndarray, *, mean: float, std: float,
                             device: torch.device | str = "cpu", tta: bool = False,
                             tta_shifts: Shifts = FLIP_ONLY, bf16: bool = False,
                             channels_last: bool = True, batch_size: int = BATCH_SIZE
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, N, C) float32 logits of every view the recipe serves (V = 2 x the TTA shifts
    with TTA, else 1; the un-augmented view first) and the (N, D) penultimate features of
    the un-augmented view, with the same precision and memory format as
    :func:`fmnist.evaluation.predict_probs`."""
    from .devices import autocast
    from .ood import feature_tap

    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    logits, feats = [], []
    model.eval()
    with feature_tap(model) as tap:
        for start in range(0, len(images), batch_size):
            x = normalize(torch.as_tensor(images[start:start + batch_size]).to(device), mean, std)
            views: list[torch.Tensor] = []

            def forward(v: torch.Tensor, views=views, x=x) -> torch.Tensor:
                with autocast(device, bf16):
                    out = model(v.contiguous(memory_format=memory_format)).float()
                if v is x:
                    feats.append(tap[0].float().cpu())
                views.append(out.cpu())
                return torch.softmax(out, 1)

            tta_probs(forward, x, shifts=tta_shifts) if tta else forward(x)
            logits.append(torch.stack(views))
    return torch.cat(logits, 1), torch.cat(feats)


def fit_calibration(model: nn.Module, meta: Any, *, calibration: Split, train: Split,
                    tta: bool, device: torch.device | str = "cpu",
                    method: str | None = None, bf16: bool = False
                    ) -> tuple[Any, dict[str, Any]]:
    """Fit the temperature and the OOD scorer; returns (meta with them, fit summary).

    The temperature and the OOD threshold see only ``calibration`` (held-out) images, in
    float32 as predict and serve score them; the OOD class means and covariance see up to
    :func:`fmnist.ood.fit_images` ``train`` images, under bf16 autocast when ``bf16`` (the
    run's precision): that pass is most of calibration's forward passes, bf16 makes it
    ~1.4x faster on a CPU that has it, and averaging 800 images per class leaves the means
    and covariance within bf16's rounding (~0.4% per feature) of the float32 ones.
    """
    from .checkpoints import ModelMeta
    from .ood import fit_images, fit_scorer, method_for

    model = model.float()
    kw = {"mean": meta.mean, "std": meta.std, "device": device}
    cal_logits, cal_feats = view_logits_and_features(model, calibration.images, tta=tta,
                                                     tta_shifts=meta.tta_shifts, **kw)
    temperature = fit_temperature(cal_logits, calibration.labels)
    single = fit_temperature(cal_logits[:1], calibration.labels) if tta else temperature
    method = method or method_for(meta.dataset)
    if len(train) > fit_images(method):
        _, keep = stratified_split(train.labels, fit_images(method) / len(train), 0)
        train = train.subset(keep)
    _, train_feats = view_logits_and_features(model, train.images, bf16=bf16, **kw)
    photos = _photo_features(model, meta, kw) if method == "gated" else None
    scorer = fit_scorer(train_feats.numpy(), train.labels, len(meta.classes), cal_feats,
                        cal_logits[0], method, photos=photos)
    labels = calibration.labels
    before = _served_probs(cal_logits.double(), 1.0).numpy()
    after = _served_probs(cal_logits.double(), temperature).numpy()
    summary = {
        "temperature": temperature, "temperature_single": single, "tta": tta,
        "tta_views": len(cal_logits),
        "calibration_images": len(labels),
        "ood_method": scorer.method, "ood_threshold": scorer.threshold,
        "ood_fit_images": len(train), "ood_fit_precision": "bf16" if bf16 else "fp32",
        "ood_fit_photos": 0 if photos is None else len(photos[1]),
        "calibration_split_before": calibration_measures(before, labels),
        "calibration_split_after": calibration_measures(after, labels),
    }
    new_meta = ModelMeta.from_dict({**meta.to_dict(), "temperature": temperature,
                                    "temperature_single": single, "ood": scorer.to_meta()})
    return new_meta, summary


def _photo_features(model: nn.Module, meta: Any, kw: dict[str, Any]
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """(features, labels) of the clothing training photos for the gated OOD score, or None
    when they are not here (:func:`fmnist.ood_photos.training_photos`)."""
    from .ood_photos import training_photos

    photos = training_photos(tuple(meta.classes))
    if photos is None:
        return None
    _, feats = view_logits_and_features(model, photos[0], **kw)
    return feats.numpy(), photos[1]


def served_before_after(model: nn.Module, meta: Any, images: np.ndarray, *, tta: bool,
                        device: torch.device | str = "cpu", bf16: bool = False,
                        channels_last: bool = True,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One pass over ``images``: served probabilities at T = 1 and at ``meta.temperature``
    (each (N, C)), and the (N,) OOD scores (None for a model without a scorer)."""
    from .ood import OodScorer

    logits, feats = view_logits_and_features(model.float(), images, mean=meta.mean,
                                             std=meta.std, device=device, tta=tta,
                                             tta_shifts=meta.tta_shifts, bf16=bf16,
                                             channels_last=channels_last)
    p1 = _served_probs(logits.double(), 1.0).numpy()
    pt = _served_probs(logits.double(), meta.temperature_for(tta)).numpy()
    scorer = OodScorer.from_meta(meta.ood)
    scores = None if scorer is None else scorer(feats, logits[0]).numpy()
    return p1, pt, scores


def calibration_block(meta: Any, labels: np.ndarray, p1: np.ndarray, pt: np.ndarray,
                      scores: np.ndarray | None) -> dict[str, Any]:
    """metrics.json's ``calibration`` (temperature, measures before/after) and ``ood``
    (method, threshold, share of these in-distribution images rejected) blocks."""
    out: dict[str, Any] = {"calibration": {
        "temperature": meta.temperature, "temperature_single": meta.temperature_for(False),
        "before": calibration_measures(p1, labels), "after": calibration_measures(pt, labels),
        "reliability_before": reliability_table(p1, labels, N_BINS),
        "reliability_after": reliability_table(pt, labels, N_BINS)}}
    if scores is not None:
        out["ood"] = {"method": meta.ood["method"], "threshold": meta.ood["threshold"],
                      "rejected": float((scores > meta.ood["threshold"]).mean())}
    return out


def calibrate_run(run_dir: str | Path, *, data_dir: str | Path | None = None,
                  device: str = "auto", offline: bool = False) -> dict[str, Any]:
    """Fit temperature and OOD scorer for an existing run; rewrite its model.pt and
    metrics.json (the previous model.pt is kept once as model.uncalibrated.pt)."""
    import time

    from .checkpoints import atomic_write_json, save_model
    from .evaluation import metrics_from_probs
    from .runs import Run, prepare_data

    run = Run.load(run_dir, data_dir=data_dir, device=device, offline=offline)
    train, val, test = prepare_data(run.recipe, run.dataset)
    train, cal, info = _run_calibration_split(run, train, val)
    meta, summary = fit_calibration(run.model, run.meta, calibration=cal, train=train,
                                    tta=run.recipe.tta, device=run.device, bf16=run.bf16)
    t0 = time.perf_counter()
    p1, pt, scores = served_before_after(run.model, meta, test.images, tta=run.recipe.tta,
                                         device=run.device, bf16=run.bf16,
                                         channels_last=run.recipe.channels_last)
    metrics = {"split": "test", **metrics_from_probs(
        pt, test.labels, run.classes, seconds=time.perf_counter() - t0, tta=run.recipe.tta,
        bf16=run.bf16, device=run.device), **calibration_block(meta, test.labels, p1, pt, scores)}
    metrics["calibration"].update({**info, **summary})
    meta = type(meta).from_dict({**meta.to_dict(), "metrics": {
        **meta.metrics, "test_acc": metrics["accuracy"], "test_loss": metrics["loss"]}})
    keep = run.dir / "model.uncalibrated.pt"
    if not keep.exists():
        save_model(keep, run.model, run.meta)
    save_model(run.dir / "model.pt", run.model, meta)
    atomic_write_json(run.dir / "metrics.json", metrics)
    return metrics


def _run_calibration_split(run: Any, train: Split, val: Split | None
                           ) -> tuple[Split, Split, dict[str, Any]]:
    """The held-out images of an existing run: its validation split, the hold-out training
    recorded in config.json, or (old runs trained on everything) a sample of its training
    images, marked ``held_out: false``."""
    recorded = run.config.get("calibration") or {}
    if val is not None or recorded.get("split") == "train-holdout":
        return calibration_split(train, val, int(recorded.get("seed", run.recipe.seed)))
    _, cal, info = calibration_split(train, None, run.recipe.seed)
    log.warning("%s was trained on every training image: the temperature is fitted on %d of "
                "them, not held out; retrain to fit it on held-out images.", run.dir, len(cal))
    return train, cal, {**info, "split": "train-sample", "held_out": False}
