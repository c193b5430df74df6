"""Variants of the `fast` recipe, trained side by side: test accuracy (with TTA) and time.

    python benchmarks/fast_variants.py [--variants base,wf4,wf4-p20] [--seeds 0,1,2]
                                       [--out-stem fast-variants] [--append]
                                       [--step-rates REPEATS] [--recipe fast] [--view-sets]
                                       [--keep DIR]

Seeds run in the outer loop and variants alternately in the inner one, so a machine
whose load changes affects every variant alike. Each run is `fmnist.train("fast",
**overrides)` (``--recipe``: another base recipe) as the CLI trains it (calibration
hold-out, final test evaluation with the recipe's TTA), without the report. Writes
``benchmarks/results/<out-stem>-<device>.json``: every run (seed, test accuracy, training
seconds, whole train() seconds) and per variant
the medians and the ratio of its median training time to ``base``'s. ``--append`` adds
runs to the file's (a study in several sittings); ``--step-rates`` only measures each
variant's images per CPU-second of a training step (wall-clock seconds on a shared
machine mostly measure the other jobs) into the same file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, device_tag, select_device, write_result

from fmnist.datasets import load_dataset
from fmnist.models import create_model
from fmnist.recipes import resolve_recipe
from fmnist.runs import read_history
from fmnist.training import train

# The recipes move on; a variant starts from the fields its round's recipe had (the dicts
# below) and names every field it changes, so it keeps measuring what it measured.
# fast before round 5 (3 SGD epochs; Muon at the default rate when a variant asks for it):
_FAST3 = {"optimizer": "sgd", "muon_lr": 0.24, "epochs": 3, "epoch_fractions": ()}
_WF = {**_FAST3,
       "model_kwargs": {"widths": (32, 64, 128), "residual": False, "stem": "whiten-frozen"}}
# accurate before round 6 (20 SGD epochs, the fastnet default, erasing at p 0.5, flip TTA)
_ERASE50 = ("flip", "translate:2", "erase")
_ACC_NET5 = {"model_kwargs": {}, "tta_shifts": ((0, 0),), "augment": _ERASE50}
_R5 = {**_ACC_NET5, "optimizer": "muon-sgd", "muon_lr": 0.1, "epochs": 26}  # accurate, round 5
_VSHIFTS = ((0, 0), (1, 0), (-1, 0))
_GRID = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))
_R6 = {"model_kwargs": {"residual": True}, "optimizer": "muon-sgd", "muon_lr": 0.05,
       "tta_shifts": _VSHIFTS, "augment": _ERASE50, "epochs": 26}  # accurate, round 6
_R7 = {**_R6, "augment": ("flip", "translate:2", "erase:0.25"), "tta_shifts": _GRID}
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "wf3": {**_WF},
    "wf4": {**_WF, "epochs": 4},
    "wf4-p20": {**_WF, "epochs": 4, "epoch_sizes": (20,)},
    "wf4-p16": {**_WF, "epochs": 4, "epoch_sizes": (16,)},
    "wf5-p20": {**_WF, "epochs": 5, "epoch_sizes": (20, 20)},
    "p20": {**_FAST3, "epochs": 4, "epoch_sizes": (20,)},
    # issue 16, round 4: alternating flips, Muon on the conv filters (fmnist.optim.MuonSGD)
    "alt3": {**_FAST3, "augment": ("altflip",)},
    "muon3": {**_FAST3, "optimizer": "muon-sgd"},
    "muon3-lr10": {**_FAST3, "optimizer": "muon-sgd", "muon_lr": 0.1},
    "muon3-lr05": {**_FAST3, "optimizer": "muon-sgd", "muon_lr": 0.05},
    "alt-muon3": {**_FAST3, "augment": ("altflip",), "optimizer": "muon-sgd", "muon_lr": 0.1},
    "muon3-lr15": {**_FAST3, "optimizer": "muon-sgd", "muon_lr": 0.15},
    "muon-wf4": {**_WF, "epochs": 4, "optimizer": "muon-sgd", "muon_lr": 0.1},
    "alt-wf4": {**_WF, "epochs": 4, "augment": ("altflip",)},
    # round 5: later epochs on a share of the images, drawn towards the hard ones
    "share50": {**_FAST3, "epochs": 4, "epoch_fractions": (1, 0.5, 0.5, 0.5)},
    "share40": {**_FAST3, "epochs": 4, "epoch_fractions": (1, 0.4, 0.4, 0.4)},
    "share30x5": {**_FAST3, "epochs": 5, "epoch_fractions": (1, 0.3, 0.3, 0.3, 0.3)},
    "share50-muon": {**_FAST3, "epochs": 4, "epoch_fractions": (1, 0.5, 0.5, 0.5),
                     "optimizer": "muon-sgd", "muon_lr": 0.1},
    "share40-muon": {**_FAST3, "epochs": 4, "epoch_fractions": (1, 0.4, 0.4, 0.4),
                     "optimizer": "muon-sgd", "muon_lr": 0.1},
    "share50x3-muon": {**_FAST3, "epochs": 3, "epoch_fractions": (1, 0.5, 0.5),
                       "optimizer": "muon-sgd", "muon_lr": 0.1},
    "share30x5-muon": {**_FAST3, "epochs": 5, "epoch_fractions": (1, 0.3, 0.3, 0.3, 0.3),
                       "optimizer": "muon-sgd", "muon_lr": 0.1},
    # round 5, for --recipe accurate (then 20 SGD epochs, "base" in its result file): 26
    # epochs, 23 of them on 60% of the steps (0.84x the steps); 40 epochs, 37 on 45% (0.98x)
    "acc-share60": {**_ACC_NET5, "optimizer": "sgd", "epochs": 26,
                    "epoch_fractions": (1, 1, 1, 0.6)},
    "acc-share60-muon": {**_R5, "epochs": 26, "epoch_fractions": (1, 1, 1, 0.6)},
    "acc-share45x40-muon": {**_R5, "epochs": 40, "epoch_fractions": (1, 1, 1, 0.45)},
    # round 6, for --recipe accurate; the recipe is now acc-r6 (residual conv in every
    # block, muon_lr 0.05, TTA over flips x up/down shifts), so each variant names every
    # field it changes: acc-r5 is the round-5 recipe (1 residual conv in blocks 2-3,
    # muon_lr 0.1, flip TTA)
    "acc-r5": {**_R5},
    "acc-r5-res": {**_R5, "model_kwargs": {"residual": True}},
    "acc-r5-w48x16": {**_R5, "model_kwargs": {"widths": (48, 96, 192)}, "epochs": 16},
    "acc-r5-res-w40x20": {**_R5, "model_kwargs": {"residual": True, "widths": (40, 80, 160)},
                          "epochs": 20},
    "acc-r5-res-x34": {**_R5, "model_kwargs": {"residual": True}, "epochs": 34},
    "acc-r5-res-s32": {**_R5, "model_kwargs": {"residual": True, "stem_width": 32}},
    "acc-r6": {**_R6},
    # round 7: the last max-pool keeps 7x7's last row and column (4x4, not 3x3)
    "acc-r6-ceil": {**_R6, "model_kwargs": {"residual": True, "ceil_pool": True}},
    # round 7: lighter random erasing; stronger label smoothing
    "acc-r6-erase25": {**_R6, "augment": ("flip", "translate:2", "erase:0.25")},
    "acc-r6-ls20": {**_R6, "label_smoothing": 0.2},
    # lighter erasing, TTA over flips x every shift of at most 1 px (18 views)
    "acc-r7": {**_R7},
    # round 8: the recipe is acc-r7; 30 epochs (27 on 60% of the steps), 1.14x the steps
    "acc-r8-x30": {**_R7, "epochs": 30},
}


def run_variant(name: str, seed: int, ds, device: str, recipe: str = "fast",
                view_sets: bool = False, keep: Path | None = None) -> dict[str, Any]:
    """Train one variant with one seed in a temporary folder (``keep``: in the new run
    folder ``keep/<variant>-s<seed>``, left there); its figures (with ``view_sets``, also
    the test accuracy of each of benchmarks/tta.py's TTA view sets)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = keep / f"{name}-s{seed}" if keep is not None else Path(tmp) / "run"
        t0 = time.perf_counter()
        train(recipe, out=run, data=ds, device=device, seed=seed, **VARIANTS[name])
        wall = time.perf_counter() - t0
        metrics = json.loads((run / "metrics.json").read_text())
        seconds = sum(float(r["seconds"]) for r in read_history(run))
        views = view_set_accuracies(run, ds, device) if view_sets else None
    row = {"variant": name, "seed": seed, "test_acc": metrics["accuracy"],
           "train_seconds": round(seconds, 1), "train_call_seconds": round(wall, 1)}
    if views is not None:
        row["view_sets"] = views
    print(json.dumps(row), flush=True)
    return row


def view_set_accuracies(run: Path, ds, device: str) -> dict[str, float]:
    """Test accuracy of each TTA view set of benchmarks/tta.py (softmax at T = 1)."""
    from tta import view_probs, view_set_accuracy

    from fmnist.checkpoints import load_model
    from fmnist.devices import use_bf16

    dev = select_device(device)
    model, meta = load_model(run, dev)
    probs = view_probs(model, ds.test.images, meta.mean, meta.std, dev, use_bf16(dev, "auto"))
    return {k: round(v, 4) for k, v in view_set_accuracy(probs, ds.test.labels).items()}


def step_rate(recipe, dev, steps: int = 20) -> float:
    """Images per CPU-second of the fit loop's own step (fmnist.loop.train_step) with the
    recipe's model, optimizer (Muon's orthogonalization included) and precision, on random
    28x28 batches, after 3 warm-up steps."""
    import torch

    from fmnist.loop import TrainState, train_step

    model = create_model(recipe.model, num_classes=10, **recipe.model_kwargs)
    model = model.to(dev, memory_format=torch.channels_last).train()
    state = TrainState.create(recipe, model, dev, steps_per_epoch=steps + 3)
    x = torch.randn(recipe.batch_size, 1, 28, 28, device=dev)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (recipe.batch_size,), device=dev)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.process_time()
        train_step(state, x, y)
    return recipe.batch_size * steps / (time.process_time() - t0)


