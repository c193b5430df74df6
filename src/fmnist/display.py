"""How fmnist objects look in Jupyter: compact HTML cards and a live progress bar.

The classes keep one-line ``_repr_html_`` methods that call the card functions here, so
everything about notebook display lives in this module: :func:`run_card` (a training run),
:func:`dataset_card`, :func:`predictor_card`, :func:`metrics_card` (evaluation results,
see :class:`EvaluationResult`) and :func:`prediction_card` (one predicted image). Cards
are self-contained HTML: thumbnails are inline PNGs, curves inline SVG, no scripts.

:class:`NotebookBar` is what :class:`fmnist.progress.Progress` shows under a Jupyter
kernel: an HTML ``<progress>`` element updated in place through a display handle, so a
notebook (and CI's executed copy) holds no ANSI escape codes.
"""

from __future__ import annotations

import base64
import html
import io
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["EvaluationResult", "NotebookBar", "dataset_card", "in_notebook", "metrics_card",
           "prediction_card", "predictor_card", "run_card", "thumbnail"]

_CARD = ("<div style='font-family:sans-serif;font-size:13px;border:1px solid #ccc;"
         "border-radius:6px;padding:8px 10px;display:inline-block;max-width:760px'>")


def in_notebook() -> bool:
    """True inside a Jupyter (ipykernel) kernel, where HTML output is rendered."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    ip = shell.get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def thumbnail(image: np.ndarray, size: int = 56, title: str = "") -> str:
    """An inline <img> of a uint8 (H, W) image, scaled with sharp pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    uri = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f"<img src='data:image/png;base64,{uri}' width={size} height={size} "
            f"title='{html.escape(title)}' style='image-rendering:pixelated;margin:1px'>")


def _sparkline(values: Sequence[float | None], width: int = 160, height: int = 40) -> str:
    """An inline SVG polyline of ``values`` (None skipped), min..max scaled."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    if len(pts) < 2:
        return ""
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    span, n = (hi - lo) or 1.0, len(values) - 1
    xy = " ".join(f"{2 + (width - 4) * i / n:.1f},{height - 2 - (height - 4) * (v - lo) / span:.1f}"
                  for i, v in pts)
    return (f"<svg width={width} height={height} style='vertical-align:middle'>"
            f"<polyline points='{xy}' fill='none' stroke='#1f77b4' stroke-width='2'/></svg>")


def _rows(items: Mapping[str, Any]) -> str:
    return "".join(f"<tr><td style='color:#666;padding-right:10px'>{html.escape(k)}</td>"
                   f"<td>{html.escape(str(v))}</td></tr>" for k, v in items.items()
                   if v is not None)


def _pct(v: Any) -> str | None:
    return f"{100 * v:.2f}%" if isinstance(v, int | float) else None


def _bars(pairs: Sequence[tuple[str, float]], highlight: str | None = None) -> str:
    """Horizontal probability bars, one row per (label, value in [0, 1])."""
    out = []
    for label, p in pairs:
        color = "#d62728" if label == highlight else "#1f77b4"
        out.append(f"<tr><td style='padding-right:6px'>{html.escape(label)}</td><td>"
                   f"<div style='background:{color};height:10px;width:{max(1, 120 * p):.0f}px'>"
                   f"</div></td><td style='padding-left:6px'>{100 * p:.1f}%</td></tr>")
    return "<table style='border-collapse:collapse'>" + "".join(out) + "</table>"


def _card(title: str, body: str) -> str:
    return f"{_CARD}<b>{html.escape(title)}</b><br>{body}</div>"


def run_card(run: Any) -> str:
    """A training run: recipe, epochs, best validation and test accuracy, val curve."""
    history = run.history
    val = [r.get("val_acc") for r in history]
    seconds = sum(float(r.get("seconds") or 0) for r in history)
    finite = [v for v in val if v is not None]
    facts = {"recipe": run.recipe.name, "model": run.recipe.model, "epochs": len(history),
             "best val acc": _pct(max(finite)) if finite else None,
             "test acc": _pct(run.test_accuracy), "train time": f"{seconds:.1f} s",
             "folder": str(run.dir), "stopped": run.stop_reason or None}
    curve = _sparkline(val if finite else [r.get("train_acc") for r in history])
    return _card("fmnist Run", f"<table>{_rows(facts)}</table>{curve}")


def dataset_card(ds: Any) -> str:
    """A dataset: sizes, classes, where it came from and one thumbnail per class."""
    thumbs = []
    for c, name in enumerate(ds.classes):
        hits = np.flatnonzero(ds.train.labels == c)
        if len(hits):
            thumbs.append(thumbnail(ds.train.images[hits[0]], 40, title=name))
    facts = {"train": f"{len(ds.train):,} images", "test": f"{len(ds.test):,} images",
             "classes": ", ".join(ds.classes), "format": ds.format, "source": str(ds.source),
             "checksums": "verified" if ds.verified else "not verified"}
    return _card(f"Dataset {ds.name}", f"<table>{_rows(facts)}</table>{''.join(thumbs)}")


def predictor_card(p: Any) -> str:
    """A predictor: architecture, backend, size, classes and the model's test accuracy."""
    m = p.meta
    params = m.get("params")
    facts = {"arch": m.get("arch"), "recipe": m.get("recipe"), "backend": p.backend,
             "device": m.get("device"), "precision": m.get("precision"),
             "params": f"{params:,}" if isinstance(params, int) else None,
             "classes": ", ".join(p.classes), "test acc": _pct(m.get("metrics", {}).get(
                 "accuracy")), "source": m.get("source"), "top_k": p.top_k, "tta": p.tta}
    return _card("fmnist Predictor", f"<table>{_rows(facts)}</table>")


