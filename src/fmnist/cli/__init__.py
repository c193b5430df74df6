"""The ``fmnist`` command: parses arguments, calls the Python API, formats the answer.

Exit codes: 0 success, 1 partial failure (some inputs failed) or output cut short by a
closed pipe (``fmnist predict ... --json | head``, quietly), 2 user error (one line on
stderr, no traceback), 130 interrupted.

One module per command (or small group): ``register_<cmd>(sub)`` builds the command's
parser right above ``cmd_<cmd>(args)``, its handler, and binds the two with
``set_defaults(handler=...)``. Options several commands share are declared once, in
:mod:`fmnist.cli.options`. To add a command: write ``cli/<name>.py`` with
``register_<name>`` and ``cmd_<name>``, and list ``register_<name>`` in :data:`REGISTER`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import FmnistError
from . import (
    calibrate,
    catalog,
    data,
    ensemble,
    evaluation,
    export,
    predict,
    serve,
    similar,
    train,
    tune,
)
from .options import Parser, is_main_process

REGISTER: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    data.register_data,
    catalog.register_models,
    catalog.register_recipes,
    train.register_train,
    evaluation.register_evaluate,
    evaluation.register_report,
    evaluation.register_runs,
    predict.register_predict,
    export.register_export,
    serve.register_serve,
    similar.register_similar,
    tune.register_tune,
    calibrate.register_calibrate,
    ensemble.register_ensemble,
)
"""Each adds one command (``data``: its group), in this order in ``fmnist --help``."""


def build_parser() -> Parser:
    parser = Parser(prog="fmnist", description="Train, evaluate, explain and serve "
                    "Fashion-MNIST-shaped image classifiers.")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for register in REGISTER:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="fmnist: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader gone (`| head`) is caught below
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except FmnistError as e:
        if is_main_process():
            print(f"fmnist: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmnist: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of the output the
    reader no longer wants cannot raise a second BrokenPipeError at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


__all__ = ["build_parser", "main"]
