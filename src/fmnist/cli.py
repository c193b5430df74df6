"""The ``fmnist`` command: parses arguments, calls the Python API, formats the answer.

Exit codes: 0 success, 1 partial failure (some inputs failed), 2 user error (one line on
stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    """``--overwrite``: the one switch that lets a command replace an output file you named
    (policy in fmnist.outputs)."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output file if it exists (default: refuse)")


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
    show.add_argument("--out", required=True, help="PNG file to write (never replaced unless "
                      "--overwrite)")
    _add_overwrite(show)


def _parsers_training(sub) -> None:
    md = sub.add_parser("models", help="list the registered models with parameters and FLOPs")
    md.add_argument("name", nargs="?", metavar="NAME",
                    help="one model (see the list): print its layer table")
    md.add_argument("--summary", action="store_true",
                    help="print NAME's Keras-style layer table: output shapes, parameters "
                    "(total, trainable, non-trainable); the default when NAME is given")
    sub.add_parser("recipes", help="list the named training recipes")
    tr = sub.add_parser("train", help="train a recipe and write a run folder",
                        description="Train a recipe. Every recipe field can be overridden by "
                        "the flag of the same name; the resolved recipe goes to config.json.")
    tr.add_argument("--recipe", help="named recipe (see `fmnist recipes`); default fast, or "
                    "finetune with --init")
    tr.add_argument("--out", help="run folder, new or empty (default runs/<recipe>-<timestamp>)")
    tr.add_argument("--overwrite", action="store_true",
                    help="let --out replace an earlier run (never a folder holding other files)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    tr.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    tr.add_argument("--data-dir", help="folder with the dataset files")
    tr.add_argument("--offline", action="store_true", help="never download")
    tr.add_argument("--no-report", action="store_true", help="skip report.html at the end")
    tr.add_argument("--params", metavar="JSON",
                    help="recipe-field overrides from a JSON file: best.json of `fmnist tune` "
                    "or a plain object; explicit flags win over it")
    tr.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="LOG_DIR",
                    help="log scalars, confusion matrix and predictions to TensorBoard "
                    "(default LOG_DIR: RUN/tensorboard; needs fmnist[tensorboard])")
    tr.add_argument("--nproc", type=int, metavar="N",
                    help="data-parallel over N local processes (launches torchrun for you)")
    _add_recipe_flags(tr)


