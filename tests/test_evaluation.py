"""Tests for fmnist.evaluation: test-time augmentation, normalization, batched prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fmnist.errors import ConfigError
from fmnist.evaluation import normalize, predict_probs, tta_probs


def test_tta_identity_predict_fn_averages_all_views():
    calls = []

    def predict(x: torch.Tensor) -> np.ndarray:
        calls.append(x.clone())
        n = x.shape[0]
        return np.tile(np.eye(3)[0], (n, 1))

    x = torch.rand(4, 1, 28, 28)
    before = x.clone()
    shifts = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
    out = tta_probs(predict, x, shifts=shifts)
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out, np.tile([1.0, 0.0, 0.0], (4, 1)))
    assert len(calls) == 10  # 5 shifts x (plain, flipped)
    assert torch.equal(x, before)  # input untouched
    assert all(c.shape == x.shape for c in calls)


def test_tta_default_is_the_image_and_its_mirror():
    calls = []

    def predict(v: torch.Tensor) -> torch.Tensor:
        calls.append(v)
        return torch.softmax(v.flatten(1)[:, :3].float(), 1)  # depends on the view

    x = torch.rand(4, 1, 28, 28)
    out = tta_probs(predict, x)
    assert len(calls) == 2 and calls[0] is x  # the plain view first, as itself
    assert torch.equal(calls[1], x.flip(-1))
    expected = (predict(x) + predict(x.flip(-1))) / 2
    np.testing.assert_allclose(out, expected.double().numpy(), rtol=1e-6)
    assert out.dtype == np.float64


def test_tta_shift_uses_padding_not_wraparound():
    seen = []
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 27, 5] = 1.0  # bottom row: a shift down must drop it, a roll would wrap it
    tta_probs(
        lambda v: seen.append(v.clone()) or np.ones((1, 2)) / 2, x, shifts=((1, 0),), flip=False
    )
    assert seen[0].sum() == 0
    seen.clear()
    tta_probs(
        lambda v: seen.append(v.clone()) or np.ones((1, 2)) / 2, x, shifts=((-1, 0),), flip=False
    )
    assert seen[0][0, 0, 26, 5] == 1.0


def test_tta_flip_sensitive_predict_fn():
    # class 0 if the left half is brighter than the right half, else class 1
    def predict(x: torch.Tensor) -> torch.Tensor:
        left = x[..., :14].sum(dim=(1, 2, 3))
        right = x[..., 14:].sum(dim=(1, 2, 3))
        p0 = (left > right).float()
        return torch.stack([p0, 1 - p0], dim=1)

    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 10:18, 2:8] = 1.0  # mass on the left
    no_flip = tta_probs(predict, x, shifts=((0, 0),), flip=False)
    np.testing.assert_allclose(no_flip, [[1, 0], [1, 0]])
    with_flip = tta_probs(predict, x, shifts=((0, 0), (1, 0)), flip=True)
    np.testing.assert_allclose(with_flip, [[0.5, 0.5], [0.5, 0.5]])


def test_tta_rejects_non_tensor():
    with pytest.raises(ConfigError, match="4-D"):
        tta_probs(lambda v: v, np.zeros((1, 1, 28, 28)))


def test_normalize_is_x_over_255_minus_mean_over_std():
    x = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)  # (1, 2, 2)
    out = normalize(x, 0.2, 0.5)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    expected = (np.array([[0, 255], [51, 102]]) / 255 - 0.2) / 0.5
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=1e-6)
    assert normalize(x.unsqueeze(1), 0.2, 0.5).shape == (1, 1, 2, 2)  # (B, 1, H, W) kept


def test_predict_probs_feeds_the_model_normalized_images():
    seen = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 3)

    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    probs = predict_probs(Spy(), images, mean=0.3, std=0.4, batch_size=2)
    assert probs.shape == (5, 3) and probs.dtype == np.float64
    np.testing.assert_allclose(probs, 1 / 3)
    fed = torch.cat(seen)
    torch.testing.assert_close(fed, normalize(torch.from_numpy(images), 0.3, 0.4))
