"""The run folder's one owner: create and lock it, its config.json, history.csv, status,
the dataset it was trained on, and the table ``fmnist runs`` prints.

A run is any folder holding a ``config.json`` (finished, running, interrupted, stopped or
failed). Rules this module keeps:

- **Nothing lost.** A new run goes into a new or empty folder only; ``overwrite=True``
  replaces an earlier *run* and refuses a folder holding anything a run does not write.
- **One writer.** A process that trains in a folder holds an exclusive ``fcntl.flock`` on
  its ``.lock`` file; a second trainer or resumer is refused with one line. A run whose
  config says "running" but whose lock nobody holds is shown as "stopped".
- **The same data.** ``config.json`` records the dataset's name, source and the sha256 of
  its train/test image and label arrays; evaluation, resume, export, report and TensorBoard
  go through :func:`run_dataset`, which refuses any other data. Runs recorded before the
  checksums existed are accepted with a warning.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write_json, atomic_write_text, remove_temp_files
from .errors import ConfigError, DataError

log = logging.getLogger("fmnist")

__all__ = [
    "COLUMNS", "RunLock", "check_dataset", "check_out", "create_run", "dataset_checksums",
    "is_locked", "list_runs", "read_config", "read_history", "run_dataset", "run_status",
    "set_status", "sort_runs", "write_config", "write_history",
]

LOCK_NAME = ".lock"
HISTORY_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds",
                  "eval_seconds")
# everything a run (training, evaluate, report, export, tensorboard) writes in its folder
RUN_ENTRIES = frozenset({
    LOCK_NAME, "config.json", "history.csv", "checkpoints", "model.pt", "metrics.json",
    "metrics-val.json", "report.html", "plots", "tensorboard", "model.onnx",
    "model.int8.onnx",
})


# --------------------------------------------------------------------------- config.json


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run as a dict; a ConfigError naming the file and the fix when
    it is missing, truncated or not a JSON object."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.json, so not an fmnist run folder; pass a "
                          "folder written by `fmnist train` (see `fmnist runs`).")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable or truncated JSON ({e}); restore it from a "
                          "backup or train the run again.") from None
    if not isinstance(config, dict) or not isinstance(config.get("recipe"), dict):
        raise ConfigError(f"{path}: not an fmnist run config (no recipe object); restore "
                          "it from a backup or train the run again.")
    return config


def write_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / "config.json", config)


def set_status(run_dir: str | Path, status: str, **extra: Any) -> None:
    """Set ``status`` (running, interrupted, finished, failed) and ``extra`` keys."""
    config = read_config(run_dir)
    config["status"] = status
    config.update(extra)
    write_config(run_dir, config)


# --------------------------------------------------------------------------- history.csv


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """history.csv: the standard columns, then any a callback added, in first-seen order."""
    fields = list(HISTORY_FIELDS)
    for row in history:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    atomic_write_text(Path(run_dir) / "history.csv", buf.getvalue())


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``history.csv`` with numbers parsed (empty cells -> None)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (None if v == "" else (int(v) if k == "epoch" else float(v)))
                         for k, v in row.items()})
    return rows


# --------------------------------------------------------------------------- creating, locking


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held while a process trains in the run.

    The kernel drops it when the process dies, however it dies, so a stale lock cannot
    block a resume. Taking it removes the temporary files a killed writer left behind."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir, self._fd = run_dir, fd
        self.created_dir = False  # set by create_run when it made the folder

    def discard(self) -> None:
        """Release, and remove the folder if this process made it and nothing but the
        lock is in it (a training that failed before it wrote anything)."""
        self.release()
        if not _entries(self.run_dir):
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
            if self.created_dir:
                self.run_dir.rmdir()

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        run_dir = Path(run_dir)
        path = run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ConfigError(f"{run_dir}: cannot create its lock file ({e.strerror}); "
                              "pass a writable run folder.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{run_dir} is in use: another fmnist process is training in "
                              "it; wait for it to finish, or stop it and then resume with "
                              f"--resume {run_dir}.") from None
        for folder in (run_dir, run_dir / "checkpoints"):
            remove_temp_files(folder)
        return cls(run_dir, fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(run_dir: str | Path) -> bool:
    """Does a live process hold the run's lock (i.e. train in it right now)?"""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock taken above
    return False


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


