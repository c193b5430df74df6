""""None of these": a score of how unlike the training data an input is.

The score comes from the model's own penultimate features (the input of its last
``nn.Linear``, read through a forward pre-hook, so it works for every registered model).
A model trained on Fashion-MNIST alone stores ``relative`` (b below); a model whose
training data held the clothing photos (the ``photo`` recipe, :func:`method_for`) stores
``gated``, which blends two branches by a gate g, a logistic regression "is this a
photo?" fitted on the clothing-dataset-small ``train/`` photos against Fashion-MNIST
images (:mod:`fmnist.ood_photos`): score = (1 - g^2) b + g^2 p.

- b, the Fashion-MNIST branch (``relative`` alone), adds two parts, each standardized
  (median 0, 95th percentile 1) on held-out in-distribution images: the relative
  Mahalanobis distance (nearest class mean with one shared covariance, minus the distance
  to one Gaussian over all training features; Lee et al. 2018, Ren et al. 2021) and the
  Mahalanobis distance of the L2-normalized features.
- p, the photo branch (outlier exposure), is the max of two parts standardized on
  out-of-fold labelled training photos: the k-th nearest labelled training photo minus the
  k-th nearest training photo labelled -1 (an fp16 bank of every training photo's unit
  features, ~0.8 MB for 3,068 photos), and the relative Mahalanobis distance nearest
  labelled-photo class mean minus the -1 photos' mean.

Without the photos (``FMNIST_PHOTOS_DIR`` unset and none found) or for a model whose classes
are not Fashion-MNIST's, a ``gated`` fit falls back to ``relative`` (the method is in
``ModelMeta.ood``). Higher = less like the training data. The threshold accepts
:data:`ACCEPT_RATE` of held-out Fashion-MNIST images, so 5% of real Fashion-MNIST images are
flagged by design.

Chosen by measurement (``python benchmarks/ood.py RUN --photos DIR``, table in the README):
plain Mahalanobis, energy (``-logsumexp(logits)``), max probability and kNN distance each
fail on some of digits, letters, noise and blocks; ``relative`` does best over all of them
but cannot tell labelled photos from -1 photos (AUROC 0.59 on `fast`: both are far from
Fashion-MNIST). What did not pay, measured on `fast` (labelled vs -1 validation photos,
64 of them -1, so +-0.03; digits against the Fashion-MNIST test set):

- a photo part *added* to b (any weight) or the *max* of b and a photo part: b is high for
  every photo, so it drowns the photo part (photos 0.62-0.80) or, weighted up, the photo
  part lets digits and noise through (digits 0.64-0.84 at weight 3-6);
- the *min* of b and a photo branch (either domain accepts): digits 0.83-0.95;
- a logistic "-1 photo" direction instead of the bank: photos 0.83-0.86 alone, no better
  inside the gate; a Mahalanobis distance to the labelled photos' class means, or the
  k-th nearest labelled photo, as a third "is it like any photo" part: no change (the
  digits that reach the photo branch sit among the labelled photos in feature space);
- the gate on raw or norm-augmented features, or with weaker regularization: sends more
  digits to the photo branch (digits 0.94-0.98); g instead of g^2: photos 0.87, digits
  0.98; g^2 (kept): photos 0.85, digits 0.98 (the gate power and k were picked on these
  validation figures, so they are slightly optimistic);

so on `fast` no score tried meets every target at once (photos >= 0.85 *and* digits >=
0.99), and `fast` keeps ``relative``; on the `photo` model, whose features have seen photos,
``gated`` meets them all (photos 0.890, digits 0.992; README). The fitted statistics and the
threshold travel in ``model.pt`` (``ModelMeta.ood``) and inside the exported ONNX graph
(output ``ood_score``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ModelFileError

log = logging.getLogger("fmnist")

METHODS = ("gated", "relative", "mahalanobis", "energy")
DEFAULT_METHOD = "relative"
"""For models trained on Fashion-MNIST alone; see :func:`method_for`."""
PHOTO_METHOD = "gated"
"""For models whose training data held the clothing photos (the ``photo`` recipe); falls
back to ``relative`` when the photos are not found."""
ACCEPT_RATE = 0.95
"""Share of held-out in-distribution images the threshold accepts."""
FIT_IMAGES = 8000
"""Training images (stratified, seeded) the class means and covariance are fitted on. On
`fast`, fits on 8,000 of the 20,000 images used before score every OOD set within the spread
that other subsets of the same size show, medians of 3 subsets against the 20,000-image fit:
digits 0.9975 / 0.9976, glyphs 0.9803 / 0.9794, noise 0.9997 / 0.9997, blobs 0.9933 /
0.9948, blocks 0.9885 / 0.9888 (``benchmarks/ood_fit_size.py``, results/ood-fit-size-cpu.json;
5,000 images already spread glyphs to 0.977-0.981); the training-image pass, most of
calibration's time, takes 40% of what it took (~1.5 s less of every ``fmnist train``)."""
GATED_FIT_IMAGES = 20000
"""...for ``gated``, whose photo gate is a logistic regression of these images against the
training photos (its weights and thresholds were tuned at 20,000; smaller is not measured)."""
SHRINKAGE = 1e-3
"""Ridge added to the shared covariance (relative to its mean variance) before inverting."""
GATE_POWER = 2.0
"""The gate g (photo probability) is raised to this power before blending: 1 let too many
digits take the photo branch (digits AUROC 0.979 on `fast`), 2 gives 0.988 for photos 0.840."""
PHOTO_K = 3
"""k of the photo bank's k-th nearest neighbour (:mod:`fmnist.ood_photos`)."""


