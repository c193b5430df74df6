"""A Keras-style ``model.summary()``: one row per layer with its output shape and parameters.

::

    fmnist.summary(create_model("baseline-batchnorm"))      # prints the table
    s = summarize(model); s.total, s.trainable, s.non_trainable

Counting follows Keras so the tutorial baselines print the tutorials' figures: BatchNorm
moving mean and variance count as non-trainable parameters (Keras' baseline-batchnorm:
Total 211,822, 66 non-trainable), and so does any frozen ``nn.Parameter`` (e.g. the
whitening stem's filters). (The module is not called ``summary`` so that importing it never
shadows the ``fmnist.summary`` function.)
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["LayerRow", "ModelSummary", "summarize", "summary"]


@dataclass(frozen=True)
class LayerRow:
    """One layer: dotted name, class name, output shape (batch as None), its own counts."""

    name: str
    kind: str
    output_shape: tuple[int | None, ...] | None
    trainable: int
    non_trainable: int

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


@dataclass(frozen=True)
class ModelSummary:
    """The table :func:`summary` prints; ``str()`` is that text, notebooks show HTML."""

    title: str
    input_shape: tuple[int, ...]
    rows: tuple[LayerRow, ...]

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows)

    @property
    def non_trainable(self) -> int:
        return sum(r.non_trainable for r in self.rows)

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def _cells(self) -> list[tuple[str, str, str]]:
        return [(f"{r.name} ({r.kind})", _shape_text(r.output_shape), f"{r.params:,}")
                for r in self.rows]

    def _totals(self) -> list[str]:
        return [f"Total params: {self.total:,}", f"Trainable params: {self.trainable:,}",
                f"Non-trainable params: {self.non_trainable:,}"]

    def __str__(self) -> str:
        head = ("Layer (type)", "Output Shape", "Param #")
        cells = self._cells()
        w = [max(len(c[i]) for c in [head, *cells]) + 3 for i in range(3)]
        line = "".join(text.ljust(width) for text, width in zip(head, w, strict=True))
        rule = "=" * len(line)
        body = ["".join(c.ljust(width) for c, width in zip(cell, w, strict=True)).rstrip()
                for cell in cells]
        return "\n".join([f'Model: "{self.title}"', rule, line.rstrip(), rule, *body, rule,
                          *self._totals(), "_" * len(line)])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td style='text-align:right'>"
                       f"{c}</td></tr>" for a, b, c in self._cells())
        totals = "<br>".join(self._totals())
        return (f"<div><b>Model: {html.escape(self.title)}</b><table><thead><tr>"
                "<th>Layer (type)</th><th>Output Shape</th><th>Param #</th></tr></thead>"
                f"<tbody>{rows}</tbody></table><p>{totals}</p></div>")


def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _own_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) of the module's own parameters and BN moving stats."""
    trainable = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters(recurse=False) if not p.requires_grad)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
        frozen += module.running_mean.numel() + module.running_var.numel()
    return trainable, frozen


def _listed(module: nn.Module) -> bool:
    """A row for each leaf layer, and for any container that owns parameters itself."""
    return not any(True for _ in module.children()) or any(
        True for _ in module.parameters(recurse=False))


def _default_input_shape(model: nn.Module) -> tuple[int, ...]:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return (convs[0].in_channels if convs else 1, 28, 28)


@torch.no_grad()
def summarize(model: nn.Module, input_shape: Sequence[int] | None = None,
              title: str | None = None) -> ModelSummary:
    """Run one zero batch of ``input_shape`` (default (C, 28, 28)) and tabulate the layers
    in the order they ran (layers that never ran come last, shape "?")."""
    shape = tuple(int(s) for s in (input_shape or _default_input_shape(model)))
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"input_shape must be positive sizes like (1, 28, 28); got {shape!r}.")
    named = [(n or type(model).__name__, m) for n, m in model.named_modules() if _listed(m)]
    shapes: dict[int, tuple[int | None, ...]] = {}
    order: list[int] = []

    def record(module: nn.Module, _inputs: object, out: object) -> None:
        if id(module) not in shapes and isinstance(out, torch.Tensor):
            shapes[id(module)] = (None, *out.shape[1:])
            order.append(id(module))

    handles = [m.register_forward_hook(record) for _, m in named]
    p = next(model.parameters(), None)
    x = torch.zeros(1, *shape, device=p.device if p is not None else "cpu")
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    rank = {key: i for i, key in enumerate(order)}
    named.sort(key=lambda nm: rank.get(id(nm[1]), len(rank)))
    rows = tuple(LayerRow(n, type(m).__name__, shapes.get(id(m)), *_own_counts(m))
                 for n, m in named)
    return ModelSummary(title or type(model).__name__, shape, rows)


def summary(model: nn.Module, input_shape: Sequence[int] | None = None, *,
            title: str | None = None, print_fn: Callable[[str], object] = print) -> None:
    """Print the Keras-style layer table of ``model`` (see :func:`summarize` for the data)."""
    print_fn(str(summarize(model, input_shape, title)))
