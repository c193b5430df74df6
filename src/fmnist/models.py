"""Model registry: Keras tutorial baselines, fast CPU nets and (wide) pre-activation ResNets.

Every model takes a normalized ``(B, in_channels, 28, 28)`` float batch and returns
``(B, num_classes)`` logits; all work with ``memory_format=torch.channels_last`` and under
``torch.autocast(..., dtype=torch.bfloat16)``.

>>> model = create_model("fastnet", num_classes=10, widths=(32, 64, 128))
>>> list_models("baseline-*")[:2]
['baseline-dropout', 'baseline-batchnorm']

``create_model`` stamps ``model.arch`` (the registry name) and ``model.arch_kwargs`` (the
fully resolved options, ``in_channels`` included, ``num_classes`` excluded) on the module so
a model file can rebuild it with ``create_model(arch, num_classes=..., **arch_kwargs)``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry

__all__ = [
    "ModelInfo",
    "register_model",
    "create_model",
    "list_models",
    "model_info",
    "count_params",
    "param_counts",
    "ParamCounts",
    "flops_per_image",
]

Family = Literal["baseline", "fastnet", "resnet", "wide-resnet", "custom"]
ModelFactory = Callable[..., nn.Module]

# Arguments every factory takes; they describe the data, not the architecture.
_DATA_ARGS = ("num_classes", "in_channels")
_IMAGE_SIZE = 28


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    description: str
    family: Family


@dataclass(frozen=True)
class ModelInfo:
    """What ``fmnist models`` prints: name, size at default options, one-line description."""

    name: str
    description: str
    params: int  # nn.Parameters at default kwargs (BN running statistics not counted)
    family: Family
    default_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture options only
    total_params: int = 0  # as Keras' "Total params" (see param_counts)
    trainable_params: int = 0  # as Keras' "Trainable params"


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts as Keras' ``model.summary()`` shows them."""

    total: int  # every weight plus BatchNorm moving mean/variance ("Total params")
    trainable: int  # what the optimizer updates ("Trainable params")

    @property
    def non_trainable(self) -> int:
        """BN moving statistics and frozen weights ("Non-trainable params")."""
        return self.total - self.trainable


_MODELS: Registry[_Entry] = Registry("model")


def _family_from_name(name: str) -> Family:
    for prefix in ("baseline", "fastnet", "wide-resnet", "resnet"):
        if name.startswith(prefix):
            return prefix  # type: ignore[return-value]
    return "custom"


def register_model(
    name: str, description: str, *, family: Family | None = None, listed: bool = True
) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(num_classes=10, in_channels=1, **options) -> nn.Module`` as ``name``.

    ``family`` defaults to the name's prefix (``baseline-*``, ``fastnet*``, ...) else "custom".
    An unlisted model is built by name but not shown by :func:`list_models`.
    """

    def decorate(factory: ModelFactory) -> ModelFactory:
        entry = _Entry(factory, description, family or _family_from_name(name))
        _MODELS.add(name, entry, listed=listed)
        return factory

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, in registration order."""
    return _MODELS.names(pattern)


