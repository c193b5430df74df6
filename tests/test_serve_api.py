"""The REST API (fmnist.serve) through FastAPI's TestClient: good images, many at once, every
kind of bad input with its status and a message naming the file, model card, gallery, CLI."""

from __future__ import annotations

import base64
import inspect
import io
import json
import os
import shutil
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette >= 1.x prefers httpx2; httpx works the same
    warnings.filterwarnings("ignore", message="Using `httpx`")
    from fastapi.testclient import TestClient

from fmnist.cli import main  # noqa: E402
from fmnist.errors import ConfigError  # noqa: E402
from fmnist.inference import Predictor  # noqa: E402
from fmnist.serve import create_app, find_latest_run  # noqa: E402
from fmnist.serve.app import api  # noqa: E402
from fmnist.training import train  # noqa: E402

TINY = dict(model="baseline-small", optimizer="adam", lr=3e-3, epochs=1, batch_size=100,
            train_limit=1000, test_limit=100, augment=[], precision="fp32")
SMALL_LIMIT = 2_000  # bytes per file in the `small` app


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, learnable_dataset) -> Path:
    out = tmp_path_factory.mktemp("serve") / "run"
    train(data=learnable_dataset, out=out, **TINY)
    return out


@pytest.fixture(scope="module")
def client(run_dir: Path):
    with TestClient(create_app(run_dir, device="cpu")) as c:
        yield c


@pytest.fixture(scope="module")
def small(run_dir: Path):
    """An app with tight limits: SMALL_LIMIT bytes per file, two files per request."""
    app = create_app(run_dir, device="cpu", max_upload_bytes=SMALL_LIMIT, max_files=2,
                     gallery=False)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    """The Python API with the server's default: the image and its mirror averaged."""
    return Predictor.from_path(run_dir, device="cpu", tta=True)


def encode(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode_b64_png(s: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(s))))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels: a decompression bomb's first bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))


def rgba_cutout_png(side: int) -> bytes:
    """A side x side RGBA PNG, written row by row (no full-size array here): a dark square
    item, opaque, on a transparent border -- the cut-out that made the alpha step cost
    gigabytes. 6300 px: about 170 KB encoded, 159 MB decoded."""
    q = side // 4
    clear, item = b"\xc8\xc8\xc8\x00", b"\x1e\x28\x32\xff"
    empty_row = b"\x00" + clear * side
    item_row = b"\x00" + clear * q + item * (side - 2 * q) + clear * q
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(item_row if q <= y < side - q else empty_row)
                    for y in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def photo_like() -> np.ndarray:
    """A 160x120 RGB 'photo': a dark trouser-ish shape on a light background."""
    img = np.full((160, 120, 3), 235, np.uint8)
    img[20:150, 35:55] = (40, 50, 90)
    img[20:150, 65:85] = (40, 50, 90)
    img[20:40, 35:85] = (40, 50, 90)
    return img


# --------------------------------------------------------------------------- liveness, card


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model_loaded": True}


