"""Any real photo -> a dataset-like 28x28 uint8 image -> a normalized 1x28x28 tensor.

Fashion-MNIST items are light garments on a black background whose longest side
fills the 28 px frame; a phone photo is a dark item on a light background, in colour,
off-centre, EXIF-rotated and thousands of pixels wide. :func:`preprocess` bridges the
gap and can return every intermediate step so a user sees what the model sees::

    load (defensive decode, EXIF, alpha, 16-bit, CMYK)
    -> grayscale (ITU-R 601 luma) at <= WORK_SIZE px
    -> background = median of the outer ring
    -> polarity: invert when the item is darker than the background
    -> item mask: Otsu on |image - background|, largest connected component(s)
    -> on a textured background: colour distance and GrabCut (``PreprocessOptions``)
    -> crop to the bbox -> pad to a square (black) -> resize to 28x28
    -> stretch so the brightest part is 255 and the background 0

A 28x28 input is taken to be dataset-like already and passes through untouched
(inverted only if its background is light), so a test image saved as PNG comes back
byte-identical.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageFilter, ImageFont, UnidentifiedImageError

from .errors import (
    ConfigError,
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Source = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

MAX_IMAGE_PIXELS: int = 40_000_000
"""Largest width*height accepted, checked from the header before any pixel is decoded."""
MAX_FILE_BYTES: int = 10 * 1024 * 1024
"""Largest encoded file accepted (10 MiB)."""

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "DIB", "TIFF")
"""Pillow decoders we let near user input (MPO: phone JPEGs with a multi-picture index)."""

SIZE: int = 28
"""Side of a dataset image."""
WORK_SIZE: int = 512
"""Longest side of the grayscale working image all analysis runs on."""

# How dataset items fill their frame, measured on the 10,000 test images with
#   PYTHONPATH=src python benchmarks/frame_fill.py        (threshold 0: any non-zero pixel)
# bbox longest side: 28 px in 98.3% of images (>= 27 px in 99.98%); the height is the longest
# side in 65% (tops, trousers, dresses, coats), the width in the rest (sandals, sneakers, boots,
# bags); bbox centre (13.5, 13.5) in the median (p5..p95 13.5..14.0), so items are centred by
# their bounding box, not by their centre of mass (that ranges 12.1..17.1 px); max intensity 255
# (p5 254), background exactly 0 (50% of all pixels). The dataset was made by scaling the
# longest side to 28 px and centring the short side -- we do the same.
FILL_LONGEST_PX: int = 28
"""Length of the item's longest bbox side in the output (no margin)."""
TARGET_MAX: int = 255
"""Brightest output pixel, like dataset items (median max 255)."""

PASSTHROUGH_LIGHT_RING: float = 128.0
"""A 28x28 input whose 1-px outer ring has a mean of at least this is an inverted item: invert
it back. Measured (same script, both splits): the ring mean is at most 107.5 over all 70,000
images (so every inverted one is >= 147.5); the ring *median* reaches 163 in two train images
whose item touches the whole border, hence the mean."""
RING_FRACTION: float = 0.02
"""Width of the outer ring used to estimate the background, as a fraction of the short side."""
MIN_CONTRAST: float = 12.0
"""Smallest item-vs-background difference (grey levels) that counts as an item."""
KEEP_COMPONENT_FRACTION: float = 0.1
"""Besides the largest component, keep those with at least this fraction of its area."""
PLAIN_RING_MAD: float = 4.0
"""A background whose outer ring varies by at most this (median absolute deviation, grey
levels: JPEG noise and soft gradients) is plain: the grey-level threshold is enough there,
so ``grabcut`` and ``colour`` (unless nothing stands out in grey) are skipped. Measured on
256 px thumbnails: web-dev's studio shots have a MAD of 0 in 75% and over 4 in 12% of
photos; clothing-dataset-small's home photos (floors, beds) over 4 in 98% (median 18)."""
GRABCUT_SIZE: int = 200
"""Longest side GrabCut runs at (its cost grows with pixels; the mask is upsampled back).
With GRABCUT_ITERATIONS, measured with ``fast`` on clothing-dataset-small validation/ through
the default steps (``benchmarks/photos.py``): 160 px x 4 rounds 131/277 right, 200 x 6
140/277; web-dev/ 110 and 111 of 157. CPU per photo: ``benchmarks/grabcut_cost.py``."""
GRABCUT_MARGIN: float = 0.05
"""GrabCut takes everything farther than this fraction of the short side from the border as
probably the item (the photo frames the item), the outer ring as surely background."""
GRABCUT_ITERATIONS: int = 6
"""GrabCut's colour-model / graph-cut rounds (see GRABCUT_SIZE)."""
SKIN_MAX_SHARE: float = 0.5
"""Skin-coloured pixels are dropped from the mask only when they are less than this share of
it; more means a skin-toned item (a tan shoe, a beige sweater), which is kept."""
ONE_SHOE_RATIO: float = 0.5
"""A second component at least this fraction of the largest one's area makes a pair."""
SIDE_VIEW_RATIO: float = 1.25
"""``side_view`` mirrors a wide item when its left third is this many times as tall as its
right third. Dataset shoes (train set, pixels > 30): the right third is the taller in 91.6% of
sandals, 99.7% of sneakers and 100% of ankle boots, on average 2.0x, 1.9x and 3.1x as tall."""
SOLID_FLOOR: float = 0.3
"""Least brightness of an item pixel (fraction of the peak) under ``solid``."""
TONE_MEDIAN: float = 0.67
"""Median brightness of an item pixel as a fraction of the image's peak in the dataset (train
set, pixels > 0, median over images: 0.67; per class 0.42 (sandal) .. 0.75)."""
TONE_PEAK_PERCENTILE: float = 99.0
"""``tone`` takes this percentile of the item as its peak, so a few specular pixels do not
set the scale."""
TONE_GAMMA_MIN: float = 0.25
"""Strongest brightening ``tone`` applies (it never darkens)."""
CUTOUT_LIGHT_LUMA: float = 200.0
"""A transparent-background cut-out is composited on white (like the dataset's studio photos)
unless the object's median luma is at least this; then on black, so it stays visible."""


