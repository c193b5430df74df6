"""Several trained runs as one model: ``fmnist ensemble RUN RUN ... --out DIR``.

The ensemble's probabilities are the mean of its members' probabilities, each member's
logits divided by its own single-view temperature first (so calibrated members average
calibrated probabilities). :class:`EnsembleNet` returns ``log(mean_i p_i)``: a softmax of
it gives the mean back, so every path that turns logits into probabilities (evaluate, TTA,
report, predict, serve, the ONNX graph of :mod:`fmnist.export`) handles an ensemble like
a single model. The run folder it writes holds ``model.pt`` (architecture ``ensemble``,
the members' architectures, temperatures and weights), ``config.json`` (the first
member's recipe and dataset, the members and their total training time) and
``metrics.json`` (the test split, as ``fmnist evaluate`` writes it).

Members must share classes, dataset (the same checksums), input channels and
normalization; an ensemble needs at least two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

MIN_MEMBERS = 2


class EnsembleNet(nn.Module):
    """Members' tempered probabilities averaged; returns their log (N, C)."""

    def __init__(self, members: Sequence[nn.Module], temperatures: Sequence[float]) -> None:
        super().__init__()
        if len(members) < MIN_MEMBERS or len(members) != len(temperatures):
            raise ConfigError(f"an ensemble needs at least {MIN_MEMBERS} members, each with "
                              f"a temperature; got {len(members)} and {len(temperatures)}.")
        self.members = nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]

    @classmethod
    def from_specs(cls, specs: Sequence[dict[str, Any]], *, num_classes: int,
                   in_channels: int) -> EnsembleNet:
        """Build the (untrained) members from ``{"arch", "arch_kwargs", "temperature"}``."""
        from .models import create_model

        try:
            members = [create_model(s["arch"], num_classes=num_classes,
                                    **{**s["arch_kwargs"], "in_channels": in_channels})
                       for s in specs]
            temperatures = [float(s.get("temperature", 1.0)) for s in specs]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"ensemble members must be dicts with arch, arch_kwargs and "
                              f"temperature ({e}); build one with `fmnist ensemble`.") from None
        return cls(members, temperatures)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        logp = torch.stack([
            torch.log_softmax(m(x).float() / t, dim=1)  # (N, C)
            for m, t in zip(self.members, self.temperatures, strict=True)
        ])  # (K, N, C)
        mean = torch.logsumexp(logp, dim=0) - math.log(len(self.members))  # (N, C)
        return mean.to(dtype) if dtype.is_floating_point else mean


@dataclass
class Member:
    """One trained run an ensemble is made of."""

    dir: Path
    config: dict[str, Any]
    model: nn.Module
    meta: Any  # fmnist.checkpoints.ModelMeta

    @property
    def train_seconds(self) -> float:
        """Its training time: the epochs' seconds, or an ensemble's members' total."""
        from .runs import read_history

        if "ensemble" in self.config:
            return float(self.config["ensemble"]["train_seconds"])
        return sum(float(r.get("seconds") or 0) for r in read_history(self.dir))

    @property
    def accuracy(self) -> float | None:
        from .runs import read_json_object

        return read_json_object(self.dir / "metrics.json").get("accuracy")

    def spec(self) -> dict[str, Any]:
        return {"arch": self.meta.arch, "arch_kwargs": self.meta.arch_kwargs,
                "temperature": self.meta.temperature_for(False)}


def load_members(runs: Sequence[str | Path]) -> list[Member]:
    """The runs' models and configs, refused with one line unless they can be averaged."""
    from .checkpoints import load_model
    from .runs import read_config

    if len(runs) < MIN_MEMBERS:
        raise ConfigError(f"an ensemble needs at least {MIN_MEMBERS} runs; got {len(runs)}. "
                          "Pass two or more run folders.")
    members = []
    for run in runs:
        path = Path(run)
        if not path.is_dir():
            raise ConfigError(f"{path}: no such run folder; pass folders written by "
                              "`fmnist train` (see `fmnist runs`).")
        config = read_config(path)
        model, meta = load_model(path, "cpu")
        members.append(Member(path, config, model, meta))
    check_compatible(members)
    return members


def _in_channels(m: Member) -> int:
    return int(m.meta.arch_kwargs.get("in_channels", 1))


