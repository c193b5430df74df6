"""How long `fmnist report RUN` takes, the whole command, as a user waits for it.

    python benchmarks/report_speed.py --run RUN [--repeat 3] [--code LABEL=SRC_DIR ...]
                                      [--stem report-speed]

Each trial copies RUN to a fresh temporary folder (so no report or plots are left from a
previous trial) and times ``python -m fmnist report COPY`` in a new process: start-up,
imports, loading the model and data, predictions, figures and writing the HTML. With several
``--code LABEL=SRC_DIR`` (e.g. ``before=/path/to/main/src``) the versions run alternately,
trial by trial, so a busy machine slows them alike; the medians and their ratio are
compared. RUN is used as it is: a run trained (or evaluated with ``fmnist evaluate``) by
this checkout holds its test predictions in ``predictions.npz``, which the report reuses;
an older fmnist ignores that file and predicts the test set again, as it always did.
Writes ``benchmarks/results/<stem>-cpu.json`` and prints the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import write_result

HERE_SRC = str(Path(__file__).resolve().parents[1] / "src")


def _fmnist(src: str, *args: str) -> float:
    """Seconds ``python -m fmnist ARGS`` takes with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": src}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fmnist", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _trial(run: Path, src: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report.html", "plots",
                                                                 ".lock"))
        return _fmnist(src, "report", str(copy), "--device", "cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run folder")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--code", action="append", default=[], metavar="LABEL=SRC_DIR",
                    help="a version of fmnist to time (default: this checkout's src)")
    ap.add_argument("--stem", default="report-speed", help="results file stem")
    args = ap.parse_args()
    codes = dict(c.split("=", 1) for c in args.code) or {"this": HERE_SRC}
    seconds: dict[str, list[float]] = {label: [] for label in codes}
    for _ in range(args.repeat):
        for label, src in codes.items():
            seconds[label].append(round(_trial(args.run, src), 2))
            print(f"{label}: {seconds[label][-1]:.2f} s", flush=True)
    medians = {label: statistics.median(s) for label, s in seconds.items()}
    saved = (args.run / "predictions.npz").is_file()
    result = {"run": str(args.run), "repeat": args.repeat, "saved_predictions": saved,
              "codes": codes, "seconds": seconds,
              "median_seconds": medians, "load_average_1min": round(os.getloadavg()[0], 2)}
    if len(medians) == 2:
        (a, ma), (b, mb) = medians.items()
        result["ratio"] = {f"{a}/{b}": round(ma / mb, 2)}
    path = write_result(args.stem, torch.device("cpu"), result)
    print(medians, result.get("ratio", ""), "->", path)


if __name__ == "__main__":
    main()