def _options(factory: ModelFactory) -> dict[str, inspect.Parameter]:
    """The factory's keyword options other than num_classes/in_channels."""
    params = inspect.signature(factory).parameters
    return {
        k: p
        for k, p in params.items()
        if k not in _DATA_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _check_kwargs(name: str, factory: ModelFactory, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = list(_options(factory))
    for key in kwargs:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        choices = (
            f"Valid options: {', '.join(valid)}."
            if valid
            else "It takes no options besides num_classes and in_channels."
        )
        raise ConfigError(f"model {name!r} has no option {key!r}.{hint} {choices}")


def _check_positive_int(what: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}; got {value!r}.")
    return value


def create_model(
    name: str, num_classes: int = 10, in_channels: int = 1, **kwargs: Any
) -> nn.Module:
    """Build a registered model; unknown names or options raise ``ConfigError``."""
    entry = _MODELS.get(name)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    _check_kwargs(name, entry.factory, kwargs)
    model = entry.factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    resolved = {k: p.default for k, p in _options(entry.factory).items()}
    resolved.update(kwargs)
    model.arch = name
    model.arch_kwargs = {"in_channels": in_channels, **resolved}
    return model


@functools.cache
def _default_counts(name: str) -> tuple[int, ParamCounts]:
    model = _MODELS.get(name).factory()
    return count_params(model), param_counts(model)


def model_info(name: str) -> ModelInfo:
    """Name, description, family, default options and parameter counts of a registered
    model (``params``: nn.Parameters; ``total_params``/``trainable_params``: as Keras)."""
    entry = _MODELS.get(name)
    defaults = {k: p.default for k, p in _options(entry.factory).items()}
    params, counts = _default_counts(name)
    return ModelInfo(name, entry.description, params, entry.family, defaults,
                     counts.total, counts.trainable)


def param_counts(model: nn.Module) -> ParamCounts:
    """Total (with BN moving statistics) and trainable parameters, as Keras counts them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ParamCounts(count_params(model, include_bn_buffers=True), trainable)


def count_params(model: nn.Module, include_bn_buffers: bool = False) -> int:
    """Number of parameters; ``include_bn_buffers`` adds BN running mean/var like Keras does."""
    n = sum(p.numel() for p in model.parameters())
    if include_bn_buffers:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n += m.running_mean.numel() + m.running_var.numel()
    return n


@torch.no_grad()
def flops_per_image(model: nn.Module, in_channels: int | None = None) -> int:
    """Approximate FLOPs (2 x multiply-accumulates of conv and linear layers) for one image.

    Runs one ``(1, in_channels, 28, 28)`` forward in eval mode with hooks; biases, norms,
    activations and pooling are not counted. ``in_channels`` defaults to the first conv's.
    """
    if in_channels is None:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        in_channels = convs[0].in_channels if convs else 1
    macs = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        per_image = out.numel() // out.shape[0]
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs += per_image * (module.in_channels // module.groups) * k
        else:
            macs += per_image * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    p = next(model.parameters(), None)
    x = torch.zeros(
        1,
        in_channels,
        _IMAGE_SIZE,
        _IMAGE_SIZE,
        device=p.device if p is not None else "cpu",
        dtype=p.dtype if p is not None else torch.float32,
    )
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return 2 * macs


# --------------------------------------------------------------------------------------
# Shared validation helpers
# --------------------------------------------------------------------------------------


def _check_prob(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must be a probability in [0, 1); got {value!r}.")
    return float(value)


def _check_widths(what: str, value: Any) -> tuple[int, ...]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
    if ok:
        ok = all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value)
    if not ok:
        raise ConfigError(
            f"{what} must be a non-empty tuple of positive ints, e.g. (32, 64, 128); got {value!r}."
        )
    return tuple(value)


def _check_choice(what: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


# --------------------------------------------------------------------------------------
# Keras tutorial baselines: layer for layer, Keras initializers and BatchNorm defaults
# --------------------------------------------------------------------------------------


class KerasFlatten(nn.Module):
    """Keras' channels-last ``Flatten``: (B, C, H, W) -> (B, H*W*C), so Dense weights match."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)  # (B, H*W*C)


class KerasNet(nn.Module):
    """A Keras ``Sequential`` CNN: a conv stack, a channels-last flatten, a dense head."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.flatten = KerasFlatten()
        self.head = head
        for m in self.modules():  # Keras defaults: glorot_uniform kernels, zero biases
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, H, W)
        x = self.flatten(x)  # (B, H*W*C)
        return self.head(x)  # (B, num_classes)


def _keras_bn(channels: int) -> nn.BatchNorm2d:
    """Keras BatchNormalization defaults: momentum 0.99 (PyTorch 0.01), epsilon 1e-3."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


@register_model("baseline-dropout", "Keras tutorial: 2 conv, dropout 0.3, dense 128 (90.8% test)")
def baseline_dropout(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Conv32-pool-Conv64-pool-Dropout(0.3)-Dense128-Dense; 225,034 Keras params."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 13, 13)
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 5, 5)
    )  # fmt: skip
    head = nn.Sequential(
        nn.Dropout(0.3), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, num_classes)
    )
    return KerasNet(features, head)


