"""ONNX export: parity with PyTorch, int8 quantization, metadata, failures, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from fmnist.checkpoints import load_model  # noqa: E402
from fmnist.cli import main  # noqa: E402
from fmnist.errors import ConfigError, DataError, ModelFileError  # noqa: E402
from fmnist.evaluation import predict_probs  # noqa: E402
from fmnist.export import (  # noqa: E402
    FP32_MAX_ABS_DIFF,
    INT8_MAX_ACCURACY_DROP,
    ExportResult,
    ParityError,
    export_onnx,
    onnx_probs,
    onnx_session,
    read_onnx_metadata,
)


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy) -> Path:
    return tiny_run_copy("export")


@pytest.fixture(scope="module")
def exported(run_dir: Path) -> ExportResult:
    # no dataset argument: the test images are found from the run's config.json
    return export_onnx(run_dir, quantize="int8")


def test_writes_fp32_and_int8_into_the_run_folder(run_dir: Path, exported: ExportResult):
    assert exported.path == run_dir / "model.onnx" and exported.path.is_file()
    assert exported.int8_path == run_dir / "model.int8.onnx" and exported.int8_path.is_file()
    assert exported.checked and exported.n_images == 500  # the whole learnable test split
    assert exported.size_bytes == exported.path.stat().st_size


def test_fp32_parity_with_torch(run_dir: Path, exported: ExportResult, learnable_dataset):
    assert exported.max_abs_diff < FP32_MAX_ABS_DIFF
    assert exported.agreement == 1.0
    assert exported.accuracy_fp32 == exported.accuracy_torch > 0.5  # the model learned
    # recompute independently, with batch sizes other than the export's
    model, meta = load_model(run_dir)
    images = learnable_dataset.test.images[:37]
    p_torch = predict_probs(model, images, mean=meta.mean, std=meta.std,
                            temperature=meta.temperature_for(False))  # the graph's, one view
    session = onnx_session(exported.path)
    p_onnx = np.concatenate([onnx_probs(session, images[:1]), onnx_probs(session, images[1:])])
    assert p_onnx.shape == p_torch.shape == (37, 10)
    assert np.abs(p_onnx - p_torch).max() < 1e-4
    assert (p_onnx.argmax(1) == p_torch.argmax(1)).all()
    np.testing.assert_allclose(p_onnx.sum(1), 1.0, atol=1e-5)  # softmax is in the graph


def test_graph_has_a_dynamic_batch_axis_and_pixel_input(exported: ExportResult):
    session = onnx_session(exported.path)
    (inp,), (outp, score) = session.get_inputs(), session.get_outputs()
    assert inp.name == "pixels" and inp.shape[1:] == [1, 28, 28] and isinstance(inp.shape[0], str)
    assert outp.name == "probs" and score.name == "ood_score"
    batch = np.zeros((5, 1, 28, 28), np.float32)
    probs, scores = session.run(None, {"pixels": batch})
    assert probs.shape == (5, 10) and scores.shape == (5,)


def test_metadata_is_enough_to_serve(run_dir: Path, exported: ExportResult):
    _, meta = load_model(run_dir)
    md = read_onnx_metadata(exported.path)
    assert md["classes"] == list(meta.classes)
    assert md["mean"] == pytest.approx(meta.mean) and md["std"] == pytest.approx(meta.std)
    assert md["arch"] == "baseline-small" and md["recipe"] == meta.recipe
    assert md["input"].startswith("pixels: float32 (N, 1, 28, 28), values 0..255")
    assert md["fmnist_version"] and md["params"] > 0
    assert md["quantization"] == "none" and md["parity"]["agreement"] == 1.0
    assert read_onnx_metadata(exported.int8_path)["quantization"] == "int8"


def test_int8_is_quantized_and_reports_accuracy(exported: ExportResult):
    assert exported.quantization == "int8-static-qdq"
    assert exported.accuracy_int8 is not None and exported.int8_agreement is not None
    assert exported.accuracy_int8 >= exported.accuracy_torch - INT8_MAX_ACCURACY_DROP
    ops = {n.op_type for n in onnx.load(str(exported.int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert exported.int8_size_bytes < exported.size_bytes / 2


def test_parity_failure_refuses_to_write(run_dir: Path, tmp_path: Path, monkeypatch):
    import fmnist.export as ex
    from fmnist.models import create_model

    real = ex._torch_to_onnx_bytes

    def other_weights(model, meta, opset):  # an untrained model of the same architecture
        return real(create_model(meta.arch, num_classes=len(meta.classes)), meta, opset)

    monkeypatch.setattr(ex, "_torch_to_onnx_bytes", other_weights)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_onnx(run_dir, out)
    assert not out.exists()
    # the CLI turns it into exit code 1 with the reason on stderr
    assert main(["export", str(run_dir), "--out", str(out)]) == 1
    assert not out.exists()


def test_int8_accuracy_drop_fails(run_dir: Path, tmp_path: Path, monkeypatch):
    import fmnist.export as ex

    def broken(fp32_bytes, calibration):  # "quantized" model that always says class 0
        return ex._torch_to_onnx_bytes(*_constant_model(), 17)

    monkeypatch.setattr(ex, "quantize_int8", broken)
    with pytest.raises(ParityError, match="int8 accuracy"):
        export_onnx(run_dir, tmp_path / "m.onnx", quantize="int8")
    assert not (tmp_path / "m.int8.onnx").exists()


def _constant_model():
    import torch

    from fmnist.checkpoints import ModelMeta

    class Zero(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 10) + x.sum() * 0 + torch.eye(10)[0]

    meta = ModelMeta("x", {}, tuple(str(i) for i in range(10)), 0.5, 0.5)
    return Zero(), meta


def test_no_check_needs_no_data(run_dir: Path, tmp_path: Path):
    r = export_onnx(run_dir, tmp_path / "plain.onnx", check=False)
    assert not r.checked and r.max_abs_diff is None and r.path.is_file()
    assert read_onnx_metadata(r.path)["classes"][0] == "T-shirt/top"


def test_missing_data_is_a_clear_error(run_dir: Path, tmp_path: Path):
    with pytest.raises(DataError, match="--no-check"):
        export_onnx(run_dir, tmp_path / "m.onnx", data_dir=tmp_path / "nothing-here")
    assert not (tmp_path / "m.onnx").exists()


def test_model_file_outside_its_run_is_checked_on_the_data_given(
        run_dir: Path, tmp_path: Path, learnable_csv_dir: Path):
    import shutil

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run_dir / "model.pt", alone / "model.pt")
    r = export_onnx(alone / "model.pt", data_dir=learnable_csv_dir)
    assert r.checked and r.n_images == 500 and r.path == alone / "model.onnx"
    with pytest.raises(DataError, match="cannot check the export.*--no-check"):
        export_onnx(alone / "model.pt", tmp_path / "m.onnx", data_dir=tmp_path / "nothing")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_arguments(run_dir: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="int8"):
        export_onnx(run_dir, quantize="int4")
    with pytest.raises(ConfigError, match=".onnx"):
        export_onnx(run_dir, tmp_path / "model.bin", check=False)
    with pytest.raises(ModelFileError):
        export_onnx(tmp_path / "missing-run")


def test_metadata_of_a_foreign_onnx_file(tmp_path: Path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelFileError, match="without fmnist metadata"):
        read_onnx_metadata(path)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="not a readable ONNX"):
        read_onnx_metadata(tmp_path / "junk.onnx")


def test_cli_export_json(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(run_dir), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["path"] == str(out) and out.is_file()
    assert result["max_abs_diff"] < 1e-4 and result["int8_path"] is None
    assert main(["export", str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("test_images,parity_images", [(2, 1000), (99, 1000), (500, 50)])
def test_parity_check_refuses_too_few_test_images(run_dir: Path, tmp_path: Path,
                                                  learnable_dataset, test_images: int,
                                                  parity_images: int):
    """An image-folder run with 2 test images used to 'check' the graph on 2 images while the
    docs said 1,000: fewer than PARITY_MIN_IMAGES is refused, naming the count and the fix."""
    import dataclasses

    from fmnist.datasets import Split
    from fmnist.errors import DataError
    from fmnist.export import PARITY_MIN_IMAGES

    test = learnable_dataset.test
    small = dataclasses.replace(learnable_dataset, test=Split(test.images[:test_images],
                                                              test.labels[:test_images]))
    out = tmp_path / "m.onnx"
    with pytest.raises(DataError, match=f"at least {PARITY_MIN_IMAGES} test images.*--no-check"):
        export_onnx(run_dir, out, dataset=small, parity_images=parity_images)
    assert not out.exists()
    r = export_onnx(run_dir, out, dataset=small, check=False)  # the way out it names
    assert out.exists() and not r.checked and r.n_images == 0


def test_parity_check_at_the_minimum_reports_its_count(run_dir: Path, tmp_path: Path,
                                                       learnable_dataset):
    from fmnist.export import PARITY_MIN_IMAGES

    r = export_onnx(run_dir, tmp_path / "m.onnx", dataset=learnable_dataset,
                    parity_images=PARITY_MIN_IMAGES)
    assert r.checked and r.n_images == PARITY_MIN_IMAGES
