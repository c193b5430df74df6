"""Photo-domain augmentation: random changes to a RAW photo, before preprocessing.

:mod:`fmnist.augment` changes the 28x28 result; real photos differ earlier: how the item is
framed, the light, the camera's blur and JPEG, the resolution. Sending a changed photo through
:func:`fmnist.preprocess.preprocess` also varies what segmentation makes of it, so one
training photo yields several different 28x28 views (``photo_data`` caches them).

:func:`augment_photo` draws everything from a ``numpy.random.Generator``: the same seed gives
the same photo. The label is never changed: no step cuts more than a few percent off a side
(photos frame their item) and none mirrors or turns the item upside down.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

CROP_KEEP: tuple[float, float] = (0.85, 1.0)
"""Each side of the random crop keeps this fraction of the photo (uniform)."""
ROTATE_DEG: float = 12.0
"""Largest rotation, either way; the corners are filled with the photo's border colour."""
ENHANCE: tuple[float, float] = (0.7, 1.3)
"""Range of the brightness and contrast factors (1: unchanged)."""
SATURATION: tuple[float, float] = (0.4, 1.4)
"""Range of the colour-saturation factor (0: grey)."""
BLUR_P: float = 0.3
"""Share of views blurred, with a Gaussian radius of 0.5-1.5 px at the working size."""
LIGHT_P: float = 0.4
"""Share of views under uneven light: a linear brightness ramp of +-15% across the photo."""
SIZE_RANGE: tuple[int, int] = (200, 512)
"""Longest side of the view (px): small web thumbnails up to preprocessing's working size."""
JPEG_P: float = 0.5
"""Share of views re-encoded as JPEG at quality 30-90."""


def _border_colour(rgb: np.ndarray) -> tuple[int, int, int]:
    edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return tuple(int(v) for v in np.median(edge, axis=0))


def _frame(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random crop (each side keeps CROP_KEEP), rotation and size: the photo's framing."""
    w, h = image.size
    kw, kh = (rng.uniform(*CROP_KEEP) for _ in range(2))
    left, top = rng.uniform(0, 1 - kw) * w, rng.uniform(0, 1 - kh) * h
    image = image.crop((round(left), round(top), round(left + kw * w), round(top + kh * h)))
    longest = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
    scale = min(1.0, longest / max(image.size))
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    angle = float(rng.uniform(-ROTATE_DEG, ROTATE_DEG))
    fill = _border_colour(np.asarray(image))
    return image.rotate(angle, Image.Resampling.BILINEAR, expand=False, fillcolor=fill)


def _light(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast, saturation; sometimes a brightness ramp (a lamp, a window)."""
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(*ENHANCE))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(*ENHANCE))
    image = ImageEnhance.Color(image).enhance(rng.uniform(*SATURATION))
    if rng.random() < LIGHT_P:
        w, h = image.size
        theta = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xs / w - 0.5) * math.cos(theta) + (ys / h - 0.5) * math.sin(theta)
        gain = 1 + 0.3 * ramp  # +-15% at the edges
        lit = np.asarray(image, np.float32) * gain[..., None]
        image = Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))
    return image


def _camera(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Optical blur and JPEG artefacts."""
    if rng.random() < BLUR_P:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    if rng.random() < JPEG_P:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(rng.integers(30, 91)))
        buf.seek(0)
        image = Image.open(buf)
        image.load()
    return image


def augment_photo(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random view of an RGB photo (same seed, same view), ready for ``preprocess``."""
    image = image.convert("RGB")
    return _camera(_light(_frame(image, rng), rng), rng)


def view_rng(seed: int, photo: int, view: int) -> np.random.Generator:
    """The generator of one view: independent of the order views are made in."""
    return np.random.default_rng([seed, photo, view])