@register_model("baseline-batchnorm", "Keras tutorial: input BN, 2 same-conv+BN+dropout (no acc.)")
def baseline_batchnorm(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """BN-Conv32-pool-drop-BN-Conv32-pool-drop-Dense128-drop-Dense; 211,822 Keras params."""
    features = nn.Sequential(
        _keras_bn(in_channels),
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 14, 14)
        nn.Dropout(0.25),
        _keras_bn(32),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
        nn.Dropout(0.25),
    )  # fmt: skip
    head = nn.Sequential(
        nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)
    )
    return KerasNet(features, head)


@register_model("baseline-3conv", "Keras tutorial: 3 conv 32/64/64, dense 128 (~91% test)")
def baseline_3conv(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Conv32-pool-Conv64-pool-Conv64-Dense128-Dense; 130,890 Keras params."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 13, 13)
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 5, 5)
        nn.Conv2d(64, 64, 3), nn.ReLU(),  # (B, 64, 3, 3)
    )  # fmt: skip
    head = nn.Sequential(nn.Linear(64 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, num_classes))
    return KerasNet(features, head)


@register_model("baseline-wide-dense", "Keras tutorial: conv 16/64, dense 64/32 (~92% val)")
def baseline_wide_dense(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Conv16-Conv64-MaxPool(3, stride 2)-Dense64-Dense32-Dense; 507,530 Keras params."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3), nn.ReLU(),  # (B, 16, 26, 26)
        nn.Conv2d(16, 64, 3), nn.ReLU(),  # (B, 64, 24, 24)
        nn.MaxPool2d(3, stride=2),  # (B, 64, 11, 11)
    )  # fmt: skip
    head = nn.Sequential(
        nn.Linear(64 * 11 * 11, 64), nn.ReLU(),
        nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, num_classes),
    )  # fmt: skip
    return KerasNet(features, head)


@register_model("baseline-small", "Keras tutorial: 2 conv 32/64, dense 64 (90.3% test)")
def baseline_small(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Conv32-pool-Conv64-pool-Dense64-Dense; 121,930 Keras params."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 13, 13)
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 5, 5)
    )  # fmt: skip
    head = nn.Sequential(nn.Linear(64 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, num_classes))
    return KerasNet(features, head)


# --------------------------------------------------------------------------------------
# fastnet: airbench / ResNet-9 style speedrun net sized for 28x28 on a CPU
# --------------------------------------------------------------------------------------


def _conv_bn_act(c_in: int, c_out: int, act: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), _ACTIVATIONS[act]()
    )


class PatchWhitening(nn.Module):
    """Frozen k x k conv whose filters whiten the data's patches (airbench's stem).

    ``init_from_data`` sets the filters to the eigenvectors of the patch covariance
    scaled by 1/sqrt(eigenvalue) and their negatives (2*C*k*k channels), so after a ReLU
    the stem passes on every patch direction at unit variance from the first step. The
    filters stay fixed; the bias trains unless ``train_bias`` is False. Untouched, the
    filters are a random frozen conv.
    """

    def __init__(self, in_channels: int, kernel: int, eps: float = 5e-4,
                 train_bias: bool = True) -> None:
        super().__init__()
        dim = in_channels * kernel * kernel
        self.conv = nn.Conv2d(in_channels, 2 * dim, kernel, padding=kernel // 2)
        self.conv.weight.requires_grad_(False)
        # a frozen bias too: nothing before the first block trains, so backward stops at
        # block 1's conv and skips its input gradient (a sixth of a step's FLOPs)
        self.conv.bias.requires_grad_(train_bias)
        self.eps = eps

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """``images``: (N, C, H, W) normalized training images (a few thousand suffice)."""
        weight = self.conv.weight  # (2D, C, k, k)
        c, k = weight.shape[1], weight.shape[2]
        patches = _patches(images.float(), k).double()  # (N*L, D)
        cov = patches.T @ patches / len(patches)  # (D, D)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)[:, None])
        filters = filters.flip(0).reshape(-1, c, k, k)  # (D, C, k, k), largest first
        weight.copy_(torch.cat([filters, -filters]).to(weight.dtype))
        self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, 2*C*k*k, H, W)


