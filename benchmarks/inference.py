"""Inference speed: throughput and latency of a model on torch and onnxruntime.

    python benchmarks/inference.py [--model RUN_OR_FILE] [--seconds S] [--device auto]
                                   [--threads N] [--score-cost ROUNDS]

For each backend -- torch fp32, torch bf16 autocast (where the device supports it),
onnxruntime fp32 and int8 (static QDQ, see ``fmnist.export``) -- measures, through
``fmnist.Predictor.predict_proba`` on preprocessed 28x28 uint8 images:

* single-image latency p50 / p99 (batch 1; images/s at batch 1 = 1 / mean latency),
* throughput in images/s at batch 256,
* top-1 accuracy on the first 1,000 test images (when the dataset is found).

Each cell runs for ``--seconds`` (default 3) after a short warm-up. The model defaults to
the newest run under ``runs/`` (its ``model.onnx`` / ``model.int8.onnx`` are exported when
missing); with no run at all a quick ``fast`` model is trained first (say ~1 min on 2
cores). An ``.onnx`` file benchmarks only that file. Writes
``benchmarks/results/inference-<device>.json`` with the machine and prints a table.

``--score-cost ROUNDS`` measures instead what the out-of-distribution score costs: every
backend with the model's score and with a copy of the model without it (same weights),
alternately ROUNDS times, medians and with/without ratios, written to
``benchmarks/results/inference-score-<device>.json``.

Run it on a quiet machine: with other processes on the same cores, torch's thread pool at
batch 1 slows down 5-10x (e.g. 1.6 ms -> 11 ms p50 for fastnet on 2 busy cores), far more
than onnxruntime's; ``--threads 1`` shows the single-core figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from fmnist.devices import bf16_supported, select_device
from fmnist.errors import FmnistError
from fmnist.inference import Predictor

BATCH = 256
log = logging.getLogger("fmnist")


def newest_run(root: Path = Path("runs")) -> Path | None:
    runs = [p.parent for p in root.glob("*/model.pt")] if root.is_dir() else []
    return max(runs, key=lambda p: (p / "model.pt").stat().st_mtime) if runs else None


def quick_run() -> Path:
    from fmnist.training import train

    print("no run under runs/: training a quick `fast` model (2 epochs on 10,000 images) "
          "to benchmark")
    return train("fast", epochs=2, train_limit=10_000).dir


def test_images(meta: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """First 1,000 test images of the model's dataset, or random images if not found."""
    from fmnist.datasets import load_dataset

    try:
        ds = load_dataset(meta.get("dataset") or "fashion-mnist", offline=True)
        return ds.test.images[:1000], ds.test.labels[:1000]
    except FmnistError as e:
        print(f"dataset not found ({str(e).splitlines()[0]}); timing random images, "
              "no accuracy")
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8), None


def timed(fn, seconds: float) -> list[float]:
    """Call ``fn`` repeatedly for ``seconds`` (after a warm-up); per-call seconds."""
    end = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < end:  # warm-up: allocator, kernels, thread pools
        fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure(name: str, predictor: Predictor, images: np.ndarray, labels: np.ndarray | None,
            seconds: float) -> dict:
    one = images[:1]
    batch = np.resize(images, (BATCH, 28, 28))
    lat = timed(lambda: predictor.predict_proba(one), seconds)
    thr = timed(lambda: predictor.predict_proba(batch), seconds)
    acc = None
    if labels is not None:
        acc = float((predictor.predict_proba(images).argmax(1) == labels).mean())
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    return {
        "name": name,
        "backend": predictor.backend,
        "precision": predictor.meta.get("precision"),
        "device": predictor.meta.get("device"),
        "latency_p50_ms": round(1e3 * statistics.median(lat), 4),
        "latency_p99_ms": round(1e3 * q[98], 4),
        "images_per_s_batch1": round(len(lat) / sum(lat), 1),
        "images_per_s_batch256": round(BATCH * len(thr) / sum(thr), 1),
        "calls": {"batch1": len(lat), "batch256": len(thr)},
        "accuracy_1000": acc,
    }


def preprocess_latency(images: np.ndarray, seconds: float) -> dict:
    """Decode + preprocess of a 28x28 PNG (what a served request adds before the model)."""
    import io

    from PIL import Image

    from fmnist.preprocess import preprocess

    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, format="PNG")
    data = buf.getvalue()
    lat = timed(lambda: preprocess(data), seconds)
    return {"png_28x28_p50_ms": round(1e3 * statistics.median(lat), 4)}


def build_cells(model: Path, device, threads: int | None) -> list[tuple[str, Predictor]]:
    """One Predictor per backend: the ``.onnx`` file alone, or a run's torch fp32 (and bf16
    where supported) plus its ONNX fp32 and int8 exports (exported when missing)."""
    if model.suffix == ".onnx":
        return [(f"onnx {model.name}", Predictor.from_path(model, threads=threads))]
    from fmnist.export import export_onnx, int8_path_for

    run = model if model.is_dir() else model.parent
    onnx_path = (run / "model.onnx") if model.is_dir() else model.with_suffix(".onnx")
    if not onnx_path.is_file() or not int8_path_for(onnx_path).is_file():
        print(f"exporting {onnx_path} and its int8 version")
        export_onnx(model, onnx_path, quantize="int8")
    cells = [("torch fp32", Predictor.from_path(model, device=str(device)))]
    if bf16_supported(device):
        cells.append(("torch bf16", Predictor.from_path(model, device=str(device), bf16=True)))
    cells.append(("onnx fp32", Predictor.from_path(onnx_path, threads=threads)))
    cells.append(("onnx int8", Predictor.from_path(int8_path_for(onnx_path), threads=threads)))
    return cells


