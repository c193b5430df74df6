"""Similar items: the training images nearest to a query in the model's feature space.

::

    finder = SimilarFinder.from_run("runs/fast-...")      # builds or loads the cached index
    finder.search(["shirt.jpg"], k=8)                      # [[Neighbour(...), ...]]

Features are the input of the model's last ``nn.Linear`` (the penultimate layer),
L2-normalised, so the cosine similarity is one matrix product. The index of a run's
training images is built once and cached in the run folder as ``similar-index.npz``
(written atomically); it records the SHA-256 of the ``model.pt`` it came from and is
rebuilt when that file changes. Search is exact (brute force): 60,000 x 128 floats.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ModelFileError

log = logging.getLogger("fmnist")

__all__ = ["INDEX_FILE", "Neighbour", "SimilarFinder", "SimilarIndex", "embed_model",
           "load_or_build_index", "precision_at_k"]

INDEX_FILE = "similar-index.npz"
INDEX_VERSION = 1


@torch.no_grad()
def embed_model(model: nn.Module, images: np.ndarray, *, mean: float, std: float,
                device: torch.device | str = "cpu", batch_size: int = 1024) -> np.ndarray:
    """(N, D) float32 unit-length penultimate features of uint8 (N, 28, 28) images.

    The input of the last ``nn.Linear`` (:func:`fmnist.ood.feature_tap`), which is the
    penultimate layer for every registered model."""
    from .evaluation import normalize
    from .ood import feature_tap

    was_training = model.training
    data = torch.as_tensor(np.asarray(images))
    outs: list[np.ndarray] = []
    try:
        model.eval()
        with feature_tap(model) as captured:
            for start in range(0, len(data), batch_size):
                model(normalize(data[start:start + batch_size].to(device), mean, std))
                feats = captured[0].detach().float()
                outs.append(nn.functional.normalize(feats, dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class SimilarIndex:
    """Unit feature vectors of reference images, their labels and where they came from."""

    vectors: np.ndarray  # (N, D) float32, unit rows
    labels: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    model_sha256: str
    build_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)

    def query(self, features: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Indices (Q, k) and cosine similarities (Q, k) of the k nearest, best first."""
        k = _check_k(k, len(self))
        scores = np.asarray(features, np.float32) @ self.vectors.T  # (Q, N)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a reader sees the old index or the new one, never half)."""
        from .checkpoints import atomic_write

        buf = io.BytesIO()
        np.savez(buf, version=INDEX_VERSION, vectors=self.vectors, labels=self.labels,
                 classes=np.array(self.classes), model_sha256=self.model_sha256,
                 build_seconds=self.build_seconds)
        return atomic_write(path, lambda f: f.write(buf.getvalue()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SimilarIndex:
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["version"]) != INDEX_VERSION:
                    raise ValueError(f"index version {int(z['version'])}")
                return cls(z["vectors"], z["labels"], tuple(str(c) for c in z["classes"]),
                           str(z["model_sha256"]), float(z["build_seconds"]))
        except (OSError, KeyError, ValueError) as e:
            raise ModelFileError(f"{path}: not a readable similar-items index ({e}); delete "
                                 "it and it will be rebuilt.") from None


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be a whole number of at least 1; got {k!r}.")
    if n == 0:
        raise ConfigError("the similar-items index is empty; build it from a run with "
                          "training images.")
    return min(int(k), n)


def load_or_build_index(run_dir: str | os.PathLike, model: nn.Module, meta: Any,
                        images: np.ndarray, labels: np.ndarray, *,
                        device: torch.device | str = "cpu") -> SimilarIndex:
    """The run's cached index when it matches ``model.pt``, else a new one (saved)."""
    run_dir = Path(run_dir)
    path, model_file = run_dir / INDEX_FILE, run_dir / "model.pt"
    sha = file_sha256(model_file) if model_file.is_file() else ""
    if path.is_file():
        index = SimilarIndex.load(path)
        if index.model_sha256 == sha and len(index) == len(labels):
            return index
        log.info("%s: model.pt or the data changed; rebuilding the index", path)
    start = time.perf_counter()
    vectors = embed_model(model, images, mean=meta.mean, std=meta.std, device=device)
    index = SimilarIndex(vectors, np.asarray(labels, np.int64), tuple(meta.classes), sha,
                         round(time.perf_counter() - start, 3))
    try:
        index.save(path)
    except OSError as e:  # a read-only run folder: keep the index in memory
        log.warning("%s: cannot cache the index (%s); it lives in memory only", path,
                    e.strerror)
    return index


@dataclass(frozen=True)
class Neighbour:
    """One similar training image: its row in the training split, class and similarity."""

    index: int
    label: int
    class_name: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "class": self.class_name, "label": self.label,
                "similarity": round(self.score, 4)}


class SimilarFinder:
    """A run's model, its training images and their index: images in, neighbours out."""

    def __init__(self, predictor: Any, index: SimilarIndex, images: np.ndarray) -> None:
        self.predictor, self.index, self.images = predictor, index, images

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 device: str = "cpu", offline: bool = False) -> SimilarFinder:
        """Load a run folder and its dataset's training split; build or load the index."""
        from .inference import Predictor
        from .runs import Run

        run = Run.load(run_dir, data_dir=data_dir, device=device, offline=offline)
        train = run.dataset.train
        index = load_or_build_index(run.dir, run.model, run.meta, train.images, train.labels,
                                    device=run.device)
        predictor = Predictor.from_model(run.model, run.meta, device=run.device,
                                         source=run.dir / "model.pt")
        return cls(predictor, index, train.images)

    def search(self, images: Any, k: int = 8) -> list[list[Neighbour]]:
        """The k most similar training images for each input image, best first."""
        idx, scores = self.index.query(self.predictor.embed(images), k)
        return [[Neighbour(int(i), int(self.index.labels[i]),
                           self.index.classes[self.index.labels[i]], float(s))
                 for i, s in zip(row, srow, strict=True)]
                for row, srow in zip(idx, scores, strict=True)]

    def strip(self, images: Any, results: Sequence[Sequence[Neighbour]], *,
              names: Sequence[str] | None = None, path: str | os.PathLike | None = None):
        """A figure (saved as PNG at ``path`` if given): each query, then its neighbours
        captioned with class and similarity."""
        from .plots import similar_strip

        queries = self.predictor.preprocess(images)
        shots = np.stack([self.images[[n.index for n in row]] for row in results])
        captions = [[f"{n.class_name}\n{n.score:.2f}" for n in row] for row in results]
        return similar_strip(queries, shots, captions, query_captions=names, path=path)

    def __repr__(self) -> str:
        return (f"SimilarFinder(images={len(self.index):,}, dim={self.index.vectors.shape[1]}, "
                f"build_seconds={self.index.build_seconds})")


def precision_at_k(neighbour_labels: np.ndarray, true_labels: Sequence[int]) -> float:
    """Mean fraction of each query's neighbours (Q, k) that share its true label."""
    nl = np.asarray(neighbour_labels)
    return float((nl == np.asarray(true_labels)[:, None]).mean()) if len(nl) else float("nan")
