"""Where a training step's time goes: images/s and an operator breakdown per model.

    python benchmarks/train_step.py [--recipes fast,accurate,baseline-3conv]
        [--models 'fastnet:{"widths": [24, 48, 96]};resnet'] [--batch 256] [--steps 20]
        [--loop-before SRC [--loop-runs 5] [--loop-limit 10000]]

Times :func:`fmnist.loop.train_step`, the step the fit loop takes -- the recipe's
optimizer and schedule, label smoothing and clipping, forward under bf16 autocast where
supported, channels-last -- on random 28x28 inputs for each recipe's model and each
``NAME[:JSON options]`` model (trained with the ``fast`` recipe's settings). Reports the
median images/s over ``--steps`` timed steps (after warm-up) and MFLOPs per image, then
profiles a few steps with ``torch.profiler`` and groups the self time into convolution
forward/backward, pooling, normalization and the rest.

``--loop-before SRC`` times the whole fit loop instead (batches, augmentation, step,
meters, callbacks): one epoch of ``fast`` on ``--loop-limit`` Fashion-MNIST images,
trained in fresh processes alternately with the fmnist source tree SRC (e.g. an older
commit: ``git archive COMMIT src | tar -x -C /tmp/before``, SRC ``/tmp/before/src``) and
this one, ``--loop-runs`` times each; it reports each side's seconds per step
(history.csv's epoch seconds over the steps), the ratio of their medians and the median
ratio of the back-to-back pairs, in
``benchmarks/results/train-loop-<device>.json``. Otherwise writes
``benchmarks/results/train-step-<device>.json``. Run it on a quiet machine; compare
ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import select_device, write_result
from torch.profiler import ProfilerActivity, profile

from fmnist.loop import TrainState, train_step
from fmnist.models import create_model, flops_per_image
from fmnist.recipes import Recipe, get_recipe, resolve_recipe

# profiler operator name -> group (first matching substring wins); the rest is "other"
OPERATOR_GROUPS = (("convolution_backward", "conv backward"), ("convolution", "conv forward"),
                   ("max_pool", "pooling"), ("fill_", "pooling"), ("batch_norm", "normalization"))
GROUPS = ("conv forward", "conv backward", "pooling", "normalization", "other")  # column order
SRC = Path(__file__).resolve().parents[1] / "src"


def parse_model(spec: str) -> tuple[str, dict]:
    """``fastnet:{"widths": [24, 48, 96]}`` -> ("fastnet", {"widths": (24, 48, 96)})."""
    name, _, options = spec.partition(":")
    kwargs = json.loads(options) if options else {}
    return name, {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def time_shares(step, device: torch.device, n: int = 5) -> dict[str, float]:
    """Share of the profiled self time per operator group over ``n`` steps."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        for _ in range(n):
            step()
    shares: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        group = next((g for sub, g in OPERATOR_GROUPS if sub in event.key), "other")
        shares[group] = shares.get(group, 0.0) + event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {g: round(v / total, 3) for g, v in sorted(shares.items())}


def measure(recipe: Recipe, device: torch.device, batch: int, steps: int) -> dict:
    """images/s of ``train_step`` with ``recipe``'s model and training settings."""
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = create_model(recipe.model, **recipe.model_kwargs)
    model = model.to(device, memory_format=memory_format).train()
    state = TrainState.create(recipe, model, device, steps_per_epoch=steps + 10)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        train_step(state, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
    return {"images_per_second": round(batch / statistics.median(seconds)),
            "mflops_per_image": round(flops_per_image(model) / 1e6, 1), "bf16": state.bf16,
            "optimizer": recipe.optimizer, "label_smoothing": recipe.label_smoothing,
            "grad_clip": recipe.grad_clip, "time_share": time_shares(step, device)}


LOOP_SCRIPT = """
import json, sys, tempfile
from fmnist.training import train
with tempfile.TemporaryDirectory() as d:
    run = train("fast", out=d + "/run", epochs=1, train_limit={limit}, device={device!r},
                evaluate_test=False, calibrate=False, offline=True)
    print(json.dumps({{"seconds": run.history[0]["seconds"]}}))  # before the folder goes
"""


def loop_seconds(src: Path, limit: int, device: str) -> float:
    """history.csv's epoch seconds of one epoch of ``fast`` trained from source tree ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "FMNIST_NO_PROGRESS": "1"}
    out = subprocess.run([sys.executable, "-c", LOOP_SCRIPT.format(limit=limit, device=device)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def compare_loops(before: Path, runs: int, limit: int, device: str) -> dict:
    """Seconds per step of the fit loop, ``before`` and this tree alternately."""
    steps = math.ceil(limit / get_recipe("fast").batch_size)
    sides: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(runs):
        for side, src in (("before", before), ("after", SRC)):
            sides[side].append(round(loop_seconds(src, limit, device) / steps, 4))
            print(f"loop run {i + 1}/{runs} {side}: {sides[side][-1] * 1e3:.0f} ms/step",
                  flush=True)
    medians = {side: statistics.median(v) for side, v in sides.items()}
    # each pair ran back to back, under the same load: its ratio is the steadier figure
    paired = [round(a / b, 3) for a, b in zip(sides["after"], sides["before"], strict=True)]
    return {"recipe": "fast", "train_limit": limit, "steps": steps, "runs": runs,
            "before_src": str(before), "seconds_per_step": sides,
            "median_seconds_per_step": medians,
            "after_over_before": round(medians["after"] / medians["before"], 3),
            "paired_after_over_before": paired,
            "median_paired_after_over_before": statistics.median(paired)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="fast,accurate,baseline-3conv")
    p.add_argument("--models", default="", help="NAME[:JSON options] entries separated by ';'")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--loop-before", type=Path, default=None,
                   help="an fmnist source tree (holding fmnist/) to time the fit loop against")
    p.add_argument("--loop-runs", type=int, default=5)
    p.add_argument("--loop-limit", type=int, default=10000)
    args = p.parse_args(argv)
    device = select_device(args.device)
    if args.loop_before is not None:
        loop = compare_loops(args.loop_before, args.loop_runs, args.loop_limit, str(device))
        print(f"fit loop: after/before = {loop['after_over_before']:.3f} (medians of "
              f"{args.loop_runs} runs each), {loop['median_paired_after_over_before']:.3f} "
              "(median of the back-to-back pairs)")
        print(f"wrote {write_result('train-loop', device, loop)}")
        return 0
    torch.manual_seed(0)
    specs = {f"recipe {name}": get_recipe(name) for name in filter(None, args.recipes.split(","))}
    for spec in filter(None, args.models.split(";")):
        name, kwargs = parse_model(spec)
        specs[spec] = resolve_recipe("fast", model=name, model_kwargs=kwargs)
    results = {}
    print(f"{'model':40s} {'MFLOPs':>7s} {'img/s':>7s}  " + "  ".join(f"{g:>13s}" for g in GROUPS))
    for label, recipe in specs.items():
        r = measure(recipe, device, args.batch, args.steps)
        results[label] = {"model": recipe.model, "kwargs": dict(recipe.model_kwargs), **r}
        share = "  ".join(f"{r['time_share'].get(g, 0.0):13.0%}" for g in GROUPS)
        print(f"{label:40s} {r['mflops_per_image']:7.1f} {r['images_per_second']:7d}  {share}",
              flush=True)
    path = write_result("train-step", device, {"batch": args.batch, "steps": args.steps,
                                               "groups": GROUPS, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
