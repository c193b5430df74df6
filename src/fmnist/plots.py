"""Every figure of the project: pure functions that return a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, nothing
to close, safe in threads and servers) with constrained layout, and saved as PNG when a
``path`` is given. Nothing here calls ``show()``; in a notebook the returned figure
displays itself.

Image arguments accept ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` arrays (uint8 or float,
numpy or torch); probabilities are ``(N, C)`` and labels ``(N,)`` ints.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # never yank the backend from a live pyplot session
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

from .errors import ConfigError  # noqa: E402

__all__ = [
    "confused_pairs_plot",
    "DPI",
    "sample_grid",
    "class_distribution",
    "training_curves",
    "confusion_matrix_plot",
    "confusion_matrices_plot",
    "prediction_gallery",
    "top_losses",
    "reliability_diagram",
    "gradcam_grid",
    "filters_plot",
    "feature_maps_plot",
    "accuracy_vs_time",
    "fig_to_png_bytes",
    "save_figure",
]

DPI = 110
_CORRECT, _WRONG = "tab:green", "tab:red"
_TRUE_BAR, _PRED_BAR = "tab:blue", "tab:red"


# --------------------------------------------------------------------------- helpers


def _np(x: Any) -> np.ndarray:
    """A numpy array from a numpy array, list or torch tensor (detached, on CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _images(images: Any) -> np.ndarray:
    """``(N, H, W)`` array from ``(N, H, W)`` or ``(N, 1, H, W)`` input."""
    arr = _np(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ConfigError(f"images must have shape (N, H, W) or (N, 1, H, W), got {arr.shape}")
    return arr


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _fixed_figure(width: float, height: float, *, left: float, right: float, bottom: float,
                  top: float, wspace: float | None = None, hspace: float | None = None
                  ) -> Figure:
    """A figure whose subplots sit inside fixed margins (inches), with no layout engine.

    The report's figures use this: constrained layout measures every text of a figure and
    makes ``savefig`` draw it twice, which was half of each such figure's cost."""
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace, hspace=hspace)
    return fig


def _text_inches(names: Sequence[Any], fontsize: float) -> float:
    """A generous width estimate (inches) of the longest of ``names`` at ``fontsize``."""
    return max((len(str(n)) for n in names), default=0) * fontsize * 0.62 / 72


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Save ``fig`` as PNG at ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def fig_to_png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """PNG bytes of ``fig`` (for embedding in HTML reports as a data URI)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return buf.getvalue()


def _grid(n: int, max_cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding ``n`` cells."""
    cols = max(1, math.ceil(math.sqrt(n)))
    if max_cols is not None:
        cols = min(cols, max_cols)
    return max(1, math.ceil(n / cols)), cols


def _bare(ax: Axes) -> None:
    """Hide ticks and spines but keep the x label (used as a caption)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _name(class_names: Sequence[str], i: int) -> str:
    return str(class_names[i]) if 0 <= i < len(class_names) else str(i)


# --------------------------------------------------------------------------- image mosaics
# A grid of small images is drawn as ONE image in one axes, captions as texts under each
# tile: a figure of 64 thumbnails costs what one of a few does (no axes per thumbnail).


@dataclass(frozen=True)
class _Mosaic:
    """Geometry of a grid of (h, w) tiles: ``cols`` wide, a caption band under each."""

    n: int
    h: int
    w: int
    cols: int
    band: int  # caption rows of pixels under each tile
    gap: int

    @classmethod
    def fit(cls, n: int, h: int, w: int, cols: int, cell: float, lines: int,
            fontsize: float = 7.0) -> _Mosaic:
        gap = max(1, round(w / 14))
        inch = cell / (w + gap)  # inches per tile pixel
        band = math.ceil(lines * fontsize * 1.35 / 72 / inch) if lines else 0
        return cls(n, h, w, max(1, min(cols, n)), band, gap)

    @property
    def rows(self) -> int:
        return max(1, math.ceil(self.n / self.cols))

    @property
    def shape(self) -> tuple[int, int]:  # (height, width) in tile pixels
        return (self.rows * (self.h + self.band + self.gap),
                self.cols * (self.w + self.gap) - self.gap)

    def origin(self, i: int) -> tuple[int, int]:
        """(x, y) of tile ``i``'s top-left corner, row by row."""
        r, c = divmod(i, self.cols)
        return c * (self.w + self.gap), r * (self.h + self.band + self.gap)

    def image(self, tiles: np.ndarray) -> np.ndarray:
        """The tiles pasted into one float array, NaN (drawn blank) between them."""
        out = np.full(self.shape, np.nan)
        for i, tile in enumerate(tiles[: self.n]):
            x, y = self.origin(i)
            out[y : y + self.h, x : x + self.w] = tile
        return out


def _draw_mosaic(ax: Axes, m: _Mosaic, tiles: Any, *, cmap: str = "binary",
                 vmin: float | None = 0, vmax: float | None = 255, alpha: float = 1.0,
                 interpolation: str = "nearest") -> Any:
    """Draw ``tiles`` (n, h, w) into ``ax`` as one image; returns the AxesImage."""
    colours = matplotlib.colormaps[cmap].with_extremes(bad=(1, 1, 1, 0))
    ax.set_axis_off()
    return ax.imshow(m.image(np.asarray(tiles, np.float64)), cmap=colours, vmin=vmin,
                     vmax=vmax, alpha=alpha, interpolation=interpolation)


def _captions(ax: Axes, m: _Mosaic, captions: Sequence[str],
              colors: Sequence[str] | None = None, fontsize: float = 7.0) -> None:
    """One caption centred under each tile (blank ones skipped)."""
    for i, text in enumerate(captions[: m.n]):
        if text:
            x, y = m.origin(i)
            ax.text(x + (m.w - 1) / 2, y + m.h, text, ha="center", va="top",
                    fontsize=fontsize, color=None if colors is None else colors[i],
                    clip_on=False)


def _mosaic_figure(m: _Mosaic, cell: float, *, top: float = 0.35, left: float = 0.08,
                   right: float = 0.08) -> tuple[Figure, Axes]:
    """A figure holding one axes sized to the mosaic, with margins in inches."""
    inch = cell / (m.w + m.gap)
    height_px, width_px = m.shape
    width, height = width_px * inch, height_px * inch
    fig = Figure(figsize=(max(width + left + right, 2.8), max(height + top + 0.05, 1.9)))
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left / fw, (fh - top - height) / fh, width / fw, height / fh))
    return fig, ax


