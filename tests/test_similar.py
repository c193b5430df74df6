"""Similar items: embeddings, the cached index, search quality, the CLI."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fmnist.similar as similar
from fmnist.cli import main
from fmnist.errors import ConfigError, ModelFileError
from fmnist.inference import Predictor
from fmnist.models import create_model, list_models
from fmnist.similar import INDEX_FILE, SimilarFinder, SimilarIndex, embed_model, precision_at_k


@pytest.mark.parametrize("name", list_models())
def test_every_model_embeds_unit_penultimate_features(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    feats = embed_model(model, images, mean=0.3, std=0.35, batch_size=2)
    assert feats.shape == (3, head.in_features)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    assert model.training  # the caller's mode is restored
    assert not head._forward_pre_hooks  # and the hook removed


def test_model_without_linear_layer_is_a_clear_error() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    with pytest.raises(ModelFileError, match="no nn.Linear"):
        embed_model(model, np.zeros((1, 28, 28), np.uint8), mean=0.0, std=1.0)


def _index(vectors: np.ndarray, labels) -> SimilarIndex:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return SimilarIndex(v.astype(np.float32), np.asarray(labels), ("a", "b"), "sha")


def test_query_is_exact_cosine_nearest_best_first() -> None:
    rng = np.random.default_rng(1)
    index = _index(rng.normal(size=(50, 6)), rng.integers(0, 2, 50))
    idx, scores = index.query(index.vectors[[3, 7]], k=5)
    assert idx[:, 0].tolist() == [3, 7]
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    brute = np.argsort(-(index.vectors[[3, 7]] @ index.vectors.T), axis=1)[:, :5]
    assert idx.tolist() == brute.tolist()
    assert (np.diff(scores, axis=1) <= 0).all()
    assert index.query(index.vectors[:1], k=500)[0].shape == (1, 50)  # k capped at N
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="k must be"):
            index.query(index.vectors[:1], k=bad)


def test_precision_at_k() -> None:
    assert precision_at_k(np.array([[1, 1, 0, 1], [2, 2, 2, 2]]), [1, 0]) == 3 / 8


def test_index_round_trip_and_bad_file(tmp_path: Path) -> None:
    index = _index(np.eye(4, 3) + 0.1, [0, 1, 1, 0])
    index.save(tmp_path / "i.npz")
    back = SimilarIndex.load(tmp_path / "i.npz")
    np.testing.assert_array_equal(back.vectors, index.vectors)
    assert (back.classes, back.model_sha256) == (("a", "b"), "sha")
    (tmp_path / "bad.npz").write_bytes(b"not an index")
    with pytest.raises(ModelFileError, match="delete it"):
        SimilarIndex.load(tmp_path / "bad.npz")


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy) -> Path:
    return tiny_run_copy("similar")


def test_index_is_cached_and_rebuilt_when_model_changes(run_dir: Path, monkeypatch) -> None:
    first = SimilarFinder.from_run(run_dir)
    cached = run_dir / INDEX_FILE
    assert cached.is_file() and not list(run_dir.glob(f".{INDEX_FILE}.*"))  # no temp left
    calls = []
    real = similar.embed_model
    monkeypatch.setattr(similar, "embed_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = SimilarFinder.from_run(run_dir)
    assert calls == []  # loaded, not rebuilt
    np.testing.assert_array_equal(again.index.vectors, first.index.vectors)
    model_pt = run_dir / "model.pt"
    original = model_pt.read_bytes()
    try:
        model_pt.write_bytes(original + b"\0")  # same weights, different file
        SimilarFinder.from_run(run_dir)
        assert calls == [1]
        assert SimilarIndex.load(cached).model_sha256 == similar.file_sha256(model_pt)
    finally:
        model_pt.write_bytes(original)


def test_neighbours_share_the_query_class(run_dir: Path, learnable_dataset) -> None:
    finder = SimilarFinder.from_run(run_dir)
    test = learnable_dataset.test
    results = finder.search(test.images[:100], k=8)
    labels = np.array([[n.label for n in row] for row in results])
    assert precision_at_k(labels, test.labels[:100]) > 0.8
    first = results[0][0]
    assert first.class_name == finder.index.classes[first.label]
    assert first.label == learnable_dataset.train.labels[first.index]
    assert len(finder.index) == len(learnable_dataset.train)


def test_onnx_backend_has_no_features() -> None:
    from fmnist.inference import _OnnxBackend

    p = Predictor(_OnnxBackend(session=None), ["a", "b"], {"arch": "x"})
    with pytest.raises(ModelFileError, match="torch backend"):
        p.embed(np.zeros((1, 28, 28), np.uint8))


def _png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_cli_similar_lines_json_and_strip(run_dir: Path, learnable_dataset, tmp_path: Path,
                                          capsys) -> None:
    a = _png(tmp_path / "a.png", learnable_dataset.test.images[0])
    b = _png(tmp_path / "b.png", learnable_dataset.test.images[1])
    out = tmp_path / "strip.png"
    assert main(["similar", str(run_dir), str(a), str(b), "--k", "3", "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert text.out.count("\n") == 2 and text.out.startswith(f"{a}: ")
    assert "ms per query" in text.err
    with Image.open(out) as im:
        assert im.width > im.height > 0
    assert main(["similar", str(run_dir), str(a), "--k", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [len(d["similar"]) for d in doc] == [4]
    assert set(doc[0]["similar"][0]) == {"index", "class", "label", "similarity"}
    expected = learnable_dataset.classes[learnable_dataset.train.labels[doc[0]["similar"][0]
                                                                        ["index"]]]
    assert doc[0]["similar"][0]["class"] == expected


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_api_similar(run_dir: Path, learnable_dataset, tmp_path: Path) -> None:
    import shutil

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fmnist.serve import create_app

    query = learnable_dataset.test.images[:2]
    files = [("files", (f"q{i}.png", _png_bytes(x), "image/png")) for i, x in enumerate(query)]
    with TestClient(create_app(run_dir, device="cpu", gallery=False)) as client:
        r = client.post("/api/similar?k=5", files=files + [("files", ("bad.png", b"x",
                                                                      "image/png"))])
        assert r.status_code == 200
        good, _, bad = r.json()
        assert [n["index"] for n in good["similar"]] == [
            n.index for n in SimilarFinder.from_run(run_dir).search(query[:1], k=5)[0]]
        thumb = base64.b64decode(good["similar"][0]["image"])
        assert Image.open(io.BytesIO(thumb)).size == (28, 28)
        assert bad["error"] and "bad.png" in bad["error"] and bad["similar"] == []
        assert client.post("/api/similar?k=0", files=files).status_code == 422
        assert client.post("/api/similar").status_code == 400
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run_dir / "model.pt", lone / "model.pt")  # no run folder around it
    with TestClient(create_app(lone / "model.pt", device="cpu", gallery=False)) as client:
        r = client.post("/api/similar", files=files)
        assert r.status_code == 503 and "run folder" in r.json()["detail"]
