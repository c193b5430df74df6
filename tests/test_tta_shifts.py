"""TTA views chosen by the recipe: kept in the model, used alike by every path that serves it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fmnist.checkpoints import load_model, save_model
from fmnist.errors import ConfigError, ModelFileError
from fmnist.evaluation import check_shifts, predict_probs
from fmnist.recipes import resolve_recipe

VSHIFTS = ((0, 0), (1, 0), (-1, 0))


@pytest.mark.parametrize("bad", [
    (),  # no view
    ((1, 0),),  # the image itself not first
    ((0, 0), (1, 0), (1, 0)),  # a view twice
    ((0, 0), (4, 0)),  # beyond 3 pixels
    ((0, 0), (1,)),  # not a pair
    ((0, 0), (1.0, 0)),  # not whole pixels
    ((0, 0), (True, 0)),  # a bool is not a shift
    "up",
    5,
])
def test_bad_tta_shifts_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"tta_shifts=.*first \(0, 0\)") as e:
        resolve_recipe("fast", tta_shifts=bad).validate()
    assert "\n" not in str(e.value) and "'fast'" in str(e.value)


def test_shifts_from_json_lists_are_the_same_views():
    assert check_shifts([[0, 0], [1, 0], [-1, 0]]) == VSHIFTS
    recipe = resolve_recipe("accurate")
    assert type(recipe).from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def _shifted(images: np.ndarray, dy: int) -> np.ndarray:
    """``images`` (N, 28, 28) moved down by ``dy`` rows, padded with each image's minimum."""
    out = np.repeat(images.min(axis=(1, 2), keepdims=True), 28, 1).repeat(28, 2)
    if dy > 0:
        out[:, dy:] = images[:, :-dy]
    elif dy < 0:
        out[:, :dy] = images[:, -dy:]
    else:
        out[:] = images
    return out


@pytest.fixture(scope="module")
def shifted_run(tiny_run_copy, learnable_dataset) -> Path:
    """The tiny run, its model told to average vertical shifts, exported to ONNX."""
    from fmnist.export import export_onnx

    out = tiny_run_copy("tta-shifts")
    model, meta = load_model(out)
    save_model(out / "model.pt", model, dataclasses.replace(meta, tta_shifts=VSHIFTS))
    export_onnx(out, dataset=learnable_dataset)
    return out


def test_predictors_average_the_models_views_on_both_backends(shifted_run, learnable_dataset):
    from fmnist.inference import Predictor

    x = learnable_dataset.test.images[:16]
    model, meta = load_model(shifted_run)
    assert meta.tta_shifts == VSHIFTS
    torch_p = Predictor.from_path(shifted_run, tta=True)
    onnx_p = Predictor.from_path(shifted_run / "model.onnx", tta=True)
    assert torch_p.meta["tta_shifts"] == onnx_p.meta["tta_shifts"] == [[0, 0], [1, 0], [-1, 0]]
    t, o = torch_p.predict_proba(x), onnx_p.predict_proba(x)
    assert np.abs(t - o).max() < 1e-4
    # the mean of six views: three shifts, each with its mirror (at the TTA temperature)
    kw = dict(mean=meta.mean, std=meta.std, temperature=meta.temperature_for(True))
    views = [predict_probs(model, v, **kw) for dy in (0, 1, -1)
             for v in (_shifted(x, dy), np.ascontiguousarray(_shifted(x, dy)[:, :, ::-1]))]
    np.testing.assert_allclose(t, np.mean(views, axis=0), atol=1e-6)
    flip_only = predict_probs(model, x, tta=True, **kw)
    assert np.abs(t - flip_only).max() > 1e-4  # the shifted views count


def test_a_model_file_with_bad_views_is_refused(shifted_run, tmp_path):
    import torch

    blob = torch.load(shifted_run / "model.pt", weights_only=True)
    blob["meta"]["tta_shifts"] = ((5, 0),)
    torch.save(blob, tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="tta_shifts"):
        load_model(tmp_path / "model.pt")


def test_older_models_keep_the_image_and_its_mirror(shifted_run):
    import torch

    blob = torch.load(shifted_run / "model.pt", weights_only=True)
    del blob["meta"]["tta_shifts"]  # written before the field existed
    from fmnist.checkpoints import ModelMeta

    assert ModelMeta.from_dict(blob["meta"]).tta_shifts == ((0, 0),)


def test_training_keeps_the_recipes_views_and_calibrates_on_them(tmp_path, learnable_dataset,
                                                                 one_thread):
    from fmnist.training import train

    run = train("fast", out=tmp_path / "run", data=learnable_dataset, seed=0, epochs=1,
                epoch_fractions=(), train_limit=600, tta_shifts=VSHIFTS)
    assert run.meta.tta_shifts == VSHIFTS
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["calibration"]["tta_views"] == 6  # the temperature saw the six views
    # evaluating the run again averages the same views: the accuracy training reported
    assert run.evaluate("test", write=False)["accuracy"] == metrics["accuracy"]
