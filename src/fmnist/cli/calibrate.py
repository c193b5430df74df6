"""``fmnist calibrate``: fit a run's temperature and out-of-distribution score."""

from __future__ import annotations

import argparse

from .evaluation import RUN_HELP
from .options import add_shared


def register_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="fit a run's temperature and out-of-distribution score",
        description="Fit the temperature (calibrated probabilities) and the out-of-"
        "distribution score of an existing run on held-out images (its validation split, or "
        "the calibration images training held out), rewrite model.pt (the old one is kept as "
        "model.uncalibrated.pt) and metrics.json with ECE, classwise ECE, NLL and Brier "
        "before and after. New runs are calibrated by `fmnist train` already.")
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    add_shared(p, "--data-dir", "--offline", "--device")
    p.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..calibration import calibrate_run

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
