"""Out-of-distribution score: the Mahalanobis scorer on constructed features, the feature
hook on every registered model, ONNX parity, and the fields predict and the API give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist.cli import main
from fmnist.errors import ModelFileError
from fmnist.inference import Predictor
from fmnist.models import create_model, list_models
from fmnist.ood import (
    GATE_POWER,
    OodScorer,
    auroc,
    feature_tap,
    fit_gaussian,
    fit_scorer,
    fpr_at_tpr,
    last_linear,
    photo_parts,
    threshold_for,
)


def _clusters(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """3 classes of correlated 8-D Gaussian features around fixed means (+ ``shift``)."""
    rng = np.random.default_rng(seed)
    means = np.array([[4.0] * 8, [-4.0] * 8, [4.0, -4.0] * 4])
    mix = np.random.default_rng(99).normal(size=(8, 8))
    labels = rng.integers(0, 3, n)
    return means[labels] + rng.normal(size=(n, 8)) @ mix + shift, labels


def test_mahalanobis_separates_constructed_in_and_out_features():
    f_train, y_train = _clusters(3000, 0)
    f_in, _ = _clusters(1000, 1)
    f_out, _ = _clusters(1000, 2, shift=np.array([0, 12.0, 0, 0, -12.0, 0, 0, 0]))
    whiten, means = fit_gaussian(f_train, y_train, num_classes=3)
    plain = OodScorer("mahalanobis", {"whiten": whiten, "means": means}, threshold=0.0)
    no_logits = torch.zeros(1000, 3)
    s_in = plain(torch.as_tensor(f_in), no_logits).numpy()
    s_out = plain(torch.as_tensor(f_out), no_logits).numpy()
    assert auroc(s_in, s_out) > 0.99
    assert fpr_at_tpr(s_in, s_out) < 0.02
    t = threshold_for(s_in)
    assert (s_in <= t).mean() == pytest.approx(0.95, abs=0.002)
    # in whitened units an in-distribution point is ~1 per dimension from its class mean
    assert np.median(s_in) == pytest.approx(1.0, rel=0.25)


def test_relative_scorer_is_standardized_and_accepts_95_percent_of_held_out_data():
    f_train, y_train = _clusters(3000, 0)
    f_held, _ = _clusters(1000, 1)
    f_in, _ = _clusters(2000, 3)
    f_out, _ = _clusters(1000, 2, shift=np.array([0, 12.0, 0, 0, -12.0, 0, 0, 0]))
    held = torch.as_tensor(f_held, dtype=torch.float32)
    scorer = fit_scorer(f_train, y_train, 3, held, torch.zeros(len(held), 3))
    assert scorer.method == "relative"
    parts = scorer.parts(held)
    torch.testing.assert_close(parts.median(0).values, scorer.center)  # standardized on held
    s_held = scorer(held, None).numpy()
    assert (s_held <= scorer.threshold).mean() == pytest.approx(0.95, abs=0.002)
    s_in = scorer(torch.as_tensor(f_in, dtype=torch.float32), None).numpy()
    s_out = scorer(torch.as_tensor(f_out, dtype=torch.float32), None).numpy()
    assert (s_in <= scorer.threshold).mean() == pytest.approx(0.95, abs=0.02)  # fresh data
    assert auroc(s_in, s_out) > 0.99 and (s_out > scorer.threshold).mean() > 0.98
    again = OodScorer.from_meta(scorer.to_meta())
    torch.testing.assert_close(again(held, None), scorer(held, None))


def _photos(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Constructed "photo" features: the same 3 classes in another region of feature space,
    plus a 4th group labelled -1 (the outliers the photo branch learns)."""
    f, y = _clusters(n, seed, shift=np.array([30.0, 0, 30.0, 0, 0, 0, 0, 0]))
    out = np.random.default_rng(seed).random(n) < 0.25
    f[out] += np.array([0, 0, 0, 9.0, 0, -9.0, 0, 0])
    return f, np.where(out, -1, y)


def _gated(train_seed: int = 0) -> tuple[OodScorer, torch.Tensor]:
    f_train, y_train = _clusters(3000, train_seed)
    held = torch.as_tensor(_clusters(1000, 1)[0], dtype=torch.float32)
    scorer = fit_scorer(f_train, y_train, 3, held, torch.zeros(len(held), 3), "gated",
                        photos=_photos(1200, 5))
    return scorer, held


