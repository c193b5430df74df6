"""Hyperparameter search: search spaces, a resumable study with pruning, its files, and
`fmnist train --params` picking the result up."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import pytest

from fmnist.cli import main
from fmnist.errors import ConfigError
from fmnist.recipes import RECIPES, get_recipe
from fmnist.training import read_config
from fmnist.tune import DEFAULT_SPACE, SEARCH_SPACES, check_space, read_params, suggest, tune

needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                  reason="optional extra: pip install 'fmnist[tune]'")

# tiny and quick: 8 steps an epoch on 320 learnable images, under a second a trial
QUICK = dict(model="baseline-small", optimizer="adam", epochs=2, batch_size=40,
             val_fraction=0.2, train_limit=400)
GOOD_LR = {"lr": ("log", 2e-3, 6e-3)}  # every sample learns the data, some better


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- spaces


@pytest.mark.parametrize("name", list(SEARCH_SPACES))
def test_declared_spaces_are_valid_for_their_recipes(name):
    assert name in RECIPES
    assert check_space(SEARCH_SPACES[name], get_recipe(name))


def test_default_space_is_valid_for_every_recipe():
    for name, recipe in RECIPES.items():
        assert check_space(DEFAULT_SPACE, recipe), name


@pytest.mark.parametrize(
    "space, message",
    [
        ({"learning_rate": ("log", 1e-3, 1.0)}, "unknown recipe field 'learning_rate'"),
        ({"name": ("categorical", ["a"])}, "unknown recipe field 'name'"),
        ({"lr": ("loguniform", 1e-3, 1.0)}, "unknown kind 'loguniform'"),
        ({"lr": ("log", 0.0, 1.0)}, "low > 0"),
        ({"lr": ("float", 1.0, 0.1)}, "low <= high"),
        ({"lr": ("float", 0.1)}, "('float', low, high)"),
        ({"batch_size": ("categorical", [])}, "at least one choice"),
        ({"grad_clip": ("scale", 0.5, 2.0)}, "nothing to scale"),
    ],
)
def test_bad_space_is_a_config_error_naming_the_field(space, message):
    with pytest.raises(ConfigError, match="fast") as e:
        check_space(space, get_recipe("fast"))
    assert message in str(e.value)


@needs_optuna
def test_suggest_scales_and_coerces_values():
    import optuna

    base = get_recipe("fast")
    space = {"lr": ("scale", 0.5, 2.0), "augment": ("categorical", ["flip,erase", "flip"]),
             "epochs": ("int", 3, 12), "batch_size": ("log", 64, 512)}
    trial = optuna.trial.FixedTrial({"lr_scale": 0.5, "augment": "flip,erase", "epochs": 4,
                                     "batch_size": 128})
    params = suggest(trial, space, base)
    assert params == {"lr": base.lr * 0.5, "augment": ("flip", "erase"), "epochs": 4,
                      "batch_size": 128}


def test_read_params_takes_best_json_or_a_plain_object(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"recipe": "fast", "value": 0.9,
                                "params": {"lr": 0.1, "augment": ["flip"]}}))
    assert read_params(best) == ("fast", {"lr": 0.1, "augment": ("flip",)})
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"lr": 0.05, "epochs": 3}))
    assert read_params(plain) == (None, {"lr": 0.05, "epochs": 3})
    plain.write_text(json.dumps({"lr": 0.05, "learning_rate": 3}))
    with pytest.raises(ConfigError, match="unknown recipe field.*learning_rate"):
        read_params(plain)
    with pytest.raises(ConfigError, match="no such file"):
        read_params(tmp_path / "missing.json")


@needs_optuna
def test_tune_refuses_a_search_without_validation_split(tmp_path, learnable_dataset):
    with pytest.raises(ConfigError, match="val_fraction must be > 0"):
        tune("fast", 1, out=tmp_path, data=learnable_dataset, val_fraction=0.0)


def test_tune_without_optuna_exits_2_with_the_install_hint(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert "pip install 'fmnist[tune]'" in capsys.readouterr().err


# --------------------------------------------------------------------------- a study


@needs_optuna
@pytest.mark.filterwarnings("ignore:Fixed parameter lr:UserWarning")  # the enqueued 1e-7
def test_study_resumes_prunes_a_bad_trial_and_writes_its_files(tmp_path, learnable_dataset):
    import optuna

    out = tmp_path / "study"
    first = tune("fast", 3, out=out, data=learnable_dataset, space=GOOD_LR, device="cpu",
                 **QUICK)
    assert (first.n_trials, first.states) == (3, {"COMPLETE": 3})
    assert first.storage == f"sqlite:///{(out / 'study.db').resolve()}"

    # a second process-worth of trials on the same storage, led by a hopeless lr: its
    # validation accuracy at epoch 1 stays at chance, below the median -> pruned
    optuna.load_study(study_name="fast", storage=first.storage).enqueue_trial({"lr": 1e-7})
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    second = tune("fast", 3, out=out, data=learnable_dataset, space=GOOD_LR, device="cpu",
                  pruner=pruner, **QUICK)
    assert second.n_trials == 6
    bad = second.study.trials[3]
    assert bad.params == {"lr": 1e-7}
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["epochs_run"] == 1 and "pruned at epoch 1" in bad.user_attrs[
        "stop_reason"]
    assert bad.intermediate_values[1] < 0.3  # chance is 0.1

    best = json.loads((out / "best.json").read_text())
    assert best["recipe"] == "fast" and best["metric"] == "val_acc"
    assert best["value"] == second.best_value > 0.5
    assert set(best["searched"]) == {"lr"} and 2e-3 <= best["searched"]["lr"] <= 6e-3
    assert best["fixed"] == QUICK
    # train with the trial's recipe, less the search's data shortcuts
    assert best["params"] == {"model": "baseline-small", "optimizer": "adam", "epochs": 2,
                              "batch_size": 40, "lr": best["searched"]["lr"]}
    assert second.best_params == best["params"]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(6))
    assert rows[3]["state"] == "PRUNED" and float(rows[3]["params_lr"]) == 1e-7
    assert all(r["duration_s"] and r["value"] for r in rows)
    assert (out / "optimization_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # importances need variance among the *completed* trials; on this easy data they may
    # all reach 100%, and then the plot is skipped with a note saying why
    complete = {r["value"] for r in rows if r["state"] == "COMPLETE"}
    if len(complete) > 1:
        assert (out / "param_importances.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not (out / "param_importances.png").exists()
        assert any("param_importances.png skipped" in n for n in second.notes)
    # the test split stays untouched: no trial evaluated it
    trial_dirs = sorted((out / "trials").iterdir())
    assert len(trial_dirs) == 6
    assert not any((d / "metrics.json").exists() for d in trial_dirs)
    assert read_config(trial_dirs[0])["recipe"]["val_fraction"] == 0.2


@needs_optuna
def test_importance_plot_is_skipped_with_a_note_below_two_trials(tmp_path, learnable_dataset):
    r = tune("fast", 1, out=tmp_path, data=learnable_dataset, space=GOOD_LR, device="cpu",
             **{**QUICK, "epochs": 1})
    assert r.states == {"COMPLETE": 1}
    assert (tmp_path / "optimization_history.png").is_file()
    assert not (tmp_path / "param_importances.png").exists()
    assert any("needs >= 2 completed trials" in n for n in r.notes)


@needs_optuna
def test_cli_tune_then_train_with_params(tmp_path, learnable_csv_dir, capsys):
    out = tmp_path / "tune"
    quick = ["--model", "baseline-small", "--batch-size", "64", "--train-limit", "300",
             "--device", "cpu", "--data-dir", str(learnable_csv_dir)]
    assert main(["tune", "--recipe", "baseline-small", "--trials", "1", "--out", str(out),
                 "--val-fraction", "0.2", "--epochs", "3", "--trial-budget", "0.001",
                 *quick]) == 0
    printed = capsys.readouterr().out
    assert "train it: fmnist train --recipe baseline-small --params" in printed
    best = json.loads((out / "best.json").read_text())
    assert best["study"] == "baseline-small"
    assert set(best["searched"]) == {"lr", "label_smoothing"}  # batch_size: fixed by a flag
    assert best["params"] == {"model": "baseline-small", "batch_size": 64, "epochs": 3,
                              **best["searched"]}  # without train_limit and val_fraction

    # the budget (checked after each epoch) stopped the trial after one epoch
    row = next(csv.DictReader((out / "trials.csv").open()))
    assert (row["state"], row["epochs_run"]) == ("COMPLETE", "1")
    assert row["stop_reason"] == "trial budget of 0.001 s spent"

    run = tmp_path / "final"
    assert main(["train", "--recipe", "baseline-small", "--params", str(out / "best.json"),
                 "--out", str(run), "--no-report", "--label-smoothing", "0.05", "--epochs", "1",
                 *quick]) == 0
    recipe = read_config(run)["recipe"]
    assert recipe["lr"] == best["params"]["lr"]
    assert recipe["label_smoothing"] == 0.05  # explicit flags win over --params
    assert recipe["epochs"] == 1 and recipe["val_fraction"] == 0.0

    # best.json names the recipe it was tuned for
    assert main(["train", "--params", str(out / "best.json"), "--out", str(tmp_path / "x"),
                 *quick]) == 2
    assert "tuned for recipe 'baseline-small'" in capsys.readouterr().err


def test_fit_space_keeps_only_label_preserving_augment_choices():
    from fmnist.datasets import DATASETS
    from fmnist.tune import SEARCH_SPACES, fit_space

    space = SEARCH_SPACES["fast"]
    digits = fit_space(space, DATASETS.get("mnist").augment_policy)
    assert digits["augment"] == ("categorical", ["translate:2", "translate:2,erase",
                                                 "translate:1"])
    assert digits["lr"] == space["lr"]
    assert fit_space(space, DATASETS.get("fashion-mnist").augment_policy) == dict(space)
