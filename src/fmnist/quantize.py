"""Classifier-only ONNX files for small devices: class probabilities, no OOD score.

``fmnist export`` embeds a calibrated run's out-of-distribution scorer (:mod:`fmnist.ood`)
as a second output and keeps it in fp32 (int8 broke its in/out decisions). For the
``small`` recipe that scorer (three 72x72 fp32 whitening matrices, 62 KB) outweighs the
int8 network itself (46 KB). :func:`export_probs_only` writes the same pixels-to-
probabilities graph without it, through :func:`fmnist.export.export_onnx`, so the parity
check (fp32 against PyTorch, int8 at most 0.3 points below) is the exporter's own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _run_data(model_file: Path, data_dir: str | os.PathLike | None) -> Any:
    """The dataset of the run holding ``model_file`` (checked against its checksums)."""
    from .runs import read_config, run_dataset

    run_dir = model_file.parent
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{model_file}: not inside a run folder, so its dataset is unknown; "
                          "pass the run folder, or a loaded dataset.")
    return run_dataset(run_dir, read_config(run_dir), data_dir=data_dir)


def export_probs_only(
    run_or_model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    quantize: str | None = "int8",
    data_dir: str | os.PathLike | None = None,
    dataset: Any = None,
    parity_images: int | None = None,
) -> Any:
    """Export ``out`` (and, with ``quantize="int8"``, ``out``'s ``.int8.onnx``) without the
    OOD score output; returns :class:`fmnist.export.ExportResult`. ``parity_images``:
    test images the graphs are checked on (default the exporter's)."""
    from .checkpoints import ModelMeta, load_model, resolve_model_path, save_model
    from .export import PARITY_IMAGES, export_onnx

    model_file = resolve_model_path(run_or_model_path)
    ds = dataset if dataset is not None else _run_data(model_file, data_dir)
    model, meta = load_model(model_file)
    with tempfile.TemporaryDirectory(prefix="fmnist-probs-") as tmp:
        plain = Path(tmp, "model.pt")
        save_model(plain, model, ModelMeta.from_dict({**meta.to_dict(), "ood": {}}))
        return export_onnx(plain, out, quantize=quantize, dataset=ds,
                           parity_images=parity_images or PARITY_IMAGES)
