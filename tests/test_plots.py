"""Tests for fmnist.plots: every figure renders a non-blank PNG of the expected size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from fmnist import metrics as M
from fmnist import plots as P
from fmnist.datasets import DATASETS
from fmnist.errors import ConfigError

NAMES = list(DATASETS.get("fashion-mnist").classes)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 60
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):  # a class-dependent blob so images are not noise
        y0, x0 = 4 + c, 3 + 2 * (c % 5)
        images[i, y0 : y0 + 12, x0 : x0 + 10] = 200
        images[i] += rng.integers(0, 40, size=(28, 28), dtype=np.uint8)
    logits = rng.normal(size=(n, 10)) + 3 * np.eye(10)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return images, labels, probs


def captions(fig: Figure) -> list[str]:
    """The texts drawn on a mosaic figure's first axes (captions under the tiles)."""
    return [t.get_text() for t in fig.axes[0].texts]


def check_png(fig: Figure, path: Path, min_colors: int = 8, min_std: float = 10.0) -> Image.Image:
    """The file exists, has the figure's pixel size, and is not blank."""
    assert isinstance(fig, Figure)
    assert path.exists(), "path= did not save a PNG"
    img = Image.open(path)
    w, h = fig.get_size_inches() * P.DPI
    assert abs(img.size[0] - w) <= 1 and abs(img.size[1] - h) <= 1
    assert 300 <= img.size[0] <= 3000 and 200 <= img.size[1] <= 3000
    arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert arr.std() > min_std, "image looks blank"
    rgb = arr.astype(np.int64)
    colors = len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]))
    assert colors > min_colors, f"only {colors} distinct colours"
    return img


def test_sample_grid(data, tmp_path):
    images, labels, _ = data
    fig = P.sample_grid(
        images, labels, NAMES, n=25, seed=1, title="sample", path=tmp_path / "grid.png"
    )
    check_png(fig, tmp_path / "grid.png")
    assert len(fig.axes) == 1  # one mosaic, not an axes per image
    assert len(captions(fig)) == 25
    assert set(captions(fig)) <= set(NAMES)
    mosaic = fig.axes[0].images[0].get_array()
    assert np.isfinite(mosaic).sum() == 25 * 28 * 28  # 25 images, blank between them


def test_sample_grid_is_seeded(data):
    images, labels, _ = data
    a = P.sample_grid(images, labels, NAMES, n=9, seed=3)
    b = P.sample_grid(images, labels, NAMES, n=9, seed=3)
    c = P.sample_grid(images, labels, NAMES, n=9, seed=4)
    assert captions(a) == captions(b)
    assert P.fig_to_png_bytes(a) == P.fig_to_png_bytes(b)
    assert P.fig_to_png_bytes(a) != P.fig_to_png_bytes(c)


def test_sample_grid_accepts_channel_dim_and_small_n(data):
    images, labels, _ = data
    fig = P.sample_grid(images[:3, None], labels[:3], NAMES, n=25)
    assert len(captions(fig)) == 3