# --------------------------------------------------------------------------- data


def sample_grid(
    images: Any,
    labels: Any,
    class_names: Sequence[str],
    *,
    n: int = 25,
    seed: int = 0,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """A seeded random sample of ``n`` images in a square grid, class name under each.

    ``labels`` may be ``None`` for unlabeled images (no captions).
    """
    imgs = _images(images)
    lab = None if labels is None else _np(labels).astype(int)
    if len(imgs) == 0:
        raise ConfigError("sample_grid got no images to show")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(imgs), size=min(n, len(imgs)), replace=False))
    m = _Mosaic.fit(len(idx), *imgs.shape[1:], _grid(len(idx))[1], 1.35, int(lab is not None),
                    fontsize=8)
    fig, ax = _mosaic_figure(m, 1.35, top=0.45 if title else 0.1)
    _draw_mosaic(ax, m, imgs[idx])
    if lab is not None:
        _captions(ax, m, [_name(class_names, int(lab[i])) for i in idx], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=12)
    return _finish(fig, path)


def class_distribution(
    labels_by_split: Mapping[str, Any],
    class_names: Sequence[str],
    path: str | Path | None = None,
) -> Figure:
    """Grouped bar chart of the number of images per class, one bar per split."""
    if not labels_by_split:
        raise ConfigError("class_distribution needs at least one split, e.g. {'train': labels}")
    c = len(class_names)
    k = len(labels_by_split)
    width = 0.8 / k
    x = np.arange(c)
    ticks = _text_inches(class_names, 10) * math.sin(math.radians(35))
    fig = _fixed_figure(max(6.0, 0.75 * c + 1.5), 4.2 + ticks, left=0.8, right=0.2,
                        bottom=0.35 + ticks, top=0.75)
    ax = fig.add_subplot()
    for j, (split, labels) in enumerate(labels_by_split.items()):
        counts = np.bincount(_np(labels).astype(int).ravel(), minlength=c)[:c]
        bars = ax.bar(
            x + (j - (k - 1) / 2) * width, counts, width, label=f"{split} ({counts.sum():,})"
        )
        if c <= 12 and k <= 3:
            ax.bar_label(bars, fmt="%d", fontsize=7, padding=1, rotation=90 if k > 1 else 0)
    ax.set_xticks(x, [str(n) for n in class_names], rotation=35, ha="right")
    ax.set_ylabel("images")
    ax.set_title("Images per class", pad=22)
    ax.margins(y=0.15)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=k, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


