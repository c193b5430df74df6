"""Calibration: the temperature fit, the held-out split it sees, model.pt round trip,
metrics.json before/after and `fmnist calibrate RUN`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.calibration import (
    calibration_measures,
    calibration_size,
    calibration_split,
    classwise_ece,
    fit_temperature,
)
from fmnist.checkpoints import load_model
from fmnist.cli import main
from fmnist.datasets import Split
from fmnist.errors import ConfigError
from fmnist.metrics import expected_calibration_error


def _sampled(true_logits: np.ndarray, seed: int) -> np.ndarray:
    """Labels drawn from softmax(true_logits): those logits are calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = torch.softmax(torch.as_tensor(true_logits), 1).numpy()
    return np.array([rng.choice(p.shape[1], p=row / row.sum()) for row in p])


@pytest.fixture(scope="module")
def constructed() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, size=(4000, 10))
    return logits, _sampled(logits, 1)


@pytest.mark.parametrize("scale, case", [(3.0, "over-confident"), (0.4, "under-confident")])
def test_temperature_recovers_the_scale_and_ece_drops(constructed, scale, case):
    logits, labels = constructed
    shown = logits * scale  # the model shows logits scaled away from the calibrated ones
    t = fit_temperature(shown, labels)
    assert t == pytest.approx(scale, rel=0.1), case
    probs = lambda z: torch.softmax(torch.as_tensor(z), 1).numpy()  # noqa: E731
    before = expected_calibration_error(probs(shown), labels)
    after = expected_calibration_error(probs(shown / t), labels)
    assert before > 0.05 and after < 0.02 and after < before / 3, (before, after)
    m_before = calibration_measures(probs(shown), labels)
    m_after = calibration_measures(probs(shown / t), labels)
    for key in ("nll", "brier", "classwise_ece"):
        assert m_after[key] < m_before[key], key


def test_temperature_of_averaged_views_is_fitted_on_the_average(constructed):
    """With TTA the served probabilities are a mean over views; T is fitted on that mean."""
    logits, labels = constructed
    rng = np.random.default_rng(2)
    views = np.stack([logits * 2.0 + rng.normal(0, 1.0, logits.shape) for _ in range(5)])
    t = fit_temperature(views, labels)
    served = torch.softmax(torch.as_tensor(views) / t, -1).mean(0).numpy()
    plain = torch.softmax(torch.as_tensor(views), -1).mean(0).numpy()
    assert expected_calibration_error(served, labels) < 0.02
    assert expected_calibration_error(served, labels) < expected_calibration_error(plain, labels)


def test_fit_temperature_runs_on_one_thread_and_restores_the_count(constructed):
    from fmnist.calibration import one_thread

    logits, labels = constructed
    before = torch.get_num_threads()
    seen = []
    with pytest.raises(RuntimeError):
        with one_thread():
            seen.append(torch.get_num_threads())
            raise RuntimeError("restored even so")
    assert seen == [1] and torch.get_num_threads() == before
    views = np.stack([logits[:500], logits[:500] * 0.5])
    t = fit_temperature(views, labels[:500])
    assert torch.get_num_threads() == before
    with one_thread():  # already on one thread: the same search, the same value
        assert fit_temperature(views, labels[:500]) == t


def test_classwise_ece_is_zero_for_one_hot_truth():
    labels = np.array([0, 1, 2, 1])
    assert classwise_ece(np.eye(3)[labels], labels) == 0.0
    # p = 1/3 everywhere; hit rates 1/4, 1/2, 1/4: gaps 1/12, 1/6, 1/12, mean 1/9
    assert classwise_ece(np.full((4, 3), 1 / 3), labels) == pytest.approx(1 / 9)


@pytest.mark.parametrize("logits, labels", [
    (np.zeros((3, 4)), np.zeros(2, int)),      # counts differ
    (np.zeros((0, 4)), np.zeros(0, int)),      # nothing to fit on
    (np.zeros((2, 3, 4, 5)), np.zeros(3, int)),  # not (V, N, C)
])
def test_fit_temperature_rejects_bad_shapes(logits, labels):
    with pytest.raises(ConfigError, match="fit_temperature"):
        fit_temperature(logits, labels)


