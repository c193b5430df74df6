"""``fmnist tune``: an Optuna search over a recipe's hyperparameters."""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from .options import add_out, add_shared, out
from .recipe_flags import add_recipe_flags, recipe_overrides


def register_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="search a recipe's hyperparameters with Optuna (needs fmnist[tune])",
        description="Hyperparameter search: TPE sampling over the recipe's search space "
        "(fmnist.tune.SEARCH_SPACES), median pruning on per-epoch validation accuracy (the "
        "test split is never used). The study is stored in SQLite, so running the same "
        "command again continues it. Writes OUT/best.json, trials.csv and plots; train "
        "with the result: fmnist train --recipe NAME --params OUT/best.json. Recipe-field "
        "flags fix that field for every trial (and take it out of the search).")
    p.add_argument("--recipe", default="fast", help="named recipe to tune (default fast)")
    p.add_argument("--trials", type=int, default=20,
                   help="trials to run in this call (default 20), added to the study")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S s")
    p.add_argument("--trial-budget", type=float, metavar="S",
                   help="stop a trial after S s of training (checked each epoch)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage, e.g. sqlite:///runs/tune.db (default OUT/study.db)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the recipe name)")
    add_out(p, "study folder", default="runs/tune-<study>")
    add_shared(p, "--device", "--data-dir", "--offline")
    add_recipe_flags(p)
    p.set_defaults(handler=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from ..training import TrainingInterrupted
    from ..tune import tune

    try:
        r = tune(args.recipe, args.trials, storage=args.storage, study_name=args.study,
                 out=args.out, timeout=args.timeout, trial_budget=args.trial_budget,
                 data_dir=args.data_dir, device=args.device, offline=args.offline,
                 **recipe_overrides(args))
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
