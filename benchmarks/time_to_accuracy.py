"""Time to accuracy: train recipes side by side and record test accuracy against time.

    python benchmarks/time_to_accuracy.py [--recipes fast,baseline-3conv,accurate:1]
                                          [--seeds 3] [--budget SECONDS] [--device auto]
                                          [--keras [--keras-python PYTHON]]
                                          [--results-dir DIR]

Every run evaluates the 10,000 test images at each epoch end; that evaluation is timed
separately and excluded from the training time on the curve. Writes
``benchmarks/results/time-to-accuracy-<device>.json`` (each run's curve, time to
90/91/92/93/94%, final accuracy; per recipe the median and spread over seeds and the
speedup against the reference (below); the machine) and ``time-to-accuracy-<device>.png``,
and prints a table. ``python benchmarks/readme_tables.py`` copies the table into the README.

With ``--keras`` the tutorial's own Keras code (``keras_reference.py``, tensorflow-cpu)
trains first, in a subprocess of this run (``--keras-python``: an interpreter with
tensorflow; default this one), as the recipe ``keras-tutorial``; without tensorflow it is
skipped and the reason recorded. It is then the reference of the speedup column:

Speedup = (the reference's median full training time) / (the recipe's median time to
reach the reference's median final test accuracy); the reference is ``keras-tutorial``
when it ran, else ``baseline-3conv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, select_device, write_result

from fmnist.callbacks import Callback
from fmnist.datasets import load_dataset
from fmnist.loop import Loop
from fmnist.plots import accuracy_vs_time
from fmnist.recipes import get_recipe
from fmnist.training import train

THRESHOLDS = (0.90, 0.91, 0.92, 0.93, 0.94, 0.945, 0.95)
REFERENCE = "baseline-3conv"
KERAS = "keras-tutorial"


class TestCurve(Callback):
    """Callback: test accuracy at each epoch end, against cumulative training seconds."""

    def __init__(self, images, labels, budget: float | None) -> None:
        self.images, self.labels, self.budget = images, labels, budget
        self.curve: list[tuple[float, float]] = []
        self.train_seconds = 0.0
        self.eval_seconds = 0.0

    def on_epoch_end(self, state: Loop) -> str | None:
        self.train_seconds += state.row["seconds"]
        t0 = time.perf_counter()
        probs = state.predict_probs(self.images, tta=state.recipe.tta)
        acc = float((probs.argmax(1) == self.labels).mean())
        self.eval_seconds += time.perf_counter() - t0
        state.row["test_acc"] = acc
        self.curve.append((round(self.train_seconds, 2), acc))
        if self.budget is not None and self.train_seconds >= self.budget:
            return f"time budget of {self.budget:g} s reached"
        return None


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target), None)


def summarize(runs: list[dict]) -> dict[str, dict]:
    by_recipe: dict[str, list[dict]] = {}
    reference = KERAS if any(r["recipe"] == KERAS for r in runs) else REFERENCE
    for r in runs:
        by_recipe.setdefault(r["recipe"], []).append(r)
    summary = {}
    for name, rs in by_recipe.items():
        finals = [r["final_accuracy"] for r in rs]
        s = {
            "seeds": len(rs),
            "final_accuracy_median": statistics.median(finals),
            "final_accuracy_min": min(finals),
            "final_accuracy_max": max(finals),
            "final_accuracy_stdev": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "train_seconds_median": statistics.median(r["train_seconds"] for r in rs),
            "epochs_median": statistics.median(r["epochs"] for r in rs),
            "time_to": {},
        }
        for th in THRESHOLDS:
            times = [r["time_to"][f"{th:g}"] for r in rs]
            reached = [t for t in times if t is not None]
            s["time_to"][f"{th:g}"] = {
                "median": statistics.median(reached) if len(reached) == len(times) else None,
                "reached": f"{len(reached)}/{len(times)}",
            }
        summary[name] = s
    if reference in summary:
        ref = summary[reference]
        target = ref["final_accuracy_median"]
        for name, s in summary.items():
            times = [time_to(r["curve"], target) for r in by_recipe[name]]
            if all(t is not None for t in times):
                t = statistics.median(times)
                s["time_to_reference_accuracy"] = t
                s["speedup_vs_reference"] = round(ref["train_seconds_median"] / t, 2)
            else:
                s["time_to_reference_accuracy"] = None
                s["speedup_vs_reference"] = None
        summary["_reference"] = {"recipe": reference, "accuracy": target,
                                 "train_seconds": ref["train_seconds_median"]}
    return summary


def print_table(summary: dict[str, dict]) -> None:
    head = (f"{'recipe':16s} {'seeds':>5s} {'final acc (median, min-max)':>28s} "
            f"{'train s':>8s} {'to 91%':>7s} {'to 93%':>7s} {'to 94%':>7s} {'speedup':>8s}")
    print(head)
    for name, s in summary.items():
        if name.startswith("_"):
            continue
        fmt = (lambda v: "-" if v is None else f"{v:.0f}")  # noqa: E731
        acc = (f"{s['final_accuracy_median']:.2%} ({s['final_accuracy_min']:.2%}-"
               f"{s['final_accuracy_max']:.2%})")
        speed = s.get("speedup_vs_reference")
        print(f"{name:16s} {s['seeds']:5d} {acc:>28s} {s['train_seconds_median']:8.0f} "
              f"{fmt(s['time_to']['0.91']['median']):>7s} "
              f"{fmt(s['time_to']['0.93']['median']):>7s} "
              f"{fmt(s['time_to']['0.94']['median']):>7s} "
              f"{'-' if speed is None else f'{speed:.1f}x':>8s}")


def keras_runs(python: str, seeds: int, data_dir: str | None, limit: int | None = None
               ) -> tuple[list[dict], str | None]:
    """Run keras_reference.py in a subprocess: its runs (time_to recomputed on this
    script's thresholds), or no runs and the reason it was skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "keras.json"
        cmd = [python, str(Path(__file__).with_name("keras_reference.py")),
               "--seeds", str(seeds), "--out", str(out)]
        cmd += (["--data-dir", data_dir] if data_dir else []) + (
            ["--limit", str(limit)] if limit else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            last = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
            return [], last[-1]
        runs = json.loads(out.read_text())["runs"]
    for r in runs:
        r["time_to"] = {f"{th:g}": time_to(r["curve"], th) for th in THRESHOLDS}
        print(f"{KERAS} seed {r['seed']}: {r['final_accuracy']:.2%} after "
              f"{r['train_seconds']:.0f} s training ({r['epochs']} epochs)", flush=True)
    return runs, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=f"fast,{REFERENCE},accurate",
                   help="comma-separated; NAME:K runs that recipe with K seeds")
    p.add_argument("--seeds", type=int, default=3, help="seeds per recipe (default 3)")
    p.add_argument("--budget", type=float, help="stop each run after this much training time")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--out-stem", default="time-to-accuracy")
    p.add_argument("--results-dir", type=Path, default=RESULTS,
                   help="where the JSON and the plot go (default benchmarks/results)")
    p.add_argument("--train-limit", type=int, help="smoke test on a training subset")
    p.add_argument("--keras", action="store_true",
                   help="also train the tutorial's Keras code (keras_reference.py)")
    p.add_argument("--keras-python", default=sys.executable,
                   help="interpreter with tensorflow for --keras (default: this one)")
    p.add_argument("--keras-seeds", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    device = select_device(args.device)
    ds = load_dataset("fashion-mnist", args.data_dir)
    runs, keras_skipped = [], None
    if args.keras:
        runs, keras_skipped = keras_runs(args.keras_python, args.keras_seeds, args.data_dir,
                                          args.train_limit)
        if keras_skipped:
            print(f"{KERAS} skipped: {keras_skipped}")
    for item in args.recipes.split(","):
        name, _, n_seeds = item.partition(":")  # "accurate:1" runs that recipe with 1 seed
        recipe = get_recipe(name)
        for seed in range(int(n_seeds) if n_seeds else args.seeds):
            curve = TestCurve(ds.test.images, ds.test.labels, args.budget)
            with tempfile.TemporaryDirectory() as tmp:
                run = train(recipe, data=ds, out=f"{tmp}/run", device=device, seed=seed,
                            callbacks=[curve], train_limit=args.train_limit)
                epochs = len(run.history)  # history.csv: read before the folder goes
            runs.append({
                "recipe": name, "seed": seed, "epochs": epochs,
                "curve": curve.curve,
                "final_accuracy": run.test_accuracy,
                "train_seconds": round(curve.train_seconds, 2),
                "eval_seconds": round(curve.eval_seconds, 2),
                "stop_reason": run.stop_reason,
                "time_to": {f"{th:g}": time_to(curve.curve, th) for th in THRESHOLDS},
            })
            print(f"{name} seed {seed}: {run.test_accuracy:.2%} after "
                  f"{curve.train_seconds:.0f} s training ({epochs} epochs)",
                  flush=True)
    summary = summarize(runs)
    print_table(summary)
    stem = args.out_stem
    path = write_result(stem, device, {"recipes": args.recipes.split(","),
                                       "seeds": args.seeds, "budget": args.budget,
                                       "keras_skipped": keras_skipped,
                                       "summary": summary, "runs": runs},
                        folder=args.results_dir)
    curves = {f"{r['recipe']} s{r['seed']}": r["curve"] for r in runs}
    png = path.with_suffix(".png")  # beside the JSON, named as write_result named it
    accuracy_vs_time(curves, path=png, targets=(0.91, 0.93, 0.945))
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
