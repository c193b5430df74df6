"""The runs under a folder, one summary row each: what ``fmnist runs`` tabulates.

A run is any folder holding a ``config.json`` (finished, running or interrupted). Rows
are built from ``config.json``, ``history.csv`` and ``metrics.json`` only, so listing
hundreds of runs never loads a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .training import read_history

__all__ = ["COLUMNS", "list_runs", "sort_runs"]

# column -> what it holds; the order is the table's
COLUMNS: dict[str, str] = {
    "name": "run folder, relative to the listed folder",
    "recipe": "recipe name",
    "params": "trainable parameters",
    "epochs": "epochs run",
    "best_val_acc": "best validation accuracy over the epochs",
    "test_acc": "test accuracy from metrics.json",
    "train_seconds": "training time (sum of epoch times)",
    "date": "when the run was created",
    "status": "running, interrupted or finished",
}


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file's top-level object, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _row(run_dir: Path, root: Path) -> dict[str, Any]:
    config = read_json_object(run_dir / "config.json")
    recipe = config.get("recipe") or {}
    history = read_history(run_dir)
    val = [r["val_acc"] for r in history if r.get("val_acc") is not None]
    metrics = read_json_object(run_dir / "metrics.json")
    status = config.get("status") or "?"
    if status == "running" and not (run_dir / "checkpoints" / "last.pt").exists():
        status = "started"
    name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    return {
        "name": name,
        "recipe": recipe.get("name"),
        "model": recipe.get("model"),
        "params": config.get("params"),
        "epochs": len(history),
        "best_val_acc": max(val) if val else None,
        "test_acc": metrics.get("accuracy"),
        "train_seconds": round(sum(float(r.get("seconds") or 0) for r in history), 3),
        "date": config.get("created"),
        "status": status,
        "path": str(run_dir),
    }


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """One dict per run folder under ``root`` (keys: :data:`COLUMNS`, ``model``, ``path``),
    sorted by name. ``root`` may itself be a run folder."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder. Pass the folder holding your runs "
                          "(default: runs).")
    dirs = sorted({p.parent for p in root.rglob("config.json")
                   if "checkpoints" not in p.parent.parts})
    return [_row(d, root) for d in dirs]


def sort_runs(rows: list[dict[str, Any]], column: str,
              reverse: bool = False) -> list[dict[str, Any]]:
    """Rows sorted by ``column`` (missing values last either way)."""
    if column not in COLUMNS:
        raise ConfigError(f"cannot sort by {column!r}; valid columns: {', '.join(COLUMNS)}.")
    present = [r for r in rows if r.get(column) is not None]
    missing = [r for r in rows if r.get(column) is None]
    present.sort(key=lambda r: r[column], reverse=reverse)
    return present + missing
