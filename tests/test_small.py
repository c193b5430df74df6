"""The `small` recipe (issue 16): at most 50,000 weights, a fixed whitening stem set from the
data, and an int8 ONNX file under 100 KB whose accuracy is checked against the float model."""

from __future__ import annotations

import pytest
import torch

from fmnist.errors import ConfigError
from fmnist.models import count_params, create_model
from fmnist.recipes import resolve_recipe

MAX_WEIGHTS = 50_000
TUTORIAL_SMALLEST = 121_930  # baseline-small, Keras "Total params"


def _recipe_model() -> torch.nn.Module:
    recipe = resolve_recipe("small")
    return create_model(recipe.model, **recipe.model_kwargs)


def test_recipe_model_has_at_most_50k_weights_of_any_kind() -> None:
    model = _recipe_model()
    every = sum(v.numel() for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked"))  # BN stats and fixed filters too
    assert every <= MAX_WEIGHTS
    assert count_params(model) < TUTORIAL_SMALLEST / 2


def test_whitening_filters_are_fixed_buffers_set_from_the_data() -> None:
    model = _recipe_model()
    conv = model.stem[0].conv
    assert "weight" in dict(conv.named_buffers())
    assert all(p is not conv.weight for p in model.parameters())  # the optimizer never sees it
    images = torch.randn(64, 1, 28, 28)
    before = conv.weight.clone()
    model.init_from_data(images)
    assert not torch.equal(before, conv.weight)
    patches = torch.nn.functional.unfold(images, 3).transpose(1, 2).reshape(-1, 9)
    white = patches @ conv.weight[:9].reshape(9, 9).T  # the first half: +filters
    cov = white.T @ white / len(white)
    torch.testing.assert_close(cov, torch.eye(9), atol=0.05, rtol=0)  # unit, decorrelated


def test_separable_variant_fits_too_and_options_are_checked() -> None:
    model = create_model("small", widths=(48, 96, 192), residual=(True, True, False),
                         separable=True)
    assert count_params(model) <= MAX_WEIGHTS
    assert any(m.groups > 1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="one bool per block"):
        create_model("small", residual=(True,))
    with pytest.raises(ConfigError, match="at most 4 blocks"):
        create_model("small", widths=(8, 8, 8, 8, 8))


def test_int8_onnx_is_under_100kb_and_checked_against_float(tmp_path, learnable_dataset
                                                            ) -> None:
    pytest.importorskip("onnxruntime")
    from fmnist.export import export_onnx, onnx_session
    from fmnist.training import train

    run = tmp_path / "small"
    train("small", data=learnable_dataset, out=run, epochs=3, train_limit=1000, batch_size=50,
          optimizer="adam", lr=3e-3, schedule="constant", warmup_epochs=0, precision="fp32")
    full = export_onnx(run, quantize="int8", dataset=learnable_dataset)
    r = export_onnx(run, tmp_path / "small.onnx", quantize="int8", dataset=learnable_dataset,
                    ood_score=False)
    assert r.int8_size_bytes < 100_000 < full.int8_size_bytes  # the fp32 OOD scorer weighs
    assert r.int8_size_bytes < r.size_bytes / 2  # int8 weights: a quarter, plus the graph
    outputs = [o.name for o in onnx_session(r.int8_path).get_outputs()]
    assert outputs == ["probs"]
    assert r.accuracy_torch == full.accuracy_torch > 0.5  # the same model; it learned the bars
    assert r.accuracy_int8 >= r.accuracy_torch - 0.003  # the exporter's own limit
    assert r.n_images == len(learnable_dataset.test)
    assert not (run / "small.onnx").exists() and (tmp_path / "small.int8.onnx").is_file()