# --------------------------------------------------------------------------- training


def _col(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    vals = [row.get(key) for row in history]
    return np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)


def training_curves(history: Sequence[Mapping[str, Any]], path: str | Path | None = None) -> Figure:
    """Accuracy and loss per epoch, train vs validation, best epoch (max val_acc) marked.

    ``history`` rows have ``epoch, train_loss, train_acc, val_loss, val_acc``; validation
    values may be ``None``/NaN (no validation split), then only train curves are drawn.
    """
    if not history:
        raise ConfigError("training_curves got an empty history: train for at least one epoch")
    epochs = _col(history, "epoch")
    fig = _fixed_figure(10.0, 4.0, left=0.75, right=0.15, bottom=0.5, top=0.35, wspace=0.2)
    ax_acc, ax_loss = fig.subplots(1, 2)
    val_acc = _col(history, "val_acc")
    best = int(np.nanargmax(val_acc)) if np.isfinite(val_acc).any() else None
    marker = "o" if len(history) <= 30 else None
    for ax, metric, label in ((ax_acc, "acc", "accuracy"), (ax_loss, "loss", "loss")):
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            y = _col(history, f"{split}_{metric}")
            if np.isfinite(y).any():
                name = "train" if split == "train" else "validation"
                ax.plot(epochs, y, color=color, marker=marker, markersize=3, label=name)
        if best is not None:
            ax.axvline(
                epochs[best],
                color="tab:green",
                linestyle="--",
                linewidth=1,
                label=f"best epoch {epochs[best]:g}",
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 0.96"
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.set_ylabel(label)
        ax.set_title(label.capitalize())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if best is not None:
        ax_acc.annotate(
            f"val acc {val_acc[best]:.4f}",
            xy=(epochs[best], val_acc[best]),
            xytext=(-10, -25),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="tab:green",
            arrowprops={"arrowstyle": "->", "color": "tab:green"},
        )
    return _finish(fig, path)


# --------------------------------------------------------------------------- evaluation


def _cm_axes(fig: Figure, x0: float, width: float, class_names: Sequence[str]
             ) -> tuple[Axes, Axes]:
    """(heatmap, colour bar) axes of one confusion matrix in the figure's slice from ``x0``
    to ``x0 + width`` (inches): a square heatmap, margins sized to the class names."""
    fw, fh = fig.get_size_inches()
    names = _text_inches(class_names, 8)
    left, bottom, top, right = 0.5 + names, 0.5 + names * 0.71, 0.4, 1.15
    side = min(fh - bottom - top, width - left - right)
    x = x0 + left + max(0.0, width - left - right - side) / 2
    ax = fig.add_axes((x / fw, bottom / fh, side / fw, side / fh))
    cax = fig.add_axes(((x + side + 0.2) / fw, (bottom + 0.1 * side) / fh, 0.18 / fw,
                        0.8 * side / fh))
    return ax, cax


def _draw_cm(
    fig: Figure, axes: tuple[Axes, Axes], cm: np.ndarray, class_names: Sequence[str],
    normalize: bool
) -> None:
    """Heatmap of ``cm`` on ``axes[0]`` with the value of every non-zero cell (a text each
    is most of the figure's cost; blank means 0), colour bar in ``axes[1]``."""
    ax, cax = axes
    counts = np.asarray(cm, dtype=np.float64)
    if normalize:
        sums = counts.sum(axis=1, keepdims=True)
        data = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
        fmt, vmax = "{:.2f}", 1.0
    else:
        data, fmt, vmax = counts, "{:.0f}", max(counts.max(), 1.0)
    im = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=vmax)
    c = len(class_names)
    size = 8 if c <= 10 else max(4, 80 // c)
    for i, j in zip(*np.nonzero(counts), strict=True):  # a blank cell is a zero count
        v = data[i, j]
        color = "white" if im.norm(v) > 0.5 else "black"
        ax.text(j, i, fmt.format(v), ha="center", va="center", color=color, fontsize=size)
    names = [str(n) for n in class_names]
    ax.set_xticks(np.arange(c), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(c), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix" + (" (row-normalized)" if normalize else " (counts)"))
    fig.colorbar(im, cax=cax, label="fraction of true class" if normalize else "count")


def _check_cm(cm: Any, class_names: Sequence[str]) -> np.ndarray:
    arr = _np(cm)
    c = len(class_names)
    if arr.shape != (c, c):
        raise ConfigError(f"confusion matrix must be ({c}, {c}) for {c} classes, got {arr.shape}")
    return arr


def confusion_matrix_plot(
    cm: Any,
    class_names: Sequence[str],
    *,
    normalize: bool = False,
    path: str | Path | None = None,
) -> Figure:
    """Confusion-matrix heatmap (rows = true) with numbers in the non-zero cells and a
    colour bar.

    ``normalize=True`` divides each row by its total, so the diagonal is per-class recall.
    """
    cm = _check_cm(cm, class_names)
    side = max(5.0, 0.55 * len(class_names) + 2.5)
    fig = Figure(figsize=(side + 1.0, side))
    _draw_cm(fig, _cm_axes(fig, 0.0, side + 1.0, class_names), cm, class_names, normalize)
    return _finish(fig, path)


def confusion_matrices_plot(
    cm: Any, class_names: Sequence[str], path: str | Path | None = None
) -> Figure:
    """Counts and row-normalized confusion matrices side by side."""
    cm = _check_cm(cm, class_names)
    side = max(5.0, 0.55 * len(class_names) + 2.5)
    fig = Figure(figsize=(2 * side + 2.0, side))  # fixed margins: no layout engine
    for i, normalize in enumerate((False, True)):
        axes = _cm_axes(fig, i * (side + 1.0), side + 1.0, class_names)
        _draw_cm(fig, axes, cm, class_names, normalize=normalize)
    return _finish(fig, path)


_GALLERY_CELL, _GALLERY_WIDTH = 1.35, 4.6  # inches: a tile with its gap; a gallery column


def _gallery_column(fig: Figure, q: int, inch: float, imgs: np.ndarray, p: np.ndarray,
                    lab: np.ndarray, names: list[str], items: list[int]) -> None:
    """Gallery column ``q``: the ``items``' images as one mosaic with their captions, and
    beside it one axes holding every item's bar chart level with its image (two axes a
    column instead of two per item: axes were most of the figure's cost)."""
    m = _Mosaic.fit(len(items), *imgs.shape[1:], 1, _GALLERY_CELL, 2, fontsize=8)
    fw, fh = fig.get_size_inches()
    x0, height = q * _GALLERY_WIDTH + 0.15, m.shape[0] * inch
    bottom = fh - 0.45 - height
    ax = fig.add_axes((x0 / fw, bottom / fh, m.w * inch / fw, height / fh))
    _draw_mosaic(ax, m, imgs[items])
    preds = p[items].argmax(1)
    _captions(ax, m, [f"{names[k]} {100 * p[i, k]:.0f}%\n({names[lab[i]]})"
                      for i, k in zip(items, preds, strict=True)],
              [_CORRECT if k == lab[i] else _WRONG for i, k in zip(items, preds, strict=True)],
              fontsize=8)
    left = x0 + m.w * inch + 0.95  # room for the class names
    width = (q + 1) * _GALLERY_WIDTH - 0.3 - left
    bars = fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))
    bars.set_axis_off()
    bars.set_xlim(0, 1)
    bars.set_ylim(m.shape[0], 0)
    c = len(names)
    step = m.h / c
    for j, (i, k) in enumerate(zip(items, preds, strict=True)):
        y0 = m.origin(j)[1]
        colors = ["#999999"] * c
        colors[k], colors[lab[i]] = _PRED_BAR, _TRUE_BAR  # true drawn over a wrong guess
        bars.barh(y0 + (np.arange(c) + 0.5) * step, p[i], 0.8 * step, color=colors)
        bars.add_patch(Rectangle((0, y0), 1, m.h, fill=False, edgecolor="#bbbbbb", lw=0.6))
        bars.axvline(0.5, (m.shape[0] - y0 - m.h) / m.shape[0], (m.shape[0] - y0) / m.shape[0],
                     color="#dddddd", lw=0.6, zorder=0)
        for cls, name in enumerate(names):
            bars.text(-0.02, y0 + (cls + 0.5) * step, name, ha="right", va="center",
                      fontsize=6, clip_on=False)
    y_axis = m.origin(len(items) - 1)[1] + m.h
    for x in (0.0, 0.5, 1.0):
        bars.text(x, y_axis + 0.5, f"{x:g}", ha="center", va="top", fontsize=6, clip_on=False)


