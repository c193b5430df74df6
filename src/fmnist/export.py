"""ONNX export of a trained model, checked against PyTorch before it is written.

The exported graph is the whole pixels-to-probabilities path, so the ``.onnx`` file alone
is enough to serve a model (no fmnist, no torch)::

    input  "pixels": float32 (N, 1, 28, 28), values 0..255 (uint8 range), light item on
                     black -- a dataset image or the output of fmnist.preprocess
    graph  x / 255 -> (x - mean) / std -> model -> softmax(logits / temperature), with the
                     single-view temperature (metadata "temperature"; TTA averaging outside
                     the graph re-tempers each view to "temperature_tta")
    output "probs":  float32 (N, C) calibrated class probabilities; N is a dynamic axis
    output "ood_score": float32 (N,) how unlike the training data (fmnist.ood), when the
                     model has a fitted scorer; in distribution when <= metadata ood_threshold

Class names (JSON), normalization, architecture, recipe and version are stored in the
model's ``metadata_props`` (see :func:`read_onnx_metadata`).

Parity is checked at export time on the first :data:`PARITY_IMAGES` test images of the run's
dataset: the fp32 graph must match :func:`fmnist.evaluation.predict_probs` within
:data:`FP32_MAX_ABS_DIFF` and agree on at least :data:`FP32_MIN_AGREEMENT` of the top-1
predictions; the int8 graph may lose at most :data:`INT8_MAX_ACCURACY_DROP` of accuracy.
A file that fails is not written and :class:`ParityError` is raised.

int8 is *static* QDQ quantization (onnxruntime ``quantize_static``): int8 per-channel
weights, uint8 activations calibrated (MinMax) on :data:`CALIBRATION_IMAGES` stratified
training images, every supported op quantized. Measured on 1,000 Fashion-MNIST test images
(2-core AVX-512 CPU, batch 256, busy machine so speeds are rough)::

    accuracy / img/s  fp32             static u8s8 (chosen)  s8s8 Conv+Gemm   dynamic
    fastnet (fast)    89.8% /  4,000   89.8% /  9,200        90.0% / 1,700    90.0% / 740
    baseline-small    82.5% /  9,400   82.6% / 21,000        82.7% / 7,100    --

Dynamic quantization only covers Conv (as the slow ``ConvInteger``) and MatMul -- not the
``Gemm`` of the linear heads -- and made these CNNs 5-10x slower; int8 activations (s8s8)
are slow on x86, uint8 activations (u8s8) hit the VNNI kernels.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoints import ModelMeta, atomic_write, load_model, resolve_model_path
from .errors import ConfigError, DataError, FmnistError, ModelFileError
from .evaluation import FLIP_ONLY, check_shifts, normalize
from .runs import config_of_model

log = logging.getLogger("fmnist")

ONNX_FORMAT = "fmnist-onnx"
ONNX_FORMAT_VERSION = 1
INPUT_NAME = "pixels"
OUTPUT_NAME = "probs"
SCORE_NAME = "ood_score"
INPUT_CONVENTION = (
    "pixels: float32 (N, 1, 28, 28), values 0..255 (uint8 range), light item on black "
    "(a dataset image or fmnist.preprocess output); normalization is inside the graph"
)
OUTPUT_CONVENTION = "probs: float32 (N, C) softmax class probabilities, classes in metadata"
OPSET = 17

PARITY_IMAGES = 1000
"""Test images the exported graph is checked on (the first ones; all when fewer)."""
PARITY_MIN_IMAGES = 100
"""Fewest test images a parity check may rest on: a check on 2 images proves nothing."""
FP32_MAX_ABS_DIFF = 1e-4
"""Largest allowed |p_onnx - p_torch| over all images and classes (fp32)."""
FP32_MIN_AGREEMENT = 0.999
"""Smallest allowed fraction of identical top-1 predictions (fp32)."""
INT8_MAX_ACCURACY_DROP = 0.003
"""int8 accuracy may be at most 0.3 points below the fp32 torch accuracy."""
CALIBRATION_IMAGES = 512
"""Training images (stratified, seeded) that calibrate the int8 activation ranges."""
QUANTIZATIONS = ("int8",)


class ParityError(FmnistError):
    """The exported graph does not reproduce the PyTorch model closely enough."""


class ExportError(FmnistError):
    """The model could not be exported (missing onnx packages, unsupported layer...)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how well it matches PyTorch.

    Accuracies are on the ``n_images`` parity images (``None`` without a check).
    ``agreement`` / ``int8_agreement`` are the fractions of top-1 predictions equal to
    PyTorch's; ``max_abs_diff`` / ``int8_max_abs_diff`` the largest probability difference.
    """

    path: Path
    int8_path: Path | None = None
    checked: bool = False
    n_images: int = 0
    accuracy_torch: float | None = None
    accuracy_fp32: float | None = None
    max_abs_diff: float | None = None
    agreement: float | None = None
    accuracy_int8: float | None = None
    int8_max_abs_diff: float | None = None
    int8_agreement: float | None = None
    quantization: str | None = None
    size_bytes: int = 0
    int8_size_bytes: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["int8_path"] = str(self.int8_path) if self.int8_path else None
        return d


# --------------------------------------------------------------------------- graph


class PixelsToProbs(nn.Module):
    """``model`` wrapped with its input normalization, temperature and a softmax (and, with
    a ``scorer``, the OOD score as a second output): the exported graph."""

    def __init__(self, model: nn.Module, mean: float, std: float, temperature: float = 1.0,
                 scorer: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.mean = float(mean)
        self.std = float(std)
        self.temperature = float(temperature)
        self.scorer = scorer

    def forward(self, pixels: torch.Tensor):
        from .ood import feature_tap

        x = normalize(pixels, self.mean, self.std)  # (N, 1, 28, 28), as predict_probs does
        if self.scorer is None:
            return torch.softmax(self.model(x).float() / self.temperature, dim=1)  # (N, C)
        with feature_tap(self.model) as tap:
            logits = self.model(x).float()
            score = self.scorer(tap[0], logits)  # (N,)
        return torch.softmax(logits / self.temperature, dim=1), score


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ExportError(
            f"ONNX export needs the onnx extra ({e.name} is not installed); "
            "install it with `pip install 'fmnist[onnx]'`."
        ) from None


def _torch_to_onnx_bytes(model: nn.Module, meta: ModelMeta, opset: int) -> bytes:
    """Trace ``model`` (fp32, CPU) into ONNX bytes with a dynamic batch axis.

    The TorchScript exporter (``dynamo=False``) is used first: for these small CNNs it is
    ~10x faster than the torch.export one and gives the same graph; the new exporter is the
    fallback for a torch where the old one is gone.
    """
    from .ood import OodScorer

    scorer = OodScorer.from_meta(meta.ood)
    wrapped = PixelsToProbs(model.float().cpu().eval(), meta.mean, meta.std,
                            meta.temperature_for(False), scorer).eval()
    outputs = [OUTPUT_NAME] + ([SCORE_NAME] if scorer is not None else [])
    example = torch.full((2, 1, 28, 28), 128.0)
    errors: list[str] = []
    for dynamo in (False, True):
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dynamo:
                    batch = torch.export.Dim("batch", min=1)
                    prog = torch.onnx.export(
                        wrapped, (example,), dynamo=True, input_names=[INPUT_NAME],
                        output_names=outputs, dynamic_shapes=({0: batch},),
                        opset_version=max(opset, 18), verbose=False,
                    )
                    prog.save(buf)  # type: ignore[union-attr]
                else:
                    torch.onnx.export(
                        wrapped, (example,), buf, dynamo=False, input_names=[INPUT_NAME],
                        output_names=outputs, opset_version=opset,
                        dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
                    )
            return buf.getvalue()
        except Exception as e:  # unsupported op, exporter missing in this torch, ...
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {e}")
            log.debug("ONNX export (dynamo=%s) failed: %s", dynamo, e)
    raise ExportError(
        f"could not export {meta.arch!r} to ONNX ({'; '.join(e.splitlines()[0] for e in errors)})."
    )


def onnx_metadata(meta: ModelMeta, *, params: int, quantization: str | None = None,
                  parity: dict[str, Any] | None = None) -> dict[str, str]:
    """The ``metadata_props`` that make an ``.onnx`` file self-describing (all strings)."""
    from . import __version__

    props = {
        "format": ONNX_FORMAT,
        "format_version": str(ONNX_FORMAT_VERSION),
        "classes": json.dumps(list(meta.classes)),
        "mean": repr(float(meta.mean)),
        "std": repr(float(meta.std)),
        "input": INPUT_CONVENTION,
        "output": OUTPUT_CONVENTION,
        "arch": meta.arch,
        "arch_kwargs": json.dumps(meta.arch_kwargs),
        "dataset": meta.dataset,
        "recipe": meta.recipe or "",
        "params": str(params),
        "metrics": json.dumps(meta.metrics),
        "temperature": repr(float(meta.temperature_for(False))),  # the graph's (one view)
        "temperature_tta": repr(float(meta.temperature_for(True))),
        "tta_shifts": json.dumps(meta.tta_shifts),  # TTA's views (fmnist.evaluation)
        "quantization": quantization or "none",
        "fmnist_version": __version__,
        "model_fmnist_version": meta.fmnist_version,
        "created": meta.created,
    }
    if meta.ood:
        props["ood_method"] = meta.ood["method"]
        props["ood_threshold"] = repr(float(meta.ood["threshold"]))
    if parity:
        props["parity"] = json.dumps(parity)
    return props


def _with_metadata(model_bytes: bytes, props: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(model_bytes)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "fmnist"
    proto.doc_string = f"{INPUT_CONVENTION}. {OUTPUT_CONVENTION}."
    return proto.SerializeToString()


def read_onnx_metadata(path_or_bytes: str | os.PathLike | bytes) -> dict[str, Any]:
    """The fmnist metadata of an ``.onnx`` file, parsed: classes list, mean/std floats, ...

    Raises :class:`ModelFileError` for a file that is not an fmnist ONNX export.
    """
    _require_onnx()
    import onnx

    label = "<bytes>" if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    try:
        if isinstance(path_or_bytes, bytes):
            proto = onnx.load_from_string(path_or_bytes, load_external_data=False)
        else:
            proto = onnx.load(os.fspath(path_or_bytes), load_external_data=False)
    except Exception as e:
        raise ModelFileError(
            f"{label}: not a readable ONNX file ({type(e).__name__}); re-export it with "
            "`fmnist export RUN --format onnx`."
        ) from None
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("format") != ONNX_FORMAT or "classes" not in props:
        raise ModelFileError(
            f"{label}: an ONNX file without fmnist metadata (classes, normalization); "
            "export it with `fmnist export RUN --format onnx`."
        )
    if int(props.get("format_version", "0")) > ONNX_FORMAT_VERSION:
        raise ModelFileError(f"{label}: written by a newer fmnist; upgrade fmnist.")
    out: dict[str, Any] = dict(props)
    out["classes"] = json.loads(props["classes"])
    out["mean"], out["std"] = float(props["mean"]), float(props["std"])
    for key in ("temperature", "temperature_tta", "ood_threshold"):
        if key in props:
            out[key] = float(props[key])
    for key in ("arch_kwargs", "metrics", "parity"):
        if key in props:
            out[key] = json.loads(props[key])
    try:
        out["tta_shifts"] = (check_shifts(json.loads(props["tta_shifts"]))
                             if "tta_shifts" in props else FLIP_ONLY)  # older exports
    except (ValueError, ConfigError) as e:
        raise ModelFileError(f"{label}: unreadable tta_shifts metadata ({e}); re-export it "
                             "with `fmnist export RUN --format onnx`.") from None
    out["params"] = int(props["params"]) if props.get("params", "").isdigit() else None
    return out


def onnx_session(model: str | os.PathLike | bytes, threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` (``threads``: intra-op threads, None = default)."""
    _require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    src = model if isinstance(model, bytes) else os.fspath(model)
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        label = "<bytes>" if isinstance(model, bytes) else str(model)
        raise ModelFileError(
            f"{label}: onnxruntime cannot load it ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); re-export it."
        ) from None


