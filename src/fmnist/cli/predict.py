"""``fmnist predict``: top-k classes for image files and folders."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ..errors import FmnistError
from .options import add_shared


def register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="top-k classes for image files or folders",
        description="Predict image files (folders are walked recursively for image files). "
        "Prints one line per file: `path: Class (p%), ...`, prefixed with `not sure; best "
        "guesses:` when the calibrated top probability is under 60% and with `doesn't look "
        "like any of the N classes; best guesses:` when the image is out of distribution; "
        "--json prints a list of {file, predictions: [{class, probability}], ood_score, "
        "in_distribution, unsure, error}. "
        "A file that cannot be read is reported on stderr and the rest go on. Exit code 0: "
        "all predicted, 1: some files failed, 2: usage error (bad model path, no images).")
    p.add_argument("model", metavar="MODEL", help="run folder, model.pt or model.onnx")
    p.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR", help="image files or folders")
    add_shared(p, "--top-k")
    fmt = p.add_mutually_exclusive_group()
    add_shared(fmt, "--json")
    fmt.add_argument("--csv", metavar="FILE",
                     help="also write FILE with rows file,rank,class,probability,error "
                     "(one row per file and rank; a failed file gets one row with its error; "
                     "an existing FILE is refused unless --overwrite)")
    add_shared(p, "--overwrite")
    p.add_argument("--show-steps", metavar="DIR",
                   help="write each image's preprocessing steps to DIR/<stem>.steps.png "
                   "(created if missing; earlier .steps.png files of the same name are "
                   "replaced)")
    add_shared(p, "--backend", "--device", "--tta")
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..inference import Predictor, collect_image_files, steps_file_names
    from ..outputs import check_output_dir, check_output_file
    from ..preprocess import save_steps

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
        _write_csv(results, args.csv)
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


def _write_csv(results: list, path: str) -> None:
    """Rows file,rank,class,probability,error: one per file and rank, one per failed file."""
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["file", "rank", "class", "probability", "error"])
    for r in results:
        if r.ok:
            w.writerows([r.file, i, c, f"{p:.6f}", ""] for i, (c, p) in enumerate(r.top_k, 1))
        else:
            w.writerow([r.file, "", "", "", r.error])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(table.getvalue().encode("utf-8"))
    print(f"fmnist: wrote {path}", file=sys.stderr)
