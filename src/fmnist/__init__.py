"""fmnist: train, evaluate, explain and serve Fashion-MNIST-shaped image classifiers."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ConfigError, DataError, FmnistError, ImageError, ModelFileError

__all__ = [
    "__version__",
    "FmnistError",
    "DataError",
    "ConfigError",
    "ModelFileError",
    "ImageError",
]
