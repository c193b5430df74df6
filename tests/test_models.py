"""Tests for the model registry: every registered model, the Keras baselines, errors, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fmnist.errors import ConfigError
from fmnist.models import (
    ModelInfo,
    count_params,
    create_model,
    flops_per_image,
    list_models,
    model_info,
    register_model,
)

ALL_MODELS = list_models()
BASELINES = [
    "baseline-dropout",
    "baseline-batchnorm",
    "baseline-3conv",
    "baseline-wide-dense",
    "baseline-small",
]


def _batch(n: int = 2, c: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_registry_has_every_family() -> None:
    assert set(BASELINES) <= set(ALL_MODELS)
    for name in ("fastnet", "fastnet-wide", "resnet", "wide-resnet"):
        assert name in ALL_MODELS
    assert list_models("baseline-*") == BASELINES
    assert list_models("fastnet*") == ["fastnet", "fastnet-wide"]


# --- smoke tests over the whole registry ----------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("num_classes", [10, 5])
def test_forward_shape(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes)
    out = model(_batch())
    assert out.shape == (2, num_classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_three_channels(name: str) -> None:
    model = create_model(name, in_channels=3).eval()
    assert model(_batch(c=3)).shape == (2, 10)
    with pytest.raises(RuntimeError):  # the stem really expects 3 channels now
        model(_batch(c=1))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_channels_last_bf16_autocast_matches_fp32(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = _batch(4)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (4, 10)
    assert out.dtype == torch.bfloat16  # autocast really ran the head in bf16
    assert torch.isfinite(out.float()).all()
    scale = ref.abs().max().item()
    assert (out.float() - ref).abs().max().item() <= 0.05 * scale  # measured: under 1%


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).train()
    loss = F.cross_entropy(model(_batch(4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_info_and_rebuild_from_arch_kwargs(name: str) -> None:
    info = model_info(name)
    assert isinstance(info, ModelInfo)
    assert info.name == name
    assert 0 < len(info.description) <= 70
    assert info.family in ("baseline", "fastnet", "resnet", "wide-resnet")
    assert "num_classes" not in info.default_kwargs
    model = create_model(name, **info.default_kwargs)
    assert info.params == count_params(model)
    # What a model file stores is enough to rebuild the same architecture.
    assert model.arch == name
    rebuilt = create_model(model.arch, num_classes=10, **model.arch_kwargs)
    rebuilt.load_state_dict(model.state_dict())


def test_model_info_default_kwargs_cannot_corrupt_the_registry() -> None:
    model_info("fastnet").default_kwargs["widths"] = (1,)
    assert model_info("fastnet").default_kwargs["widths"] == (32, 64, 128)


# --- the Keras baselines ---------------------------------------------------------------

KERAS_PARAMS = {  # model.summary() "Total params" of the tutorials
    "baseline-dropout": 225_034,
    "baseline-batchnorm": 211_822,
    "baseline-3conv": 130_890,
    "baseline-wide-dense": 507_530,
    "baseline-small": 121_930,
}


@pytest.mark.parametrize(("name", "expected"), KERAS_PARAMS.items())
def test_keras_param_counts(name: str, expected: int) -> None:
    assert count_params(create_model(name), include_bn_buffers=True) == expected


def test_bn_buffers_add_moving_mean_and_variance_only() -> None:
    model = create_model("baseline-batchnorm")
    # BN(1) and BN(32): 2 * (1 + 32) moving statistics, not num_batches_tracked.
    assert count_params(model) == 211_822 - 66
    assert count_params(create_model("baseline-small"), include_bn_buffers=True) == 121_930


def test_keras_batchnorm_defaults() -> None:
    bns = [m for m in create_model("baseline-batchnorm").modules() if isinstance(m, nn.BatchNorm2d)]
    assert [bn.num_features for bn in bns] == [1, 32]
    for bn in bns:
        assert bn.eps == pytest.approx(1e-3)
        assert bn.momentum == pytest.approx(0.01)


def test_baselines_use_glorot_uniform_and_zero_bias() -> None:
    torch.manual_seed(0)
    model = create_model("baseline-small")
    conv = model.features[3]  # Conv 32 -> 64, 3x3
    linear = model.head[0]  # Dense 1600 -> 64
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 32
    for layer, fan_in, fan_out in ((conv, 32 * 9, 64 * 9), (linear, 1600, 64)):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = layer.weight.detach().abs()
        assert w.max().item() <= bound
        assert w.max().item() >= 0.98 * bound  # PyTorch's default bound would be ~0.71x this
        assert w.mean().item() == pytest.approx(bound / 2, rel=0.05)  # uniform, not normal
        assert torch.count_nonzero(layer.bias) == 0


def test_keras_flatten_is_channels_last() -> None:
    model = create_model("baseline-small")
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)  # (B, C, H, W)
    flat = model.flatten(x)
    assert flat[0, :4].tolist() == [0.0, 12.0, 1.0, 13.0]  # pixel (0,0) ch0, ch1, pixel (0,1)...


# --- our own families -------------------------------------------------------------------


def test_fastnet_options_change_the_architecture() -> None:
    default = create_model("fastnet")
    narrow = create_model("fastnet", widths=[16, 32], residual=False, act="gelu", pool="avg")
    assert count_params(narrow) < count_params(default)
    assert any(isinstance(m, nn.GELU) for m in narrow.modules())
    assert narrow.arch_kwargs["widths"] == [16, 32]
    assert narrow(_batch()).shape == (2, 10)
    assert count_params(create_model("fastnet-wide")) > 3 * count_params(default)


def test_fastnet_ceil_pool_keeps_the_last_row_and_column() -> None:
    floor, ceil = create_model("fastnet"), create_model("fastnet", ceil_pool=True)
    x = _batch()
    assert floor.blocks(floor.stem(x)).shape[-2:] == (3, 3)  # 7x7 -> 3x3 drops row/col 6
    assert ceil.blocks(ceil.stem(x)).shape[-2:] == (4, 4)
    assert ceil(x).shape == (2, 10) and count_params(ceil) == count_params(floor)
    assert flops_per_image(ceil) > flops_per_image(floor)
    assert ceil.arch_kwargs["ceil_pool"] is True


def test_whitening_stem_whitens_patches_of_the_data() -> None:
    torch.manual_seed(0)
    # spatially correlated images: neighbouring pixels are far from independent
    images = 10 * F.avg_pool2d(torch.randn(512, 1, 32, 32), 5, stride=1)  # (512, 1, 28, 28)
    model = create_model("fastnet", stem="whiten")
    whiten = model.stem[0]
    assert whiten.out_channels == 18 and not whiten.conv.weight.requires_grad
    assert model(_batch()).shape == (2, 10)
    model.init_from_data(images)
    out = F.conv2d(images, whiten.conv.weight[:9])  # (512, 9, 26, 26): interior patches
    flat = out.permute(1, 0, 2, 3).reshape(9, -1).double()
    cov = flat @ flat.T / flat.shape[1]
    assert torch.allclose(cov, torch.eye(9, dtype=cov.dtype), atol=0.05)  # unit, decorrelated
    assert torch.equal(whiten.conv.weight[9:], -whiten.conv.weight[:9])
    # the frozen filters are not trained; the bias is
    loss = F.cross_entropy(model(images[:8]), torch.arange(8))
    loss.backward()
    assert whiten.conv.weight.grad is None and whiten.conv.bias.grad is not None


def test_patches_are_unfolds_matrix_exactly() -> None:
    from fmnist.models import _patches

    x = torch.randn(6, 3, 9, 8, generator=torch.Generator().manual_seed(1))
    for k in (1, 3):
        expected = F.unfold(x, k).transpose(1, 2).reshape(-1, 3 * k * k)
        assert torch.equal(_patches(x, k), expected)


def test_frozen_whitening_stem_sends_no_gradient_into_the_image_side() -> None:
    seen = {}
    for stem in ("whiten", "whiten-frozen"):
        model = create_model("fastnet", stem=stem, widths=(16, 32))
        first = model.blocks[0].conv
        first.register_forward_hook(lambda m, i, o, stem=stem: seen.update({stem: i[0]}))
        F.cross_entropy(model(_batch(8)), torch.arange(8)).backward()
        assert first.weight.grad is not None
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert model.stem[0].conv.bias.grad is None
    # so autograd skips block 1's input gradient, which the trained bias needs
    assert seen["whiten"].requires_grad and not seen["whiten-frozen"].requires_grad


def test_logit_scale_scales_logits() -> None:
    torch.manual_seed(0)
    plain = create_model("fastnet").eval()
    torch.manual_seed(0)
    scaled = create_model("fastnet", logit_scale=1 / 9).eval()
    with torch.no_grad():
        torch.testing.assert_close(scaled(_batch()), plain(_batch()) / 9)


@pytest.mark.parametrize(("depth", "blocks"), [(8, 3), (14, 6), (20, 9)])
def test_resnet_depth_sets_blocks(depth: int, blocks: int) -> None:
    model = create_model("resnet", depth=depth, width=8)
    assert len(model.blocks) == blocks


def test_wide_resnet_is_wrn_d_k() -> None:
    model = create_model("wide-resnet", depth=10, widen=2, dropout=0.3)
    assert len(model.blocks) == 3  # (10 - 4) / 6 = 1 block per stage
    assert [b.conv2.out_channels for b in model.blocks] == [32, 64, 128]
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in model.modules())


@pytest.mark.parametrize("name", ["resnet", "wide-resnet"])
def test_zero_init_residual_makes_identity_blocks(name: str) -> None:
    model = create_model(name, zero_init_residual=True).eval()
    block = model.blocks[1]  # same width, stride 1: identity shortcut
    assert block.shortcut is None
    x = torch.randn(2, block.bn1.num_features, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
    plain = create_model(name).eval().blocks[1]
    with torch.no_grad():
        assert not torch.allclose(plain(x), x)


def test_fastnet_zero_init_residual() -> None:
    model = create_model("fastnet", zero_init_residual=True)
    branches = [b.residual for b in model.blocks if b.residual is not None]
    assert len(branches) == 2  # default: every block but the first
    assert all(torch.count_nonzero(r[1].weight) == 0 for r in branches)


# --- errors -------------------------------------------------------------------------------


def test_unknown_model_suggests_closest_match() -> None:
    with pytest.raises(ConfigError, match="'fastnet'") as err:
        create_model("fastnte")
    assert "baseline-small" in str(err.value)  # lists the valid names
    with pytest.raises(ConfigError, match="'wide-resnet'"):
        model_info("wide-resnt")


def test_unknown_kwarg_is_named_with_valid_options() -> None:
    with pytest.raises(ConfigError, match="'widht'") as err:
        create_model("fastnet", widht=(8, 16))
    assert "Did you mean 'widths'" in str(err.value)
    assert "dropout" in str(err.value)
    with pytest.raises(ConfigError, match="'dropout'.*no options"):
        create_model("baseline-small", dropout=0.5)


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("wide-resnet", {"depth": 15}, "6n\\+4.*got 15"),
        ("wide-resnet", {"depth": 4}, "6n\\+4.*got 4"),
        ("wide-resnet", {"dropout": 1.5}, "dropout"),
        ("resnet", {"depth": 9}, "6n\\+2.*got 9"),
        ("resnet", {"width": 0}, "width"),
        ("fastnet", {"widths": ()}, "widths"),
        ("fastnet", {"widths": (32, 64, 128, 128, 128)}, "at most 4"),
        ("fastnet", {"residual": (True,)}, "residual"),
        ("fastnet", {"act": "tanh"}, "'tanh'"),
        ("fastnet", {"pool": "sum"}, "pool"),
        ("fastnet", {"stem": "patch"}, "stem"),
        ("baseline-small", {"num_classes": 0}, "num_classes"),
        ("baseline-small", {"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_values_raise_config_error(name: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        create_model(name, **kwargs)


def test_register_model_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        register_model("fastnet", "again")(lambda num_classes=10, in_channels=1: nn.Linear(1, 1))


# --- FLOPs --------------------------------------------------------------------------------


def test_flops_per_image_hand_count() -> None:
    macs = (
        26 * 26 * 32 * (1 * 3 * 3)  # conv 1->32, valid: 26x26 outputs
        + 11 * 11 * 64 * (32 * 3 * 3)  # conv 32->64 on 13x13: 11x11 outputs
        + 1600 * 64  # dense
        + 64 * 10  # dense
    )
    model = create_model("baseline-small").train()
    assert flops_per_image(model) == 2 * macs == 5_056_000
    assert model.training  # mode restored


def test_flops_grow_with_width_and_channels() -> None:
    base = flops_per_image(create_model("fastnet"))
    assert 10e6 <= base <= 30e6  # the CPU budget the default fastnet is sized for
    assert flops_per_image(create_model("fastnet-wide")) > 3 * base
    rgb = flops_per_image(create_model("fastnet", in_channels=3))
    assert rgb - base == 2 * 28 * 28 * 16 * 9 * 2  # only the stem sees the extra channels


def test_param_counts_match_keras_summary_and_the_models_table(capsys) -> None:
    """Keras: baseline-batchnorm "Total params: 211,822", "Trainable params: 211,756"
    (the 66 non-trainable are BN moving means and variances)."""
    from fmnist.cli import main
    from fmnist.models import param_counts

    counts = param_counts(create_model("baseline-batchnorm"))
    assert (counts.total, counts.trainable, counts.non_trainable) == (211_822, 211_756, 66)
    info = model_info("baseline-batchnorm")
    assert (info.total_params, info.trainable_params) == (211_822, 211_756)
    assert main(["models"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "baseline-batchnorm" in ln)
    assert "211,822" in row and "211,756" in row
