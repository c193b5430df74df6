"""Tests for fmnist.explain on tiny self-built CNNs (no dependency on fmnist.models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fmnist.errors import ConfigError
from fmnist.explain import feature_maps, first_conv, gradcam, last_conv


def tiny_cnn(inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),  # 14x14
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(2),  # 7x7
        nn.Conv2d(8, 10, 7),  # 1x1 "classifier conv": must not be picked by Grad-CAM
        nn.Flatten(),
    )


def blob_images(n: int = 3) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        x[i, 0, 4 + 3 * i : 12 + 3 * i, 6:16] = 1.0
    return (x - 0.3) / 0.35


def all_hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
        for m in model.modules()
    )


def test_last_and_first_conv():
    model = tiny_cnn()
    assert first_conv(model) is model[0]
    assert last_conv(model, blob_images(1)) is model[3]  # model[6] outputs 1x1
    with pytest.raises(ConfigError, match="Conv2d"):
        first_conv(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))


@pytest.mark.parametrize("inplace", [False, True])
def test_gradcam_shape_range_and_cleanup(inplace):
    model = tiny_cnn(inplace).eval()
    x = blob_images(3)
    x_before = x.clone()
    cams = gradcam(model, x)
    assert isinstance(cams, np.ndarray)
    assert cams.shape == (3, 28, 28)
    assert np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    for cam in cams:
        assert cam.std() > 1e-3, "constant map for a non-trivial image"
        assert cam.max() == pytest.approx(1.0, abs=1e-6)
    assert all_hooks(model) == 0
    assert torch.equal(x, x_before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_gradcam_restores_mode_and_requires_grad():
    model = tiny_cnn()
    model.train()
    model[0].weight.requires_grad_(False)
    gradcam(model, blob_images(2))
    assert model.training and all(m.training for m in model.modules())
    assert model[0].weight.requires_grad is False
    assert model[3].weight.requires_grad is True
    assert all_hooks(model) == 0


def test_gradcam_works_under_no_grad_and_frozen_model():
    model = tiny_cnn().eval().requires_grad_(False)
    with torch.no_grad():
        cams = gradcam(model, blob_images(2))
    assert cams.shape == (2, 28, 28) and cams.max() > 0
    assert all(not p.requires_grad for p in model.parameters())


def test_gradcam_target_changes_the_map():
    model = tiny_cnn().eval()
    x = blob_images(1)
    a = gradcam(model, x, target=torch.tensor([0]))
    b = gradcam(model, x, target=torch.tensor([5]))
    assert not np.allclose(a, b)
    with pytest.raises(ConfigError, match="one class per image"):
        gradcam(model, x, target=torch.tensor([0, 1]))


def test_gradcam_explicit_layer_and_bad_layer():
    model = tiny_cnn().eval()
    cams = gradcam(model, blob_images(2), layer=model[0])
    assert cams.shape == (2, 28, 28)
    with pytest.raises(ConfigError, match="tensor"):
        gradcam(model, blob_images(1), layer=model[7])  # Flatten: 2-D output
    assert all_hooks(model) == 0


def test_gradcam_hooks_removed_even_on_error():
    model = tiny_cnn().eval()
    with pytest.raises(ConfigError):
        gradcam(model, blob_images(1), layer=model[7])
    assert all_hooks(model) == 0


def test_feature_maps_first_conv_after_relu():
    model = tiny_cnn(inplace=True).eval()
    x = blob_images(1)[0]  # (1, 28, 28)
    maps = feature_maps(model, x)
    assert maps.shape == (4, 28, 28)
    assert maps.min() >= 0.0  # taken after the ReLU
    with torch.no_grad():
        ref = torch.relu(model[0](x[None]))[0].numpy()
    np.testing.assert_allclose(maps, ref, atol=1e-6)
    assert all_hooks(model) == 0


def test_feature_maps_raw_conv_when_no_activation_follows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 5), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten()).eval()
    x = blob_images(1)[0]
    maps = feature_maps(model, x)
    assert maps.shape == (3, 24, 24)
    assert maps.min() < 0  # raw conv output, not rectified
    layer2 = feature_maps(model, x, layer=model[1])  # explicit layer, ReLU follows it
    assert layer2.min() >= 0.0