def _parsers_evaluation(sub) -> None:
    ev = sub.add_parser("evaluate", help="evaluate a run's model; write metrics.json",
                        description="Evaluate a run folder's model on the test split (or the "
                        "validation split training held out) and write metrics.json "
                        "(metrics-val.json for --split val). Only the data the run was "
                        "trained on is accepted (checked by checksum): a --data-dir holding "
                        "other data is refused, so metrics.json is always the run's own.")
    ev.add_argument("run", metavar="RUN", help="run folder written by `fmnist train`")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="test-time augmentation (default: as the recipe)")
    ev.add_argument("--data-dir", help="dataset folder (default: the one the run used)")
    ev.add_argument("--offline", action="store_true", help="never download")
    ev.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    rp = sub.add_parser("report", help="write a run's self-contained HTML report")
    rp.add_argument("run", metavar="RUN", help="run folder written by `fmnist train`")
    rp.add_argument("--out", help="HTML file to write (default RUN/report.html, regenerated; "
                    "a file you name is never replaced unless --overwrite)")
    _add_overwrite(rp)
    rp.add_argument("--data-dir", help="dataset folder (default: the one the run used)")
    rp.add_argument("--offline", action="store_true", help="never download")
    rp.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    rn = sub.add_parser("runs", help="table of the runs in a folder")
    rn.add_argument("dir", nargs="?", default="runs", metavar="DIR",
                    help="folder holding run folders (default runs)")
    rn.add_argument("--sort", metavar="COLUMN", default="date",
                    help="column to sort by (default date)")
    rn.add_argument("--reverse", action="store_true", help="largest first")
    rn.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _parsers_inference(sub) -> None:
    pr = sub.add_parser(
        "predict", help="top-k classes for image files or folders",
        description="Predict image files (folders are walked recursively for image files). "
        "Prints one line per file: `path: Class (p%), ...`, prefixed with `not sure; best "
        "guesses:` when the calibrated top probability is under 60% and with `doesn't look "
        "like any of the N classes; best guesses:` when the image is out of distribution. "
        "A file that cannot be read is reported on stderr and the rest go on. Exit code 0: "
        "all predicted, 1: some files failed, 2: usage error (bad model path, no images).")
    pr.add_argument("model", metavar="MODEL", help="run folder, model.pt or model.onnx")
    pr.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR", help="image files or folders")
    pr.add_argument("--top-k", type=int, default=3, help="classes per image (default 3)")
    fmt = pr.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="print a JSON list of {file, predictions: [{class, probability}], "
                     "ood_score, in_distribution, unsure, error}")
    fmt.add_argument("--csv", metavar="FILE",
                     help="also write FILE with rows file,rank,class,probability,error "
                     "(one row per file and rank; a failed file gets one row with its error; "
                     "an existing FILE is refused unless --overwrite)")
    _add_overwrite(pr)
    pr.add_argument("--show-steps", metavar="DIR",
                    help="write each image's preprocessing steps to DIR/<stem>.steps.png "
                    "(created if missing; earlier .steps.png files of the same name are "
                    "replaced)")
    pr.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                    help="auto: onnx for .onnx files, torch otherwise")
    pr.add_argument("--device", default="auto", help="torch backend: auto, cpu, cuda")
    pr.add_argument("--tta", action="store_true", help="average over flips and 1-px shifts")
    ex = sub.add_parser(
        "export", help="export a run's model to ONNX (checked against PyTorch)",
        description="Export a run's model to ONNX: input float32 pixels 0..255 (N,1,28,28), "
        "output class probabilities; classes and normalization in the file's metadata. The "
        "graph is checked against PyTorch on the first 1,000 test images (all of them when "
        "fewer; at least 100 are required); exit code 1 if it differs.")
    ex.add_argument("run", metavar="RUN", help="run folder or model.pt")
    ex.add_argument("--format", choices=("onnx",), default="onnx")
    ex.add_argument("--quantize", choices=("int8",),
                    help="also write MODEL.int8.onnx (static int8, calibrated on training images)")
    ex.add_argument("--out", help="ONNX file to write (default RUN/model.onnx, regenerated; "
                    "a file you name is never replaced unless --overwrite)")
    _add_overwrite(ex)
    ex.add_argument("--data-dir", help="dataset folder for the check (default: the run's)")
    ex.add_argument("--no-check", action="store_true", help="skip the parity check")
    ex.add_argument("--json", action="store_true", help="print the result as JSON")


def _parsers_serve(sub) -> None:
    sv = sub.add_parser(
        "serve", help="web app and REST API for a model",
        description="Serve the page (upload, gallery, model card) and the REST API "
        "(POST /api/predict, POST /api/similar, GET /api/model, GET /api/gallery, GET /healthz; "
        "docs at /docs) "
        "with uvicorn. The model loads once, at start. Needs the serve extra: "
        "pip install 'fmnist[serve]'.")
    sv.add_argument("model", nargs="?", metavar="MODEL",
                    help="run folder, model.pt or model.onnx (default: the newest run under "
                    "runs/)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="interface to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                    help="auto: onnx for .onnx files, torch otherwise")
    sv.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    sv.add_argument("--top-k", type=int, default=3, help="classes per image (default 3)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0,
                    help="largest file accepted, in MiB (default 10)")
    sv.add_argument("--max-files", type=int, default=16,
                    help="most files per request (default 16)")
    sv.add_argument("--max-decodes", type=int, default=2,
                    help="uploads decoded at once, server-wide; the rest wait their turn "
                    "(default 2; bounds memory: at most ~250 MB each)")


