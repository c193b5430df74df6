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
    "Predictor",
    "load_model",
    "export_onnx",
]

# Heavy parts (torch, onnx) load on first use: `import fmnist` stays fast.
_LAZY = {
    "Predictor": "inference",
    "load_model": "checkpoints",
    "export_onnx": "export",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fmnist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
