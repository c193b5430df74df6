"""The model a server loads: finding it (newest run, path checks), its run folder and its
card (``GET /api/model``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..inference import Predictor
from ..runs import latest_run as find_latest_run  # noqa: F401  (re-exported)
from ..runs import read_json_object


def check_model_path(path: str | os.PathLike, backend: str = "auto") -> Path:
    """Fail early, with the fix, for a path the server could not load (the CLI's check)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file or folder. Pass a run folder, a model.pt or a "
                          "model.onnx (see `fmnist runs`).")
    if p.is_dir():
        want = "model.onnx" if backend == "onnx" else "model.pt"
        if not (p / want).is_file():
            fix = (f"export it with `fmnist export {p}`" if want == "model.onnx"
                   else "finish training it, or pass another run")
            raise ConfigError(f"{p}: no {want} in this folder; {fix}.")
    return p


def _iso(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")


def run_folder(model_path: Path) -> Path | None:
    """The run folder a model belongs to (the folder itself, or the file's parent)."""
    folder = model_path if model_path.is_dir() else model_path.parent
    return folder if (folder / "config.json").is_file() else None


def model_card(predictor: Predictor, model_path: Path) -> dict[str, Any]:
    """What ``GET /api/model`` returns: the predictor's metadata plus the run's facts."""
    meta = predictor.meta
    run = run_folder(model_path)
    config = read_json_object(run / "config.json") if run else {}
    metrics = read_json_object(run / "metrics.json") if run else {}
    accuracy = metrics.get("accuracy", (meta.get("metrics") or {}).get("test_acc"))
    source = Path(meta.get("source") or model_path)
    created = config.get("created") or (_iso(source.stat().st_mtime) if source.exists() else None)
    return {
        "name": run.name if run else source.name,
        "arch": meta.get("arch"),
        "recipe": meta.get("recipe") or (config.get("recipe") or {}).get("name"),
        "params": meta.get("params"),
        "dataset": meta.get("dataset"),
        "classes": list(predictor.classes),
        "test_accuracy": accuracy,
        "created": created,
        "backend": predictor.backend,
        "device": meta.get("device"),
        "precision": meta.get("precision"),
        "quantization": meta.get("quantization"),
        "top_k": predictor.top_k,
        "source": str(source),
        "fmnist_version": meta.get("fmnist_version"),
        "metrics": meta.get("metrics") or {},
    }


def first_line(e: Exception) -> str:
    """An error's first line without its closing punctuation (for a one-line note)."""
    return str(e).splitlines()[0].rstrip(".:") if str(e) else type(e).__name__
