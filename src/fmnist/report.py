"""A run's report: one self-contained HTML file a person would rather look at than read.

:func:`write_report` loads a run folder (model, recipe, the data it was trained on),
predicts the test set once, draws every figure of :mod:`fmnist.plots` (plus the
most-confused pairs with example images), saves each as ``RUN/plots/<name>.png`` and
embeds it in ``RUN/report.html`` as a base64 data URI, with inline CSS and no scripts,
fonts or anything else fetched from the network. The metrics come from
``metrics.json``; when it is missing the run is evaluated first and the file written.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from . import plots
from .checkpoints import atomic_write, atomic_write_json
from .errors import FmnistError
from .evaluation import LoadedRun, load_run, metrics_filename, metrics_from_probs, normalize_batch
from .explain import feature_maps, first_conv, gradcam
from .training import read_history

log = logging.getLogger("fmnist")

__all__ = ["write_report", "confused_pairs_plot"]


# --------------------------------------------------------------------------- figures


def confused_pairs_plot(
    images: Any,
    probs: Any,
    labels: Any,
    class_names: Sequence[str],
    pairs: Sequence[Sequence[Any]],
    *,
    per_pair: int = 8,
    path: str | Path | None = None,
) -> Figure:
    """One row per ``(true, predicted, count)`` pair: its most confident mistakes.

    ``pairs`` is ``metrics["most_confused"]`` (class names). Each image is captioned with
    the probability the model gave the wrong class.
    """
    imgs = plots._images(images)
    p = np.asarray(probs, dtype=np.float64)
    lab = np.asarray(labels).astype(int)
    preds = p.argmax(axis=1)
    index = {str(n): i for i, n in enumerate(class_names)}
    rows = [(t, q, int(c)) for t, q, c in pairs if t in index and q in index][:8]
    if not rows:
        fig = plots._new_figure(4.0, 1.5)
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "No confused pairs", ha="center", va="center", fontsize=12)
        return plots._finish(fig, path)
    fig = plots._new_figure(1.25 * per_pair + 1.6, 1.5 * len(rows) + 0.2)
    axes = fig.subplots(len(rows), per_pair, squeeze=False)
    for r, (t, q, count) in enumerate(rows):
        ti, qi = index[t], index[q]
        hits = np.flatnonzero((lab == ti) & (preds == qi))
        hits = hits[np.argsort(-p[hits, qi], kind="stable")][:per_pair]
        for j, ax in enumerate(axes[r]):
            plots._bare(ax)
            if j >= len(hits):
                ax.axis("off")
                continue
            i = hits[j]
            ax.imshow(imgs[i], cmap="binary", interpolation="nearest")
            ax.set_xlabel(f"p={p[i, qi]:.2f}", fontsize=7)
        axes[r, 0].set_ylabel(f"{t}\n→ {q}\n({count})", fontsize=8, rotation=0,
                              ha="right", va="center", labelpad=8)
    fig.suptitle("Most confused pairs: true → predicted (count), most confident first",
                 fontsize=10)
    return plots._finish(fig, path)


def _gradcam_figures(run: LoadedRun, images: np.ndarray, labels: np.ndarray,
                     preds: np.ndarray, per_class: int = 3,
                     classes_per_figure: int = 5) -> list[Figure]:
    """Grad-CAM for the first ``per_class`` test images of every class (~30 images, one
    backward pass), drawn ``classes_per_figure`` classes to a figure so text stays legible."""
    pick = np.concatenate([np.flatnonzero(labels == c)[:per_class]
                           for c in range(len(run.classes))])
    x = normalize_batch(torch.from_numpy(images[pick]), run.meta.mean, run.meta.std)
    cams = gradcam(run.model, x.to(run.device))
    out = []
    for lo in range(0, len(run.classes), classes_per_figure):
        keep = (labels[pick] >= lo) & (labels[pick] < lo + classes_per_figure)
        if keep.any():
            out.append(plots.gradcam_grid(images[pick][keep], cams[keep], labels[pick][keep],
                                          preds[pick][keep], run.classes,
                                          per_class=per_class))
    return out


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


# --------------------------------------------------------------------------- html pieces

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff;
        --accent:#2563eb; --good:#15803d; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
             Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 60px; }
header.card { background: linear-gradient(135deg, #1e3a8a, #2563eb); color: #fff;
              border: none; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header .sub { opacity: .85; font-size: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
        padding: 22px 26px; margin-bottom: 22px; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr));
        gap: 12px; margin-top: 18px; }
.kpi { background: rgba(255,255,255,.12); border-radius: 10px; padding: 10px 14px; }
.kpi .v { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.kpi .k { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; opacity: .85; }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 8px; margin: 0 0 22px; }
nav.toc a { color: var(--accent); background: #fff; border: 1px solid var(--line);
            border-radius: 999px; padding: 3px 12px; font-size: 13px; text-decoration: none; }
h2 { margin: 0 0 6px; font-size: 20px; }
h3 { margin: 18px 0 6px; font-size: 15px; color: var(--muted); }
p.how { color: var(--muted); margin: 0 0 14px; max-width: 900px; }
figure { margin: 8px 0 0; text-align: center; }
figure img { max-width: 100%; height: auto; border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.figs { display: flex; flex-wrap: wrap; gap: 10px 24px; justify-content: center;
        align-items: flex-start; }
.figs > figure { flex: 0 1 auto; min-width: 0; }
.cols { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
.cols > * { flex: 1 1 420px; min-width: 0; }
table { border-collapse: collapse; width: 100%; font-size: 14px;
        font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { color: var(--muted); font-weight: 600; font-size: 12px;
           text-transform: uppercase; letter-spacing: .03em; }
tr.sep td { border-top: 2px solid var(--line); }
tr.worst td:first-child { color: var(--bad); font-weight: 600; }
td.bar { width: 28%; }
.bar span { display: block; height: 10px; border-radius: 5px; background: var(--accent); }
table.kv td { text-align: left; }
table.kv td:first-child { color: var(--muted); width: 40%; white-space: nowrap; }
table.kv code { font-size: 13px; }
.note { font-size: 13px; color: var(--muted); }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 30px; }
"""


