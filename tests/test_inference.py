"""Predictor: backends agree, every input kind gives the same answer, bad files are isolated."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

from fmnist.errors import ConfigError, ImageError, ModelFileError  # noqa: E402
from fmnist.export import export_onnx  # noqa: E402
from fmnist.inference import (  # noqa: E402
    Predictor,
    _as_batch,
    collect_image_files,
    steps_file_names,
)
from fmnist.preprocess import MAX_FILE_BYTES, preprocess  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy, learnable_dataset) -> Path:
    out = tiny_run_copy("inference")
    export_onnx(out, dataset=learnable_dataset)
    return out


@functools.cache
def _real_test_images(folder: str) -> np.ndarray:
    from fmnist.datasets import load_dataset

    return load_dataset("fashion-mnist", folder, offline=True).test.images[:64]


@pytest.fixture
def images(request, learnable_dataset) -> np.ndarray:
    """Test images: the real Fashion-MNIST ones when present, else the learnable ones."""
    try:
        real = request.getfixturevalue("real_data_dir")
    except pytest.skip.Exception:
        return learnable_dataset.test.images[:64]
    return _real_test_images(str(real))


@pytest.fixture(scope="module")
def torch_predictor(run_dir: Path) -> Predictor:
    return Predictor.from_path(run_dir, device="cpu")


@pytest.fixture(scope="module")
def onnx_predictor(run_dir: Path) -> Predictor:
    return Predictor.from_path(run_dir / "model.onnx")


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- backends


def test_model_pt_onnx_and_run_dir_agree(run_dir: Path, learnable_dataset):
    x = learnable_dataset.test.images
    preds = {
        "run": Predictor.from_path(run_dir),
        "pt": Predictor.from_path(run_dir / "model.pt"),
        "onnx": Predictor.from_path(run_dir / "model.onnx"),
        "onnx-from-run": Predictor.from_path(run_dir, backend="onnx"),
    }
    assert [p.backend for p in preds.values()] == ["torch", "torch", "onnx", "onnx"]
    probs = {k: p.predict_proba(x) for k, p in preds.items()}
    for k, pr in probs.items():
        assert pr.shape == (len(x), 10), k
        np.testing.assert_array_equal(pr.argmax(1), probs["run"].argmax(1), err_msg=k)
        assert np.abs(pr - probs["run"]).max() < 1e-4, k
    assert (probs["run"].argmax(1) == learnable_dataset.test.labels).mean() > 0.5


def test_a_loaded_model_takes_the_layout_its_inputs_come_in(run_dir: Path, images):
    """Weights loaded contiguous made channels-last input 2-3x slower on the CPU; the
    layouts give the same probabilities."""
    import torch

    from fmnist.checkpoints import load_model
    from fmnist.evaluation import predict_probs

    fast, meta = load_model(run_dir)
    plain, _ = load_model(run_dir, channels_last=False)
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(m.weight.is_contiguous() for m in plain.modules()
               if isinstance(m, torch.nn.Conv2d))
    args = dict(mean=meta.mean, std=meta.std)
    np.testing.assert_allclose(predict_probs(fast, images, **args),
                               predict_probs(plain, images, **args), atol=1e-5)


def test_predict_top_k(torch_predictor: Predictor, images: np.ndarray):
    out = torch_predictor.predict_top_k(images[:5])
    probs = torch_predictor.predict_proba(images[:5])
    assert len(out) == 5 and all(len(row) == 3 for row in out)
    for row, p in zip(out, probs, strict=True):
        assert [c for c, _ in row] == [torch_predictor.classes[j] for j in np.argsort(-p)[:3]]
        assert [v for _, v in row] == sorted((v for _, v in row), reverse=True)
        assert row[0][1] == pytest.approx(p.max())
    assert len(torch_predictor.predict_top_k(images[:2], k=10)[0]) == 10
    assert len(torch_predictor.predict_top_k(images[0])) == 1  # one image in, one list out


def test_meta_and_classes(torch_predictor: Predictor, onnx_predictor: Predictor, run_dir: Path):
    for p in (torch_predictor, onnx_predictor):
        m = p.meta
        assert p.classes[0] == "T-shirt/top" and len(p.classes) == 10
        assert m["arch"] == "baseline-small" and m["params"] > 0
        assert set(m["normalization"]) == {"mean", "std"}
        assert "test_acc" in m["metrics"] and m["backend"] == p.backend
    assert torch_predictor.meta["params"] == onnx_predictor.meta["params"]
    assert torch_predictor.meta["normalization"]["mean"] == pytest.approx(
        onnx_predictor.meta["normalization"]["mean"])


def test_tta_on_both_backends(run_dir: Path, images: np.ndarray):
    t = Predictor.from_path(run_dir, tta=True).predict_proba(images[:8])
    o = Predictor.from_path(run_dir / "model.onnx", tta=True).predict_proba(images[:8])
    assert np.abs(t - o).max() < 1e-4
    np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-5)
    # TTA is the mean of the image's and its mirror's probabilities (shown at temperature 1:
    # without a data folder the tiny run's fitted temperature makes every view one-hot)
    import dataclasses

    from fmnist.checkpoints import load_model

    model, meta = load_model(run_dir)
    meta = dataclasses.replace(meta, temperature=1.0, temperature_single=None)
    one = Predictor.from_model(model, meta)
    mirror = one.predict_proba(np.ascontiguousarray(images[:8, :, ::-1]))
    np.testing.assert_allclose(Predictor.from_model(model, meta, tta=True).predict_proba(
        images[:8]), (one.predict_proba(images[:8]) + mirror) / 2, atol=1e-6)
    assert np.abs(mirror - one.predict_proba(images[:8])).max() > 1e-4  # the views differ


def test_bad_paths_and_options(run_dir: Path, tmp_path: Path):
    with pytest.raises(ModelFileError, match="no such file"):
        Predictor.from_path(tmp_path / "missing")
    with pytest.raises(ModelFileError, match="onnx backend"):
        Predictor.from_path(run_dir / "model.onnx", backend="torch")
    with pytest.raises(ModelFileError, match="needs a .onnx"):
        Predictor.from_path(run_dir / "model.pt", backend="onnx")
    empty = tmp_path / "run"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="fmnist export"):
        Predictor.from_path(empty, backend="onnx")
    with pytest.raises(ConfigError, match="backend"):
        Predictor.from_path(run_dir, backend="tensorrt")
    with pytest.raises(ConfigError, match="top_k"):
        Predictor.from_path(run_dir, top_k=0)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelFileError):
        Predictor.from_path(tmp_path / "junk.pt")


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_png_round_trip_is_exact(kind, torch_predictor, onnx_predictor, images, tmp_path):
    """A test image saved as PNG gives the array's class and probability (to 1e-6)."""
    p = torch_predictor if kind == "torch" else onnx_predictor
    x = images[:16]
    from_array = p.predict_proba(x)
    paths = []
    for i, a in enumerate(x):
        paths.append(tmp_path / f"img{i}.png")
        paths[-1].write_bytes(_png(a))
    results = p.predict_files(paths)
    assert all(r.ok for r in results)
    for r, a, expected in zip(results, x, from_array, strict=True):
        np.testing.assert_array_equal(r.preprocessed.image, a)  # pixels unchanged
        assert r.top_k[0][0] == p.classes[int(expected.argmax())]
        assert abs(r.top_k[0][1] - expected.max()) < 1e-6
        assert np.abs(r.probs - expected).max() < 1e-6
    single = p.predict_top_k(paths[3])[0]  # batch of one
    assert single[0][0] == p.classes[int(from_array[3].argmax())]
    assert abs(single[0][1] - from_array[3].max()) < 1e-6