def prediction_gallery(
    images: Any,
    probs: Any,
    labels: Any,
    class_names: Sequence[str],
    *,
    n: int = 12,
    cols: int = 3,
    path: str | Path | None = None,
) -> Figure:
    """The first ``n`` images, each next to a bar chart of its class probabilities.

    Bars are grey; the predicted class is red and the true class blue, drawn last, so a
    correct prediction shows one blue bar and a wrong one a red and a blue bar. The
    caption ``pred p% (true)`` is green when correct and red when wrong (as in the
    Keras tutorial's ``plot_image`` / ``plot_value_array``).
    """
    imgs = _images(images)
    p = _np(probs).astype(np.float64)
    lab = _np(labels).astype(int)
    n = min(n, len(imgs))
    if n == 0:
        raise ConfigError("prediction_gallery got no images to show")
    cols = min(cols, n)
    names = [_name(class_names, i) for i in range(p.shape[1])]
    m = _Mosaic.fit(math.ceil(n / cols), *imgs.shape[1:], 1, _GALLERY_CELL, 2, fontsize=8)
    inch = _GALLERY_CELL / (m.w + m.gap)
    fig = Figure(figsize=(_GALLERY_WIDTH * cols, m.shape[0] * inch + 0.55))
    for q in range(cols):  # gallery column q holds items q, q + cols, ... top to bottom
        _gallery_column(fig, q, inch, imgs, p, lab, names, list(range(q, n, cols)))
    fig.suptitle("Predictions (blue = true class, red = wrong prediction)", fontsize=10)
    return _finish(fig, path)


