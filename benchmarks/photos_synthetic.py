"""How models do on SYNTHETIC photo-like images: fmnist.preprocess against naive resizing.

    python benchmarks/photos_synthetic.py --models runs/demo[,runs/other] [--per-class 100]

Each photo is made from a test image the way a phone picture of a garment differs from
the dataset: dark item on a light, tinted background (inverted), 5-20x larger, off-centre,
slightly rotated, in colour, noisy, blurred a little and JPEG-compressed. Each model
classifies the original test images, the photos through ``fmnist.preprocess`` (what
``fmnist predict`` and ``fmnist serve`` do) and the photos through the tutorials' naive
path (grayscale, resize to 28x28, no inversion). Writes
``benchmarks/results/photos-synthetic-<device>.json`` and an example sheet
``benchmarks/results/photos-examples.png``.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys

import numpy as np
from _common import RESULTS, select_device, write_result
from PIL import Image, ImageFilter

from fmnist.datasets import load_dataset
from fmnist.inference import Predictor
from fmnist.preprocess import naive_preprocess, preprocess


def make_photo(item: np.ndarray, rng: np.random.Generator) -> bytes:
    """A JPEG 'photo' of a 28x28 dataset item (light on black) as a phone might take it."""
    side = int(rng.integers(140, 560))
    img = Image.fromarray(255 - item).resize((side, side), Image.Resampling.BICUBIC)
    img = img.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC,
                     fillcolor=255)
    gray = np.asarray(img, dtype=np.float64) / 255.0  # 1 = background, 0 = darkest item
    canvas_w = int(side * rng.uniform(1.3, 2.0))
    canvas_h = int(side * rng.uniform(1.3, 2.0))
    bg = rng.uniform(0.78, 0.97) * np.array([1.0, *rng.uniform(0.92, 1.05, 2)])
    ink = rng.uniform(0.2, 1.0, 3)  # the garment's colour
    canvas = np.ones((canvas_h, canvas_w, 3)) * bg
    y0 = int(rng.integers(0, canvas_h - side + 1))
    x0 = int(rng.integers(0, canvas_w - side + 1))
    patch = gray[..., None] * bg + (1 - gray[..., None]) * ink * (0.35 + 0.65 * gray[..., None])
    canvas[y0 : y0 + side, x0 : x0 + side] = patch
    gradient = np.linspace(rng.uniform(0.9, 1.0), rng.uniform(0.9, 1.0), canvas_w)[None, :, None]
    canvas = canvas * gradient + rng.normal(0, 0.025, canvas.shape)
    photo = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    photo = photo.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.5))))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=int(rng.integers(70, 95)))
    return buf.getvalue()


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


def example_sheet(photos: list[bytes], ours: np.ndarray, naive: np.ndarray, path) -> None:
    """Rows: the photo, what naive resizing shows the model, what fmnist shows it."""
    from matplotlib.figure import Figure

    from fmnist.plots import save_figure

    n = len(photos)
    fig = Figure(figsize=(1.6 * n, 5.2), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    for j in range(n):
        axes[0, j].imshow(Image.open(io.BytesIO(photos[j])).convert("RGB"))
        axes[1, j].imshow(naive[j], cmap="gray", vmin=0, vmax=255)
        axes[2, j].imshow(ours[j], cmap="gray", vmin=0, vmax=255)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for i, label in enumerate(("photo", "naive resize", "fmnist.preprocess")):
        axes[i, 0].set_ylabel(label)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="comma-separated runs or model files")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    ds = load_dataset("fashion-mnist", args.data_dir)
    rng = np.random.default_rng(args.seed)
    pick = np.concatenate([
        rng.choice(np.flatnonzero(ds.test.labels == c), args.per_class, replace=False)
        for c in range(ds.num_classes)])
    items, labels = ds.test.images[pick], ds.test.labels[pick]
    photos = [make_photo(im, rng) for im in items]
    ours = np.stack([preprocess(ph).image for ph in photos])
    naive = np.stack([naive_preprocess(ph) for ph in photos])
    results = []
    for model in args.models.split(","):
        pred = Predictor.from_path(model, backend="torch")
        row = {
            "model": model,
            "recipe": pred.meta.get("recipe"),
            "test_accuracy_full": pred.meta.get("metrics", {}).get("test_acc"),
            "originals": accuracy(pred.probs_of(items), labels),
            "photos_fmnist_preprocess": accuracy(pred.probs_of(ours), labels),
            "photos_naive_resize": accuracy(pred.probs_of(naive), labels),
        }
        results.append(row)
        print(f"{model}: originals {row['originals']:.1%}  photos via fmnist.preprocess "
              f"{row['photos_fmnist_preprocess']:.1%}  via naive resize "
              f"{row['photos_naive_resize']:.1%}", flush=True)
    order = np.argsort(labels, kind="stable")[:: args.per_class][:10]
    example_sheet([photos[i] for i in order], ours[order], naive[order],
                  RESULTS / "photos-examples.png")
    path = write_result("photos-synthetic", select_device("cpu"), {
        "images": len(photos), "per_class": args.per_class, "seed": args.seed,
        "results": results})
    print(f"wrote {path} and {RESULTS / 'photos-examples.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
