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

# Pipes and CI get 120 columns rather than rich's 80, so tables are not squeezed.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
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


def _parsers_data(sub) -> None:
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


def _parsers_training(sub) -> None:
    sub.add_parser("models", help="list the registered models with parameters and FLOPs")
    sub.add_parser("recipes", help="list the named training recipes")
    tr = sub.add_parser("train", help="train a recipe and write a run folder",
                        description="Train a recipe. Every recipe field can be overridden by "
                        "the flag of the same name; the resolved recipe goes to config.json.")
    tr.add_argument("--recipe", default="fast", help="named recipe (see `fmnist recipes`)")
    tr.add_argument("--out", help="run folder (default runs/<recipe>-<timestamp>)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    tr.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    tr.add_argument("--data-dir", help="folder with the dataset files")
    tr.add_argument("--offline", action="store_true", help="never download")
    tr.add_argument("--no-report", action="store_true", help="skip report.html at the end")
    _add_recipe_flags(tr)


# Each command group adds its subparsers here; the commands themselves are registered
# with @command("name") below. Add a group: write _parsers_x(sub), append it.
PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _parsers_data,
    _parsers_training,
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fmnist", description="Train, evaluate, explain and serve "
                     "Fashion-MNIST-shaped image classifiers.")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in PARSERS:
        add(sub)
    return parser


_RECIPE_FLAG_SKIP = {"name", "description", "reported"}


def _parse_kwargs(text: str) -> dict:
    """``depth=16,widen=4`` or a JSON object -> dict (numbers parsed)."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    out: dict = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def _optional(kind: Callable[[str], object]) -> Callable[[str], object]:
    def parse(text: str) -> object:
        return None if text.lower() in ("none", "off") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per Recipe field, typed from its annotation."""
    import dataclasses

    from .recipes import Recipe

    group = p.add_argument_group("recipe overrides (default: the recipe's value)")
    for f in dataclasses.fields(Recipe):
        if f.name in _RECIPE_FLAG_SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        t = str(f.type)
        kw: dict = {"dest": f"recipe_{f.name}", "default": None, "metavar": f.name.upper()}
        if t == "bool":
            kw["action"] = argparse.BooleanOptionalAction
            del kw["metavar"]
        elif t.startswith("tuple"):
            kw["type"] = lambda v: tuple(x for x in v.split(",") if x)
            kw["metavar"] = "NAME[:P],..."
        elif t.startswith("dict"):
            kw["type"] = _parse_kwargs
            kw["metavar"] = "K=V,..."
        elif t.startswith("int"):
            kw["type"] = _optional(int) if "None" in t else int
        elif t.startswith("float"):
            kw["type"] = _optional(float) if "None" in t else float
        group.add_argument(flag, **kw)


def _recipe_overrides(args: argparse.Namespace) -> dict:
    return {k.removeprefix("recipe_"): v for k, v in vars(args).items()
            if k.startswith("recipe_") and v is not None}


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


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from .models import create_model, flops_per_image, list_models, model_info

    table = Table("model", "params", "MFLOPs/image", "description")
    for name in list_models():
        info = model_info(name)
        mflops = flops_per_image(create_model(name)) / 1e6
        table.add_row(name, f"{info.params:,}", f"{mflops:.1f}", info.description)
    out.print(table)
    return 0


@command("recipes")
def cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import RECIPES

    table = Table("recipe", "model", "epochs", "batch", "optimizer", "schedule", "augment",
                  "description")
    for name, r in RECIPES.items():
        table.add_row(name, r.model, str(r.epochs), str(r.batch_size), r.optimizer,
                      r.schedule, ",".join(r.augment) or "-", r.description)
    out.print(table)
    return 0


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainingInterrupted, train

    overrides = _recipe_overrides(args)
    try:
        run = train(None if args.resume else args.recipe, out=args.out, data_dir=args.data_dir,
                    device=args.device, resume=args.resume, offline=args.offline,
                    report=not args.no_report, **overrides)
    except TrainingInterrupted as e:
        print(f"fmnist: {e}", file=sys.stderr)
        return 130
    acc = run.test_accuracy
    where = f"run folder: {run.dir}"
    if acc is None:
        out.print(f"trained {run.recipe.name}; {where}")
    else:
        out.print(f"test accuracy {acc:.2%} ({run.recipe.name}, {len(run.history)} epochs, "
                  f"{run.meta.metrics['train_seconds']:.0f} s training); {where}")
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
