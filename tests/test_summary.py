"""Keras-style model summary: the tutorials' parameter counts, shapes, the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fmnist
from fmnist.cli import main
from fmnist.model_summary import summarize
from fmnist.models import count_params, create_model, list_models

# Keras model.summary() of the tutorials: (total, non-trainable)
KERAS = {
    "baseline-dropout": (225_034, 0),
    "baseline-batchnorm": (211_822, 66),
    "baseline-3conv": (130_890, 0),
    "baseline-wide-dense": (507_530, 0),
    "baseline-small": (121_930, 0),
}


@pytest.mark.parametrize(("name", "expected"), KERAS.items())
def test_keras_baselines_match_the_tutorials(name: str, expected: tuple[int, int]) -> None:
    s = summarize(create_model(name))
    assert (s.total, s.non_trainable) == expected
    assert s.trainable == count_params(create_model(name))


@pytest.mark.parametrize("name", list_models())
def test_rows_add_up_and_end_in_the_class_scores(name: str) -> None:
    model = create_model(name)
    s = summarize(model)
    assert sum(r.params for r in s.rows) == s.total
    assert s.total == count_params(model, include_bn_buffers=True)
    shaped = [r for r in s.rows if r.output_shape is not None]
    assert shaped[-1].output_shape == (None, 10)


def test_frozen_parameters_are_non_trainable() -> None:
    model = create_model("fastnet", stem="whiten")  # 3x3 whitening filters stay fixed
    s = summarize(model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    bn_stats = count_params(model, include_bn_buffers=True) - count_params(model)
    assert frozen == 18 * 9
    assert s.non_trainable == frozen + bn_stats


def test_shapes_follow_the_forward_pass() -> None:
    s = summarize(create_model("baseline-batchnorm"))
    by_name = {r.name: r.output_shape for r in s.rows}
    assert by_name["features.3"] == (None, 32, 14, 14)
    assert by_name["flatten"] == (None, 32 * 7 * 7)
    assert [r.name for r in s.rows][:2] == ["features.0", "features.1"]


def test_input_shape_and_container_with_own_parameters() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.fc = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) * self.scale

    s = summarize(Scaled(), input_shape=(3, 2, 2))
    assert s.total == 12 * 3 + 3 + 1
    assert {r.name: r.params for r in s.rows} == {"Scaled": 1, "fc": 39}
    with pytest.raises(fmnist.ConfigError, match="input_shape"):
        summarize(Scaled(), input_shape=(0, 2, 2))


def test_public_summary_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert fmnist.summary(create_model("baseline-batchnorm")) is None
    text = capsys.readouterr().out
    assert "Total params: 211,822" in text
    assert "Non-trainable params: 66" in text
    assert "(None, 32, 7, 7)" in text
    assert "<table>" in summarize(create_model("baseline-small"))._repr_html_()


def test_cli_models_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "baseline-batchnorm", "--summary"]) == 0
    text = capsys.readouterr().out
    assert 'Model: "baseline-batchnorm"' in text
    assert "Trainable params: 211,756" in text
    assert "head.3 (Linear)" in text
