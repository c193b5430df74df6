"""The web app and REST API (``fmnist serve``): FastAPI over :class:`fmnist.Predictor`.

Needs the ``serve`` extra: ``pip install 'fmnist[serve]'``.
"""

from __future__ import annotations

from .app import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_UPLOAD_BYTES,
    check_model_path,
    create_app,
    find_latest_run,
)

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "check_model_path",
    "create_app",
    "find_latest_run",
]
