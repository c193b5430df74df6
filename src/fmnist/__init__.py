"""fmnist: train, evaluate, explain and serve Fashion-MNIST-shaped image classifiers."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    ConfigError,
    CorruptImageError,
    DataError,
    FmnistError,
    ImageError,
    ImageTooLargeError,
    ModelFileError,
    OutputPathError,
    UnsupportedImageError,
)

# The public API. Heavy parts (torch, onnx) load on first use: `import fmnist` stays fast.
# name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "load_dataset": ("datasets", "load_dataset"),
    "list_datasets": ("datasets", "list_datasets"),
    "create_model": ("models", "create_model"),
    "list_models": ("models", "list_models"),
    "list_recipes": ("recipes", "list_recipes"),
    "resolve_recipe": ("recipes", "resolve_recipe"),
    "Recipe": ("recipes", "Recipe"),
    "train": ("training", "train"),
    "Callback": ("training", "Callback"),
    "Run": ("runs", "Run"),
    "load_model": ("checkpoints", "load_model"),
    "evaluate": ("runs", "evaluate_run"),
    "write_report": ("report", "write_report"),
    "Interpretation": ("report", "Interpretation"),
    "Predictor": ("inference", "Predictor"),
    "export_onnx": ("export", "export_onnx"),
    "calibrate": ("calibration", "calibrate_run"),
    "summary": ("model_summary", "summary"),
}

__all__ = [
    "__version__",
    "FmnistError",
    "DataError",
    "ConfigError",
    "ModelFileError",
    "ImageError",
    "ImageTooLargeError",
    "UnsupportedImageError",
    "CorruptImageError",
    "OutputPathError",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fmnist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