def _patches(images: torch.Tensor, k: int) -> torch.Tensor:
    """(N*L, C*k*k) every k x k patch (no padding) of (N, C, H, W) ``images``, rows and
    columns in ``nn.functional.unfold``'s order: the same matrix, copied from k*k*C shifted
    views, because unfold's first call on two threads of a busy CPU took 10-35 s."""
    n, c, h, w = images.shape
    oh, ow = h - k + 1, w - k + 1
    views = [images[:, ch, i:i + oh, j:j + ow] for ch in range(c) for i in range(k)
             for j in range(k)]
    return torch.stack(views, dim=-1).reshape(-1, c * k * k)  # (N*oh*ow, C*k*k)


class FastBlock(nn.Module):
    """conv -> maxpool 2 -> BN -> act, then optionally x + act(BN(conv(x)))."""

    def __init__(self, c_in: int, c_out: int, act: str, residual: bool,
                 ceil_pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, ceil_mode=ceil_pool)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = _ACTIVATIONS[act]()
        self.residual = _conv_bn_act(c_out, c_out, act) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.pool(self.conv(x))))  # (B, C_out, H/2, W/2)
        if self.residual is not None:
            x = x + self.residual(x)  # (B, C_out, H/2, W/2)
        return x


class FastNet(nn.Module):
    """Narrow 28x28 stem, then blocks halving the resolution (28->14->7->3), global pool."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        widths: tuple[int, ...],
        stem_width: int,
        stem: str,
        residual: tuple[bool, ...],
        act: str,
        pool: str,
        dropout: float,
        logit_scale: float,
        zero_init_residual: bool,
        ceil_pool: bool,
    ) -> None:
        super().__init__()
        if stem.startswith("whiten"):
            whiten = PatchWhitening(in_channels, 3, train_bias=stem == "whiten")
            self.stem = nn.Sequential(whiten, _ACTIVATIONS[act]())
            stem_width = whiten.out_channels
        else:
            self.stem = _conv_bn_act(in_channels, stem_width, act)
        chans = (stem_width, *widths)
        self.blocks = nn.Sequential(
            *(FastBlock(chans[i], chans[i + 1], act, residual[i], ceil_pool)
              for i in range(len(widths)))
        )
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], num_classes)
        self.logit_scale = logit_scale
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # residual branches start at zero: blocks are plain convs
            for b in self.blocks:
                if b.residual is not None:
                    nn.init.zeros_(b.residual[1].weight)

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialization before training (the whitening stem, if any)."""
        if isinstance(self.stem[0], PatchWhitening):
            self.stem[0].init_from_data(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, stem_width, 28, 28)
        x = self.blocks(x)  # (B, widths[-1], 28 / 2**n, 28 / 2**n)
        x = x.amax(dim=(2, 3)) if self.pool == "max" else x.mean(dim=(2, 3))  # (B, C)
        x = self.head(self.dropout(x))  # (B, num_classes)
        return x * self.logit_scale if self.logit_scale != 1.0 else x


