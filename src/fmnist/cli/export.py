"""``fmnist export``: a run's model to ONNX, checked against PyTorch."""

from __future__ import annotations

import argparse
import json
import sys

from rich.table import Table

from .options import add_out, add_shared, out


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a run's model to ONNX (checked against PyTorch)",
        description="Export a run's model to ONNX: input float32 pixels 0..255 (N,1,28,28), "
        "output class probabilities; classes and normalization in the file's metadata. The "
        "graph is checked against PyTorch on the first 1,000 test images (all of them when "
        "fewer; at least 100 are required); exit code 1 if it differs.")
    p.add_argument("run", metavar="RUN", help="run folder or model.pt")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--quantize", choices=("int8",),
                   help="also write MODEL.int8.onnx (static int8, calibrated on training images)")
    add_out(p, "ONNX file to write", default="RUN/model.onnx, regenerated")
    add_shared(p, "--overwrite", "--data-dir")
    p.add_argument("--no-ood-score", action="store_true",
                   help="leave the out-of-distribution score out: a probabilities-only graph "
                   "(smaller: the score's matrices stay fp32 in an int8 file)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    add_shared(p, "--json")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import ParityError, export_onnx, int8_path_for
    from ..outputs import check_output_file

    if args.out is not None:
        check_output_file(args.out, flag="--out", overwrite=args.overwrite, suffix=".onnx")
        if args.quantize:
            check_output_file(int8_path_for(args.out), flag="--out (int8 file)",
                              overwrite=args.overwrite, suffix=".onnx")
    try:
        r = export_onnx(args.run, args.out, quantize=args.quantize, check=not args.no_check,
                        data_dir=args.data_dir, ood_score=not args.no_ood_score)
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
