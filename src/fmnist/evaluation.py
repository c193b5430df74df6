"""Batched prediction over uint8 image arrays: the one path from pixels to probabilities.

Training (validation each epoch), ``fmnist evaluate``, the report and the torch Predictor
all go through :func:`predict_probs`, so normalization (:func:`normalize`), precision and
test-time augmentation (:func:`tta_probs`) are the same everywhere. A run folder is
brought back by :class:`fmnist.runs.Run`, which calls into this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from .devices import autocast
from .errors import ConfigError
from .metrics import compute_metrics
from .ood import feature_tap

BATCH_SIZE = 1024  # images per forward pass; one value, so every path rounds alike
# test-time augmentation: the (dy, dx) pixel shifts whose views are averaged, each with its
# mirror image; a recipe chooses them (Recipe.tta_shifts) and its model keeps them
# (ModelMeta.tta_shifts), so predict, serve and ONNX average the views it was calibrated on
Shifts = tuple[tuple[int, int], ...]
FLIP_ONLY: Shifts = ((0, 0),)


def check_shifts(value: Any, what: str = "tta_shifts") -> Shifts:
    """``value`` as a tuple of (dy, dx) integer pairs, each within +-3 pixels, the unshifted
    view first; ConfigError naming ``what`` otherwise. Lists (from JSON) are accepted."""
    def pair(v: Any) -> tuple[int, int] | None:
        if not isinstance(v, list | tuple) or len(v) != 2:
            return None
        if not all(isinstance(c, int) and not isinstance(c, bool) and abs(c) <= 3 for c in v):
            return None
        return int(v[0]), int(v[1])

    pairs = [pair(v) for v in value] if isinstance(value, list | tuple) else [None]
    if not pairs or None in pairs or pairs[0] != (0, 0) or len(set(pairs)) != len(pairs):
        raise ConfigError(
            f"{what}={value!r} is invalid; expected distinct (dy, dx) pixel shifts within +-3, "
            "the first (0, 0), e.g. ((0, 0), (1, 0), (-1, 0)).")
    return tuple(pairs)  # type: ignore[return-value]


def normalize(x_uint8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(B, 28, 28) or (B, 1, 28, 28) uint8 -> (B, 1, 28, 28) float ``(x / 255 - mean) / std``:
    the model's input, the one place this formula is written."""
    x = x_uint8.float() / 255.0  # not in place: a float input (the ONNX graph's) is kept
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return (x - mean) / std


def predict_probs(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    channels_last: bool = True,
    batch_size: int = BATCH_SIZE,
    tta: bool = False,
    tta_shifts: Shifts = FLIP_ONLY,
    temperature: float = 1.0,
) -> np.ndarray:
    """Class probabilities (N, C) float64 for uint8 images (N, 28, 28) or (N, 1, 28, 28).

    With ``tta`` the probabilities are averaged over the views shifted by ``tta_shifts``
    and their mirror images (:func:`tta_probs`); ``temperature`` divides the logits of
    every view (:mod:`fmnist.calibration`)."""
    return predict_scored(model, images, mean=mean, std=std, device=device, bf16=bf16,
                          channels_last=channels_last, batch_size=batch_size, tta=tta,
                          tta_shifts=tta_shifts, temperature=temperature)[0]


