"""``fmnist similar``: the training images most similar to your images."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import FmnistError
from .evaluation import RUN_HELP
from .options import add_out, add_shared


def register_similar(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "similar", help="the training images most similar to your images",
        description="Show the k training images nearest to each image in the model's "
        "penultimate-layer features (cosine similarity). The index of the training images "
        "is built on first use and cached in RUN/similar-index.npz; it is rebuilt when "
        "RUN/model.pt changes.")
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--k", type=int, default=8, help="neighbours per image (default 8)")
    add_out(p, "also write a PNG strip: each image, then its neighbours (never replaced)")
    add_shared(p, "--json", "--data-dir", "--offline", "--device", device="cpu")
    p.set_defaults(handler=cmd_similar)


def cmd_similar(args: argparse.Namespace) -> int:
    from ..similar import SimilarFinder

    if args.k < 1:
        raise FmnistError(f"--k must be at least 1; got {args.k}.")
    if args.out and Path(args.out).exists():
        raise FmnistError(f"--out {args.out} already exists; pass a new file name (it is "
                          "never overwritten).")
    finder = SimilarFinder.from_run(args.run, data_dir=args.data_dir, device=args.device,
                                    offline=args.offline)
    images = finder.predictor.preprocess(args.images)  # one bad file: ImageError, exit 2
    start = time.perf_counter()
    results = finder.search(images, k=args.k)
    ms = 1000 * (time.perf_counter() - start) / len(images)
    if args.json:
        print(json.dumps([{"file": f, "similar": [n.to_dict() for n in row]}
                          for f, row in zip(args.images, results, strict=True)], indent=2))
    else:
        for f, row in zip(args.images, results, strict=True):
            print(f"{f}: " + ", ".join(f"{n.class_name} ({n.score:.2f}) #{n.index}"
                                        for n in row))
    print(f"fmnist: index of {len(finder.index):,} training images (built in "
          f"{finder.index.build_seconds:.1f} s); {ms:.1f} ms per query", file=sys.stderr)
    if args.out:
        finder.strip(images, results, names=[Path(f).name for f in args.images],
                     path=args.out)
        print(f"fmnist: wrote {args.out}", file=sys.stderr)
    return 0
