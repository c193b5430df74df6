"""How many training images does the OOD score's fit need? AUROC against the fit's size.

    python benchmarks/ood_fit_size.py RUN [RUN ...] [--sizes 2500,5000,8000,10000,20000]
                                      [--subsets 3] [--stem ood-fit-size]

The class means and covariance of the stored ``relative`` score (:mod:`fmnist.ood`) are
fitted, as training fits them, on a stratified share of the run's training images (the
calibration hold-out left out), their features taken in the run's precision; the
standardization and threshold come from the run's 2,000 held-out images. Every forward
pass runs once: the features of the pool (the largest size; the same stratified, seeded
share of the training images training takes), of the held-out images, of the
Fashion-MNIST test set and of the OOD sets of ``benchmarks/ood.py`` (digits, glyphs,
noise, blobs, blocks; float32, as predict and serve score them). Each size is then fitted
on ``--subsets`` different stratified subsets of the pool (the whole pool once at its own
size), and the AUROC of every OOD set against the test set is reported per subset, with
the median and minimum, beside the seconds the training-image pass takes at that size.
Writes ``benchmarks/results/<stem>-cpu.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result
from ood import digits, glyphs, noise

from fmnist.calibration import calibration_split, view_logits_and_features
from fmnist.datasets import stratified_split
from fmnist.ood import FIT_IMAGES, auroc, fit_scorer
from fmnist.runs import Run, prepare_data


def features(run: Run, images: np.ndarray, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(V=1 logits, features) of ``images`` with the run's normalization, on the CPU."""
    return view_logits_and_features(run.model, images, mean=run.meta.mean, std=run.meta.std,
                                    device=run.device, bf16=bf16,
                                    channels_last=run.recipe.channels_last)


def passes(run: Run, pool_size: int) -> dict[str, Any]:
    """Every forward pass the fits and scores need, once."""
    train, val, _ = prepare_data(run.recipe, run.dataset)
    train, cal, _ = calibration_split(train, val, run.recipe.seed)
    _, keep = stratified_split(train.labels, min(1.0, pool_size / len(train)), 0)
    pool = train.subset(keep)
    t0 = time.perf_counter()
    _, pool_feats = features(run, pool.images, bf16=run.bf16)
    per_image = (time.perf_counter() - t0) / len(pool)
    cal_logits, cal_feats = features(run, cal.images)
    sets = {"digits": digits(), "glyphs": glyphs(), **noise()}
    scored = {"test": features(run, run.dataset.test.images)}
    scored.update({name: features(run, imgs) for name, imgs in sets.items()})
    return {"pool": pool, "pool_feats": pool_feats.numpy(), "per_image": per_image,
            "cal": (cal_feats, cal_logits[0]), "scored": scored}


def aurocs(run: Run, p: dict[str, Any], index: np.ndarray) -> dict[str, float]:
    """AUROC of each OOD set against the test set, the scorer fitted on ``index`` of the pool."""
    scorer = fit_scorer(p["pool_feats"][index], p["pool"].labels[index],
                        len(run.classes), *p["cal"], method="relative")
    with torch.no_grad():
        scores = {name: scorer(f, z[0]).numpy() for name, (z, f) in p["scored"].items()}
    return {name: round(auroc(scores["test"], s), 4) for name, s in scores.items()
            if name != "test"}


def sweep(run: Run, sizes: list[int], subsets: int) -> dict[str, Any]:
    p = passes(run, max(sizes))
    labels, out = p["pool"].labels, {}
    for size in sizes:
        rows = []
        for seed in range(1 if size >= len(labels) else subsets):
            index = (np.arange(len(labels)) if size >= len(labels)
                     else stratified_split(labels, size / len(labels), seed)[1])
            rows.append(aurocs(run, p, index))
        out[str(size)] = {
            "fit_pass_seconds": round(p["per_image"] * min(size, len(labels)), 3),
            "subsets": rows,
            "median": {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]},
            "min": {k: min(r[k] for r in rows) for k in rows[0]}}
        print(size, out[str(size)]["median"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    ap.add_argument("--sizes", default="2500,5000,8000,10000,20000")
    ap.add_argument("--subsets", type=int, default=3, help="subsets of the pool per size")
    ap.add_argument("--data-dir", help="the runs' dataset folder (default: as recorded)")
    ap.add_argument("--stem", default="ood-fit-size")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for path in args.runs:
        run = Run.load(path, data_dir=args.data_dir, device="cpu")
        results[str(path)] = {"recipe": run.recipe.name, "seed": run.recipe.seed,
                              "sizes": sweep(run, sizes, args.subsets)}
    print(write_result(args.stem, torch.device("cpu"), {
        "sizes": sizes, "subsets": args.subsets, "fit_images_now": FIT_IMAGES,
        "runs": results}))


if __name__ == "__main__":
    main()