def _parsers_similar(sub) -> None:
    si = sub.add_parser(
        "similar", help="the training images most similar to your images",
        description="Show the k training images nearest to each image in the model's "
        "penultimate-layer features (cosine similarity). The index of the training images "
        "is built on first use and cached in RUN/similar-index.npz; it is rebuilt when "
        "RUN/model.pt changes.")
    si.add_argument("run", metavar="RUN", help="run folder written by `fmnist train`")
    si.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    si.add_argument("--k", type=int, default=8, help="neighbours per image (default 8)")
    si.add_argument("--out", help="also write a PNG strip: each image, then its neighbours")
    si.add_argument("--json", action="store_true", help="print JSON instead of lines")
    si.add_argument("--data-dir", help="dataset folder (default: the one the run used)")
    si.add_argument("--offline", action="store_true", help="never download")
    si.add_argument("--device", default="cpu", help="cpu (default), auto or cuda")


# Each command group adds its subparsers here; the commands themselves are registered
# with @command("name") below. Add a group: write _parsers_x(sub), append it.
PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _parsers_data,
    _parsers_training,
    _parsers_evaluation,
    _parsers_inference,
    _parsers_serve,
    _parsers_similar,
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
    from .outputs import check_output_file
    from .plots import sample_grid

    if args.n < 1:
        raise FmnistError(f"--n must be at least 1; got {args.n}.")
    check_output_file(args.out, flag="--out", overwrite=args.overwrite, suffix=".png")
    ds = load_dataset(args.dataset, args.data_dir, offline=args.offline)
    split = getattr(ds, args.split)
    sample_grid(split.images, split.labels, ds.classes, n=min(args.n, len(split)),
                seed=args.seed, title=f"{ds.name} {args.split}", path=args.out)
    out.print(f"wrote {args.out}")
    return 0


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from .models import create_model, flops_per_image, list_models, model_info

    if args.summary or args.name:
        return _model_summary(args)
    # total and trainable as Keras' model.summary() counts them (BN moving stats in total)
    table = Table("model", "total params", "trainable", "MFLOPs/image", "description")
    for name in list_models():
        info = model_info(name)
        mflops = flops_per_image(create_model(name)) / 1e6
        table.add_row(name, f"{info.total_params:,}", f"{info.trainable_params:,}",
                      f"{mflops:.1f}", info.description)
    out.print(table)
    return 0


def _model_summary(args: argparse.Namespace) -> int:
    """``fmnist models NAME --summary``: the layer table of NAME at its default options."""
    from .model_summary import summary
    from .models import create_model

    if not args.name:
        raise FmnistError("--summary needs a model NAME, e.g. `fmnist models fastnet "
                          "--summary` (see `fmnist models` for the names).")
    summary(create_model(args.name), title=args.name)
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

    if args.nproc is not None and args.nproc < 1:
        raise FmnistError(f"--nproc {args.nproc}: the number of processes must be at least "
                          "1; drop --nproc to train in one process.")
    overrides = _recipe_overrides(args)
    args.recipe = args.recipe or ("finetune" if args.recipe_init else "fast")
    callbacks: list = []
    if args.params:
        from .tune import read_params

        tuned_for, params = read_params(args.params)
        if tuned_for and tuned_for != args.recipe and not args.resume:
            raise FmnistError(f"--params {args.params} was tuned for recipe {tuned_for!r}, "
                              f"not {args.recipe!r}; add --recipe {tuned_for}.")
        overrides = {**params, **overrides}
    if args.nproc is not None and args.nproc > 1:
        from .distributed import launch

        _check_train_args(args, overrides)  # one clear line now, not one per process later
        return launch(args.nproc, _without_option(args.argv, "--nproc"))
    if args.tensorboard is not None:
        from .tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(args.tensorboard or None))
    try:
        run = train(None if args.resume else args.recipe, out=args.out, data_dir=args.data_dir,
                    device=args.device, resume=args.resume, overwrite=args.overwrite,
                    offline=args.offline, report=not args.no_report, callbacks=callbacks,
                    **overrides)
    except TrainingInterrupted as e:
        if _is_main_process():
            print(f"fmnist: {e}", file=sys.stderr)
        return 130
    if not _is_main_process():  # under torchrun only rank 0 reports
        return 0
    acc = run.test_accuracy
    where = f"run folder: {run.dir}"
    if acc is None:
        out.print(f"trained {run.recipe.name}; {where}")
    else:
        out.print(f"test accuracy {acc:.2%} ({run.recipe.name}, {len(run.history)} epochs, "
                  f"{run.meta.metrics['train_seconds']:.0f} s training); {where}")
    return 0


