"""Does the model know when an input is none of its classes? AUROC and FPR at 95% TPR.

Fashion-MNIST test images (in distribution) against sets built here: scikit-learn's 1,797
handwritten 8x8 digits upscaled to 28x28 light-on-black, letters and symbols rendered with
PIL's font, three kinds of noise, and -- with ``--photos DIR`` -- clothing-dataset-small
``validation/`` photos labelled -1 (hats, shorts, skirts...) against its labelled ones,
both through :func:`fmnist.preprocess.preprocess` (validation photos are measured only).

Five scores from the same forward pass are compared (higher = less like the training
data): ``msp`` (1 - calibrated max probability), ``energy`` (-logsumexp of the logits),
``mahalanobis`` (nearest class mean, shared covariance), ``knn`` (cosine distance to the
10th nearest of 20,000 training images) and ``stored``, the model's own
:class:`fmnist.ood.OodScorer` (relative Mahalanobis + normalized-feature Mahalanobis). The stored
threshold's rejection rates are reported beside them, as is the cost of the score::

    python benchmarks/ood.py runs/fast --photos ../shared/photos --threads 1

writes ``benchmarks/results/ood-cpu.json``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import string
import time
from pathlib import Path

import numpy as np
import torch
from _common import select_device, write_result
from PIL import Image, ImageDraw, ImageFont

from fmnist.calibration import view_logits_and_features
from fmnist.checkpoints import load_model
from fmnist.datasets import load_dataset, stratified_split
from fmnist.ood import FIT_IMAGES, OodScorer, auroc, fpr_at_tpr

log = logging.getLogger("fmnist")
KNN_K = 10


# --------------------------------------------------------------------------- OOD sets


def digits() -> np.ndarray:
    """scikit-learn's 1,797 8x8 digits (0..16) -> 20x20 bilinear, centred on 28x28."""
    from sklearn.datasets import load_digits

    small = (load_digits().images * (255 / 16)).astype(np.uint8)
    out = np.zeros((len(small), 28, 28), np.uint8)
    for i, d in enumerate(small):
        out[i, 4:24, 4:24] = np.asarray(Image.fromarray(d).resize((20, 20), Image.BILINEAR))
    return out


def glyphs(seed: int = 0) -> np.ndarray:
    """Letters, digits-as-text and symbols in PIL's default font, several sizes/offsets."""
    rng = np.random.default_rng(seed)
    chars = string.ascii_letters + "!?@#$%&*+=<>{}[]/\\~^"
    out = []
    for size in (14, 18, 22):
        font = ImageFont.load_default(size=size)
        for ch in chars:
            img = Image.new("L", (28, 28), 0)
            dx, dy = rng.integers(-3, 4, 2)
            ImageDraw.Draw(img).text((14 + dx, 14 + dy), ch, fill=255, font=font, anchor="mm")
            out.append(np.asarray(img))
    return np.stack(out)


def noise(n: int = 600, seed: int = 0) -> dict[str, np.ndarray]:
    """Uniform pixel noise, blurred blobs and random rectangles (screenshot-like blocks)."""
    rng = np.random.default_rng(seed)
    uniform = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    coarse = rng.integers(0, 256, (n, 7, 7)).astype(np.uint8)
    blobs = np.stack([np.asarray(Image.fromarray(c).resize((28, 28), Image.BICUBIC))
                      for c in coarse])
    rects = np.zeros((n, 28, 28), np.uint8)
    for img in rects:
        for _ in range(rng.integers(2, 6)):
            y, x = rng.integers(0, 24, 2)
            h, w = rng.integers(2, 14, 2)
            img[y:y + h, x:x + w] = rng.integers(60, 256)
    return {"noise-uniform": uniform, "noise-blobs": blobs, "blocks": rects}


