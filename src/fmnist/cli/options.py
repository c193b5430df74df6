"""What every command shares: the one-line-error parser, the console, and the options that
several commands take, each declared once here with one help text (:data:`SHARED`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rich.console import Console

# Pipes and CI get 120 columns rather than rich's 80, so tables are not squeezed.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"fmnist: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _dataset_help() -> str:
    from ..datasets import list_datasets

    return (f"registered dataset: {', '.join(list_datasets())} (default: the "
            "recipe's for train and tune, else fashion-mnist)")


SHARED: dict[str, dict[str, Any]] = {
    "--dataset": {"default": "fashion-mnist", "help": _dataset_help},
    "--data-dir": {"help": "folder with the dataset files (IDX, CSV or image folder); default: "
                   "a RUN's own, else $FMNIST_DATA_DIR, ./data/<dataset>, "
                   "~/.keras/datasets, then download"},
    "--offline": {"action": "store_true", "help": "never download; fail if the data is not "
                  "found"},
    "--device": {"default": "auto", "help": "torch device: auto (CUDA if present), cpu, cuda "
                 "or cuda:N (default %(default)s)"},
    "--overwrite": {"action": "store_true", "help": "let the output you named replace an "
                    "existing file or earlier run (default: refuse; never a folder holding "
                    "other files)"},
    "--json": {"action": "store_true", "help": "print JSON instead of text"},
    "--top-k": {"type": int, "default": 3, "help": "classes per image (default %(default)s)"},
    "--tta": {"action": argparse.BooleanOptionalAction, "default": True,
              "help": "average the image and its mirror, and the shifted views the model's "
              "recipe adds (test-time augmentation); --no-tta: one view (default: on for "
              "predict and serve, as the recipe for evaluate)"},
    "--backend": {"choices": ("auto", "torch", "onnx"), "default": "auto",
                  "help": "auto: onnx for .onnx files, torch otherwise"},
}
"""Options several commands take: flag -> add_argument keywords. A callable help is made
when the option is added (so the dataset list is read only when a parser is built)."""


def add_shared(p: argparse.ArgumentParser | Any, *flags: str, **defaults: Any) -> None:
    """Add the SHARED options ``flags`` to ``p`` (a parser or a group); ``defaults`` by
    dest (``device="cpu"``) change a default, never the help text."""
    for flag in flags:
        kw = {**SHARED[flag], "help": shared_help(flag)}
        dest = flag.lstrip("-").replace("-", "_")
        if dest in defaults:
            kw["default"] = defaults.pop(dest)
        p.add_argument(flag, **kw)
    if defaults:
        raise TypeError(f"defaults for options not added: {', '.join(defaults)}")


def shared_help(flag: str) -> str:
    """The one help text of a SHARED option."""
    text = SHARED[flag]["help"]
    return text() if callable(text) else text


def add_out(p: argparse.ArgumentParser, what: str, *, default: str | None = None,
            required: bool = False) -> None:
    """``--out``: what the command writes there, and what it writes without it."""
    where = f" (default {default})" if default else ""
    p.add_argument("--out", required=required, help=f"{what}{where}")


def is_main_process() -> bool:
    """False in the ranks > 0 of a torchrun job: they stay quiet, rank 0 speaks."""
    return os.environ.get("RANK", "0") == "0"