def top_losses(
    images: Any,
    probs: Any,
    labels: Any,
    class_names: Sequence[str],
    *,
    k: int = 16,
    path: str | Path | None = None,
) -> Figure:
    """The ``k`` most confidently wrong images (largest loss among misclassified ones).

    Each caption reads ``pred / true`` then ``p=<prob of pred> loss=<-log p_true>``, like
    fastai's ``plot_top_losses``. With no mistakes the figure says so.
    """
    imgs = _images(images)
    p = _np(probs).astype(np.float64)
    lab = _np(labels).astype(int)
    preds = p.argmax(axis=1)
    loss = -np.log(np.clip(p[np.arange(len(lab)), lab], 1e-12, None))
    wrong = np.flatnonzero(preds != lab)
    order = wrong[np.argsort(-loss[wrong], kind="stable")][:k]
    if len(order) == 0:
        return _finish(_message_figure("No misclassified images"), path)
    m = _Mosaic.fit(len(order), *imgs.shape[1:], _grid(len(order))[1], 1.7, 2)
    fig, ax = _mosaic_figure(m, 1.7)
    _draw_mosaic(ax, m, imgs[order])
    _captions(ax, m, [f"{_name(class_names, int(preds[i]))} / {_name(class_names, int(lab[i]))}"
                      f"\np={p[i, preds[i]]:.2f} loss={loss[i]:.2f}" for i in order])
    fig.suptitle("Top losses: predicted / true, p(predicted), loss", fontsize=10)
    return _finish(fig, path)


def _message_figure(text: str) -> Figure:
    fig = Figure(figsize=(4.0, 2.0))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    return fig


