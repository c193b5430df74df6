"""Safe loads, atomic saves (:mod:`fmnist.fileio`) and the ``model.pt`` format.

A model file is data, never code: it holds a ``state_dict`` plus plain metadata
(architecture name and kwargs, class names, input normalization, metrics) and is loaded
with ``torch.load(..., weights_only=True)``. Files are written to a temporary name in the
same folder, fsync'ed and renamed, so a crash mid-write never leaves a half file under
the final name and the previous version stays loadable.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, ModelFileError
from .evaluation import FLIP_ONLY, Shifts, check_shifts
from .fileio import (  # noqa: F401  (re-exported: the names moved to fmnist.fileio)
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    remove_temp_files,
)

MODEL_FORMAT = "fmnist-model"
MODEL_FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and a clear error for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: no such file. Pass a model.pt, a checkpoint or a run folder."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, unsupported globals
        raise ModelFileError(
            f"{path}: not a readable fmnist model or checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}). It may be truncated or "
            "not a PyTorch file; re-export it or point at another file."
        ) from None


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to rebuild a model and feed it, without the code that trained it."""

    arch: str
    arch_kwargs: dict[str, Any]
    classes: tuple[str, ...]
    mean: float
    std: float
    dataset: str = "fashion-mnist"
    recipe: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # fmnist.calibration: logits are divided by ``temperature`` for the probabilities the
    # recipe serves (TTA-averaged when it uses TTA), by ``temperature_single`` for one view
    # (None: the same); fmnist.ood: OodScorer.to_meta() or {}
    temperature: float = 1.0
    temperature_single: float | None = None
    ood: dict[str, Any] = field(default_factory=dict)
    # the views TTA averages for this model (fmnist.evaluation.tta_probs): these shifts,
    # each with its mirror; the temperature above was fitted on them
    tta_shifts: Shifts = FLIP_ONLY
    fmnist_version: str = ""
    created: str = ""

    def temperature_for(self, tta: bool) -> float:
        """The temperature fitted for TTA-averaged (``tta``) or single-view probabilities."""
        if tta or self.temperature_single is None:
            return self.temperature
        return self.temperature_single

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["classes"] = tuple(kw.get("classes", ()))
        try:
            kw["tta_shifts"] = check_shifts(kw.get("tta_shifts", FLIP_ONLY))
        except ConfigError as e:
            raise ModelFileError(f"this model file's metadata: {e}") from None
        return cls(**kw)


def save_model(path: str | os.PathLike, model: nn.Module, meta: ModelMeta) -> Path:
    """Write ``model.pt``: float32 CPU state_dict + metadata, atomically."""
    from . import __version__

    if not meta.fmnist_version or not meta.created:
        meta = ModelMeta.from_dict(
            {
                **meta.to_dict(),
                "fmnist_version": meta.fmnist_version or __version__,
                "created": meta.created or datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    state = {
        k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "meta": meta.to_dict(),
        "state_dict": state,
    }
    return atomic_save(payload, path)


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Read and validate a ``model.pt``; returns (state_dict, meta)."""
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(
            f"{path}: not an fmnist model file (no '{MODEL_FORMAT}' header). "
            "Use the model.pt written in a run folder, or `fmnist.load_model` on a run folder."
        )
    if payload.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer fmnist (format {payload['format_version']}); "
            "upgrade fmnist."
        )
    return _checked_state(path, payload), _checked_meta(path, payload)


def _checked_state(path: str | os.PathLike, payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ModelFileError(f"{path}: fmnist model file without weights (no state_dict of "
                             "tensors); use the model.pt a finished run wrote.")
    return state


def _checked_meta(path: str | os.PathLike, payload: dict[str, Any]) -> ModelMeta:
    """The metadata, refused unless it can rebuild and feed the model: an architecture,
    class names, and a finite mean with a finite std > 0."""
    raw = payload.get("meta")
    fix = "use the model.pt a finished run wrote, or train the run again."
    if not isinstance(raw, dict) or not raw.get("arch"):
        raise ModelFileError(f"{path}: fmnist model file without metadata (architecture, "
                             f"classes, normalization); {fix}")
    try:
        meta = ModelMeta.from_dict(raw)
        mean, std = float(meta.mean), float(meta.std)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: unusable model metadata ({e}); {fix}") from None
    if not meta.classes or not isinstance(meta.arch_kwargs, dict):
        raise ModelFileError(f"{path}: model metadata lists no classes; {fix}")
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ModelFileError(f"{path}: model metadata has normalization mean {meta.mean} "
                             f"std {meta.std}, but std must be a finite number > 0; {fix}")
    return meta


def resolve_model_path(path: str | os.PathLike) -> Path:
    """Accept a run folder (-> its model.pt) or a file path."""
    p = Path(path)
    if p.is_dir():
        candidate = p / "model.pt"
        if not candidate.is_file():
            raise ModelFileError(
                f"{p}: run folder has no model.pt yet (training unfinished?). "
                f"Finish it with `fmnist train --resume {p}`."
            )
        return candidate
    if not p.exists():
        raise ModelFileError(f"{p}: no such file or folder. Pass a run folder or a model.pt.")
    return p


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, channels_last: bool = True
) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model from a ``model.pt`` or run folder, in eval mode on ``device``.

    With ``channels_last`` (the default) the weights take the layout the inference path
    feeds (:func:`fmnist.evaluation.predict_scored`) and training left them in: a model
    loaded contiguous ran 2-3x slower on channels-last input on the CPU."""
    from .models import create_model

    file = resolve_model_path(path)
    state, meta = read_model_file(file)
    try:
        model = create_model(meta.arch, num_classes=len(meta.classes), **meta.arch_kwargs)
    except TypeError as e:
        raise ModelFileError(f"{file}: its metadata does not build architecture "
                             f"{meta.arch!r} ({e}); use the model.pt a finished run "
                             "wrote.") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFileError(
            f"{file}: weights do not fit architecture {meta.arch!r} {meta.arch_kwargs} "
            f"({str(e).splitlines()[0]})."
        ) from None
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device, memory_format=layout).eval(), meta
