"""One ``--field-name`` flag per :class:`~fmnist.recipes.Recipe` field (``train``, ``tune``),
typed from its annotation, and the overrides they give."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable

from .options import SHARED, shared_help

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


def add_recipe_flags(p: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per Recipe field, typed from its annotation."""
    from ..recipes import Recipe

    group = p.add_argument_group("recipe overrides (default: the recipe's value)")
    for f in dataclasses.fields(Recipe):
        if f.name in _RECIPE_FLAG_SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        t = str(f.type)
        kw: dict = {"dest": f"recipe_{f.name}", "default": None, "metavar": f.name.upper()}
        if flag in SHARED:  # a recipe field that other commands take too (--dataset)
            kw["help"] = shared_help(flag)
        if t == "bool":
            kw["action"] = argparse.BooleanOptionalAction
            del kw["metavar"]
        elif t.startswith("tuple"):
            kw["type"] = lambda v: tuple(x for x in v.split(",") if x)
            kw["metavar"] = "NAME[:P],..." if t == "tuple[str, ...]" else "N,..."
        elif t.startswith("dict"):
            kw["type"] = _parse_kwargs
            kw["metavar"] = "K=V,..."
        elif t.startswith("int"):
            kw["type"] = _optional(int) if "None" in t else int
        elif t.startswith("float"):
            kw["type"] = _optional(float) if "None" in t else float
        group.add_argument(flag, **kw)


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The recipe fields given on the command line: field -> value."""
    return {k.removeprefix("recipe_"): v for k, v in vars(args).items()
            if k.startswith("recipe_") and v is not None}
