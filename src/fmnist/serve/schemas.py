"""The REST API's response bodies as pydantic models, so ``/docs`` and ``openapi.json`` show
every field. Endpoints return plain dicts; FastAPI validates them against these models (a
field the code forgot, or of the wrong type, is a 500 in the tests, not a silent change of
the API) and leaves out the optional fields a response did not set (``image``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Prediction(BaseModel):
    """One class and its calibrated probability."""

    model_config = ConfigDict(populate_by_name=True)
    class_name: str = Field(alias="class", description="class name")
    probability: float = Field(ge=0, le=1)


class PredictResult(BaseModel):
    """One uploaded file's answer (or its error), as ``fmnist predict --json`` gives it."""

    file: str = Field(description="the upload's file name (its last 255 characters)")
    label: str | None = Field(description="top-1 class; null when the file failed")
    predictions: list[Prediction] = Field(description="top-k classes, best first")
    error: str | None = Field(description="why this file failed; null when fine")
    status: int = Field(description="this file's HTTP status: 200, 400, 413, 415 or 503")
    ms: float = Field(description="preprocessing plus its share of the forward pass")
    ood_score: float | None = Field(None, description="higher = less like the training "
                                    "data; null for a model without the score")
    in_distribution: bool | None = Field(None, description="false: looks like none of "
                                         "the classes")
    unsure: bool | None = Field(None, description="calibrated top-1 probability under 60%")
    image: str | None = Field(None, description="with include_image: the 28x28 image the "
                              "model saw, base64 PNG")


class Detail(BaseModel):
    """A request-level refusal (no files, too many, body too large, no index)."""

    detail: str


class FileFailure(BaseModel):
    """No file could be classified: the first failure, and every file's result."""

    detail: str
    file: str
    results: list[dict[str, Any]]


class Limits(BaseModel):
    """The server's upload limits."""

    max_upload_bytes: int
    max_files: int
    max_image_pixels: int


class ModelCard(BaseModel):
    """``GET /api/model``: what the model is and how it was made."""

    model_config = ConfigDict(protected_namespaces=())
    name: str = Field(description="run folder (or file) name")
    arch: str | None
    recipe: str | None
    params: int | None = Field(description="parameter count")
    dataset: str | None
    classes: list[str]
    test_accuracy: float | None
    created: str | None = Field(description="ISO date the run was created")
    backend: str = Field(description="torch or onnx")
    device: str | None
    precision: str | None
    quantization: str | None
    top_k: int
    source: str = Field(description="the model file served")
    fmnist_version: str | None
    metrics: dict[str, Any]
    limits: Limits


class GalleryItem(BaseModel):
    index: int = Field(description="index in the test split")
    label: str
    label_index: int
    image: str = Field(description="28x28 base64 PNG")


class Gallery(BaseModel):
    """``GET /api/gallery``: random test images; ``available`` false with a ``note`` when
    the dataset was not found."""

    available: bool
    note: str | None
    dataset: str | None
    split: str | None = None
    size: int
    items: list[GalleryItem]


class Neighbour(BaseModel):
    """One training image similar to an upload."""

    model_config = ConfigDict(populate_by_name=True)
    index: int = Field(description="index in the training split")
    class_name: str = Field(alias="class")
    label: int
    similarity: float = Field(description="cosine similarity of penultimate features")
    image: str = Field(description="28x28 base64 PNG")


class SimilarResult(BaseModel):
    """One uploaded file's most similar training images (or its error)."""

    file: str
    similar: list[Neighbour]
    error: str | None
    status: int


class Health(BaseModel):
    status: str
    model_loaded: bool