def test_split_uses_validation_when_the_recipe_has_one():
    train = Split(np.zeros((100, 28, 28), np.uint8), np.arange(100) % 10)
    val = Split(np.ones((20, 28, 28), np.uint8), np.arange(20) % 10)
    rest, cal, info = calibration_split(train, val, seed=0)
    assert rest is train and cal is val
    assert info == {"split": "val", "size": 20, "held_out": True}


def test_split_holds_out_a_stratified_share_of_training_without_validation():
    images = np.arange(1000, dtype=np.int64).repeat(784).reshape(1000, 28, 28)
    train = Split(images, np.arange(1000) % 10)
    rest, cal, info = calibration_split(train, None, seed=3)
    assert len(cal) == calibration_size(1000) == 100 and len(rest) == 900
    assert np.bincount(cal.labels).tolist() == [10] * 10
    assert not set(rest.images[:, 0, 0]) & set(cal.images[:, 0, 0])  # disjoint
    assert info["split"] == "train-holdout" and info["size"] == 100 and info["held_out"]
    with pytest.raises(ConfigError, match="too small"):
        calibration_split(Split(images[:5], np.arange(5)), None, seed=0)


# --------------------------------------------------------------------------- on a tiny run


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy) -> Path:
    return tiny_run_copy("calibration")


def test_training_fits_on_held_out_training_images_never_test(learnable_dataset, tmp_path,
                                                              monkeypatch):
    """The temperature and threshold see exactly the held-out training images."""
    import fmnist.calibration as cal
    from fmnist.training import train

    seen: list[np.ndarray] = []
    real = cal.view_logits_and_features

    def spy(model, images, **kw):
        seen.append(np.asarray(images))
        return real(model, images, **kw)

    monkeypatch.setattr(cal, "view_logits_and_features", spy)
    run = train(data=learnable_dataset, out=tmp_path / "run", model="baseline-small",
                optimizer="adam", lr=3e-3, epochs=1, batch_size=64, train_limit=600)
    config = json.loads((run.dir / "config.json").read_text())
    assert config["calibration"]["split"] == "train-holdout"
    assert config["calibration"]["size"] == 60 and config["dataset"]["train"] == 540
    assert config["calibration"]["seed"] == run.recipe.seed
    full = learnable_dataset.train
    _, keep = __import__("fmnist.datasets", fromlist=["x"]).stratified_split(
        full.labels, 600 / len(full), run.recipe.seed)
    _, held, _ = calibration_split(full.subset(keep), None, run.recipe.seed)
    np.testing.assert_array_equal(seen[0], held.images)  # fit: the held-out images
    test_rows = {row.tobytes() for row in learnable_dataset.test.images}
    assert not any(img.tobytes() in test_rows for img in seen[0])
    assert not any(img.tobytes() in test_rows for img in seen[1])  # OOD class means


def test_ood_fit_in_bf16_keeps_the_temperature_and_nearly_the_scores(run_dir: Path,
                                                                      learnable_dataset):
    """bf16 (a bf16 run's precision) is used for the training images' features only: the
    held-out passes, hence the temperature, stay float32 and the scores barely move."""
    from fmnist.calibration import fit_calibration, view_logits_and_features
    from fmnist.ood import OodScorer

    model, meta = load_model(run_dir)
    train, cal = learnable_dataset.train.subset(np.arange(600)), learnable_dataset.test
    fits = {bf16: fit_calibration(model, meta, calibration=cal.subset(np.arange(200)),
                                  train=train, tta=False, bf16=bf16) for bf16 in (False, True)}
    assert fits[True][1]["ood_fit_precision"] == "bf16"
    assert fits[False][1]["ood_fit_precision"] == "fp32"
    assert fits[True][0].temperature == fits[False][0].temperature
    logits, feats = view_logits_and_features(model, cal.images[200:600], mean=meta.mean,
                                             std=meta.std)
    scores = [OodScorer.from_meta(fits[b][0].ood)(feats, logits[0]).numpy()
              for b in (False, True)]
    assert np.corrcoef(*scores)[0, 1] > 0.99
    threshold = fits[False][0].ood["threshold"]
    assert abs(fits[True][0].ood["threshold"] - threshold) < 0.1 * abs(threshold) + 0.05


