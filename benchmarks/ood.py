"""Does the model know when an input is none of its classes? AUROC and FPR at 95% TPR.

Fashion-MNIST test images (in distribution) against sets built here: scikit-learn's 1,797
handwritten 8x8 digits upscaled to 28x28 light-on-black, letters and symbols rendered with
PIL's font, three kinds of noise, and -- with ``--photos DIR`` -- clothing-dataset-small
``validation/`` photos labelled -1 (hats, shorts, skirts...) against its labelled ones,
both through :func:`fmnist.preprocess.preprocess` (validation photos are measured only).

Six scores from the same forward pass are compared (higher = less like the training
data): ``msp`` (1 - calibrated max probability), ``energy`` (-logsumexp of the logits),
``mahalanobis`` (nearest class mean, shared covariance), ``knn`` (cosine distance to the
10th nearest of 20,000 training images), ``relative`` (relative Mahalanobis +
normalized-feature Mahalanobis, the stored score's Fashion-MNIST branch) and ``stored``, the
model's own :class:`fmnist.ood.OodScorer` (``gated`` when the run was fitted with the
clothing photos: :mod:`fmnist.ood_photos`). The stored threshold's rejection rates are
reported beside them (for ``photos-minus1`` the "in" side is the labelled validation
photos), as is the cost of the score::

    python benchmarks/ood.py runs/fast --photos ../shared/photos --threads 1

writes ``benchmarks/results/ood-cpu.json``; the ``photo`` model (README)::

    fmnist train --recipe photo --out runs/photo
    python benchmarks/ood.py runs/photo --photos ../shared/photos --threads 1 --stem ood-photo

(``--refit`` fits the stored scorer again on the run's data first, with the photos, for a
run that ``fmnist calibrate`` cannot refit.)
"""

from __future__ import annotations

import argparse
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
from fmnist.ood import OodScorer, auroc, fpr_at_tpr, kth_nearest

log = logging.getLogger("fmnist")
KNN_K = 10
KNN_BANK = 20000  # training images in the knn score's bank


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
    """(labelled, labelled -1) validation photos of clothing-dataset-small, preprocessed
    (through the photo cache of :mod:`fmnist.photo_data`)."""
    from fmnist.photo_data import load_photo_split

    val = load_photo_split("test", root)
    return val.images[val.labels >= 0], val.images[val.labels < 0]


# --------------------------------------------------------------------------- scores


def kth_distance(f: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) cosine distance of each unit row of ``f`` to its k-th nearest in ``bank``."""
    return torch.cat([kth_nearest(f[i:i + 1024], bank, k) for i in range(0, len(f), 1024)])


def all_scores(model, meta, images: np.ndarray, bank: torch.Tensor, device) -> dict:
    """Every method's (N,) score for ``images`` from one forward pass."""
    logits, feats = view_logits_and_features(model, images, mean=meta.mean, std=meta.std,
                                             device=device)
    z = logits[0]
    probs = torch.softmax(z / meta.temperature, 1)
    f = torch.nn.functional.normalize(feats, dim=1)
    as_method = {m: OodScorer.from_meta({**meta.ood, "method": m})
                 for m in ("mahalanobis", "relative")}
    return {"msp": (1 - probs.max(1).values).numpy(),
            "energy": (-torch.logsumexp(z, 1)).numpy(),
            "mahalanobis": as_method["mahalanobis"](feats, z).numpy(),
            "knn": kth_distance(f, bank, KNN_K).numpy(),
            "relative": as_method["relative"](feats, z).numpy(),
            "stored": OodScorer.from_meta(meta.ood)(feats, z).numpy()}


def fmnist_bank(model, meta, ds, device) -> torch.Tensor:
    """Unit features of 20,000 training images (the knn bank)."""
    _, keep = stratified_split(ds.train.labels, KNN_BANK / len(ds.train), 0)
    _, f = view_logits_and_features(model, ds.train.images[keep], mean=meta.mean,
                                    std=meta.std, device=device)
    return torch.nn.functional.normalize(f, dim=1)


def refit(model, meta, ds, device):
    """``meta`` with the scorer fitted as training fits it (2,000 held-out training images,
    the clothing photos when found), for runs ``fmnist calibrate`` cannot refit (a
    ``photo_views_screen.py`` run: its training images may include those 2,000)."""
    from fmnist.calibration import calibration_split, fit_calibration

    train, cal, _ = calibration_split(ds.train, None, 0)
    return fit_calibration(model, meta, calibration=cal, train=train, tta=False,
                           device=device)[0]


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


def table_of(pairs: dict, threshold: float) -> dict:
    """Per in/out pair: AUROC and FPR@95 of every score, the stored threshold's rejections."""
    table = {}
    for name, (a, b) in pairs.items():
        table[name] = {
            "n_in": len(a["msp"]), "n_out": len(b["msp"]),
            **{f"auroc_{m}": round(auroc(a[m], b[m]), 4) for m in a},
            **{f"fpr95_{m}": round(fpr_at_tpr(a[m], b[m]), 4) for m in a},
            "stored_threshold_rejects_in": round(float((a["stored"] > threshold).mean()), 4),
            "stored_threshold_rejects_out": round(float((b["stored"] > threshold).mean()), 4),
        }
        log.info("%-14s %s", name, {k: v for k, v in table[name].items() if "auroc" in k})
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder (calibrated: see `fmnist calibrate`)")
    ap.add_argument("--photos", type=Path, help="folder holding clothing-dataset-small/")
    ap.add_argument("--data-dir", help="Fashion-MNIST folder (default: the usual search)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's); "
                    "1 gives steadier timings on a busy machine")
    ap.add_argument("--refit", action="store_true",
                    help="refit the scorer here first (runs `fmnist calibrate` cannot redo)")
    ap.add_argument("--stem", default="ood", help="results file stem (default: ood)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_model(args.run, device)
    ds = load_dataset("fashion-mnist" if args.refit else meta.dataset, args.data_dir)
    if args.refit:
        meta = refit(model, meta, ds, device)
    if not meta.ood:
        raise SystemExit(f"{args.run}: no OOD scorer in model.pt; run `fmnist calibrate`.")
    bank = fmnist_bank(model, meta, ds, device)

    sets = {"digits": digits(), "glyphs": glyphs(), **noise()}
    if args.photos:
        sets["photos-minus1"] = photos(args.photos)
    inside = all_scores(model, meta, ds.test.images, bank, device)
    pairs = {name: (all_scores(model, meta, imgs[0], bank, device), all_scores(
        model, meta, imgs[1], bank, device)) if isinstance(imgs, tuple)
             else (inside, all_scores(model, meta, imgs, bank, device))
             for name, imgs in sets.items()}
    t = meta.ood["threshold"]
    payload = {"run": str(args.run), "recipe": meta.recipe, "threads": torch.get_num_threads(),
               "temperature": meta.temperature,
               "ood_method": meta.ood["method"], "threshold": t, "knn_k": KNN_K,
               "ood_fit_photos": len(meta.ood.get("bank_in", ())) + len(
                   meta.ood.get("bank_out", ())),
               "sets": table_of(pairs, t),
               "cost": score_cost(model, meta, ds.test.images[:2048], device)}
    path = write_result(args.stem, device, payload)
    log.info("cost %s\nwrote %s", payload["cost"], path)

if __name__ == "__main__":
    main()