def step_rates(names: list[str], repeats: int, device: str) -> dict[str, float]:
    """Median images per CPU-second of a training step of each variant on 28x28 batches
    (a resized first epoch is not modelled), measured alternately."""
    dev = select_device(device)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for n in names:
            rates[n].append(step_rate(resolve_recipe("fast", **VARIANTS[n]), dev))
    return {n: round(statistics.median(v)) for n, v in rates.items()}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        rs = [r for r in runs if r["variant"] == name]
        accs = [r["test_acc"] for r in rs]
        out[name] = {"overrides": VARIANTS[name],
                     "seeds": len(rs), "test_acc_median": statistics.median(accs),
                     "test_acc_min": min(accs), "test_acc_max": max(accs),
                     "train_seconds_median": statistics.median(r["train_seconds"] for r in rs)}
        scored = [r["view_sets"] for r in rs if "view_sets" in r]
        if scored:
            out[name]["view_sets_median"] = {
                k: statistics.median(v[k] for v in scored) for k in scored[0]}
    if "base" in out:
        for s in out.values():
            s["train_time_vs_base"] = round(
                s["train_seconds_median"] / out["base"]["train_seconds_median"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="base,wf4,wf4-p20",
                   help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-stem", default="fast-variants")
    p.add_argument("--recipe", default="fast", help="the recipe the variants change")
    p.add_argument("--step-rates", type=int, metavar="REPEATS",
                   help="only measure each variant's training-step rate, REPEATS times")
    p.add_argument("--view-sets", action="store_true",
                   help="also score each run's TTA view sets (benchmarks/tta.py)")
    p.add_argument("--append", action="store_true",
                   help="keep the runs already in the result file; skip their variant+seed")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="keep each run folder as DIR/<variant>-s<seed> (new or empty: a "
                        "folder holding anything is refused, as fmnist train --out does)")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    device = select_device(args.device)
    path = RESULTS / f"{args.out_stem}-{device_tag(device)}.json"
    keep = args.append or args.step_rates  # step rates go next to the file's runs
    old = json.loads(path.read_text()) if keep and path.is_file() else {}
    runs = old.get("runs", [])
    if args.step_rates:
        rates = step_rates(names, args.step_rates, args.device)
        print(json.dumps(rates))
        write_result(args.out_stem, device, {**{k: old[k] for k in ("runs", "summary")
                                                if k in old}, "step_rates": rates})
        return 0
    ds = load_dataset("fashion-mnist")
    done = {(r["variant"], r["seed"]) for r in runs}
    for seed in args.seeds.split(","):
        for name in names:  # written after every run: an interrupted study keeps its runs
            if (name, int(seed)) in done:
                continue
            runs.append(run_variant(name, int(seed), ds, args.device, args.recipe,
                                    args.view_sets, args.keep))
            summary = summarize(runs)
            kept = {k: old[k] for k in ("step_rates",) if k in old}
            write_result(args.out_stem, device, {"recipe": args.recipe, "runs": runs,
                                                 "summary": summary, **kept})
    print(json.dumps(summarize(runs), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