def metrics_card(metrics: Mapping[str, Any]) -> str:
    """Evaluation results: headline figures and per-class recall bars."""
    per_class = metrics.get("per_class", {})
    recall = [(k, float(v["recall"])) for k, v in per_class.items() if not k.endswith(" avg")]
    macro = per_class.get("macro avg", {})
    facts = {"split": metrics.get("split"), "images": metrics.get("n"),
             "accuracy": _pct(metrics.get("accuracy")), "macro F1": _pct(macro.get("f1")),
             "top-2 accuracy": _pct(metrics.get("top2_accuracy")),
             "loss": f"{metrics['loss']:.4f}" if "loss" in metrics else None,
             "ECE": f"{metrics['ece']:.4f}" if "ece" in metrics else None}
    worst = min(recall, key=lambda kv: kv[1])[0] if recall else None
    body = f"<table>{_rows(facts)}</table>"
    if recall:
        body += "<i>recall per class</i>" + _bars(recall, highlight=worst)
    return _card("Evaluation", body)


def prediction_card(result: Any) -> str:
    """One predicted file: the 28x28 the model saw and its top-k probability bars."""
    if not result.ok:
        return _card(str(result.file), f"<span style='color:#d62728'>"
                                       f"{html.escape(str(result.error))}</span>")
    img = thumbnail(result.preprocessed.image, 84) if result.preprocessed is not None else ""
    return _card(str(result.file), f"<table><tr><td>{img}</td><td>"
                                   f"{_bars(result.top_k)}</td></tr></table>")


class EvaluationResult(dict):
    """The metrics dict :func:`fmnist.evaluate` returns, shown as a card in notebooks
    (still a plain dict: JSON, indexing and equality are unchanged)."""

    def _repr_html_(self) -> str:
        return metrics_card(self)


class NotebookBar:
    """A live HTML progress bar in a notebook cell, redrawn at most every ``every`` s."""

    def __init__(self, description: str, total: float | None, every: float = 0.25) -> None:
        self.description, self.total, self.every = description, total, every
        self.start = time.monotonic()
        self._last = 0.0
        self._handle: Any = None

    def _html(self, done: float, info: str) -> str:
        value = f"value='{done:g}' max='{self.total:g}'" if self.total else ""
        of = f"{done:.0f}/{self.total:.0f}" if self.total else f"{done:.0f}"
        return (f"<div style='font-family:monospace'>{html.escape(self.description)} "
                f"<progress {value} style='width:240px'></progress> {of} "
                f"{time.monotonic() - self.start:.1f}s {html.escape(info)}</div>")

    def update(self, done: float, info: str = "", force: bool = False) -> None:
        from IPython.display import HTML, display

        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        if self._handle is None:
            self._handle = display(HTML(self._html(done, info)), display_id=True)
        else:
            self._handle.update(HTML(self._html(done, info)))
