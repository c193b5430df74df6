"""Commands on a finished run: ``evaluate``, ``report``, ``runs`` and ``calibrate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from .options import add_out, add_shared, out

RUN_HELP = "run folder written by `fmnist train`"


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's model; write metrics.json",
                       description="Evaluate a run folder's model on the test split (or the "
                       "validation split training held out) and write metrics.json "
                       "(metrics-val.json for --split val). Only the data the run was "
                       "trained on is accepted (checked by checksum): a --data-dir holding "
                       "other data is refused, so metrics.json is always the run's own.")
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument("--split", choices=("test", "val"), default="test")
    add_shared(p, "--data-dir", "--offline", "--device", "--tta", tta=None)  # None: the recipe's
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..metrics import format_report
    from ..runs import evaluate_run, metrics_filename

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


def register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a run's self-contained HTML report")
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    add_out(p, "HTML file to write", default="RUN/report.html, regenerated")
    add_shared(p, "--overwrite", "--data-dir", "--offline", "--device")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..outputs import check_output_file
    from ..report import write_report

    if args.out is not None:
        check_output_file(args.out, flag="--out", overwrite=args.overwrite, suffix=".html")
    path = write_report(args.run, out=args.out, data_dir=args.data_dir, device=args.device,
                        offline=args.offline)
    out.print(f"wrote {path}")
    return 0


def register_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="table of the runs in a folder")
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR",
                   help="folder holding run folders (default runs)")
    p.add_argument("--sort", metavar="COLUMN", default="date",
                   help="column to sort by (default date)")
    p.add_argument("--reverse", action="store_true", help="largest first")
    add_shared(p, "--json")
    p.set_defaults(handler=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    from ..runs import COLUMNS, list_runs, sort_runs

    rows = sort_runs(list_runs(args.dir), args.sort, reverse=args.reverse)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        out.print(f"no runs in {args.dir} (a run is a folder with a config.json)")
        return 0
    table = Table()
    for k in COLUMNS:
        mark = (" ▼" if args.reverse else " ▲") if k == args.sort else ""
        table.add_column(_HEADS.get(k, k) + mark, overflow="fold", no_wrap=k != "name",
                         justify="left" if k in ("name", "recipe", "date", "status")
                         else "right")
    for r in rows:
        table.add_row(*(_cell(k, r.get(k)) for k in COLUMNS))
    out.print(table)
    return 0


_HEADS = {"best_val_acc": "best val", "test_acc": "test acc", "train_seconds": "time"}


def _cell(key: str, v: object) -> str:
    """One value of the runs table, formatted for its column."""
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
