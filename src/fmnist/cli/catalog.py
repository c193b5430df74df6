"""``fmnist models`` and ``fmnist recipes``: what can be trained."""

from __future__ import annotations

import argparse

from rich.table import Table

from ..errors import FmnistError
from .options import out


def register_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models with parameters and FLOPs")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="one model (see the list): print its layer table")
    p.add_argument("--summary", action="store_true",
                   help="print NAME's Keras-style layer table: output shapes, parameters "
                   "(total, trainable, non-trainable); the default when NAME is given")
    p.set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import create_model, flops_per_image, list_models, model_info

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
    from ..model_summary import summary
    from ..models import create_model

    if not args.name:
        raise FmnistError("--summary needs a model NAME, e.g. `fmnist models fastnet "
                          "--summary` (see `fmnist models` for the names).")
    summary(create_model(args.name), title=args.name)
    return 0


def register_recipes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the named training recipes")
    p.set_defaults(handler=cmd_recipes)


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..recipes import RECIPES

    table = Table("recipe", "model", "epochs", "batch", "optimizer", "schedule", "augment",
                  "description")
    for name, r in RECIPES.items():
        table.add_row(name, r.model, str(r.epochs), str(r.batch_size), r.optimizer,
                      r.schedule, ",".join(r.augment) or "-", r.description)
    out.print(table)
    return 0
