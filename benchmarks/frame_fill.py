"""Measure how Fashion-MNIST items fill their 28x28 frame; prints JSON.

Usage: PYTHONPATH=src python benchmarks/frame_fill.py [--data-dir DIR] [--split t10k|train]
       PYTHONPATH=src python benchmarks/frame_fill.py --timing   # + preprocess() speed

The numbers feed the constants at the top of ``src/fmnist/preprocess.py``: the
longest side of the item's bounding box, the margins, the centre of mass and the
intensity statistics, overall and per class. The data directory defaults to
``$FMNIST_DATA_DIR`` and then ``../shared/data/fashion-mnist``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fmnist.datasets import DATASETS

CLASSES = DATASETS.get("fashion-mnist").classes


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (magic 2051 images / 2049 labels) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def measure(images: np.ndarray, threshold: int) -> dict:
    """Frame-fill statistics for a stack of (N, 28, 28) uint8 images."""
    mask = images > threshold
    rows = mask.any(axis=2)
    cols = mask.any(axis=1)
    idx = np.arange(28)
    top = np.where(rows, idx, 99).min(1)
    bottom = np.where(rows, idx, -1).max(1)
    left = np.where(cols, idx, 99).min(1)
    right = np.where(cols, idx, -1).max(1)
    h = bottom - top + 1
    w = right - left + 1
    longest = np.maximum(h, w)
    x = images.astype(np.float64)
    ring = np.concatenate(
        [images[:, 0], images[:, -1], images[:, 1:-1, 0], images[:, 1:-1, -1]], axis=1
    )
    total = x.sum((1, 2))
    cy = (x.sum(2) * idx).sum(1) / total
    cx = (x.sum(1) * idx).sum(1) / total
    bbox_cy = (top + bottom) / 2
    bbox_cx = (left + right) / 2

    def q(v: np.ndarray) -> dict:
        p = np.percentile(v, [5, 25, 50, 75, 95])
        return {
            "mean": round(float(v.mean()), 3),
            "p5": float(p[0]),
            "p25": float(p[1]),
            "median": float(p[2]),
            "p75": float(p[3]),
            "p95": float(p[4]),
        }

    return {
        "n": int(len(images)),
        "bbox_height": q(h),
        "bbox_width": q(w),
        "bbox_longest": q(longest),
        "frac_longest_ge_27": round(float((longest >= 27).mean()), 4),
        "frac_longest_eq_28": round(float((longest == 28).mean()), 4),
        "frac_height_is_longest": round(float((h >= w).mean()), 4),
        "margin_top": q(top),
        "margin_bottom": q(27 - bottom),
        "margin_left": q(left),
        "margin_right": q(27 - right),
        "bbox_centre_y": q(bbox_cy),
        "bbox_centre_x": q(bbox_cx),
        "mass_centre_y": q(cy),
        "mass_centre_x": q(cx),
        "max_intensity": q(images.reshape(len(images), -1).max(1).astype(float)),
        "p99_intensity_in_item": q(
            np.array(
                [
                    np.percentile(im[m], 99) if m.any() else 0
                    for im, m in zip(images, mask, strict=True)
                ]
            )
        ),
        # the 1-px outer ring: what preprocess() looks at to pass 28x28 inputs through
        "border_ring_mean": q(ring.mean(axis=1)),
        "border_ring_mean_max": round(float(ring.mean(axis=1).max()), 3),
        "border_ring_median_max": float(np.median(ring, axis=1).max()),
        "frac_zero_pixels": round(float((images == 0).mean()), 4),
    }


def time_preprocess(repeats: int = 7) -> dict:
    """Median seconds of fmnist.preprocess on a synthetic 4000x3000 phone-like photo."""
    import io
    import time

    from fmnist.preprocess import naive_preprocess, preprocess

    rng = np.random.default_rng(0)
    small = Image.new("RGB", (1000, 750), (226, 220, 210))
    ImageDraw.Draw(small).polygon(
        [(380, 100), (620, 100), (660, 680), (520, 680), (500, 300), (480, 680), (340, 680)],
        fill=(40, 50, 95),
    )  # trousers
    clean = small.resize((4000, 3000), Image.Resampling.BILINEAR)
    noise = rng.normal(0, 4, (3000, 4000, 1))  # mild sensor noise, like a phone JPEG
    noisy = Image.fromarray(np.clip(np.asarray(clean) + noise, 0, 255).astype(np.uint8), "RGB")
    out = {}
    for fmt, photo, kw in (("JPEG", noisy, {"quality": 90}), ("PNG", clean, {})):
        buf = io.BytesIO()
        photo.save(buf, format=fmt, **kw)
        data = buf.getvalue()
        for label, fn in (("preprocess", preprocess), ("naive", naive_preprocess)):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(data)
                times.append(time.perf_counter() - t0)
            out[f"{fmt.lower()}_4000x3000_{label}_s"] = round(float(np.median(times)), 4)
        out[f"{fmt.lower()}_bytes"] = len(data)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("FMNIST_DATA_DIR") or str(
        Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
    )
    parser.add_argument("--data-dir", default=default)
    parser.add_argument("--split", default="t10k", choices=["t10k", "train"])
    parser.add_argument(
        "--threshold",
        type=int,
        default=0,
        help="a pixel belongs to the item when its value is above this",
    )
    parser.add_argument(
        "--timing",
        action="store_true",
        help="also time preprocess() on a synthetic 4000x3000 JPEG and PNG",
    )
    args = parser.parse_args()
    root = Path(args.data_dir)
    images = read_idx(root / f"{args.split}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{args.split}-labels-idx1-ubyte.gz")
    out = {
        "split": args.split,
        "threshold": args.threshold,
        "all": measure(images, args.threshold),
        "per_class": {
            c: measure(images[labels == i], args.threshold) for i, c in enumerate(CLASSES)
        },
    }
    if args.timing:
        out["timing"] = time_preprocess()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
