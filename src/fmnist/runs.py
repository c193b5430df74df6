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
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import list_datasets, load_dataset, stratified_split
from .errors import ConfigError, DataError, ModelFileError
from .fileio import atomic_write, atomic_write_json, atomic_write_text, remove_temp_files

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
    "model.int8.onnx", "predictions.npz",
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


def _limit(split: Any, limit: int | None, seed: int) -> Any:
    if limit is None or limit >= len(split):
        return split
    _, keep = stratified_split(split.labels, limit / len(split), seed)
    return split.subset(keep)


def prepare_data(recipe: Any, ds: Any) -> tuple[Any, Any | None, Any]:
    """(train, validation or None, test) splits of ``ds`` as ``recipe`` (a Recipe) asks:
    the same ``train_limit``, ``val_fraction``, ``test_limit`` and ``seed`` always give the
    same splits, so evaluation, calibration and the report see what training saw."""
    train = _limit(ds.train, recipe.train_limit, recipe.seed)
    val = None
    if recipe.has_validation:
        rest, held = stratified_split(train.labels, recipe.val_fraction, recipe.seed)
        train, val = train.subset(rest), train.subset(held)
    test = ds.test if recipe.test_limit is None else ds.test.subset(
        np.arange(min(recipe.test_limit, len(ds.test))))
    return train, val, test


# --------------------------------------------------------------------------- metrics.json

SPLITS = ("test", "val")


def metrics_filename(split: str) -> str:
    """``metrics.json`` for the test split, ``metrics-<split>.json`` otherwise."""
    return "metrics.json" if split == "test" else f"metrics-{split}.json"


def read_metrics(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """The run's saved metrics of ``split`` ({} when not evaluated yet or unreadable)."""
    return read_json_object(Path(run_dir) / metrics_filename(split))


def write_metrics(run_dir: str | Path, metrics: dict[str, Any], split: str = "test") -> Path:
    return atomic_write_json(Path(run_dir) / metrics_filename(split), metrics)


# --------------------------------------------------------------------------- predictions.npz

PREDICTIONS = "predictions.npz"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_predictions(run_dir: str | Path, probs: np.ndarray, *, tta: bool) -> Path:
    """Save the test split's (N, C) probabilities (float64: float32 rounding could tie
    the argmax of a sharply calibrated model) with the sha256 of the
    model.pt that made them, so the report reuses them instead of predicting again."""
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    np.savez(buf, probs=np.asarray(probs, np.float64), tta=bool(tta),
             model_sha256=_sha256(model_path(run_dir)))
    data = buf.getvalue()
    return atomic_write(run_dir / PREDICTIONS, lambda f: f.write(data))


def read_predictions(run_dir: str | Path) -> tuple[np.ndarray, bool] | None:
    """(probs float64, tta) saved by :func:`write_predictions`; None when missing,
    unreadable or made by another model.pt (e.g. before ``fmnist calibrate``)."""
    run_dir = Path(run_dir)
    try:
        with np.load(run_dir / PREDICTIONS, allow_pickle=False) as z:
            probs, tta, sha = z["probs"], bool(z["tta"]), str(z["model_sha256"])
        if sha != _sha256(run_dir / MODEL_FILES["pt"]):
            return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return probs.astype(np.float64), tta


# --------------------------------------------------------------------------- the model file

MODEL_FILES = {"pt": "model.pt", "onnx": "model.onnx"}


def model_path(path: str | Path, fmt: str = "pt") -> Path:
    """The model file ``path`` names: a file as given, a run folder's ``model.pt`` (or
    ``model.onnx`` for ``fmt="onnx"``); a ModelFileError with the fix when it is missing."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such file or folder. Pass a run folder, a model.pt "
                             "or a model.onnx (see `fmnist runs`).")
    if not p.is_dir():
        return p
    file = p / MODEL_FILES[fmt]
    if not file.is_file():
        fix = (f"export the run first with `fmnist export {p} --format onnx`" if fmt == "onnx"
               else f"training unfinished? Finish it with `fmnist train --resume {p}`")
        raise ModelFileError(f"{p}: run folder has no {file.name} yet; {fix}.")
    return file


def config_of_model(file: str | Path) -> dict[str, Any]:
    """config.json of the run a model file sits in ({} for a model file on its own)."""
    folder = Path(file).parent
    return read_config(folder) if is_run(folder) else {}


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
    metrics = read_metrics(run_dir)
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


def is_run(folder: str | Path) -> bool:
    """The one rule: a run is a folder holding a config.json (whatever its status)."""
    return (Path(folder) / "config.json").is_file()


def find_runs(root: str | Path = "runs") -> list[Path]:
    """Every run folder under ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder. Pass the folder holding your runs "
                          "(default: runs).")
    return sorted({p.parent for p in root.rglob("config.json")
                   if "checkpoints" not in p.parent.parts})


