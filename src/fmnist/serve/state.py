"""What a running server holds, and how endpoints reach it: FastAPI dependencies.

``create_app`` stores one :class:`ServerState` in ``app.state.server``; the lifespan fills
in the model. Endpoints never read ``request.app.state``: they declare what they need
(``predictor: Annotated[Predictor, Depends(get_predictor)]``), so a test can swap any of
it with ``app.dependency_overrides``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from ..inference import Predictor

if TYPE_CHECKING:  # for type hints only: similar.py imports this module
    from .gallery import Gallery
    from .similar import SimilarService


@dataclass
class ServerState:
    """The app's settings (fixed in ``create_app``) and what the lifespan loads."""

    limits: dict[str, int]
    decode_slots: threading.BoundedSemaphore
    decode_wait_s: float
    predictor: Predictor | None = None
    model_card: dict[str, Any] = field(default_factory=dict)
    gallery: Gallery | None = None
    similar: SimilarService | None = None


def get_state(request: Request) -> ServerState:
    """The server's state (every endpoint's first dependency)."""
    return request.app.state.server


def get_predictor(request: Request) -> Predictor:
    """The loaded model; 503 while the app has not started (no lifespan yet)."""
    predictor = get_state(request).predictor
    if predictor is None:
        raise HTTPException(503, "the model is not loaded yet; retry in a few seconds")
    return predictor