def test_ood_fit_sees_a_stratified_fit_images_share_of_training(run_dir: Path,
                                                                learnable_dataset, monkeypatch):
    """The class means and covariance see fit_images(method) training images, stratified
    (the same share of every class), ``gated`` more than the others."""
    import fmnist.ood as ood
    from fmnist.calibration import fit_calibration

    assert ood.fit_images("relative") == ood.FIT_IMAGES < ood.fit_images("gated")
    monkeypatch.setattr(ood, "FIT_IMAGES", 300)
    seen: list[np.ndarray] = []
    real = ood.fit_scorer
    monkeypatch.setattr(ood, "fit_scorer", lambda feats, labels, *a, **k: seen.append(
        labels) or real(feats, labels, *a, **k))
    model, meta = load_model(run_dir)
    train = learnable_dataset.train  # 2,000 images, 200 a class
    _, summary = fit_calibration(model, meta, calibration=learnable_dataset.test, train=train,
                                 tta=False, method="relative")
    assert summary["ood_fit_images"] == 300 and len(seen[0]) == 300
    assert set(np.bincount(seen[0]).tolist()) == {30}


def test_model_pt_round_trip_and_metrics_before_after(run_dir: Path):
    _, meta = load_model(run_dir)
    payload = torch.load(run_dir / "model.pt", weights_only=True)
    assert payload["meta"]["temperature"] == meta.temperature and meta.temperature != 1.0
    assert meta.ood["method"] == "relative" and np.isfinite(meta.ood["threshold"])
    d = payload["meta"]["ood"]["whiten"].shape[0]
    assert meta.ood["whiten"].shape == (d, d) and meta.ood["means"].shape == (10, d)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    block = metrics["calibration"]
    assert block["temperature"] == pytest.approx(meta.temperature)
    for key in ("ece", "classwise_ece", "nll", "brier"):
        assert key in block["before"] and key in block["after"]
    assert block["after"]["ece"] == pytest.approx(metrics["ece"])
    assert 0.0 <= metrics["ood"]["rejected"] <= 0.5


def test_single_view_predictions_use_the_single_view_temperature(run_dir: Path,
                                                                 learnable_dataset):
    """TTA recipe: one temperature for TTA-averaged probabilities, one for a single view."""
    from fmnist.evaluation import predict_probs
    from fmnist.inference import Predictor

    model, meta = load_model(run_dir)
    assert meta.temperature_single is not None and meta.temperature_single != meta.temperature
    images = learnable_dataset.test.images[:50]
    p = Predictor.from_path(run_dir, device="cpu")
    for tta in (False, True):
        p.tta = tta
        expected = predict_probs(model, images, mean=meta.mean, std=meta.std, tta=tta,
                                 temperature=meta.temperature_for(tta))
        np.testing.assert_allclose(p.predict_proba(images), expected, atol=1e-6)


def test_cli_calibrate_rewrites_model_and_keeps_the_old_one(run_dir: Path, capsys):
    _, before = load_model(run_dir)
    code = main(["calibrate", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert "temperature" in out and "test ece" in out
    assert (run_dir / "model.uncalibrated.pt").is_file()
    _, after = load_model(run_dir)
    assert after.temperature == pytest.approx(before.temperature, rel=1e-6)  # same held-out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["calibration"]["split"] == "train-holdout"
    assert metrics["calibration"]["held_out"] is True


def test_cli_calibrate_missing_run_is_one_line_error(tmp_path: Path, capsys):
    code = main(["calibrate", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope" in err[0]


def test_report_shows_reliability_before_and_after(run_dir: Path, learnable_dataset):
    from fmnist.report import write_report

    html = write_report(run_dir, dataset=learnable_dataset, device="cpu").read_text()
    assert (run_dir / "plots" / "reliability_before.png").is_file()
    assert (run_dir / "plots" / "reliability_after.png").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"Temperature {metrics['calibration']['temperature']:.3f}" in html
    assert f"after the temperature: ECE {metrics['calibration']['after']['ece']:.2%}" in html