def _fastnet(
    num_classes: int,
    in_channels: int,
    widths: Sequence[int],
    stem_width: int,
    stem: str,
    residual: bool | Sequence[bool] | None,
    act: str,
    pool: str,
    dropout: float,
    logit_scale: float,
    zero_init_residual: bool,
    ceil_pool: bool,
) -> FastNet:
    widths = _check_widths("fastnet widths", widths)
    if len(widths) > 4:
        raise ConfigError(
            f"fastnet widths {widths!r} has {len(widths)} blocks; each halves 28x28, "
            "so use at most 4 (28->14->7->3->1)."
        )
    if residual is None:  # all but the first: keeps the default near 28 MFLOPs
        residual = (False,) + (True,) * (len(widths) - 1)
    elif isinstance(residual, bool):
        residual = (residual,) * len(widths)
    if (
        not isinstance(residual, Sequence)
        or len(residual) != len(widths)
        or not all(isinstance(r, bool) for r in residual)
    ):
        raise ConfigError(
            f"fastnet residual must be None, a bool or one bool per block ({len(widths)} for "
            f"widths={widths}); got {residual!r}."
        )
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, int | float):
        raise ConfigError(f"fastnet logit_scale must be a number; got {logit_scale!r}.")
    return FastNet(
        num_classes=num_classes,
        in_channels=in_channels,
        widths=widths,
        stem_width=_check_positive_int("fastnet stem_width", stem_width),
        stem=_check_choice("fastnet stem", stem, ("conv", "whiten", "whiten-frozen")),
        residual=tuple(residual),
        act=_check_choice("fastnet act", act, tuple(_ACTIVATIONS)),
        pool=_check_choice("fastnet pool", pool, ("max", "avg")),
        dropout=_check_prob("fastnet dropout", dropout),
        logit_scale=float(logit_scale),
        zero_init_residual=bool(zero_init_residual),
        ceil_pool=bool(ceil_pool),
    )


@register_model("fastnet", "fast CPU net: 16-ch stem, 3 conv-pool-BN blocks 32/64/128")
def fastnet(
    num_classes: int = 10,
    in_channels: int = 1,
    widths: tuple[int, ...] = (32, 64, 128),  # channels per block; each block halves H, W
    stem_width: int = 16,  # channels of the full-resolution stem conv (the costly layer)
    stem: str = "conv",  # "conv" (conv-BN-act) | "whiten": frozen 3x3 patch whitening, 18 ch
    # (trained bias) | "whiten-frozen": bias frozen at 0 too, no gradient into the stem
    residual: bool | tuple[bool, ...] | None = None,  # residual conv per block; None: all but 1st
    act: str = "relu",  # "relu" | "gelu"
    pool: str = "max",  # global pooling before the head: "max" | "avg"
    dropout: float = 0.0,  # before the linear head
    logit_scale: float = 1.0,  # airbench-style fixed logit multiplier (e.g. 1/9)
    zero_init_residual: bool = False,  # zero the residual branch's BN gamma
    ceil_pool: bool = False,  # max-pool 7x7 -> 4x4, not 3x3: keep the last row and column
) -> nn.Module:
    """Airbench/ResNet-9 style: conv -> maxpool -> BN -> act blocks, global max pool."""
    return _fastnet(**locals())


@register_model("fastnet-wide", "fastnet at 64/128/256 with a 32-ch stem (about 4x the FLOPs)")
def fastnet_wide(
    num_classes: int = 10,
    in_channels: int = 1,
    widths: tuple[int, ...] = (64, 128, 256),
    stem_width: int = 32,
    stem: str = "conv",
    residual: bool | tuple[bool, ...] = True,
    act: str = "relu",
    pool: str = "max",
    dropout: float = 0.0,
    logit_scale: float = 1.0,
    zero_init_residual: bool = False,
    ceil_pool: bool = False,
) -> nn.Module:
    """The bigger fastnet preset: twice the width, residual conv in every block."""
    return _fastnet(**locals())


# --------------------------------------------------------------------------------------
# Pre-activation ResNet and Wide ResNet (He et al. 2016; Zagoruyko & Komodakis 2016)
# --------------------------------------------------------------------------------------


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 (-dropout) -BN-ReLU-conv3x3, plus identity or 1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))  # (B, C_in, H, W)
        skip = x if self.shortcut is None else self.shortcut(out)  # (B, C_out, H/s, W/s)
        out = self.conv1(out)  # (B, C_out, H/s, W/s)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))  # (B, C_out, H/s, W/s)
        return out + skip


