"""The whole ``fmnist train --recipe fast`` command as a user waits for it, phase by phase.

    python benchmarks/fast_command.py [--seeds 0,1,2] [--code LABEL=SRC_DIR ...]
                                      [--epochs N] [--train-limit N]
                                      [--out-stem fast-command]

Each run is ``python -m fmnist train --recipe fast --seed S --out TMP`` in a new process
(report included), timed from before the process starts to its exit, with the phases read
from a timeline (``_phase_timer.py``): start-up (interpreter, imports, arguments, run
folder), data (load and split), model set-up (model, data-dependent init, optimizer,
config.json), training, calibration (temperature and OOD fit: ``calibration_passes``
lists each forward pass and its images), test evaluation (TTA, OOD scores, metrics) and
the rest (model.pt, predictions, the report with its imports, exit). With several
``--code LABEL=SRC_DIR`` (e.g. ``before=/tmp/main/src``) the versions run alternately,
seed by seed, so a busy machine slows them alike; every phase's median is compared as a
ratio to the first label. ``--epochs 1 --train-limit 22000`` measures the overhead (the same
2,000 calibration images, OOD-fit images (``fmnist.ood.FIT_IMAGES``) and 10,000 test images)
in a tenth of the training time.
Writes ``benchmarks/results/<out-stem>-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import write_result

HERE = Path(__file__).resolve().parent
HERE_SRC = str(HERE.parent / "src")
PHASES = ("startup", "data", "model_setup", "training", "calibration", "test_eval",
          "save_report_exit", "total", "outside_training")


def _span(calls: list[dict[str, Any]], name: str) -> tuple[float, float] | None:
    """(first start, last end) of the calls named ``name``."""
    rows = [c for c in calls if c["name"] == name]
    return (rows[0]["start"], rows[-1]["end"]) if rows else None


def phases(timeline: dict[str, Any]) -> dict[str, float | None]:
    """Seconds of each phase from a ``_phase_timer`` timeline (None: not seen)."""
    calls, t0, end = timeline["calls"], timeline["t0"], timeline["end"]
    load, job, fit = _span(calls, "load_dataset"), _span(calls, "_job"), _span(calls, "fit")
    cal, test = _span(calls, "fit_calibration"), _span(calls, "_evaluate_test")

    def between(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    return {
        "startup": between(t0, load and load[0]),
        "data": between(load and load[0], job and job[1]),
        "model_setup": between(job and job[1], fit and fit[0]),
        "training": between(*(fit or (None, None))),
        "calibration": between(*(cal or (None, None))),
        "test_eval": between(*(test or (None, None))),
        "save_report_exit": between(test and test[1], end),
        "total": round(end - t0, 3),
        "outside_training": round(end - t0 - (fit[1] - fit[0]), 3) if fit else None,
    }


def calibration_passes(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    """Each forward pass over a set of images: its images and seconds, in order."""
    return [{"images": c.get("images"), "seconds": round(c["end"] - c["start"], 3)}
            for c in timeline["calls"] if c["name"] == "view_logits_and_features"]


def run_once(src: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """One whole command with ``src`` first on the path: phases, passes, test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        out, timeline_path = Path(tmp) / "run", Path(tmp) / "timeline.json"
        args = ["train", "--recipe", "fast", "--seed", str(seed), "--out", str(out),
                "--device", "cpu", *overrides]
        env = {**os.environ, "PYTHONPATH": src}
        cmd = [sys.executable, str(HERE / "_phase_timer.py"), str(timeline_path)]
        subprocess.run([*cmd, str(time.time()), *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timeline = json.loads(timeline_path.read_text())
        metrics = json.loads((out / "metrics.json").read_text())
    return {"seed": seed, "test_acc": metrics["accuracy"], "phases": phases(timeline),
            "passes": calibration_passes(timeline)}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per label: median of every phase and of the accuracy; per phase the ratio of each
    label's median to the first label's."""
    out: dict[str, Any] = {}
    for label, rows in runs.items():
        if not rows:
            continue
        med = {}
        for ph in PHASES:
            values = [r["phases"][ph] for r in rows if r["phases"].get(ph) is not None]
            med[ph] = round(statistics.median(values), 2) if values else None
        out[label] = {"runs": len(rows), "median_seconds": med,
                      "test_acc_median": statistics.median(r["test_acc"] for r in rows)}
    first = next(iter(out.values()))["median_seconds"]
    for summary in out.values():
        summary["ratio_to_first"] = {
            ph: round(v / first[ph], 3) if v is not None and first.get(ph) else None
            for ph, v in summary["median_seconds"].items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--code", action="append", default=[], metavar="LABEL=SRC_DIR",
                    help="a version of fmnist to time (default: this checkout's src)")
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs (overhead only)")
    ap.add_argument("--train-limit", type=int,
                    help="train on this many images (overhead only; the recipe: all)")
    ap.add_argument("--out-stem", default="fast-command")
    args = ap.parse_args()
    codes = dict(c.split("=", 1) for c in args.code) or {"this": HERE_SRC}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in codes}
    overrides = [f"--{flag.replace('_', '-')}={value}" for flag, value in
                 (("epochs", args.epochs), ("train_limit", args.train_limit)) if value]
    for seed in (int(s) for s in args.seeds.split(",")):
        for label, src in codes.items():
            row = run_once(src, seed, overrides)
            runs[label].append(row)
            print(json.dumps({"code": label, **row}), flush=True)
            write_result(args.out_stem, torch.device("cpu"), {
                "overrides": overrides, "codes": codes, "runs": runs,
                "summary": summarize(runs)})
    print(json.dumps(summarize(runs), indent=2))


if __name__ == "__main__":
    main()