def test_gated_scorer_keeps_threshold_semantics_and_ranks_minus1_photos_above_labelled():
    scorer, held = _gated()
    assert scorer.method == "gated"
    s_held = scorer(held, None)
    assert s_held.shape == (len(held),)
    assert (s_held.numpy() <= scorer.threshold).mean() == pytest.approx(0.95, abs=0.002)
    f_new, _ = _clusters(2000, 3)
    s_new = scorer(torch.as_tensor(f_new, dtype=torch.float32), None).numpy()
    assert (s_new <= scorer.threshold).mean() == pytest.approx(0.95, abs=0.02)
    f_ph, y_ph = _photos(800, 6)  # fresh photos, never fitted on
    f_ph = torch.as_tensor(f_ph, dtype=torch.float32)
    stats = {name: getattr(scorer, name) for name in OodScorer.PHOTO_STATS}
    branch = ((photo_parts(f_ph, stats) - scorer.photo_center) / scorer.photo_scale).max(1)
    p = branch.values.numpy()
    assert auroc(p[y_ph >= 0], p[y_ph < 0]) > 0.95
    # standardized on out-of-fold labelled photos: ~95% of new labelled photos are "in"
    assert (p[y_ph >= 0] <= 1.0).mean() == pytest.approx(0.95, abs=0.05)
    g = torch.sigmoid(torch.nn.functional.normalize(f_ph, dim=1) @ scorer.gate_w
                      + scorer.gate_b) ** GATE_POWER
    assert g.mean() > 0.8
    base = OodScorer.from_meta({**scorer.to_meta(), "method": "relative"})(f_ph, None)
    base = (base - scorer.base_std[0]) / scorer.base_std[1]
    torch.testing.assert_close(scorer(f_ph, None), (1 - g) * base + g * branch.values)
    far = torch.as_tensor(_clusters(500, 2, shift=np.array([0, 12.0, 0, 0, -12.0, 0, 0, 0]))[0],
                          dtype=torch.float32)
    assert auroc(s_new, scorer(far, None).numpy()) > 0.99


def test_gated_scorer_round_trips_through_meta_with_a_compact_fp16_bank():
    scorer, held = _gated()
    meta = scorer.to_meta()
    assert meta["bank_in"].dtype == torch.float16 and meta["bank_out"].dtype == torch.float16
    assert len(meta["bank_in"]) + len(meta["bank_out"]) == 1200
    again = OodScorer.from_meta(meta)
    torch.testing.assert_close(again(held, None), scorer(held, None))
    with pytest.raises(ModelFileError, match="photo statistics"):
        OodScorer.from_meta({k: v for k, v in meta.items() if k != "bank_out"})


def test_gated_falls_back_to_relative_without_photos_or_with_too_few():
    f_train, y_train = _clusters(3000, 0)
    held = torch.as_tensor(_clusters(1000, 1)[0], dtype=torch.float32)
    args = (f_train, y_train, 3, held, torch.zeros(len(held), 3), "gated")
    plain = fit_scorer(*args)
    assert plain.method == "relative" and "bank_in" not in plain.to_meta()
    f_ph, y_ph = _photos(200, 5)
    assert fit_scorer(*args, photos=(f_ph, np.abs(y_ph))).method == "relative"  # no -1 photo
    relative = fit_scorer(*args[:5], "relative")
    torch.testing.assert_close(plain(held, None), relative(held, None))


def test_a_scorer_saved_before_the_gated_method_still_loads():
    f_train, y_train = _clusters(3000, 0)
    held = torch.as_tensor(_clusters(1000, 1)[0], dtype=torch.float32)
    scorer = fit_scorer(f_train, y_train, 3, held, torch.zeros(len(held), 3), "relative")
    old = {k: v for k, v in scorer.to_meta().items()
           if k in ("method", "threshold", *OodScorer.STATS)}
    torch.testing.assert_close(OodScorer.from_meta(old)(held, None), scorer(held, None))


def test_training_photos_are_none_without_the_photos_or_for_other_classes(
        monkeypatch, tmp_path):
    from fmnist.ood_photos import training_photos

    monkeypatch.delenv("FMNIST_PHOTOS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    from fmnist.datasets import DATASETS

    assert training_photos(DATASETS.get("fashion-mnist").classes) is None
    assert training_photos(("cat", "dog")) is None


def test_energy_score_is_higher_for_flat_logits():
    scorer = OodScorer("energy", {}, threshold=0.0)
    confident = torch.tensor([[10.0, 0.0, 0.0]])
    flat = torch.tensor([[0.1, 0.0, 0.1]])
    assert scorer(None, flat) > scorer(None, confident)


@pytest.mark.parametrize("in_s, out_s, expected", [
    ([0, 1, 2], [3, 4, 5], 1.0),
    ([3, 4, 5], [0, 1, 2], 0.0),
    ([1, 1], [1, 1], 0.5),
])
def test_auroc_table(in_s, out_s, expected):
    assert auroc(np.array(in_s), np.array(out_s)) == pytest.approx(expected)


@pytest.mark.parametrize("name", list_models())
def test_feature_tap_reads_the_head_input_of_every_model(name, one_thread):
    model = create_model(name, num_classes=10).eval()
    head = last_linear(model)
    with torch.no_grad(), feature_tap(model) as tap:
        logits = model(torch.zeros(2, 1, 28, 28))
        assert tap[0].shape == (2, head.in_features)
        torch.testing.assert_close(head(tap[0]), logits)
    assert not head._forward_pre_hooks  # removed on exit


# --------------------------------------------------------------------------- tiny run


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy) -> Path:
    return tiny_run_copy("ood")


