"""Bad dataset inputs at the command line (table-driven; harness in badinput.py).

Every case must be refused before any training: exit 2, one stderr line naming the input
and the fix, and nothing written (no run folder, no grid, no download). Where a silent
fallback would have worked, FMNIST_DATA_DIR points at the real Fashion-MNIST (when present),
so a case also fails if the explicit --data-dir is replaced by another dataset.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badinput import Case, check_case, parametrize_cases
from conftest import learnable_arrays, write_kaggle_csv
from fmnist.datasets import DATASETS, write_idx

REAL = os.environ.get("FMNIST_DATA_DIR", "")
FALLBACK = {"FMNIST_DATA_DIR": "{real}"}  # what a silent fallback would have used


def _images(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` 28x28 dataset-like PNGs (a light bar on black) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = np.zeros((28, 28), np.uint8)
        a[5 + rng.integers(0, 10) : 15, 4:24] = 200
        Image.fromarray(a).save(folder / f"{i}.png")


def _idx(folder: Path, *, gz: bool = True) -> Path:
    """Four tiny IDX files (10 classes) under MNIST's file names: not genuine MNIST."""
    x, y = learnable_arrays(2, seed=0)
    names = DATASETS.get("mnist").files
    for part, arr in (("train_images", x), ("train_labels", y), ("test_images", x),
                      ("test_labels", y)):
        name = names[part] if gz else names[part].removesuffix(".gz")
        write_idx(folder / name, arr)
    return folder


def _setup(tmp: Path) -> dict[str, str]:
    (tmp / "empty").mkdir()
    (tmp / "file.txt").write_text("not a folder")
    (tmp / "unrelated").mkdir()
    (tmp / "unrelated" / "notes.txt").write_text("hello")
    x, y = learnable_arrays(3, seed=0)
    (tmp / "csv-train-only").mkdir()
    write_kaggle_csv(tmp / "csv-train-only" / "train.csv", x, y)
    (tmp / "csv-test-only").mkdir()
    write_kaggle_csv(tmp / "csv-test-only" / "fashion-mnist_test.csv", x, y)
    (tmp / "csv-bad").mkdir()
    (tmp / "csv-bad" / "train.csv").write_text("label,p1,p2\n1,2,3\n")
    (tmp / "csv-bad" / "test.csv").write_text("label,p1,p2\n1,2,3\n")
    (tmp / "csv-labels").mkdir()
    write_kaggle_csv(tmp / "csv-labels" / "train.csv", x, y + 3)
    write_kaggle_csv(tmp / "csv-labels" / "test.csv", x, y)
    _images(tmp / "one-class" / "shoes", 8)
    _images(tmp / "few" / "shoes", 8)
    _images(tmp / "few" / "hats", 2)
    for part, classes in (("train", ("a", "b")), ("test", ("a", "b", "c"))):
        for c in classes:
            _images(tmp / "only-test" / part / c, 2)
    for part, classes in (("train", ("a", "b", "c")), ("test", ("a", "b"))):
        for c in classes:
            _images(tmp / "only-train" / part / c, 2)
    for c in ("a", "b"):
        _images(tmp / "no-test-dir" / "train" / c, 5)
    _images(tmp / "empty-class" / "a", 5)
    _images(tmp / "empty-class" / "b", 5)
    (tmp / "empty-class" / "c").mkdir()
    _images(tmp / "corrupt" / "a", 5)
    _images(tmp / "corrupt" / "b", 5)
    (tmp / "corrupt" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _idx(tmp / "fake-mnist")
    raw = _idx(tmp / "kmnist-raw", gz=False)
    # swap images and labels: valid IDX files of the wrong kind
    a, b = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    trunc = _idx(tmp / "truncated")
    gz = trunc / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(gzip.decompress(gz.read_bytes()))[:200])
    (tmp / "fashion-as-mnist").mkdir()
    if REAL:
        for f in Path(REAL).glob("*.gz"):
            (tmp / "fashion-as-mnist" / f.name).symlink_to(f)
    return {"real": REAL or str(tmp / "no-real-data")}


def _info(dir_: str, *extra: str) -> list[str]:
    return ["data", "info", "--data-dir", "{tmp}/" + dir_, *extra]


def _train(dir_: str, *extra: str) -> list[str]:
    return ["train", "--recipe", "baseline-small", "--epochs", "1", "--out", "{tmp}/run",
            "--data-dir", "{tmp}/" + dir_, *extra]