def test_class_distribution(data, tmp_path):
    _, labels, _ = data
    fig = P.class_distribution(
        {"train": labels, "test": labels[:30]}, NAMES, path=tmp_path / "dist.png"
    )
    check_png(fig, tmp_path / "dist.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights[-1] == 6 and heights[0] == 3


def history(with_val: bool = True):
    rows = []
    for e in range(1, 9):
        rows.append(
            {
                "epoch": e,
                "train_loss": 1 / e,
                "train_acc": 1 - 0.5 / e,
                "val_loss": (1.2 / e + 0.02 * e) if with_val else None,
                "val_acc": (0.9 - abs(e - 5) * 0.01) if with_val else float("nan"),
            }
        )
    return rows


def test_training_curves_marks_best_epoch(tmp_path):
    fig = P.training_curves(history(), path=tmp_path / "curves.png")
    check_png(fig, tmp_path / "curves.png")
    ax_acc = fig.axes[0]
    vlines = [ln for ln in ax_acc.lines if list(ln.get_xdata()) == [5, 5]]
    assert vlines, "best epoch (5) not marked"
    assert any("0.9000" in t.get_text() for t in ax_acc.texts)


def test_training_curves_without_validation(tmp_path):
    fig = P.training_curves(history(with_val=False), path=tmp_path / "c.png")
    check_png(fig, tmp_path / "c.png")
    assert all(len(ax.lines) == 1 for ax in fig.axes)  # train only, no best line


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_plot(data, tmp_path, normalize):
    _, labels, probs = data
    cm = M.confusion_matrix(labels, probs.argmax(1), 10)
    fig = P.confusion_matrix_plot(cm, NAMES, normalize=normalize, path=tmp_path / "cm.png")
    check_png(fig, tmp_path / "cm.png")
    ax = fig.axes[0]
    assert len(fig.axes) == 2, "colour bar missing"
    # one number per non-zero cell (row i, column j at x=j, y=i); a zero cell stays blank
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert set(cells) == {tuple(ij) for ij in np.argwhere(cm > 0)}
    assert (cm == 0).any() and (cm > 0).sum() < 100
    diag = cells[0, 0].get_text()
    expected = cm[0, 0] / cm[0].sum() if normalize else cm[0, 0]
    assert float(diag) == pytest.approx(expected, abs=0.006)
    # darkest cell gets white text, a light one black
    big = np.unravel_index(cm.argmax(), cm.shape)
    assert cells[big].get_color() == "white"
    small = tuple(np.argwhere(cm == cm[cm > 0].min())[0])
    assert cells[small].get_color() == "black"


def test_confusion_matrices_side_by_side(data, tmp_path):
    _, labels, probs = data
    cm = M.confusion_matrix(labels, probs.argmax(1), 10)
    fig = P.confusion_matrices_plot(cm, NAMES, path=tmp_path / "cm2.png")
    check_png(fig, tmp_path / "cm2.png")
    assert len(fig.axes) == 4


def test_confusion_matrix_wrong_shape():
    with pytest.raises(ConfigError, match="10"):
        P.confusion_matrix_plot(np.zeros((3, 3)), NAMES)


def test_prediction_gallery_colours(data, tmp_path):
    images, labels, probs = data
    fig = P.prediction_gallery(images, probs, labels, NAMES, n=6, path=tmp_path / "gal.png")
    check_png(fig, tmp_path / "gal.png")
    preds = probs.argmax(1)
    image_axes, bar_axes = fig.axes[0::2], fig.axes[1::2]
    assert len(image_axes) == len(bar_axes) == 3  # a mosaic and a bar axes per column
    for k in range(6):  # row by row: item k in gallery column k % 3, row k // 3
        q, r = k % 3, k // 3
        caption = image_axes[q].texts[r]
        assert caption.get_text().startswith(f"{NAMES[preds[k]]} ")
        assert caption.get_color() == ("tab:green" if preds[k] == labels[k] else "tab:red")
        bars = [b for b in bar_axes[q].patches if b.get_fill()][10 * r:10 * r + 10]
        assert [b.get_width() for b in bars] == pytest.approx(probs[k])
        assert np.allclose(bars[labels[k]].get_facecolor()[:3], (0.122, 0.467, 0.706), atol=0.01)
        if preds[k] != labels[k]:
            assert np.allclose(bars[preds[k]].get_facecolor()[:3], (0.839, 0.153, 0.157),
                               atol=0.01)


def test_top_losses_picks_confident_mistakes(data, tmp_path):
    images, labels, probs = data
    fig = P.top_losses(images, probs, labels, NAMES, k=4, path=tmp_path / "top.png")
    check_png(fig, tmp_path / "top.png")
    shown = captions(fig)
    preds = probs.argmax(1)
    loss = -np.log(probs[np.arange(len(labels)), labels])
    wrong = np.flatnonzero(preds != labels)
    worst = wrong[np.argmax(loss[wrong])]
    assert len(shown) == min(4, len(wrong))
    assert shown[0].startswith(f"{NAMES[preds[worst]]} / {NAMES[labels[worst]]}")


def test_top_losses_with_no_mistakes(data, tmp_path):
    images, labels, _ = data
    perfect = np.eye(10)[labels]
    fig = P.top_losses(images, perfect, labels, NAMES, path=tmp_path / "none.png")
    assert "No misclassified" in fig.axes[0].texts[0].get_text()


def test_reliability_diagram(data, tmp_path):
    _, labels, probs = data
    table = M.reliability_table(probs, labels, n_bins=10)
    ece = M.expected_calibration_error(probs, labels, n_bins=10)
    fig = P.reliability_diagram(table, ece, path=tmp_path / "rel.png")
    check_png(fig, tmp_path / "rel.png")
    assert f"{100 * ece:.2f}%" in fig.axes[0].get_title()
    assert len(fig.axes) == 2  # diagram + count histogram


def test_gradcam_grid(data, tmp_path):
    images, labels, probs = data
    yy, xx = np.mgrid[:28, :28]
    cams = np.stack([np.exp(-((yy - 14 - i % 5) ** 2 + (xx - 10) ** 2) / 40) for i in range(60)])
    fig = P.gradcam_grid(
        images, cams, labels, probs.argmax(1), NAMES, path=tmp_path / "cam.png", per_class=2
    )
    check_png(fig, tmp_path / "cam.png", min_colors=200)
    texts = captions(fig)
    assert [t for t in texts if not t.startswith("pred: ")] == NAMES  # column titles
    assert sum(t.startswith("pred: ") for t in texts) == 2 * len(NAMES)
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert len(fig.axes[0].images) == 2  # the images and the heat over them


def test_filters_plot(tmp_path):
    w = np.random.default_rng(0).normal(size=(16, 1, 3, 3))
    fig = P.filters_plot(w, path=tmp_path / "filters.png")
    check_png(fig, tmp_path / "filters.png")
    assert captions(fig) == [str(j) for j in range(16)]
    assert len(fig.axes) == 1 + 1  # the mosaic + colour bar


def test_feature_maps_plot(data, tmp_path):
    images, _, _ = data
    maps = np.random.default_rng(0).random((40, 26, 26))
    fig = P.feature_maps_plot(images[0], maps, path=tmp_path / "maps.png", max_maps=12)
    check_png(fig, tmp_path / "maps.png")
    assert captions(fig) == [str(j) for j in range(12)]
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["input"]


def test_accuracy_vs_time(tmp_path):
    curves = {
        "fast": [(2.0, 0.85), (5.0, 0.915), (10.0, 0.93)],
        "slow": [(30.0, 0.9), (120.0, 0.935), (400.0, 0.946)],
    }
    fig = P.accuracy_vs_time(curves, path=tmp_path / "acc.png")
    check_png(fig, tmp_path / "acc.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fast", "slow"]


def test_fig_to_png_bytes_is_png(data):
    images, labels, _ = data
    fig = P.sample_grid(images, labels, NAMES, n=4)
    raw = P.fig_to_png_bytes(fig)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(raw))
    assert abs(img.size[0] - fig.get_size_inches()[0] * P.DPI) <= 1