def latest_run(root: str | Path = "runs") -> Path:
    """The newest run under ``root`` that holds a model.pt (by config.json ``created``,
    else the model file's time); a ConfigError when there is none."""
    runs = [d for d in find_runs(root) if (d / MODEL_FILES["pt"]).is_file()] if Path(
        root).is_dir() else []
    if not runs:
        raise ConfigError(f"no model given and no run with a model.pt under {root}/; train "
                          "one with `fmnist train`, or pass RUN, model.pt or model.onnx.")

    def key(run: Path) -> tuple[str, float]:
        mtime = (run / MODEL_FILES["pt"]).stat().st_mtime
        created = read_json_object(run / "config.json").get("created")
        stamp = created if isinstance(created, str) else datetime.fromtimestamp(
            mtime, UTC).isoformat(timespec="seconds")
        return stamp, mtime

    return max(runs, key=key)


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """One dict per run folder under ``root`` (keys: :data:`COLUMNS`, ``model``, ``path``),
    sorted by name. ``root`` may itself be a run folder."""
    root = Path(root)
    return [_row(d, root) for d in find_runs(root)]


def sort_runs(rows: list[dict[str, Any]], column: str,
              reverse: bool = False) -> list[dict[str, Any]]:
    """Rows sorted by ``column`` (missing values last either way)."""
    if column not in COLUMNS:
        raise ConfigError(f"cannot sort by {column!r}; valid columns: {', '.join(COLUMNS)}.")
    present = [r for r in rows if r.get(column) is not None]
    missing = [r for r in rows if r.get(column) is None]
    present.sort(key=lambda r: r[column], reverse=reverse)
    return present + missing


# --------------------------------------------------------------------------- the Run object


