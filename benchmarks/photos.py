"""How models do on REAL photos: clothing-dataset-small validation/ and web-dev/.

    python benchmarks/photos.py --models runs/fast[,runs/photo] [--photos DIR]
                                [--variants current,grabcut+skin,...] [--sets validation,web-dev]

Every photo goes through ``fmnist.preprocess`` (what ``fmnist predict`` and ``fmnist serve``
do), once per preprocessing variant (``PreprocessOptions.from_spec``: ``current`` or step
names joined by ``+``), and each model classifies the result and its mirror, averaged, as
they do by default (``--no-tta``: one view). The photos folder is the one
described in ``../shared/photos/README.md``: ``--photos DIR``, else ``$FMNIST_PHOTOS_DIR``,
else ``../shared/photos`` next to the repository. Both sets are for measuring only.

- ``validation``: ``clothing-dataset-small/validation/``, labels from
  ``clothing-dataset-small/fmnist-labels.csv`` (label >= 0: 277 photos).
- ``web-dev``: ``web-dev/`` with ``labels.csv`` (157 photos, easy/hard).

Writes ``benchmarks/results/photos-real-<device>.json`` (top-1 per set, class and
difficulty, confusion matrices, ms/image of preprocessing) and, for the first model and the
default variant (else the first), ``benchmarks/results/photos-real-mistakes.png``: the most
confident mistakes on validation/ with their preprocessing steps. web-dev images are never
written into the repo; ``--scratch DIR`` writes a web-dev mistakes sheet there for a look.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import RESULTS, select_device, write_result

from fmnist.errors import FmnistError, ImageError
from fmnist.inference import Predictor
from fmnist.preprocess import (
    DEFAULT_OPTIONS,
    PreprocessOptions,
    preprocess,
    steps_figure_array,
)

REPO = Path(__file__).resolve().parents[1]
SETS = ("validation", "web-dev")
SIZE = 28


@dataclass(frozen=True)
class Photo:
    path: Path
    label: int
    difficulty: str  # "easy" / "hard" on web-dev, "" on validation


def photos_dir(flag: str | None) -> Path:
    """--photos, else $FMNIST_PHOTOS_DIR, else ../shared/photos next to the repository."""
    folder = Path(flag or os.environ.get("FMNIST_PHOTOS_DIR") or REPO.parent / "shared/photos")
    if not (folder / "clothing-dataset-small").is_dir() and not (folder / "web-dev").is_dir():
        raise FmnistError(
            f"{folder}: no clothing-dataset-small/ or web-dev/ inside; pass --photos DIR "
            "(the folder described by shared/photos/README.md) or set FMNIST_PHOTOS_DIR"
        )
    return folder


def load_set(root: Path, name: str) -> list[Photo]:
    """The labelled photos of one set (label >= 0)."""
    if name == "validation":
        base = root / "clothing-dataset-small"
        with open(base / "fmnist-labels.csv", newline="") as f:
            return [Photo(base / r["path"], int(r["label"]), "") for r in csv.DictReader(f)
                    if r["path"].startswith("validation/") and int(r["label"]) >= 0]
    if name == "web-dev":
        base = root / "web-dev"
        with open(base / "labels.csv", newline="") as f:
            return [Photo(base / r["file"], int(r["label"]), r["difficulty"])
                    for r in csv.DictReader(f)]
    raise FmnistError(f"unknown set {name!r}; choose from {', '.join(SETS)}")


def preprocess_all(photos: list[Photo], options: PreprocessOptions) -> tuple[np.ndarray, float]:
    """(N, 28, 28) uint8 model inputs (black for a photo preprocessing rejects), ms/image."""
    out = np.zeros((len(photos), SIZE, SIZE), np.uint8)
    start = time.perf_counter()
    for i, photo in enumerate(photos):
        try:
            out[i] = preprocess(photo.path, options=options).image
        except ImageError as exc:
            logging.warning("%s", exc)
    return out, 1000 * (time.perf_counter() - start) / max(1, len(photos))


def score(probs: np.ndarray, photos: list[Photo], classes: tuple[str, ...]) -> dict:
    """Top-1 overall, per class and per difficulty, and the confusion matrix (rows: true)."""
    labels = np.array([p.label for p in photos])
    pred = probs.argmax(1)
    right = pred == labels
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {classes[c]: {"correct": int(right[labels == c].sum()),
                              "total": int((labels == c).sum())}
                 for c in range(len(classes)) if (labels == c).any()}
    diffs = np.array([p.difficulty for p in photos])
    per_difficulty = {d: {"correct": int(right[diffs == d].sum()), "total": int((diffs == d).sum())}
                      for d in sorted(set(diffs) - {""})}
    return {"accuracy": float(right.mean()), "correct": int(right.sum()), "total": len(photos),
            "per_class": per_class, "per_difficulty": per_difficulty,
            "confusion": confusion.tolist()}


def worst_mistakes(probs: np.ndarray, photos: list[Photo], k: int) -> list[int]:
    """Indices of the k wrong predictions made with the highest confidence."""
    labels = np.array([p.label for p in photos])
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    return wrong[np.argsort(-probs[wrong].max(1), kind="stable")][:k].tolist()


def mistakes_sheet(idx: list[int], probs: np.ndarray, photos: list[Photo],
                   classes: tuple[str, ...], options: PreprocessOptions, path: Path) -> None:
    """One row per mistake: its preprocessing steps, captioned true -> predicted."""
    from matplotlib.figure import Figure

    from fmnist.plots import save_figure

    rows = [steps_figure_array(preprocess(photos[i].path, return_steps=True, options=options))
            for i in idx]
    if not rows:
        return
    fig = Figure(figsize=(12, 1.6 * len(rows)), layout="constrained")
    for r, (i, sheet) in enumerate(zip(idx, rows, strict=True)):
        ax = fig.add_subplot(len(rows), 1, r + 1)
        ax.imshow(sheet)
        ax.set_axis_off()
        p = int(probs[i].argmax())
        ax.set_title(f"{photos[i].path.name}: {classes[photos[i].label]} -> {classes[p]} "
                     f"({probs[i, p]:.0%})", fontsize=8, loc="left")
    save_figure(fig, path, dpi=72)  # a page of photos: keep the committed PNG small


def run_variant(spec: str, sets: dict[str, list[Photo]], predictors: dict[str, Predictor],
                ) -> tuple[dict, dict]:
    """Scores of every model on every set for one preprocessing variant, and the probs."""
    options = PreprocessOptions.from_spec(spec)
    scores: dict = {"variant": spec, "ms_per_image": {}, "results": {}}
    probs_by: dict = {}
    for set_name, photos in sets.items():
        images, ms = preprocess_all(photos, options)
        scores["ms_per_image"][set_name] = round(ms, 1)
        for model, pred in predictors.items():
            probs = pred.probs_of(images)
            probs_by[(model, set_name)] = probs
            s = score(probs, photos, pred.classes)
            scores["results"].setdefault(model, {})[set_name] = s
            extra = " ".join(f"{d} {v['correct']}/{v['total']}"
                             for d, v in s["per_difficulty"].items())
            print(f"{spec:>24} {Path(model).name:>10} {set_name:>10}: {s['accuracy']:.1%} "
                  f"({s['correct']}/{s['total']}) {extra}  [{ms:.0f} ms/image]", flush=True)
    return scores, probs_by


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="comma-separated runs or model files")
    p.add_argument("--photos", help="the shared photos folder (default: $FMNIST_PHOTOS_DIR, "
                   "else ../shared/photos next to the repository)")
    p.add_argument("--variants", default="current",
                   help="comma-separated preprocessing variants, the first is the baseline")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average each photo and its mirror, as `fmnist predict` does by "
                   "default (--no-tta: one view)")
    p.add_argument("--mistakes", type=int, default=10, help="rows in the mistakes figure")
    p.add_argument("--scratch", help="folder OUTSIDE the repo for a web-dev mistakes sheet")
    p.add_argument("--out", default=str(RESULTS), help="results folder (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        root = photos_dir(args.photos)
        sets = {name: load_set(root, name) for name in args.sets.split(",")}
        predictors = {m: Predictor.from_path(m, backend="torch", device="cpu", tta=args.tta)
                      for m in args.models.split(",")}
        variants = [run_variant(v, sets, predictors) for v in args.variants.split(",")]
    except FmnistError as exc:
        print(f"photos.py: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    first_model = next(iter(predictors))
    default = next((v for v in variants
                    if PreprocessOptions.from_spec(v[0]["variant"]) == DEFAULT_OPTIONS), None)
    shown, probs_by = default or variants[0]
    options = PreprocessOptions.from_spec(shown["variant"])
    classes = predictors[first_model].classes
    for set_name, photos in sets.items():
        probs = probs_by[(first_model, set_name)]
        idx = worst_mistakes(probs, photos, args.mistakes)
        if set_name == "validation":
            mistakes_sheet(idx, probs, photos, classes, options, out / "photos-real-mistakes.png")
        elif args.scratch:
            mistakes_sheet(idx, probs, photos, classes, options,
                           Path(args.scratch) / f"photos-real-mistakes-{set_name}.png")
    payload = {"photos": {k: len(v) for k, v in sets.items()}, "classes": list(classes),
               "models": {m: {"recipe": pr.meta.get("recipe"),
                              "test_accuracy": pr.meta.get("metrics", {}).get("test_acc")}
                          for m, pr in predictors.items()},
               "default_variant": default[0]["variant"] if default else DEFAULT_OPTIONS.spec,
               "tta": args.tta,
               "variants": [v for v, _ in variants]}
    path = write_result("photos-real", select_device("cpu"), payload, folder=out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