@pytest.fixture(scope="module")
def onnx_file(run_dir: Path, learnable_dataset) -> Path:
    from fmnist.export import export_onnx

    return export_onnx(run_dir, dataset=learnable_dataset, quantize="int8").path


def _odd_images() -> np.ndarray:
    """Inputs unlike the training bars: checkerboards and full squares."""
    yy, xx = np.mgrid[:28, :28]
    checker = (((yy // 2 + xx // 2) % 2) * 255).astype(np.uint8)
    square = np.zeros((28, 28), np.uint8)
    square[4:24, 4:24] = 255
    return np.stack([checker, square, 255 - checker])


def test_onnx_graph_gives_the_torch_calibrated_probs_and_score(run_dir, onnx_file,
                                                               learnable_dataset):
    images = np.concatenate([learnable_dataset.test.images[:64], _odd_images()])
    torch_p = Predictor.from_path(run_dir, backend="torch", device="cpu")
    onnx_p = Predictor.from_path(onnx_file)
    p_t, s_t = torch_p.scored_of(images)
    p_o, s_o = onnx_p.scored_of(images)
    np.testing.assert_allclose(p_o, p_t, atol=1e-4)
    np.testing.assert_allclose(s_o, s_t, rtol=1e-3, atol=1e-3)
    assert onnx_p.ood_threshold == pytest.approx(torch_p.ood_threshold)
    assert onnx_p.meta["temperature"] == pytest.approx(torch_p.meta["temperature"])
    assert torch_p.meta["temperature"] != 1.0
    # TTA on both backends: same views, same calibrated average
    torch_p.tta = onnx_p.tta = True
    np.testing.assert_allclose(onnx_p.predict_proba(images[:8]),
                               torch_p.predict_proba(images[:8]), atol=1e-4)


def test_onnx_graph_computes_the_gated_score_like_torch(tiny_run_copy, learnable_dataset):
    """A gated scorer (photo bank, gate, photo Gaussian) fitted on the tiny run's features,
    with some training images standing in for photos, exported inside the ONNX graph."""
    from fmnist.calibration import view_logits_and_features
    from fmnist.checkpoints import load_model, save_model
    from fmnist.export import export_onnx

    run = tiny_run_copy("ood-gated")
    model, meta = load_model(run)
    tr = learnable_dataset.train

    def feats(images: np.ndarray) -> torch.Tensor:
        return view_logits_and_features(model, images, mean=meta.mean, std=meta.std)[1]

    photo_labels = np.where(tr.labels[600:900] >= 8, -1, tr.labels[600:900])
    held = feats(tr.images[900:1100])
    scorer = fit_scorer(feats(tr.images[:600]).numpy(), tr.labels[:600], 10, held,
                        torch.zeros(len(held), 10), "gated",
                        photos=(feats(tr.images[600:900]).numpy(), photo_labels))
    assert scorer.method == "gated"
    save_model(run / "model.pt", model, type(meta).from_dict({**meta.to_dict(),
                                                             "ood": scorer.to_meta()}))
    path = export_onnx(run, dataset=learnable_dataset).path
    images = np.concatenate([learnable_dataset.test.images[:64], _odd_images()])
    s_t = Predictor.from_path(run, backend="torch", device="cpu").scored_of(images)[1]
    s_o = Predictor.from_path(path).scored_of(images)[1]
    np.testing.assert_allclose(s_o, s_t, rtol=1e-3, atol=1e-3)


def test_fit_calibration_uses_the_photos_only_for_a_model_trained_on_them(
        tiny_run_copy, learnable_dataset, monkeypatch, tmp_path):
    """A model trained on Fashion-MNIST alone: ``relative`` even with photos here (it never
    depends on a second dataset); trained on ``fashion-mnist+photos``: ``gated`` with the
    photos, ``relative`` without them, never an error; the method is recorded."""
    import dataclasses

    import fmnist.ood_photos
    from fmnist.calibration import fit_calibration
    from fmnist.checkpoints import load_model
    from fmnist.photo_data import MIXED_NAME

    model, meta = load_model(tiny_run_copy("ood-fit"))
    tr = learnable_dataset.train
    kw = {"calibration": tr.subset(np.arange(900, 1100)), "train": tr.subset(np.arange(600)),
          "tta": False}
    photos = (tr.images[600:900], np.where(tr.labels[600:900] >= 8, -1, tr.labels[600:900]))
    monkeypatch.setattr(fmnist.ood_photos, "training_photos", lambda classes: photos)
    plain, summary = fit_calibration(model, meta, **kw)
    assert plain.ood["method"] == "relative" and summary["ood_fit_photos"] == 0
    photo_meta = dataclasses.replace(meta, dataset=MIXED_NAME)
    gated, summary = fit_calibration(model, photo_meta, **kw)
    assert gated.ood["method"] == "gated" and summary["ood_fit_photos"] == 300
    assert len(gated.ood["bank_in"]) + len(gated.ood["bank_out"]) == 300
    monkeypatch.setattr(fmnist.ood_photos, "training_photos", lambda classes: None)
    fallback, summary = fit_calibration(model, photo_meta, **kw)
    assert fallback.ood["method"] == "relative" and summary["ood_fit_photos"] == 0


def test_score_separates_training_like_inputs_from_odd_ones(run_dir, learnable_dataset):
    p = Predictor.from_path(run_dir, device="cpu")
    s_in = p.ood_scores(learnable_dataset.test.images[:200])
    s_out = p.ood_scores(_odd_images())
    assert s_out.min() > np.quantile(s_in, 0.99)
    assert np.mean(p.in_distribution(s_in)) > 0.8
    assert p.in_distribution(s_out) == [False, False, False]


def test_predict_json_and_text_say_when_an_input_is_unlike_the_classes(
        run_dir, learnable_dataset, tmp_path, capsys):
    good, odd = tmp_path / "good.png", tmp_path / "odd.png"
    Image.fromarray(learnable_dataset.test.images[0]).save(good)
    Image.fromarray(_odd_images()[0]).save(odd)
    assert main(["predict", str(run_dir), str(good), str(odd), "--json"]) == 0
    rows = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    for row in rows.values():
        assert isinstance(row["ood_score"], float) and isinstance(row["in_distribution"], bool)
        assert isinstance(row["unsure"], bool) and len(row["predictions"]) == 3
    assert rows["good.png"]["in_distribution"] is True
    assert rows["odd.png"]["in_distribution"] is False and rows["odd.png"]["unsure"] is True
    assert rows["odd.png"]["ood_score"] > rows["good.png"]["ood_score"]
    assert main(["predict", str(run_dir), str(odd)]) == 0
    line = capsys.readouterr().out.strip()
    assert "doesn't look like any of the 10 classes; best guesses: " in line
    assert line.count("%") == 3  # the best guesses are still shown


def test_api_predict_gives_the_same_fields_as_predict_json(run_dir, learnable_dataset):
    from fastapi.testclient import TestClient

    from fmnist.serve.app import create_app

    pngs = []
    for name, image in (("good.png", learnable_dataset.test.images[0]),
                        ("odd.png", _odd_images()[0])):
        buf = __import__("io").BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        pngs.append(("files", (name, buf.getvalue(), "image/png")))
    p = Predictor.from_path(run_dir, device="cpu")
    expected = p.scored_of(np.stack([learnable_dataset.test.images[0], _odd_images()[0]]))[1]
    with TestClient(create_app(run_dir, device="cpu")) as client:
        r = client.post("/api/predict", files=pngs)
    assert r.status_code == 200
    good, odd = r.json()
    assert [good["ood_score"], odd["ood_score"]] == pytest.approx(expected.tolist(), rel=1e-5)
    assert good["in_distribution"] is True and odd["in_distribution"] is False
    assert odd["unsure"] is True and len(odd["predictions"]) == 3


def test_int8_graph_keeps_the_score_in_float(onnx_file, learnable_dataset):
    """The distances stay fp32 in the int8 graph; only the shared features are quantized."""
    from fmnist.export import int8_path_for

    images = np.concatenate([learnable_dataset.test.images[:200], _odd_images()])
    fp32 = Predictor.from_path(onnx_file)
    int8 = Predictor.from_path(int8_path_for(onnx_file))
    s32, s8 = fp32.scored_of(images)[1], int8.scored_of(images)[1]
    assert np.corrcoef(s32, s8)[0, 1] > 0.9
    same = np.equal(fp32.in_distribution(s32), int8.in_distribution(s8))
    assert same.mean() >= 0.9 and not any(int8.in_distribution(s8[-3:]))
