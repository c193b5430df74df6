"""Where a training step's time goes: images/s and an operator breakdown per model.

    python benchmarks/train_step.py [--recipes fast,accurate,baseline-3conv]
        [--models 'fastnet:{"widths": [24, 48, 96]};resnet'] [--batch 256] [--steps 20]

Times the fit loop's step (forward under bf16 autocast where supported, channels-last,
cross-entropy, backward, SGD with Nesterov momentum) on random 28x28 inputs for each
recipe's model and each ``NAME[:JSON options]`` model, reports the median images/s over
``--steps`` timed steps (after warm-up) and MFLOPs per image, then profiles a few steps
with ``torch.profiler`` and groups the self time into convolution forward/backward,
pooling, normalization and the rest. Writes ``benchmarks/results/train-step-<device>.json``.
Run it on a quiet machine; compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import select_device, write_result
from torch import nn
from torch.profiler import ProfilerActivity, profile

from fmnist.devices import autocast, use_bf16
from fmnist.models import create_model, flops_per_image
from fmnist.recipes import get_recipe

# profiler operator name -> group (first matching substring wins); the rest is "other"
OPERATOR_GROUPS = (("convolution_backward", "conv backward"), ("convolution", "conv forward"),
                   ("max_pool", "pooling"), ("fill_", "pooling"), ("batch_norm", "normalization"))
GROUPS = ("conv forward", "conv backward", "pooling", "normalization", "other")  # column order


def parse_model(spec: str) -> tuple[str, dict]:
    """``fastnet:{"widths": [24, 48, 96]}`` -> ("fastnet", {"widths": (24, 48, 96)})."""
    name, _, options = spec.partition(":")
    kwargs = json.loads(options) if options else {}
    return name, {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def measure(model: nn.Module, device: torch.device, batch: int, steps: int) -> dict:
    bf16 = use_bf16(device, "auto")
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                          momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with autocast(device, bf16):
            logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            step()
    shares: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        group = next((g for sub, g in OPERATOR_GROUPS if sub in event.key), "other")
        shares[group] = shares.get(group, 0.0) + event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {"images_per_second": round(batch / statistics.median(seconds)),
            "mflops_per_image": round(flops_per_image(model) / 1e6, 1), "bf16": bf16,
            "time_share": {g: round(v / total, 3) for g, v in sorted(shares.items())}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="fast,accurate,baseline-3conv")
    p.add_argument("--models", default="", help="NAME[:JSON options] entries separated by ';'")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = select_device(args.device)
    torch.manual_seed(0)
    specs: dict[str, tuple[str, dict]] = {}
    for name in filter(None, args.recipes.split(",")):
        recipe = get_recipe(name)
        specs[f"recipe {name}"] = (recipe.model, dict(recipe.model_kwargs))
    for spec in filter(None, args.models.split(";")):
        specs[spec] = parse_model(spec)
    results = {}
    print(f"{'model':40s} {'MFLOPs':>7s} {'img/s':>7s}  " + "  ".join(f"{g:>13s}" for g in GROUPS))
    for label, (name, kwargs) in specs.items():
        r = measure(create_model(name, **kwargs), device, args.batch, args.steps)
        results[label] = {"model": name, "kwargs": kwargs, **r}
        share = "  ".join(f"{r['time_share'].get(g, 0.0):13.0%}" for g in GROUPS)
        print(f"{label:40s} {r['mflops_per_image']:7.1f} {r['images_per_second']:7d}  {share}",
              flush=True)
    path = write_result("train-step", device, {"batch": args.batch, "steps": args.steps,
                                               "groups": GROUPS, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