def _dataset_key(m: Member) -> Any:
    ds = m.config.get("dataset") or {}
    return ds.get("sha256") or ds.get("name") or m.meta.dataset


def check_compatible(members: Sequence[Member]) -> None:
    """Same classes, dataset, input channels and normalization as the first member."""
    first = members[0]
    checks = (
        ("classes", lambda m: tuple(m.meta.classes)),
        ("dataset", _dataset_key),
        ("input channels (image format)", _in_channels),
        ("input normalization", lambda m: (round(m.meta.mean, 6), round(m.meta.std, 6))),
    )
    for m in members[1:]:
        for what, key in checks:
            if key(m) != key(first):
                raise ConfigError(
                    f"{m.dir}: its {what} differ from {first.dir}'s; ensemble only runs "
                    "trained on the same dataset (same classes and images)."
                )


def ensemble_model(members: Sequence[Member]) -> nn.Module:
    """The registered ``ensemble`` model holding the members' weights."""
    from .models import create_model

    model = create_model("ensemble", num_classes=len(members[0].meta.classes),
                         in_channels=_in_channels(members[0]),
                         members=tuple(m.spec() for m in members))
    for net, m in zip(model.members, members, strict=True):
        net.load_state_dict(m.model.state_dict())
    return model.eval()


def ensemble_meta(members: Sequence[Member], model: nn.Module) -> Any:
    """model.pt metadata: the first member's classes, normalization and TTA views (as its
    recipe is the ensemble's), temperature 1 (the members' temperatures are inside the
    model)."""
    from .checkpoints import ModelMeta

    first = members[0].meta
    return ModelMeta(arch="ensemble", arch_kwargs=model.arch_kwargs,
                     classes=tuple(first.classes), mean=first.mean, std=first.std,
                     dataset=first.dataset, recipe="ensemble", tta_shifts=first.tta_shifts)


def ensemble_config(members: Sequence[Member], params: int) -> dict[str, Any]:
    """config.json: the first member's recipe (renamed) and dataset, and the members."""
    from .devices import environment

    first = members[0].config
    recipe = {**first["recipe"], "name": "ensemble", "model": "ensemble", "model_kwargs": {},
              "description": f"mean of {len(members)} runs' probabilities"}
    rows = [{"run": str(m.dir.absolute()), "recipe": m.config["recipe"].get("name"),
             "arch": m.meta.arch, "accuracy": m.accuracy, "train_seconds": m.train_seconds,
             "temperature": m.meta.temperature_for(False)} for m in members]
    return {
        "recipe": recipe,
        "environment": environment(torch.device("cpu")),
        "precision": first.get("precision"),
        "data_dir": first.get("data_dir"),
        "dataset": first.get("dataset"),
        "params": params,
        "ensemble": {"members": rows,
                     "train_seconds": round(sum(r["train_seconds"] for r in rows), 3)},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "finished",
    }


def build_ensemble(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    offline: bool = False,
    data: Any = None,
) -> dict[str, Any]:
    """Write the ensemble of ``runs`` to the run folder ``out`` and evaluate it on the test
    split (``metrics.json``); returns those metrics. ``data``: an already loaded Dataset.
    Members and data are checked before anything is written."""
    from .checkpoints import ModelMeta, atomic_write_json, save_model
    from .models import count_params
    from .runs import Run, create_run, run_dataset, write_config

    members = load_members(runs)
    first = members[0]
    ds = run_dataset(first.dir, first.config, data_dir=data_dir, offline=offline, data=data)
    model = ensemble_model(members)
    meta = ensemble_meta(members, model)
    path, lock = create_run(out, "ensemble", overwrite=overwrite)
    try:
        write_config(path, ensemble_config(members, count_params(model)))
        save_model(path / "model.pt", model, meta)
        metrics = Run.load(path, device=device, dataset=ds).evaluate("test")
        meta = ModelMeta.from_dict({**meta.to_dict(), "metrics": {
            "test_acc": metrics["accuracy"], "test_loss": metrics["loss"]}})
        save_model(path / "model.pt", model, meta)
        atomic_write_json(path / "metrics.json", dict(metrics))
    except BaseException:
        lock.discard()
        raise
    lock.release()
    return metrics