@dataclass
class _Section:
    id: str
    title: str
    body: str


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{_e(alt)}">{cap}</figure>'


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "–"
    if isinstance(value, dict):
        return json.dumps(value) if value else "–"
    return "–" if value is None or value == "" else str(value)


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(_fmt_value(v))}</code></td></tr>"
                   for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def _report_table(metrics: dict[str, Any]) -> str:
    """The classification report as an HTML table, recall drawn as a bar."""
    per_class = metrics["per_class"]
    avg = ("macro avg", "weighted avg")
    names = [k for k in per_class if k not in avg]
    worst = min(names, key=lambda n: per_class[n]["f1"]) if names else None
    head = ("<thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>support</th><th>recall</th></tr></thead>")

    def row(name: str, r: dict[str, Any], cls: str = "", bar: bool = True) -> str:
        width = f'<span style="width:{100 * r["recall"]:.1f}%"></span>' if bar else ""
        return (f'<tr class="{cls}"><td>{_e(name)}</td><td>{r["precision"]:.4f}</td>'
                f'<td>{r["recall"]:.4f}</td><td>{r["f1"]:.4f}</td><td>{int(r["support"]):,}</td>'
                f'<td class="bar">{width}</td></tr>')

    body = [row(n, per_class[n], "worst" if n == worst else "") for n in names]
    n = int(metrics.get("n", per_class.get("macro avg", {}).get("support", 0)))
    body.append(f'<tr class="sep"><td>accuracy</td><td></td><td></td>'
                f'<td>{metrics["accuracy"]:.4f}</td><td>{n:,}</td><td></td></tr>')
    body += [row(k, per_class[k], bar=False) for k in avg if k in per_class]
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _confused_table(metrics: dict[str, Any]) -> str:
    support = {k: v["support"] for k, v in metrics["per_class"].items()}
    rows = "".join(
        f"<tr><td>{_e(t)}</td><td>{_e(p)}</td><td>{int(c):,}</td>"
        f"<td>{100 * c / max(1, support.get(t, 0)):.1f}%</td></tr>"
        for t, p, c in metrics.get("most_confused", []))
    if not rows:
        return '<p class="note">No mistakes: nothing is confused.</p>'
    return ("<table><thead><tr><th>true class</th><th>predicted as</th><th>count</th>"
            f"<th>of true class</th></tr></thead><tbody>{rows}</tbody></table>")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _kpis(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="kpis">' + "".join(
        f'<div class="kpi"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
        for k, v in items) + "</div>"


