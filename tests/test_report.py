"""The HTML report: every section, valid embedded PNGs, nothing fetched from the network."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.errors import ConfigError
from fmnist.plots import confused_pairs_plot
from fmnist.report import write_report
from fmnist.training import train

SECTIONS = ("summary", "curves", "metrics", "data", "confusion", "predictions", "top-losses",
            "confused-pairs", "calibration", "gradcam", "filters", "setup")
PLOTS = ("training_curves", "samples", "class_distribution", "confusion_matrices", "predictions",
         "top_losses", "confused_pairs", "reliability", "gradcam_1", "gradcam_2", "filters",
         "feature_maps")


@pytest.fixture(scope="module")
def reported(learnable_dataset, tmp_path_factory) -> Path:
    """A tiny run trained without a test evaluation, then reported: the report
    must evaluate first (no metrics.json yet) and find the data from config.json."""
    out = tmp_path_factory.mktemp("report") / "run"
    train(data=learnable_dataset, model="baseline-small", optimizer="adam", lr=2e-3,
          epochs=2, val_fraction=0.2, augment=(), out=out, device="cpu",
          evaluate_test=False)
    write_report(out)
    return out


@pytest.fixture(scope="module")
def page(reported: Path) -> str:
    return (reported / "report.html").read_text(encoding="utf-8")


def test_report_written_with_metrics_evaluated_first(reported: Path) -> None:
    metrics = json.loads((reported / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert metrics["n"] == 500
    for key in ("accuracy", "loss", "top2_accuracy", "ece", "per_class", "confusion_matrix",
                "most_confused", "reliability", "seconds"):
        assert key in metrics
    assert metrics["accuracy"] > 0.5  # the learnable data is learned in two epochs


def test_every_section_is_present(page: str) -> None:
    ids = set(re.findall(r'<(?:section|header)[^>]*\bid="([^"]+)"', page))
    assert set(SECTIONS) <= ids, f"missing sections: {set(SECTIONS) - ids}"
    for title in ("Training curves", "Classification report", "The data", "Confusion matrix",
                  "Predictions", "Top losses", "Calibration", "Where the model looks (Grad-CAM)",
                  "Filters and feature maps", "Most confused pairs", "Recipe and environment"):
        assert f"<h2>{title}" in page


def test_headline_numbers_and_tables(reported: Path, page: str) -> None:
    metrics = json.loads((reported / "metrics.json").read_text())
    config = json.loads((reported / "config.json").read_text())
    header = page[page.index('<header'):page.index("</header>")]
    assert f"{metrics['accuracy']:.2%}" in header
    assert f"{metrics['loss']:.4f}" in header
    assert f"{config['params']:,}" in header
    assert "2 / 2" in header  # epochs run / planned
    # the classification report is an HTML table with one row per class
    for name in config["dataset"]["classes"]:
        assert f"<td>{name}</td>" in page.replace("&#x27;", "'")
    assert "<td>macro avg</td>" in page


def test_embedded_images_are_valid_pngs(reported: Path, page: str) -> None:
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(PLOTS)
    for data in uris:
        img = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        assert img.format == "PNG"
        img.verify()
        assert img.size[0] > 100 and img.size[1] > 100
    for name in PLOTS:
        path = reported / "plots" / f"{name}.png"
        assert path.is_file(), path
        assert Image.open(path).format == "PNG"


def test_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "@font-face" not in page
    for ref in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert ref.startswith(("data:image/png;base64,", "#")), ref[:60]
    assert re.findall(r"url\(", page) == []


def test_bad_run_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such run folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        write_report(tmp_path / "empty")


def test_confused_pairs_plot() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[1, 1, 1, 0, 2, 2]] * 0.8 + 0.2 / 3
    fig = confused_pairs_plot(images, probs, labels, ["a", "b", "c"], [["a", "b", 2],
                                                                       ["b", "a", 1]])
    shown = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("p=")]
    assert len(shown) == 3  # two a->b mistakes and one b->a
    empty = confused_pairs_plot(images, probs, labels, ["a", "b", "c"], [])
    assert any(t.get_text() == "No confused pairs" for ax in empty.axes for t in ax.texts)
