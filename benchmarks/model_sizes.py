"""Model sizes: parameters, MFLOPs, ONNX file sizes (fp32 and int8) and test accuracy.

    python benchmarks/model_sizes.py [--runs RUN ...] [--models PATTERN] [--data-dir DIR]

One row per registered model at its default options (sizes only: exported untrained, the
int8 file calibrated on training images like ``fmnist export --quantize int8``), then one
row per trained ``--runs`` folder: its recipe's test accuracy (metrics.json, TTA where the
recipe uses it) and, on all 10,000 test images, the single-view accuracy of the PyTorch
model, of its fp32 ONNX graph and of its int8 graph (``fmnist export --quantize int8``'s
parity check), and the sizes and int8 accuracy without the fp32 OOD scorer
(``fmnist export --no-ood-score``). Writes ``benchmarks/results/model-sizes-cpu.json``;
``python benchmarks/readme_tables.py`` puts the table into the README.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import write_result

from fmnist.checkpoints import ModelMeta, load_model, save_model
from fmnist.datasets import load_dataset
from fmnist.export import ParityError, export_onnx
from fmnist.models import count_params, create_model, flops_per_image, list_models
from fmnist.runs import read_json_object

TEST_IMAGES = 10_000


_BN_STATS = (".running_mean", ".running_var", ".num_batches_tracked")


def sizes(model: torch.nn.Module) -> dict:
    """Parameters (trained or frozen), fixed non-BN buffers (the small net's whitening
    filters), Keras' total (with BN statistics) and MFLOPs per image."""
    fixed = sum(b.numel() for n, b in model.named_buffers() if not n.endswith(_BN_STATS))
    return {"params": count_params(model), "fixed_weights": fixed,
            "params_keras": count_params(model, include_bn_buffers=True),
            "mflops": round(flops_per_image(model) / 1e6, 2)}


def registered_row(name: str, ds, tmp: Path) -> dict:
    """Sizes of ``name`` at its default options, exported untrained (no parity check)."""
    model = create_model(name, num_classes=len(ds.classes))
    meta = ModelMeta(arch=name, arch_kwargs=model.arch_kwargs, classes=tuple(ds.classes),
                     mean=0.286, std=0.353)
    save_model(tmp / f"{name}.pt", model, meta)
    r = export_onnx(tmp / f"{name}.pt", tmp / f"{name}.onnx", quantize="int8", check=False,
                    dataset=ds)
    return {"model": name, **sizes(model), "onnx_bytes": r.size_bytes,
            "int8_bytes": r.int8_size_bytes}


def run_row(run: str, ds, tmp: Path) -> dict:
    """A trained run: sizes, recipe test accuracy and fp32/int8 ONNX accuracy."""
    model, meta = load_model(run)
    row = {"run": run, "model": meta.arch, "recipe": meta.recipe, **sizes(model),
           "test_accuracy": read_json_object(Path(run) / "metrics.json").get("accuracy")}
    stem = tmp / f"run{len(list(tmp.glob('run*.onnx')))}"
    try:
        r = export_onnx(run, f"{stem}.onnx", quantize="int8", dataset=ds,
                        parity_images=TEST_IMAGES)
        p = export_onnx(run, f"{stem}-probs.onnx", quantize="int8", dataset=ds,
                        parity_images=TEST_IMAGES, ood_score=False)
    except ParityError as e:
        return {**row, "error": str(e)}
    return {**row, "onnx_bytes": r.size_bytes, "int8_bytes": r.int8_size_bytes,
            "probs_only_onnx_bytes": p.size_bytes, "probs_only_int8_bytes": p.int8_size_bytes,
            "n_images": r.n_images, "accuracy_torch": r.accuracy_torch,
            "accuracy_onnx_fp32": r.accuracy_fp32, "accuracy_onnx_int8": r.accuracy_int8,
            "accuracy_probs_only_int8": p.accuracy_int8, "int8_agreement": r.int8_agreement}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=[], help="trained run folders")
    p.add_argument("--models", default="*", help="registered models to size (shell pattern)")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    ds = load_dataset("fashion-mnist", args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        models = [registered_row(n, ds, Path(tmp)) for n in list_models(args.models)]
        runs = [run_row(r, ds, Path(tmp)) for r in args.runs]
    for r in models + runs:
        acc = r.get("accuracy_onnx_int8")
        print(f"{r.get('run', r['model'])}: {r['params']:,} params, {r['mflops']} MFLOPs, "
              f"int8 {(r.get('int8_bytes') or 0) / 1e3:.0f} KB"
              + (f", int8 accuracy {acc:.2%}" if acc is not None else ""))
    path = write_result("model-sizes", torch.device("cpu"), {"models": models, "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
