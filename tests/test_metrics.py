"""Tests for fmnist.metrics: hand-computed cases, scikit-learn parity, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report, log_loss, top_k_accuracy_score
from sklearn.metrics import confusion_matrix as sk_cm

from fmnist import metrics as M
from fmnist.errors import ConfigError

NAMES3 = ["a", "b", "c"]


def one_hot_probs(preds: list[int], c: int, p: float = 0.8) -> np.ndarray:
    """Probabilities with ``p`` on the predicted class and the rest spread evenly."""
    out = np.full((len(preds), c), (1 - p) / (c - 1))
    out[np.arange(len(preds)), preds] = p
    return out


# 3 classes, 6 samples, computed by hand:
# labels 0 0 1 1 2 2 / preds 0 1 1 1 2 0
# cm = [[1,1,0],[0,2,0],[1,0,1]]; accuracy 4/6
# precision: a 1/2, b 2/3, c 1/1; recall: a 1/2, b 2/2, c 1/2
# f1: a 0.5, b 0.8, c 2/3
LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDS = np.array([0, 1, 1, 1, 2, 0])


def test_hand_computed_accuracy_and_confusion_matrix():
    probs = one_hot_probs(PREDS.tolist(), 3)
    assert M.accuracy(probs, LABELS) == pytest.approx(4 / 6)
    cm = M.confusion_matrix(LABELS, PREDS, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert cm.dtype.kind == "i"


def test_hand_computed_per_class_report():
    rep = M.per_class_report(LABELS, PREDS, NAMES3)
    expected = {
        "a": (1 / 2, 1 / 2, 0.5, 2),
        "b": (2 / 3, 1.0, 0.8, 2),
        "c": (1.0, 1 / 2, 2 / 3, 2),
    }
    for name, (p, r, f, s) in expected.items():
        assert rep[name]["precision"] == pytest.approx(p)
        assert rep[name]["recall"] == pytest.approx(r)
        assert rep[name]["f1"] == pytest.approx(f)
        assert rep[name]["support"] == s
    assert rep["macro avg"]["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert rep["macro avg"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert rep["weighted avg"]["recall"] == pytest.approx(4 / 6)  # equal supports
    assert rep["weighted avg"]["support"] == 6
    json.dumps(rep)  # plain Python types only


def test_hand_computed_most_confused():
    cm = np.array([[5, 3, 0], [1, 7, 4], [2, 0, 9]])
    assert M.most_confused(cm, NAMES3, k=3) == [("b", "c", 4), ("a", "b", 3), ("c", "a", 2)]
    # zero cells never appear, even when k asks for more
    assert len(M.most_confused(cm, NAMES3, k=10)) == 4
    assert M.most_confused(np.diag([3, 3, 3]), NAMES3) == []


def test_nll_hand_computed_and_clipped():
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]])
    labels = np.array([0, 1, 0])
    expected = (-np.log(0.5) - np.log(0.1) - np.log(1e-12)) / 3
    assert M.nll(probs, labels) == pytest.approx(expected)


def test_top_k_accuracy_hand_computed():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3]])
    labels = np.array([1, 0, 1])
    # top-2 sets: {0,1} hit, {2,1} miss, {0,2} miss
    assert M.top_k_accuracy(probs, labels, k=1) == pytest.approx(0.0)
    assert M.top_k_accuracy(probs, labels, k=2) == pytest.approx(1 / 3)
    assert M.top_k_accuracy(probs, labels, k=3) == pytest.approx(1.0)


def random_case(n: int = 400, c: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, c, size=n)
    return probs, labels


def test_matches_scikit_learn_on_random_data():
    probs, labels = random_case()
    names = [f"class{i}" for i in range(10)]
    preds = probs.argmax(1)
    assert M.accuracy(probs, labels) == pytest.approx(accuracy_score(labels, preds))
    assert M.nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(10)))
    assert M.top_k_accuracy(probs, labels, k=2) == pytest.approx(
        top_k_accuracy_score(labels, probs, k=2, labels=range(10))
    )
    np.testing.assert_array_equal(M.confusion_matrix(labels, preds, 10), sk_cm(labels, preds))
    ours = M.per_class_report(labels, preds, names)
    ref = classification_report(
        labels, preds, target_names=names, output_dict=True, zero_division=0
    )
    for key in names + ["macro avg", "weighted avg"]:
        assert ours[key]["precision"] == pytest.approx(ref[key]["precision"])
        assert ours[key]["recall"] == pytest.approx(ref[key]["recall"])
        assert ours[key]["f1"] == pytest.approx(ref[key]["f1-score"])
        assert ours[key]["support"] == ref[key]["support"]


def test_confusion_matrix_includes_absent_classes():
    cm = M.confusion_matrix(np.array([0, 0]), np.array([0, 0]), 4)
    assert cm.shape == (4, 4)
    assert cm.sum() == 2


def test_ece_perfectly_calibrated_is_zero():
    # every confidence 0.8, 8 of 10 correct
    preds = [0] * 10
    probs = one_hot_probs(preds, 3, p=0.8)
    labels = np.array([0] * 8 + [1] * 2)
    assert M.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_overconfident_known_value():
    # confidence 1.0 everywhere, half correct -> ECE 0.5
    probs = np.tile([1.0, 0.0], (10, 1))
    labels = np.array([0] * 5 + [1] * 5)
    assert M.expected_calibration_error(probs, labels) == pytest.approx(0.5)


def test_ece_two_bins_weighted_by_size():
    # 4 samples at conf 0.95 all correct (gap 0.05), 6 at conf 0.55 with 3 correct (gap 0.05)
    probs = np.vstack([np.tile([0.95, 0.05], (4, 1)), np.tile([0.55, 0.45], (6, 1))])
    labels = np.array([0] * 4 + [0, 0, 0, 1, 1, 1])
    assert M.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.05)
    table = M.reliability_table(probs, labels, n_bins=10)
    assert len(table) == 10
    assert sum(r["count"] for r in table) == 10
    top = table[9]
    assert (top["lo"], top["hi"], top["count"]) == (pytest.approx(0.9), 1.0, 4)
    assert top["accuracy"] == pytest.approx(1.0) and top["confidence"] == pytest.approx(0.95)
    mid = table[5]
    assert mid["count"] == 6 and mid["accuracy"] == pytest.approx(0.5)
    assert table[0]["count"] == 0 and table[0]["accuracy"] is None
    json.dumps(table)


def test_compute_metrics_is_complete_and_json_serialisable():
    probs, labels = random_case(n=200, seed=1)
    names = [f"c{i}" for i in range(10)]
    m = M.compute_metrics(probs, labels, names)
    for key in (
        "accuracy",
        "loss",
        "top2_accuracy",
        "ece",
        "per_class",
        "confusion_matrix",
        "most_confused",
        "reliability",
        "n",
    ):
        assert key in m
    assert m["n"] == 200
    assert np.array(m["confusion_matrix"]).sum() == 200
    assert m["accuracy"] == pytest.approx(M.accuracy(probs, labels))
    assert m["top2_accuracy"] >= m["accuracy"]
    back = json.loads(json.dumps(m))
    assert back["per_class"]["c3"]["support"] == int((labels == 3).sum())


def test_compute_metrics_rejects_wrong_class_names():
    probs, labels = random_case(n=20)
    with pytest.raises(ConfigError, match="class names"):
        M.compute_metrics(probs, labels, ["a", "b"])


def test_bad_shapes_raise_config_error():
    with pytest.raises(ConfigError, match="probs"):
        M.accuracy(np.zeros(5), np.zeros(5, dtype=int))
    with pytest.raises(ConfigError, match="labels"):
        M.accuracy(np.zeros((5, 3)), np.zeros(4, dtype=int))
    with pytest.raises(ConfigError, match="labels must lie"):
        M.accuracy(np.zeros((2, 3)), np.array([0, 3]))


def test_format_report_lists_every_class_and_summary():
    probs = one_hot_probs(PREDS.tolist(), 3)
    text = M.format_report(M.compute_metrics(probs, LABELS, ["T-shirt/top", "b", "c"]))
    lines = text.splitlines()
    assert "precision" in lines[0] and "support" in lines[0]
    row = next(line for line in lines if line.strip().startswith("T-shirt/top"))
    assert row.split()[1:] == ["0.5000", "0.5000", "0.5000", "2"]
    acc = next(line for line in lines if line.strip().startswith("accuracy"))
    assert acc.split()[1:] == ["0.6667", "6"]
    assert any(line.strip().startswith("macro avg") for line in lines)
    assert "ECE" in text and "T-shirt/top -> b: 1" in text
    # fixed width: all table rows have the same length
    table = [line for line in lines[:8] if line.strip()]
    assert len({len(line) for line in table}) == 1


def test_per_class_report_matches_sklearn_with_empty_classes():
    """Class 3 never predicted, class 4 never present: scikit-learn's zero_division=0."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 5, 200))
    preds[preds == 3] = 0
    names = [f"c{i}" for i in range(5)]
    ours = M.per_class_report(labels, preds, names)
    ref = classification_report(labels, preds, labels=range(5), target_names=names,
                                output_dict=True, zero_division=0)
    for key in names + ["macro avg", "weighted avg"]:
        for ours_key, ref_key in (("precision", "precision"), ("recall", "recall"),
                                  ("f1", "f1-score"), ("support", "support")):
            assert ours[key][ours_key] == pytest.approx(ref[key][ref_key]), (key, ours_key)
    np.testing.assert_array_equal(M.confusion_matrix(labels, preds, 5),
                                  sk_cm(labels, preds, labels=range(5)))