CASES = [
    # data info: the explicit folder is used or refused
    Case("info-dir-missing-offline", _info("nope", "--offline"), names="{tmp}/nope",
         fix="drop --offline to download them into it", env=FALLBACK),
    Case("info-dir-empty-offline", _info("empty", "--offline"), names="{tmp}/empty",
         fix="drop --offline", env=FALLBACK),
    Case("info-dir-is-file", _info("file.txt"), names="{tmp}/file.txt",
         fix="pass the folder", env=FALLBACK),
    Case("info-dir-unrelated", _info("unrelated"), names="{tmp}/unrelated",
         fix="pass the folder that holds them", env=FALLBACK),
    Case("info-csv-train-only", _info("csv-train-only"), names="train.csv",
         fix="test.csv", env=FALLBACK),
    Case("info-csv-test-only", _info("csv-test-only"), names="fashion-mnist_test.csv",
         fix="train.csv", env=FALLBACK),
    Case("info-csv-bad-columns", _info("csv-bad"), names="train.csv", fix="label,pixel1"),
    Case("info-csv-labels-out-of-range", _info("csv-labels"), names="train.csv",
         fix="expected 0..9"),
    Case("info-one-class-folder", _info("one-class"), names="'shoes'",
         fix="at least 2"),
    Case("info-too-few-per-class", _info("few"), names="{tmp}/few/hats",
         fix="at least 4 per class"),
    Case("info-class-only-in-test", _info("only-test"), names="'c'",
         fix="add training images"),
    Case("info-class-only-in-train", _info("only-train"), names="'c'",
         fix="add test images"),
    Case("info-train-without-test-folder", _info("no-test-dir"), names="{tmp}/no-test-dir",
         fix="test/<class>"),
    Case("info-empty-class-folder", _info("empty-class"), names="{tmp}/empty-class/c",
         fix="remove the folder"),
    Case("info-corrupt-image", _info("corrupt"), names="broken.png",
         fix="remove it from the folder"),
    Case("info-unknown-dataset", ["data", "info", "--dataset", "mnsit"], names="mnsit",
         fix="did you mean 'mnist'"),
    Case("info-wrong-checksum", _info("fake-mnist", "--dataset", "mnist"),
         names="train-images-idx3-ubyte.gz", fix="replace it with a genuine copy"),
    Case("info-fashion-files-as-mnist", _info("fashion-as-mnist", "--dataset", "mnist"),
         names="{tmp}/fashion-as-mnist", fix="--dataset fashion-mnist"),
    Case("info-idx-images-labels-swapped", _info("kmnist-raw", "--dataset", "kmnist"),
         names="train-images-idx3-ubyte", fix="right file"),
    Case("info-truncated-gzip", _info("truncated", "--dataset", "mnist"),
         names="train-images-idx3-ubyte.gz", fix="delete it and download again"),
    # data show writes no grid
    Case("show-dir-missing-offline", ["data", "show", "--data-dir", "{tmp}/nope", "--offline",
                                      "--out", "{tmp}/grid.png"], names="{tmp}/nope",
         fix="drop --offline", env=FALLBACK),
    Case("show-class-only-in-test", ["data", "show", "--data-dir", "{tmp}/only-test",
                                     "--out", "{tmp}/grid.png"], names="'c'",
         fix="add training images"),
    # train makes no run folder and trains nothing
    Case("train-dir-missing-offline", _train("nope", "--offline"), names="{tmp}/nope",
         fix="drop --offline", env=FALLBACK),
    Case("train-dir-is-file", _train("file.txt"), names="{tmp}/file.txt",
         fix="pass the folder", env=FALLBACK),
    Case("train-csv-train-only", _train("csv-train-only"), names="train.csv",
         fix="test.csv", env=FALLBACK),
    Case("train-one-class-folder", _train("one-class"), names="'shoes'", fix="at least 2"),
    Case("train-too-few-per-class", _train("few"), names="{tmp}/few/hats",
         fix="at least 4 per class"),
    Case("train-class-only-in-test", _train("only-test"), names="'c'",
         fix="add training images"),
    Case("train-unknown-dataset", ["train", "--dataset", "nope", "--out", "{tmp}/run"],
         names="nope", fix="fashion-mnist"),
    Case("train-wrong-checksum", _train("fake-mnist", "--dataset", "mnist"),
         names="train-images-idx3-ubyte.gz", fix="genuine copy"),
]


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    if case.id == "info-fashion-files-as-mnist" and not REAL:
        pytest.skip("real Fashion-MNIST not available: set FMNIST_DATA_DIR to its folder")
    values = _setup(tmp_path)
    check_case(case, tmp_path, values, [tmp_path])
