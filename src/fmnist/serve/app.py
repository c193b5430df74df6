"""The web app and REST API: one FastAPI application over :class:`fmnist.Predictor`.

::

    app = create_app("runs/fast-...")          # run folder, model.pt or model.onnx
    uvicorn.run(app)                           # or: fmnist serve runs/fast-...

Routes (OpenAPI docs at ``/docs``):

* ``GET /`` -- the page (``static/``: no CDN, no external fonts, works offline).
* ``POST /api/predict`` -- multipart, one or many files in the field ``files``;
  ``?include_image=true`` adds the 28x28 image the model saw (base64 PNG),
  ``?top_k=N`` overrides the server's default.
* ``GET /api/model`` -- the model card: arch, recipe, params, test accuracy, classes, date.
* ``GET /api/gallery?n=12`` -- random test images of the run's dataset with true labels,
  loaded lazily on first use; ``available: false`` and a ``note`` when not found.
* ``POST /api/similar?k=8`` -- the k most similar training images per file
  (``fmnist.serve.similar``; 503 for an ONNX model or when the training data is missing).
* ``GET /healthz`` -- liveness.

Bad input never gives a 500. Policy when several files arrive and some are bad: **the
request succeeds (200) when at least one file was classified**, and each result carries
``error`` (null when fine) and its own ``status``. Only when *no* file could be classified
does the request fail, with the first failure's status and
``{"detail": ..., "file": name, "results": [...]}``; so a single bad file gives
400 (corrupt, empty), 413 (too many bytes or pixels) or 415 (not an image), naming it.
Request-level problems give ``{"detail": ...}``: 400 no files, 413 too many files or a
body over the total limit (counted while it streams in, whatever Content-Length says).

Memory: each upload is read and decoded inside one of ``max_decodes`` server-wide slots
(default 2); decoding reduces to the working size before any full-size float work, so one
decode costs at most the decoded image (<= 4 bytes x MAX_IMAGE_PIXELS = 160 MB) plus small
change. Files that find no free slot **wait** (up to ``decode_wait_s``, default 30 s), then
get 503 with ``Retry-After``. Error statuses come from the error's type
(:data:`IMAGE_ERROR_STATUS`), never from re-opening the file.

Every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and a Content-Security-Policy (:data:`PAGE_CSP`; the page
has no inline script or style).

The model is loaded once, in the app's lifespan, into ``app.state.predictor``. Endpoints
that run the model are plain ``def``: FastAPI runs them in its thread pool, so inference
never blocks the event loop and concurrent uploads keep streaming in.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import (
    ConfigError,
    FmnistError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from ..inference import PredictionResult, Predictor
from ..preprocess import (
    MAX_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    WORK_SIZE,
    load_image,
    preprocess,
)
from ..runs import latest_run as find_latest_run  # noqa: F401  (re-exported)
from ..runs import read_json_object
from .similar import SimilarService
from .similar import router as similar_router

log = logging.getLogger("fmnist")

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_BYTES: int = MAX_FILE_BYTES
"""Largest file accepted (10 MiB), per file."""
DEFAULT_MAX_FILES: int = 16
"""Most files in one request."""
MAX_GALLERY: int = 64
"""Most images one gallery request returns."""
MULTIPART_SLACK: int = 1024 * 1024
"""Room for multipart headers and boundaries on top of max_files * max_upload_bytes."""
ACCEPTED_TYPES = ("application/octet-stream", "")
"""Declared content types accepted besides ``image/*`` (what curl and some clients send)."""
DEFAULT_MAX_DECODES: int = 2
"""Uploads read and decoded at the same time; further files wait for a free slot. One decode
holds at most about 4 bytes x MAX_IMAGE_PIXELS (the decoded image) plus its encoded bytes and
a working-size copy, so this bounds the server's memory under concurrent worst-case uploads."""
DECODE_WAIT_S: float = 30.0
"""Longest a file waits for a decode slot; after that it is answered 503 with Retry-After."""
IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {ImageTooLargeError: 413,
                                                   UnsupportedImageError: 415}
"""HTTP status per image error type; any other :class:`ImageError` is a 400."""
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: "
            "blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
"""The page's Content-Security-Policy: its own files only, no inline script or style; images
from data: (the 28x28 the model saw, the gallery) and blob: (the upload's preview)."""
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net "
            "https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; "
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
            "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")
"""FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from their CDN with an inline
bootstrap script; they alone get this looser policy."""
SECURITY_HEADERS: dict[str, str] = {"X-Content-Type-Options": "nosniff",
                                    "X-Frame-Options": "DENY",
                                    "Referrer-Policy": "no-referrer"}
"""Sent with every response, besides the Content-Security-Policy."""


# --------------------------------------------------------------------------- models on disk


def check_model_path(path: str | os.PathLike, backend: str = "auto") -> Path:
    """Fail early, with the fix, for a path the server could not load (the CLI's check)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such file or folder. Pass a run folder, a model.pt or a "
                          "model.onnx (see `fmnist runs`).")
    if p.is_dir():
        want = "model.onnx" if backend == "onnx" else "model.pt"
        if not (p / want).is_file():
            fix = (f"export it with `fmnist export {p}`" if want == "model.onnx"
                   else "finish training it, or pass another run")
            raise ConfigError(f"{p}: no {want} in this folder; {fix}.")
    return p



def _iso(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")


def _run_dir(model_path: Path) -> Path | None:
    """The run folder a model belongs to (the folder itself, or the file's parent)."""
    folder = model_path if model_path.is_dir() else model_path.parent
    return folder if (folder / "config.json").is_file() else None


def model_card(predictor: Predictor, model_path: Path) -> dict[str, Any]:
    """What ``GET /api/model`` returns: the predictor's metadata plus the run's facts."""
    meta = predictor.meta
    run = _run_dir(model_path)
    config = read_json_object(run / "config.json") if run else {}
    metrics = read_json_object(run / "metrics.json") if run else {}
    accuracy = metrics.get("accuracy", (meta.get("metrics") or {}).get("test_acc"))
    source = Path(meta.get("source") or model_path)
    created = config.get("created") or (_iso(source.stat().st_mtime) if source.exists() else None)
    return {
        "name": run.name if run else source.name,
        "arch": meta.get("arch"),
        "recipe": meta.get("recipe") or (config.get("recipe") or {}).get("name"),
        "params": meta.get("params"),
        "dataset": meta.get("dataset"),
        "classes": list(predictor.classes),
        "test_accuracy": accuracy,
        "created": created,
        "backend": predictor.backend,
        "device": meta.get("device"),
        "precision": meta.get("precision"),
        "quantization": meta.get("quantization"),
        "top_k": predictor.top_k,
        "source": str(source),
        "fmnist_version": meta.get("fmnist_version"),
        "metrics": meta.get("metrics") or {},
    }


# --------------------------------------------------------------------------- gallery


class Gallery:
    """Random test images with their true labels, loaded on first use.

    ``source``: True (find the run's dataset, offline), False (no gallery), a data folder,
    or a loaded :class:`~fmnist.datasets.Dataset`. Never raises: when the data cannot be
    found, :meth:`sample` says so in ``note``.
    """

    def __init__(self, source: Any, model_path: Path, classes: tuple[str, ...],
                 dataset_name: str | None) -> None:
        self._source, self._model_path = source, model_path
        self._classes, self._dataset_name = classes, dataset_name
        self._lock = threading.Lock()
        self._loaded = False
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._name: str | None = None
        self._note: str | None = None

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            try:
                ds = self._find()
            except FmnistError as e:
                ds = None
                self._note = f"No gallery: the test images were not found ({_first_line(e)})."
            if ds is not None and len(ds.classes) != len(self._classes):
                self._note = (f"No gallery: dataset {ds.name!r} has {len(ds.classes)} classes, "
                              f"the model {len(self._classes)}.")
                ds = None
            if ds is not None:
                self._images, self._labels, self._name = ds.test.images, ds.test.labels, ds.name
            self._loaded = True

    def _find(self):
        from ..datasets import Dataset, list_datasets, load_dataset
        from ..runs import check_dataset

        if isinstance(self._source, Dataset):
            return self._source
        if self._source is False or self._source is None:
            raise ConfigError("the gallery is turned off")
        run = _run_dir(self._model_path)
        config = read_json_object(run / "config.json") if run else {}
        recorded = config.get("dataset") or {}
        name = recorded.get("name") or self._dataset_name or "fashion-mnist"
        name = name if name in list_datasets() else "fashion-mnist"
        if self._source is not True:
            return load_dataset(name, self._source, offline=True, verify=False)
        # the folders the run recorded first, then the usual search (FMNIST_DATA_DIR, ...)
        folders: list[str | None] = [f for f in dict.fromkeys(
            (config.get("data_dir"), recorded.get("source"))) if f and Path(f).is_dir()]
        folders.append(None)
        error: FmnistError | None = None
        for folder in folders:
            try:
                ds = load_dataset(name, folder, offline=True, verify=False)
                if config:  # only the run's own data, with its true labels
                    check_dataset(run, config, ds)
                return ds
            except FmnistError as e:
                error = error or e
        assert error is not None
        raise error

    def sample(self, n: int, seed: int | None = None) -> dict[str, Any]:
        self._load()
        if self._images is None or self._labels is None or len(self._labels) == 0:
            return {"available": False, "note": self._note or "No gallery: no test images.",
                    "dataset": None, "size": 0, "items": []}
        rng = np.random.default_rng(seed)
        index = rng.choice(len(self._labels), size=min(n, len(self._labels)), replace=False)
        items = [{"index": int(i), "label": self._classes[int(self._labels[i])],
                  "label_index": int(self._labels[i]), "image": png_base64(self._images[i])}
                 for i in index]
        return {"available": True, "note": None, "dataset": self._name, "split": "test",
                "size": int(len(self._labels)), "items": items}


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0].rstrip(".:") if str(e) else type(e).__name__


def png_base64(image: np.ndarray) -> str:
    """A uint8 (H, W) image as base64-encoded PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- uploads


class _BodyLimit:
    """ASGI middleware: 413 once a request body passes ``max_bytes``.

    Counts the bytes as they stream in, so a missing or lying Content-Length changes
    nothing; a declared length over the limit is refused before reading anything.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _detail(self) -> str:
        return (f"request body is larger than {self.max_bytes:,} bytes; send fewer or "
                "smaller files")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._detail()}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)


class _SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS and a Content-Security-Policy on every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "").rstrip("/") in ("/docs", "/redoc")
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        extra.append((b"content-security-policy", (DOCS_CSP if docs else PAGE_CSP).encode()))

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _FileError(Exception):
    """One upload refused before decoding: its HTTP status and message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def image_error_status(error: ImageError) -> int:
    """HTTP status of a refused image, by its type: 413 too large, 415 not an image or an
    unsupported format, 400 otherwise (empty, truncated, corrupt, nothing to classify)."""
    for kind, status in IMAGE_ERROR_STATUS.items():
        if isinstance(error, kind):
            return status
    return 400


def _read_upload(upload: UploadFile, name: str, max_bytes: int) -> bytes:
    kind = (upload.content_type or "").split(";")[0].strip().lower()
    if not kind.startswith("image/") and kind not in ACCEPTED_TYPES:
        raise _FileError(415, f"{name}: content type {kind!r} is not an image; upload PNG, "
                         "JPEG, WebP, GIF, BMP or TIFF")
    upload.file.seek(0)
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _FileError(413, f"{name}: larger than the {max_bytes:,}-byte upload limit; "
                         "resize or recompress it")
    return data


def _decode_upload(upload: UploadFile, name: str, *, max_bytes: int,
                   slots: threading.Semaphore, wait_s: float) -> np.ndarray:
    """Read and preprocess one upload inside a decode slot: the dataset-like 28x28 image."""
    if not slots.acquire(timeout=wait_s):
        raise _FileError(503, f"{name}: the server is busy decoding other uploads; retry in "
                         "a few seconds")
    try:
        data = _read_upload(upload, name, max_bytes)
        # preprocess() caps encoded bytes at MAX_FILE_BYTES; a larger allowed upload is
        # decoded (just as defensively) with the server's own byte limit first
        source = data if len(data) <= MAX_FILE_BYTES else load_image(
            data, name=name, max_bytes=max_bytes, draft_size=WORK_SIZE)
        return preprocess(source, name=name).image
    finally:
        slots.release()


def _predict_uploads(predictor: Predictor, uploads: list[UploadFile], *, max_bytes: int,
                     include_image: bool, top_k: int | None, slots: threading.Semaphore,
                     wait_s: float) -> list[dict[str, Any]]:
    """Per-file result dicts (errors included), one batched forward pass for the good ones."""
    results: list[dict[str, Any]] = []
    good: list[tuple[dict[str, Any], np.ndarray]] = []
    for i, upload in enumerate(uploads):
        name = (upload.filename or f"file-{i + 1}")[-255:]
        t0 = time.perf_counter()
        result: dict[str, Any] = {"file": name, "label": None, "predictions": [],
                                  "error": None, "status": 200}
        try:
            image = _decode_upload(upload, name, max_bytes=max_bytes, slots=slots,
                                   wait_s=wait_s)
            good.append((result, image))
            if include_image:
                result["image"] = png_base64(image)
        except _FileError as e:
            result.update(error=e.detail, status=e.status)
        except ImageError as e:
            result.update(error=str(e), status=image_error_status(e))
        except (OSError, ValueError, MemoryError) as e:  # belt and braces for odd files
            result.update(error=f"{name}: cannot read it ({type(e).__name__})", status=400)
        result["ms"] = (time.perf_counter() - t0) * 1000
        results.append(result)
    if good:
        t0 = time.perf_counter()
        probs, scores = predictor.scored_of(np.stack([image for _, image in good]))
        tops = predictor.top_k_of(probs, top_k)
        share = (time.perf_counter() - t0) * 1000 / len(good)
        for (result, _), answer in zip(good, _answers(predictor, probs, scores, tops),
                                       strict=True):
            result["label"] = answer.label
            result.update({k: v for k, v in answer.to_dict().items() if k not in ("file", "error")})
            result["ms"] += share
    for result in results:
        result["ms"] = round(result["ms"], 3)
    return results


MMAP_THRESHOLD_BYTES: int = 1 << 20
"""Allocations from this size up are served by mmap (glibc), so a freed image buffer goes
back to the OS at once instead of staying in a thread's malloc arena."""


def release_large_buffers_to_os(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (it otherwise grows to 32 MB after the
    first large free, and image-sized buffers freed by the thread-pool threads then stay
    in their arenas: RSS climbed with every concurrent decode). True when applied; a no-op
    off glibc."""
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(m_mmap_threshold, int(threshold)))
    except (OSError, AttributeError):
        return False


def _answers(predictor: Predictor, probs: np.ndarray, scores: np.ndarray | None,
             tops: list) -> list[PredictionResult]:
    """Per image: predictions plus ``ood_score``, ``in_distribution`` and ``unsure``, the
    same fields as ``fmnist predict --json`` (:meth:`PredictionResult.to_dict`)."""
    n = len(probs)
    values = [None] * n if scores is None else [float(v) for v in scores]
    inside = [None] * n if scores is None else predictor.in_distribution(scores)
    return [PredictionResult("", top, row, ood_score=v, in_distribution=ok)
            for top, row, v, ok in zip(tops, probs, values, inside, strict=True)]

def refuse_file_count(files: list | None, max_files: int) -> JSONResponse | None:
    """400 for a request without files, 413 for more than ``max_files``; None when fine
    (shared by /api/predict and /api/similar)."""
    if not files:
        return JSONResponse({"detail": "no files: send multipart/form-data with one or more "
                             "images in the field `files`"}, status_code=400)
    if len(files) > max_files:
        return JSONResponse({"detail": f"{len(files)} files sent, at most "
                             f"{max_files} per request; split them up"}, status_code=413)
    return None


# --------------------------------------------------------------------------- routes

api = APIRouter(tags=["api"])
pages = APIRouter(include_in_schema=False)

_FILE_ERROR = {"description": "the file named in `file` is bad (when no file could be "
               "classified): `{detail, file, results}`"}


@api.get("/healthz", summary="Liveness")
def healthz(request: Request) -> dict[str, Any]:
    return {"status": "ok", "model_loaded": getattr(request.app.state, "predictor", None)
            is not None}


@api.get("/api/model", summary="The model card")
def get_model(request: Request) -> dict[str, Any]:
    """Arch, recipe, parameters, test accuracy, classes, training date and the server's
    upload limits."""
    return {**request.app.state.model_card, "limits": request.app.state.limits}


@api.post(
    "/api/predict",
    summary="Classify one or more images",
    responses={400: _FILE_ERROR, 413: _FILE_ERROR, 415: _FILE_ERROR, 503: _FILE_ERROR},
)
def post_predict(
    request: Request,
    files: Annotated[list[UploadFile] | None,
                     File(description="image files (field `files`)")] = None,
    include_image: Annotated[bool, Query(description="add the 28x28 image the model saw, "
                                         "as a base64 PNG, in `image`")] = False,
    top_k: Annotated[int | None, Query(ge=1, le=1000, description="classes per file "
                                       "(default: the server's)")] = None,
):
    """One result per file, in order: ``file``, ``label`` (top-1), ``predictions``
    (``class``, ``probability``, best first), ``error`` (null when fine), ``status``,
    ``ms`` (preprocessing plus its share of the batched forward pass) and, with
    ``include_image``, ``image``. 200 when at least one file was classified."""
    limits = request.app.state.limits
    if (refused := refuse_file_count(files, limits["max_files"])) is not None:
        return refused
    state = request.app.state
    results = _predict_uploads(state.predictor, files, max_bytes=limits["max_upload_bytes"],
                               include_image=include_image, top_k=top_k,
                               slots=state.decode_slots, wait_s=state.decode_wait_s)
    failed = [r for r in results if r["error"]]
    if len(failed) == len(results):
        first = failed[0]
        retry = {"Retry-After": "5"} if first["status"] == 503 else None
        return JSONResponse({"detail": first["error"], "file": first["file"],
                             "results": results}, status_code=first["status"], headers=retry)
    return results


@api.get("/api/gallery", summary="Random test images with their true labels")
def get_gallery(
    request: Request,
    n: Annotated[int, Query(ge=1, le=MAX_GALLERY, description="how many images")] = 12,
    seed: Annotated[int | None, Query(description="fix the draw (default: random)")] = None,
) -> dict[str, Any]:
    """``items``: ``index``, ``label``, ``image`` (base64 PNG, 28x28). When the dataset is
    not found offline, ``available`` is false and ``note`` says why."""
    return request.app.state.gallery.sample(n, seed)


@pages.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


# --------------------------------------------------------------------------- factory


def create_app(
    model_path: str | os.PathLike,
    *,
    backend: str = "auto",
    device: str = "auto",
    top_k: int = 3,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    gallery: Any = True,
    max_decodes: int = DEFAULT_MAX_DECODES,
    decode_wait_s: float = DECODE_WAIT_S,
    predictor: Predictor | None = None,
) -> FastAPI:
    """The web app and API for one model (run folder, model.pt or model.onnx).

    The model loads in the lifespan (on server start, or when a ``TestClient`` enters).
    ``max_upload_bytes`` bounds each file and ``max_files`` the files per request; the
    whole body may not pass ``max_files * max_upload_bytes`` + 1 MiB. ``gallery``: True
    (the run's test split, found offline), False, a data folder, or a loaded Dataset.
    At most ``max_decodes`` uploads are read and decoded at once (server-wide); a file that
    waits longer than ``decode_wait_s`` for its turn is answered 503 with Retry-After.
    Every response carries SECURITY_HEADERS and a Content-Security-Policy. ``predictor``:
    one already loaded from ``model_path`` (the CLI loads it first, to refuse a bad model
    before announcing the server); otherwise the lifespan loads it.
    """
    if max_upload_bytes < 1 or max_files < 1 or max_decodes < 1:
        raise ConfigError(f"max_upload_bytes, max_files and max_decodes must be at least 1; "
                          f"got {max_upload_bytes}, {max_files} and {max_decodes}.")
    model_path = Path(model_path)
    preloaded = predictor

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release_large_buffers_to_os()
        loaded = preloaded or await run_in_threadpool(
            Predictor.from_path, model_path, backend=backend, device=device, top_k=top_k)
        # one forward pass now, so the first visitor does not pay for the warm-up
        await run_in_threadpool(loaded.probs_of, np.zeros((1, 28, 28), np.uint8))
        app.state.predictor = loaded
        app.state.model_card = model_card(loaded, model_path)
        app.state.gallery = Gallery(gallery, model_path, loaded.classes,
                                    loaded.meta.get("dataset"))
        app.state.similar = SimilarService(model_path, loaded.backend)
        log.debug("serving %r from %s", loaded, model_path)
        yield
        app.state.predictor = None

    app = FastAPI(title="fmnist", summary="Classify Fashion-MNIST-style images.",
                  version=_version(), lifespan=lifespan)
    app.state.predictor = None
    app.state.limits = {"max_upload_bytes": int(max_upload_bytes), "max_files": int(max_files),
                        "max_image_pixels": MAX_IMAGE_PIXELS}
    app.state.decode_slots = threading.BoundedSemaphore(max_decodes)
    app.state.decode_wait_s = float(decode_wait_s)
    app.add_middleware(_BodyLimit, max_bytes=max_files * max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(_SecurityHeaders)  # added last: outermost, so every response has them
    app.include_router(api)
    app.include_router(similar_router)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _version() -> str:
    from .. import __version__

    return __version__
