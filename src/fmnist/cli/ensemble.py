"""``fmnist ensemble``: average several runs' probabilities into one run folder."""

from __future__ import annotations

import argparse

from rich.table import Table

from .options import add_out, add_shared, out


def register_ensemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble", help="average several runs' probabilities into one run folder",
        description="Average the (calibrated) class probabilities of two or more runs trained "
        "on the same dataset, evaluate the ensemble on the test split and write a run folder "
        "(model.pt, config.json, metrics.json) that evaluate, report, export (one ONNX graph), "
        "predict and serve take like a single run.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (two or more)")
    add_out(p, "new or empty folder for the ensemble run", required=True)
    add_shared(p, "--overwrite", "--data-dir", "--offline", "--device")
    p.set_defaults(handler=cmd_ensemble)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from ..ensemble import build_ensemble
    from ..runs import read_config

    m = build_ensemble(args.runs, args.out, data_dir=args.data_dir, device=args.device,
                       overwrite=args.overwrite, offline=args.offline)
    table = Table("run", "recipe", "test accuracy", "training s")
    info = read_config(args.out)["ensemble"]
    for row in info["members"]:
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
        table.add_row(row["run"], row["recipe"] or "-", acc, f"{row['train_seconds']:.1f}")
    table.add_row(f"[bold]{args.out}[/]", "ensemble", f"[bold]{m['accuracy']:.2%}[/]",
                  f"{info['train_seconds']:.1f}")
    out.print(table)
    out.print(f"{m['n']:,} test images{', TTA' if m['tta'] else ''}; wrote {args.out}")
    return 0