def onnx_probs(session, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """(N, C) float64 probabilities of uint8 (N, 28, 28) images from an fmnist ONNX session."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    outs = [
        session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch_size].astype(np.float32)})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs).astype(np.float64) if outs else np.zeros((0, 0))


def onnx_scored(session, images: np.ndarray, batch_size: int = 1024
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, C) float64 probabilities and (N,) OOD scores (None when the graph has no
    ``ood_score`` output) of uint8 (N, 28, 28) images from an fmnist ONNX session."""
    names = [o.name for o in session.get_outputs()]
    if SCORE_NAME not in names:
        return onnx_probs(session, images, batch_size), None
    x = np.asarray(images)
    x = x[:, None] if x.ndim == 3 else x
    outs = [session.run([OUTPUT_NAME, SCORE_NAME],
                        {INPUT_NAME: x[i : i + batch_size].astype(np.float32)})
            for i in range(0, len(x), batch_size)]
    if not outs:
        return np.zeros((0, 0)), np.zeros(0)
    return (np.concatenate([p for p, _ in outs]).astype(np.float64),
            np.concatenate([s for _, s in outs]).astype(np.float64))


# --------------------------------------------------------------------------- int8


@contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization warns through the root logger about BatchNorm weights it
    cannot quantize per channel (harmless); keep those out of the user's console."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class _Calibration:
    """onnxruntime ``CalibrationDataReader`` over uint8 images, in batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 64) -> None:
        self.batches = [
            {INPUT_NAME: images[i : i + batch_size, None].astype(np.float32)}
            for i in range(0, len(images), batch_size)
        ]
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def quantize_int8(fp32_bytes: bytes, calibration: np.ndarray) -> bytes:
    """Static QDQ int8 (per-channel weights, MinMax-calibrated activations) of an fp32 graph.

    ``calibration`` are uint8 (N, 28, 28) images, e.g. a stratified sample of training
    images. The fp32 graph is first pre-processed (shape inference, BatchNorm folding).
    """
    _require_onnx()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise DataError("int8 quantization needs calibration images; got none.")
    with tempfile.TemporaryDirectory(prefix="fmnist-quant-") as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32_bytes)
        with warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            except Exception as e:  # optimization is optional; quantize the raw graph
                log.debug("quant_pre_process failed (%s); quantizing without it", e)
                pre = src
            quantize_static(
                str(pre), str(dst), _Calibration(np.asarray(calibration, np.uint8)),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=_score_only_nodes(pre),
            )
        return dst.read_bytes()


def _score_only_nodes(path: Path) -> list[str]:
    """Nodes that feed ``ood_score`` but not ``probs``: kept in fp32 (the distances need
    the precision; int8 made the score of a tiny model agree on in/out only 61% of the time)."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            node = producer.get(stack.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                stack.extend(node.input)
        return seen

    if SCORE_NAME not in {o.name for o in graph.output}:
        return []
    return sorted(ancestors(SCORE_NAME) - ancestors(OUTPUT_NAME))


# --------------------------------------------------------------------------- data


def _parity_dataset(model_file: Path, meta: ModelMeta, data_dir: str | os.PathLike | None):
    """The data the model was trained on, found as every command finds a run's data
    (:func:`fmnist.runs.run_dataset`); for a model file outside a run folder, ``data_dir``
    or the usual places, with the model's classes."""
    from .datasets import list_datasets, load_dataset
    from .runs import run_dataset

    config = config_of_model(model_file)
    try:
        if config:
            return run_dataset(model_file.parent, config, data_dir=data_dir, offline=True)
        name = meta.dataset if meta.dataset in list_datasets() else "fashion-mnist"
        ds = load_dataset(name, data_dir, offline=True)
        if tuple(ds.classes) != tuple(meta.classes):
            raise DataError(f"{name} from {ds.source} has classes {list(ds.classes)}, the "
                            f"model {list(meta.classes)}")
        return ds
    except FmnistError as e:
        raise DataError(
            "cannot check the export (pass --data-dir with the data the model was trained on, "
            "or --no-check to export without the parity check; int8 also needs the data to "
            f"calibrate): {e}") from None


def _calibration_images(train_images: np.ndarray, train_labels: np.ndarray, n: int) -> np.ndarray:
    from .datasets import stratified_split

    if len(train_labels) <= n:
        return train_images
    _, keep = stratified_split(train_labels, n / len(train_labels), seed=0)
    return train_images[keep]


# --------------------------------------------------------------------------- export


def _default_out(model_file: Path) -> Path:
    return model_file.with_name("model.onnx") if model_file.suffix == ".pt" else (
        model_file.with_suffix(".onnx"))


def int8_path_for(path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".onnx") + ".int8.onnx")


