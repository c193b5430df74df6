"""Evaluation metrics: pure functions on numpy arrays.

Conventions: ``probs`` is an ``(N, C)`` float array of class probabilities (rows sum to
1), ``labels`` an ``(N,)`` int array of true classes, ``preds`` an ``(N,)`` int array of
predicted classes. Everything returned by :func:`compute_metrics` is plain Python
(floats, ints, lists, dicts) so it can go straight into ``metrics.json``.

The counting (confusion matrix, precision/recall/F1) is plain numpy, checked against
scikit-learn in the tests (importing scikit-learn and scipy would cost every command a
second). Around it: what fastai's ``ClassificationInterpretation`` offers (most confused
pairs) and calibration (ECE and a reliability table). Test-time augmentation runs a
model, so it lives beside :func:`fmnist.evaluation.predict_probs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = [
    "accuracy",
    "nll",
    "top_k_accuracy",
    "confusion_matrix",
    "per_class_report",
    "most_confused",
    "expected_calibration_error",
    "reliability_table",
    "compute_metrics",
    "format_report",
]

_EPS = 1e-12


# --------------------------------------------------------------------------- validation


def _check_probs_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``probs`` as float64 (N, C) and ``labels`` as int64 (N,), or raise ConfigError."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise ConfigError(
            f"probs must be a 2-D (N, C) array of class probabilities, got shape {probs.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ConfigError(
            f"labels must be a 1-D array with one entry per row of probs ({probs.shape[0]}), "
            f"got shape {labels.shape}"
        )
    if probs.shape[0] == 0:
        raise ConfigError("probs and labels are empty: need at least one sample to score")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ConfigError(
            f"labels must lie in [0, {probs.shape[1] - 1}] (one column of probs per class), "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    return probs, labels


def _check_labels_preds(labels: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64).ravel()
    preds = np.asarray(preds).astype(np.int64).ravel()
    if labels.shape != preds.shape:
        raise ConfigError(
            f"labels and preds must have the same length, got {labels.shape[0]} and "
            f"{preds.shape[0]}"
        )
    return labels, preds


# --------------------------------------------------------------------------- scores


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the label."""
    probs, labels = _check_probs_labels(probs, labels)
    return float(np.mean(probs.argmax(axis=1) == labels))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class, ``-log(max(p_true, 1e-12))``."""
    probs, labels = _check_probs_labels(probs, labels)
    p_true = probs[np.arange(labels.shape[0]), labels]
    return float(np.mean(-np.log(np.clip(p_true, _EPS, None))))


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 2) -> float:
    """Fraction of samples whose label is among the ``k`` most probable classes.

    Ties are broken by class index (stable sort), so the result is deterministic.
    """
    probs, labels = _check_probs_labels(probs, labels)
    if k < 1:
        raise ConfigError(f"top-k accuracy needs k >= 1, got k={k}")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int matrix of counts; rows are true classes, columns predicted ones."""
    labels, preds = _check_labels_preds(labels, preds)
    c = int(num_classes)
    keep = (labels >= 0) & (labels < c) & (preds >= 0) & (preds < c)  # others are not counted
    flat = labels[keep].astype(np.int64) * c + preds[keep].astype(np.int64)
    return np.bincount(flat, minlength=c * c).reshape(c, c).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    num, den = num.astype(np.float64), den.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class_report(
    labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support per class, plus "macro avg" and "weighted avg".

    Classes with no predictions (or no samples) score 0 rather than raising a warning.
    All values are plain ``float``/``int`` so the dict is JSON-serialisable.
    """
    labels, preds = _check_labels_preds(labels, preds)
    ids = np.arange(len(class_names))
    cm = confusion_matrix(labels, preds, len(ids))
    tp, s = np.diag(cm), cm.sum(axis=1)
    p, r = _ratio(tp, cm.sum(axis=0)), _ratio(tp, s)
    f = _ratio(2 * p * r, p + r)
    report: dict[str, dict[str, float | int]] = {}
    for i, name in enumerate(class_names):
        report[str(name)] = {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
    total = int(s.sum())
    weights = s / total if total else np.zeros_like(s, dtype=np.float64)
    for key, w in (("macro avg", np.full(len(ids), 1.0 / len(ids))), ("weighted avg", weights)):
        report[key] = {
            "precision": float(np.dot(w, p)),
            "recall": float(np.dot(w, r)),
            "f1": float(np.dot(w, f)),
            "support": total,
        }
    return report


def most_confused(
    cm: np.ndarray, class_names: Sequence[str], k: int = 5
) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells as ``(true_name, pred_name, count)``, descending.

    Zero cells are left out; ties keep row-major order (true class, then predicted).
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ConfigError(
            f"confusion matrix must be square with one row per class ({len(class_names)}), "
            f"got shape {cm.shape}"
        )
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    order = np.argsort(-flat, kind="stable")
    out: list[tuple[str, str, int]] = []
    for idx in order[: max(k, 0)]:
        if flat[idx] <= 0:
            break
        t, p = divmod(int(idx), cm.shape[0])
        out.append((str(class_names[t]), str(class_names[p]), int(flat[idx])))
    return out


# --------------------------------------------------------------------------- calibration


def _bin_stats(
    probs: np.ndarray, labels: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (edges, count, mean confidence, accuracy) over max-probability bins.

    Bins are equal-width over [0, 1] and right-closed, ``(lo, hi]``; a confidence of
    exactly 0 falls in the first bin.
    """
    if n_bins < 1:
        raise ConfigError(f"calibration needs n_bins >= 1, got n_bins={n_bins}")
    probs, labels = _check_probs_labels(probs, labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        mean_acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    return edges, count, mean_conf, mean_acc


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum over bins of ``|bin| / N * |accuracy(bin) - confidence(bin)|``.

    Confidence is the max probability; bins are ``n_bins`` equal-width intervals of [0, 1].
    """
    _, count, conf, acc = _bin_stats(probs, labels, n_bins)
    mask = count > 0
    return float(np.sum(count[mask] / count.sum() * np.abs(acc[mask] - conf[mask])))


def reliability_table(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> list[dict[str, float | int | None]]:
    """One dict per confidence bin: ``lo``, ``hi``, ``count``, ``confidence``, ``accuracy``.

    Empty bins have ``count == 0`` and ``None`` for confidence and accuracy (JSON null),
    so the table always has ``n_bins`` rows.
    """
    edges, count, conf, acc = _bin_stats(probs, labels, n_bins)
    return [
        {
            "lo": float(edges[i]),
            "hi": float(edges[i + 1]),
            "count": int(count[i]),
            "confidence": float(conf[i]) if count[i] else None,
            "accuracy": float(acc[i]) if count[i] else None,
        }
        for i in range(n_bins)
    ]


# --------------------------------------------------------------------------- all together


def compute_metrics(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Every metric of this module in one JSON-serialisable dict.

    Keys: ``n``, ``accuracy``, ``loss`` (NLL), ``top2_accuracy``, ``ece``, ``per_class``,
    ``confusion_matrix`` (list of lists, rows = true), ``most_confused`` (list of
    ``[true, pred, count]``), ``reliability`` (see :func:`reliability_table`).
    """
    probs, labels = _check_probs_labels(probs, labels)
    if len(class_names) != probs.shape[1]:
        raise ConfigError(
            f"got {len(class_names)} class names for {probs.shape[1]} probability columns; "
            "pass one name per class"
        )
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, probs.shape[1])
    return {
        "n": int(labels.shape[0]),
        "accuracy": accuracy(probs, labels),
        "loss": nll(probs, labels),
        "top2_accuracy": top_k_accuracy(probs, labels, k=2),
        "ece": expected_calibration_error(probs, labels),
        "per_class": per_class_report(labels, preds, class_names),
        "confusion_matrix": cm.tolist(),
        "most_confused": [list(t) for t in most_confused(cm, class_names, k=5)],
        "reliability": reliability_table(probs, labels),
    }


def format_report(metrics: dict[str, Any], digits: int = 4) -> str:
    """A fixed-width classification report (like scikit-learn's) from :func:`compute_metrics`.

    Per-class precision / recall / F1 / support, the accuracy line, the macro and weighted
    averages, then loss, top-2 accuracy, ECE and the most confused pairs when present.
    """
    per_class: dict[str, dict[str, float]] = metrics["per_class"]
    avg_keys = ("macro avg", "weighted avg")
    names = [k for k in per_class if k not in avg_keys]
    width = max([len(n) for n in names] + [len(k) for k in avg_keys] + [len("accuracy")])
    col = max(digits + 4, 9)
    header = " " * width + "".join(
        h.rjust(col) for h in ("precision", "recall", "f1-score", "support")
    )

    def row(name: str, r: dict[str, float]) -> str:
        vals = "".join(f"{r[k]:{col}.{digits}f}" for k in ("precision", "recall", "f1"))
        return f"{name:>{width}}{vals}{int(r['support']):>{col}d}"

    lines = [header, ""]
    lines += [row(n, per_class[n]) for n in names]
    lines.append("")
    n = int(metrics.get("n", per_class.get("macro avg", {}).get("support", 0)))
    if "accuracy" in metrics:
        acc = f"{metrics['accuracy']:.{digits}f}"
        lines.append(f"{'accuracy':>{width}}{'':>{2 * col}}{acc:>{col}}{n:>{col}d}")
    lines += [row(k, per_class[k]) for k in avg_keys if k in per_class]

    extras = []
    for key, label in (("loss", "loss"), ("top2_accuracy", "top-2 accuracy"), ("ece", "ECE")):
        if metrics.get(key) is not None:
            extras.append(f"{label} {metrics[key]:.{digits}f}")
    if extras:
        lines += ["", "  ".join(extras)]
    if metrics.get("most_confused"):
        lines += ["", "most confused (true -> predicted: count)"]
        lines += [f"  {t} -> {p}: {c}" for t, p, c in metrics["most_confused"]]
    return "\n".join(lines)