def _is_main_process() -> bool:
    """False in the ranks > 0 of a torchrun job: they stay quiet, rank 0 speaks."""
    return os.environ.get("RANK", "0") == "0"


def _check_train_args(args: argparse.Namespace, overrides: dict) -> None:
    """What `train` would refuse, checked before launching processes."""
    from .recipes import resolve_recipe
    from .runs import check_out, is_locked
    from .training import check_resume

    if args.resume:
        check_resume(args.resume, overrides)
        if is_locked(args.resume):
            raise FmnistError(f"{args.resume} is in use: another fmnist process is training "
                              "in it; wait for it to finish.")
    else:
        resolve_recipe(args.recipe, **overrides)
        if args.out:
            check_out(args.out, args.overwrite)


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .metrics import format_report
    from .runs import evaluate_run, metrics_filename

    m = evaluate_run(args.run, split=args.split, tta=args.tta, data_dir=args.data_dir,
                     device=args.device, offline=args.offline)
    out.print(f"[bold]{args.run}[/] on the {args.split} split ({m['n']:,} images"
              f"{', TTA' if m['tta'] else ''}, {m['device']}, {m['precision']})\n")
    out.print(format_report(m), markup=False, highlight=False)
    out.print(f"\n[bold]accuracy {m['accuracy']:.2%}[/]  loss {m['loss']:.4f}  "
              f"top-2 {m['top2_accuracy']:.2%}  ECE {m['ece']:.2%}  "
              f"({m['seconds']:.1f} s, {m['images_per_second']:,.0f} images/s)")
    out.print(f"wrote {Path(args.run) / metrics_filename(args.split)}")
    return 0


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from .outputs import check_output_file
    from .report import write_report

    if args.out is not None:
        check_output_file(args.out, flag="--out", overwrite=args.overwrite, suffix=".html")
    path = write_report(args.run, out=args.out, data_dir=args.data_dir, device=args.device,
                        offline=args.offline)
    out.print(f"wrote {path}")
    return 0


