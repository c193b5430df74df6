"""Transfer learning: start a run from a trained model's weights (recipe field ``init``).

``fmnist train --init RUN --data-dir my_photos/`` builds the trained model's architecture,
loads its weights (``weights_only`` through :func:`fmnist.checkpoints.read_model_file`) and
keeps its input normalization, then fits the new data's classes:

- the same classes (in any order): the classifier head is kept, its rows put in order;
- a subset, or new classes: a new head whose rows for known classes are copied from the
  old one; classes are matched by NAME, ignoring case and punctuation, so a folder
  ``t-shirt_top`` is the class ``T-shirt/top``.

``freeze_epochs`` > 0 trains only the head for that many epochs first (the rest frozen,
BatchNorm statistics included), then everything. The run's ``config.json`` records where
the weights came from under ``"init"``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import ModelMeta, read_model_file, resolve_model_path
from .errors import ModelFileError
from .recipes import Recipe

log = logging.getLogger("fmnist")


@dataclass(frozen=True, eq=False)
class InitWeights:
    """A trained model to start from: its file, weights and metadata."""

    path: Path
    state: dict[str, torch.Tensor]
    meta: ModelMeta


def load_init(recipe: Recipe) -> InitWeights | None:
    """The model named by ``recipe.init`` (a run folder or model.pt), or None."""
    if recipe.init is None:
        return None
    path = resolve_model_path(recipe.init)
    state, meta = read_model_file(path)
    return InitWeights(path, state, meta)


def recipe_for_init(recipe: Recipe, init: InitWeights) -> Recipe:
    """The recipe with the trained model's architecture (the weights decide it)."""
    arch = (init.meta.arch, dict(init.meta.arch_kwargs))
    if (recipe.model, recipe.model_kwargs) != arch:
        log.info("--init %s: using its architecture %s %s", recipe.init, *arch)
    return dataclasses.replace(recipe, model=arch[0], model_kwargs=arch[1])


def class_key(name: str) -> str:
    """A class name for matching: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def match_classes(old: Sequence[str], new: Sequence[str]) -> list[int | None]:
    """For each new class, the index of the old class with the same name, or None."""
    index = {class_key(c): i for i, c in enumerate(old)}
    return [index.get(class_key(c)) for c in new]


def head_mode(matches: Sequence[int | None], old: Sequence[str]) -> str:
    """"same" (every old class, none new), "subset" (fewer old classes) or "new"."""
    if any(m is None for m in matches):
        return "new"
    return "same" if len(set(matches)) == len(old) else "subset"


def head_name(model: nn.Module, num_classes: int) -> str:
    """The classifier: the last ``nn.Linear`` with ``num_classes`` outputs."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not names:
        raise ModelFileError(f"model {type(model).__name__} has no linear classifier with "
                             f"{num_classes} outputs; it cannot be fine-tuned with --init.")
    return names[-1]


def apply_init(model: nn.Module, init: InitWeights, classes: Sequence[str]) -> dict[str, Any]:
    """Load ``init``'s weights into ``model`` (built for ``classes``): the body as is, the
    head row by class name. Returns what was done, for ``config.json``."""
    head = head_name(model, len(classes))
    prefix = head + "."
    body = {k: v for k, v in init.state.items() if not k.startswith(prefix)}
    try:
        missing, unexpected = model.load_state_dict(body, strict=False)
    except RuntimeError as e:
        raise ModelFileError(f"{init.path}: weights do not fit {init.meta.arch!r} "
                             f"({str(e).splitlines()[0]}).") from None
    if unexpected or any(not k.startswith(prefix) for k in missing):
        raise ModelFileError(f"{init.path}: weights do not fit {init.meta.arch!r} (missing "
                             f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}).")
    matches = match_classes(init.meta.classes, classes)
    layer = model.get_submodule(head)
    with torch.no_grad():
        for row, old in enumerate(matches):
            if old is not None:
                layer.weight[row] = init.state[prefix + "weight"][old]
                if layer.bias is not None:
                    layer.bias[row] = init.state[prefix + "bias"][old]
    return {
        "from": str(init.path),
        "recipe": init.meta.recipe,
        "dataset": init.meta.dataset,
        "classes": list(init.meta.classes),
        "head": head_mode(matches, init.meta.classes),
        "kept_classes": [c for c, m in zip(classes, matches, strict=True) if m is not None],
        "new_classes": [c for c, m in zip(classes, matches, strict=True) if m is None],
    }


class Freezer:
    """Freezes everything but the head for the first ``epochs`` epochs (call
    :meth:`start_epoch` after ``model.train()``); parameters that were frozen by design
    (e.g. a whitening stem) stay frozen."""

    def __init__(self, model: nn.Module, num_classes: int, epochs: int) -> None:
        prefix = head_name(model, num_classes) + "."
        self.epochs = epochs
        self.params = [p for n, p in model.named_parameters()
                       if p.requires_grad and not n.startswith(prefix)]
        self.norms = [m for n, m in model.named_modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm)
                      and not (n + ".").startswith(prefix)]

    def start_epoch(self, epoch: int) -> None:
        frozen = epoch <= self.epochs
        for p in self.params:
            p.requires_grad_(not frozen)
        if frozen:
            for m in self.norms:
                m.eval()
