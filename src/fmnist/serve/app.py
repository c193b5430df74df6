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
(:data:`fmnist.serve.uploads.IMAGE_ERROR_STATUS`), never from re-opening the file.

Every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
``Referrer-Policy: no-referrer`` and a Content-Security-Policy (:data:`PAGE_CSP`; the page
has no inline script or style).

The model is loaded once, in the app's lifespan, into the app's :class:`ServerState`;
endpoints reach it through FastAPI dependencies (``fmnist.serve.state``), and every JSON
answer has a response model (``fmnist.serve.schemas``) that ``/docs`` shows. Endpoints
that run the model are plain ``def``: FastAPI runs them in its thread pool, so inference
never blocks the event loop and concurrent uploads keep streaming in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError, ImageError
from ..inference import PredictionResult, Predictor
from ..preprocess import MAX_FILE_BYTES, MAX_IMAGE_PIXELS
from . import schemas
from .gallery import Gallery, png_base64
from .middleware import PAGE_CSP, BodyLimit, SecurityHeaders
from .model_files import check_model_path, find_latest_run, model_card
from .similar import SimilarService
from .similar import router as similar_router
from .state import ServerState, get_predictor, get_state
from .uploads import FileError, decode_upload, image_error_status, refuse_file_count

__all__ = ["PAGE_CSP", "Gallery", "check_model_path", "create_app", "find_latest_run",
           "image_error_status", "model_card", "png_base64"]

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
DEFAULT_MAX_DECODES: int = 2
"""Uploads read and decoded at the same time; further files wait for a free slot. One decode
holds at most about 4 bytes x MAX_IMAGE_PIXELS (the decoded image) plus its encoded bytes and
a working-size copy, so this bounds the server's memory under concurrent worst-case uploads."""
DECODE_WAIT_S: float = 30.0
"""Longest a file waits for a decode slot; after that it is answered 503 with Retry-After."""

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
            image = decode_upload(upload, name, max_bytes=max_bytes, slots=slots,
                                   wait_s=wait_s)
            good.append((result, image))
            if include_image:
                result["image"] = png_base64(image)
        except FileError as e:
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


# --------------------------------------------------------------------------- routes
api = APIRouter(tags=["api"])
pages = APIRouter(include_in_schema=False)

State = Annotated[ServerState, Depends(get_state)]
Model = Annotated[Predictor, Depends(get_predictor)]
_FILE_ERROR = {"model": schemas.FileFailure,
               "description": "no file could be classified: the first failure names it (a "
               "request refused as a whole, e.g. no files, gets `{detail}` alone)"}


@api.get("/healthz", summary="Liveness", response_model=schemas.Health)
def healthz(state: State) -> dict[str, Any]:
    return {"status": "ok", "model_loaded": state.predictor is not None}


@api.get("/api/model", summary="The model card", response_model=schemas.ModelCard,
         dependencies=[Depends(get_predictor)])
def get_model(state: State) -> dict[str, Any]:
    """Arch, recipe, parameters, test accuracy, classes, training date and the server's
    upload limits."""
    return {**state.model_card, "limits": state.limits}


@api.post(
    "/api/predict",
    summary="Classify one or more images",
    response_model=list[schemas.PredictResult],
    response_model_exclude_unset=True,
    responses={400: _FILE_ERROR, 413: _FILE_ERROR, 415: _FILE_ERROR, 503: _FILE_ERROR},
)
def post_predict(
    state: State,
    predictor: Model,
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
    ``include_image``, ``image``. 200 when at least one file was classified; 400 with
    ``{detail}`` when no file was sent, 413 for too many."""
    if (refused := refuse_file_count(files, state.limits["max_files"])) is not None:
        return refused
    results = _predict_uploads(predictor, files, max_bytes=state.limits["max_upload_bytes"],
                               include_image=include_image, top_k=top_k,
                               slots=state.decode_slots, wait_s=state.decode_wait_s)
    failed = [r for r in results if r["error"]]
    if len(failed) == len(results):
        first = failed[0]
        retry = {"Retry-After": "5"} if first["status"] == 503 else None
        return JSONResponse({"detail": first["error"], "file": first["file"],
                             "results": results}, status_code=first["status"], headers=retry)
    return results


@api.get("/api/gallery", summary="Random test images with their true labels",
         response_model=schemas.Gallery, response_model_exclude_unset=True,
         dependencies=[Depends(get_predictor)])
def get_gallery(
    state: State,
    n: Annotated[int, Query(ge=1, le=MAX_GALLERY, description="how many images")] = 12,
    seed: Annotated[int | None, Query(description="fix the draw (default: random)")] = None,
) -> dict[str, Any]:
    """``items``: ``index``, ``label``, ``image`` (base64 PNG, 28x28). When the dataset is
    not found offline, ``available`` is false and ``note`` says why."""
    return state.gallery.sample(n, seed)


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
    tta: bool = True,
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
    before announcing the server); otherwise the lifespan loads it, averaging each image
    and its mirror when ``tta`` (the CLI's default, ``--no-tta`` for one view).
    """
    if max_upload_bytes < 1 or max_files < 1 or max_decodes < 1:
        raise ConfigError(f"max_upload_bytes, max_files and max_decodes must be at least 1; "
                          f"got {max_upload_bytes}, {max_files} and {max_decodes}.")
    model_path = Path(model_path)

    def load() -> Predictor:
        return predictor or Predictor.from_path(model_path, backend=backend, device=device,
                                                top_k=top_k, tta=tta)

    app = FastAPI(title="fmnist", summary="Classify Fashion-MNIST-style images.",
                  version=_version(), lifespan=_lifespan(model_path, load, gallery))
    app.state.server = ServerState(
        limits={"max_upload_bytes": int(max_upload_bytes), "max_files": int(max_files),
                "max_image_pixels": MAX_IMAGE_PIXELS},
        decode_slots=threading.BoundedSemaphore(max_decodes),
        decode_wait_s=float(decode_wait_s))
    app.add_middleware(BodyLimit, max_bytes=max_files * max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so every response has them
    app.include_router(api)
    app.include_router(similar_router)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _lifespan(model_path: Path, load: Callable[[], Predictor], gallery: Any):
    """Load the model into the app's :class:`ServerState` on start, drop it on stop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release_large_buffers_to_os()
        loaded = await run_in_threadpool(load)
        # one forward pass now, so the first visitor does not pay for the warm-up
        await run_in_threadpool(loaded.probs_of, np.zeros((1, 28, 28), np.uint8))
        state: ServerState = app.state.server
        state.model_card = model_card(loaded, model_path)
        state.gallery = Gallery(gallery, model_path, loaded.classes, loaded.meta.get("dataset"))
        state.similar = SimilarService(model_path, loaded.backend)
        state.predictor = loaded
        log.debug("serving %r from %s", loaded, model_path)
        yield
        state.predictor = None

    return lifespan


def _version() -> str:
    from .. import __version__

    return __version__
