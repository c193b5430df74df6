"""Regenerate the README's result tables from ``benchmarks/results/*.json``.

    python benchmarks/readme_tables.py          # rewrite README.md in place
    python benchmarks/readme_tables.py --check  # exit 1 if the README is out of date

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers; a
table whose result file is missing is left as it is.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def _machine(doc: dict) -> str:
    m = doc["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['threads']} threads"
    return f"_{where}, torch {m['torch']}, `{doc['command']}` ({doc['created'][:10]})_"


def baselines(doc: dict) -> str:
    lines = ["| recipe | params | epochs | test acc | compared | tutorial | ours | Δ points "
             "| train time |", "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in doc["results"]:
        diff = "–" if r["difference_points"] is None else f"{r['difference_points']:+.2f}"
        lines.append(
            f"| `{r['recipe']}` | {r['params_keras']:,} | {r['epochs_run']}/{r['max_epochs']} "
            f"| {_pct(r['test_accuracy'], 2)} | {r['compared'] or '–'} "
            f"| {_pct(r['reported_accuracy'])} | {_pct(r['ours_compared'], 2)} "
            f"| {diff} "
            f"| {r['train_seconds']:.0f} s |")
    return "\n".join(lines) + "\n\n" + _machine(doc)


def time_to_accuracy(doc: dict) -> str:
    ref = doc["summary"].get("_reference")
    lines = ["| recipe | seeds | final test acc, median (min–max) | training time | to 91% "
             f"| to 93% | to 94% | speedup vs {ref['recipe'] if ref else 'reference'} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in doc["summary"].items():
        if name.startswith("_"):
            continue

        def t(th: str, s: dict = s) -> str:
            v = s["time_to"][th]
            if v["median"] is None:
                return f"not reached ({v['reached']})"
            return f"{v['median']:.0f} s"

        speed = s.get("speedup_vs_reference")
        lines.append(
            f"| `{name}` | {s['seeds']} | {_pct(s['final_accuracy_median'], 2)} "
            f"({_pct(s['final_accuracy_min'], 2)}–{_pct(s['final_accuracy_max'], 2)}) "
            f"| {s['train_seconds_median']:.0f} s | {t('0.91')} | {t('0.93')} | {t('0.94')} "
            f"| {'–' if speed is None else f'{speed:.1f}x'} |")
    note = (f"\n\nSpeedup: {ref['recipe']}'s median training time ({ref['train_seconds']:.0f} s) "
            f"divided by the time each recipe needs to reach its median final accuracy "
            f"({_pct(ref['accuracy'], 2)}).") if ref else ""
    return "\n".join(lines) + note + "\n\n" + _machine(doc)


def inference(doc: dict) -> str:
    lines = ["| backend | latency p50 (batch 1) | p99 | images/s, batch 1 | images/s, batch 256 "
             "| accuracy (1,000 test images) |", "|---|---:|---:|---:|---:|---:|"]
    for r in doc.get("results", []):
        lines.append(
            f"| {r['name']} | {r['latency_p50_ms']:.2f} ms | {r['latency_p99_ms']:.2f} ms "
            f"| {r['images_per_s_batch1']:,.0f} | {r['images_per_s_batch256']:,.0f} "
            f"| {_pct(r.get('accuracy_1000'))} |")
    return "\n".join(lines) + "\n\n" + _machine(doc)


def load(doc: dict) -> str:
    lat = doc["latency_ms"]
    lines = ["| requests | concurrency | errors | requests/s | p50 | p99 |",
             "|---:|---:|---:|---:|---:|---:|",
             f"| {doc['requests_done']} | {doc['concurrency']} | {doc['errors']} "
             f"| {doc['requests_per_s']:.1f} | {lat['p50']:.1f} ms | {lat['p99']:.1f} ms |"]
    return "\n".join(lines) + "\n\n" + _machine(doc)


def _share(r: dict) -> str:
    return f"{r['correct']}/{r['total']}" if r["total"] else "–"


def photos(doc: dict) -> str:
    """Real photos (``photos-real-cpu.json``): one row per model and preprocessing variant,
    the synthetic figure beside the baseline, then per class for the first model."""
    synthetic = {}
    synth_path = RESULTS / "photos-synthetic-cpu.json"
    if synth_path.is_file():
        synthetic = {r["model"]: r["photos_fmnist_preprocess"]
                     for r in json.loads(synth_path.read_text())["results"]}
    n = doc["photos"]
    lines = [f"| model | preprocessing | validation/ ({n.get('validation', 0)}) "
             f"| web-dev/ ({n.get('web-dev', 0)}) | web-dev easy | web-dev hard "
             "| ms/image (val / web) | synthetic (1,000) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for variant in doc["variants"]:
        spec = variant["variant"]
        label = f"`{spec}`" + (" (default)" if spec == doc.get("default_variant") else "")
        ms = " / ".join(f"{v:.0f}" for v in variant["ms_per_image"].values())
        for model, sets in variant["results"].items():
            val, web = sets.get("validation"), sets.get("web-dev")
            diff = web["per_difficulty"] if web else {}
            synth = synthetic.get(model) if variant is doc["variants"][0] else None
            lines.append(
                f"| `{Path(model).name}` | {label} | **{_pct(val and val['accuracy'])}** "
                f"| **{_pct(web and web['accuracy'])}** "
                f"| {_share(diff['easy']) if 'easy' in diff else '–'} "
                f"| {_share(diff['hard']) if 'hard' in diff else '–'} | {ms} "
                f"| {_pct(synth)} |")
    return "\n".join(lines) + "\n\n" + _photos_per_class(doc) + "\n\n" + _machine(doc)


def _photos_per_class(doc: dict) -> str:
    """Correct/total per class for the first model: the first variant and the default."""
    shown = [doc["variants"][0]] + [v for v in doc["variants"][1:]
                                     if v["variant"] == doc.get("default_variant")]
    model = next(iter(shown[0]["results"]))
    sets = list(shown[0]["results"][model])
    head = " | ".join(f"{s} `{v['variant']}`" for s in sets for v in shown)
    lines = [f"| `{Path(model).name}` per class | {head} |",
             "|---|" + "---:|" * (len(sets) * len(shown))]
    for cls in doc["classes"]:
        cells = []
        for s in sets:
            for v in shown:
                r = v["results"][model][s]["per_class"].get(cls)
                cells.append(_share(r) if r else "–")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_step(doc: dict) -> str:
    groups = doc["groups"]  # the benchmark's column order
    lines = ["| model | MFLOPs/image | images/s | " + " | ".join(groups) + " |",
             "|---|---:|---:|" + "---:|" * len(groups)]
    for label, r in doc["results"].items():
        shares = " | ".join(f"{100 * r['time_share'].get(g, 0.0):.0f}%" for g in groups)
        lines.append(f"| {label} | {r['mflops_per_image']:.1f} | {r['images_per_second']:,} "
                     f"| {shares} |")
    return "\n".join(lines) + "\n\n" + _machine(doc)


def ood(doc: dict) -> str:
    methods = ("msp", "energy", "mahalanobis", "knn", "relative", "stored")
    methods = tuple(m for m in methods if f"auroc_{m}" in next(iter(doc["sets"].values())))
    stored = f"stored ({doc['ood_method']})" if doc.get("ood_method") else "stored"
    names = [stored if m == "stored" else m for m in methods]
    lines = ["| in vs out | images in / out | " + " | ".join(f"AUROC {m}" for m in names)
             + " | FPR@95 stored | rejected at the stored threshold: in / out |",
             "|---|---:|" + "---:|" * len(methods) + "---:|---:|"]
    for name, r in doc["sets"].items():
        pair = "labelled photos vs -1 photos" if name.startswith("photos") else (
            f"Fashion-MNIST test vs {name}")
        aucs = " | ".join(f"{r[f'auroc_{m}']:.3f}" for m in methods)
        lines.append(f"| {pair} | {r['n_in']:,} / {r['n_out']:,} | {aucs} "
                     f"| {_pct(r['fpr95_stored'])} | {_pct(r['stored_threshold_rejects_in'])} / "
                     f"{_pct(r['stored_threshold_rejects_out'])} |")
    cost = doc["cost"]
    return ("\n".join(lines) + f"\n\nScore cost (torch, batch 256): "
            f"{cost['ms_per_image_without_score']:.3f} ms/image without, "
            f"{cost['ms_per_image_with_score']:.3f} ms/image with it "
            f"(the scorer alone: {cost['ms_per_image_scorer_alone']:.4f} ms/image).\n\n"
            + _machine(doc))


def tta(doc: dict) -> str:
    """Accuracy of each test-time view set, then evaluation speed against a train step."""
    lines = ["| views averaged | test acc |", "|---|---:|"]
    lines += [f"| {name} | {_pct(acc, 2)} |" for name, acc in doc["accuracy"].items()]
    rates = doc["images_per_cpu_second"]
    lines += ["", "| images per CPU-second | " + " | ".join(rates) + " |",
              "|---|" + "---:|" * len(rates),
              "| " + doc["recipe"] + " | " + " | ".join(f"{v:,}" for v in rates.values()) + " |"]
    return "\n".join(lines) + "\n\n" + _machine(doc)


def inference_score(doc: dict) -> str:
    lines = ["| backend | images/s batch 256: with / without the score | ratio "
             "| latency p50 batch 1: with / without | ratio |", "|---|---:|---:|---:|---:|"]
    for r in doc["results"]:
        w, wo, q = r["with_score"], r["without_score"], r["ratio_with_over_without"]
        lines.append(f"| {r['name']} | {w['images_per_s_batch256']:,.0f} / "
                     f"{wo['images_per_s_batch256']:,.0f} | {q['images_per_s_batch256']:.2f} "
                     f"| {w['latency_p50_ms']:.3f} / {wo['latency_p50_ms']:.3f} ms "
                     f"| {q['latency_p50_ms']:.2f} |")
    return "\n".join(lines) + "\n\n" + _machine(doc)


def _kb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1000:.0f} KB"


def model_sizes(doc: dict) -> str:
    """Registered models at default options, then the trained runs measured."""
    lines = ["| model (default options) | params | MFLOPs/image | ONNX fp32 | ONNX int8 |",
             "|---|---:|---:|---:|---:|"]
    for r in doc["models"]:
        fixed = f" + {r['fixed_weights']:,} fixed" if r.get("fixed_weights") else ""
        lines.append(f"| `{r['model']}` | {r['params']:,}{fixed} | {r['mflops']:.1f} "
                     f"| {_kb(r['onnx_bytes'])} | {_kb(r['int8_bytes'])} |")
    lines += ["", "| trained run | params | MFLOPs | test acc (recipe) | fp32, one view "
              "| int8, one view | int8 file | int8 file without OOD score "
              "| its accuracy |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        lines.append(
            f"| `{r['recipe']}` ({r['model']}) | {r['params']:,} | {r['mflops']:.1f} "
            f"| {_pct(r['test_accuracy'], 2)} | {_pct(r.get('accuracy_torch'), 2)} "
            f"| {_pct(r.get('accuracy_onnx_int8'), 2)} | {_kb(r.get('int8_bytes'))} "
            f"| {_kb(r.get('probs_only_int8_bytes'))} "
            f"| {_pct(r.get('accuracy_probs_only_int8'), 2)} |")
    return "\n".join(lines) + "\n\n" + _machine(doc)


def ensemble(doc: dict) -> str:
    """Accuracy of ensembles of k runs against their total training time."""
    lines = [f"| `{doc['recipe']}` runs averaged | test accuracy | total training time "
             "| the members alone |", "|---:|---:|---:|---|"]
    for r in doc["results"]:
        alone = ", ".join(_pct(m["accuracy"], 2) for m in doc["members"][:r["k"]])
        lines.append(f"| {r['k']} | {_pct(r['accuracy'], 2)} | {r['train_seconds']:.0f} s "
                     f"| {alone} |")
    return "\n".join(lines) + "\n\n" + _machine(doc)


TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "tta": ("tta-cpu.json", tta),
    "ood": ("ood-cpu.json", ood),
    "ood-photo": ("ood-photo-cpu.json", ood),
    "inference-score": ("inference-score-cpu.json", inference_score),
    "baselines": ("baselines-cpu.json", baselines),
    "time-to-accuracy": ("time-to-accuracy-cpu.json", time_to_accuracy),
    "time-to-accuracy-keras": ("time-to-accuracy-keras-cpu.json", time_to_accuracy),
    "inference": ("inference-cpu.json", inference),
    "load": ("load-cpu.json", load),
    "photos": ("photos-real-cpu.json", photos),
    "train-step": ("train-step-cpu.json", train_step),
    "model-sizes": ("model-sizes-cpu.json", model_sizes),
    "ensemble-fast": ("ensemble-fast-cpu.json", ensemble),
    "ensemble-accurate": ("ensemble-accurate-cpu.json", ensemble),
}


def render(readme: str) -> str:
    for name, (file, fn) in TABLES.items():
        path = RESULTS / file
        if not path.is_file():
            continue
        table = fn(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(\n<!-- /table:{name} -->)", re.S)
        readme = pattern.sub(lambda m, t=table: m.group(1) + t + m.group(2), readme)
    return readme


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    readme_path = ROOT / "README.md"
    old = readme_path.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md tables are out of date: run python benchmarks/readme_tables.py")
            return 1
        return 0
    readme_path.write_text(new)
    print("README.md tables updated" if new != old else "README.md tables already current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
