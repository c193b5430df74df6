"""Prediction: any image in, top-k classes out, through PyTorch or onnxruntime.

::

    p = Predictor.from_path("runs/fast-...")            # run folder, model.pt or model.onnx
    p.predict(["shirt.jpg", array_28x28])              # array([6, 0]): class indices
    p.predict_proba(test_images)                       # (N, C) probabilities
    p.predict_top_k(["shirt.jpg"])                     # [[("Shirt", 0.91), ...]]
    p.predict_files(paths)                             # per-file results, errors caught

Every input goes through :func:`fmnist.preprocess.preprocess` (a dataset-like 28x28 uint8
image passes through unchanged), then one batched forward pass. The torch backend is
:func:`fmnist.evaluation.predict_probs`, the same code evaluation uses; the ONNX backend
runs the exported pixels-to-probabilities graph (:mod:`fmnist.export`) on onnxruntime's
CPU provider and needs nothing but the ``.onnx`` file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .errors import ConfigError, ImageError, ModelFileError
from .preprocess import PASSTHROUGH_LIGHT_RING, Preprocessed, preprocess

log = logging.getLogger("fmnist")

BACKENDS = ("auto", "torch", "onnx")
BATCH_SIZE = 256
"""Images per forward pass in :meth:`Predictor.predict_files`."""

TopK = list[tuple[str, float]]


@dataclass(frozen=True, eq=False)
class PredictionResult:
    """One file's outcome: ``top_k`` and ``probs`` when it worked, ``error`` when not.

    ``preprocessed`` holds the 28x28 image the model saw (and its steps when asked for).
    """

    file: str
    top_k: TopK | None = None
    probs: np.ndarray | None = None
    preprocessed: Preprocessed | None = None
    error: str | None = None
    ood_score: float | None = None
    in_distribution: bool | None = None

    @property
    def unsure(self) -> bool:
        """True when the answer should not be shown as a confident one: the input is out of
        distribution or the (calibrated) top probability is under
        :data:`fmnist.calibration.UNSURE_BELOW`."""
        from .calibration import UNSURE_BELOW

        if not self.top_k:
            return False
        return self.in_distribution is False or self.top_k[0][1] < UNSURE_BELOW

    def verdict(self) -> str:
        """One line: the classes, or "not sure"/"doesn't look like any..." before them."""
        guesses = ", ".join(f"{c} ({100 * p:.1f}%)" for c, p in self.top_k or [])
        if self.in_distribution is False:
            n = len(self.probs) if self.probs is not None else len(self.top_k or [])
            return f"doesn't look like any of the {n} classes; best guesses: {guesses}"
        return f"not sure; best guesses: {guesses}" if self.unsure else guesses

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The top-1 class, or None for a failed file."""
        return self.top_k[0][0] if self.top_k else None

    def __repr__(self) -> str:
        if not self.ok:
            return f"PredictionResult({self.file!r}, error={self.error!r})"
        top = ", ".join(f"{c} {p:.1%}" for c, p in self.top_k or [])
        return f"PredictionResult({self.file!r}, {top})"

    def _repr_html_(self) -> str:
        from .display import prediction_card

        return prediction_card(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``file``, ``predictions`` (class, probability, best first),
        ``ood_score`` (higher = less like the training data; null for a model without the
        score), ``in_distribution``, ``unsure``, ``error``."""
        return {
            "file": self.file,
            "predictions": [{"class": c, "probability": p} for c, p in self.top_k or []],
            "ood_score": self.ood_score,
            "in_distribution": self.in_distribution,
            "unsure": self.unsure,
            "error": self.error,
        }


# --------------------------------------------------------------------------- backends


class _Backend(Protocol):
    name: str

    def scored(self, images: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C) calibrated probabilities and (N,) OOD scores (None: model has none)."""
        ...

    def embed(self, images: np.ndarray) -> np.ndarray: ...


class _TorchBackend:
    name = "torch"

    def __init__(self, model, meta, device, bf16: bool = False) -> None:
        from .ood import OodScorer

        self.model, self.meta, self.device, self.bf16 = model, meta, device, bf16
        self.scorer = OodScorer.from_meta(meta.ood)

    def scored(self, images: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
        from .evaluation import predict_scored

        return predict_scored(self.model, images, mean=self.meta.mean, std=self.meta.std,
                              device=self.device, bf16=self.bf16, tta=tta,
                              tta_shifts=self.meta.tta_shifts,
                              temperature=self.meta.temperature_for(tta), scorer=self.scorer)

    def embed(self, images: np.ndarray) -> np.ndarray:
        from .similar import embed_model

        return embed_model(self.model, images, mean=self.meta.mean, std=self.meta.std,
                           device=self.device)


class _OnnxBackend:
    name = "onnx"

    def __init__(self, session, single_to_tta: float = 1.0,
                 tta_shifts: tuple[tuple[int, int], ...] = ((0, 0),)) -> None:
        self.session = session
        self.single_to_tta = single_to_tta  # T_single / T_tta
        self.tta_shifts = tta_shifts  # the views TTA averages, each with its mirror

    def scored(self, images: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
        from .export import onnx_scored

        probs, scores = onnx_scored(self.session, images)
        if not tta:
            return probs, scores
        import torch

        from .evaluation import tta_probs

        def view(v: torch.Tensor) -> np.ndarray:
            p = probs if v is x else onnx_scored(self.session, v.numpy())[0]
            return _retemper(p, self.single_to_tta)

        x = torch.from_numpy(np.asarray(images, np.float32)[:, None])  # (N, 1, 28, 28) 0..255
        return np.asarray(tta_probs(view, x, shifts=self.tta_shifts), np.float64), scores

    def embed(self, images: np.ndarray) -> np.ndarray:
        raise ModelFileError("this ONNX file outputs class probabilities only, no features; "
                             "use the run folder or model.pt (torch backend) for embed and "
                             "similar items.")


def _retemper(probs: np.ndarray, ratio: float) -> np.ndarray:
    """softmax(z / T1) -> softmax(z / T2) with ``ratio`` = T1 / T2: p**ratio, renormalised
    (exact: the log-sum-exp constant cancels)."""
    if ratio == 1.0:
        return probs
    with np.errstate(divide="ignore"):
        logp = np.log(probs) * ratio
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- inputs


def _ring_mask(size: int = 28) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[0], m[-1], m[:, 0], m[:, -1] = True, True, True, True
    return m


_RING = _ring_mask()


def _as_batch(images: Any) -> np.ndarray | None:
    """A uint8 (N, 28, 28) / (N, 1, 28, 28) array as a dataset-like batch, else None.

    Applies :func:`~fmnist.preprocess.preprocess`'s pass-through rule, vectorized: an image
    whose 1-px border is light is inverted back. (Identical to preprocessing each one.)
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        return None
    a = images
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        return None
    light = a[:, _RING].mean(axis=1) >= PASSTHROUGH_LIGHT_RING
    if light.any():
        a = a.copy()
        a[light] = 255 - a[light]
    return a


def _as_list(images: Any) -> list[Any]:
    """One image (path, bytes, PIL image, 2-D/HxWxC array) or a sequence -> a list."""
    single = (str, bytes, bytearray, memoryview, os.PathLike, Image.Image, np.ndarray)
    if isinstance(images, single) or hasattr(images, "read"):
        return [images]
    return list(images)


def _unique_name(name: str, taken: set[str]) -> str:
    """``name`` or ``name-2``, ``name-3``... whichever is not taken yet (and take it)."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


# --------------------------------------------------------------------------- Predictor


class Predictor:
    """Top-k predictions for images from a trained model (torch) or an export (onnx).

    Build one with :meth:`from_path` (or :meth:`from_model` for a model in memory); it
    holds the loaded model, so reuse it across calls.
    """

    def __init__(self, backend: _Backend, classes: Sequence[str], meta: dict[str, Any], *,
                 top_k: int = 3, tta: bool = False) -> None:
        if int(top_k) < 1:
            raise ConfigError(f"top_k must be at least 1; got {top_k}.")
        self._backend = backend
        self._classes = tuple(classes)
        self._meta = dict(meta)
        self.top_k = min(int(top_k), len(self._classes))
        self.tta = bool(tta)
        self.ood_threshold: float | None = self._meta.get("ood_threshold")

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, backend: str = "auto", device: str = "auto",
                  top_k: int = 3, tta: bool = False, bf16: bool = False,
                  threads: int | None = None) -> Predictor:
        """Load a run folder, ``model.pt`` or ``.onnx`` file.

        ``backend="auto"`` picks onnx for ``.onnx`` files and torch otherwise;
        ``backend="onnx"`` on a run folder uses its ``model.onnx`` (see ``fmnist export``).
        ``device`` (torch only): auto, cpu, cuda; ``bf16`` runs the torch model under bf16
        autocast; ``threads`` sets onnxruntime's intra-op threads (default: its own).
        """
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}.")
        p = Path(path)
        if not p.exists():
            raise ModelFileError(
                f"{p}: no such file or folder. Pass a run folder, a model.pt or a model.onnx."
            )
        is_onnx = p.is_file() and p.suffix.lower() == ".onnx"
        if backend == "auto":
            backend = "onnx" if is_onnx else "torch"
        if backend == "onnx":
            if p.is_dir():
                p = p / "model.onnx"
                if not p.is_file():
                    raise ModelFileError(
                        f"{p}: not found; export the run first with "
                        f"`fmnist export {p.parent} --format onnx`, or use --backend torch."
                    )
            elif not is_onnx:
                raise ModelFileError(
                    f"{p}: the onnx backend needs a .onnx file; export it with "
                    f"`fmnist export {p} --format onnx`, or use --backend torch."
                )
            return cls._from_onnx(p, top_k=top_k, tta=tta, threads=threads)
        if is_onnx:
            raise ModelFileError(
                f"{p}: an ONNX file needs the onnx backend (--backend onnx or auto); the torch "
                "backend loads a run folder or a model.pt."
            )
        from .checkpoints import load_model, resolve_model_path
        from .devices import select_device

        file = resolve_model_path(p)
        dev = select_device(device)
        model, meta = load_model(file, dev)
        return cls.from_model(model, meta, device=dev, top_k=top_k, tta=tta, bf16=bf16,
                              source=file)

    @classmethod
    def from_model(cls, model, meta, *, device="cpu", top_k: int = 3, tta: bool = False,
                   bf16: bool = False, source: str | os.PathLike | None = None) -> Predictor:
        """Wrap an in-memory torch model and its :class:`~fmnist.checkpoints.ModelMeta`."""
        import torch

        from .models import count_params

        dev = torch.device(device)
        info = {
            "backend": "torch",
            "source": str(source) if source else None,
            "arch": meta.arch,
            "arch_kwargs": dict(meta.arch_kwargs),
            "recipe": meta.recipe,
            "dataset": meta.dataset,
            "classes": list(meta.classes),
            "params": count_params(model),
            "metrics": dict(meta.metrics),
            "normalization": {"mean": meta.mean, "std": meta.std},
            "temperature": meta.temperature_for(True),
            "temperature_single": meta.temperature_for(False),
            "tta_shifts": [list(s) for s in meta.tta_shifts],
            "ood_method": meta.ood.get("method"),
            "ood_threshold": meta.ood.get("threshold"),
            "quantization": "none",
            "precision": "bf16" if bf16 else "fp32",
            "device": str(dev),
            "fmnist_version": meta.fmnist_version,
        }
        backend = _TorchBackend(model.to(dev).eval(), meta, dev, bf16)
        return cls(backend, meta.classes, info, top_k=top_k, tta=tta)

    @classmethod
    def _from_onnx(cls, path: Path, *, top_k: int, tta: bool, threads: int | None) -> Predictor:
        from .export import onnx_session, read_onnx_metadata

        md = read_onnx_metadata(path)
        session = onnx_session(path, threads=threads)
        info = {
            "backend": "onnx",
            "source": str(path),
            "arch": md.get("arch"),
            "arch_kwargs": md.get("arch_kwargs", {}),
            "recipe": md.get("recipe") or None,
            "dataset": md.get("dataset"),
            "classes": list(md["classes"]),
            "params": md.get("params"),
            "metrics": md.get("metrics", {}),
            "normalization": {"mean": md["mean"], "std": md["std"]},
            "temperature": md.get("temperature_tta", md.get("temperature", 1.0)),
            "temperature_single": md.get("temperature", 1.0),
            "tta_shifts": [list(s) for s in md["tta_shifts"]],
            "ood_method": md.get("ood_method"),
            "ood_threshold": md.get("ood_threshold"),
            "quantization": md.get("quantization", "none"),
            "precision": "int8" if md.get("quantization", "none") != "none" else "fp32",
            "device": "cpu",
            "parity": md.get("parity"),
            "fmnist_version": md.get("model_fmnist_version") or md.get("fmnist_version"),
        }
        ratio = info["temperature_single"] / info["temperature"]
        backend = _OnnxBackend(session, ratio, md["tta_shifts"])
        return cls(backend, md["classes"], info, top_k=top_k, tta=tta)

    # ----------------------------------------------------------------- properties

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def meta(self) -> dict[str, Any]:
        """arch, recipe, params, metrics, normalization, backend, source, quantization..."""
        return dict(self._meta)

    @property
    def backend(self) -> str:
        return self._backend.name

    def __repr__(self) -> str:
        return (f"Predictor(arch={self._meta.get('arch')!r}, backend={self.backend!r}, "
                f"classes={len(self._classes)}, top_k={self.top_k}, tta={self.tta})")

    def _repr_html_(self) -> str:
        from .display import predictor_card

        return predictor_card(self)

    # ----------------------------------------------------------------- prediction

    def preprocess(self, images: Any) -> np.ndarray:
        """Inputs -> a uint8 (N, 28, 28) batch (raises ImageError for a bad image)."""
        batch = _as_batch(images)
        if batch is not None:
            return batch
        items = _as_list(images)
        if not items:
            return np.zeros((0, 28, 28), np.uint8)
        return np.stack([preprocess(x).image for x in items])

    def probs_of(self, batch_uint8: np.ndarray) -> np.ndarray:
        """(N, C) probabilities of an already preprocessed uint8 (N, 28, 28) batch."""
        return self.scored_of(batch_uint8)[0]

    def scored_of(self, batch_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C) calibrated probabilities and (N,) OOD scores (higher = less like the
        training data; None for a model without the score) of a preprocessed batch."""
        if len(batch_uint8) == 0:
            return np.zeros((0, len(self._classes))), np.zeros(0)
        return self._backend.scored(batch_uint8, self.tta)

    def ood_scores(self, images: Any) -> np.ndarray | None:
        """(N,) out-of-distribution scores; ``images`` as in :meth:`predict`."""
        return self.scored_of(self.preprocess(images))[1]

    def in_distribution(self, scores: np.ndarray | None) -> list[bool | None]:
        """Score <= the model's threshold, per image (None for a model without one)."""
        if scores is None or self.ood_threshold is None:
            return [None] * (0 if scores is None else len(scores))
        return [bool(s <= self.ood_threshold) for s in scores]

    def predict_proba(self, images: Any) -> np.ndarray:
        """(N, C) float64 class probabilities; ``images`` as in :meth:`predict`."""
        return self.probs_of(self.preprocess(images))

    def embed(self, images: Any) -> np.ndarray:
        """(N, D) float32 unit-length penultimate-layer features (for similar items);
        ``images`` as in :meth:`predict_top_k`. The onnx backend raises ModelFileError."""
        batch = self.preprocess(images)
        if len(batch) == 0:
            return np.zeros((0, 0), np.float32)
        return self._backend.embed(batch)

    def top_k_of(self, probs: np.ndarray, k: int | None = None) -> list[TopK]:
        """Rows of probabilities -> ``[(class, probability), ...]`` best first."""
        k = min(k or self.top_k, len(self._classes))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self._classes[j], float(row[j])) for j in idx]
                for row, idx in zip(probs, order, strict=True)]

    def predict(self, images: Any) -> np.ndarray:
        """(N,) predicted class index per image (scikit-learn's ``predict``; the names are
        ``self.classes[i]``); ``images`` as in :meth:`predict_top_k`."""
        return self.predict_proba(images).argmax(axis=1)

    def predict_top_k(self, images: Any, k: int | None = None) -> list[TopK]:
        """Top-k ``(class, probability)`` per image, best first, in one batched pass.

        ``images``: one image or a sequence of paths, bytes, PIL images or arrays, or a
        uint8 (N, 28, 28) batch. Always returns one list per image.
        """
        return self.top_k_of(self.predict_proba(images), k)

    def predict_files(self, paths: Iterable[str | os.PathLike], *, steps: bool = True,
                      batch_size: int = BATCH_SIZE) -> list[PredictionResult]:
        """Predict each file; a file that cannot be read gets ``error`` and the rest go on.

        ``steps`` keeps the preprocessing steps in ``result.preprocessed`` (for
        :func:`fmnist.preprocess.save_steps`); turn it off for large folders of photos.
        """
        results: list[PredictionResult | None] = []
        pending: list[tuple[int, str, Preprocessed]] = []

        def flush() -> None:
            if not pending:
                return
            probs, scores = self.scored_of(np.stack([pre.image for _, _, pre in pending]))
            inside = self.in_distribution(scores) if scores is not None else [None] * len(probs)
            for j, ((i, name, pre), row, top) in enumerate(
                    zip(pending, probs, self.top_k_of(probs), strict=True)):
                score = None if scores is None else float(scores[j])
                results[i] = PredictionResult(name, top, row, pre, ood_score=score,
                                              in_distribution=inside[j])
            pending.clear()

        for path in paths:
            name = os.fspath(path)
            results.append(None)
            try:
                pre = preprocess(path, name=name, return_steps=steps)
            except ImageError as e:
                results[-1] = PredictionResult(name, error=str(e))
                log.debug("skipping %s: %s", name, e)
                continue
            except (OSError, ValueError, MemoryError) as e:  # belt and braces for odd files
                results[-1] = PredictionResult(
                    name, error=f"{name}: cannot read it ({type(e).__name__}: {e})")
                continue
            pending.append((len(results) - 1, name, pre))
            if len(pending) >= batch_size:
                flush()
        flush()
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]


def steps_file_names(results: Sequence[PredictionResult]) -> list[str | None]:
    """``<stem>.steps.png`` per successful result, made unique when stems collide."""
    taken: set[str] = set()
    names: list[str | None] = []
    for r in results:
        if not r.ok:
            names.append(None)
            continue
        stem = Path(r.file).stem or "image"
        names.append(_unique_name(stem, taken) + ".steps.png")
    return names


def collect_image_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files to predict: folders are walked recursively (image suffixes only, sorted);
    files named explicitly are always kept, whatever their suffix, even if missing (so
    they are reported as failures rather than silently dropped)."""
    from .datasets import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    return files