def fit_images(method: str) -> int:
    """How many training images :func:`fit_scorer` is given for ``method``."""
    return GATED_FIT_IMAGES if method == "gated" else FIT_IMAGES


def method_for(dataset: str) -> str:
    """The OOD method training fits for a model trained on ``dataset``: ``gated`` only when
    the clothing photos were part of its training data (``fashion-mnist+photos``), so a model
    trained on Fashion-MNIST alone never depends on a second dataset being on the machine."""
    from .photo_data import MIXED_NAME

    return PHOTO_METHOD if dataset == MIXED_NAME else DEFAULT_METHOD


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


def unit_rows(features: np.ndarray) -> np.ndarray:
    """float64 rows scaled to unit L2 norm (all-zero rows stay zero)."""
    f = np.asarray(features, np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def kth_nearest(f: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) cosine distance of each unit row of ``f`` to its k-th nearest unit row of ``bank``."""
    dist = 1 - f @ bank.float().T  # (N, M)
    return dist.topk(min(k, bank.shape[0]), dim=1, largest=False).values[:, -1]


def photo_parts(features: torch.Tensor, stats: dict[str, torch.Tensor],
                k: int = PHOTO_K) -> torch.Tensor:
    """(N, 2) photo-branch parts, unstandardized, higher = more like the training photos
    labelled -1: k-th nearest labelled photo minus k-th nearest -1 photo, and nearest
    labelled-photo class mean minus the -1 photos' mean (shared covariance)."""
    unit = torch.nn.functional.normalize(features.float(), dim=1)
    knn = kth_nearest(unit, stats["bank_in"], k) - kth_nearest(unit, stats["bank_out"], k)
    means = stats["means_photo"]
    rel = (_nearest(unit, stats["whiten_photo"], means[:-1])
           - _nearest(unit, stats["whiten_photo"], means[-1:]))
    return torch.stack([knn, rel], 1)


class OodScorer(nn.Module):
    """(features, logits) -> (N,) score; higher = less like the training data.

    ``relative`` (the default) adds two standardized parts: the relative Mahalanobis
    distance (nearest class mean minus one Gaussian over all training features, Ren et al.
    2021) and the Mahalanobis distance of L2-normalized features. Each Gaussian is stored
    as a whitening factor of its precision (P = W W^T) and whitened means, so every
    distance is a plain squared Euclidean one, exact in float32 and exportable to ONNX.
    ``gated`` blends ``relative`` (b) with the photo branch p (:func:`photo_parts`, each
    part standardized on labelled training photos, their max) by the gate g, a logistic
    "is this a photo?" on unit features: ``(1 - g^2) b + g^2 p`` (:mod:`fmnist.ood_photos`).
    ``mahalanobis`` is the first term alone, ``energy`` is ``-logsumexp(logits)``.
    """

    STATS = ("whiten", "means", "whiten_all", "mean_all", "whiten_norm", "means_norm",
             "center", "scale")
    PHOTO_STATS = ("gate_w", "gate_b", "bank_in", "bank_out", "whiten_photo", "means_photo",
                   "photo_center", "photo_scale", "base_std")

    def __init__(self, method: str, stats: dict[str, torch.Tensor], threshold: float) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown OOD method {method!r}; choose {', '.join(METHODS)}.")
        self.method = method
        self.threshold = float(threshold)
        if method == "gated" and any(name not in stats for name in self.PHOTO_STATS):
            raise ModelFileError("the gated OOD score needs its photo statistics; refit it "
                                 "with `fmnist calibrate RUN`.")
        for name in self.STATS + self.PHOTO_STATS:
            value = torch.as_tensor(stats.get(name, torch.zeros(0)))
            self.register_buffer(name, value if name.startswith("bank") else value.float())

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
        base = ((self.parts(features) - self.center) / self.scale).sum(1)  # (N,)
        if self.method == "relative":
            return base
        return self.blend(features, base)

    def blend(self, features: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """``gated``: (1 - g^2) base + g^2 photo branch, g = P(photo | unit features), the
        base restandardized (``base_std``: median, 95th percentile - median on held-out
        images) to the photo branch's scale."""
        f = features.float()
        base = (base - self.base_std[0]) / self.base_std[1]
        stats = {name: getattr(self, name) for name in self.PHOTO_STATS}
        photo = ((photo_parts(f, stats) - self.photo_center) / self.photo_scale).max(1).values
        unit = torch.nn.functional.normalize(f, dim=1)
        g = torch.sigmoid(unit @ self.gate_w + self.gate_b).pow(GATE_POWER)
        return (1 - g) * base + g * photo

    def to_meta(self) -> dict[str, Any]:
        """The plain dict stored as ``ModelMeta.ood`` (no photo statistics unless gated)."""
        names = self.STATS + (self.PHOTO_STATS if self.method == "gated" else ())
        return {"method": self.method, "threshold": self.threshold,
                **{name: getattr(self, name).detach().cpu() for name in names}}

    @classmethod
    def from_meta(cls, d: dict[str, Any] | None) -> OodScorer | None:
        """The scorer stored in a model's metadata, or None for a model without one."""
        if not d:
            return None
        names = cls.STATS + cls.PHOTO_STATS
        return cls(d["method"], {k: d[k] for k in names if k in d}, d["threshold"])


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
               method: str = DEFAULT_METHOD,
               photos: tuple[np.ndarray, np.ndarray] | None = None) -> OodScorer:
    """Gaussians from training features; standardization and threshold from held-out
    in-distribution features (so :data:`ACCEPT_RATE` of those are accepted). ``gated``
    also needs ``photos``, (features, labels with -1) of the training photos; without them
    it falls back to ``relative`` (the method used is the scorer's ``method``)."""
    f = np.asarray(train_features, np.float64)
    unit = unit_rows(f)
    whiten, means = fit_gaussian(f, train_labels, num_classes)
    whiten_all, mean_all = fit_gaussian(f, np.zeros(len(f), int), 1)
    whiten_norm, means_norm = fit_gaussian(unit, train_labels, num_classes)
    stats = {"whiten": whiten, "means": means, "whiten_all": whiten_all, "mean_all": mean_all,
             "whiten_norm": whiten_norm, "means_norm": means_norm,
             "center": torch.zeros(2), "scale": torch.ones(2)}
    if method == "gated":
        stats.update(_photo_branch(f, photos, num_classes))
        method = method if "gate_w" in stats else "relative"
    scorer = OodScorer(method, stats, threshold=0.0)
    with torch.no_grad():
        parts = scorer.parts(held_features)
        center = parts.median(0).values
        scale = (parts.quantile(ACCEPT_RATE, dim=0) - center).clamp_min(1e-6)
        scorer.center.copy_(center)
        scorer.scale.copy_(scale)
        if method == "gated":
            base = ((parts - center) / scale).sum(1)
            median = base.median()
            scorer.base_std.copy_(torch.stack([median, (base.quantile(ACCEPT_RATE) - median)
                                               .clamp_min(1e-6)]))
        scorer.threshold = threshold_for(scorer(held_features, held_logits).numpy())
    return scorer


def _photo_branch(train_features: np.ndarray, photos: tuple[np.ndarray, np.ndarray] | None,
                  num_classes: int) -> dict[str, Any]:
    """The gated scorer's photo statistics, or {} (then ``relative``) without usable photos."""
    from .ood_photos import fit_photo_branch

    if photos is None:
        return {}
    try:
        return fit_photo_branch(train_features, photos[0], photos[1], num_classes)
    except ValueError as e:
        log.warning("OOD photo branch not fitted (%s); using the relative score", e)
        return {}


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