@dataclass(frozen=True)
class PreprocessOptions:
    """The optional real-photo steps of :func:`preprocess`; each is measured on real photos
    with ``benchmarks/photos.py --variants`` and is on by default only if it pays."""

    colour: bool = False
    """On a textured background (or when no item stands out in grey), find the item by its
    colour distance from the background (RGB, scaled so a pure grey shift counts as itself),
    not by its grey level alone: a navy item on a red floor has about the same luma as the
    floor but a very different colour."""
    grabcut: bool = False
    """On a textured background (floor, bedding, a room), replace the threshold mask with
    GrabCut's: colour models of item and background (the border) separate what one
    grey-level threshold cannot. A plain background (studio, paper) keeps the threshold."""
    fill: bool = False
    """Close small gaps in the mask and fill its holes (a white sneaker on white keeps only
    its outline; a striped sweater only its stripes)."""
    skin: bool = False
    """Drop skin-coloured pixels (arms, legs, faces) from the mask unless most of it is."""
    one_shoe: bool = False
    """Of two similar-sized separate items side by side (a pair), keep the larger."""
    side_view: bool = False
    """Turn a wide item so its taller end is on the right, as dataset shoes point left."""
    solid: bool = False
    """Give every mask pixel at least SOLID_FLOOR of the peak, so an item as light as its
    background is not rendered black inside."""
    tone: bool = False
    """Gamma-correct the item so its median brightness is TONE_MEDIAN of its peak, like dataset
    items: a garment close to its background's grey is otherwise rendered dark and patchy.
    Off: it moves the items' median brightness to the dataset's but did not pay on real photos
    (``fast``, validation/: 132 vs 131 of 277 at GrabCut 160 px x 4, 135 vs 140 at 200 x 6)."""

    @classmethod
    def from_spec(cls, spec: str) -> PreprocessOptions:
        """``"current"`` (no optional step) or step names joined by ``+``, e.g. ``"grabcut"``."""
        names = [s for s in spec.split("+") if s and s != "current"]
        known = {f.name for f in fields(cls)}
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError(
                f"unknown preprocessing step {bad[0]!r} in {spec!r}; choose from "
                f"{', '.join(sorted(known))} (joined by '+') or 'current'"
            )
        return cls(**dict.fromkeys(names, True))

    @property
    def spec(self) -> str:
        """The inverse of :meth:`from_spec`: ``"current"`` or the steps on, joined by ``+``."""
        return "+".join(f.name for f in fields(self) if getattr(self, f.name)) or "current"


DEFAULT_OPTIONS = PreprocessOptions(colour=True, grabcut=True)
"""What :func:`preprocess` does unless told otherwise: the steps that paid on real photos
(``python benchmarks/photos.py --variants current,colour+grabcut,...``, README photo table)."""


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """The result of :func:`preprocess`.

    ``image`` is dataset-like (uint8 28x28, light item on black). ``bbox`` is
    ``(left, top, right, bottom)``, right/bottom exclusive, in the grayscale working image
    (the first step); ``None`` on pass-through.
    """

    image: np.ndarray
    steps: list[tuple[str, np.ndarray]] = field(default_factory=list)
    inverted: bool = False
    bbox: tuple[int, int, int, int] | None = None
    passthrough: bool = False


# --------------------------------------------------------------------------- loading