@command("runs")
def cmd_runs(args: argparse.Namespace) -> int:
    from .runs import COLUMNS, list_runs, sort_runs

    rows = sort_runs(list_runs(args.dir), args.sort, reverse=args.reverse)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        out.print(f"no runs in {args.dir} (a run is a folder with a config.json)")
        return 0

    def cell(key: str, v: object) -> str:
        if v is None:
            return "-"
        if key in ("best_val_acc", "test_acc"):
            return f"{v:.2%}"
        if key == "params":
            return f"{v:,}"
        if key == "train_seconds":
            return f"{v:.0f} s" if v < 600 else f"{v / 60:.1f} min"
        if key == "date":
            return str(v).replace("T", " ")[:16]
        return str(v)

    heads = {"best_val_acc": "best val", "test_acc": "test acc", "train_seconds": "time"}
    table = Table()
    for k in COLUMNS:
        mark = (" ▼" if args.reverse else " ▲") if k == args.sort else ""
        table.add_column(heads.get(k, k) + mark, overflow="fold", no_wrap=k != "name",
                         justify="left" if k in ("name", "recipe", "date", "status")
                         else "right")
    for r in rows:
        table.add_row(*(cell(k, r.get(k)) for k in COLUMNS))
    out.print(table)
    return 0


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import io
    from pathlib import Path

    from .inference import Predictor, collect_image_files, steps_file_names
    from .outputs import check_output_dir, check_output_file
    from .preprocess import save_steps

    if args.top_k < 1:
        raise FmnistError(f"--top-k must be at least 1; got {args.top_k}.")
    if args.csv:
        check_output_file(args.csv, flag="--csv", overwrite=args.overwrite)
    if args.show_steps:
        check_output_dir(args.show_steps, flag="--show-steps")
    predictor = Predictor.from_path(args.model, backend=args.backend, device=args.device,
                                    top_k=args.top_k, tta=args.tta)
    files = collect_image_files(args.inputs)
    if not files:
        raise FmnistError(f"no image files found in {', '.join(args.inputs)} "
                          "(folders are searched for .png, .jpg, .jpeg, .bmp, .gif, .webp, "
                          ".tif, .tiff).")
    results = predictor.predict_files(files, steps=bool(args.show_steps))
    for r in results:
        if not r.ok:
            print(f"fmnist: failed: {r.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            if r.ok:
                print(f"{r.file}: {r.verdict()}")
    if args.csv:
        table = io.StringIO(newline="")
        w = csv.writer(table)
        w.writerow(["file", "rank", "class", "probability", "error"])
        for r in results:
            if r.ok:
                w.writerows([r.file, i, c, f"{p:.6f}", ""] for i, (c, p) in enumerate(r.top_k, 1))
            else:
                w.writerow([r.file, "", "", "", r.error])
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        Path(args.csv).write_bytes(table.getvalue().encode("utf-8"))
        print(f"fmnist: wrote {args.csv}", file=sys.stderr)
    if args.show_steps:
        folder = Path(args.show_steps)
        for r, name in zip(results, steps_file_names(results), strict=True):
            if name is not None:
                save_steps(r.preprocessed, folder / name)
        print(f"fmnist: wrote preprocessing steps to {folder}/", file=sys.stderr)
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"fmnist: {failed} of {len(results)} files failed", file=sys.stderr)
    return 1 if failed else 0