def photos(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, labelled -1) validation photos of clothing-dataset-small, preprocessed."""
    from fmnist.preprocess import preprocess

    base = root / "clothing-dataset-small"
    rows = list(csv.DictReader(open(base / "fmnist-labels.csv", encoding="utf-8")))
    rows = [r for r in rows if r["path"].startswith("validation/")]
    images = {r["path"]: preprocess(base / r["path"]).image for r in rows}
    known = np.stack([images[r["path"]] for r in rows if int(r["label"]) >= 0])
    none = np.stack([images[r["path"]] for r in rows if int(r["label"]) < 0])
    return known, none


# --------------------------------------------------------------------------- scores


def all_scores(model, meta, images: np.ndarray, bank: torch.Tensor, device) -> dict:
    """Every method's (N,) score for ``images`` from one forward pass."""
    logits, feats = view_logits_and_features(model, images, mean=meta.mean, std=meta.std,
                                             device=device)
    z = logits[0]
    probs = torch.softmax(z / meta.temperature, 1)
    f = torch.nn.functional.normalize(feats, dim=1)
    knn = torch.cat([(1 - f[i:i + 1024] @ bank.T).topk(KNN_K, 1, largest=False).values[:, -1]
                     for i in range(0, len(f), 1024)])
    plain = OodScorer.from_meta({**meta.ood, "method": "mahalanobis"})
    return {"msp": (1 - probs.max(1).values).numpy(),
            "energy": (-torch.logsumexp(z, 1)).numpy(),
            "mahalanobis": plain(feats, z).numpy(),
            "knn": knn.numpy(),
            "stored": OodScorer.from_meta(meta.ood)(feats, z).numpy()}


def score_cost(model, meta, images: np.ndarray, device, repeats: int = 5) -> dict:
    """ms per image of the torch forward with and without the stored score (batch 256,
    best of ``repeats``, the two interleaved so machine load hits both alike), and of the
    scorer alone on (256, D) features."""
    from fmnist.evaluation import predict_scored

    scorer = OodScorer.from_meta(meta.ood)
    kw = {"mean": meta.mean, "std": meta.std, "device": device, "batch_size": 256}
    best = {"without_score": float("inf"), "with_score": float("inf")}
    for _ in range(repeats):
        for name, s in (("without_score", None), ("with_score", scorer)):
            t0 = time.perf_counter()
            predict_scored(model, images, scorer=s, **kw)
            best[name] = min(best[name], time.perf_counter() - t0)
    feats = torch.randn(256, scorer.whiten.shape[0], device=device)
    t0 = time.perf_counter()
    for _ in range(20):
        scorer.to(device)(feats, None)
    alone = (time.perf_counter() - t0) / (20 * 256)
    return {**{f"ms_per_image_{k}": round(1000 * v / len(images), 4) for k, v in best.items()},
            "ms_per_image_scorer_alone": round(1000 * alone, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder (calibrated: see `fmnist calibrate`)")
    ap.add_argument("--photos", type=Path, help="folder holding clothing-dataset-small/")
    ap.add_argument("--data-dir", help="Fashion-MNIST folder (default: the usual search)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's); "
                    "1 gives steadier timings on a busy machine")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_model(args.run, device)
    if not meta.ood:
        raise SystemExit(f"{args.run}: no OOD scorer in model.pt; run `fmnist calibrate`.")
    ds = load_dataset(meta.dataset, args.data_dir)
    _, keep = stratified_split(ds.train.labels, FIT_IMAGES / len(ds.train), 0)
    _, bank = view_logits_and_features(model, ds.train.images[keep], mean=meta.mean,
                                       std=meta.std, device=device)
    bank = torch.nn.functional.normalize(bank, dim=1)

    sets = {"digits": digits(), "glyphs": glyphs(), **noise()}
    inside = all_scores(model, meta, ds.test.images, bank, device)
    pairs = {name: (inside, all_scores(model, meta, imgs, bank, device))
             for name, imgs in sets.items()}
    if args.photos:
        known, none = photos(args.photos)
        pairs["photos-minus1"] = (all_scores(model, meta, known, bank, device),
                                  all_scores(model, meta, none, bank, device))
        sets["photos-minus1"] = none
    t = meta.ood["threshold"]
    table = {}
    for name, (a, b) in pairs.items():
        table[name] = {
            "n_in": len(a["msp"]), "n_out": len(b["msp"]),
            **{f"auroc_{m}": round(auroc(a[m], b[m]), 4) for m in a},
            **{f"fpr95_{m}": round(fpr_at_tpr(a[m], b[m]), 4) for m in a},
            "stored_threshold_rejects_in": round(float((a["stored"] > t).mean()), 4),
            "stored_threshold_rejects_out": round(float((b["stored"] > t).mean()), 4),
        }
        log.info("%-14s %s", name, {k: v for k, v in table[name].items() if "auroc" in k})
    payload = {"run": str(args.run), "recipe": meta.recipe, "threads": torch.get_num_threads(),
               "temperature": meta.temperature,
               "ood_method": meta.ood["method"], "threshold": t, "knn_k": KNN_K,
               "sets": table, "cost": score_cost(model, meta, ds.test.images[:2048], device)}
    path = write_result("ood", device, payload)
    log.info("cost %s\nwrote %s", payload["cost"], path)


if __name__ == "__main__":
    main()
