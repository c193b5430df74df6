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
    pixel_moments,
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


def test_pixel_moments_match_numpy():
    """The normalization constants from exact integer counts are numpy's mean and std
    (up to one rounding), for uint8 images spanning several chunks and for floats."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (700, 28, 28), dtype=np.uint8)  # > 1 chunk of 2**18
    images[:50] = 0  # a skewed histogram, as real data has
    mean, std = pixel_moments(images)
    assert mean == pytest.approx(images.mean(dtype=np.float64) / 255, rel=1e-14)
    assert std == pytest.approx(images.std(dtype=np.float64) / 255, rel=1e-14)
    floats = images[:3].astype(np.float32)
    assert pixel_moments(floats) == pytest.approx((floats.mean() / 255, floats.std() / 255))
    assert pixel_moments(np.full((2, 28, 28), 255, np.uint8)) == (1.0, 0.0)


def test_md5_mismatch_message_names_file_expected_found_and_fix(tiny_idx, isolated_home):
    folder, spec = tiny_idx
    labels = folder / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.arange(40) % 3)  # valid IDX, different bytes
    found = hashlib.md5(labels.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        load_dataset(spec, folder, offline=True)
    msg = str(e.value)
    assert str(labels) in msg and spec.md5["train_labels"] in msg and found in msg
    assert "not the genuine file" in msg and "delete it and run without --offline" in msg


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
    rows = np.concatenate([np.arange(20)[:, None] % 10, np.zeros((20, 784), int)], axis=1)
    _write_csv(tmp_path / "fashion-mnist_train.csv", rows)
    _write_csv(tmp_path / "fashion-mnist_test.csv", rows[:10])
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.format == "csv" and len(ds.train) == 20 and len(ds.test) == 10
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
            im = Image.new("RGB", (40 + i, 50), (0, 0, 0))
            im.paste(Image.new("RGB", (20, 30), colour), (10, 10))  # an item on black
            im.save(tmp_path / cls / f"{i}.png")
    (tmp_path / "hats" / "notes.txt").write_text("ignored")
    split, classes = read_image_folder(tmp_path)
    assert classes == ("boots", "hats")
    assert split.images.shape == (6, 28, 28) and split.images.dtype == np.uint8
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # each image is what predict sees: preprocess() crops the item and fills the frame
    from fmnist.preprocess import preprocess

    np.testing.assert_array_equal(split.images[4], preprocess(tmp_path / "hats" / "1.png").image)
    assert split.images[0][:, 0].max() == 0 and split.images[0].max() == 255


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
    with pytest.raises(DataError, match=r"broken\.png: cannot read.*remove it from the folder"):
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
    for offline in (True, False):  # an explicit folder is used or refused: no download
        with pytest.raises(DataError, match="holds fashion-mnist files, not mnist. Add "
                           "--dataset fashion-mnist"):
            load_dataset("mnist", flat, offline=offline)


# ----------------------------------------------------------------------------- content checksums


@pytest.fixture
def tiny_content_spec(tiny_idx):
    """The tiny IDX folder with a spec that knows both MD5s: of each .gz and of its content."""
    folder, spec = tiny_idx
    raw = {part: hashlib.md5(gzip.decompress((folder / spec.files[part]).read_bytes()))
           .hexdigest() for part in spec.files}
    return folder, DatasetSpec(name="tiny", classes=spec.classes, mirrors=(), md5=spec.md5,
                               raw_md5=raw)


def _recompress(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1,
                                   mtime=1_234_567))


def test_recompressed_genuine_gz_is_accepted_and_verified(tiny_content_spec, isolated_home):
    folder, spec = tiny_content_spec
    target = folder / spec.files["train_images"]
    before = hashlib.md5(target.read_bytes()).hexdigest()
    _recompress(target)
    assert hashlib.md5(target.read_bytes()).hexdigest() != before  # another container
    ds = load_dataset(spec, folder, offline=True)
    assert ds.verified and set(ds.checksums.values()) == {"ok"}


def test_unzipped_genuine_files_are_accepted_and_verified(tiny_content_spec, isolated_home):
    folder, spec = tiny_content_spec
    for gz in list(folder.glob("*.gz")):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    ds = load_dataset(spec, folder, offline=True)
    assert ds.verified and all(not p.endswith(".gz") for p in ds.checksums)


def test_changed_content_is_refused_whatever_the_container(tiny_content_spec, isolated_home):
    folder, spec = tiny_content_spec
    labels = folder / spec.files["test_labels"]
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[-1] = (content[-1] + 1) % 4  # one label changed, still a valid IDX file
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: MD5 checksum mismatch.*"
                       r"uncompressed content.*genuine copy"):
        load_dataset(spec, folder, offline=True)


def test_without_a_content_md5_unzipped_is_unverified_and_recompressed_refused(
        tiny_idx, isolated_home):
    folder, spec = tiny_idx  # only the .gz MD5s are known (like KMNIST)
    _recompress(folder / spec.files["train_labels"])
    with pytest.raises(DataError, match="re-compressed copy cannot be checked: unzip it"):
        load_dataset(spec, folder, offline=True)
    labels = folder / spec.files["train_labels"]
    labels.with_suffix("").write_bytes(gzip.decompress(labels.read_bytes()))
    labels.unlink()
    ds = load_dataset(spec, folder, offline=True)
    assert ds.checksums[str(labels.with_suffix(""))] == "unknown" and not ds.verified


def test_registry_knows_content_md5s_of_fashion_mnist_and_mnist():
    for name in ("fashion-mnist", "mnist"):
        assert set(DATASETS.get(name).raw_md5) == {"train_images", "train_labels",
                                                   "test_images", "test_labels"}


@pytest.mark.realdata
def test_real_fashion_mnist_recompressed_labels_verified(real_data_dir, tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    for f in real_data_dir.glob("*.gz"):
        (folder / f.name).symlink_to(f)
    labels = folder / "train-labels-idx1-ubyte.gz"
    data = gzip.decompress(labels.read_bytes())
    labels.unlink()
    labels.write_bytes(gzip.compress(data, mtime=42))  # a genuine copy, another gzip
    ds = load_dataset("fashion-mnist", folder, offline=True)
    assert ds.verified and len(ds.train) == 60000


# ----------------------------------------------------------------------------- validation


def _ds(train_labels, test_labels, classes=("a", "b", "c")):
    from fmnist.datasets import Dataset, Split

    def split(labels):
        labels = np.asarray(labels, dtype=np.int64)
        return Split(np.zeros((len(labels), 28, 28), np.uint8), labels)

    return Dataset("toy", classes, split(train_labels), split(test_labels), Path("toy"), "csv")


@pytest.mark.parametrize("train, test, message", [
    ([0, 0, 0], [0], "training split holds one class \\('a'\\).*at least 2"),
    ([], [0, 1], "the train split of toy is empty"),
    ([0, 1], [], "the test split of toy is empty"),
    ([0, 1], [0, 1, 2], "class 'c' has test images but no training images"),
    ([0, 1, 2], [0, 1], "class 'c' has training images but no test images"),
])
def test_validate_dataset_refuses_what_cannot_be_trained_and_tested(train, test, message):
    from fmnist.datasets import validate_dataset

    with pytest.raises(DataError, match=message):
        validate_dataset(_ds(train, test))


def test_validate_dataset_accepts_two_classes_in_both_splits():
    from fmnist.datasets import validate_dataset

    ds = _ds([0, 1, 1], [1, 0])
    assert validate_dataset(ds) is ds


def test_image_folder_without_splits_needs_four_images_per_class(tmp_path):
    for cls, n in (("a", 4), ("b", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("L", (28, 28), 0).save(tmp_path / cls / f"{i}.png")
    with pytest.raises(DataError, match=r"b: only 3 images; at least 4 per class"):
        load_dataset("fashion-mnist", tmp_path)
    Image.new("L", (28, 28), 0).save(tmp_path / "b" / "3.png")
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.test.counts(2).tolist() == [1, 1] and ds.train.counts(2).tolist() == [3, 3]


# ----------------------------------------------------------------------------- 16-bit images


@pytest.mark.parametrize("size", [(28, 28), (60, 90)])
def test_16bit_png_in_an_image_folder_decodes_like_predict(tmp_path, size):
    from fmnist.preprocess import preprocess

    w, h = size
    a = np.zeros((h, w), np.uint16)
    a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 30_000  # a mid-grey item on black
    a[h // 3, w // 3] = 65_535
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")  # uint16: mode I;16
    split, _ = read_image_folder(tmp_path)
    png = tmp_path / "a" / "0.png"
    np.testing.assert_array_equal(split.images[0], preprocess(png).image)
    assert (split.images[0] == 255).mean() < 0.5  # not saturated (was 99.5% at 255)
    if size == (28, 28):  # a dataset-like image passes through, scaled 65535 -> 255
        assert split.images[0][h // 2, w // 2] == round(30_000 / 257)


# ----------------------------------------------------------------------------- augmentation policy


@pytest.mark.parametrize("dataset, recipe_augment, applied, dropped", [
    ("fashion-mnist", ("flip",), ("flip",), ()),
    ("fashion-mnist", ("flip", "translate:2", "erase"), ("flip", "translate:2", "erase"), ()),
    ("mnist", ("flip",), ("translate:1",), ("flip",)),
    ("mnist", ("flip", "translate:2", "erase"), ("translate:2", "erase"), ("flip",)),
    ("kmnist", ("flip:0.3", "affine"), ("affine", "translate:1"), ("flip:0.3",)),
    ("kmnist", (), (), ()),
])
def test_augment_policy_keeps_only_label_preserving(dataset, recipe_augment, applied, dropped):
    policy = DATASETS.get(dataset).augment_policy
    assert policy.fit(recipe_augment) == (applied, dropped)


def _named(name: str):
    from fmnist.datasets import Dataset

    ds = _ds([0, 1], [0, 1])
    return Dataset(name, ds.classes, ds.train, ds.test, ds.source, "idx",
                   augment_policy=DATASETS.get(name).augment_policy)


def test_fit_augment_drops_flips_and_flip_tta_for_digits():
    from fmnist.recipes import resolve_recipe
    from fmnist.training import fit_augment

    recipe, record = fit_augment(resolve_recipe("fast"), _named("mnist"))
    assert recipe.augment == ("translate:1",) and recipe.tta is False
    assert record["recipe"] == ["flip"] and record["dropped"] == ["flip"]
    assert record["applied"] == ["translate:1"] and "tta_off" in record
    same, record = fit_augment(resolve_recipe("fast"), _named("fashion-mnist"))
    assert same == resolve_recipe("fast") and record["dropped"] == []


def test_fit_augment_keeps_an_explicit_augment_with_a_warning(caplog):
    from fmnist.recipes import resolve_recipe
    from fmnist.training import fit_augment

    asked = resolve_recipe("fast", augment=("flip", "erase"), tta=True)
    with caplog.at_level("WARNING", logger="fmnist"):
        recipe, record = fit_augment(asked, _named("kmnist"), explicit={"augment", "tta"})
    assert recipe.augment == ("flip", "erase") and recipe.tta is True and record["explicit"]
    assert "flip can change kmnist's labels" in caplog.text


def test_explicit_empty_dir_is_downloaded_into_never_replaced(served, tmp_path, isolated_home,
                                                              monkeypatch):
    server, spec = served
    elsewhere = _copy_tiny(Path(server.root), isolated_home / "envdir")
    monkeypatch.setenv("FMNIST_DATA_DIR", str(elsewhere))  # would load, if it were asked
    (tmp_path / "empty").mkdir()
    ds = load_dataset(spec, tmp_path / "empty")
    assert ds.source == tmp_path / "empty" and server.requests == 4
    broken = DatasetSpec(name="tiny", classes=spec.classes, mirrors=(server.url + "gone/",),
                         md5=spec.md5)
    with pytest.raises(DataError, match="could not download .*HTTP 404"):
        load_dataset(broken, tmp_path / "new")  # a 404 moves on at once: no retries
    assert not (tmp_path / "new").exists()  # no empty folder left behind
