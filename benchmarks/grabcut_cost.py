"""CPU cost of the default preprocessing per photo at several GrabCut sizes and rounds.

    python benchmarks/grabcut_cost.py [--photos DIR] [--configs 160x4,200x6,240x6] [--n 20]

Thread CPU time (not wall time: the shared 2-core machine's load does not count), one photo
at a time, interleaved over the configurations, twice, on every 17th photo of
clothing-dataset-small ``validation/`` (textured backgrounds, where GrabCut runs). Writes
``benchmarks/results/grabcut-cost-cpu.json``: median and mean ms per photo per configuration.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import select_device, write_result
from photos import load_set, photos_dir

import fmnist.preprocess as pp


def cost(paths: list, configs: list[tuple[int, int]], repeats: int = 2) -> dict[str, list]:
    """CPU seconds per photo for each ``(size, rounds)``, interleaved."""
    saved = pp.GRABCUT_SIZE, pp.GRABCUT_ITERATIONS
    times: dict[str, list] = {f"{s}x{r}": [] for s, r in configs}
    try:
        for _ in range(repeats):
            for path in paths:
                for size, rounds in configs:
                    pp.GRABCUT_SIZE, pp.GRABCUT_ITERATIONS = size, rounds
                    start = time.thread_time()
                    pp.preprocess(path)
                    times[f"{size}x{rounds}"].append(time.thread_time() - start)
    finally:
        pp.GRABCUT_SIZE, pp.GRABCUT_ITERATIONS = saved
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos")
    p.add_argument("--configs", default="160x4,200x6,240x6")
    p.add_argument("--n", type=int, default=20)
    args = p.parse_args()
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    paths = [ph.path for ph in load_set(photos_dir(args.photos), "validation")][::17][: args.n]
    times = cost(paths, configs)
    result = {k: {"median_ms": round(1000 * float(np.median(v)), 1),
                  "mean_ms": round(1000 * float(np.mean(v)), 1)} for k, v in times.items()}
    for k, v in result.items():
        print(f"GrabCut {k}: {v['median_ms']} ms median, {v['mean_ms']} ms mean CPU per photo")
    write_result("grabcut-cost", select_device("cpu"), {"photos": len(paths), "cost": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
