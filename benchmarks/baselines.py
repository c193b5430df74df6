"""Reproduce the five Keras tutorial baselines with their recipes.

    python benchmarks/baselines.py [--recipes baseline-dropout,...] [--device auto]

Trains each recipe once (seed 0) on the full Fashion-MNIST training set and writes
``benchmarks/results/baselines-<device>.json``: test accuracy, the validation accuracy
where the tutorial reports that instead, epochs run, training seconds, parameter count
(Keras' count, BN moving statistics included), the tutorial's reported figure, and the
machine. ``python benchmarks/readme_tables.py`` puts the table into the README.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time

from _common import select_device, write_result

from fmnist.models import count_params
from fmnist.recipes import get_recipe, list_recipes
from fmnist.training import train


def reported_figure(text: str) -> tuple[float | None, str]:
    """'90.8% test' -> (0.908, 'test')."""
    m = re.match(r"\s*([\d.]+)%\s*(test|val)", text)
    return (float(m.group(1)) / 100, m.group(2)) if m else (None, "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=",".join(list_recipes("baseline-*")))
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device = select_device(args.device)
    rows = []
    for name in args.recipes.split(","):
        recipe = get_recipe(name)
        reported, kind = reported_figure(recipe.reported)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            run = train(recipe, out=f"{tmp}/{name}", data_dir=args.data_dir, device=device,
                        seed=args.seed)
            wall = time.perf_counter() - t0
        ours = run.test_accuracy if kind != "val" else run.history[-1]["val_acc"]
        rows.append({
            "recipe": name,
            "model": recipe.model,
            "params_keras": count_params(run.model, include_bn_buffers=True),
            "epochs_run": len(run.history),
            "max_epochs": recipe.epochs,
            "stop_reason": run.stop_reason,
            "weights_epoch": run.meta.metrics["weights_epoch"],
            "test_accuracy": run.test_accuracy,
            "final_val_accuracy": run.history[-1]["val_acc"],
            "best_val_accuracy": run.meta.metrics["best_val_acc"],
            "train_seconds": run.meta.metrics["train_seconds"],
            "wall_seconds": round(wall, 1),
            "reported": recipe.reported,
            "reported_accuracy": reported,
            "compared": kind or None,
            "ours_compared": ours,
            "difference_points": None if reported is None else round(100 * (ours - reported), 2),
        })
        print(f"{name}: test {run.test_accuracy:.2%}  reported {recipe.reported or '-'}  "
              f"{len(run.history)} epochs  {rows[-1]['train_seconds']:.0f} s", flush=True)
    path = write_result("baselines", device, {"seed": args.seed, "results": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