class PreActResNet(nn.Module):
    """Stem conv, three stages of pre-activation blocks at 28/14/7, BN-ReLU, avg pool, linear."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        stem_width: int,
        stage_widths: tuple[int, int, int],
        blocks_per_stage: int,
        dropout: float,
        zero_init_residual: bool,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = stem_width
        for stage, c_out in enumerate(stage_widths):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(c_in, c_out, stride, dropout))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU()
        self.head = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.head.bias)
        if zero_init_residual:  # relu(0 * x + 0) = 0, so every branch starts at zero
            for b in self.blocks:
                nn.init.zeros_(b.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, stem_width, 28, 28)
        x = self.blocks(x)  # (B, C, 7, 7)
        x = self.relu(self.bn(x)).mean(dim=(2, 3))  # (B, C)
        return self.head(x)  # (B, num_classes)


_RESNET_DEPTHS = "8, 14, 20, 32, 44, 56, 110"
_WRN_DEPTHS = "10, 16, 22, 28, 40"


@register_model("resnet", "pre-activation ResNet (depth 6n+2, default 20, base width 16)")
def resnet(
    num_classes: int = 10,
    in_channels: int = 1,
    depth: int = 20,  # 6n+2: n pre-activation blocks per stage
    width: int = 16,  # channels of the first stage; stages use width, 2*width, 4*width
    zero_init_residual: bool = False,  # zero each block's last BN gamma
) -> nn.Module:
    """He et al. (2016) CIFAR pre-activation ResNet on 28x28: stages at 28, 14, 7."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"resnet depth must be 6n+2 ({_RESNET_DEPTHS}, ...); got {depth!r}.")
    width = _check_positive_int("resnet width", width)
    return PreActResNet(
        num_classes=num_classes,
        in_channels=in_channels,
        stem_width=width,
        stage_widths=(width, 2 * width, 4 * width),
        blocks_per_stage=(depth - 2) // 6,
        dropout=0.0,
        zero_init_residual=bool(zero_init_residual),
    )


@register_model("wide-resnet", "Wide ResNet WRN-d-k (default WRN-16-4) for 28x28 inputs")
def wide_resnet(
    num_classes: int = 10,
    in_channels: int = 1,
    depth: int = 16,  # 6n+4: n blocks per stage
    widen: int = 4,  # k: stages use 16k, 32k, 64k channels
    dropout: float = 0.0,  # between the two convs of each block (the paper uses 0.3)
    zero_init_residual: bool = False,  # zero each block's last BN gamma
) -> nn.Module:
    """Zagoruyko & Komodakis (2016) with a 16-channel stem and stages at 28, 14, 7."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"wide-resnet depth must be 6n+4 ({_WRN_DEPTHS}, ...); got {depth!r}.")
    widen = _check_positive_int("wide-resnet widen", widen)
    return PreActResNet(
        num_classes=num_classes,
        in_channels=in_channels,
        stem_width=16,
        stage_widths=(16 * widen, 32 * widen, 64 * widen),
        blocks_per_stage=(depth - 4) // 6,
        dropout=_check_prob("wide-resnet dropout", dropout),
        zero_init_residual=bool(zero_init_residual),
    )


# --------------------------------------------------------------------------------------
# small: under 50,000 parameters (issue 16), for phones, browsers and int8 ONNX files
# --------------------------------------------------------------------------------------


def _separable(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1 (MobileNet): 9*c_in + c_in*c_out weights
    instead of 9*c_in*c_out."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
    )


def _small_conv(c_in: int, c_out: int, separable: bool) -> nn.Module:
    if separable:
        return _separable(c_in, c_out)
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)


class SmallBlock(nn.Module):
    """conv -> maxpool 2 -> BN -> ReLU, then optionally x + ReLU(BN(conv(x)))."""

    def __init__(self, c_in: int, c_out: int, residual: bool, separable: bool) -> None:
        super().__init__()
        self.conv = _small_conv(c_in, c_out, separable)
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()
        self.residual = nn.Sequential(
            _small_conv(c_out, c_out, separable), nn.BatchNorm2d(c_out), nn.ReLU()
        ) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.pool(self.conv(x))))  # (B, C_out, H/2, W/2)
        if self.residual is not None:
            x = x + self.residual(x)  # (B, C_out, H/2, W/2)
        return x


class FixedWhitening(PatchWhitening):
    """:class:`PatchWhitening` whose filters are a buffer, not a frozen parameter: constants
    set from the data (like BN statistics), so every parameter of the model trains."""

    def __init__(self, in_channels: int, kernel: int) -> None:
        super().__init__(in_channels, kernel)
        weight = self.conv.weight.detach().clone()
        del self.conv.weight
        self.conv.register_buffer("weight", weight)  # same state_dict key as the parameter


class SmallNet(nn.Module):
    """Frozen 3x3 patch-whitening stem (set from the data), blocks halving the resolution
    (28->14->7->3), global max pool, linear head."""

    def __init__(self, *, num_classes: int, in_channels: int, widths: tuple[int, ...],
                 residual: tuple[bool, ...], separable: bool) -> None:
        super().__init__()
        whiten = FixedWhitening(in_channels, 3)
        self.stem = nn.Sequential(whiten, nn.ReLU())
        chans = (whiten.out_channels, *widths)
        self.blocks = nn.Sequential(*(
            SmallBlock(chans[i], chans[i + 1], residual[i], separable)
            for i in range(len(widths))
        ))
        self.head = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and isinstance(m.weight, nn.Parameter):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening stem from normalized training images (N, C, H, W)."""
        self.stem[0].init_from_data(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, widths[-1], 28 / 2**n, 28 / 2**n)
        return self.head(x.amax(dim=(2, 3)))  # (B, num_classes)


