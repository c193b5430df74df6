"""Hyperparameter search with Optuna: ``tune("fast", trials=20) -> TuneResult``.

Each trial trains the recipe with sampled overrides (:data:`SEARCH_SPACES`, declared as
data per recipe) and is scored by **validation** accuracy; the test split is never
looked at (``val_fraction`` is forced above 0 and ``evaluate_test=False``). A TPE sampler
proposes the values; a median pruner stops a trial whose validation accuracy at an epoch
falls below the median of earlier trials at the same epoch, and ``trial_budget`` stops a
trial after that many seconds of training (checked at the end of each epoch).

The study lives in SQLite (default ``<out>/study.db``), so running the same command again
continues it, and several processes may share one study. After the search, the study
folder (default ``runs/tune-<study>/``) holds::

    best.json                   the value and the best trial's recipe overrides: the
                                searched ones plus the fixed ones except train_limit,
                                test_limit, val_fraction (``fmnist train --params
                                best.json`` trains with them)
    trials.csv                  every trial: number, state, value, params, duration
    optimization_history.png    Optuna's history plot
    param_importances.png       parameter importances (needs >= 2 completed trials)
    trials/trial-NNNN/          each trial's run folder

Optuna is an optional extra (``pip install 'fmnist[tune]'``): it is imported only when a
search runs, so :data:`SEARCH_SPACES` and :func:`read_params` work without it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .callbacks import Callback
from .checkpoints import atomic_write_json, atomic_write_text
from .errors import ConfigError
from .recipes import Recipe, get_recipe, resolve_recipe

if TYPE_CHECKING:
    import optuna

    from .datasets import AugmentPolicy, Dataset
    from .loop import Loop

log = logging.getLogger("fmnist")

INSTALL_HINT = "pip install 'fmnist[tune]'"
METRIC = "val_acc"
DEFAULT_VAL_FRACTION = 0.1

# A spec is (kind, ...):
#   ("log", lo, hi)          log-uniform number (an integer for int fields)
#   ("float", lo, hi)        uniform number
#   ("int", lo, hi)          uniform integer
#   ("scale", lo, hi)        the recipe's own value times a log-uniform factor in [lo, hi]
#   ("categorical", [a, b])  one of the choices; "flip,translate:2" for tuple fields
Spec = tuple[Any, ...]
KINDS = ("log", "float", "int", "scale", "categorical")

_SGD_ONECYCLE: dict[str, Spec] = {
    "lr": ("log", 0.02, 0.8),
    "weight_decay": ("log", 5e-5, 2e-3),
    "label_smoothing": ("float", 0.0, 0.2),
    "warmup_epochs": ("float", 0.5, 3.0),
}
_KERAS_ADAM: dict[str, Spec] = {
    "lr": ("log", 1e-4, 1e-2),
    "batch_size": ("categorical", [32, 64, 128, 256]),
    "label_smoothing": ("float", 0.0, 0.2),
}

SEARCH_SPACES: dict[str, dict[str, Spec]] = {
    "fast": {
        **_SGD_ONECYCLE,
        "batch_size": ("categorical", [128, 256, 512]),
        "augment": ("categorical", ["flip,translate:2", "flip,translate:2,erase", "flip"]),
    },
    "accurate": {**_SGD_ONECYCLE, "warmup_epochs": ("float", 1.0, 6.0)},
    "best": {"lr": ("log", 0.02, 0.3), "weight_decay": ("log", 1e-4, 1e-3)},
    "baseline-dropout": _KERAS_ADAM,
    "baseline-3conv": _KERAS_ADAM,
    "baseline-wide-dense": _KERAS_ADAM,
    "baseline-small": _KERAS_ADAM,
    "baseline-batchnorm": {
        "lr": ("log", 1e-3, 0.3),
        "momentum": ("float", 0.0, 0.95),
        "batch_size": ("categorical", [64, 128, 256]),
    },
}
# For recipes without an entry: the learning rate around the recipe's own value.
DEFAULT_SPACE: dict[str, Spec] = {
    "lr": ("scale", 0.2, 5.0),
    "label_smoothing": ("float", 0.0, 0.2),
}

_UNTUNABLE = {"name", "description", "reported"}
# Fixed overrides that only make a search cheaper or possible; best.json's "params" leave
# them out, so `fmnist train --params best.json` trains on the full data.
SEARCH_ONLY = ("train_limit", "test_limit", "val_fraction")


def _require_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            f"hyperparameter search needs the optuna package: {INSTALL_HINT}"
        ) from None
    return optuna


# --------------------------------------------------------------------------- search space


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(Recipe)}


def search_space(recipe: str | Recipe) -> dict[str, Spec]:
    """The declared space of a recipe (by name), else :data:`DEFAULT_SPACE`."""
    name = recipe.name if isinstance(recipe, Recipe) else recipe
    return dict(SEARCH_SPACES.get(name, DEFAULT_SPACE))


def check_space(space: Mapping[str, Spec], recipe: Recipe) -> dict[str, Spec]:
    """Validate a search space against the Recipe fields; raise ConfigError naming the
    field, what is wrong and the fix."""
    types = _field_types()
    tunable = sorted(set(types) - _UNTUNABLE)
    out: dict[str, Spec] = {}
    for name, spec in space.items():
        if name not in types or name in _UNTUNABLE:
            raise ConfigError(
                f"search space of {recipe.name!r}: unknown recipe field {name!r}; "
                f"tunable fields: {', '.join(tunable)}."
            )
        spec = tuple(spec)
        kind = spec[0] if spec else None
        if kind not in KINDS:
            raise ConfigError(
                f"search space of {recipe.name!r}: {name}={spec!r} has an unknown kind "
                f"{kind!r}; expected one of {', '.join(KINDS)} (e.g. ('log', 1e-3, 0.5))."
            )
        if kind == "categorical":
            if len(spec) != 2 or not isinstance(spec[1], list | tuple) or not spec[1]:
                raise ConfigError(
                    f"search space of {recipe.name!r}: {name}={spec!r}; expected "
                    "('categorical', [choice, ...]) with at least one choice."
                )
        else:
            if len(spec) != 3 or not all(isinstance(v, int | float) for v in spec[1:]):
                raise ConfigError(
                    f"search space of {recipe.name!r}: {name}={spec!r}; expected "
                    f"({kind!r}, low, high) with numbers."
                )
            lo, hi = spec[1], spec[2]
            if not lo <= hi or (kind in ("log", "scale") and lo <= 0):
                raise ConfigError(
                    f"search space of {recipe.name!r}: {name}={spec!r}; expected low <= high"
                    f"{' and low > 0' if kind in ('log', 'scale') else ''}."
                )
            if kind == "scale" and not isinstance(getattr(recipe, name), int | float):
                raise ConfigError(
                    f"search space of {recipe.name!r}: {name} is {getattr(recipe, name)!r} "
                    "in the recipe, so ('scale', lo, hi) has nothing to scale; use "
                    "('log', lo, hi) or ('float', lo, hi)."
                )
        out[name] = spec
    return out


def _coerce(name: str, value: Any) -> Any:
    """A sampled value as the Recipe field wants it ("flip,erase" -> ("flip", "erase"))."""
    if _field_types()[name].startswith("tuple"):
        if isinstance(value, str):
            return tuple(x for x in value.split(",") if x)
        if isinstance(value, list):
            return tuple(value)
    return value


def suggest(trial: optuna.Trial, space: Mapping[str, Spec], base: Recipe) -> dict[str, Any]:
    """Sample one value per field of ``space`` (validated by :func:`check_space`)."""
    types = _field_types()
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        is_int = types[name].startswith("int")
        if kind == "categorical":
            value = trial.suggest_categorical(name, list(spec[1]))
        elif kind == "scale":
            value = getattr(base, name) * trial.suggest_float(f"{name}_scale", spec[1], spec[2],
                                                              log=True)
            value = max(1, round(value)) if is_int else value
        elif kind == "int" or is_int:
            value = trial.suggest_int(name, int(spec[1]), int(spec[2]), log=kind == "log")
        else:
            value = trial.suggest_float(name, spec[1], spec[2], log=kind == "log")
        params[name] = _coerce(name, value)
    return params


def _recipe_params(trial: optuna.trial.FrozenTrial, base: Recipe) -> dict[str, Any]:
    """A finished trial's params as recipe-field overrides (``lr_scale`` -> ``lr``)."""
    out: dict[str, Any] = {}
    for key, value in trial.params.items():
        if key.endswith("_scale") and key.removesuffix("_scale") not in trial.params \
                and hasattr(base, key.removesuffix("_scale")):
            name = key.removesuffix("_scale")
            value = getattr(base, name) * value
            if isinstance(getattr(base, name), int):
                value = max(1, round(value))
            key = name
        out[key] = _coerce(key, value) if key in _field_types() else value
    return out


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --------------------------------------------------------------------------- params files