def load_image(
    source: Source,
    *,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode ``source`` defensively into an ``"L"`` or ``"RGB"`` Pillow image.

    Accepts a path, bytes, a binary file object, a Pillow image or a numpy array
    (uint8, integer or float in 0..1 / 0..255; HxW, HxWx{1,3,4} or 1xHxW). Only PNG, JPEG,
    WebP, GIF (first frame), BMP and TIFF are decoded. EXIF orientation is applied, alpha is
    composited (a cut-out's transparent background becomes background), palette, 1-bit,
    16-bit and CMYK are converted. The pixel count is checked from the header before any
    pixel is decoded. ``draft_size`` reduces the image, before any full-size conversion or
    float work, to a longest side of at least that many pixels: JPEGs decode at a reduced
    DCT scale, other formats are box-reduced by an integer factor in horizontal bands (so a
    6300x6300 RGBA PNG costs its decoded bytes plus a band, not gigabytes of float32).

    Raises a subclass of :class:`ImageError` naming the input:
    :class:`ImageTooLargeError` (too many bytes or pixels), :class:`UnsupportedImageError`
    (not an image, unsupported format or mode), :class:`CorruptImageError` (empty, truncated,
    corrupt); plain :class:`ImageError` for a missing path or an unusable array.
    """
    label = _label(source, name)
    if isinstance(source, np.ndarray):
        image = _array_to_image(source, label, max_pixels)
    elif isinstance(source, Image.Image):
        image = _checked_load(source, label, max_pixels, None)  # no draft: the caller's object
    else:
        data = _read_bytes(source, label, max_bytes)
        image = _decode(data, label, max_pixels, draft_size)
    orientation = _orientation(image, label)
    if draft_size:
        image = _reduce(image, draft_size)
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    return _standard_mode(image, label)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transposition that shows the image upright (as ImageOps does)."""
REDUCE_BAND_PIXELS: int = 1 << 22
"""Input pixels reduced per band (4 Mpx, 16 MB as RGBA): bounds the extra memory of
:func:`_reduce` to a strip however large the image."""


def _orientation(image: Image.Image, label: str) -> int | None:
    """The EXIF orientation tag (1..8), read before any reduction drops the metadata."""
    try:
        return image.getexif().get(ExifTags.Base.Orientation)
    except Exception as exc:  # a malformed EXIF block must not lose an otherwise fine image
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", label, exc)
        return None


def _reducible(image: Image.Image) -> Image.Image:
    """A mode that averages meaningfully: palette -> RGB(A), 1-bit -> L (others as they are)."""
    if image.mode in ("P", "PA"):
        alpha = image.mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if alpha else "RGB")
    if image.mode == "1":
        return image.convert("L")
    return image


def _reduce(image: Image.Image, size: int) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps the longest side >= ``size``.

    Works in bands of about REDUCE_BAND_PIXELS input pixels, so mode conversions (palette,
    the premultiplied alpha Pillow uses for RGBA) never copy the whole full-size image.
    """
    factor = max(image.size) // size
    if factor < 2:
        return image
    w, h = image.size
    out_size = (-(-w // factor), -(-h // factor))  # ceil, as Image.reduce
    band = max(1, REDUCE_BAND_PIXELS // (w * factor)) * factor  # input rows, whole blocks
    out: Image.Image | None = None
    for top in range(0, h, band):
        strip = _reducible(image.crop((0, top, w, min(h, top + band))))
        if strip.mode.startswith("I;16"):  # Image.reduce has no 16-bit modes; BOX is the same
            small = strip.resize((out_size[0], -(-strip.height // factor)),
                                 Image.Resampling.BOX)
        else:
            small = strip.reduce(factor)
        if out is None:
            out = Image.new(small.mode, out_size)
        out.paste(small, (0, top // factor))
    assert out is not None
    return out


def _label(source: object, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)  # type: ignore[return-value]
    if isinstance(source, np.ndarray):
        return "<array>"
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return str(getattr(source, "filename", "") or "<PIL image>")
    stream_name = getattr(source, "name", None)
    return stream_name if isinstance(stream_name, str) else "<stream>"


def _read_bytes(source: object, label: str, max_bytes: int) -> bytes:
    """The encoded bytes of a path, bytes-like or binary stream, size-checked."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{label}: no such file; check the path")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageTooLargeError(
                f"{label}: file is {size:,} bytes, more than the {max_bytes:,} allowed; "
                "resize or recompress it (e.g. a JPEG under 10 MB)"
            )
        data = path.read_bytes()
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, bytes | bytearray):
            raise ImageError(
                f"{label}: stream returned {type(data).__name__}, not bytes; "
                "open the file in binary mode ('rb')"
            )
        data = bytes(data)
    else:
        raise TypeError(
            f"cannot read an image from {type(source).__name__}; pass a path, bytes, a binary "
            "file object, a PIL.Image.Image or a numpy array"
        )
    if not data:
        raise CorruptImageError(
            f"{label}: file is empty (0 bytes); pass a PNG, JPEG, WebP, GIF, BMP or TIFF image"
        )
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{label}: more than {max_bytes:,} bytes; resize or recompress it")
    return data


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise CorruptImageError(f"{label}: image has zero size ({w}x{h}); pass a non-empty image")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{label}: image is {w}x{h} = {w * h:,} pixels, more than the {max_pixels:,} "
            "allowed (possible decompression bomb); downscale it first"
        )


_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"),
)
"""Leading bytes of the allowed formats (WebP: RIFF....WEBP, checked apart)."""