def confused_pairs_plot(
    images: Any,
    probs: Any,
    labels: Any,
    class_names: Sequence[str],
    pairs: Sequence[Sequence[Any]],
    *,
    per_pair: int = 8,
    path: str | Path | None = None,
) -> Figure:
    """One row per ``(true, predicted, count)`` pair: its most confident mistakes.

    ``pairs`` is ``metrics["most_confused"]`` (class names). Each image is captioned with
    the probability the model gave the wrong class.
    """
    imgs = _images(images)
    p = _np(probs).astype(np.float64)
    lab, preds = _np(labels).astype(int), p.argmax(axis=1)
    index = {str(n): i for i, n in enumerate(class_names)}
    rows = [(t, q, int(c)) for t, q, c in pairs if t in index and q in index][:8]
    if not rows:
        return _finish(_message_figure("No confused pairs"), path)
    tiles = np.full((len(rows) * per_pair, *imgs.shape[1:]), np.nan)
    captions = [""] * len(tiles)
    for r, (t, q, _) in enumerate(rows):
        hits = np.flatnonzero((lab == index[t]) & (preds == index[q]))
        hits = hits[np.argsort(-p[hits, index[q]], kind="stable")][:per_pair]
        for j, i in enumerate(hits):
            tiles[r * per_pair + j] = imgs[i]
            captions[r * per_pair + j] = f"p={p[i, index[q]]:.2f}"
    m = _Mosaic.fit(len(tiles), *imgs.shape[1:], per_pair, 1.25, 1)
    fig, ax = _mosaic_figure(m, 1.25, left=1.4)
    _draw_mosaic(ax, m, tiles)
    _captions(ax, m, captions)
    for r, (t, q, count) in enumerate(rows):
        ax.text(-m.gap, m.origin(r * per_pair)[1] + m.h / 2, f"{t}\n→ {q}\n({count})",
                ha="right", va="center", fontsize=8, clip_on=False)
    fig.suptitle("Most confused pairs: true → predicted (count), most confident first",
                 fontsize=10)
    return _finish(fig, path)


