"""The object API of a run, scikit-learn style: one Run (Run.load, .config, .history,
.evaluate, .predict_proba, .predict), the same predict/predict_proba split on Predictor,
and the report's Interpretation computed once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fmnist
from fmnist.errors import ConfigError
from fmnist.inference import Predictor
from fmnist.report import Interpretation
from fmnist.runs import Run, read_predictions


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy) -> Path:
    return tiny_run_copy("public-api")


@pytest.fixture(scope="module")
def run(run_dir: Path, learnable_dataset) -> Run:
    return Run.load(run_dir, dataset=learnable_dataset, device="cpu")


def test_public_names() -> None:
    assert fmnist.Run is Run
    assert fmnist.Recipe.__name__ == "Recipe" and fmnist.Callback.__name__ == "Callback"
    assert fmnist.Interpretation is Interpretation
    assert "load_run" not in fmnist.__all__  # replaced by Run.load


def test_train_returns_the_same_run_class(learnable_dataset, tmp_path: Path) -> None:
    trained = fmnist.train(data=learnable_dataset, out=tmp_path / "r", model="baseline-small",
                           epochs=1, batch_size=64, train_limit=200, device="cpu",
                           calibrate=False)
    assert type(trained) is Run
    assert trained.history == Run.load(trained.dir, dataset=learnable_dataset).history
    assert trained.config["status"] == "finished"
    assert trained.test_accuracy == json.loads((trained.dir / "metrics.json").read_text())[
        "accuracy"]


def test_run_load(run: Run, run_dir: Path) -> None:
    assert run.dir == run_dir and run.model_path == run_dir / "model.pt"
    assert run.config["recipe"]["model"] == run.recipe.model
    assert len(run.history) == run.recipe.epochs
    assert run.test_accuracy == json.loads((run_dir / "metrics.json").read_text())["accuracy"]
    assert repr(run).startswith(f"Run(dir={str(run_dir)!r}")


def test_run_load_predicts_without_its_data_and_refuses_to_evaluate(
        run: Run, run_dir: Path, learnable_dataset, tmp_path: Path) -> None:
    from fmnist.errors import DataError

    elsewhere = Run.load(run_dir, data_dir=tmp_path / "no-data-here", device="cpu",
                         offline=True)
    images = learnable_dataset.test.images[:20]
    np.testing.assert_allclose(elsewhere.predict_proba(images), run.predict_proba(images),
                               atol=1e-6)
    with pytest.raises(DataError, match="no-data-here"):
        elsewhere.evaluate("test")
    with pytest.raises(DataError):
        _ = elsewhere.dataset


def test_predict_is_the_argmax_of_predict_proba(run: Run, learnable_dataset) -> None:
    images = learnable_dataset.test.images[:50]
    probs = run.predict_proba(images)
    assert probs.shape == (50, len(run.classes))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    labels = run.predict(images)
    assert labels.shape == (50,) and labels.dtype.kind == "i"
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))


def test_predictor_follows_the_same_contract(run: Run, run_dir: Path,
                                             learnable_dataset) -> None:
    images = learnable_dataset.test.images[:20]
    p = Predictor.from_path(run_dir, device="cpu")
    np.testing.assert_array_equal(p.predict(images), p.predict_proba(images).argmax(axis=1))
    np.testing.assert_allclose(p.predict_proba(images), run.predict_proba(images), atol=1e-6)
    top = p.predict_top_k(images, k=2)
    assert [row[0][0] for row in top] == [p.classes[i] for i in p.predict(images)]


def test_evaluate_writes_metrics_and_predictions(run: Run, learnable_dataset) -> None:
    m = run.evaluate("test", tta=False, write=True)
    assert m["n"] == len(learnable_dataset.test) and not m["tta"]
    assert json.loads((run.dir / "metrics.json").read_text())["accuracy"] == m["accuracy"]
    saved = read_predictions(run.dir)
    assert saved is not None and saved[1] is False
    assert np.mean(saved[0].argmax(1) == learnable_dataset.test.labels) == pytest.approx(
        m["accuracy"])
    with pytest.raises(ConfigError, match="unknown split"):
        run.evaluate("train")


def test_interpretation(run: Run) -> None:
    run.evaluate("test", tta=False, write=True)
    it = Interpretation.from_run(run)
    assert not it.single_view
    cm = it.confusion_matrix()
    assert cm.sum() == len(it.labels) and np.trace(cm) == (it.preds == it.labels).sum()
    pairs = it.most_confused(3)
    assert len(pairs) <= 3 and all(cm[run.classes.index(t), run.classes.index(q)] == c
                                   for t, q, c in pairs)
    assert [c for *_, c in pairs] == sorted((c for *_, c in pairs), reverse=True)
    idx, losses = it.top_losses(4)
    assert (it.preds[idx] != it.labels[idx]).all()
    assert list(losses) == sorted(losses, reverse=True)
    wrong = it.preds != it.labels
    if wrong.sum() > len(idx):  # the shown mistakes are the most confident ones
        assert losses[-1] >= np.sort(it.losses[wrong])[-len(idx)]