# --------------------------------------------------------------------------- the report


class _Figures:
    """Saves each figure under ``plots/`` and hands back its data URI."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: list[Path] = []

    def add(self, name: str, fig: Figure) -> str:
        png = plots.fig_to_png_bytes(fig)
        path = self.folder / f"{name}.png"
        atomic_write(path, lambda f: f.write(png))
        self.written.append(path)
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _before_after(figs: _Figures, metrics: dict[str, Any]) -> str:
    """Reliability diagrams before and after the run's temperature (fmnist.calibration),
    and the share of test images its out-of-distribution threshold rejects; "" if none."""
    cal = metrics.get("calibration") or {}
    if "reliability_before" not in cal:
        return ""
    parts = []
    for when in ("before", "after"):
        uri = figs.add(f"reliability_{when}", plots.reliability_diagram(
            cal[f"reliability_{when}"], cal[when]["ece"]))
        parts.append(_img(uri, f"reliability diagram {when} calibration",
                          f"{when} the temperature: ECE {cal[when]['ece']:.2%}, "
                          f"NLL {cal[when]['nll']:.3f}, Brier {cal[when]['brier']:.3f}"))
    ood = metrics.get("ood") or {}
    note = (f" The out-of-distribution threshold ({_e(ood['method'])}) rejects "
            f"{ood['rejected']:.1%} of these test images." if ood else "")
    return (f'<p class="how">Temperature {cal["temperature"]:.3f}, fitted on '
            f'{cal.get("size", "?")} held-out images ({_e(cal.get("split", "?"))}); it '
            f"changes no prediction, only how sure each one says it is.{note}</p>"
            + "".join(parts))


def write_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    offline: bool = False,
    dataset: Any = None,
) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``) and its figures under
    ``RUN/plots/``; return the report's path."""
    t_start = time.perf_counter()
    run = load_run(run_dir, data_dir=data_dir, device=device, offline=offline,
                   dataset=dataset)
    config, recipe, classes = run.config, run.recipe, run.classes
    history = read_history(run.dir)
    test = run.split("test")
    try:
        val = run.split("val")
    except FmnistError:
        val = None
    train = run.split("train")

    # predictions once; metrics from metrics.json when present, else computed and written
    metrics_path = run.dir / metrics_filename("test")
    t0 = time.perf_counter()
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        probs = run.predict(test.images)
        single_view = bool(metrics.get("tta"))
    else:
        probs = run.predict(test.images, tta=recipe.tta)
        metrics = {"split": "test", **metrics_from_probs(
            probs, test.labels, classes, seconds=time.perf_counter() - t0, tta=recipe.tta,
            bf16=run.bf16, device=run.device)}
        atomic_write_json(metrics_path, metrics)
        single_view = False
    preds = probs.argmax(axis=1)
    labels, images = test.labels, test.images

    figs = _Figures(run.dir / "plots")
    sections: list[_Section] = []
    view_note = (' <span class="note">Image-level figures use single-view predictions; '
                 "the metrics used test-time augmentation.</span>") if single_view else ""

    # --- training
    if history:
        uri = figs.add("training_curves", plots.training_curves(history))
        how = ("Accuracy and loss per epoch on the training data and, when the run held out "
               "a validation split, on it. A validation curve that turns up while training "
               "loss keeps falling is overfitting; the dashed line marks the best "
               "validation epoch.")
        body = _img(uri, "training curves")
    else:
        how, body = "This run has no history.csv.", ""
    sections.append(_Section("curves", "Training curves", f'<p class="how">{how}</p>{body}'))

    # --- metrics
    headline = (f"loss {metrics['loss']:.4f} · top-2 accuracy {metrics['top2_accuracy']:.2%} "
                f"· ECE {metrics['ece']:.2%} · {metrics.get('n', len(labels)):,} test images"
                + (" · with TTA" if metrics.get("tta") else ""))
    sections.append(_Section("metrics", "Classification report", (
        '<p class="how">Precision: of the images predicted as a class, the share that '
        "were right. Recall: of the images of a class, the share found (the bar). F1 is "
        "their harmonic mean; the weakest class is in red. Support is the number of test "
        f'images.</p><p class="note">{_e(headline)}</p>' + _report_table(metrics))))

    # --- data
    split_labels = {"train": train.labels}
    if val is not None:
        split_labels["validation"] = val.labels
    split_labels["test"] = labels
    grid = figs.add("samples", plots.sample_grid(train.images, train.labels, classes, n=25,
                                                 seed=recipe.seed, title="Training images"))
    dist = figs.add("class_distribution", plots.class_distribution(split_labels, classes))
    sections.append(_Section("data", "The data", (
        f'<p class="how">A random sample of training images with their labels, and how many '
        f"images of each class each split holds ({_e(run.dataset.name)} from "
        f"<code>{_e(run.dataset.source)}</code>). Balanced bars mean accuracy is a fair "
        'summary.</p><div class="figs">' + _img(grid, "sample images")
        + _img(dist, "class distribution") + "</div>")))

    # --- confusion
    cm = np.asarray(metrics["confusion_matrix"])
    cm_counts = figs.add("confusion_matrix", plots.confusion_matrix_plot(cm, classes))
    cm_norm = figs.add("confusion_matrix_normalized",
                       plots.confusion_matrix_plot(cm, classes, normalize=True))
    sections.append(_Section("confusion", "Confusion matrix", (
        '<p class="how">Rows are the true classes, columns the predictions: the diagonal '
        "holds the correct answers, everything else is a mistake. The normalized matrix "
        "divides each row by its total, so its diagonal is the recall of each class and "
        'an off-diagonal cell is the share of a class mistaken for another.</p>'
        '<div class="figs">' + _img(cm_counts, "confusion matrix, counts")
        + _img(cm_norm, "confusion matrix, row-normalized") + "</div>")))

    # --- predictions and mistakes
    pick = _gallery_indices(labels, preds, 10, recipe.seed)
    gallery = figs.add("predictions", plots.prediction_gallery(
        images[pick], probs[pick], labels[pick], classes, n=10, cols=2))
    sections.append(_Section("predictions", "Predictions", (
        '<p class="how">Ten random test images, three of them chosen among the '
        "mistakes, each with the probability the model gave every class. The caption is "
        "the prediction and its probability, the true class in brackets; green when right, "
        f"red when wrong.{view_note}</p>" + _img(gallery, "prediction gallery"))))
    losses = figs.add("top_losses", plots.top_losses(images, probs, labels, classes, k=16))
    sections.append(_Section("top-losses", "Top losses", (
        '<p class="how">The sixteen mistakes the model was most sure of (the largest loss '
        "on the true class). Some are ambiguous or mislabeled images; repeated patterns "
        "point at what the model has not learned.</p>" + _img(losses, "top losses"))))
    pairs = metrics.get("most_confused", [])
    pairs_uri = figs.add("confused_pairs", confused_pairs_plot(
        images, probs, labels, classes, pairs, per_pair=8))
    sections.append(_Section("confused-pairs", "Most confused pairs", (
        '<p class="how">The class pairs mixed up most often, and for each the mistakes '
        "made with the most confidence (p is the probability given to the wrong class)."
        f"</p>{_confused_table(metrics)}" + _img(pairs_uri, "most confused pairs"))))

    # --- calibration
    rel = figs.add("reliability", plots.reliability_diagram(metrics["reliability"],
                                                            metrics["ece"]))
    sections.append(_Section("calibration", "Calibration", (
        '<p class="how">When the model says 90%, is it right 90% of the time? Test images '
        "are binned by their top probability; bars below the diagonal mean over-confidence, "
        "above it under-confidence. ECE is the average gap weighted by the bin sizes "
        f"(lower is better): here {metrics['ece']:.2%}.</p>"
        + _img(rel, "reliability diagram") + _before_after(figs, metrics))))

    # --- interpretation
    try:
        cams = [figs.add(f"gradcam_{i + 1}", fig) for i, fig in
                enumerate(_gradcam_figures(run, images, labels, preds))]
        conv = first_conv(run.model)
        filt = figs.add("filters", plots.filters_plot(conv.weight))
        x0 = normalize_batch(torch.from_numpy(images[:1]), run.meta.mean, run.meta.std)
        maps = feature_maps(run.model, x0[0])
        fmap = figs.add("feature_maps", plots.feature_maps_plot(images[0], maps))
    except FmnistError as e:  # a model without the conv layers these need
        sections.append(_Section("gradcam", "Where the model looks",
                                 f'<p class="note">Not available for this model: {_e(e)}</p>'))
    else:
        sections.append(_Section("gradcam", "Where the model looks (Grad-CAM)", (
            '<p class="how">Grad-CAM colours the pixels that raised the score of the '
            "predicted class, through the last convolution: red matters most, blue not at "
            "all. Three test images per true class; the caption is the prediction, red when "
            "wrong. Heat on the garment's outline and telling parts (collars, heels, "
            "straps) is a good sign; heat on the background is not.</p>"
            + "".join(_img(c, "Grad-CAM overlays") for c in cams))))
        sections.append(_Section("filters", "Filters and feature maps", (
            '<p class="how">The first convolution\'s kernels (red positive, blue negative '
            "weights): trained filters look like edge and blob detectors. Below, what each "
            "of them outputs for one test image after the activation: bright where its "
            "pattern occurs.</p>" + _img(filt, "first-layer filters")
            + _img(fmap, "feature maps of one image"))))

    # --- setup
    recipe_items = {k: v for k, v in config.get("recipe", {}).items()
                    if k not in ("description", "reported")}
    env = dict(config.get("environment", {}))
    env["precision"] = config.get("precision")
    dataset_info = {k: v for k, v in (config.get("dataset") or {}).items() if k != "classes"}
    sections.append(_Section("setup", "Recipe and environment", (
        '<p class="how">Everything needed to reproduce the run, from '
        "<code>config.json</code>.</p>"
        f'<div class="cols"><div><h3>Recipe</h3>{_kv_table(recipe_items)}</div>'
        f"<div><h3>Environment</h3>{_kv_table(env)}<h3>Data</h3>"
        f"{_kv_table(dataset_info)}</div></div>")))

    # --- header
    train_seconds = sum(float(r.get("seconds") or 0) for r in history) if history else None
    params = config.get("params")
    kpis = _kpis([
        ("test accuracy", f"{metrics['accuracy']:.2%}"),
        ("test loss", f"{metrics['loss']:.4f}"),
        ("ECE", f"{metrics['ece']:.2%}"),
        ("parameters", f"{params:,}" if isinstance(params, int) else "–"),
        ("epochs", f"{len(history)} / {recipe.epochs}"),
        ("training time", _duration(train_seconds)),
    ])
    desc = recipe.description or ""
    sub = " · ".join(filter(None, [
        f"recipe {recipe.name}", f"model {recipe.model}", run.dataset.name,
        str(config.get("created", "")).replace("T", " ")[:19],
        f"status {config.get('status', '?')}",
    ]))
    toc = '<nav class="toc">' + "".join(
        f'<a href="#{s.id}">{_e(s.title)}</a>' for s in sections) + "</nav>"
    header = (f'<header class="card" id="summary"><h1>{_e(run.dir.name)}</h1>'
              f'<div class="sub">{_e(sub)}</div>'
              + (f'<div class="sub">{_e(desc)}</div>' if desc else "") + kpis + "</header>")
    body = "".join(f'<section class="card" id="{s.id}"><h2>{_e(s.title)}</h2>{s.body}'
                   "</section>" for s in sections)
    made = datetime.now().strftime("%Y-%m-%d %H:%M")
    from . import __version__

    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(run.dir.name)} · fmnist report</title><style>{_CSS}</style></head>"
        f"<body><main>{header}{toc}{body}"
        f"<footer>fmnist {_e(__version__)} · report written {made} · "
        f"{len(figs.written)} figures in <code>{_e(figs.folder)}</code></footer>"
        "</main></body></html>\n"
    )
    path = Path(out) if out is not None else run.dir / "report.html"
    data = doc.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    log.info("report written to %s (%.1f s)", path, time.perf_counter() - t_start)
    return path
