"""End to end through the CLI entry point, for every registered dataset and every format:
``fmnist train`` (1 epoch, a tiny model) -> ``evaluate`` -> ``predict`` -> ``export``.

The registered datasets are tiny generated IDX files served by a local HTTP server on
127.0.0.1, with the registry's mirrors and MD5s pointed at them, so the real download and
verification code runs; the CSV and image-folder datasets (16-bit PNGs included) are
generated files. Commands run in-process through :func:`fmnist.cli.main`.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import learnable_arrays
from fmnist.cli import main
from fmnist.datasets import DATASETS, write_idx

TRAIN = ["--recipe", "fast", "--model", "baseline-small", "--epochs", "1", "--batch-size", "32",
         "--train-limit", "200", "--device", "cpu", "--no-report"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Tiny IDX files of each registered dataset, served over HTTP on 127.0.0.1."""
    root = tmp_path_factory.mktemp("mirror")
    specs = {}
    for seed, name in enumerate(DATASETS.names()):
        spec = DATASETS.get(name)
        if spec.loader is not None:  # photo datasets: not four IDX files
            continue
        folder = root / name
        (xtr, ytr), (xte, yte) = learnable_arrays(30, seed), learnable_arrays(10, seed + 10)
        md5, raw = {}, {}
        for part, arr in (("train_images", xtr), ("train_labels", ytr),
                          ("test_images", xte), ("test_labels", yte)):
            path = write_idx(folder / spec.files[part], arr)
            md5[part] = hashlib.md5(path.read_bytes()).hexdigest()
            raw[part] = hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()
        specs[name] = (md5, raw if spec.raw_md5 else {})  # KMNIST: no content MD5s known
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", specs
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def registry(served, monkeypatch):
    """The registry's mirrors and MD5s pointed at the local server (class names kept)."""
    url, specs = served
    for name, (md5, raw) in specs.items():
        spec = dataclasses.replace(DATASETS.get(name), mirrors=(url + name + "/",), md5=md5,
                                   raw_md5=raw)
        monkeypatch.setitem(DATASETS._entries, name, spec)


def _fmnist(capsys, *args) -> str:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert code == 0, f"fmnist {' '.join(map(str, args))} -> {code}\n{out.err[-2000:]}"
    return out.out


def _pipeline(capsys, tmp_path: Path, data_args: list, image: Path,
              export_args: tuple = ()) -> dict:
    """train -> evaluate -> predict -> export; returns the run's config.json."""
    run = tmp_path / "run"
    out = _fmnist(capsys, "train", *TRAIN, *data_args, "--out", run)
    assert "test accuracy" in out
    out = _fmnist(capsys, "evaluate", run, "--device", "cpu")
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.2%}" in out
    out = _fmnist(capsys, "predict", run, image, "--device", "cpu")
    assert out.startswith(f"{image}: ")
    out = _fmnist(capsys, "export", run, "--json", *export_args)
    exported = json.loads(out)
    assert (run / "model.onnx").is_file()
    if "--no-check" not in export_args:
        assert exported["agreement"] >= 0.99
    return json.loads((run / "config.json").read_text())


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "kmnist"])
def test_registered_dataset_downloaded_into_data_dir(name, registry, tmp_path, capsys,
                                                     one_thread):
    data = tmp_path / "data"  # does not exist: the files are downloaded into it
    image = _png(tmp_path / "digit.png", learnable_arrays(1, 99)[0][0])
    config = _pipeline(capsys, tmp_path, ["--dataset", name, "--data-dir", data], image)
    assert sorted(p.name for p in data.iterdir()) == sorted(DATASETS.get(name).files.values())
    assert config["dataset"]["name"] == name and config["recipe"]["dataset"] == name
    assert config["dataset"]["verified"] is True  # kmnist too: its genuine .gz MD5
    assert config["dataset"]["classes"] == list(DATASETS.get(name).classes)
    aug = config["augmentation"]
    assert aug["recipe"] == ["flip"]
    if name == "fashion-mnist":
        assert aug["applied"] == ["flip"] and config["recipe"]["tta"] is True
    else:  # a flipped digit or character is another class: no flips, no flip-TTA
        assert aug["dropped"] == ["flip"] and config["recipe"]["augment"] == ["translate:1"]
        assert config["recipe"]["tta"] is False


def test_kaggle_csv(learnable_csv_dir, tmp_path, capsys, one_thread):
    x, _ = learnable_arrays(1, 7)
    image = _png(tmp_path / "item.png", x[0])
    config = _pipeline(capsys, tmp_path, ["--data-dir", learnable_csv_dir], image)
    assert config["dataset"]["format"] == "csv" and config["dataset"]["name"] == "fashion-mnist"


def test_image_folder_with_16bit_pngs(tmp_path, capsys, one_thread):
    folder = tmp_path / "shapes"
    for part, n, seed in (("train", 20, 0), ("test", 5, 1)):
        x, y = learnable_arrays(n, seed)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            if label >= 3:
                continue
            if i % 2:  # every other image as a 16-bit PNG of the same picture
                _png(folder / part / f"c{label}" / f"{i}.png", img.astype(np.uint16) * 257)
            else:
                _png(folder / part / f"c{label}" / f"{i}.png", img)
    image = next((folder / "test" / "c1").glob("*.png"))
    # 15 test images: fewer than the parity check's minimum of 100 (tested in test_export)
    config = _pipeline(capsys, tmp_path, ["--data-dir", folder], image, ("--no-check",))
    assert config["dataset"]["format"] == "image-folder"
    assert config["dataset"]["classes"] == ["c0", "c1", "c2"]
    assert config["augmentation"]["applied"] == ["flip"]  # folders keep the recipe's
