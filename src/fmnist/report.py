"""A run's report: one self-contained HTML file a person would rather look at than read.

:class:`Interpretation` holds a run's test predictions, computed once (fastai's
``ClassificationInterpretation``): ``confusion_matrix()``, ``most_confused(k)``,
``top_losses(k)``. :func:`write_report` draws each section over it (one short function
per section, :data:`SECTIONS`), saves every figure as ``RUN/plots/<name>.png`` and embeds
it in ``RUN/report.html`` as a base64 data URI (:mod:`fmnist.report_html`): no scripts,
fonts or anything fetched from the network. The metrics come from ``metrics.json``; when
it is missing the run is evaluated first and the file written.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from . import __version__, plots
from . import metrics as M
from .errors import FmnistError
from .evaluation import normalize
from .explain import feature_maps, first_conv, gradcam
from .fileio import atomic_write
from .report_html import (
    Section,
    confused_table,
    duration,
    esc,
    img,
    kpis,
    kv_table,
    page,
    report_table,
)
from .runs import Run, read_metrics, read_predictions, write_predictions

log = logging.getLogger("fmnist")

__all__ = ["Interpretation", "write_report"]


# --------------------------------------------------------------------------- interpretation


@dataclass
class Interpretation:
    """A run's predictions on its test split, computed once, and what follows from them.

    ``metrics`` are those of ``metrics.json``; ``single_view`` says ``probs`` are of one
    view while the metrics used test-time augmentation.
    """

    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, C) float64
    classes: tuple[str, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    single_view: bool = False

    @classmethod
    def from_run(cls, run: Run) -> Interpretation:
        """The test probabilities saved with ``metrics.json`` by training or ``fmnist
        evaluate`` (``predictions.npz``, checked against model.pt); else one prediction of
        the test split, single-view beside saved metrics, else with the recipe's TTA, and
        then ``metrics.json`` and ``predictions.npz`` are written from it."""
        test, metrics = run.split("test"), read_metrics(run.dir)
        saved = read_predictions(run.dir) if metrics else None
        if saved is not None and saved[0].shape == (len(test), len(run.classes)):
            probs, tta = saved
            return cls(test.images, test.labels, probs, run.classes, metrics,
                       single_view=bool(metrics.get("tta")) and not tta)
        if metrics:
            probs = run.predict_proba(test.images)
            write_predictions(run.dir, probs, tta=False)  # the next report reuses them
            return cls(test.images, test.labels, probs, run.classes, metrics,
                       single_view=bool(metrics.get("tta")))
        metrics = run.evaluate("test", write=True)
        probs = read_predictions(run.dir)
        assert probs is not None  # just written by evaluate
        return cls(test.images, test.labels, probs[0], run.classes, dict(metrics))

    @cached_property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @cached_property
    def losses(self) -> np.ndarray:
        """(N,) cross-entropy of each image's true class."""
        p_true = self.probs[np.arange(len(self.labels)), self.labels]
        return -np.log(np.clip(p_true, 1e-12, None))

    def confusion_matrix(self) -> np.ndarray:
        """(C, C) counts, rows true classes, columns predictions."""
        return M.confusion_matrix(self.labels, self.preds, len(self.classes))

    def most_confused(self, k: int = 5) -> list[tuple[str, str, int]]:
        """The ``k`` (true, predicted, count) pairs mixed up most often."""
        return [tuple(p) for p in M.most_confused(self.confusion_matrix(), self.classes, k)]

    def top_losses(self, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(indices, losses) of the ``k`` mistakes made with the most confidence."""
        wrong = np.flatnonzero(self.preds != self.labels)
        order = wrong[np.argsort(-self.losses[wrong], kind="stable")][:k]
        return order, self.losses[order]


# --------------------------------------------------------------------------- figures


class _Figures:
    """Saves each figure under ``plots/`` and hands back its data URI."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: list[Path] = []

    def add(self, name: str, fig: Figure) -> str:
        png = plots.fig_to_png_bytes(fig)
        path = self.folder / f"{name}.png"
        atomic_write(path, lambda f: f.write(png), durable=False)  # report.html is durable
        self.written.append(path)
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class _Page:
    """What every section reads: the run, its interpretation and the figure store."""

    run: Run
    interp: Interpretation
    figs: _Figures

    @property
    def metrics(self) -> dict[str, Any]:
        return self.interp.metrics


def _gallery_indices(labels: np.ndarray, preds: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` test images, a third of them mistakes (when there are)."""
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero(preds != labels)
    right = np.flatnonzero(preds == labels)
    k_wrong = min(len(wrong), n // 3)
    k_right = min(len(right), n - k_wrong)
    pick = np.concatenate([rng.choice(right, k_right, replace=False),
                           rng.choice(wrong, k_wrong, replace=False)]).astype(int)
    return pick[rng.permutation(len(pick))]


def _gradcam_figures(p: _Page, per_class: int = 3, classes_per_figure: int = 5) -> list[Figure]:
    """Grad-CAM for the first ``per_class`` test images of every class (~30 images, one
    backward pass), drawn ``classes_per_figure`` classes to a figure so text stays legible."""
    run, it = p.run, p.interp
    pick = np.concatenate([np.flatnonzero(it.labels == c)[:per_class]
                           for c in range(len(it.classes))])
    x = normalize(torch.from_numpy(it.images[pick]), run.meta.mean, run.meta.std)
    cams = gradcam(run.model, x.to(run.device))
    labels, preds, out = it.labels[pick], it.preds[pick], []
    for lo in range(0, len(it.classes), classes_per_figure):
        keep = (labels >= lo) & (labels < lo + classes_per_figure)
        if keep.any():
            out.append(plots.gradcam_grid(it.images[pick][keep], cams[keep], labels[keep],
                                          preds[keep], it.classes, per_class=per_class))
    return out


# --------------------------------------------------------------------------- sections


def _curves(p: _Page) -> Section:
    history = p.run.history
    if not history:
        return Section("curves", "Training curves", '<p class="how">This run has no '
                       "history.csv.</p>")
    uri = p.figs.add("training_curves", plots.training_curves(history))
    return Section("curves", "Training curves", (
        '<p class="how">Accuracy and loss per epoch on the training data and, when the run '
        "held out a validation split, on it. A validation curve that turns up while training "
        "loss keeps falling is overfitting; the dashed line marks the best validation "
        "epoch.</p>" + img(uri, "training curves")))


def _metrics(p: _Page) -> Section:
    m = p.metrics
    headline = (f"loss {m['loss']:.4f} · top-2 accuracy {m['top2_accuracy']:.2%} "
                f"· ECE {m['ece']:.2%} · {m.get('n', len(p.interp.labels)):,} test images"
                + (" · with TTA" if m.get("tta") else ""))
    return Section("metrics", "Classification report", (
        '<p class="how">Precision: of the images predicted as a class, the share that '
        "were right. Recall: of the images of a class, the share found (the bar). F1 is "
        "their harmonic mean; the weakest class is in red. Support is the number of test "
        f'images.</p><p class="note">{esc(headline)}</p>' + report_table(m)))


def _data(p: _Page) -> Section:
    run, classes = p.run, p.interp.classes
    train = run.split("train")
    try:
        split_labels = {"train": train.labels, "validation": run.split("val").labels}
    except FmnistError:  # trained without a validation split
        split_labels = {"train": train.labels}
    split_labels["test"] = p.interp.labels
    grid = p.figs.add("samples", plots.sample_grid(
        train.images, train.labels, classes, n=25, seed=run.recipe.seed,
        title="Training images"))
    dist = p.figs.add("class_distribution", plots.class_distribution(split_labels, classes))
    return Section("data", "The data", (
        '<p class="how">A random sample of training images with their labels, and how many '
        f"images of each class each split holds ({esc(run.dataset.name)} from "
        f"<code>{esc(run.dataset.source)}</code>). Balanced bars mean accuracy is a fair "
        'summary.</p><div class="figs">' + img(grid, "sample images")
        + img(dist, "class distribution") + "</div>"))


def _confusion(p: _Page) -> Section:
    cm = np.asarray(p.metrics["confusion_matrix"])
    uri = p.figs.add("confusion_matrices", plots.confusion_matrices_plot(cm, p.interp.classes))
    return Section("confusion", "Confusion matrix", (
        '<p class="how">Rows are the true classes, columns the predictions: the diagonal '
        "holds the correct answers, everything else is a mistake; a blank cell is zero. "
        "The normalized matrix "
        "(right) divides each row by its total, so its diagonal is the recall of each class "
        "and an off-diagonal cell is the share of a class mistaken for another.</p>"
        + img(uri, "confusion matrix, counts and row-normalized")))


def _view_note(p: _Page) -> str:
    return (' <span class="note">Image-level figures use single-view predictions; the '
            "metrics used test-time augmentation.</span>") if p.interp.single_view else ""


def _predictions(p: _Page) -> Section:
    it = p.interp
    pick = _gallery_indices(it.labels, it.preds, 10, p.run.recipe.seed)
    uri = p.figs.add("predictions", plots.prediction_gallery(
        it.images[pick], it.probs[pick], it.labels[pick], it.classes, n=10, cols=2))
    return Section("predictions", "Predictions", (
        '<p class="how">Ten random test images, three of them chosen among the mistakes, '
        "each with the probability the model gave every class. The caption is the "
        "prediction and its probability, the true class in brackets; green when right, red "
        f"when wrong.{_view_note(p)}</p>" + img(uri, "prediction gallery")))


def _top_losses(p: _Page) -> Section:
    it = p.interp
    uri = p.figs.add("top_losses", plots.top_losses(it.images, it.probs, it.labels,
                                                    it.classes, k=16))
    return Section("top-losses", "Top losses", (
        '<p class="how">The sixteen mistakes the model was most sure of (the largest loss on '
        "the true class). Some are ambiguous or mislabeled images; repeated patterns point "
        "at what the model has not learned.</p>" + img(uri, "top losses")))


def _confused_pairs(p: _Page) -> Section:
    it = p.interp
    uri = p.figs.add("confused_pairs", plots.confused_pairs_plot(
        it.images, it.probs, it.labels, it.classes, p.metrics.get("most_confused", []),
        per_pair=8))
    return Section("confused-pairs", "Most confused pairs", (
        '<p class="how">The class pairs mixed up most often, and for each the mistakes made '
        "with the most confidence (p is the probability given to the wrong class).</p>"
        f"{confused_table(p.metrics)}" + img(uri, "most confused pairs")))


def _before_after(p: _Page) -> str:
    """Reliability diagrams before and after the run's temperature (fmnist.calibration),
    and the share of test images its out-of-distribution threshold rejects; "" if none."""
    cal = p.metrics.get("calibration") or {}
    if "reliability_before" not in cal:
        return ""
    parts = []
    for when in ("before", "after"):
        uri = p.figs.add(f"reliability_{when}", plots.reliability_diagram(
            cal[f"reliability_{when}"], cal[when]["ece"]))
        parts.append(img(uri, f"reliability diagram {when} calibration",
                         f"{when} the temperature: ECE {cal[when]['ece']:.2%}, "
                         f"NLL {cal[when]['nll']:.3f}, Brier {cal[when]['brier']:.3f}"))
    ood = p.metrics.get("ood") or {}
    note = (f" The out-of-distribution threshold ({esc(ood['method'])}) rejects "
            f"{ood['rejected']:.1%} of these test images." if ood else "")
    return (f'<p class="how">Temperature {cal["temperature"]:.3f}, fitted on '
            f'{cal.get("size", "?")} held-out images ({esc(cal.get("split", "?"))}); it '
            f"changes no prediction, only how sure each one says it is.{note}</p>"
            + "".join(parts))


def _calibration(p: _Page) -> Section:
    """One reliability diagram, or (for a calibrated run) the diagrams before and after its
    temperature, the second being that of the probabilities the metrics use."""
    m = p.metrics
    figures = _before_after(p) or img(p.figs.add("reliability", plots.reliability_diagram(
        m["reliability"], m["ece"])), "reliability diagram")
    return Section("calibration", "Calibration", (
        '<p class="how">When the model says 90%, is it right 90% of the time? Test images '
        "are binned by their top probability; bars below the diagonal mean over-confidence, "
        "above it under-confidence. ECE is the average gap weighted by the bin sizes (lower "
        f"is better): here {m['ece']:.2%}.</p>" + figures))


def _gradcam(p: _Page) -> Section:
    try:
        cams = [p.figs.add(f"gradcam_{i + 1}", fig)
                for i, fig in enumerate(_gradcam_figures(p))]
    except FmnistError as e:  # a model without the conv layers Grad-CAM needs
        return Section("gradcam", "Where the model looks",
                       f'<p class="note">Not available for this model: {esc(e)}</p>')
    return Section("gradcam", "Where the model looks (Grad-CAM)", (
        '<p class="how">Grad-CAM colours the pixels that raised the score of the predicted '
        "class, through the last convolution: red matters most, blue not at all. Three test "
        "images per true class; the caption is the prediction, red when wrong. Heat on the "
        "garment's outline and telling parts (collars, heels, straps) is a good sign; heat "
        "on the background is not.</p>" + "".join(img(c, "Grad-CAM overlays") for c in cams)))


def _filters(p: _Page) -> Section:
    run, image = p.run, p.interp.images[0]
    try:
        conv = first_conv(run.model)
        x0 = normalize(torch.from_numpy(image[None]), run.meta.mean, run.meta.std)
        maps = feature_maps(run.model, x0[0])
    except FmnistError as e:  # a model without a convolution
        return Section("filters", "Filters and feature maps",
                       f'<p class="note">Not available for this model: {esc(e)}</p>')
    filt = p.figs.add("filters", plots.filters_plot(conv.weight))
    fmap = p.figs.add("feature_maps", plots.feature_maps_plot(image, maps))
    return Section("filters", "Filters and feature maps", (
        '<p class="how">The first convolution\'s kernels (red positive, blue negative '
        "weights): trained filters look like edge and blob detectors. Below, what each of "
        "them outputs for one test image after the activation: bright where its pattern "
        "occurs.</p>" + img(filt, "first-layer filters")
        + img(fmap, "feature maps of one image")))


def _setup(p: _Page) -> Section:
    config = p.run.config
    recipe = {k: v for k, v in config.get("recipe", {}).items()
              if k not in ("description", "reported")}
    env = {**config.get("environment", {}), "precision": config.get("precision")}
    data = {k: v for k, v in (config.get("dataset") or {}).items() if k != "classes"}
    return Section("setup", "Recipe and environment", (
        '<p class="how">Everything needed to reproduce the run, from '
        "<code>config.json</code>.</p>"
        f'<div class="cols"><div><h3>Recipe</h3>{kv_table(recipe)}</div>'
        f"<div><h3>Environment</h3>{kv_table(env)}<h3>Data</h3>{kv_table(data)}</div></div>"))


SECTIONS: tuple[Callable[[_Page], Section], ...] = (
    _curves, _metrics, _data, _confusion, _predictions, _top_losses, _confused_pairs,
    _calibration, _gradcam, _filters, _setup)


# --------------------------------------------------------------------------- the page


def _header(p: _Page) -> str:
    run, m, history = p.run, p.metrics, p.run.history
    seconds = sum(float(r.get("seconds") or 0) for r in history) if history else None
    params = run.config.get("params")
    figures = kpis([
        ("test accuracy", f"{m['accuracy']:.2%}"), ("test loss", f"{m['loss']:.4f}"),
        ("ECE", f"{m['ece']:.2%}"),
        ("parameters", f"{params:,}" if isinstance(params, int) else "–"),
        ("epochs", f"{len(history)} / {run.recipe.epochs}"),
        ("training time", duration(seconds))])
    sub = " · ".join(filter(None, [
        f"recipe {run.recipe.name}", f"model {run.recipe.model}", run.dataset.name,
        str(run.config.get("created", "")).replace("T", " ")[:19],
        f"status {run.config.get('status', '?')}"]))
    desc = run.recipe.description or ""
    return (f'<header class="card" id="summary"><h1>{esc(run.dir.name)}</h1>'
            f'<div class="sub">{esc(sub)}</div>'
            + (f'<div class="sub">{esc(desc)}</div>' if desc else "") + figures + "</header>")


def write_report(run_dir: str | Path | Run, *, out: str | Path | None = None,
                 data_dir: str | Path | None = None, device: str | torch.device = "auto",
                 offline: bool = False, dataset: Any = None) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``) and its figures under
    ``RUN/plots/``; return the report's path. ``run_dir`` may be a loaded :class:`Run`."""
    t0 = time.perf_counter()
    run = run_dir if isinstance(run_dir, Run) else Run.load(
        run_dir, data_dir=data_dir, device=device, offline=offline, dataset=dataset)
    p = _Page(run, Interpretation.from_run(run), _Figures(run.dir / "plots"))
    sections = [section(p) for section in SECTIONS]
    made = datetime.now().strftime("%Y-%m-%d %H:%M")
    footer = (f"fmnist {esc(__version__)} · report written {made} · {len(p.figs.written)} "
              f"figures in <code>{esc(p.figs.folder)}</code>")
    doc = page(f"{run.dir.name} · fmnist report", _header(p), sections, footer)
    path = Path(out) if out is not None else run.dir / "report.html"
    data = doc.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    log.info("report written to %s (%.1f s)", path, time.perf_counter() - t0)
    return path
