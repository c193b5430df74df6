"""Model attribution with plain torch hooks: Grad-CAM, first-layer filters, feature maps.

Every function leaves the model as it found it: hooks are removed in ``finally``,
training/eval flags are restored, parameters' ``requires_grad`` and ``.grad`` are never
touched (gradients are taken with ``torch.autograd.grad`` with respect to the
activations only, through a cloned input that requires grad).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = ["gradcam", "first_conv", "last_conv", "feature_maps"]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.PReLU,
    nn.Tanh,
    nn.Sigmoid,
)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore each submodule's own flag afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` of ``model`` in registration order."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ConfigError(f"{type(model).__name__} has no nn.Conv2d layer to inspect; pass layer=")


def last_conv(model: nn.Module, images: torch.Tensor) -> nn.Conv2d:
    """The last ``nn.Conv2d`` run on ``images`` whose output is larger than 1×1.

    Found by a forward pass with shape-recording hooks (execution order, not
    registration order), so it is the layer :func:`gradcam` uses by default.
    """
    seen: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    handles = [
        m.register_forward_hook(lambda mod, _i, out: seen.append((mod, tuple(out.shape))))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad(), _eval_mode(model):
            model(images[:1].to(_device(model)))
    finally:
        for h in handles:
            h.remove()
    for mod, shape in reversed(seen):
        if shape[-1] * shape[-2] > 1:
            return mod
    raise ConfigError(
        f"{type(model).__name__} has no nn.Conv2d with a spatial output larger than 1x1; "
        "pass layer= to choose the layer for Grad-CAM"
    )


def _check_gradcam_inputs(images: object, target: object) -> torch.Tensor | None:
    """``images`` must be (N, 1, H, W); ``target`` (if given) one class per image."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ConfigError(
            "gradcam expects a 4-D (N, 1, H, W) tensor of normalized images, got "
            f"shape {tuple(getattr(images, 'shape', ()))}"
        )
    if target is None:
        return None
    n = images.shape[0]
    target = torch.as_tensor(target).reshape(-1)
    if target.shape[0] != n:
        raise ConfigError(
            f"gradcam target needs one class per image ({n}), got {target.shape[0]}"
        )
    return target


def _cam_from(acts: torch.Tensor, grads: torch.Tensor | None, size: torch.Size) -> torch.Tensor:
    """``ReLU(sum_k alpha_k A_k)`` upsampled to ``size`` and scaled to [0, 1] per image
    (all zeros where there is no positive evidence)."""
    a = acts.detach()  # (N, K, h, w)
    if grads is None:
        grads = torch.zeros_like(a)
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    cam = F.relu((alpha * a).sum(dim=1, keepdim=True))  # (N, 1, h, w)
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)
    n = cam.shape[0]
    flat = cam.reshape(n, -1)
    lo = flat.min(dim=1).values.view(n, 1, 1)
    span = flat.max(dim=1).values.view(n, 1, 1) - lo
    return torch.where(span > 1e-12, (cam - lo) / span.clamp_min(1e-12), torch.zeros_like(cam))


def _first_output_hook(acts: list[torch.Tensor]):
    """A forward hook that keeps the layer's first (N, K, h, w) output in ``acts``."""

    def keep(_m: nn.Module, _i: object, out: object) -> None:
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ConfigError(
                f"Grad-CAM layer {type(_m).__name__} must output a (N, K, h, w) tensor, got "
                f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
            )
        if not acts:  # a layer called twice (weight sharing): explain its first use
            acts.append(out)

    return keep


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor | None = None,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] for normalized ``images`` ``(N, 1, H, W)``.

    ``cam = ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of
    ``d score_target / d A_k``, where ``A`` is the output of ``layer`` (default: the last
    ``nn.Conv2d`` with a spatial output larger than 1×1; with an in-place activation
    right after it, ``A`` is the activated output). ``target`` defaults to the predicted
    class; the score is the model output (logit) for it. Maps are upsampled bilinearly
    to the input size and scaled to [0, 1] per image; a map with no positive evidence
    is all zeros. The model runs in eval mode and is restored afterwards.
    """
    target = _check_gradcam_inputs(images, target)
    device = _device(model)
    if layer is None:
        layer = last_conv(model, images)
    acts: list[torch.Tensor] = []
    handle = layer.register_forward_hook(_first_output_hook(acts))
    try:
        with torch.inference_mode(False), torch.enable_grad(), _eval_mode(model):
            x = images.detach().to(device).clone().requires_grad_(True)
            logits = model(x)
            if not acts:
                raise ConfigError(
                    f"Grad-CAM layer {type(layer).__name__} was not run by the model's forward"
                )
            tgt = logits.argmax(dim=1) if target is None else target.to(logits.device).long()
            score = logits.gather(1, tgt.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, acts[0], allow_unused=True)
            cam = _cam_from(acts[0], grads, images.shape[-2:])
    finally:
        handle.remove()
    return cam.detach().float().cpu().numpy()


def _following_activation(model: nn.Module, layer: nn.Module) -> nn.Module | None:
    """The leaf module registered right after ``layer``, if it is an activation."""
    leaves = [m for m in model.modules() if not list(m.children())]
    for i, m in enumerate(leaves[:-1]):
        if m is layer and isinstance(leaves[i + 1], _ACTIVATIONS):
            return leaves[i + 1]
    return None


def feature_maps(
    model: nn.Module, image: torch.Tensor, layer: nn.Module | None = None
) -> np.ndarray:
    """Activation maps ``(C, H, W)`` of ``layer`` (default: the first conv) for one image.

    ``image`` is a normalized ``(1, H, W)`` (or ``(H, W)`` / ``(1, 1, H, W)``) tensor. When
    the module registered right after ``layer`` is an activation (e.g. ``nn.ReLU`` in an
    ``nn.Sequential``), its output is returned, i.e. the maps after the non-linearity.
    """
    x = torch.as_tensor(image).detach()
    while x.ndim < 4:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ConfigError(f"feature_maps expects one image (1, H, W), got {tuple(image.shape)}")
    layer = first_conv(model) if layer is None else layer
    act = _following_activation(model, layer)
    got: dict[str, torch.Tensor] = {}

    def on_layer(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        if "layer" not in got:
            got["layer"] = out.detach().clone()  # clone: an in-place activation follows

    def on_act(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        if "layer" in got and "act" not in got:
            got["act"] = out.detach().clone()

    handles = [layer.register_forward_hook(on_layer)]
    if act is not None:
        handles.append(act.register_forward_hook(on_act))
    try:
        with torch.no_grad(), _eval_mode(model):
            model(x.to(_device(model)))
    finally:
        for h in handles:
            h.remove()
    if "layer" not in got:
        raise ConfigError(f"layer {type(layer).__name__} was not run by the model's forward")
    out = got.get("act", got["layer"])
    if out.shape != got["layer"].shape:
        out = got["layer"]
    if out.ndim != 4:
        raise ConfigError(
            f"layer {type(layer).__name__} output is not (1, C, H, W): {tuple(out.shape)}"
        )
    return out[0].float().cpu().numpy()
