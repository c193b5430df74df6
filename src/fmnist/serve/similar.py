"""``POST /api/similar``: the training images most similar to each uploaded image.

The run's :class:`~fmnist.similar.SimilarFinder` is made on the first request (loading
the cached index from the run folder, or building it once), in the threadpool, under a
lock. A server on an ONNX file or without its training data answers 503 with the reason.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import JSONResponse

from ..errors import FmnistError, ImageError
from ..preprocess import preprocess
from .gallery import png_base64
from .model_files import first_line, run_folder
from .schemas import Detail, FileFailure, SimilarResult
from .state import ServerState, get_predictor, get_state
from .uploads import FileError, image_error_status, read_upload, refuse_file_count

router = APIRouter(tags=["api"])
MAX_K = 64


class SimilarService:
    """Makes the run's SimilarFinder once, on demand; remembers why it cannot."""

    def __init__(self, model_path: Path, backend: str) -> None:
        self._model_path, self._backend = model_path, backend
        self._lock = threading.Lock()
        self._finder: Any = None
        self._note: str | None = None

    def get(self) -> tuple[Any, str | None]:
        """(finder, None) or (None, why similar items are not available)."""
        from ..similar import SimilarFinder

        with self._lock:
            if self._finder is None and self._note is None:
                run = run_folder(self._model_path)
                if run is None or self._backend == "onnx" or self._model_path.suffix == ".onnx":
                    self._note = ("similar items need a run folder served with the torch "
                                  "backend (an ONNX model has no features output)")
                else:
                    try:
                        self._finder = SimilarFinder.from_run(run, device="cpu", offline=True)
                    except FmnistError as e:
                        self._note = f"similar items are not available ({first_line(e)})"
            return self._finder, self._note


def _similar_one(finder: Any, upload: UploadFile, name: str, k: int,
                 max_bytes: int) -> dict[str, Any]:
    result: dict[str, Any] = {"file": name, "similar": [], "error": None, "status": 200}
    try:
        data = read_upload(upload, name, max_bytes)
        image = preprocess(data, name=name).image
    except FileError as e:
        return {**result, "error": e.detail, "status": e.status}
    except ImageError as e:
        return {**result, "error": str(e), "status": image_error_status(e)}
    (row,) = finder.search(image[None], k=k)
    result["similar"] = [{**n.to_dict(), "image": png_base64(finder.images[n.index])}
                         for n in row]
    return result


@router.post("/api/similar", summary="The most similar training images",
             response_model=list[SimilarResult], dependencies=[Depends(get_predictor)],
             responses={400: {"model": FileFailure, "description": "no file could be read"},
                        503: {"model": Detail, "description": "no index for this model"}})
def post_similar(
    state: Annotated[ServerState, Depends(get_state)],
    files: Annotated[list[UploadFile] | None,
                     File(description="image files (field `files`)")] = None,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="neighbours per image")] = 8,
):
    """One result per file: ``file``, ``similar`` (``index`` in the training split,
    ``class``, ``label``, ``similarity`` (cosine), ``image`` base64 PNG, most similar
    first), ``error``, ``status``. The first call may build the run's index."""
    limits = state.limits
    if (refused := refuse_file_count(files, limits["max_files"])) is not None:
        return refused
    finder, note = state.similar.get()
    if finder is None:
        return JSONResponse({"detail": note}, status_code=503)
    results = [_similar_one(finder, f, (f.filename or f"file-{i + 1}")[-255:], k,
                            limits["max_upload_bytes"]) for i, f in enumerate(files)]
    failed = [r for r in results if r["error"]]
    if len(failed) == len(results):
        return JSONResponse({"detail": failed[0]["error"], "file": failed[0]["file"],
                             "results": results}, status_code=failed[0]["status"])
    return results
