"""Screen photo mixes cheaply: fine-tune a trained run for one epoch on part of Fashion-MNIST
plus the clothing photos (and raw-photo views), then score it with ``benchmarks/photos.py``.

    python benchmarks/photo_views_screen.py --init RUN --out runs/f2 --repeat 4 --views 1
    python benchmarks/photos.py --models RUN,runs/f2 --variants colour+grabcut

The README's "Photos changed before preprocessing" table: ``--init`` the shared ``fast`` run,
``--fmnist 12000``; f0: ``--repeat 0 --views 1 --view-repeat 4``, f1: ``--repeat 4``,
f2: ``--repeat 4 --views 1`` (``--seed 1`` for the second seed). Trains on clothing-dataset-small
``train/`` only; never on ``validation/`` or ``web-dev/``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from fmnist import photo_data
from fmnist.datasets import Dataset, Split, load_dataset
from fmnist.errors import FmnistError
from fmnist.training import train


def screen_data(n_fmnist: int, repeat: int, views: int, view_repeat: int) -> Dataset:
    """``n_fmnist`` random Fashion-MNIST training images (seed 0) + photos x ``repeat`` +
    ``views`` views of each photo x ``view_repeat``; Fashion-MNIST's test set."""
    fm = load_dataset("fashion-mnist", offline=True)
    keep = np.random.default_rng(0).permutation(len(fm.train))[:n_fmnist]
    train_split = Split(fm.train.images[keep], fm.train.labels[keep])
    if repeat:
        train_split = photo_data.mix(train_split, photo_data.load_labelled_photos(offline=True),
                                     repeat)
    if views:
        extra = photo_data.load_labelled_photos(views=views, offline=True)
        train_split = photo_data.mix(train_split, extra, view_repeat)
    return Dataset(photo_data.MIXED_NAME, fm.classes, train_split, fm.test, fm.source,
                   "idx+photos", fm.checksums)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True, help="the trained run to start from")
    p.add_argument("--out", required=True)
    p.add_argument("--fmnist", type=int, default=12000, help="Fashion-MNIST images kept")
    p.add_argument("--repeat", type=int, default=4, help="times each photo appears")
    p.add_argument("--views", type=int, default=0, help="raw-photo views per photo")
    p.add_argument("--view-repeat", type=int, default=1, help="times each view appears")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        ds = screen_data(args.fmnist, args.repeat, args.views, args.view_repeat)
        train("photo", out=args.out, data=ds, calibrate=False, init=args.init, epochs=1,
              lr=0.05, warmup_epochs=0.3, seed=args.seed)
    except FmnistError as exc:
        print(f"photo_views_screen.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