@register_model("small", "under 50k params: fixed whitening stem, convs 24/48/72",
                family="fastnet")
def small(
    num_classes: int = 10,
    in_channels: int = 1,
    widths: tuple[int, ...] = (24, 48, 72),  # channels per block; each block halves H, W
    residual: bool | tuple[bool, ...] = False,  # residual conv per block (or one for all)
    separable: bool = False,  # depthwise-separable convs (MobileNet) instead of full 3x3
) -> nn.Module:
    """fastnet's shape at under half its weights: 46,396 parameters (plus the 162 fixed
    whitening weights), 13.5 MFLOPs per image.

    ``separable=True`` with wider blocks, e.g. widths (48, 96, 192) and residual
    (True, True, False), also fits (41,086 parameters, 7.8 MFLOPs) but a training step ran
    1.9x slower than the default's, side by side on the busy 2-core machine (depthwise
    convs are memory-bound), so it was not trained to the end."""
    widths = _check_widths("small widths", widths)
    if len(widths) > 4:
        raise ConfigError(f"small widths {widths!r}: at most 4 blocks (28->14->7->3->1).")
    if isinstance(residual, bool):
        residual = (residual,) * len(widths)
    if len(residual) != len(widths) or not all(isinstance(r, bool) for r in residual):
        raise ConfigError(f"small residual must be a bool or one bool per block "
                          f"({len(widths)}); got {residual!r}.")
    return SmallNet(num_classes=num_classes, in_channels=in_channels, widths=widths,
                    residual=tuple(residual), separable=bool(separable))


# --------------------------------------------------------------------------------------
# ensemble: built by `fmnist ensemble` from trained runs (fmnist.ensemble), not listed
# --------------------------------------------------------------------------------------


@register_model("ensemble", "mean of member models' probabilities (fmnist ensemble)",
                family="custom", listed=False)
def ensemble(
    num_classes: int = 10,
    in_channels: int = 1,
    members: tuple[dict[str, Any], ...] = (),  # {"arch", "arch_kwargs", "temperature"} each
) -> nn.Module:
    """Several trained models as one (see :class:`fmnist.ensemble.EnsembleNet`)."""
    from .ensemble import EnsembleNet

    return EnsembleNet.from_specs(members, num_classes=num_classes, in_channels=in_channels)