def _has_allowed_signature(data: bytes) -> str | None:
    """The allowed format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for sig, fmt in _SIGNATURES if data.startswith(sig)), None)


def _decode(data: bytes, label: str, max_pixels: int, draft_size: int | None) -> Image.Image:
    """Open (header only), check the size, then decode the pixels."""
    try:
        Image.init()  # registers all plugins (idempotent), so every allowed format is known
        formats = [f for f in ALLOWED_FORMATS if f in Image.OPEN]
        image = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"{label}: refused as a decompression bomb ({exc}); downscale it first"
        ) from exc
    except UnidentifiedImageError as exc:
        if _has_allowed_signature(data):  # says PNG/JPEG/... but Pillow cannot parse it
            raise CorruptImageError(
                f"{label}: image data is truncated or corrupt (a {_has_allowed_signature(data)} "
                "signature, then an unreadable header); re-export or re-download the file"
            ) from exc
        raise UnsupportedImageError(
            f"{label}: not a readable image ({len(data):,} bytes, unknown or corrupt header); "
            "supported formats are PNG, JPEG, WebP, GIF, BMP and TIFF -- convert it (e.g. "
            "HEIC to JPEG)"
        ) from exc
    except Exception as exc:
        raise CorruptImageError(
            f"{label}: cannot read the image header ({exc}); re-save it as PNG or JPEG"
        ) from exc
    return _checked_load(image, label, max_pixels, draft_size)


def _checked_load(
    image: Image.Image, label: str, max_pixels: int, draft_size: int | None
) -> Image.Image:
    _check_size(image.size, label, max_pixels)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated GIF/WebP/TIFF: the first frame only
        if draft_size and image.format in ("JPEG", "MPO") and max(image.size) > 2 * draft_size:
            scale = max(image.size) / draft_size
            image.draft(image.mode, (int(image.size[0] / scale), int(image.size[1] / scale)))
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"{label}: refused as a decompression bomb ({exc}); downscale it first"
        ) from exc
    except Exception as exc:
        raise CorruptImageError(
            f"{label}: image data is truncated or corrupt ({exc}); "
            "re-export or re-download the file"
        ) from exc
    _check_size(image.size, label, max_pixels)
    return image


def _standard_mode(image: Image.Image, label: str) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB" (alpha composited, 16-bit scaled, CMYK converted)."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        has_alpha = "transparency" in image.info
        return _standard_mode(image.convert("RGBA" if has_alpha else "RGB"), label)
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"))
        return Image.fromarray(_flatten_alpha(rgba, label))
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image), label))
    try:
        return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
    except Exception as exc:
        raise UnsupportedImageError(
            f"{label}: unsupported pixel mode {mode!r} ({exc}); "
            "re-save it as an RGB or grayscale PNG/JPEG"
        ) from exc


def _to_uint8(arr: np.ndarray, label: str) -> np.ndarray:
    """Scale an integer/float/bool array to uint8: floats in 0..1 or 0..255, 16-bit /257."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float64)
        if not np.isfinite(x).all():
            raise ImageError(f"{label}: array contains NaN or infinity; pass finite values")
        if x.size and x.max() <= 1.0:
            x = x * 255.0
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        x = arr.astype(np.int64)
        top = int(x.max()) if x.size else 0
        if top > 65535:
            x = x * 255 // top
        elif top > 255 or arr.dtype.itemsize == 2:
            x = (x + 128) // 257  # full 16-bit range -> 8 bits
        return np.clip(x, 0, 255).astype(np.uint8)
    raise UnsupportedImageError(
        f"{label}: unsupported array dtype {arr.dtype}; pass uint8 or float"
    )


