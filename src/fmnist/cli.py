"""The ``fmnist`` command: parses arguments, calls the Python API, formats the answer.

Exit codes: 0 success, 1 partial failure (some inputs failed), 2 user error (one line on
stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import FmnistError

out = Console(highlight=False)
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable]:
    def decorate(fn: Callable[[argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = fn
        return fn

    return decorate


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"fmnist: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from .datasets import list_datasets

    p.add_argument("--dataset", default="fashion-mnist",
                   help=f"registered dataset: {', '.join(list_datasets())} (default fashion-mnist)")
    p.add_argument("--data-dir", help="folder with the dataset files (IDX, CSV or image folder); "
                   "default: $FMNIST_DATA_DIR, ./data/<dataset>, ~/.keras/datasets, then download")
    p.add_argument("--offline", action="store_true", help="never download; fail if not found")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fmnist", description="Train, evaluate, explain and serve "
                     "Fashion-MNIST-shaped image classifiers.")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    data = sub.add_parser("data", help="inspect a dataset")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True,
                                   parser_class=_Parser)
    info = data_sub.add_parser("info", help="shapes, class counts, pixel stats, checksums")
    _add_data_args(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    show = data_sub.add_parser("show", help="write a grid of sample images with class names")
    _add_data_args(show)
    show.add_argument("--split", choices=("train", "test"), default="train")
    show.add_argument("--n", type=int, default=25, help="number of images (default 25)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", required=True, help="PNG file to write")
    return parser


@command("data info")
def cmd_data_info(args: argparse.Namespace) -> int:
    from .datasets import load_dataset, summary

    ds = load_dataset(args.dataset, args.data_dir, offline=args.offline)
    s = summary(ds)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    verdict = ("[green]verified (MD5 matches)[/]" if s["verified"]
               else "[yellow]not verified (no known MD5 for these files)[/]")
    out.print(f"[bold]{s['dataset']}[/] ({s['format']}) from {s['source']}")
    out.print(f"checksums: {verdict}")
    out.print(f"train: {s['train_shape'][0]:,} images {tuple(s['train_shape'][1:])}   "
              f"test: {s['test_shape'][0]:,} images {tuple(s['test_shape'][1:])}")
    out.print(f"pixels (train): mean {s['pixel_mean']:.4f}  std {s['pixel_std']:.4f}  "
              f"min {s['pixel_min']}  max {s['pixel_max']}  (as fractions of 255)")
    table = Table("label", "class", "train", "test")
    for i, name in enumerate(s["classes"]):
        table.add_row(str(i), name, f"{s['train_counts'][i]:,}", f"{s['test_counts'][i]:,}")
    out.print(table)
    return 0


@command("data show")
def cmd_data_show(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .plots import sample_grid

    if args.n < 1:
        raise FmnistError(f"--n must be at least 1; got {args.n}.")
    ds = load_dataset(args.dataset, args.data_dir, offline=args.offline)
    split = getattr(ds, args.split)
    sample_grid(split.images, split.labels, ds.classes, n=min(args.n, len(split)),
                seed=args.seed, title=f"{ds.name} {args.split}", path=args.out)
    out.print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="fmnist: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    key = " ".join(filter(None, [args.command, getattr(args, f"{args.command}_command", None)]))
    try:
        return COMMANDS[key](args)
    except FmnistError as e:
        print(f"fmnist: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmnist: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
