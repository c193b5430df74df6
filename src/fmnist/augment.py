"""Batched tensor augmentations that run on the training device.

Each augmentation takes a float batch ``x`` of shape (B, 1, H, W) in [0, 1] (0 is the
dataset's black background) and a ``torch.Generator`` on the same device, and returns a
batch of the same shape. No per-sample Python loop: a whole batch costs a few tensor ops.

Augmentations are named in recipes as strings, ``"name"`` or ``"name:param"``, e.g.
``("flip", "translate:2", "erase")``; :func:`build_augment` turns such a tuple into one
callable. A few augmentations (``altflip``) also depend on which images the batch holds and
the epoch: they read a :class:`BatchPlace`, which the training loop passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .registry import Registry

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class BatchPlace:
    """Where a batch sits in a run: what an augmentation that is a function of the image
    and the epoch (not of the epoch's generator alone) reads. All three are restored on
    resume (the index from the seeded epoch permutation), so such augmentations resume
    exactly."""

    index: torch.Tensor  # (B,) the images' positions in the training split
    epoch: int  # 1-based
    seed: int  # the run's seed


AUGMENTATIONS: Registry[Callable[[float | None], Augment]] = Registry("augmentation")


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


@AUGMENTATIONS.register("flip")
def flip(p: float | None = None) -> Augment:
    """Horizontal flip with probability ``p`` (default 0.5). Garments are mirror-symmetric."""
    prob = 0.5 if p is None else p

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=gen, device=x.device) < prob
        return torch.where(mask[:, None, None, None], x.flip(-1), x)

    return apply


def _hash32(values: torch.Tensor) -> torch.Tensor:
    """A well-mixed 32-bit integer hash of int64 ``values`` (every product stays < 2**60)."""
    h = values & 0xFFFFFFFF
    for _ in range(2):
        h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    return (h >> 16) ^ h


def _placed(augment: Callable[..., torch.Tensor]) -> Augment:
    augment.needs_place = True  # type: ignore[attr-defined]  # build_augment passes a BatchPlace
    return augment


@AUGMENTATIONS.register("altflip")
def altflip(p: float | None = None) -> Augment:
    """Alternating flips (airbench): in epoch 1 each image is mirrored with probability
    ``p`` (default 0.5), drawn from a hash of the seed and its index; in every later epoch
    exactly when it was not in the epoch before. Every image is seen both ways in two
    epochs, instead of by chance."""
    prob = 0.5 if p is None else p

    def apply(x: torch.Tensor, gen: torch.Generator, place: BatchPlace | None = None
              ) -> torch.Tensor:
        if place is None:
            raise ValueError("altflip needs the batch's image indices and epoch (BatchPlace)")
        index = place.index.to(device=x.device, dtype=torch.int64)
        salt = (place.seed * 0x9E3779B1) & 0xFFFFFFFF
        first = _hash32(index * 2 + 1 + salt) < prob * 2**32
        mask = first ^ ((place.epoch - 1) % 2 == 1)
        return torch.where(mask[:, None, None, None], x.flip(-1), x)

    return _placed(apply)


@AUGMENTATIONS.register("translate")
def translate(pixels: float | None = None) -> Augment:
    """Random shift of up to ``pixels`` (default 2) in x and y, zero padding (pad + crop)."""
    r = int(2 if pixels is None else pixels)

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        padded = F.pad(x, (r, r, r, r))  # (B, C, H+2r, W+2r)
        dy = torch.randint(0, 2 * r + 1, (b,), generator=gen, device=x.device)
        dx = torch.randint(0, 2 * r + 1, (b,), generator=gen, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B,1,H,1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B,1,1,W)
        idx_b = torch.arange(b, device=x.device)[:, None, None, None]
        idx_c = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[idx_b, idx_c, rows, cols]  # (B, C, H, W)

    return apply


@AUGMENTATIONS.register("erase")
def erase(p: float | None = None) -> Augment:
    """Random erasing (Zhong et al.): with probability ``p`` (default 0.5) blank a
    rectangle of 2-20% of the image with aspect 0.3-3.3, filled with zeros."""
    prob = 0.5 if p is None else p

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        area = _uniform(b, 0.02, 0.2, gen, dev) * h * w
        log_r = _uniform(b, math.log(0.3), math.log(1 / 0.3), gen, dev)
        ratio = torch.exp(log_r)
        eh = torch.sqrt(area * ratio).clamp(1, h).floor()
        ew = torch.sqrt(area / ratio).clamp(1, w).floor()
        y0 = (torch.rand(b, generator=gen, device=dev) * (h - eh + 1)).floor()
        x0 = (torch.rand(b, generator=gen, device=dev) * (w - ew + 1)).floor()
        ys = torch.arange(h, device=dev)[None, :]
        xs = torch.arange(w, device=dev)[None, :]
        in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])  # (B, H)
        in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])  # (B, W)
        apply_mask = torch.rand(b, generator=gen, device=dev) < prob
        mask = in_y[:, :, None] & in_x[:, None, :] & apply_mask[:, None, None]
        return x.masked_fill(mask[:, None], 0.0)

    return apply


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@AUGMENTATIONS.register("affine")
def affine(strength: float | None = None) -> Augment:
    """Photo-like geometry: scale 0.8-1.1, aspect ±15%, rotation ±10°, shift ±10% (all
    multiplied by ``strength``, default 1)."""
    s = 1.0 if strength is None else strength

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        scale = 1 + s * _uniform(b, -0.2, 0.1, gen, dev)
        aspect = torch.exp(s * _uniform(b, -0.15, 0.15, gen, dev))
        angle = s * _uniform(b, -10, 10, gen, dev) * math.pi / 180
        tx, ty = (s * _uniform(b, -0.1, 0.1, gen, dev) for _ in range(2))
        sx, sy = 1 / (scale * aspect), aspect / scale  # grid coords: inverse map
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([sx * cos, -sx * sin, tx], 1), torch.stack([sy * sin, sy * cos, ty], 1)],
            1,
        )
        return _affine(x, theta.to(x.dtype))

    return apply


@AUGMENTATIONS.register("photometric")
def photometric(strength: float | None = None) -> Augment:
    """Photo-like intensity: contrast 0.6-1.0, gamma 0.7-1.4, a light blur on 30% of the
    images, and line thickness changes (dilate/erode) on 30%."""
    s = 1.0 if strength is None else strength

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        contrast = 1 - s * _uniform(b, 0.0, 0.4, gen, dev)
        gamma = torch.exp(s * _uniform(b, math.log(0.7), math.log(1.4), gen, dev))
        x = (x.clamp(0, 1) ** gamma[:, None, None, None]) * contrast[:, None, None, None]
        kernel = torch.tensor([1.0, 2.0, 1.0], device=dev, dtype=x.dtype)
        kernel = (kernel[:, None] * kernel[None, :] / 16)[None, None]
        blurred = F.conv2d(x, kernel, padding=1)
        pick = torch.rand(b, generator=gen, device=dev)
        x = torch.where((pick < 0.3 * s)[:, None, None, None], blurred, x)
        thick = F.max_pool2d(x, 3, stride=1, padding=1)
        thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
        pick = torch.rand(b, generator=gen, device=dev)
        x = torch.where((pick < 0.15 * s)[:, None, None, None], thick, x)
        x = torch.where(((pick >= 0.15 * s) & (pick < 0.3 * s))[:, None, None, None], thin, x)
        return x

    return apply


def parse_augment(spec: str) -> tuple[str, float | None]:
    name, _, param = spec.partition(":")
    factory_name = name.strip()
    AUGMENTATIONS.get(factory_name)  # raises with the valid names
    if not param:
        return factory_name, None
    try:
        return factory_name, float(param)
    except ValueError:
        raise ConfigError(
            f"augmentation {spec!r}: parameter {param!r} is not a number (e.g. 'translate:2')."
        ) from None


def build_augment(specs: Sequence[str]) -> Augment | None:
    """One callable ``(x, gen, place=None)`` applying the named augmentations in order, or
    None for none; ``place`` (a :class:`BatchPlace`) goes to those that need it."""
    steps = [AUGMENTATIONS.get(name)(param) for name, param in map(parse_augment, specs)]
    if not steps:
        return None

    def apply(x: torch.Tensor, gen: torch.Generator, place: BatchPlace | None = None
              ) -> torch.Tensor:
        for step in steps:
            x = step(x, gen, place) if getattr(step, "needs_place", False) else step(x, gen)
        return x

    return apply
