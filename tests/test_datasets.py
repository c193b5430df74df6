"""Dataset registry, readers, verification, lookup order and downloads."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.datasets import (
    DATASETS,
    DatasetSpec,
    download,
    download_file,
    find_files,
    list_datasets,
    load_dataset,
    read_csv,
    read_idx,
    read_image_folder,
    stratified_split,
    write_idx,
)
from fmnist.errors import ConfigError, DataError


def test_registry_lists_the_datasets_and_rejects_typos():
    assert list_datasets() == ["fashion-mnist", "mnist", "kmnist", "clothing-dataset-small",
                               "fashion-mnist+photos"]
    with pytest.raises(ConfigError, match="Did you mean 'fashion-mnist'"):
        load_dataset("fashion-mnsit")


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_round_trip_gz_and_raw(tmp_path, suffix):
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5, 9])
    write_idx(tmp_path / f"img{suffix}", images)
    write_idx(tmp_path / f"lab{suffix}", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / f"img{suffix}", kind="images"), images)
    got = read_idx(tmp_path / f"lab{suffix}", kind="labels")
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, labels)


def test_idx_wrong_magic_names_file_and_numbers(tmp_path):
    write_idx(tmp_path / "labels.gz", np.arange(5))
    with pytest.raises(DataError, match=r"labels\.gz: IDX magic number 2049.*expected 2051"):
        read_idx(tmp_path / "labels.gz", kind="images")


def test_idx_truncated_raw_file(tmp_path):
    path = write_idx(tmp_path / "img", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"img: header says 3x28x28 = 2352 bytes.*found 2252"):
        read_idx(path, kind="images")


def test_idx_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "img.gz", np.random.default_rng(0).integers(
        0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"img\.gz: cannot read .*truncated or corrupt"):
        read_idx(path, kind="images")


def test_idx_wrong_image_size(tmp_path):
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 32, 32))
    (tmp_path / "img").write_bytes(header + bytes(2 * 32 * 32))
    with pytest.raises(DataError, match="images are 32x32, expected 28x28"):
        read_idx(tmp_path / "img", kind="images")


# ----------------------------------------------------------------------------- loading + MD5


def test_load_tiny_idx_dataset_verified(tiny_idx, isolated_home):
    folder, spec = tiny_idx
    ds = load_dataset(spec, folder, offline=True)
    assert ds.train.images.shape == (40, 28, 28) and ds.test.images.shape == (20, 28, 28)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int64
    assert ds.verified and ds.format == "idx" and ds.source == folder
    assert ds.classes == ("a", "b", "c", "d")
    assert 0.45 < ds.mean < 0.55  # uniform random pixels


def test_md5_mismatch_message_names_file_expected_found_and_fix(tiny_idx, isolated_home):
    folder, spec = tiny_idx
    labels = folder / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.arange(40) % 3)  # valid IDX, different bytes
    found = hashlib.md5(labels.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        load_dataset(spec, folder, offline=True)
    msg = str(e.value)
    assert str(labels) in msg and spec.md5["train_labels"] in msg and found in msg
    assert "Delete the file" in msg


def test_labels_out_of_range_are_refused(tiny_idx, isolated_home):
    folder, spec = tiny_idx
    small = DatasetSpec(name="tiny2", classes=("a", "b"), mirrors=(), md5={})
    with pytest.raises(DataError, match="labels range 0..3, expected 0..1"):
        load_dataset(small, folder, offline=True)
    assert spec  # the full spec accepts them (see test above)


def test_split_validation_is_stratified_and_deterministic(tiny_idx, isolated_home):
    folder, spec = tiny_idx
    ds = load_dataset(spec, folder, offline=True)
    tr, va = ds.split_validation(0.2, seed=3)
    assert len(tr) + len(va) == 40 and len(va) == 8
    assert va.counts(4).tolist() == [2, 2, 2, 2]
    tr2, va2 = ds.split_validation(0.2, seed=3)
    np.testing.assert_array_equal(va.labels, va2.labels)
    np.testing.assert_array_equal(va.images, va2.images)
    _, va3 = ds.split_validation(0.2, seed=4)
    assert not np.array_equal(va.images, va3.images)


def test_stratified_split_rejects_bad_fraction():
    with pytest.raises(DataError, match=r"fraction must be in \[0, 1\); got 1.5"):
        stratified_split(np.arange(10), 1.5)


# ----------------------------------------------------------------------------- lookup order


def _copy_tiny(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_lookup_order_explicit_env_default_keras(tiny_idx, isolated_home, monkeypatch):
    folder, spec = tiny_idx
    home = Path.home()
    keras = _copy_tiny(folder, home / ".keras" / "datasets" / "tiny")
    assert find_files(spec).files["train_images"].parent == keras
    default = _copy_tiny(folder, isolated_home / "data" / "tiny")
    assert find_files(spec).files["train_images"].parent == Path("data/tiny")
    assert default.is_dir()
    env = _copy_tiny(folder, isolated_home / "envdir")
    monkeypatch.setenv("FMNIST_DATA_DIR", str(env))
    assert find_files(spec).files["train_images"].parent == env
    explicit = _copy_tiny(folder, isolated_home / "explicit")
    assert find_files(spec, explicit).files["train_images"].parent == explicit


def test_torchvision_raw_folder_with_unzipped_files(tiny_idx, isolated_home):
    folder, spec = tiny_idx
    raw = isolated_home / "data" / "raw"
    raw.mkdir(parents=True)
    for gz in folder.glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    ds = load_dataset(spec, offline=True)
    assert ds.source == Path("data/raw")
    assert ds.checksums and set(ds.checksums.values()) == {"unknown"}  # no raw MD5 known
    assert not ds.verified


def test_offline_says_where_it_looked(isolated_home):
    with pytest.raises(DataError) as e:
        load_dataset("kmnist", offline=True)
    msg = str(e.value)
    assert "--offline forbids downloading" in msg
    assert "data/kmnist" in msg and ".keras/datasets/kmnist" in msg
    assert "FMNIST_DATA_DIR" in msg


# ----------------------------------------------------------------------------- CSV


def _write_csv(path: Path, rows: np.ndarray, header: bool = True) -> Path:
    head = "label," + ",".join(f"pixel{i}" for i in range(1, 785)) + "\n" if header else ""
    path.write_text(head + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_good_with_and_without_header(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.arange(6)[:, None] % 10, rng.integers(0, 256, (6, 784))], axis=1)
    for header in (True, False):
        split = read_csv(_write_csv(tmp_path / f"t{header}.csv", rows, header))
        assert split.images.shape == (6, 28, 28) and split.images.dtype == np.uint8
        np.testing.assert_array_equal(split.labels, rows[:, 0])
        np.testing.assert_array_equal(split.images.reshape(6, -1), rows[:, 1:])


def test_csv_dataset_folder_in_kaggle_layout(tmp_path, isolated_home):
    rows = np.concatenate([np.arange(10)[:, None], np.zeros((10, 784), int)], axis=1)
    _write_csv(tmp_path / "fashion-mnist_train.csv", rows)
    _write_csv(tmp_path / "fashion-mnist_test.csv", rows[:4])
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.format == "csv" and len(ds.train) == 10 and len(ds.test) == 4
    assert ds.classes[9] == "Ankle boot"


@pytest.mark.parametrize(
    "content, message",
    [
        ("label,p1,p2\n1,2,3\n", "3 columns per row, expected 785"),
        ("label," + ",".join(["1"] * 784) + "\n3," + ",".join(["x"] * 784) + "\n",
         "not a valid CSV of integers"),
        ("label," + ",".join(["1"] * 784) + "\n3," + ",".join(["300"] * 784) + "\n",
         "pixel values must be 0..255; line 2"),
        ("label,pixel1\n", "no data rows"),
    ],
)
def test_csv_malformed(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        read_csv(path)
    assert "bad.csv" in str(e.value)


# ----------------------------------------------------------------------------- image folder


def test_image_folder_converts_to_28x28_grayscale(tmp_path):
    for cls, colour in (("boots", (200, 30, 30)), ("hats", (10, 200, 10))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (40 + i, 50), colour).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "hats" / "notes.txt").write_text("ignored")
    split, classes = read_image_folder(tmp_path)
    assert classes == ("boots", "hats")
    assert split.images.shape == (6, 28, 28) and split.images.dtype == np.uint8
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # luma of pure red vs green differs: the conversion is real, not a copy of a channel
    assert split.images[0].mean() != split.images[3].mean()


def test_image_folder_dataset_with_train_test(tmp_path, isolated_home):
    for part in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / part / cls).mkdir(parents=True)
            Image.new("L", (28, 28), 100).save(tmp_path / part / cls / "x.png")
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.format == "image-folder" and ds.classes == ("a", "b")
    assert len(ds.train) == 2 and len(ds.test) == 2


def test_image_folder_corrupt_image_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        read_image_folder(tmp_path)


# ----------------------------------------------------------------------------- downloads


class _Server:
    """A local HTTP server on 127.0.0.1 serving files from a folder, with fault injection."""

    def __init__(self, root: Path, fail_first: int = 0, status: int = 503):
        self.root, self.fail_first, self.status, self.requests = root, fail_first, status, 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(server.root), **kw)

            def do_GET(self):  # noqa: N802
                server.requests += 1
                if server.requests <= server.fail_first:
                    self.send_error(server.status)
                    return
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tiny_idx):
    folder, spec = tiny_idx
    server = _Server(folder)
    yield server, DatasetSpec(name="tiny", classes=spec.classes, mirrors=(server.url,),
                              md5=spec.md5)
    server.close()


def test_download_success_then_load(served, tmp_path, isolated_home):
    server, spec = served
    paths = download(spec, tmp_path / "dl", backoff=0)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(spec.files.values())
    assert all(p.is_file() for p in paths.values())
    ds = load_dataset(spec, tmp_path / "dl")
    assert ds.verified and len(ds.train) == 40


def test_load_dataset_downloads_into_default_root(served, isolated_home):
    server, spec = served
    ds = load_dataset(spec)
    assert ds.source == Path("data/tiny") and ds.verified
    assert server.requests == 4


def test_download_checksum_failure_leaves_no_file(served, tmp_path):
    server, spec = served
    dest = tmp_path / "dl" / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match=r"could not download train-im.*MD5 [0-9a-f]+, expected 0+"):
        download_file([server.url + dest.name], dest, "0" * 32, backoff=0)
    assert list((tmp_path / "dl").iterdir()) == []  # no partial or temp file left


def test_download_retries_server_errors(tiny_idx, tmp_path):
    folder, spec = tiny_idx
    server = _Server(folder, fail_first=2, status=503)
    try:
        name = spec.files["test_labels"]
        dest = download_file([server.url + name], tmp_path / name, spec.md5["test_labels"],
                             retries=3, backoff=0)
        assert dest.read_bytes() == (folder / name).read_bytes()
        assert server.requests == 3
    finally:
        server.close()


def test_download_gives_up_after_retries_with_reason(tiny_idx, tmp_path):
    folder, spec = tiny_idx
    server = _Server(folder, fail_first=100, status=500)
    try:
        with pytest.raises(DataError, match="HTTP 500"):
            download_file([server.url + "x.gz"], tmp_path / "x.gz", None, retries=2, backoff=0)
        assert server.requests == 2 and not (tmp_path / "x.gz").exists()
    finally:
        server.close()


def test_download_falls_back_to_next_mirror_on_404(tiny_idx, tmp_path):
    folder, spec = tiny_idx
    server = _Server(folder)
    try:
        name = spec.files["train_labels"]
        urls = [server.url + "missing/" + name, server.url + name]
        download_file(urls, tmp_path / name, spec.md5["train_labels"], backoff=0)
        assert server.requests == 2
    finally:
        server.close()


def test_download_through_file_url(tiny_idx, tmp_path):
    folder, spec = tiny_idx
    name = spec.files["test_images"]
    dest = download_file([(folder / name).as_uri()], tmp_path / name, spec.md5["test_images"])
    assert dest.read_bytes() == (folder / name).read_bytes()


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_fashion_mnist(real_data_dir):
    ds = load_dataset("fashion-mnist", real_data_dir, offline=True)
    assert ds.train.images.shape == (60000, 28, 28) and ds.test.images.shape == (10000, 28, 28)
    assert ds.train.counts(10).tolist() == [6000] * 10
    assert ds.test.counts(10).tolist() == [1000] * 10
    assert ds.verified and len(ds.checksums) == 4
    assert abs(ds.mean - 0.2860) < 1e-3 and abs(ds.std - 0.3530) < 1e-3


@pytest.mark.realdata
def test_fashion_files_in_env_dir_are_not_taken_for_mnist(real_data_dir, isolated_home,
                                                         monkeypatch):
    """Fashion-MNIST and MNIST share file names: the MD5 tells them apart."""
    monkeypatch.setenv("FMNIST_DATA_DIR", str(real_data_dir))
    assert find_files(DATASETS.get("mnist")).files is None
    with pytest.raises(DataError, match="mnist files not found"):
        load_dataset("mnist", offline=True)


@pytest.mark.realdata
def test_fashion_files_passed_as_mnist_are_identified(real_data_dir, isolated_home, tmp_path):
    flat = tmp_path / "mnist-but-not"
    shutil.copytree(real_data_dir, flat)
    with pytest.raises(DataError, match="holds fashion-mnist files, not mnist"):
        load_dataset("mnist", flat, offline=True)
    with pytest.raises(DataError, match="It is a fashion-mnist file, not mnist"):
        load_dataset("mnist", flat)  # would download into flat/, but finds the files there
