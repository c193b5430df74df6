"""Run ``fmnist ARGS`` with a timestamp at the start and end of each phase of ``train``.

    PYTHONPATH=SRC python benchmarks/_phase_timer.py TIMELINE.json T0 ARGS...

Used by ``fast_command.py`` in a fresh process per run. ``T0`` is the parent's
``time.time()`` just before it started this process, so start-up (interpreter, imports)
is counted. The phases are found by wrapping module-level functions of the fmnist under
test that every version since the calibration step has (the wrapper only reads the
clock): ``training.load_dataset``, ``training._job``, ``training.fit``,
``training.fit_calibration``, ``training._evaluate_test`` and each forward pass over a set
of images (``calibration.view_logits_and_features``), so a version that lacks one still
runs, with that phase missing. ``fmnist.report`` is not imported early (matplotlib's
import belongs to the report): what follows the test evaluation (model.pt, the report,
exit) is one phase. Writes TIMELINE.json:
``{"t0", "imported", "end", "calls": [{"name", "start", "end", "images"}]}``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

CALLS: list[dict[str, Any]] = []
WRAPPED = {"fmnist.training": ("load_dataset", "_job", "fit", "fit_calibration",
                               "_evaluate_test"),
           "fmnist.calibration": ("view_logits_and_features",)}


def _timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        row: dict[str, Any] = {"name": name, "start": time.time()}
        images = args[1] if len(args) > 1 else None
        if hasattr(images, "shape"):
            row["images"] = int(images.shape[0])
        try:
            return fn(*args, **kwargs)
        finally:
            row["end"] = time.time()
            CALLS.append(row)
    return wrapper


def _install() -> None:
    import importlib

    for module_name, names in WRAPPED.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _timed(name, getattr(module, name)))


def main(argv: list[str]) -> int:
    timeline_path, t0, args = Path(argv[0]), float(argv[1]), argv[2:]
    from fmnist.cli import main as fmnist_main

    _install()  # imports fmnist.training now: counted in start-up, as before
    imported = time.time()
    try:
        return fmnist_main(args)
    finally:
        timeline_path.write_text(json.dumps({"t0": t0, "imported": imported,
                                             "end": time.time(), "calls": CALLS}))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
