"""Similar items: index build time, query latency, precision@k on Fashion-MNIST test and on
real photos (clothing-dataset-small validation/, measured only, never trained on).

    python benchmarks/similar.py --run runs/fast-... [--photos-dir DIR] [--k 8]

Writes benchmarks/results/similar-cpu.json. precision@k: the mean fraction of each query's
k nearest training images whose class is the query's true class. Photos are read through
``fmnist-labels.csv`` (label >= 0 rows of ``validation/``) and shown beside the same
model's top-1 accuracy on them. The index is built fresh (the run's cached one is ignored
and left untouched) so its build time is measured.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from fmnist.inference import Predictor
from fmnist.runs import Run
from fmnist.similar import SimilarFinder, SimilarIndex, embed_model, precision_at_k


def build_index(run) -> tuple[SimilarIndex, float]:
    start = time.perf_counter()
    train = run.dataset.train
    vectors = embed_model(run.model, train.images, mean=run.meta.mean, std=run.meta.std)
    seconds = time.perf_counter() - start
    return SimilarIndex(vectors, train.labels, run.classes, "", seconds), seconds


def _timed_ms(fn, items) -> list[float]:
    times = []
    for x in items:
        start = time.perf_counter()
        fn(x)
        times.append(1000 * (time.perf_counter() - start))
    return times


def query_latency_ms(finder: SimilarFinder, images: np.ndarray, n: int = 200) -> dict:
    """Wall time of searching one image (after a warm-up): median, p90 and min (the min is
    the closest to an idle machine when other processes share the cores), and the median
    of its two parts, embedding the image and scanning the index."""
    for x in images[:10]:
        finder.search(x[None])
    items = [x[None] for x in images[:n]]
    total = _timed_ms(lambda x: finder.search(x, k=8), items)
    embed = _timed_ms(finder.predictor.embed, items)
    feats = [finder.predictor.embed(x) for x in items]
    scan = _timed_ms(lambda f: finder.index.query(f, 8), feats)
    return {"median_ms": round(float(np.median(total)), 2),
            "p90_ms": round(float(np.percentile(total, 90)), 2),
            "min_ms": round(float(np.min(total)), 2),
            "embed_median_ms": round(float(np.median(embed)), 2),
            "scan_median_ms": round(float(np.median(scan)), 2), "queries": len(total)}


def photo_rows(photos_dir: Path) -> list[tuple[Path, int]]:
    with open(photos_dir / "fmnist-labels.csv", newline="") as f:
        return [(photos_dir / r["path"], int(r["label"])) for r in csv.DictReader(f)
                if r["path"].startswith("validation/") and int(r["label"]) >= 0]


def photo_figures(finder: SimilarFinder, photos_dir: Path, k: int) -> dict:
    rows = photo_rows(photos_dir)
    images = finder.predictor.preprocess([p for p, _ in rows])
    labels = np.array([y for _, y in rows])
    top1 = finder.predictor.probs_of(images).argmax(1)
    neighbours = np.array([[n.label for n in row] for row in finder.search(images, k)])
    return {"photos": len(rows), "top1_accuracy": round(float((top1 == labels).mean()), 4),
            f"precision_at_{k}": round(precision_at_k(neighbours, labels), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="run folder written by `fmnist train`")
    ap.add_argument("--photos-dir", default=os.environ.get("FMNIST_PHOTOS_DIR"),
                    help="clothing-dataset-small folder (default $FMNIST_PHOTOS_DIR)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Run.load(args.run, device="cpu")
    index, build_s = build_index(run)
    finder = SimilarFinder(Predictor.from_model(run.model, run.meta), index,
                           run.dataset.train.images)
    test = run.dataset.test
    start = time.perf_counter()
    neighbours = index.query(embed_model(run.model, test.images, mean=run.meta.mean,
                                         std=run.meta.std), args.k)[0]
    test_s = time.perf_counter() - start
    payload = {
        "run": str(args.run), "k": args.k, "threads": args.threads,
        "index": {"images": len(index), "dim": int(index.vectors.shape[1]),
                  "build_seconds": round(build_s, 2)},
        "query_one_image": query_latency_ms(finder, test.images),
        "fashion_mnist_test": {
            "queries": len(test),
            f"precision_at_{args.k}": round(precision_at_k(index.labels[neighbours],
                                                           test.labels), 4),
            "top1_accuracy": round(float((run.predict(test.images)
                                          == test.labels).mean()), 4),
            "seconds_all_queries": round(test_s, 2)},
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if args.photos_dir and (Path(args.photos_dir) / "fmnist-labels.csv").is_file():
        payload["photos_validation"] = photo_figures(finder, Path(args.photos_dir), args.k)
    else:
        print("no --photos-dir with fmnist-labels.csv: photo figures skipped", file=sys.stderr)
    path = write_result("similar", torch.device("cpu"), payload)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