def read_params(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """(recipe name or None, overrides) from a ``best.json`` written by :func:`tune` (its
    ``params``) or from a plain JSON object of recipe-field overrides."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--params {path}: no such file; pass the best.json `fmnist tune` "
                          "wrote, or a JSON object of recipe fields.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--params {path}: not a readable JSON file ({e}); pass a JSON "
                          'object of recipe fields, e.g. {"lr": 0.01}.') from None
    if not isinstance(data, dict):
        raise ConfigError(f"--params {path}: expected a JSON object of recipe fields, "
                          f'got {type(data).__name__}; write e.g. {{"lr": 0.01}}.')
    recipe = None
    if isinstance(data.get("params"), dict):  # best.json from `fmnist tune`
        recipe = data.get("recipe")
        data = data["params"]
    types = _field_types()
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(f"--params {path}: unknown recipe field(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(types))}.")
    for k, v in data.items():
        _check_param_type(path, k, v, types[k])
    return recipe, {k: _coerce(k, v) for k, v in data.items()}


_PARAM_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "true or false"),
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "str": ((str,), "a string"),
    "tuple": ((str, list), 'a list of strings or "a,b"'),
    "dict": ((dict,), "an object"),
}


def _check_param_type(path: Path, name: str, value: Any, annotation: str) -> None:
    """Refuse a --params value of the wrong JSON type for its Recipe field."""
    kind = annotation.split("[")[0].split(" ")[0]
    allowed, expected = _PARAM_TYPES.get(kind, ((object,), ""))
    if value is None and "None" in annotation:
        return
    ok = isinstance(value, allowed) and (kind == "bool" or not isinstance(value, bool))
    if kind == "tuple" and isinstance(value, list):
        ok = all(isinstance(x, str) for x in value)
    if not ok:
        raise ConfigError(f"--params {path}: {name}={json.dumps(value)} is not {expected} "
                          f"(recipe field {name}: {annotation}); fix the value in the file.")


# --------------------------------------------------------------------------- the search


class OptunaPruning(Callback):
    """Training callback of one trial: reports validation accuracy to Optuna each epoch,
    stops the run when the pruner says so, or when the trial's time budget is spent."""

    def __init__(self, trial: optuna.Trial, budget: float | None = None) -> None:
        self.trial = trial
        self.budget = budget
        self.seconds = 0.0
        self.pruned = False

    def on_epoch_end(self, loop: Loop) -> str | None:
        row = loop.row
        self.seconds += float(row.get("seconds") or 0) + float(row.get("eval_seconds") or 0)
        if row.get(METRIC) is None:  # cannot happen: tune forces a validation split
            return None
        self.trial.report(float(row[METRIC]), loop.epoch)
        if self.trial.should_prune():
            self.pruned = True
            return f"pruned at epoch {loop.epoch} ({METRIC} {row[METRIC]:.4f} below the median)"
        if self.budget is not None and self.seconds >= self.budget:
            return f"trial budget of {self.budget:g} s spent"
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "pruned": self.pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds, self.pruned = float(state["seconds"]), bool(state["pruned"])


TrialMonitor = OptunaPruning  # its earlier name


@dataclass
class TuneResult:
    """What a search left: the best trial and where the study and its files are."""

    study_name: str
    storage: str
    dir: Path
    recipe: str
    best_value: float | None
    best_params: dict[str, Any]  # recipe overrides to train with (as best.json's "params")
    searched: dict[str, Any]  # the part of best_params the search chose
    best_trial: int | None
    n_trials: int  # in the whole study, this and earlier runs and other processes
    states: dict[str, int]  # COMPLETE / PRUNED / FAIL / ... -> count
    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)
    study: Any = field(default=None, repr=False)  # the optuna.Study

    @property
    def best_path(self) -> Path | None:
        return self.files.get("best")


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def _storage(url: str):
    """An Optuna storage for ``url``; SQLite files get their folder made and wait for
    locks (several processes may share one study) instead of failing at once."""
    optuna = _require_optuna()
    try:
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(url,
                                              engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.storages.get_storage(url)
    except Exception as e:  # sqlalchemy / driver errors: one line for the CLI
        raise ConfigError(f"--storage {url}: cannot open it ({type(e).__name__}: {e}). "
                          "Use e.g. sqlite:///runs/tune.db.") from None


def _trial_dir(out: Path, number: int) -> Path:
    path = out / "trials" / f"trial-{number:04d}"
    i = 1
    while (path / "checkpoints" / "last.pt").exists():  # only with a storage that was reset
        i += 1
        path = out / "trials" / f"trial-{number:04d}-{i}"
    return path


def fit_space(space: Mapping[str, Spec], policy: AugmentPolicy) -> dict[str, Spec]:
    """``space`` with its augmentation choices cut to what keeps the dataset's labels
    (e.g. no flips for digits: "flip,translate:2" becomes "translate:2")."""
    spec = space.get("augment")
    if spec is None or spec[0] != "categorical":
        return dict(space)
    fitted = [",".join(policy.fit([a for a in str(c).split(",") if a])[0]) for c in spec[1]]
    return {**space, "augment": ("categorical", list(dict.fromkeys(fitted)))}


def tune(
    recipe: str | Recipe = "fast",
    trials: int = 20,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    out: str | Path | None = None,
    timeout: float | None = None,
    trial_budget: float | None = None,
    data_dir: str | Path | None = None,
    data: Dataset | None = None,
    device: str = "auto",
    offline: bool = False,
    space: Mapping[str, Spec] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    **fixed_overrides: Any,
) -> TuneResult:
    """Run ``trials`` more trials of a search over ``recipe`` and write the study folder.

    ``fixed_overrides`` hold recipe fields fixed for every trial (e.g. ``epochs=3``,
    ``train_limit=10000``; ``seed`` also seeds the sampler); a field fixed here is taken
    out of the search space. ``space`` replaces the recipe's :data:`SEARCH_SPACES` entry.
    ``storage`` is an Optuna URL (default ``sqlite:///<out>/study.db``); an existing study
    of that name is continued. ``timeout`` bounds this call in seconds, ``trial_budget``
    each trial's training. The default pruner is ``MedianPruner(n_startup_trials=5,
    n_warmup_steps=2)``: nothing is pruned before epoch 2 or before 5 trials finished.
    ``data`` is an already loaded Dataset; without it the recipe's ``dataset`` is loaded.
    """
    optuna = _require_optuna()
    from .datasets import load_dataset

    base, checked, fixed, space_now = _search_setup(recipe, trials, trial_budget, space,
                                                    fixed_overrides)
    ds = data or load_dataset(checked.dataset, data_dir, offline=offline)  # before any folder
    study_name = study_name or base.name
    out_dir = Path(out) if out is not None else Path("runs") / f"tune-{study_name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out_dir)
    objective = _Objective(fit_space(space_now, ds.augment_policy), base, checked, fixed,
                           out_dir, trial_budget,
                           {"data_dir": data_dir, "device": device, "offline": offline,
                            "data": ds})
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _open_study(storage, study_name, base, checked, pruner)
        try:
            # gc between trials hands a finished trial's CUDA memory back
            study.optimize(objective, n_trials=trials, timeout=timeout,
                           callbacks=[_announcer(checked)], gc_after_trial=True)
        except BaseException:
            # after an interrupt or an error too, the folder reflects what was done
            with contextlib.suppress(Exception):
                write_study_files(study, out_dir, base=checked, fixed=fixed, storage=storage)
            raise
        return write_study_files(study, out_dir, base=checked, fixed=fixed, storage=storage)
    finally:
        optuna.logging.set_verbosity(previous_verbosity)


def _search_setup(recipe: str | Recipe, trials: int, trial_budget: float | None,
                  space: Mapping[str, Spec] | None, fixed_overrides: Mapping[str, Any]
                  ) -> tuple[Recipe, Recipe, dict[str, Any], dict[str, Spec]]:
    """(base recipe, base with the fixed overrides, fixed overrides, space left to
    search), each argument checked before any trial runs."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1; got {trials}.")
    if trial_budget is not None and trial_budget <= 0:
        raise ConfigError(f"--trial-budget must be a number of seconds > 0; got {trial_budget}.")
    base = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    fixed = {k: v for k, v in fixed_overrides.items() if v is not None}
    val_fraction = fixed.get("val_fraction", base.val_fraction or DEFAULT_VAL_FRACTION)
    if not val_fraction > 0:
        raise ConfigError("tune scores trials on a validation split, so val_fraction must be "
                          "> 0 (e.g. 0.1); the test split is never used for the search.")
    fixed["val_fraction"] = val_fraction
    checked = resolve_recipe(base, **fixed)  # fail on bad fixed values before any trial
    full_space = check_space(space if space is not None else search_space(base), checked)
    space_now = {k: v for k, v in full_space.items() if k not in fixed}
    if not space_now:
        raise ConfigError(f"nothing to search for {base.name!r}: every field of its space "
                          f"({', '.join(full_space)}) is fixed.")
    return base, checked, fixed, space_now


def _open_study(storage: str, study_name: str, base: Recipe, checked: Recipe,
                pruner: optuna.pruners.BasePruner | None) -> optuna.Study:
    """The study (created or continued), with a TPE sampler and the pruner."""
    optuna = _require_optuna()
    study = optuna.create_study(storage=_storage(storage), study_name=study_name,
                                direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {study_name!r} in {storage} does not maximize; pick "
                          "another --study name.")
    # reproducible for a given study state, and a resumed run does not redraw the
    # first run's random start-up points
    study.sampler = optuna.samplers.TPESampler(seed=int(checked.seed) + len(study.trials))
    study.pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    study.set_user_attr("recipe", base.name)
    return study


@dataclass
class _Objective:
    """One trial: train with sampled overrides, return the validation accuracy of the
    weights the run ended with (pruned: raise ``optuna.TrialPruned``)."""

    space: Mapping[str, Spec]
    base: Recipe
    checked: Recipe
    fixed: Mapping[str, Any]
    out_dir: Path
    trial_budget: float | None
    train_kwargs: dict[str, Any]

    def __call__(self, trial: optuna.Trial) -> float:
        optuna = _require_optuna()
        from .training import TrainingDiverged, train

        params = suggest(trial, self.space, self.checked)
        pruning = OptunaPruning(trial, self.trial_budget)
        run_dir = _trial_dir(self.out_dir, trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            run = train(self.base, out=run_dir, callbacks=[pruning], evaluate_test=False,
                        **self.train_kwargs, **{**self.fixed, **params})
        except TrainingDiverged as e:
            # a hopeless point: pruned, so TPE learns to avoid it
            trial.set_user_attr("stop_reason", f"diverged: {e}")
            raise optuna.TrialPruned(str(e)) from None
        trial.set_user_attr("epochs_run", len(run.history))
        trial.set_user_attr("stop_reason", run.stop_reason)
        if pruning.pruned:
            raise optuna.TrialPruned(run.stop_reason)
        epoch = int(run.meta.metrics.get("weights_epoch") or len(run.history))
        return float(run.history[epoch - 1][METRIC])


def _announcer(base: Recipe):
    """An Optuna study callback logging each finished trial."""
    def announce(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" {METRIC} {trial.value:.4f}"
        log.info("trial %d %s%s  %s", trial.number, trial.state.name.lower(), value,
                 _jsonable(_recipe_params(trial, base)))

    return announce


# --------------------------------------------------------------------------- outputs


def _duration(t: optuna.trial.FrozenTrial) -> float | None:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return round((t.datetime_complete - t.datetime_start).total_seconds(), 3)


def trials_csv(study: optuna.Study, base: Recipe) -> str:
    """All trials: number, state, value, duration, one ``params_<field>`` column each."""
    trials = study.get_trials(deepcopy=False)
    rows = []
    names: list[str] = []
    for t in trials:
        params = _jsonable(_recipe_params(t, base))
        names += [k for k in params if k not in names]
        rows.append((t, params))
    fields = ["number", "state", "value", "duration_s", "epochs_run", "stop_reason"]
    fields += [f"params_{k}" for k in names] + ["run_dir"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(fields)
    for t, params in rows:
        cells = [t.number, t.state.name, "" if t.value is None else t.value, _duration(t),
                 t.user_attrs.get("epochs_run", ""), t.user_attrs.get("stop_reason", "")]
        for k in names:
            v = params.get(k, "")
            cells.append(",".join(v) if isinstance(v, list) else v)
        cells.append(t.user_attrs.get("run_dir", ""))
        writer.writerow(["" if c is None else c for c in cells])
    return buf.getvalue()


def _save_plots(study: optuna.Study, out: Path, complete: int) -> tuple[dict[str, Path],
                                                                        list[str]]:
    """Optuna's matplotlib history and importance plots as PNG (no plotly needed)."""
    from . import plots  # imported first: selects the Agg backend before pyplot loads

    optuna = _require_optuna()
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    files: dict[str, Path] = {}
    notes: list[str] = []
    jobs = [("history", "optimization_history.png", lambda: vis.plot_optimization_history(
        study, target_name=METRIC))]
    if complete >= 2:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        jobs.append(("importances", "param_importances.png", lambda: vis.plot_param_importances(
            study, evaluator=evaluator, target_name=METRIC)))
    else:
        notes.append(f"param_importances.png skipped: needs >= 2 completed trials, the study "
                     f"has {complete}.")
    for key, name, draw in jobs:
        if complete == 0 and key == "history":
            notes.append("optimization_history.png skipped: no completed trial yet.")
            continue
        # Optuna's plots call plt.style.use("ggplot"), a global change: keep it local
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = draw()
            except (ValueError, RuntimeError) as e:  # e.g. every trial scored the same
                notes.append(f"{name} skipped: {e}")
                continue
            fig = ax.figure
            try:
                fig.set_size_inches(7, 4.5)
                fig.tight_layout()
                fig.savefig(out / name, dpi=plots.DPI)
            finally:
                plt.close(fig)
        files[key] = out / name
    return files, notes


def write_study_files(study: optuna.Study, out: str | Path, *, base: Recipe,
                      fixed: Mapping[str, Any], storage: str) -> TuneResult:
    """best.json, trials.csv and the plots for the study as it stands (all processes)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = states.get("COMPLETE", 0)
    files: dict[str, Path] = {"trials": atomic_write_text(out / "trials.csv",
                                                          trials_csv(study, base))}
    notes: list[str] = []
    best_value = best_trial = None
    best_params: dict[str, Any] = {}
    searched: dict[str, Any] = {}
    if complete:
        best = study.best_trial
        best_value, best_trial = float(best.value), best.number
        searched = _jsonable(_recipe_params(best, base))
        # the fixed overrides shape the model too (--model, --optimizer, --epochs...), but
        # the data shortcuts of a search do not belong in the final training run
        kept = {k: v for k, v in fixed.items() if k not in SEARCH_ONLY}
        best_params = {**_jsonable(kept), **searched}
        files["best"] = atomic_write_json(out / "best.json", {
            "study": study.study_name,
            "recipe": base.name,
            "metric": METRIC,
            "value": best_value,
            "trial": best_trial,
            "params": best_params,
            "searched": searched,
            "fixed": _jsonable(fixed),
            "run_dir": best.user_attrs.get("run_dir"),
            "trials": len(trials),
            "states": states,
            "storage": storage,
            "train": f"fmnist train --recipe {base.name} --params {out / 'best.json'}",
        })
    else:
        notes.append("best.json not written: no trial completed yet.")
    plot_files, plot_notes = _save_plots(study, out, complete)
    files.update(plot_files)
    notes += plot_notes
    for note in notes:
        log.info("%s", note)
    return TuneResult(study_name=study.study_name, storage=storage, dir=out, recipe=base.name,
                      best_value=best_value, best_params=best_params, searched=searched,
                      best_trial=best_trial,
                      n_trials=len(trials), states=states, files=files, notes=notes,
                      study=study)


__all__ = [
    "SEARCH_SPACES",
    "DEFAULT_SPACE",
    "TuneResult",
    "OptunaPruning",
    "TrialMonitor",
    "check_space",
    "read_params",
    "search_space",
    "suggest",
    "tune",
    "write_study_files",
]