@dataclass(frozen=True)
class _Reference:
    """What the exported graphs are checked against: the first test images, their labels
    and PyTorch's probabilities for them."""

    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray

    @property
    def top(self) -> np.ndarray:
        return self.probs.argmax(1)


def _reference(model: nn.Module, meta: ModelMeta, ds: Any, parity_images: int,
               model_file: Path) -> _Reference:
    """PyTorch's answers on the first ``parity_images`` test images (at least
    PARITY_MIN_IMAGES of them, or a DataError that says how to get them)."""
    from .evaluation import predict_probs

    n = min(parity_images, len(ds.test))
    if n < PARITY_MIN_IMAGES:
        raise DataError(
            f"{model_file}: the parity check needs at least {PARITY_MIN_IMAGES} test images, "
            f"dataset {ds.name!r} has {len(ds.test)} (asked for {parity_images}); pass "
            "--data-dir with a larger test split, or --no-check to export unchecked."
        )
    images, labels = ds.test.images[:n], ds.test.labels[:n]
    probs = predict_probs(model, images, mean=meta.mean, std=meta.std, device="cpu",
                          temperature=meta.temperature_for(False))
    return _Reference(images, labels, probs)


def _check_fp32(fp32: bytes, ref: _Reference, meta: ModelMeta, out_path: Path) -> dict:
    """The fp32 graph's parity figures; ParityError when it differs from PyTorch."""
    p_onnx = onnx_probs(onnx_session(fp32), ref.images)
    n = len(ref.labels)
    parity = {
        "n_images": n,
        "accuracy_torch": float((ref.top == ref.labels).mean()),
        "accuracy_fp32": float((p_onnx.argmax(1) == ref.labels).mean()),
        "max_abs_diff": float(np.abs(p_onnx - ref.probs).max()),
        "agreement": float((p_onnx.argmax(1) == ref.top).mean()),
    }
    if parity["max_abs_diff"] >= FP32_MAX_ABS_DIFF or parity["agreement"] < FP32_MIN_AGREEMENT:
        raise ParityError(
            f"{meta.arch}: ONNX fp32 output differs from PyTorch on {n} test images "
            f"(max |dp| {parity['max_abs_diff']:.2e}, allowed < {FP32_MAX_ABS_DIFF:.0e}; "
            f"top-1 agreement {parity['agreement']:.2%}, needed {FP32_MIN_AGREEMENT:.1%}); "
            f"{out_path} was not written. Report the model and torch/onnx versions."
        )
    return parity