def test_model_card_has_recipe_params_accuracy_classes_and_date(client, run_dir, learnable_dataset):
    r = client.get("/api/model")
    assert r.status_code == 200
    m = r.json()
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert m["arch"] == "baseline-small"
    assert m["recipe"] == config["recipe"]["name"]
    assert m["params"] == config["params"] > 0
    assert m["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert m["classes"] == list(learnable_dataset.classes)
    assert m["created"] == config["created"]
    assert m["backend"] == "torch"
    assert m["limits"] == {"max_upload_bytes": 10 * 1024 * 1024, "max_files": 16,
                           "max_image_pixels": 40_000_000}


# --------------------------------------------------------------------------- good images


def test_png_of_a_test_image_matches_the_python_api(client, predictor, learnable_dataset):
    image = learnable_dataset.test.images[3]
    r = client.post("/api/predict", params={"include_image": "true"},
                    files={"files": ("item.png", encode(image), "image/png")})
    assert r.status_code == 200
    [res] = r.json()
    expected = predictor.predict_top_k(image)[0]
    assert res["file"] == "item.png" and res["error"] is None and res["status"] == 200
    assert res["label"] == expected[0][0]
    assert [p["class"] for p in res["predictions"]] == [c for c, _ in expected]
    assert [p["probability"] for p in res["predictions"]] == pytest.approx(
        [p for _, p in expected], abs=1e-6)
    assert res["ms"] > 0
    # a dataset-like 28x28 image passes through preprocessing untouched
    np.testing.assert_array_equal(decode_b64_png(res["image"]), image)


def test_jpeg_photo_is_preprocessed_to_28x28(client):
    r = client.post("/api/predict?include_image=true&top_k=5",
                    files={"files": ("photo.jpg", encode(photo_like(), "JPEG", quality=90),
                                     "image/jpeg")})
    assert r.status_code == 200
    [res] = r.json()
    probs = [p["probability"] for p in res["predictions"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    seen = decode_b64_png(res["image"])
    assert seen.shape == (28, 28) and seen.max() == 255  # light item on black, stretched


def test_image_only_when_asked(client, learnable_dataset):
    r = client.post("/api/predict", files={"files": ("a.png", encode(
        learnable_dataset.test.images[0]), "image/png")})
    assert "image" not in r.json()[0]


def test_several_files_at_once_keep_their_order(client, predictor, learnable_dataset):
    images = learnable_dataset.test.images[:6]
    files = [("files", (f"img-{i}.png", encode(a), "image/png")) for i, a in enumerate(images)]
    r = client.post("/api/predict", files=files)
    assert r.status_code == 200
    body = r.json()
    assert [x["file"] for x in body] == [f"img-{i}.png" for i in range(6)]
    assert [x["label"] for x in body] == [top[0][0] for top in predictor.predict_top_k(images)]


def test_concurrent_requests_all_succeed(client, learnable_dataset):
    png = encode(learnable_dataset.test.images[1])

    def one(i: int) -> int:
        return client.post("/api/predict", files={"files": (f"{i}.png", png, "image/png")}
                           ).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8


def test_inference_endpoints_are_plain_def_so_they_run_in_the_threadpool():
    for route in api.routes:
        assert not inspect.iscoroutinefunction(route.endpoint), route.path


# --------------------------------------------------------------------------- bad input

BAD = [
    # name, bytes (callable), content type, status, words in the message
    ("notes.txt", lambda: b"just some text", "text/plain", 415, "not an image"),
    ("fake.png", lambda: b"this is not a png", "image/png", 415, "not a readable image"),
    ("empty.png", lambda: b"", "image/png", 400, "empty"),
    ("cut.png", lambda: encode(photo_like())[:200], "image/png", 400, "truncated or corrupt"),
    ("bomb.png", lambda: png_header_only(8_000, 6_000), "image/png", 413, "pixels"),
    ("huge.png", lambda: png_header_only(20_000, 20_000), "image/png", 413, "pixels"),
    ("garbage-after-header.png", lambda: encode(photo_like())[:33] + b"\x00" * 500,
     "image/png", 400, "truncated or corrupt"),
    ("unknown.bin", lambda: b"\x00\x01\x02" * 10, "application/octet-stream", 415,
     "not a readable image"),
]


@pytest.mark.parametrize("name,data,kind,status,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_file_fails_the_request_and_is_named(client, name, data, kind, status, words):
    r = client.post("/api/predict", files={"files": (name, data(), kind)})
    assert r.status_code == status
    body = r.json()
    assert body["file"] == name
    assert name in body["detail"] and words in body["detail"]
    assert body["results"][0]["status"] == status


def test_file_over_the_upload_limit_is_413(small):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    data = encode(noise)
    assert len(data) > SMALL_LIMIT
    r = small.post("/api/predict", files={"files": ("big.png", data, "image/png")})
    assert r.status_code == 413
    assert r.json()["file"] == "big.png" and "upload limit" in r.json()["detail"]


def test_one_bad_file_among_good_ones_gives_per_file_errors(client, learnable_dataset):
    good = encode(learnable_dataset.test.images[0])
    files = [("files", ("good.png", good, "image/png")),
             ("files", ("bad.png", b"garbage", "image/png")),
             ("files", ("good2.png", good, "image/png"))]
    r = client.post("/api/predict", files=files)
    assert r.status_code == 200
    good1, bad, good2 = r.json()
    assert good1["error"] is None and good2["error"] is None and good1["label"]
    assert bad["status"] == 415 and bad["label"] is None and bad["predictions"] == []
    assert "bad.png" in bad["error"]


def test_too_many_files_is_413_with_the_limit(small, learnable_dataset):
    png = encode(learnable_dataset.test.images[0])
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(3)]
    r = small.post("/api/predict", files=files)
    assert r.status_code == 413
    assert "at most 2" in r.json()["detail"]


def test_no_files_is_400(client):
    for kwargs in ({}, {"json": {"files": []}}, {"data": {"other": "x"}}):
        r = client.post("/api/predict", **kwargs)
        assert r.status_code == 400, kwargs
        assert "files" in r.json()["detail"]


def test_body_limit_is_enforced_while_streaming_not_from_content_length(small):
    limit = 2 * SMALL_LIMIT + 1024 * 1024  # max_files * max_upload_bytes + multipart slack

    def chunks():  # no Content-Length: the server has to count
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    headers = {"content-type": "multipart/form-data; boundary=b"}
    r = small.post("/api/predict", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert "larger than" in r.json()["detail"]
    r = small.post("/api/predict", content=b"x" * 10,
                   headers={**headers, "content-length": str(limit + 1)})
    assert r.status_code == 413


def test_bad_query_values_are_422_not_500(client):
    assert client.post("/api/predict?top_k=0", files={"files": ("a", b"x")}).status_code == 422
    assert client.get("/api/gallery?n=0").status_code == 422
    assert client.get("/api/gallery?n=100000").status_code == 422


# --------------------------------------------------------------------------- gallery, page


def test_gallery_gives_labelled_test_images(client, learnable_dataset):
    r = client.get("/api/gallery", params={"n": 5, "seed": 1})
    assert r.status_code == 200
    g = r.json()
    assert g["available"] and g["size"] == len(learnable_dataset.test)
    assert len(g["items"]) == 5
    for item in g["items"]:
        np.testing.assert_array_equal(decode_b64_png(item["image"]),
                                      learnable_dataset.test.images[item["index"]])
        assert item["label"] == learnable_dataset.classes[
            learnable_dataset.test.labels[item["index"]]]
    assert client.get("/api/gallery", params={"n": 5, "seed": 1}).json() == g


def test_gallery_without_data_is_skipped_with_a_note(run_dir, isolated_home):
    lone = isolated_home / "model.pt"  # no run folder, no dataset anywhere
    shutil.copy(run_dir / "model.pt", lone)
    with TestClient(create_app(lone, device="cpu")) as c:
        g = c.get("/api/gallery").json()
        assert g["available"] is False and g["items"] == []
        assert "not found" in g["note"]
        m = c.get("/api/model").json()  # the card still works without a run folder
        assert m["test_accuracy"] is not None and m["created"]


def test_gallery_turned_off(small):
    g = small.get("/api/gallery").json()
    assert g["available"] is False and "turned off" in g["note"]


def test_page_and_static_files_are_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="drop"' in r.text and 'type="file"' in r.text
    for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        res = client.get(path)
        assert res.status_code == 200 and kind in res.headers["content-type"]
    static = Path(__file__).resolve().parents[1] / "src" / "fmnist" / "serve" / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f
    assert "image-rendering: pixelated" in (static / "style.css").read_text()
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/api/predict", "/api/model", "/api/gallery", "/healthz"}


# --------------------------------------------------------------------------- CLI bits


def test_find_latest_run_picks_newest_created(tmp_path: Path):
    for name, created in (("old", "2024-01-01T00:00:00+00:00"),
                          ("new", "2025-06-01T00:00:00+00:00"),
                          ("mid", "2025-01-01T00:00:00+00:00")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes(b"")
        (tmp_path / name / "config.json").write_text(json.dumps({"created": created}))
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text(
        json.dumps({"created": "2030-01-01T00:00:00+00:00"}))
    assert find_latest_run(tmp_path) == tmp_path / "new"
    with pytest.raises(ConfigError, match="no run with a model.pt"):
        find_latest_run(tmp_path / "unfinished")


def test_cli_serve_user_errors_exit_2(tmp_path: Path, run_dir: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2
    assert "no run with a model.pt under runs/" in capsys.readouterr().err
    assert main(["serve", "missing-run"]) == 2
    assert "missing-run: no such file" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--backend", "onnx"]) == 2
    assert "no model.onnx" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--max-files", "0"]) == 2
    assert os.listdir(tmp_path) == []  # nothing written


# --------------------------------------------------------------------------- typed errors


def test_statuses_come_from_the_error_type_not_from_reopening_the_file():
    from fmnist.errors import (
        CorruptImageError,
        ImageError,
        ImageTooLargeError,
        UnsupportedImageError,
    )
    from fmnist.serve.app import image_error_status

    assert [image_error_status(e("x")) for e in (ImageTooLargeError, UnsupportedImageError,
                                                 CorruptImageError, ImageError)] == [
        413, 415, 400, 400]
    import fmnist.serve.app as app_module

    assert not hasattr(app_module, "_error_status")


def test_big_rgba_cutout_and_16_bit_png_are_classified(client):
    gray16 = (np.linspace(0, 65535, 300 * 200).reshape(300, 200)).astype(np.uint16)
    gray16[50:250, 60:140] = 5000
    files = [("files", ("cutout.png", rgba_cutout_png(2100), "image/png")),
             ("files", ("gray16.png", encode(gray16), "image/png"))]
    r = client.post("/api/predict", params={"include_image": "true"}, files=files)
    assert r.status_code == 200
    for res in r.json():
        assert res["error"] is None, res
        seen = decode_b64_png(res["image"])
        assert seen.shape == (28, 28) and seen.max() == 255
    cutout = decode_b64_png(r.json()[0]["image"])
    # the dark square, inverted to light on black, fills the frame edge to edge
    assert cutout[14, 1] > 200 and cutout[1, 14] > 200


# --------------------------------------------------------------------------- memory, slots

MEMORY_PROBE = """
import resource, sys
from fmnist.preprocess import preprocess
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pre = preprocess(data, name="big.png")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024, int(pre.image.max()))
"""
DECODE_PEAK_BOUND_MB = 250
"""Peak RSS growth allowed for preprocessing a 6300x6300 RGBA PNG: its decoded RGBA is 159 MB
and the banded reduction adds ~30 MB (measured 188 MB); before the working-size reduction the
float32 alpha step at full size took it to 2,434 MB."""


def test_decoding_a_6300px_rgba_png_stays_under_its_memory_bound(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "big.png"
    path.write_bytes(rgba_cutout_png(6300))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    grown_mb, peak_pixel = map(int, done.stdout.split())
    assert peak_pixel == 255  # it was really decoded and preprocessed
    assert grown_mb < DECODE_PEAK_BOUND_MB, f"decoding took {grown_mb} MB more"


def test_busy_decode_slots_answer_503_with_retry_after(run_dir, learnable_dataset):
    app = create_app(run_dir, device="cpu", gallery=False, max_decodes=2, decode_wait_s=0.05)
    png = encode(learnable_dataset.test.images[0])
    with TestClient(app) as c:
        slots = app.state.server.decode_slots
        assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
        try:  # both slots taken, as by two long decodes
            r = c.post("/api/predict", files={"files": ("a.png", png, "image/png")})
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert "a.png" in r.json()["detail"] and "retry" in r.json()["detail"]
        finally:
            slots.release()
        r = c.post("/api/predict", files={"files": ("a.png", png, "image/png")})
        assert r.status_code == 200  # one free slot is enough
        slots.release()


# --------------------------------------------------------------------------- headers


def test_every_response_has_the_security_headers(client, small):
    from fmnist.serve.app import PAGE_CSP

    responses = [client.get("/"), client.get("/static/app.js"), client.get("/api/model"),
                 client.get("/nope"),
                 client.post("/api/predict", files={"files": ("t.txt", b"hi", "text/plain")}),
                 small.post("/api/predict", content=b"x",
                            headers={"content-type": "multipart/form-data; boundary=b",
                                     "content-length": str(10**9)})]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 415, 413]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["content-security-policy"] == PAGE_CSP
    assert "'unsafe-inline'" not in PAGE_CSP and "frame-ancestors 'none'" in PAGE_CSP
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn.jsdelivr.net" in docs.headers[
        "content-security-policy"]


def test_the_page_has_no_inline_script_or_style_for_the_csp_to_block():
    import re

    page = (Path(__file__).resolve().parents[1] / "src" / "fmnist" / "serve" / "static"
            / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)  # every script is a file
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers


# --------------------------------------------------------------------------- schemas, Depends


def _properties(spec: dict, schema: dict) -> dict:
    """The fields of an OpenAPI schema, following one ``$ref`` (and an array's items)."""
    if schema.get("type") == "array":
        schema = schema["items"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema.get("properties", {})


def _response_fields(spec: dict, path: str, method: str, status: str = "200") -> dict:
    response = spec["paths"][path][method]["responses"][status]
    return _properties(spec, response["content"]["application/json"]["schema"])


def test_openapi_names_the_fields_of_every_json_answer(client):
    spec = client.get("/openapi.json").json()
    predict = _response_fields(spec, "/api/predict", "post")
    assert {"file", "label", "predictions", "error", "status", "ms", "ood_score",
            "in_distribution", "unsure", "image"} <= predict.keys()
    assert _properties(spec, predict["predictions"]).keys() == {"class", "probability"}
    assert {"detail", "file", "results"} <= _response_fields(
        spec, "/api/predict", "post", "415").keys()
    card = _response_fields(spec, "/api/model", "get")
    assert {"arch", "recipe", "params", "test_accuracy", "classes", "created",
            "limits"} <= card.keys()
    assert _properties(spec, card["limits"]).keys() == {"max_upload_bytes", "max_files",
                                                        "max_image_pixels"}
    gallery = _response_fields(spec, "/api/gallery", "get")
    assert {"available", "note", "dataset", "size", "items"} <= gallery.keys()
    assert {"index", "label", "image"} <= _properties(spec, gallery["items"]).keys()
    similar = _response_fields(spec, "/api/similar", "post")
    assert {"class", "similarity", "image"} <= _properties(spec, similar["similar"]).keys()
    assert _response_fields(spec, "/healthz", "get").keys() == {"status", "model_loaded"}


def test_answers_keep_their_shape_through_the_response_models(client, learnable_dataset):
    png = encode(learnable_dataset.test.images[0])
    (result,) = client.post("/api/predict", files={"files": ("a.png", png, "image/png")}).json()
    assert "image" not in result  # an optional field the answer did not set stays out
    assert set(result["predictions"][0]) == {"class", "probability"}
    off = client.get("/api/gallery", params={"n": 2, "seed": 0}).json()
    assert off["available"] and off["split"] == "test" and len(off["items"]) == 2


def test_endpoints_take_state_through_depends_not_the_request():
    from fastapi import Request
    from fastapi.routing import APIRoute

    from fmnist.serve.similar import router as similar_router

    for route in [*api.routes, *similar_router.routes]:
        assert isinstance(route, APIRoute)
        kinds = [p.annotation for p in inspect.signature(route.endpoint).parameters.values()]
        assert Request not in kinds and "Request" not in kinds, route.path


def test_a_dependency_override_swaps_the_predictor(run_dir, learnable_dataset):
    from fmnist.serve.state import get_predictor

    app = create_app(run_dir, device="cpu", gallery=False, top_k=3)
    top1 = Predictor.from_path(run_dir, device="cpu", top_k=1)
    app.dependency_overrides[get_predictor] = lambda: top1
    png = encode(learnable_dataset.test.images[0])
    with TestClient(app) as c:
        (result,) = c.post("/api/predict", files={"files": ("a.png", png, "image/png")}).json()
    assert len(result["predictions"]) == 1  # the override answered, not the app's top-3 model


def test_before_the_model_loads_endpoints_answer_503(run_dir):
    c = TestClient(create_app(run_dir, device="cpu", gallery=False))  # no `with`: no lifespan
    assert c.get("/healthz").json() == {"status": "ok", "model_loaded": False}
    for r in (c.get("/api/model"), c.get("/api/gallery"),
              c.post("/api/predict", files={"files": ("a.png", b"x", "image/png")})):
        assert r.status_code == 503 and "not loaded" in r.json()["detail"]