def test_every_input_kind_agrees(torch_predictor: Predictor, images: np.ndarray, tmp_path):
    a = images[0]
    path = tmp_path / "a.png"
    path.write_bytes(_png(a))
    inputs = [a, str(path), path, _png(a), Image.fromarray(a), io.BytesIO(_png(a)),
              a.astype(np.float32) / 255.0]
    probs = torch_predictor.predict_proba(inputs)
    assert probs.shape == (len(inputs), 10)
    assert np.abs(probs - probs[0]).max() < 1e-5  # float32 sums in another order: 1.25e-6 seen


def test_uint8_batch_follows_the_preprocess_pass_through(images: np.ndarray):
    batch = images[:6].copy()
    batch[2] = 255 - batch[2]  # an inverted item (light background) is inverted back
    fast = _as_batch(batch)
    slow = np.stack([preprocess(a).image for a in batch])
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(_as_batch(batch[:, None]), slow)  # (N, 1, 28, 28)
    assert _as_batch(batch.astype(np.float32)) is None  # not a uint8 batch: per image


def test_bad_image_raises_in_predict(torch_predictor: Predictor):
    with pytest.raises(ImageError):
        torch_predictor.predict_top_k([b"not an image"])


def test_predict_files_isolates_bad_files(torch_predictor: Predictor, images, tmp_path):
    good = []
    for i in range(3):
        good.append(tmp_path / f"good{i}.png")
        good[-1].write_bytes(_png(images[i]))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(_png(images[0])[:60])  # truncated PNG
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: cheap to make
    missing = tmp_path / "missing.png"
    order = [good[0], corrupt, empty, good[1], text, huge, missing, good[2]]
    results = torch_predictor.predict_files(order, batch_size=2)
    assert [r.file for r in results] == [str(p) for p in order]
    assert [r.ok for r in results] == [True, False, False, True, False, False, False, True]
    reasons = {Path(r.file).name: r.error for r in results if not r.ok}
    assert "corrupt" in reasons["corrupt.png"] or "truncated" in reasons["corrupt.png"]
    assert "empty" in reasons["empty.jpg"]
    assert "not a readable image" in reasons["notes.png"]
    assert "bytes" in reasons["huge.png"] and "allowed" in reasons["huge.png"]
    assert "no such file" in reasons["missing.png"]
    for name, why in reasons.items():
        assert name in why  # every reason names its file
    expected = torch_predictor.predict_top_k(images[:3])
    got = [r.top_k for r in results if r.ok]
    assert [row[0][0] for row in got] == [row[0][0] for row in expected]
    assert results[0].preprocessed.steps  # steps kept for --show-steps
    bad = results[1]
    assert bad.top_k is None and bad.label is None and bad.to_dict()["predictions"] == []


def test_collect_files_and_step_names(tmp_path: Path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for rel in ("d/a.png", "d/sub/a.PNG", "d/b.jpg", "d/readme.txt", "d/sub/c.webp"):
        (tmp_path / rel).write_bytes(b"x")
    extra = tmp_path / "explicit.txt"
    files = collect_image_files([tmp_path / "d", extra])
    names = [p.relative_to(tmp_path).as_posix() for p in files]
    assert names == ["d/a.png", "d/b.jpg", "d/sub/a.PNG", "d/sub/c.webp", "explicit.txt"]
    from fmnist.inference import PredictionResult

    results = [PredictionResult(str(f), top_k=[("x", 1.0)]) for f in files[:3]]
    results.insert(1, PredictionResult("bad.png", error="bad"))
    assert steps_file_names(results) == ["a.steps.png", None, "b.steps.png", "a-2.steps.png"]