@command("similar")
def cmd_similar(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from .similar import SimilarFinder

    if args.k < 1:
        raise FmnistError(f"--k must be at least 1; got {args.k}.")
    if args.out and Path(args.out).exists():
        raise FmnistError(f"--out {args.out} already exists; pass a new file name (it is "
                          "never overwritten).")
    finder = SimilarFinder.from_run(args.run, data_dir=args.data_dir, device=args.device,
                                    offline=args.offline)
    images = finder.predictor.preprocess(args.images)  # one bad file: ImageError, exit 2
    start = time.perf_counter()
    results = finder.search(images, k=args.k)
    ms = 1000 * (time.perf_counter() - start) / len(images)
    if args.json:
        print(json.dumps([{"file": f, "similar": [n.to_dict() for n in row]}
                          for f, row in zip(args.images, results, strict=True)], indent=2))
    else:
        for f, row in zip(args.images, results, strict=True):
            print(f"{f}: " + ", ".join(f"{n.class_name} ({n.score:.2f}) #{n.index}"
                                        for n in row))
    print(f"fmnist: index of {len(finder.index):,} training images (built in "
          f"{finder.index.build_seconds:.1f} s); {ms:.1f} ms per query", file=sys.stderr)
    if args.out:
        finder.strip(images, results, names=[Path(f).name for f in args.images],
                     path=args.out)
        print(f"fmnist: wrote {args.out}", file=sys.stderr)
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from .export import ParityError, export_onnx, int8_path_for
    from .outputs import check_output_file

    if args.out is not None:
        check_output_file(args.out, flag="--out", overwrite=args.overwrite, suffix=".onnx")
        if args.quantize:
            check_output_file(int8_path_for(args.out), flag="--out (int8 file)",
                              overwrite=args.overwrite, suffix=".onnx")
    try:
        r = export_onnx(args.run, args.out, quantize=args.quantize, check=not args.no_check,
                        data_dir=args.data_dir)
    except ParityError as e:
        print(f"fmnist: export failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    table = Table("model", "file", "size", "accuracy", "max |dp| vs torch", "top-1 agreement")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"

    table.add_row("torch fp32", "model.pt", "-", pct(r.accuracy_torch), "-", "-")
    table.add_row("onnx fp32", str(r.path), f"{r.size_bytes / 1e6:.2f} MB", pct(r.accuracy_fp32),
                  "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}", pct(r.agreement))
    if r.int8_path is not None:
        table.add_row("onnx int8", str(r.int8_path), f"{(r.int8_size_bytes or 0) / 1e6:.2f} MB",
                      pct(r.accuracy_int8),
                      "-" if r.int8_max_abs_diff is None else f"{r.int8_max_abs_diff:.1e}",
                      pct(r.int8_agreement))
    out.print(table)
    checked = (f"checked on {r.n_images:,} test images" if r.checked
               else "[yellow]not checked (--no-check)[/]")
    out.print(f"exported in {r.seconds:.1f} s; {checked}")
    return 0


def _without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` minus ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def _parsers_tune(sub) -> None:
    tu = sub.add_parser(
        "tune", help="search a recipe's hyperparameters with Optuna (needs fmnist[tune])",
        description="Hyperparameter search: TPE sampling over the recipe's search space "
        "(fmnist.tune.SEARCH_SPACES), median pruning on per-epoch validation accuracy (the "
        "test split is never used). The study is stored in SQLite, so running the same "
        "command again continues it. Writes OUT/best.json, trials.csv and plots; train "
        "with the result: fmnist train --recipe NAME --params OUT/best.json. Recipe-field "
        "flags fix that field for every trial (and take it out of the search).")
    tu.add_argument("--recipe", default="fast", help="named recipe to tune (default fast)")
    tu.add_argument("--trials", type=int, default=20,
                    help="trials to run in this call (default 20), added to the study")
    tu.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S s")
    tu.add_argument("--trial-budget", type=float, metavar="S",
                    help="stop a trial after S s of training (checked each epoch)")
    tu.add_argument("--storage", metavar="URL",
                    help="Optuna storage, e.g. sqlite:///runs/tune.db (default OUT/study.db)")
    tu.add_argument("--study", metavar="NAME", help="study name (default: the recipe name)")
    tu.add_argument("--out", help="study folder (default runs/tune-<study>)")
    tu.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    tu.add_argument("--data-dir", help="folder with the dataset files")
    tu.add_argument("--offline", action="store_true", help="never download")
    _add_recipe_flags(tu)


PARSERS.append(_parsers_tune)


# --------------------------------------------------------------------------- calibrate


def _parsers_calibrate(sub) -> None:
    ca = sub.add_parser(
        "calibrate", help="fit a run's temperature and out-of-distribution score",
        description="Fit the temperature (calibrated probabilities) and the out-of-"
        "distribution score of an existing run on held-out images (its validation split, or "
        "the calibration images training held out), rewrite model.pt (the old one is kept as "
        "model.uncalibrated.pt) and metrics.json with ECE, classwise ECE, NLL and Brier "
        "before and after. New runs are calibrated by `fmnist train` already.")
    ca.add_argument("run", metavar="RUN", help="run folder written by `fmnist train`")
    ca.add_argument("--data-dir", help="dataset folder (default: the one the run used)")
    ca.add_argument("--offline", action="store_true", help="never download")
    ca.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")


PARSERS.append(_parsers_calibrate)


@command("calibrate")
def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate_run

    m = calibrate_run(args.run, data_dir=args.data_dir, device=args.device,
                      offline=args.offline)
    cal, before, after = m["calibration"], m["calibration"]["before"], m["calibration"]["after"]
    held = "held out" if cal["held_out"] else "NOT held out: retrain to hold them out"
    print(f"{args.run}: temperature {cal['temperature']:.3f} (one view: "
          f"{cal['temperature_single']:.3f}) fitted on {cal['size']:,} {cal['split']} images "
          f"({held})")
    for key in ("ece", "classwise_ece", "nll", "brier"):
        print(f"  test {key:<14} {before[key]:.4f} -> {after[key]:.4f}")
    print(f"  out-of-distribution: {m['ood']['method']} score, threshold "
          f"{m['ood']['threshold']:.4g}, rejects {m['ood']['rejected']:.1%} of test images")
    print(f"wrote {args.run}/model.pt and metrics.json")
    return 0


@command("tune")
def cmd_tune(args: argparse.Namespace) -> int:
    from .training import TrainingInterrupted
    from .tune import tune

    try:
        r = tune(args.recipe, args.trials, storage=args.storage, study_name=args.study,
                 out=args.out, timeout=args.timeout, trial_budget=args.trial_budget,
                 data_dir=args.data_dir, device=args.device, offline=args.offline,
                 **_recipe_overrides(args))
    except TrainingInterrupted as e:
        print(f"fmnist: tune interrupted during trial run {e.run_dir}; run the same command "
              "again to continue the study", file=sys.stderr)
        return 130
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(r.states.items()))
    out.print(f"study {r.study_name!r}: {r.n_trials} trials ({states}); storage {r.storage}")
    if r.best_value is None:
        out.print("no completed trial yet")
        return 0
    table = Table("field", "best value", "")
    for k, v in r.best_params.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v),
                      "searched" if k in r.searched else "fixed")
    out.print(table)
    out.print(f"best val_acc {r.best_value:.2%} (trial {r.best_trial}); wrote {r.dir}/")
    out.print(f"train it: fmnist train --recipe {r.recipe} --params {r.best_path}")
    return 0


def _check_serve_args(args: argparse.Namespace) -> None:
    """Every serve flag in range, one line naming the flag otherwise (before any loading)."""
    import math

    if not 1 <= args.port <= 65535:
        raise FmnistError(f"--port {args.port} is out of range; pass a port from 1 to 65535 "
                          "(e.g. --port 8000).")
    if not (math.isfinite(args.max_upload_mb) and 0 < args.max_upload_mb <= 1024):
        raise FmnistError(f"--max-upload-mb {args.max_upload_mb} is out of range; pass a size "
                          "in MiB above 0 and at most 1024 (default 10).")
    for flag, value in (("--max-files", args.max_files), ("--top-k", args.top_k),
                        ("--max-decodes", args.max_decodes)):
        if value < 1:
            raise FmnistError(f"{flag} {value} is out of range; pass at least 1.")


def _check_port_free(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise FmnistError(f"cannot listen on {host}:{port} ({e.strerror}); "
                              "pass another --port or --host.") from None


@command("serve")
def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .serve import check_model_path, create_app, find_latest_run
    except ImportError as e:
        raise FmnistError(f"`fmnist serve` needs the serve extra ({e.name} is missing): "
                          "pip install 'fmnist[serve]'.") from None
    from .inference import Predictor

    _check_serve_args(args)
    model = check_model_path(args.model or find_latest_run("runs"), args.backend)
    # load (and so check) the model before saying anything: a bad file is one line, exit 2
    predictor = Predictor.from_path(model, backend=args.backend, device=args.device,
                                    top_k=args.top_k)
    _check_port_free(args.host, args.port)
    app = create_app(model, backend=args.backend, device=args.device, top_k=args.top_k,
                     max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     max_files=args.max_files, max_decodes=args.max_decodes,
                     predictor=predictor)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"
    print(f"fmnist: serving {model} at {url}  (API docs: {url}docs; Ctrl+C to stop)",
          flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port,
                    log_level="info" if args.verbose else "warning")
    except SystemExit as e:  # uvicorn exits when the app fails to start (e.g. port taken)
        if e.code:
            print("fmnist: error: the server did not start (see the log above)",
                  file=sys.stderr)
            return 2
    return 0


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
    key = " ".join(filter(None, [args.command, getattr(args, f"{args.command}_command", None)]))
    try:
        return COMMANDS[key](args)
    except FmnistError as e:
        if _is_main_process():
            print(f"fmnist: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmnist: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
