"""Shared fixtures: tiny datasets the tests write themselves, and the real data when present."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fmnist.datasets import DatasetSpec, write_idx

REAL_DATA = os.environ.get("FMNIST_DATA_DIR")


def _tiny_arrays(n_train: int = 40, n_test: int = 20, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    ytr = np.arange(n_train) % classes
    yte = np.arange(n_test) % classes
    xtr = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    xte = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    return xtr, ytr, xte, yte


@pytest.fixture
def tiny_idx(tmp_path: Path) -> tuple[Path, DatasetSpec]:
    """A folder with four gzipped IDX files and a matching DatasetSpec (4 classes)."""
    folder = tmp_path / "tiny"
    xtr, ytr, xte, yte = _tiny_arrays()
    spec_files = DatasetSpec(name="x", classes=(), mirrors=(), md5={}).files
    arrays = {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}
    md5 = {}
    for part, arr in arrays.items():
        path = write_idx(folder / spec_files[part], arr)
        md5[part] = hashlib.md5(path.read_bytes()).hexdigest()
    spec = DatasetSpec(name="tiny", classes=("a", "b", "c", "d"), mirrors=(), md5=md5)
    return folder, spec


@pytest.fixture
def real_data_dir() -> Path:
    if not REAL_DATA or not Path(REAL_DATA).is_dir():
        pytest.skip("real Fashion-MNIST not available: set FMNIST_DATA_DIR to its folder")
    return Path(REAL_DATA)


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty cwd and HOME, no FMNIST_DATA_DIR: only what a test puts there is found."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.chdir(work)
    return work


def learnable_arrays(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10 classes a small CNN learns in an epoch or two, even under small shifts: a bright
    bar whose row and length both encode the class, on noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    images = rng.integers(0, 60, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        row = 3 + 2 * c
        col = rng.integers(1, 4)
        images[i, row : row + 2, col : col + 5 + 2 * c] = 230
    order = rng.permutation(len(labels))
    return images[order], labels[order]


def write_kaggle_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    head = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    rows = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1)
    np.savetxt(path, rows, fmt="%d", delimiter=",", header=head, comments="")
    return path


@pytest.fixture(scope="session")
def learnable_csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kaggle-layout CSV dataset folder (fashion-mnist class names), 2,000 train and
    500 test images that a small CNN learns quickly."""
    folder = tmp_path_factory.mktemp("learnable")
    write_kaggle_csv(folder / "train.csv", *learnable_arrays(200, seed=0))
    write_kaggle_csv(folder / "test.csv", *learnable_arrays(50, seed=1))
    return folder


@pytest.fixture(scope="session")
def learnable_dataset(learnable_csv_dir: Path):
    from fmnist.datasets import load_dataset

    return load_dataset("fashion-mnist", learnable_csv_dir)


TINY_RUN = dict(model="baseline-small", optimizer="adam", lr=3e-3, epochs=3, batch_size=32,
                train_limit=600)


@pytest.fixture(scope="session")
def tiny_run_copy(tmp_path_factory: pytest.TempPathFactory, learnable_dataset):
    """Factory: ``tiny_run_copy(name)`` -> a fresh copy of one tiny trained run folder
    (baseline-small on the learnable data), trained once per session and shared by the
    inference, export and predict-CLI tests."""
    import shutil

    from fmnist.training import train

    shared = tmp_path_factory.mktemp("tiny-run") / "run"
    train(data=learnable_dataset, out=shared, **TINY_RUN)

    def copy(name: str) -> Path:
        dst = tmp_path_factory.mktemp(name) / "run"
        shutil.copytree(shared, dst)
        return dst

    return copy


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster on one intra-op
    thread than on two fighting other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
