""""None of these": a score of how unlike the training data an input is.

The score comes from the model's own penultimate features (the input of its last
``nn.Linear``, read through a forward pre-hook, so it works for every registered model).
The stored method, ``relative``, adds two parts, each standardized (median 0, 95th
percentile 1) on held-out in-distribution images: the relative Mahalanobis distance
(nearest class mean with one shared covariance, minus the distance to one Gaussian over
all training features; Lee et al. 2018, Ren et al. 2021) and the Mahalanobis distance of
the L2-normalized features. Higher = less like the training data. The threshold accepts
:data:`ACCEPT_RATE` of held-out in-distribution images, so 5% of real Fashion-MNIST
images are flagged by design.

Chosen by measurement on ``fast`` (``python benchmarks/ood.py RUN --photos DIR``, table in
the README): plain Mahalanobis, energy (``-logsumexp(logits)``), max probability and kNN
distance each fail on some of digits, letters, noise and blocks; the sum does best over
all of them. The fitted statistics and the threshold travel in ``model.pt``
(``ModelMeta.ood``) and inside the exported ONNX graph (output ``ood_score``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ModelFileError

METHODS = ("relative", "mahalanobis", "energy")
DEFAULT_METHOD = "relative"
ACCEPT_RATE = 0.95
"""Share of held-out in-distribution images the threshold accepts."""
FIT_IMAGES = 20000
"""Training images (stratified, seeded) the class means and covariance are fitted on."""
SHRINKAGE = 1e-3
"""Ridge added to the shared covariance (relative to its mean variance) before inverting."""


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (its classifier head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelFileError(f"{type(model).__name__} has no nn.Linear head, so it has no "
                             "penultimate features for the out-of-distribution score or "
                             "similar items; use a registered fmnist model.")
    return linears[-1]


@contextmanager
def feature_tap(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While open, the list holds the (N, D) penultimate features of the latest forward."""
    box: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        box[:] = [inputs[0].flatten(1)]

    handle = last_linear(model).register_forward_pre_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def _nearest(features: torch.Tensor, whiten: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """(N,) squared whitened distance to the nearest of ``means``, per dimension."""
    g = features @ whiten  # (N, D)
    d = (g.unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(-1)  # (N, K)
    return d.min(dim=1).values / g.shape[1]


class OodScorer(nn.Module):
    """(features, logits) -> (N,) score; higher = less like the training data.

    ``relative`` (the default) adds two standardized parts: the relative Mahalanobis
    distance (nearest class mean minus one Gaussian over all training features, Ren et al.
    2021) and the Mahalanobis distance of L2-normalized features. Each Gaussian is stored
    as a whitening factor of its precision (P = W W^T) and whitened means, so every
    distance is a plain squared Euclidean one, exact in float32 and exportable to ONNX.
    ``mahalanobis`` is the first term alone, ``energy`` is ``-logsumexp(logits)``.
    """

    STATS = ("whiten", "means", "whiten_all", "mean_all", "whiten_norm", "means_norm",
             "center", "scale")

    def __init__(self, method: str, stats: dict[str, torch.Tensor], threshold: float) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown OOD method {method!r}; choose {', '.join(METHODS)}.")
        self.method = method
        self.threshold = float(threshold)
        for name in self.STATS:
            self.register_buffer(name, torch.as_tensor(stats.get(name, torch.zeros(0))).float())

    def parts(self, features: torch.Tensor) -> torch.Tensor:
        """(N, 2): relative Mahalanobis and normalized-feature Mahalanobis, unstandardized."""
        f = features.float()
        rel = _nearest(f, self.whiten, self.means) - _nearest(f, self.whiten_all, self.mean_all)
        unit = torch.nn.functional.normalize(f, dim=1)
        return torch.stack([rel, _nearest(unit, self.whiten_norm, self.means_norm)], 1)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.method == "energy":
            return -torch.logsumexp(logits.float(), dim=1)  # (N,)
        if self.method == "mahalanobis":
            return _nearest(features.float(), self.whiten, self.means)
        return ((self.parts(features) - self.center) / self.scale).sum(1)  # (N,)

    def to_meta(self) -> dict[str, Any]:
        """The plain dict stored as ``ModelMeta.ood``."""
        return {"method": self.method, "threshold": self.threshold,
                **{name: getattr(self, name).detach().cpu() for name in self.STATS}}

    @classmethod
    def from_meta(cls, d: dict[str, Any] | None) -> OodScorer | None:
        """The scorer stored in a model's metadata, or None for a model without one."""
        if not d:
            return None
        return cls(d["method"], {k: d[k] for k in cls.STATS if k in d}, d["threshold"])


def fit_gaussian(features: np.ndarray, labels: np.ndarray,
                 num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(whiten, whitened class means) from training features: class means, one shared
    covariance (with a small ridge), its inverse's Cholesky factor."""
    f = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    present = [c for c in range(num_classes) if bool((y == c).any())]
    means = torch.zeros(num_classes, f.shape[1], dtype=torch.float64)
    for c in present:
        means[c] = f[y == c].mean(0)
    centered = f - means[y]
    cov = centered.T @ centered / max(len(f) - 1, 1)
    cov += SHRINKAGE * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(len(cov),
                                                                       dtype=torch.float64)
    whiten = torch.linalg.cholesky(torch.linalg.inv(cov))  # P = W W^T
    missing = [c for c in range(num_classes) if c not in present]
    means_w = means @ whiten
    if missing:  # a class absent from the fit never is the nearest one
        means_w[missing] = float("inf")
    return whiten.float(), means_w.float()


def fit_scorer(train_features: np.ndarray, train_labels: np.ndarray, num_classes: int,
               held_features: torch.Tensor, held_logits: torch.Tensor,
               method: str = DEFAULT_METHOD) -> OodScorer:
    """Gaussians from training features; standardization and threshold from held-out
    in-distribution features (so :data:`ACCEPT_RATE` of those are accepted)."""
    f = np.asarray(train_features, np.float64)
    unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    whiten, means = fit_gaussian(f, train_labels, num_classes)
    whiten_all, mean_all = fit_gaussian(f, np.zeros(len(f), int), 1)
    whiten_norm, means_norm = fit_gaussian(unit, train_labels, num_classes)
    stats = {"whiten": whiten, "means": means, "whiten_all": whiten_all, "mean_all": mean_all,
             "whiten_norm": whiten_norm, "means_norm": means_norm,
             "center": torch.zeros(2), "scale": torch.ones(2)}
    scorer = OodScorer(method, stats, threshold=0.0)
    with torch.no_grad():
        parts = scorer.parts(held_features)
        center = parts.median(0).values
        scale = (parts.quantile(ACCEPT_RATE, dim=0) - center).clamp_min(1e-6)
        scorer.center.copy_(center)
        scorer.scale.copy_(scale)
        scorer.threshold = threshold_for(scorer(held_features, held_logits).numpy())
    return scorer


def threshold_for(scores: np.ndarray, accept: float = ACCEPT_RATE) -> float:
    """The score under which ``accept`` of these in-distribution scores fall."""
    if len(scores) == 0:
        raise ConfigError("no held-out images to choose the out-of-distribution threshold on.")
    return float(np.quantile(np.asarray(scores, np.float64), accept))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(score of an OOD input > score of an in-distribution one): 1.0 separates fully."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(y, np.r_[np.asarray(in_scores), np.asarray(out_scores)]))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = ACCEPT_RATE) -> float:
    """Share of OOD inputs accepted when ``tpr`` of in-distribution inputs are accepted."""
    t = np.quantile(np.asarray(in_scores, np.float64), tpr)
    return float((np.asarray(out_scores) <= t).mean())