@dataclass
class Run:
    """A run folder brought back to life: its config, model, recipe and the data it was
    trained on; :func:`fmnist.train` returns one, :meth:`load` reopens one. The data is
    found when first needed (:attr:`dataset`): predicting needs only the model.

    Scikit-learn style: :meth:`predict_proba` gives (N, C) probabilities, :meth:`predict`
    the (N,) class indices; :meth:`evaluate` the metrics of a split. The torch side
    (checkpoints, devices, evaluation) is imported by the methods that need it, so this
    module, and ``fmnist runs``, stay free of torch.
    """

    dir: Path
    config: dict[str, Any]
    recipe: Any  # fmnist.recipes.Recipe
    model: Any  # torch.nn.Module, in eval mode
    meta: Any  # fmnist.checkpoints.ModelMeta
    device: Any  # torch.device
    bf16: bool
    _dataset: Any = field(default=None, repr=False)  # the data once found: see dataset
    test_metrics: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""
    _data_args: dict[str, Any] = field(default_factory=dict, repr=False)  # where to look

    @classmethod
    def load(cls, run_dir: str | Path, *, data_dir: str | Path | None = None,
             device: Any = "auto", offline: bool = False, dataset: Any = None) -> Run:
        """Load a run's model; the dataset it was trained on is ``dataset`` (checked now),
        else found when first needed in ``data_dir``, else the folder recorded in
        config.json, else the usual search; data other than the run's is refused
        (:func:`run_dataset`)."""
        from .checkpoints import load_model
        from .devices import select_device, use_bf16
        from .recipes import Recipe

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: no such run folder. Pass a folder written by "
                              "`fmnist train` (see `fmnist runs`).")
        config = read_config(run_dir)
        try:
            recipe = Recipe.from_dict(config["recipe"])
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{run_dir}/config.json has no usable recipe ({e}).") from None
        dev = select_device(device)
        model, meta = load_model(model_path(run_dir), dev, channels_last=recipe.channels_last)
        run = cls(run_dir, config, recipe, model, meta, dev, use_bf16(dev, recipe.precision),
                  None, read_metrics(run_dir), str(config.get("stop_reason") or ""),
                  {"data_dir": data_dir, "offline": offline})
        if dataset is not None:
            run._attach_data(dataset)
        return run

    @property
    def dataset(self) -> Any:
        """The fmnist.datasets.Dataset the run was trained on, found on first use as
        :meth:`load` was told (:func:`run_dataset`); other data is refused."""
        if self._dataset is None:
            self._attach_data(None)
        return self._dataset

    def _attach_data(self, data: Any) -> None:
        """Keep ``data`` (None: the run's data, found as :meth:`load` was told) once it has
        passed :func:`run_dataset`'s checks and has the model's number of classes."""
        data = run_dataset(self.dir, self.config, data=data, **self._data_args)
        if len(data.classes) != len(self.meta.classes):
            raise ConfigError(
                f"{self.dir}: the model has {len(self.meta.classes)} classes but dataset "
                f"{data.name!r} from {data.source} has {len(data.classes)}; pass the "
                "--data-dir the run was trained on.")
        self._dataset = data

    @property
    def history(self) -> list[dict[str, Any]]:
        """history.csv, one dict per epoch."""
        return read_history(self.dir)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta.classes)

    @property
    def model_path(self) -> Path:
        return model_path(self.dir)

    @property
    def test_accuracy(self) -> float | None:
        return self.test_metrics.get("accuracy")

    def split(self, name: str = "test") -> Any:
        """The ``test``, ``val`` or ``train`` split exactly as training used it."""
        if name not in (*SPLITS, "train"):
            raise ConfigError(f"unknown split {name!r}; use test or val.")
        train, val, test = prepare_data(self.recipe, self.dataset)
        if name == "val" and val is None:
            raise ConfigError(
                f"{self.dir}: this run was trained without a validation split "
                f"(val_fraction={self.recipe.val_fraction}); evaluate --split test instead.")
        return {"train": train, "val": val, "test": test}[name]

    def predict_proba(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities (N, C) of uint8 images (N, 28, 28), with the run's
        normalization, precision and (calibrated) temperature."""
        from .evaluation import predict_probs

        return predict_probs(self.model, images, mean=self.meta.mean, std=self.meta.std,
                             device=self.device, bf16=self.bf16,
                             channels_last=self.recipe.channels_last, tta=tta,
                             tta_shifts=self.meta.tta_shifts,
                             temperature=self.meta.temperature_for(tta))

    def predict(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """The predicted class index (N,) of each image."""
        return self.predict_proba(images, tta=tta).argmax(axis=1)

    def evaluate(self, split: str = "test", tta: bool | None = None, *,
                 write: bool = False) -> dict[str, Any]:
        """Metrics of one split (``tta=None`` follows the recipe), written to
        ``metrics.json`` / ``metrics-val.json`` (and the test probabilities to
        ``predictions.npz``) with ``write``. A dict that notebooks show as a card
        (:class:`fmnist.display.EvaluationResult`)."""
        from .display import EvaluationResult
        from .evaluation import metrics_from_probs

        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}.")
        use_tta = self.recipe.tta if tta is None else bool(tta)
        data, t0 = self.split(split), time.perf_counter()
        probs = self.predict_proba(data.images, tta=use_tta)
        metrics = EvaluationResult({"split": split, **metrics_from_probs(
            probs, data.labels, self.classes, seconds=time.perf_counter() - t0, tta=use_tta,
            bf16=self.bf16, device=self.device)})
        if write:
            write_metrics(self.dir, metrics, split)
            if split == "test":
                write_predictions(self.dir, probs, tta=use_tta)
        if split == "test":
            self.test_metrics = dict(metrics)
        return metrics

    def __repr__(self) -> str:
        acc = self.test_accuracy
        return (f"Run(dir={str(self.dir)!r}, recipe={self.recipe.name!r}, "
                f"epochs={len(self.history)}, test_acc={'?' if acc is None else f'{acc:.4f}'})")

    def _repr_html_(self) -> str:
        from .display import run_card

        return run_card(self)


def evaluate_run(run_dir: str | Path, split: str = "test", tta: bool | None = None,
                 data_dir: str | Path | None = None, device: Any = "auto", *,
                 offline: bool = False, write: bool = True) -> dict[str, Any]:
    """Evaluate a run folder's model on its test (or validation) split and (unless
    ``write=False``) save ``metrics.json`` / ``metrics-val.json``: ``fmnist.evaluate``.
    A ``data_dir`` holding other data than the run was trained on is refused."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}.")
    run = Run.load(run_dir, data_dir=data_dir, device=device, offline=offline)
    return run.evaluate(split, tta=tta, write=write)