@torch.no_grad()
def predict_scored(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    channels_last: bool = True,
    batch_size: int = BATCH_SIZE,
    tta: bool = False,
    tta_shifts: Shifts = FLIP_ONLY,
    temperature: float = 1.0,
    scorer: nn.Module | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`predict_probs` plus, with a ``scorer`` (:class:`fmnist.ood.OodScorer`), the
    (N,) out-of-distribution score of each image, from the same forward pass of the
    un-augmented view (None without a scorer)."""
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    data = torch.as_tensor(images)
    scores: list[np.ndarray] = []
    plain: list[torch.Tensor] = []  # the batch's un-augmented view

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, bf16):
            logits = model(x.contiguous(memory_format=memory_format))
        if scorer is not None and x is plain[0]:
            s = scorer.to(device)(tap[0], logits)
            scores.append(s.double().cpu().numpy())
        # float64, as calibration does: at a small temperature float32 saturates to exact
        # one-hots, and two views that disagree then tie at 0.5/0.5, so argmax (accuracy)
        # would depend on rounding rather than on the model
        return torch.softmax(logits.double() / temperature, dim=1)

    was_training = model.training
    model.eval()
    outs: list[np.ndarray] = []
    try:
        with feature_tap(model) if scorer is not None else nullcontext([]) as tap:
            for start in range(0, len(data), batch_size):
                x = normalize(data[start : start + batch_size].to(device), mean, std)
                plain[:] = [x]
                probs = (tta_probs(forward, x, shifts=tta_shifts) if tta
                         else forward(x).double().cpu().numpy())
                outs.append(np.asarray(probs, dtype=np.float64))
    finally:
        model.train(was_training)
    probs = np.concatenate(outs) if outs else np.zeros((0, 0))
    if scorer is None:
        return probs, None
    return probs, np.concatenate(scores) if scores else np.zeros(0)


def metrics_from_probs(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...] | list[str],
    *,
    seconds: float,
    tta: bool,
    bf16: bool,
    device: torch.device | str,
) -> dict[str, Any]:
    """The metrics of a split (:func:`fmnist.metrics.compute_metrics`) plus how they were
    computed (TTA, precision, device, seconds, images per second); JSON-serialisable."""
    metrics = compute_metrics(probs, labels, list(classes))
    metrics.update({
        "tta": tta,
        "precision": "bf16" if bf16 else "fp32",
        "device": str(device),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(labels) / max(seconds, 1e-9), 1),
    })
    return metrics


# --------------------------------------------------------------------------- TTA


def _shift(x: torch.Tensor, dy: int, dx: int, fill: torch.Tensor) -> torch.Tensor:
    """Shift ``x`` (N, C, H, W) by (dy, dx) pixels (down/right positive), filling with ``fill``.

    ``fill`` is broadcastable to ``x`` (e.g. one value per image, shape (N, 1, 1, 1)).
    """
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    out = fill.expand_as(x).clone()
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(-dy, 0), h - max(dy, 0))
    dst_y = slice(max(dy, 0), h - max(-dy, 0))
    src_x = slice(max(-dx, 0), w - max(dx, 0))
    dst_x = slice(max(dx, 0), w - max(-dx, 0))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


def tta_probs(
    predict_fn: Callable[[torch.Tensor], np.ndarray | torch.Tensor],
    images_tensor: torch.Tensor,
    *,
    shifts: Sequence[tuple[int, int]] = FLIP_ONLY,
    flip: bool = True,
    fill: float | None = None,
) -> np.ndarray:
    """Test-time augmentation: mean of ``predict_fn`` over shifted (and flipped) views.

    ``predict_fn`` maps an ``(N, 1, H, W)`` tensor to ``(N, C)`` probabilities (numpy or
    torch). Each ``(dy, dx)`` in ``shifts`` moves the image by whole pixels (down/right
    positive) with constant padding, no wrap-around; with ``flip`` every shifted view is
    also scored left-right mirrored, so there are ``len(shifts) * 2`` views. ``fill`` is
    the padding value; ``None`` pads each image with its own minimum, which is the
    background both for raw [0, 1] images and for mean/std-normalized ones. The input
    tensor is not modified; ``predict_fn`` is called once per view, first with
    ``images_tensor`` itself when ``(0, 0)`` comes first.

    The default is the image and its mirror image (2 views): on a ``fast`` model, trained
    with flips only, they score 92.88% against 92.63% for flips x 1-px shifts (10 views,
    5x the forward passes) and 92.45% for one view (``benchmarks/tta.py``). A model
    trained with shifts gains from shifted views (``accurate``: ``Recipe.tta_shifts``).
    """
    if not isinstance(images_tensor, torch.Tensor) or images_tensor.ndim != 4:
        shape = tuple(getattr(images_tensor, "shape", ()))
        raise ConfigError(
            "tta_probs expects a 4-D (N, 1, H, W) torch tensor of images, got "
            f"{type(images_tensor).__name__} with shape {shape}"
        )
    if len(shifts) == 0:
        raise ConfigError("tta_probs needs at least one shift, e.g. shifts=((0, 0),)")
    x = images_tensor
    if fill is None and any(s != (0, 0) for s in shifts):
        fill_t = x.amin(dim=(1, 2, 3), keepdim=True)
    else:
        fill_t = torch.full((1, 1, 1, 1), float(fill or 0.0), dtype=x.dtype, device=x.device)
    total: torch.Tensor | None = None
    n_views = 0
    with torch.no_grad():
        for dy, dx in shifts:
            shifted = _shift(x, int(dy), int(dx), fill_t)
            views = [shifted, torch.flip(shifted, dims=(-1,))] if flip else [shifted]
            for view in views:
                p = torch.as_tensor(predict_fn(view)).detach().to("cpu", torch.float64)
                total = p if total is None else total + p
                n_views += 1
    assert total is not None
    return (total / n_views).numpy()
