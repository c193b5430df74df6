"""One upload, from the request to the 28x28 image: content-type and size checks, a decode
slot, and the HTTP status of every refusal (from the error's type, never by re-opening the
file). Shared by ``/api/predict`` and ``/api/similar``."""

from __future__ import annotations

import threading

import numpy as np
from fastapi import UploadFile
from fastapi.responses import JSONResponse

from ..errors import ImageError, ImageTooLargeError, UnsupportedImageError
from ..preprocess import MAX_FILE_BYTES, WORK_SIZE, load_image, preprocess

ACCEPTED_TYPES = ("application/octet-stream", "")
"""Declared content types accepted besides ``image/*`` (what curl and some clients send)."""
IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {ImageTooLargeError: 413,
                                                   UnsupportedImageError: 415}
"""HTTP status per image error type; any other :class:`ImageError` is a 400."""


class FileError(Exception):
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


def read_upload(upload: UploadFile, name: str, max_bytes: int) -> bytes:
    """The upload's bytes; FileError 415 for a declared non-image type, 413 over ``max_bytes``."""
    kind = (upload.content_type or "").split(";")[0].strip().lower()
    if not kind.startswith("image/") and kind not in ACCEPTED_TYPES:
        raise FileError(415, f"{name}: content type {kind!r} is not an image; upload PNG, "
                         "JPEG, WebP, GIF, BMP or TIFF")
    upload.file.seek(0)
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileError(413, f"{name}: larger than the {max_bytes:,}-byte upload limit; "
                         "resize or recompress it")
    return data


def decode_upload(upload: UploadFile, name: str, *, max_bytes: int,
                   slots: threading.Semaphore, wait_s: float) -> np.ndarray:
    """Read and preprocess one upload inside a decode slot: the dataset-like 28x28 image."""
    if not slots.acquire(timeout=wait_s):
        raise FileError(503, f"{name}: the server is busy decoding other uploads; retry in "
                         "a few seconds")
    try:
        data = read_upload(upload, name, max_bytes)
        # preprocess() caps encoded bytes at MAX_FILE_BYTES; a larger allowed upload is
        # decoded (just as defensively) with the server's own byte limit first
        source = data if len(data) <= MAX_FILE_BYTES else load_image(
            data, name=name, max_bytes=max_bytes, draft_size=WORK_SIZE)
        return preprocess(source, name=name).image
    finally:
        slots.release()


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