def _array_to_image(arr: np.ndarray, label: str, max_pixels: int) -> Image.Image:
    """A numpy image (HxW, HxWx{1,3,4} or {1,3}xHxW) -> a Pillow image."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ImageError(
            f"{label}: array of shape {arr.shape} is not an image; pass HxW, HxWx1, HxWx3 or HxWx4"
        )
    _check_size((a.shape[1], a.shape[0]), label, max_pixels)
    a = np.ascontiguousarray(_to_uint8(a, label))
    if a.ndim == 3 and a.shape[-1] == 4:
        return Image.fromarray(a, "RGBA")
    return Image.fromarray(a, "RGB" if a.ndim == 3 else "L")


def _ring(a: np.ndarray, width: int) -> np.ndarray:
    """The pixels of the outer ring of ``width`` px of an HxW(xC) array, flattened over HxW."""
    h, w = a.shape[:2]
    width = max(1, min(width, h // 2 or 1, w // 2 or 1))
    parts = [
        a[:width],
        a[h - width :],
        a[width : h - width, :width],
        a[width : h - width, w - width :],
    ]
    return np.concatenate([p.reshape(-1, *a.shape[2:]) for p in parts])


def _flatten_alpha(rgba: np.ndarray, label: str) -> np.ndarray:
    """Composite RGBA on a background: a cut-out (transparent border) on white -- or black for
    a near-white object -- otherwise on the median colour of the opaque border."""
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32)
    if alpha.min() >= 1.0:
        return rgba[..., :3].copy()
    if alpha.max() <= 0.0:
        raise ImageError(f"{label}: image is fully transparent; nothing to classify")
    width = max(1, round(min(alpha.shape) * RING_FRACTION))
    ring_a = _ring(alpha, width)
    if (ring_a < 0.5).mean() > 0.5:  # cut-out: the object is opaque, the background is not
        obj = alpha > 0.5
        luma = rgb[obj] @ np.array([0.299, 0.587, 0.114], np.float32)
        light_object = luma.size and float(np.median(luma)) >= CUTOUT_LIGHT_LUMA
        bg = np.full(3, 0.0 if light_object else 255.0, np.float32)
    else:
        ring_rgb = _ring(rgb, width)[ring_a >= 0.5]
        bg = np.median(ring_rgb, axis=0).astype(np.float32)
    out = rgb * alpha[..., None] + bg * (1.0 - alpha[..., None])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- analysis


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of uint8-range values (maximises the between-class variance)."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256)
    hist = hist.astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(np.argmax(between)) + 0.5  # foreground: values > threshold


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """8-connected components of a boolean mask via row runs + union-find.

    Returns the area of each component and, per component, the indices of its runs in
    ``_runs(mask)`` order; cost is linear in the number of runs, not pixels.
    """
    rows, starts, ends = _runs(mask)
    n = len(rows)
    if n == 0:
        return np.zeros(0, np.int64), []
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Runs of each row are contiguous and sorted by start; for each run in row r+1, the runs
    # of row r touching it (8-connectivity: [s-1, e+1)) form a contiguous range.
    row_first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for r in range(mask.shape[0] - 1):
        a0, a1, b0, b1 = row_first[r], row_first[r + 1], row_first[r + 1], row_first[r + 2]
        if a0 == a1 or b0 == b1:
            continue
        lo = np.searchsorted(ends[a0:a1], starts[b0:b1], side="left") + a0
        hi = np.searchsorted(starts[a0:a1], ends[b0:b1], side="right") + a0
        for b, i0, i1 in zip(range(b0, b1), lo.tolist(), hi.tolist(), strict=True):
            for a in range(i0, i1):
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[ra] = rb
    roots = np.array([find(i) for i in range(n)])
    _, comp = np.unique(roots, return_inverse=True)
    areas = np.bincount(comp, weights=ends - starts).astype(np.int64)
    order = np.argsort(comp, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(comp))[:-1])
    return areas, groups


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True: row, start, end (exclusive), sorted by row then start."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def _runs_to_mask(shape: tuple[int, int], rows, starts, ends) -> np.ndarray:
    delta = np.zeros((shape[0], shape[1] + 1), np.int32)
    np.add.at(delta, (rows, starts), 1)
    np.add.at(delta, (rows, ends), -1)
    return np.cumsum(delta, axis=1)[:, :-1] > 0


def _item_mask(diff: np.ndarray, label: str) -> np.ndarray:
    """Boolean mask of the item: Otsu on the (smoothed) |image - background|, then the
    largest 8-connected component plus those at least KEEP_COMPONENT_FRACTION of its size."""
    if float(diff.max()) < MIN_CONTRAST:
        raise ImageError(
            f"{label}: no item stands out from the background (max difference "
            f"{float(diff.max()):.0f} grey levels); photograph the item on a plain background "
            "of a contrasting colour"
        )
    threshold = max(_otsu(diff), MIN_CONTRAST / 2)
    raw = Image.fromarray((diff > threshold).astype(np.uint8) * 255)
    # opening (3x3) removes speckle noise so it neither joins nor pads the item
    opened = np.asarray(raw.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3)))
    mask = opened > 0
    if not mask.any():
        mask = diff > threshold
    return _large_components(mask, KEEP_COMPONENT_FRACTION)


def _large_components(mask: np.ndarray, fraction: float, most: int | None = None) -> np.ndarray:
    """The largest 8-connected component of ``mask`` plus those with at least ``fraction`` of
    its area (at most ``most`` components, largest first)."""
    rows, starts, ends = _runs(mask)
    areas, groups = _components(mask)
    if len(areas) == 0:
        return mask
    keep = np.flatnonzero(areas >= fraction * areas.max())
    keep = keep[np.argsort(-areas[keep], kind="stable")][:most]
    idx = np.concatenate([groups[k] for k in keep])
    return _runs_to_mask(mask.shape, rows[idx], starts[idx], ends[idx])


# --------------------------------------------------------------------------- real-photo steps


def _grabcut(rgb: np.ndarray, mask: np.ndarray, avoid: np.ndarray | None = None) -> np.ndarray:
    """GrabCut at <= GRABCUT_SIZE px: the outer ring is sure background, the frame inside a
    GRABCUT_MARGIN border probable item, the band between probable background. ``mask`` (the
    threshold's) is returned when GrabCut finds nothing. Pixels in ``avoid`` (skin) are seeded
    as probable background, not probable item.

    Seeding with the frame rather than with ``mask`` measured better on real photos: a mask
    that took the floor's texture teaches GrabCut the floor's colours as "item"
    (clothing-dataset-small validation/, an earlier ``fast`` and GrabCut at 160 px x 4:
    139/277 right; with the mask as the seed, 134/277; benchmarks/photos.py)."""
    import cv2

    h, w = mask.shape
    scale = min(1.0, GRABCUT_SIZE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ring = max(1, round(min(size) * RING_FRACTION))
    margin = max(ring + 1, round(min(size) * GRABCUT_MARGIN))
    if min(size) <= 2 * margin + 2:
        return mask
    labels = np.full((size[1], size[0]), cv2.GC_BGD, np.uint8)
    labels[ring:-ring, ring:-ring] = cv2.GC_PR_BGD
    labels[margin:-margin, margin:-margin] = cv2.GC_PR_FGD
    if avoid is not None:
        away = cv2.resize(avoid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        labels[away & (labels == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation is random: keep it deterministic
    cv2.grabCut(np.ascontiguousarray(small), labels, None, *models, GRABCUT_ITERATIONS,
                cv2.GC_INIT_WITH_MASK)
    item = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    full = cv2.resize(item, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return _large_components(full, KEEP_COMPONENT_FRACTION) if full.any() else mask


def _colour_distance(rgb: np.ndarray, ring_width: int, radius: float) -> np.ndarray:
    """Euclidean RGB distance of the smoothed image from the ring's median colour, / sqrt(3)
    so that a pure grey shift of d levels gives d (comparable with the grey-level path)."""
    smooth = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)), np.float32)
    background = np.median(_ring(smooth, ring_width), axis=0)
    return np.sqrt(((smooth - background) ** 2).sum(axis=-1) / 3.0)


def _fill(mask: np.ndarray) -> np.ndarray:
    """Close gaps of about 2% of the image and fill every hole enclosed by the mask."""
    import cv2

    k = 2 * max(1, round(min(mask.shape) * 0.01)) + 1
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    outside = np.pad(closed, 1)  # a 0 ring so the flood from a corner reaches all outside
    flood = np.zeros((outside.shape[0] + 2, outside.shape[1] + 2), np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 2)
    return (outside != 2)[1:-1, 1:-1]


def _skin(rgb: np.ndarray) -> np.ndarray:
    """Skin-coloured pixels: the classic YCrCb box (Cr 135..180, Cb 85..135, Y > 60)."""
    import cv2

    ycc = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)
    y, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    return (y > 60) & (cr >= 135) & (cr <= 180) & (cb >= 85) & (cb <= 135)


def _skin_seed(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Skin-coloured pixels for GrabCut to seed as background, when they are less than
    SKIN_MAX_SHARE of ``mask`` (so a garment remains); None otherwise."""
    skin = _skin(rgb)
    inside = int((skin & mask).sum())
    if inside == 0 or inside >= SKIN_MAX_SHARE * mask.sum():
        return None
    return skin


def _drop_skin(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask`` without skin-coloured pixels, unless they make up most of it."""
    skin = _skin(rgb) & mask
    if not skin.any() or skin.sum() >= SKIN_MAX_SHARE * mask.sum():
        return mask
    rest = mask & ~skin
    return _large_components(rest, KEEP_COMPONENT_FRACTION) if rest.any() else mask


def _tone(item: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``item`` scaled so its TONE_PEAK_PERCENTILE inside ``mask`` is 255 and gamma-corrected so
    the median mask pixel is TONE_MEDIAN of that; pixels outside the mask keep their (scaled)
    value."""
    inside = item[mask]
    peak = float(np.percentile(inside, TONE_PEAK_PERCENTILE)) if inside.size else 0.0
    if peak <= 0:
        return item
    v = np.clip(item / peak, 0.0, 1.0)
    median = float(np.median(v[mask]))
    if 0.0 < median < 1.0:
        v = v ** float(np.clip(np.log(TONE_MEDIAN) / np.log(median), TONE_GAMMA_MIN, 1.0))
    return (v * 255.0).astype(np.float32)


def _one_of_pair(mask: np.ndarray) -> np.ndarray:
    """Only the largest component when the second largest is at least ONE_SHOE_RATIO of it
    (two separate, similar items: a pair); otherwise ``mask`` unchanged."""
    pair = _large_components(mask, ONE_SHOE_RATIO, most=2)
    one = _large_components(mask, 1.0, most=1)
    if pair.sum() == one.sum():
        return mask
    return one


def _toe_left(crop: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Mirror a wide item whose left third is clearly taller than its right third (a shoe
    pointing right: its heel and shaft are taller than its toe). Returns the crop and whether
    it was flipped."""
    h, w = mask.shape
    if w <= h:
        return crop, False
    heights = mask.sum(axis=0)
    third = max(1, w // 3)
    if heights[:third].mean() > SIDE_VIEW_RATIO * heights[-third:].mean():
        return crop[:, ::-1], True
    return crop, False


# --------------------------------------------------------------------------- pipeline


def preprocess(
    source: Source,
    *,
    return_steps: bool = False,
    name: str | None = None,
    options: PreprocessOptions = DEFAULT_OPTIONS,
) -> Preprocessed:
    """Turn a photo (or a dataset image) into a dataset-like 28x28 uint8 image.

    Large photos are analysed at <= WORK_SIZE px. A 28x28 input passes through
    unchanged (inverted back if its background is light). Set ``return_steps`` to get the
    named intermediate images for :func:`save_steps`.
    """
    label = _label(source, name)
    image = load_image(source, name=label, draft_size=WORK_SIZE)
    if image.size == (SIZE, SIZE):
        return _passthrough(np.asarray(image.convert("L")).copy(), return_steps)
    seg = _segment(image, label, options)
    item, inverted = _item_signal(seg, options)
    crop, bbox, flipped = _crop(item, seg.mask, options)
    square = _square(crop)
    out = _frame(square)
    steps: list[tuple[str, np.ndarray]] = []
    if return_steps:
        mask_name = "item mask (GrabCut)" if seg.cut else "item mask"
        steps = [("grayscale", seg.gray.copy())]
        steps += [("inverted", 255 - seg.gray)] if inverted else []
        steps += [
            ("background removed", _u8(item)),
            (mask_name, seg.mask.astype(np.uint8) * 255),
            ("cropped, toe turned left" if flipped else "cropped", _u8(crop)),
            ("square", _u8(square)),
            ("28x28", out),
        ]
    return Preprocessed(image=out, steps=steps, inverted=inverted, bbox=bbox, passthrough=False)


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _passthrough(gray: np.ndarray, return_steps: bool) -> Preprocessed:
    """A 28x28 input: dataset-like already, inverted back only if its border is light."""
    inverted = float(_ring(gray, 1).mean()) >= PASSTHROUGH_LIGHT_RING
    out = 255 - gray if inverted else gray
    steps: list[tuple[str, np.ndarray]] = []
    if return_steps:
        steps = [("input", gray)] + ([("inverted", out)] if inverted else []) + [("28x28", out)]
    return Preprocessed(image=out, steps=steps, inverted=inverted, passthrough=True)


@dataclass(frozen=True, eq=False)
class _Segmentation:
    """One photo at working size: its grey (and colour) image, the background's grey level,
    the blur radius used, the item mask and whether GrabCut made it."""

    gray: np.ndarray
    rgb: np.ndarray | None
    background: float
    radius: float
    mask: np.ndarray
    cut: bool


def _segment(image: Image.Image, label: str, options: PreprocessOptions) -> _Segmentation:
    """Find the item: background from the outer ring, a threshold mask on the grey (or colour)
    distance from it, then the real-photo steps of :func:`_refine_mask`."""
    gray_img, rgb = _working_images(
        image, colour=options.grabcut or options.skin or options.colour
    )
    gray = np.asarray(gray_img)
    h, w = gray.shape
    ring_width = max(1, round(min(h, w) * RING_FRACTION))
    ring = _ring(gray, ring_width).astype(np.float32)
    background = float(np.median(ring))
    plain = float(np.median(np.abs(ring - background))) <= PLAIN_RING_MAD
    radius = max(1.0, max(h, w) / 256)
    smooth = np.asarray(gray_img.filter(ImageFilter.GaussianBlur(radius)), np.float32)
    diff = np.abs(smooth - background)
    if options.colour and rgb is not None and (not plain or float(diff.max()) < MIN_CONTRAST):
        diff = _colour_distance(rgb, ring_width, radius)
    mask, cut = _refine_mask(_item_mask(diff, label), rgb, options, plain)
    return _Segmentation(gray, rgb, background, radius, mask, cut)


def _item_signal(seg: _Segmentation, options: PreprocessOptions) -> tuple[np.ndarray, bool]:
    """The item as light on black (float, grey levels): its distance from the background,
    inverted when it is darker than the background, zero outside the (slightly grown) mask.
    Returns it and whether the photo was inverted."""
    signed = seg.gray.astype(np.float32) - seg.background
    inverted = bool(signed[seg.mask].mean() < 0)  # item darker than background: light background
    item = np.clip(-signed if inverted else signed, 0, None)
    grow = ImageFilter.MaxFilter(2 * max(1, round(seg.radius)) + 1)
    keep = np.asarray(Image.fromarray(seg.mask.astype(np.uint8) * 255).filter(grow)) > 0
    item = np.where(keep, item, 0.0).astype(np.float32)  # shadows / clutter outside -> 0
    if options.solid and item.max() > 0:
        item = np.where(seg.mask, np.maximum(item, SOLID_FLOOR * float(item.max())), item)
    if options.tone:
        item = _tone(item, seg.mask)
    return item, inverted


def _crop(
    item: np.ndarray, mask: np.ndarray, options: PreprocessOptions
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """The item cropped to the mask's bbox (toe turned left under ``side_view``): the crop, the
    bbox ``(left, top, right, bottom)`` and whether it was mirrored."""
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    crop = item[top:bottom, left:right]
    flipped = False
    if options.side_view:
        crop, flipped = _toe_left(crop, mask[top:bottom, left:right])
    return crop, (left, top, right, bottom), flipped


def _square(crop: np.ndarray) -> np.ndarray:
    """``crop`` centred on a black square whose side is its longest side."""
    side = max(crop.shape)
    square = np.zeros((side, side), np.float32)
    oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return square


def _frame(square: np.ndarray) -> np.ndarray:
    """The square at 28x28, its longest side FILL_LONGEST_PX, stretched so the peak is
    TARGET_MAX (all black if there is nothing)."""
    inner = FILL_LONGEST_PX
    # BOX = exact area average: no negative lobes, so no ringing into the black background
    small = np.asarray(Image.fromarray(square, "F").resize((inner, inner), Image.Resampling.BOX))
    framed = np.zeros((SIZE, SIZE), np.float32)
    o = (SIZE - inner) // 2
    framed[o : o + inner, o : o + inner] = np.clip(small, 0, None)
    peak = float(framed.max())
    if peak <= 0:
        return np.zeros((SIZE, SIZE), np.uint8)
    return np.clip(np.rint(framed * (TARGET_MAX / peak)), 0, 255).astype(np.uint8)


def _working_images(image: Image.Image, colour: bool) -> tuple[Image.Image, np.ndarray | None]:
    """The grayscale working image (ITU-R 601 luma, <= WORK_SIZE px) and, if ``colour``, the
    RGB one of the same size (None otherwise)."""
    gray = image.convert("L")
    if max(image.size) <= WORK_SIZE:
        return gray, np.asarray(image.convert("RGB")) if colour else None
    scale = WORK_SIZE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = None
    if colour:
        rgb = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR))
    return gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), rgb


def _refine_mask(
    mask: np.ndarray, rgb: np.ndarray | None, options: PreprocessOptions, plain: bool
) -> tuple[np.ndarray, bool]:
    """The threshold mask through the real-photo steps ``options`` turns on, in order:
    GrabCut (not on a ``plain`` background), skin removal, one of a pair, fill. Returns the
    mask and whether GrabCut made it."""
    cut = options.grabcut and rgb is not None and not plain
    if cut:
        mask = _grabcut(rgb, mask, _skin_seed(rgb, mask) if options.skin else None)
    if options.skin and rgb is not None:
        mask = _drop_skin(rgb, mask)
    if options.one_shoe:
        mask = _one_of_pair(mask)
    if options.fill:
        mask = _fill(mask)
    return mask, cut


def naive_preprocess(source: Source) -> np.ndarray:
    """What the tutorials do: grayscale, squash to 28x28, no inversion, no crop (a baseline)."""
    image = load_image(source, draft_size=WORK_SIZE).convert("L")
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)).copy()


# --------------------------------------------------------------------------- tensors


def normalize(image_uint8: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 HxW (28x28) -> float32 1xHxW tensor ``(x / 255 - mean) / std``."""
    import torch

    a = np.asarray(image_uint8)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ImageError(
            f"normalize: expected a uint8 HxW image (e.g. 28x28), got {a.dtype} "
            f"{a.shape}; run preprocess() first"
        )
    if std <= 0:
        raise ValueError(f"normalize: std must be positive, got {std}")
    from .evaluation import normalize as normalize_batch

    return normalize_batch(torch.from_numpy(a)[None], mean, std)[0]  # (1, H, W)


def to_tensor_batch(images: Sequence[np.ndarray], mean: float, std: float) -> torch.Tensor:
    """A sequence of uint8 HxW images -> a float32 (N, 1, H, W) normalized batch."""
    import torch

    if len(images) == 0:
        raise ImageError("to_tensor_batch: got no images; pass at least one")
    shapes = {np.asarray(im).shape[-2:] for im in images}
    if len(shapes) != 1:
        raise ImageError(
            f"to_tensor_batch: images differ in size {sorted(shapes)}; preprocess them all to 28x28"
        )
    return torch.stack([normalize(im, mean, std) for im in images])


# --------------------------------------------------------------------------- figures

_TILE = 112
_CAPTION = 16


def steps_figure_array(pre: Preprocessed) -> np.ndarray:
    """The steps side by side, each scaled to the same height and captioned: HxWx3 uint8."""
    steps = pre.steps or [("28x28", pre.image)]
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=11)
    except Exception:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    slots = []
    for step_name, a in steps:
        tile = Image.fromarray(np.asarray(a, np.uint8)).convert("L")
        width = min(2 * _TILE, max(1, round(tile.width * _TILE / tile.height)))
        small = tile.height < _TILE and tile.width < _TILE
        tile = tile.resize(
            (width, _TILE), Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
        )
        text_width = round(measure.textlength(step_name, font=font))
        slots.append((step_name, tile, max(width, text_width)))
    gap = 8
    total = sum(slot for _, _, slot in slots) + gap * (len(slots) + 1)
    canvas = Image.new("RGB", (total, _TILE + _CAPTION + 2 * gap), (40, 40, 48))
    draw = ImageDraw.Draw(canvas)
    x = gap
    for step_name, tile, slot in slots:
        canvas.paste(tile.convert("RGB"), (x + (slot - tile.width) // 2, gap))
        draw.text((x, gap + _TILE + 3), step_name, fill=(230, 230, 230), font=font)
        x += slot + gap
    return np.asarray(canvas).copy()


def save_steps(pre: Preprocessed, path: str | os.PathLike) -> Path:
    """Write :func:`steps_figure_array` as a PNG; a directory gets ``steps.png``. Returns it."""
    out = Path(path)
    if out.is_dir():
        out = out / "steps.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(steps_figure_array(pre)).save(out, format="PNG")
    return out
