"""``fmnist data info`` and ``fmnist data show``: look at a dataset."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from ..errors import FmnistError
from .options import Parser, add_out, add_shared, out


def register_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect a dataset")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True,
                                  parser_class=Parser)
    register_data_info(actions)
    register_data_show(actions)


def register_data_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="shapes, class counts, pixel stats, checksums")
    add_shared(p, "--dataset", "--data-dir", "--offline", "--json")
    p.set_defaults(handler=cmd_data_info)


def cmd_data_info(args: argparse.Namespace) -> int:
    from ..datasets import load_dataset, summary

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


def register_data_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="write a grid of sample images with class names")
    add_shared(p, "--dataset", "--data-dir", "--offline")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--n", type=int, default=25, help="number of images (default 25)")
    p.add_argument("--seed", type=int, default=0)
    add_out(p, "PNG file to write", required=True)
    add_shared(p, "--overwrite")
    p.set_defaults(handler=cmd_data_show)


def cmd_data_show(args: argparse.Namespace) -> int:
    from ..datasets import load_dataset
    from ..outputs import check_output_file
    from ..plots import sample_grid

    if args.n < 1:
        raise FmnistError(f"--n must be at least 1; got {args.n}.")
    check_output_file(args.out, flag="--out", overwrite=args.overwrite, suffix=".png")
    ds = load_dataset(args.dataset, args.data_dir, offline=args.offline)
    split = getattr(ds, args.split)
    sample_grid(split.images, split.labels, ds.classes, n=min(args.n, len(split)),
                seed=args.seed, title=f"{ds.name} {args.split}", path=args.out)
    out.print(f"wrote {args.out}")
    return 0
