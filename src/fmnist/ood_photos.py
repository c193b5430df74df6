"""Outlier exposure from real photos: the photo branch of the ``gated`` OOD score.

clothing-dataset-small ``train/`` photos (never ``validation/``) give three small things,
fitted on the model's penultimate features (L2-normalized), all stored in ``model.pt``:

- a *gate*: a logistic regression telling photos from Fashion-MNIST images, g in [0, 1];
- a *bank* of every training photo's features in fp16 (labelled ones and those labelled
  -1: hats, shorts, skirts...), scored by the k-th nearest labelled photo minus the k-th
  nearest -1 photo (cosine distances; higher = more like a -1 photo);
- a relative Mahalanobis part: nearest labelled-photo class mean minus the -1 photos' mean,
  one shared covariance.

The two photo parts are standardized (median 0, 95th percentile 1) on *out-of-fold* scores
of the labelled training photos (each fold scored by parts fitted on the others), so a
labelled photo is "in" for the photo branch just as a held-out Fashion-MNIST image is for
the Fashion-MNIST branch. :class:`fmnist.ood.OodScorer` blends the branches by the gate.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from .ood import ACCEPT_RATE, PHOTO_K, fit_gaussian, photo_parts, unit_rows

log = logging.getLogger("fmnist")

FOLDS = 5
GATE_C = 1.0
"""Inverse L2 strength of the gate's logistic regression."""


def fit_gate(fmnist_features: np.ndarray, photo_features: np.ndarray) -> dict[str, torch.Tensor]:
    """Logistic regression (balanced classes) photo vs Fashion-MNIST on unit features."""
    from sklearn.linear_model import LogisticRegression

    x = np.r_[unit_rows(fmnist_features), unit_rows(photo_features)]
    y = np.r_[np.zeros(len(fmnist_features)), np.ones(len(photo_features))]
    lr = LogisticRegression(C=GATE_C, max_iter=3000, class_weight="balanced").fit(x, y)
    return {"gate_w": torch.as_tensor(lr.coef_[0]).float(),
            "gate_b": torch.as_tensor(lr.intercept_).float()}


def fit_photo_stats(features: np.ndarray, labels: np.ndarray,
                    num_classes: int) -> dict[str, torch.Tensor]:
    """Bank and relative-Mahalanobis statistics from photo features (labels -1 = outlier)."""
    u = unit_rows(features)
    out = labels < 0
    yy = np.where(out, num_classes, labels)  # the -1 photos: one more "class", the last
    whiten, means = fit_gaussian(u, yy, num_classes + 1)
    return {"bank_in": torch.as_tensor(u[~out]).half(), "bank_out": torch.as_tensor(u[out]).half(),
            "whiten_photo": whiten, "means_photo": means}


def out_of_fold_parts(features: np.ndarray, labels: np.ndarray, num_classes: int,
                      seed: int = 0) -> torch.Tensor:
    """(N_labelled, 2) photo parts of every labelled photo, each scored by stats fitted on
    the other folds."""
    order = np.random.default_rng(seed).permutation(len(labels))
    parts = torch.zeros(len(labels), 2)
    for i in range(FOLDS):
        held = order[i::FOLDS]
        rest = np.setdiff1d(order, held)
        stats = fit_photo_stats(features[rest], labels[rest], num_classes)
        parts[held] = photo_parts(torch.as_tensor(features[held]).float(), stats, PHOTO_K)
    return parts[torch.as_tensor(labels >= 0)]


def fit_photo_branch(fmnist_features: np.ndarray, photo_features: np.ndarray,
                     photo_labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Every statistic the ``gated`` scorer adds to ``relative``'s."""
    labels = np.asarray(photo_labels)
    if (labels < 0).sum() < PHOTO_K or (labels >= 0).sum() < FOLDS * PHOTO_K:
        raise ValueError("too few photos (labelled and -1) for the photo branch")
    held = out_of_fold_parts(photo_features, labels, num_classes)
    center = held.median(0).values
    scale = (held.quantile(ACCEPT_RATE, dim=0) - center).clamp_min(1e-6)
    return {**fit_gate(fmnist_features, photo_features),
            **fit_photo_stats(photo_features, labels, num_classes),
            "photo_center": center, "photo_scale": scale, "base_std": torch.tensor([0.0, 1.0])}


def training_photos(classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """(images, labels) of clothing-dataset-small ``train/`` (labels -1 kept), preprocessed
    as ``predict`` does; None when the photos are not here or the model's classes are not
    Fashion-MNIST's (the photo labels name Fashion-MNIST classes)."""
    from .datasets import DATASETS
    from .errors import FmnistError
    from .photo_data import find_photos, load_photo_split

    if tuple(classes) != tuple(DATASETS.get("fashion-mnist").classes):
        return None
    root = find_photos()
    if root is None:
        log.info("no clothing photos found (FMNIST_PHOTOS_DIR): OOD score without the "
                 "photo branch")
        return None
    try:
        split = load_photo_split("train", root, offline=True)
    except FmnistError as e:
        log.warning("clothing photos unusable (%s): OOD score without the photo branch", e)
        return None
    return split.images, split.labels