def _check_int8(int8: bytes, ref: _Reference, parity: dict, meta: ModelMeta,
                int8_path: Path) -> dict:
    """The int8 graph's figures; ParityError when it loses more than
    INT8_MAX_ACCURACY_DROP accuracy against PyTorch."""
    p8 = onnx_probs(onnx_session(int8), ref.images)
    figures = {
        "accuracy_int8": float((p8.argmax(1) == ref.labels).mean()),
        "int8_max_abs_diff": float(np.abs(p8 - ref.probs).max()),
        "int8_agreement": float((p8.argmax(1) == ref.top).mean()),
    }
    drop = parity["accuracy_torch"] - figures["accuracy_int8"]
    if drop > INT8_MAX_ACCURACY_DROP + 1e-12:
        raise ParityError(
            f"{meta.arch}: int8 accuracy {figures['accuracy_int8']:.2%} is {100 * drop:.2f} "
            f"points below fp32 {parity['accuracy_torch']:.2%} on {len(ref.labels)} test "
            f"images (at most {100 * INT8_MAX_ACCURACY_DROP:.1f} allowed); {int8_path} was "
            "not written. Use the fp32 model.onnx."
        )
    return figures


def _int8_graph(fp32: bytes, ds: Any, ref: _Reference | None, parity: dict | None,
                meta: ModelMeta, params: int, int8_path: Path) -> tuple[bytes, dict]:
    """The static int8 graph (calibrated on training images), checked when ``ref`` is
    given, with its metadata; and its figures for the ExportResult."""
    calib = _calibration_images(ds.train.images, ds.train.labels, CALIBRATION_IMAGES)
    int8 = quantize_int8(fp32, calib)
    figures: dict[str, Any] = {"quantization": "int8-static-qdq"}
    parity8 = None
    if ref is not None and parity is not None:
        figures.update(_check_int8(int8, ref, parity, meta, int8_path))
        parity8 = {**parity, "accuracy_int8": figures["accuracy_int8"],
                   "int8_agreement": figures["int8_agreement"]}
    int8 = _with_metadata(int8, onnx_metadata(meta, params=params, quantization="int8",
                                              parity=parity8))
    return int8, figures


