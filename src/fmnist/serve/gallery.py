"""``GET /api/gallery``: random test images of the run's dataset with their true labels,
and :func:`png_base64`, how every image goes into a JSON answer."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError, FmnistError
from ..runs import read_json_object
from .model_files import first_line, run_folder


class Gallery:
    """Random test images with their true labels, loaded on first use.

    ``source``: True (find the run's dataset, offline), False (no gallery), a data folder,
    or a loaded :class:`~fmnist.datasets.Dataset`. Never raises: when the data cannot be
    found, :meth:`sample` says so in ``note``.
    """

    def __init__(self, source: Any, model_path: Path, classes: tuple[str, ...],
                 dataset_name: str | None) -> None:
        self._source, self._model_path = source, model_path
        self._classes, self._dataset_name = classes, dataset_name
        self._lock = threading.Lock()
        self._loaded = False
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._name: str | None = None
        self._note: str | None = None

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            try:
                ds = self._find()
            except FmnistError as e:
                ds = None
                self._note = f"No gallery: the test images were not found ({first_line(e)})."
            if ds is not None and len(ds.classes) != len(self._classes):
                self._note = (f"No gallery: dataset {ds.name!r} has {len(ds.classes)} classes, "
                              f"the model {len(self._classes)}.")
                ds = None
            if ds is not None:
                self._images, self._labels, self._name = ds.test.images, ds.test.labels, ds.name
            self._loaded = True

    def _find(self):
        from ..datasets import Dataset, list_datasets, load_dataset
        from ..runs import check_dataset

        if isinstance(self._source, Dataset):
            return self._source
        if self._source is False or self._source is None:
            raise ConfigError("the gallery is turned off")
        run = run_folder(self._model_path)
        config = read_json_object(run / "config.json") if run else {}
        recorded = config.get("dataset") or {}
        name = recorded.get("name") or self._dataset_name or "fashion-mnist"
        name = name if name in list_datasets() else "fashion-mnist"
        if self._source is not True:
            return load_dataset(name, self._source, offline=True, verify=False)
        # the folders the run recorded first, then the usual search (FMNIST_DATA_DIR, ...)
        folders: list[str | None] = [f for f in dict.fromkeys(
            (config.get("data_dir"), recorded.get("source"))) if f and Path(f).is_dir()]
        folders.append(None)
        error: FmnistError | None = None
        for folder in folders:
            try:
                ds = load_dataset(name, folder, offline=True, verify=False)
                if config:  # only the run's own data, with its true labels
                    check_dataset(run, config, ds)
                return ds
            except FmnistError as e:
                error = error or e
        assert error is not None
        raise error

    def sample(self, n: int, seed: int | None = None) -> dict[str, Any]:
        self._load()
        if self._images is None or self._labels is None or len(self._labels) == 0:
            return {"available": False, "note": self._note or "No gallery: no test images.",
                    "dataset": None, "size": 0, "items": []}
        rng = np.random.default_rng(seed)
        index = rng.choice(len(self._labels), size=min(n, len(self._labels)), replace=False)
        items = [{"index": int(i), "label": self._classes[int(self._labels[i])],
                  "label_index": int(self._labels[i]), "image": png_base64(self._images[i])}
                 for i in index]
        return {"available": True, "note": None, "dataset": self._name, "split": "test",
                "size": int(len(self._labels)), "items": items}

def png_base64(image: np.ndarray) -> str:
    """A uint8 (H, W) image as base64-encoded PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")

