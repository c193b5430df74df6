"""Notebook display: plain reprs, HTML cards, the live progress bar under a kernel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import fmnist.display as display
from fmnist.display import EvaluationResult, NotebookBar
from fmnist.inference import Predictor
from fmnist.progress import Progress
from fmnist.runs import Run

ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy) -> Path:
    return tiny_run_copy("display")


def test_dataset_repr_and_card(learnable_dataset) -> None:
    text = repr(learnable_dataset)
    assert text.startswith("Dataset('fashion-mnist', train=2,000, test=500, classes=10")
    assert len(text) < 300  # no pixel arrays
    card = learnable_dataset._repr_html_()
    assert card.count("<img") == 10  # one thumbnail per class
    assert "2,000 images" in card and "Ankle boot" in card


def test_run_repr_and_card(learnable_dataset, tmp_path: Path) -> None:
    from fmnist.training import train

    run = train(data=learnable_dataset, out=tmp_path / "r", model="baseline-small",
                epochs=2, batch_size=64, train_limit=300, optimizer="adam", lr=3e-3)
    assert repr(run) == (f"Run(dir={str(run.dir)!r}, recipe='fast', epochs=2, "
                         f"test_acc={run.test_accuracy:.4f})")
    card = run._repr_html_()
    assert f"{100 * run.test_accuracy:.2f}%" in card
    assert "<svg" in card and "<polyline" in card  # the validation curve


def test_evaluation_result_is_a_dict_with_a_card(run_dir: Path) -> None:
    metrics = Run.load(run_dir, device="cpu").evaluate("test")
    assert isinstance(metrics, EvaluationResult) and isinstance(metrics, dict)
    assert json.loads(json.dumps(metrics))["accuracy"] == metrics["accuracy"]
    card = metrics._repr_html_()
    assert f"{100 * metrics['accuracy']:.2f}%" in card
    assert card.count("<tr>") >= 10 + 5  # a recall bar per class + headline rows


def test_predictor_and_prediction_cards(run_dir: Path, learnable_dataset, tmp_path) -> None:
    from PIL import Image

    p = Predictor.from_path(run_dir, device="cpu")
    card = p._repr_html_()
    assert "baseline-small" in card and "torch" in card
    good = tmp_path / "a.png"
    Image.fromarray(learnable_dataset.test.images[0]).save(good)
    ok, bad = p.predict_files([good, tmp_path / "missing.png"])
    assert repr(ok).startswith(f"PredictionResult({str(good)!r}, {ok.label} ")
    assert "error=" in repr(bad)
    html = ok._repr_html_()
    assert html.count("<img") == 1 and html.count("%</td>") == p.top_k
    assert "missing.png" in bad._repr_html_()


class FakeHandle:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def update(self, obj) -> None:
        self.log.append(obj.data)


def test_progress_in_a_notebook_is_one_html_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []

    def fake_display(obj, display_id=False):
        shown.append(obj.data)
        return FakeHandle(shown)

    import IPython.display

    monkeypatch.setattr(display, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.delenv("FMNIST_NO_PROGRESS", raising=False)
    with Progress("epoch 1/1", 10) as bar:
        for _ in range(10):
            bar.set(loss="0.5")
            bar.advance()
    assert shown[0].count("<progress") == 1
    assert "value='10' max='10'" in shown[-1] and "loss 0.5" in shown[-1]
    assert len(shown) < 10  # throttled, not one redraw per step
    assert not any(ANSI.search(s) for s in shown)


def test_not_a_notebook_outside_a_kernel() -> None:
    assert display.in_notebook() is False
    bar = NotebookBar("x", None)
    assert "<progress " in bar._html(3, "") and "max=" not in bar._html(3, "")


def test_thumbnail_is_an_inline_png() -> None:
    tag = display.thumbnail(np.zeros((28, 28), np.uint8), 30, "a'b")
    assert tag.startswith("<img src='data:image/png;base64,iVBOR") and "a&#x27;b" in tag
