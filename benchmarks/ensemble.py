"""Ensembles of k runs of one recipe: test accuracy against total training time.

    python benchmarks/ensemble.py [--recipe fast] [--k 3] [--runs RUN ...]
                                  [--keep DIR] [--device auto]

Uses the ``--runs`` given (trained runs of the recipe) and trains the rest with seeds
0, 1, ... not taken yet, until there are ``k``; then, for k = 1..K, the ensemble of the
first k runs (``fmnist ensemble``) is evaluated on the 10,000 test images. Writes
``benchmarks/results/ensemble-<recipe>-<device>.json`` (each member's seed, accuracy and
training seconds; per k the ensemble's accuracy, total training seconds and evaluation
images/s; the machine). ``python benchmarks/readme_tables.py`` puts the table into the
README.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from _common import select_device, write_result

from fmnist.datasets import load_dataset
from fmnist.ensemble import Member, build_ensemble, load_members
from fmnist.recipes import get_recipe
from fmnist.runs import read_config
from fmnist.training import train


def trained_members(recipe: str, k: int, runs: list[str], root: Path, ds, device
                    ) -> list[str]:
    """``runs`` plus new runs of ``recipe`` (untaken seeds) until there are ``k``."""
    taken = {read_config(r)["recipe"]["seed"] for r in runs}
    runs = list(runs)
    seed = 0
    while len(runs) < k:
        if seed not in taken:
            out = root / f"{recipe}-seed{seed}"
            train(recipe, out=out, data=ds, device=device, seed=seed)
            runs.append(str(out))
        seed += 1
    return runs[:k]


def member_row(m: Member) -> dict:
    return {"run": str(m.dir), "seed": m.config["recipe"]["seed"], "accuracy": m.accuracy,
            "train_seconds": round(m.train_seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fast")
    p.add_argument("--k", type=int, default=3, help="largest ensemble (default 3)")
    p.add_argument("--runs", nargs="*", default=[], help="trained runs of --recipe to use")
    p.add_argument("--keep", help="folder for the trained runs and ensembles (default: temp)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device = select_device(args.device)
    ds = load_dataset(get_recipe(args.recipe).dataset, args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        runs = trained_members(args.recipe, args.k, args.runs, root, ds, device)
        members = [member_row(m) for m in load_members(runs)]
        rows = [{"k": 1, "accuracy": members[0]["accuracy"],
                 "train_seconds": members[0]["train_seconds"], "images_per_second": None}]
        for k in range(2, args.k + 1):
            m = build_ensemble(runs[:k], root / f"ensemble-{k}", data=ds, device=device,
                               overwrite=True)
            rows.append({"k": k, "accuracy": m["accuracy"],
                         "train_seconds": round(sum(r["train_seconds"] for r in members[:k]), 1),
                         "images_per_second": m["images_per_second"], "tta": m["tta"]})
    for r in rows:
        print(f"k={r['k']}: {r['accuracy']:.2%} after {r['train_seconds']:.0f} s of training")
    path = write_result(f"ensemble-{args.recipe}", device,
                        {"recipe": args.recipe, "members": members, "results": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