def export_onnx(
    run_or_model_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    check: bool = True,
    data_dir: str | os.PathLike | None = None,
    dataset: Any = None,
    opset: int = OPSET,
    parity_images: int = PARITY_IMAGES,
    ood_score: bool = True,
) -> ExportResult:
    """Export a run folder's (or a ``model.pt``'s) model to ONNX, checked, atomically.

    Writes ``out`` (default ``model.onnx`` next to the ``model.pt``) and, with
    ``quantize="int8"``, ``model.int8.onnx`` beside it. With ``check`` the graphs are
    compared with PyTorch on the first ``parity_images`` test images of the run's dataset
    (``dataset``, a loaded :class:`~fmnist.datasets.Dataset`, or found via ``data_dir`` /
    the run's config); a graph that fails is not written and :class:`ParityError` is raised.
    ``ood_score=False`` leaves the out-of-distribution scorer out: a probabilities-only
    graph (the scorer stays fp32 in an int8 file, so for the ``small`` model it weighs more
    than the network: 147 KB against 71 KB without it).
    """
    _require_onnx()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(
            f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}."
        )
    t0 = time.perf_counter()
    model_file = resolve_model_path(run_or_model_path)
    model, meta = load_model(model_file, "cpu", channels_last=False)  # traced contiguous
    if not ood_score:
        meta = ModelMeta.from_dict({**meta.to_dict(), "ood": {}})
    out_path = Path(out) if out is not None else _default_out(model_file)
    if out_path.suffix != ".onnx":
        raise ConfigError(f"--out {out_path}: the file name must end in .onnx.")
    params = sum(p.numel() for p in model.parameters())
    ds = dataset
    if ds is None and (check or quantize):
        ds = _parity_dataset(model_file, meta, data_dir)
    ref = _reference(model, meta, ds, parity_images, model_file) if check else None
    fp32 = _torch_to_onnx_bytes(model, meta, opset)
    parity = _check_fp32(fp32, ref, meta, out_path) if ref is not None else None
    res: dict[str, Any] = {"path": out_path, "checked": bool(check), **(parity or {})}
    fp32 = _with_metadata(fp32, onnx_metadata(meta, params=params, parity=parity))
    int8: bytes | None = None
    if quantize == "int8":
        int8, figures = _int8_graph(fp32, ds, ref, parity, meta, params,
                                    int8_path_for(out_path))
        res.update(figures)
    atomic_write(out_path, lambda f: f.write(fp32))
    res["size_bytes"] = len(fp32)
    if int8 is not None:
        int8_path = int8_path_for(out_path)
        atomic_write(int8_path, lambda f: f.write(int8))
        res.update(int8_path=int8_path, int8_size_bytes=len(int8))
    res["seconds"] = round(time.perf_counter() - t0, 3)
    result = ExportResult(**res)
    log.debug("exported %s", result)
    return result