def similar_strip(
    queries: Any,
    neighbours: Any,
    captions: Sequence[Sequence[str]],
    *,
    query_captions: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One row per query: the query image, then its neighbours (Q, k, H, W) captioned
    ``captions[q][j]`` (e.g. class and similarity), for "similar items"."""
    q_imgs = _images(queries)
    n_imgs = _np(neighbours)
    if n_imgs.ndim != 4 or len(n_imgs) != len(q_imgs):
        raise ConfigError(f"neighbours must have shape (Q, k, H, W) with Q={len(q_imgs)}, "
                          f"got {n_imgs.shape}")
    rows, k = n_imgs.shape[:2]
    fig = _new_figure(1.3 * (k + 1), 1.55 * rows + 0.2)
    axes = fig.subplots(rows, k + 1, squeeze=False)
    for r in range(rows):
        _bare(axes[r, 0])
        axes[r, 0].imshow(q_imgs[r], cmap="binary", interpolation="nearest")
        axes[r, 0].set_xlabel(query_captions[r] if query_captions else "query", fontsize=7,
                              fontweight="bold")
        for j in range(k):
            ax = axes[r, j + 1]
            _bare(ax)
            ax.imshow(n_imgs[r, j], cmap="binary", interpolation="nearest")
            ax.set_xlabel(captions[r][j], fontsize=7)
    fig.suptitle("Similar training images, most similar first", fontsize=9)
    return _finish(fig, path)


def reliability_diagram(
    reliability_table: Sequence[Mapping[str, Any]],
    ece: float,
    path: str | Path | None = None,
) -> Figure:
    """Accuracy per confidence bin against the diagonal, gaps shaded, ECE in the title.

    Takes :func:`fmnist.metrics.reliability_table` output. A small log-scale histogram
    underneath shows how many samples fall in each bin.
    """
    if not reliability_table:
        raise ConfigError("reliability_diagram got an empty reliability table")
    lo = np.array([float(r["lo"]) for r in reliability_table])
    hi = np.array([float(r["hi"]) for r in reliability_table])
    count = np.array([int(r["count"]) for r in reliability_table])
    acc = np.array(
        [np.nan if r["accuracy"] is None else float(r["accuracy"]) for r in reliability_table]
    )
    conf = np.array(
        [np.nan if r["confidence"] is None else float(r["confidence"]) for r in reliability_table]
    )
    mid, width = (lo + hi) / 2, hi - lo
    has = count > 0
    fig = _fixed_figure(5.5, 6.5, left=0.75, right=0.15, bottom=0.5, top=0.35, hspace=0.08)
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(mid[has], acc[has], width[has], color="tab:blue", edgecolor="black", linewidth=0.6,
           label="accuracy")
    gap_bottom = np.minimum(acc, conf)[has]
    ax.bar(
        mid[has],
        np.abs(conf - acc)[has],
        width[has],
        bottom=gap_bottom,
        facecolor="none",
        edgecolor="tab:red",
        hatch="//",
        linewidth=0.8,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram — ECE {100 * ece:.2f}%")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax_n.bar(mid, count, width, color="gray", edgecolor="black", linewidth=0.5)
    if (count > 0).any():  # plain "1000" labels, no minor ticks: no mathtext to typeset
        ax_n.set_yscale("log")
        ax_n.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_n.yaxis.set_minor_locator(NullLocator())
    ax_n.set_ylabel("count (log)")
    ax_n.set_xlabel("confidence (max probability)")
    ax_n.grid(alpha=0.3)
    return _finish(fig, path)


# --------------------------------------------------------------------------- explanation


def gradcam_grid(
    images: Any,
    cams: Any,
    labels: Any,
    preds: Any,
    class_names: Sequence[str],
    path: str | Path | None = None,
    *,
    per_class: int = 3,
) -> Figure:
    """Grad-CAM heatmaps (jet, alpha 0.5) over the images, one column per true class.

    Shows the first ``per_class`` images of each class present; the caption is the
    prediction, green when correct and red when wrong. One colour bar for all maps.
    """
    imgs = _images(images)
    cam = _images(cams).astype(np.float64)
    lab, prd = _np(labels).astype(int), _np(preds).astype(int)
    classes = [c for c in range(len(class_names)) if (lab == c).any()]
    if not classes:
        raise ConfigError("gradcam_grid got no images whose label is a known class")
    rows = min(per_class, max(int((lab == c).sum()) for c in classes))
    order = [np.flatnonzero(lab == c)[r] if r < (lab == c).sum() else -1
             for r in range(rows) for c in classes]  # row by row, -1 = blank
    pick = np.array([max(i, 0) for i in order])
    blank = np.array(order) < 0
    tiles, heat = imgs[pick].astype(np.float64), cam[pick].copy()
    tiles[blank], heat[blank] = np.nan, np.nan
    m = _Mosaic.fit(len(order), *imgs.shape[1:], len(classes), 1.45, 1)
    fig, ax = _mosaic_figure(m, 1.45, top=0.6, right=1.0)
    _draw_mosaic(ax, m, tiles, cmap="gray", vmin=None, vmax=None)
    over = _draw_mosaic(ax, m, heat, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.5)
    ok = prd[pick] == lab[pick]
    _captions(ax, m, ["" if b else f"pred: {_name(class_names, int(prd[i]))}"
                      for i, b in zip(pick, blank, strict=True)],
              [_CORRECT if g else _WRONG for g in ok])
    for q, c in enumerate(classes):
        ax.text(m.origin(q)[0] + (m.w - 1) / 2, -1, _name(class_names, c), ha="center",
                va="bottom", fontsize=9, clip_on=False)
    _side_colorbar(fig, ax, over, "Grad-CAM importance")
    fig.suptitle("Grad-CAM: where the model looks (columns = true class)", fontsize=10)
    return _finish(fig, path)


def _side_colorbar(fig: Figure, ax: Axes, mappable: Any, label: str) -> None:
    """A colour bar right of ``ax``, as tall as 80% of it."""
    x0, y0, w, h = ax.get_position().bounds
    fw = fig.get_size_inches()[0]
    cax = fig.add_axes((x0 + w + 0.15 / fw, y0 + 0.1 * h, 0.15 / fw, 0.8 * h),
                       label="<colorbar>")
    fig.colorbar(mappable, cax=cax, label=label)


def filters_plot(weight: Any, path: str | Path | None = None) -> Figure:
    """Kernels of a conv layer, ``weight`` of shape ``(O, I, kh, kw)``, on one diverging scale.

    With more than one input channel each kernel is averaged over its input channels.
    """
    w = _np(weight).astype(np.float64)
    if w.ndim != 4:
        raise ConfigError(f"filters_plot expects conv weights (O, I, kh, kw), got {w.shape}")
    k = w.mean(axis=1)
    lim = float(np.abs(k).max()) or 1.0
    m = _Mosaic.fit(len(k), k.shape[1], k.shape[2], _grid(len(k))[1], 0.9, 1)
    fig, ax = _mosaic_figure(m, 0.9, top=0.4, right=1.2)
    im = _draw_mosaic(ax, m, k, cmap="bwr", vmin=-lim, vmax=lim)
    _captions(ax, m, [str(j) for j in range(len(k))])
    _side_colorbar(fig, ax, im, "weight")
    title = f"{len(k)} filters {w.shape[2]}×{w.shape[3]}"
    fig.suptitle(title + (" (mean over input channels)" if w.shape[1] > 1 else ""), fontsize=10)
    return _finish(fig, path)


def feature_maps_plot(
    image: Any, maps: Any, path: str | Path | None = None, max_maps: int = 32
) -> Figure:
    """The input image beside up to ``max_maps`` activation maps ``(C, H, W)``, one scale."""
    img = _np(image).astype(np.float64).squeeze()
    maps_ = _np(maps).astype(np.float64)
    if maps_.ndim != 3:
        raise ConfigError(f"feature_maps_plot expects maps of shape (C, H, W), got "
                          f"{maps_.shape}")
    if img.ndim != 2:
        raise ConfigError(f"feature_maps_plot expects one (H, W) image, got {img.shape}")
    maps_ = maps_[:max_maps]
    vmin, vmax = float(maps_.min()), float(maps_.max())
    m = _Mosaic.fit(len(maps_), *maps_.shape[1:], 8, 1.1, 1)
    fig, ax = _mosaic_figure(m, 1.1, top=0.45, left=2.8, right=1.2)
    im = _draw_mosaic(ax, m, maps_, cmap="viridis", vmin=vmin,
                      vmax=vmax if vmax > vmin else vmin + 1.0)
    _captions(ax, m, [str(j) for j in range(len(maps_))])
    _side_colorbar(fig, ax, im, "activation")
    fw, fh = fig.get_size_inches()
    side = min(2.2, fh - 0.7)  # inches
    ax_in = fig.add_axes((0.3 / fw, 0.5 - side / 2 / fh, side / fw, side / fh))
    ax_in.imshow(img, cmap="gray", interpolation="nearest")
    _bare(ax_in)
    ax_in.set_title("input", fontsize=10)
    fig.suptitle(f"{len(maps_)} feature maps {maps_.shape[1]}×{maps_.shape[2]}", fontsize=10)
    return _finish(fig, path)


# --------------------------------------------------------------------------- benchmarks


def accuracy_vs_time(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path | None = None,
    targets: Sequence[float] = (0.91, 0.93, 0.945),
) -> Figure:
    """Test accuracy against wall-clock seconds, one line per run, target lines dotted.

    The first point where a run reaches each target is circled. The time axis is
    logarithmic when the runs span more than a factor of 30.
    """
    if not curves:
        raise ConfigError("accuracy_vs_time needs at least one curve {name: [(seconds, acc)]}")
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    all_t: list[float] = []
    all_a: list[float] = []
    for name, pts in curves.items():
        arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        if len(arr) == 0:
            continue
        arr = arr[np.argsort(arr[:, 0], kind="stable")]
        (line,) = ax.plot(arr[:, 0], arr[:, 1], marker=".", label=name)
        all_t += arr[:, 0].tolist()
        all_a += arr[:, 1].tolist()
        for t in targets:
            hit = np.flatnonzero(arr[:, 1] >= t)
            if len(hit):
                ax.plot(
                    *arr[hit[0]],
                    marker="o",
                    markersize=9,
                    markerfacecolor="none",
                    color=line.get_color(),
                )
    for t in targets:
        ax.axhline(t, linestyle=":", color="gray", linewidth=1)
        ax.annotate(
            f"{100 * t:g}%",
            xy=(1.0, t),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color="gray",
        )
    pos = [t for t in all_t if t > 0]
    if pos and max(pos) / min(pos) > 30:
        ax.set_xscale("log")
    if all_a:
        lo = min(min(all_a), min(targets, default=1.0))
        ax.set_ylim(max(0.0, lo - 0.02), min(1.0, max(max(all_a), max(targets, default=0)) + 0.01))
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs training time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, path)
