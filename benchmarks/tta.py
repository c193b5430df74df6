"""Test-time augmentation: which views pay, and evaluation speed against a training step.

    python benchmarks/tta.py RUN [--repeats 3] [--data-dir DIR]

For a trained run (or model.pt) it scores the 10,000 test images once per view -- the
plain image, 1-px shifts up/down/left/right, each also mirrored -- and reports the test
accuracy of averaging the probabilities of several view sets (1, flip, flip + shifts).
Then, interleaved ``--repeats`` times in one process, it times a training step of the
run's model (forward + backward + SGD, batch 256, as ``train_step.py``) and the
evaluation ``fmnist evaluate --tta`` runs (``fmnist.evaluation.predict_probs``, with and
without TTA, its default views), and reports medians in images per CPU-second of this
process: on a machine shared with other jobs, wall-clock rates measure the neighbours.
Writes ``benchmarks/results/tta-cpu.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import select_device, write_result

from fmnist.checkpoints import load_model
from fmnist.datasets import load_dataset
from fmnist.devices import autocast, use_bf16
from fmnist.evaluation import normalize, predict_probs, tta_probs
from fmnist.models import create_model

SHIFTS = {"plain": (0, 0), "down": (1, 0), "up": (-1, 0), "right": (0, 1), "left": (0, -1)}
VIEW_SETS = {  # name -> (shift names, with mirrored copies)
    "1 view": (("plain",), False),
    "flip (2 views)": (("plain",), True),
    "shifts (5 views)": (tuple(SHIFTS), False),
    "flip + up/down (6 views)": (("plain", "down", "up"), True),
    "flip + left/right (6 views)": (("plain", "right", "left"), True),
    "flip + 4 shifts (10 views)": (tuple(SHIFTS), True),
}


@torch.no_grad()
def view_probs(model, images: np.ndarray, mean: float, std: float, device, bf16: bool
               ) -> dict[tuple[str, bool], np.ndarray]:
    """(N, C) probabilities of every single view: (shift name, mirrored) -> probs."""
    x = normalize(torch.as_tensor(images).to(device), mean, std)

    def forward(v: torch.Tensor) -> torch.Tensor:
        with autocast(device, bf16):
            out = model(v.contiguous(memory_format=torch.channels_last))
        return torch.softmax(out.float(), 1)

    out = {}
    for name, shift in SHIFTS.items():
        for mirrored in (False, True):
            v = x.flip(-1) if mirrored else x  # a flip then a shift: the same set of views
            out[name, mirrored] = np.concatenate([
                tta_probs(forward, v[i:i + 1000], shifts=(shift,), flip=False)
                for i in range(0, len(v), 1000)])
    return out


def view_set_accuracy(probs: dict, labels: np.ndarray) -> dict[str, float]:
    acc = {}
    for name, (shifts, flip) in VIEW_SETS.items():
        keys = [(s, m) for s in shifts for m in ((False, True) if flip else (False,))]
        mean = sum(probs[k] for k in keys) / len(keys)
        acc[name] = float((mean.argmax(1) == labels).mean())
    return acc


def step_rate(model, device, bf16: bool, steps: int = 20, batch: int = 256) -> float:
    """Images per CPU-second of the fit loop's step: forward under autocast, channels-last,
    cross-entropy, backward, SGD with Nesterov momentum (after 3 warm-up steps)."""
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.process_time()
        with autocast(device, bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.process_time() - t0)


def timings(model, meta, images: np.ndarray, device, bf16: bool, repeats: int) -> dict:
    """Median images per CPU-second of a training step and of evaluation with and without
    TTA (CPU time of this process, so other jobs on a shared machine do not count)."""
    step_model = create_model(meta.arch, num_classes=len(meta.classes), **meta.arch_kwargs)
    rates: dict[str, list[float]] = {"train step": [], "evaluate --tta": [], "evaluate": []}
    for _ in range(repeats):
        rates["train step"].append(step_rate(step_model, device, bf16))
        for key, tta in (("evaluate --tta", True), ("evaluate", False)):
            t0 = time.process_time()
            predict_probs(model, images, mean=meta.mean, std=meta.std, device=device,
                          bf16=bf16, tta=tta)
            rates[key].append(len(images) / (time.process_time() - t0))
    return {k: round(statistics.median(v)) for k, v in rates.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder or model.pt")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    device = select_device(args.device)
    bf16 = use_bf16(device, "auto")
    model, meta = load_model(args.run, device)
    model = model.to(memory_format=torch.channels_last)
    test = load_dataset(meta.dataset, args.data_dir).test
    accuracy = view_set_accuracy(view_probs(model, test.images, meta.mean, meta.std, device,
                                            bf16), test.labels)
    for name, acc in accuracy.items():
        print(f"{name:30s} {acc:.2%}")
    speed = timings(model, meta, test.images, device, bf16, args.repeats)
    for name, rate in speed.items():
        print(f"{name:30s} {rate:,} images per CPU-second")
    path = write_result("tta", device, {"run": str(args.run), "recipe": meta.recipe,
                                        "accuracy": accuracy, "images_per_cpu_second": speed,
                                        "repeats": args.repeats})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