def check_out(out: str | Path, overwrite: bool = False) -> Path:
    """Validate ``--out`` without touching the disk: a new or empty folder, or (with
    ``overwrite``) a folder holding only an earlier run. Returns it as a Path."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder; pass a folder path for "
                          "the run.")
    if not path.exists():
        parent = next(p for p in path.absolute().parents if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {path}: cannot create it under {parent} (not a "
                              "writable folder); pass a writable --out.")
        return path
    entries = _entries(path)
    if not entries:
        return path
    is_run = (path / "config.json").is_file()
    if not overwrite:
        raise ConfigError(_not_empty(path, entries, is_run))
    foreign = [e for e in entries if e not in RUN_ENTRIES and not e.endswith(".tmp")]
    if not is_run or foreign:
        raise ConfigError(f"--out {path}: --overwrite replaces only an fmnist run, and this "
                          f"folder holds {', '.join(foreign or entries)[:200]} besides; "
                          "move those away or pick another --out.")
    return path


def _not_empty(path: Path, entries: list[str], is_run: bool) -> str:
    """Why ``--out path`` is refused, and what to do instead."""
    if not is_run:
        more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
        return (f"--out {path} is not empty: it holds {', '.join(entries[:3])}{more}; pick "
                "a new or empty --out.")
    status = read_json_object(path / "config.json").get("status")
    resume = ("" if status == "finished" or not (path / "checkpoints" / "last.pt").is_file()
              else f"resume it with --resume {path}, ")
    return (f"--out {path} is not empty: it holds a {status or 'started'} fmnist run; "
            f"{resume}pick a new or empty --out, or add --overwrite to replace it.")


def _clear_run(path: Path) -> None:
    """Delete the entries a run writes (and nothing else) from ``path``."""
    for name in _entries(path):
        p = path / name
        if name not in RUN_ENTRIES and not name.endswith(".tmp"):
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def create_run(out: str | Path | None, recipe_name: str, root: str | Path = "runs", *,
               overwrite: bool = False) -> tuple[Path, RunLock]:
    """Make the run folder (``out``, else ``ROOT/<recipe>-<timestamp>``), lock it and
    return (folder, lock). See :func:`check_out` for what ``out`` may be."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{recipe_name}-{stamp}"
        path, i = base, 1
        while path.exists():
            i += 1
            path = base.with_name(f"{base.name}-{i}")
    else:
        path = check_out(out, overwrite)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot create the folder ({e.strerror}); pass a "
                          "writable --out.") from None
    lock = RunLock.acquire(path)
    lock.created_dir = created
    try:  # checked again under the lock: another trainer may have got here first
        if out is not None:
            check_out(path, overwrite)
        if overwrite:
            _clear_run(path)
    except BaseException:
        lock.release()
        raise
    return path, lock


# --------------------------------------------------------------------------- the run's data

_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def dataset_checksums(ds: Any) -> dict[str, str]:
    """sha256 of the train/test image (uint8) and label (int64) arrays of a Dataset: the
    content, whatever the file format (IDX, CSV, image folder) it was read from."""
    out = {}
    for name in _ARRAYS:
        split, kind = name.split("_")
        arr = getattr(getattr(ds, split), "images" if kind == "images" else "labels")
        arr = np.ascontiguousarray(arr, dtype=np.uint8 if kind == "images" else np.int64)
        out[name] = hashlib.sha256(arr.tobytes()).hexdigest()
    return out


def check_dataset(run_dir: str | Path, config: dict[str, Any], ds: Any) -> None:
    """Refuse ``ds`` unless it holds exactly the data the run was trained on."""
    recorded = config.get("dataset") or {}
    expected = recorded.get("sha256")
    if not expected:
        log.warning("%s: no dataset checksums recorded (a run from an older fmnist); cannot "
                    "check that %s is the data it was trained on", run_dir, ds.source)
        return
    actual = dataset_checksums(ds)
    differ = [k for k in _ARRAYS if expected.get(k) != actual[k]]
    if differ:
        raise DataError(
            f"{run_dir}: the {ds.name} data in {ds.source} is not the data this run was "
            f"trained on ({', '.join(differ)} differ from {recorded.get('source')}); pass "
            "--data-dir DIR with the dataset it was trained on."
        )


def run_dataset(run_dir: str | Path, config: dict[str, Any], *,
                data_dir: str | Path | None = None, offline: bool = False,
                data: Any = None) -> Any:
    """The dataset a run was trained on: ``data`` (a loaded Dataset) if given, else
    ``data_dir``, else the folder recorded in config.json, else the usual search; checked
    against the recorded checksums (:func:`check_dataset`)."""
    if data is None:
        data = _load_recorded(Path(run_dir), config, data_dir, offline)
    check_dataset(run_dir, config, data)
    return data


def _load_recorded(run_dir: Path, config: dict[str, Any], data_dir: str | Path | None,
                   offline: bool) -> Any:
    from .datasets import list_datasets, load_dataset

    recorded = config.get("dataset") or {}
    name = recorded.get("name") or config["recipe"].get("dataset", "fashion-mnist")
    if name not in list_datasets():
        name = config["recipe"].get("dataset", "fashion-mnist")
    if data_dir is not None:
        return load_dataset(name, data_dir, offline=offline)
    folder = config.get("data_dir") or recorded.get("source")
    if folder is not None and not Path(folder).is_dir():
        if recorded.get("format", "idx") != "idx":  # only that folder held this data
            raise DataError(f"{run_dir}: the data it was trained on is no longer in "
                            f"{folder}; pass --data-dir DIR with that dataset.")
        folder = None  # registered IDX files: the usual places (checked by checksum)
    return load_dataset(name, folder, offline=offline)


# --------------------------------------------------------------------------- the table

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
    "status": "started, running, interrupted, stopped (killed), failed or finished",
}


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file's top-level object, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_status(run_dir: str | Path, config: dict[str, Any]) -> str:
    """The recorded status, corrected for a dead trainer: "running" whose lock nobody
    holds is "stopped"; "running" before the first checkpoint is "started"."""
    status = config.get("status") or "?"
    if status != "running":
        return status
    if not is_locked(run_dir):
        return "stopped"
    return "running" if (Path(run_dir) / "checkpoints" / "last.pt").exists() else "started"


def _row(run_dir: Path, root: Path) -> dict[str, Any]:
    config = read_json_object(run_dir / "config.json")
    recipe = config.get("recipe") or {}
    history = read_history(run_dir)
    val = [r["val_acc"] for r in history if r.get("val_acc") is not None]
    metrics = read_json_object(run_dir / "metrics.json")
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
        "status": run_status(run_dir, config),
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
