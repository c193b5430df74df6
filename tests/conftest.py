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