def without_score(model: Path, folder: Path) -> Path:
    """A copy of the run's model.pt with its out-of-distribution scorer removed (the model
    and temperatures unchanged): the "without" side of ``--score-cost``."""
    from fmnist.checkpoints import ModelMeta, load_model, resolve_model_path, save_model

    net, meta = load_model(resolve_model_path(model), "cpu")
    if not meta.ood:
        raise SystemExit(f"{model}: the model has no OOD score to measure; "
                         "run `fmnist calibrate` on it first.")
    out = folder / "model.pt"
    save_model(out, net, ModelMeta.from_dict({**meta.to_dict(), "ood": {}}))
    return out


def has_score(predictor: Predictor, images: np.ndarray) -> bool:
    return predictor.scored_of(images[:2])[1] is not None


def score_cost(model: Path, device, threads: int | None, images: np.ndarray,
               seconds: float, rounds: int) -> list[dict]:
    """Each backend with the OOD score and without it, measured alternately ``rounds``
    times (so machine load hits both alike); medians and with/without ratios."""
    import tempfile

    fields = ("latency_p50_ms", "images_per_s_batch1", "images_per_s_batch256")
    with tempfile.TemporaryDirectory() as tmp:
        plain = build_cells(without_score(model, Path(tmp)), device, threads)
        rows = []
        for (name, scored), (_, bare) in zip(build_cells(model, device, threads), plain,
                                             strict=True):
            if not has_score(scored, images) or has_score(bare, images):
                raise SystemExit(f"{name}: expected a score with the scorer and none without")
            runs: dict[str, list[dict]] = {"with_score": [], "without_score": []}
            for _ in range(rounds):
                for key, p in (("with_score", scored), ("without_score", bare)):
                    print(f"  {name} {key} ...", flush=True)
                    runs[key].append(measure(name, p, images, None, seconds))
            med = {k: {f: statistics.median(r[f] for r in v) for f in fields}
                   for k, v in runs.items()}
            rows.append({"name": name, **med, "ratio_with_over_without": {
                f: round(med["with_score"][f] / med["without_score"][f], 3) for f in fields}})
    return rows


def print_table(rows: list[dict], pre: dict, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("backend", "p50 ms (b=1)", "p99 ms (b=1)", "img/s b=1", f"img/s b={BATCH}",
                  "acc (1,000)")
    for r in rows:
        acc = "-" if r["accuracy_1000"] is None else f"{r['accuracy_1000']:.1%}"
        table.add_row(r["name"], f"{r['latency_p50_ms']:.3f}", f"{r['latency_p99_ms']:.3f}",
                      f"{r['images_per_s_batch1']:,.0f}", f"{r['images_per_s_batch256']:,.0f}",
                      acc)
    console = Console(highlight=False)
    console.print(table)
    console.print(f"preprocess of a 28x28 PNG: {pre['png_28x28_p50_ms']:.3f} ms p50")
    console.print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="run folder, model.pt or .onnx (default: newest run)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per cell (default 3)")
    ap.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    ap.add_argument("--threads", type=int,
                    help="CPU threads for torch and onnxruntime (default: their own defaults)")
    ap.add_argument("--score-cost", type=int, metavar="ROUNDS",
                    help="instead: each backend with and without the OOD score, alternately "
                    "ROUNDS times; writes results/inference-score-<device>.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads
    model = Path(args.model) if args.model else (newest_run() or quick_run())
    print(f"model: {model}   device: {device}   {args.seconds:g} s per cell")
    cells = build_cells(model, device, threads)
    images, labels = test_images(cells[0][1].meta)
    meta = cells[0][1].meta
    payload = {
        "model": {k: meta.get(k) for k in ("source", "arch", "recipe", "params", "dataset")},
        "seconds_per_cell": args.seconds, "batch": BATCH,
        "torch_threads": torch.get_num_threads(), "onnxruntime_threads": threads or "default",
    }
    if args.score_cost:
        payload.update(rounds=args.score_cost, results=score_cost(
            model, device, threads, images, args.seconds, args.score_cost))
        print(json.dumps(payload["results"], indent=1))
        print(f"wrote {write_result('inference-score', device, payload)}")
        return
    rows = []
    for name, predictor in cells:
        print(f"  {name} ...", flush=True)
        rows.append(measure(name, predictor, images, labels, args.seconds))
    pre = preprocess_latency(images, min(args.seconds, 2.0))
    payload.update(results=rows, preprocess=pre)
    print_table(rows, pre, write_result("inference", device, payload))

if __name__ == "__main__":
    main()
