"""``fmnist train``: train a recipe into a run folder (one process, or DDP via torchrun)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import FmnistError
from .options import add_out, add_shared, is_main_process, out
from .recipe_flags import add_recipe_flags, recipe_overrides


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a recipe and write a run folder",
                       description="Train a recipe. Every recipe field can be overridden by "
                       "the flag of the same name; the resolved recipe goes to config.json.")
    p.add_argument("--recipe", help="named recipe (see `fmnist recipes`); default fast, or "
                   "finetune with --init")
    add_out(p, "run folder, new or empty", default="runs/<recipe>-<timestamp>")
    add_shared(p, "--overwrite")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    add_shared(p, "--device", "--data-dir", "--offline")
    p.add_argument("--no-report", action="store_true", help="skip report.html at the end")
    p.add_argument("--params", metavar="JSON",
                   help="recipe-field overrides from a JSON file: best.json of `fmnist tune` "
                   "or a plain object; explicit flags win over it")
    p.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="LOG_DIR",
                   help="log scalars, confusion matrix and predictions to TensorBoard "
                   "(default LOG_DIR: RUN/tensorboard; needs fmnist[tensorboard])")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel over N local processes (launches torchrun for you)")
    add_recipe_flags(p)
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import TrainingInterrupted, train

    if args.nproc is not None and args.nproc < 1:
        raise FmnistError(f"--nproc {args.nproc}: the number of processes must be at least "
                          "1; drop --nproc to train in one process.")
    overrides = recipe_overrides(args)
    args.recipe = args.recipe or ("finetune" if args.recipe_init else "fast")
    callbacks: list = []
    if args.params:
        from ..tune import read_params

        tuned_for, params = read_params(args.params)
        if tuned_for and tuned_for != args.recipe and not args.resume:
            raise FmnistError(f"--params {args.params} was tuned for recipe {tuned_for!r}, "
                              f"not {args.recipe!r}; add --recipe {tuned_for}.")
        overrides = {**params, **overrides}
    if args.nproc is not None and args.nproc > 1:
        from ..devices import select_device
        from ..distributed import check_gpus, launch

        _check_train_args(args, overrides)  # one clear line now, not one per process later
        check_gpus(args.nproc, select_device(args.device))
        return launch(args.nproc, _without_option(args.argv, "--nproc"))
    if args.tensorboard is not None:
        from ..tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(args.tensorboard or None))
    try:
        run = train(None if args.resume else args.recipe, out=args.out, data_dir=args.data_dir,
                    device=args.device, resume=args.resume, overwrite=args.overwrite,
                    offline=args.offline, callbacks=callbacks,
                    **overrides)
    except TrainingInterrupted as e:
        if is_main_process():
            print(f"fmnist: {e}", file=sys.stderr)
        return 130
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    if not args.no_report:
        from ..report import write_report

        write_report(run)  # the model and data in memory: neither is read again
    acc = run.test_accuracy
    where = f"run folder: {run.dir}"
    if acc is None:
        out.print(f"trained {run.recipe.name}; {where}")
    else:
        epochs = len(run.history)
        out.print(f"test accuracy {acc:.2%} ({run.recipe.name}, {epochs} "
                  f"epoch{'' if epochs == 1 else 's'}, "
                  f"{run.meta.metrics['train_seconds']:.0f} s training); {where}")
    return 0


def _check_train_args(args: argparse.Namespace, overrides: dict) -> None:
    """What `train` would refuse, checked before launching processes."""
    from ..recipes import resolve_recipe
    from ..runs import check_out, is_locked
    from ..training import check_resume

    if args.resume:
        check_resume(args.resume, overrides)
        if is_locked(args.resume):
            raise FmnistError(f"{args.resume} is in use: another fmnist process is training "
                              "in it; wait for it to finish.")
    else:
        resolve_recipe(args.recipe, **overrides)
        if args.out:
            check_out(args.out, args.overwrite)


def _without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` minus ``option VALUE`` / ``option=VALUE``."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            kept.append(a)
    return kept
