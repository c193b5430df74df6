"""clothing-dataset-small and fashion-mnist+photos: labels, locating, download, cache, mix."""

from __future__ import annotations

import functools
import http.server
import io
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist import photo_data
from fmnist.datasets import Split, load_dataset
from fmnist.errors import DataError
from fmnist.photo_data import (
    CONTENT_SHA256,
    MIXED_NAME,
    PHOTOS_NAME,
    SOURCE_COMMIT,
    PhotoRow,
    cached_images,
    content_digest,
    download_photos,
    load_photo_split,
    locate_photos,
    mix,
    read_labels,
)

REAL_PHOTOS = os.environ.get("FMNIST_PHOTOS_DIR")

# a few generated photos in the source's layout: (path, folder, label)
ROWS = [
    PhotoRow("train/pants/a.jpg", "pants", 1, "folder"),
    PhotoRow("train/shoes/b.jpg", "shoes", 7, "eye"),
    PhotoRow("train/hat/c.jpg", "hat", -1, "folder"),
    PhotoRow("validation/pants/d.jpg", "pants", 1, "folder"),
    PhotoRow("validation/hat/e.jpg", "hat", -1, "folder"),
    PhotoRow("validation/shoes/f.jpg", "shoes", 7, "eye"),
]


def photo_bytes(seed: int) -> bytes:
    """A 60x80 JPEG: a dark rectangle (the item) on a light background."""
    rng = np.random.default_rng(seed)
    a = np.full((80, 60, 3), 230, np.uint8)
    y, x = rng.integers(5, 20, 2)
    a[y : y + 50, x : x + 30] = rng.integers(0, 80, 3)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_photos(root: Path, rows=ROWS) -> Path:
    for i, r in enumerate(rows):
        (root / r.path).parent.mkdir(parents=True, exist_ok=True)
        (root / r.path).write_bytes(photo_bytes(i))
    return root


@pytest.fixture
def fake_labels(monkeypatch: pytest.MonkeyPatch) -> list[PhotoRow]:
    """read_labels() answers with ROWS instead of the shipped file."""
    monkeypatch.setattr(photo_data, "read_labels", lambda folder=None: [
        r for r in ROWS if folder is None or r.path.startswith(folder + "/")])
    return ROWS


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- labels


def test_shipped_labels_match_the_documented_counts():
    rows = read_labels()
    assert len(rows) == 3409
    train, val = read_labels("train"), read_labels("validation")
    assert (len(train), len(val)) == (3068, 341)
    assert sum(r.label >= 0 for r in train) == 2501
    assert sum(r.label >= 0 for r in val) == 277
    assert sum(r.label == -1 for r in train) == 567  # "none of these" rows stay loadable
    assert {r.label for r in rows} == set(range(-1, 10)) - {8}  # no bags


# --------------------------------------------------------------------------- locating


def test_photos_found_through_env_and_data_dir_subfolder(tmp_path, monkeypatch):
    root = write_photos(tmp_path / "somewhere" / PHOTOS_NAME)
    monkeypatch.setenv("FMNIST_PHOTOS_DIR", str(root))
    assert locate_photos(offline=True) == root
    monkeypatch.delenv("FMNIST_PHOTOS_DIR")
    assert locate_photos(tmp_path / "somewhere", offline=True) == root


def test_offline_without_photos_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("FMNIST_PHOTOS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="FMNIST_PHOTOS_DIR") as e:
        locate_photos(tmp_path / "empty", offline=True)
    assert "empty" in str(e.value) and "--offline" in str(e.value)


# --------------------------------------------------------------------------- download


def build_archive(tmp_path: Path) -> tuple[bytes, str]:
    """A zip laid out like the source's archive (plus a test/ folder that must be left
    out) and the content digest of its labelled photos."""
    tree = write_photos(tmp_path / "tree")
    buf = io.BytesIO()
    top = f"{PHOTOS_NAME}-{SOURCE_COMMIT}"
    with zipfile.ZipFile(buf, "w") as z:
        for r in ROWS:
            z.write(tree / r.path, f"{top}/{r.path}")
        z.writestr(f"{top}/test/pants/x.jpg", photo_bytes(99))
        z.writestr(f"{top}/LICENSE", "CC0")
    return buf.getvalue(), content_digest(tree, ROWS)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``: (base URL, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", www
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_and_unpacks_train_and_validation(tmp_path, server):
    base, www = server
    data, digest = build_archive(tmp_path)
    (www / "archive.zip").write_bytes(data)
    target = download_photos(tmp_path / "data", url=f"{base}/archive.zip",
                             content_sha256=digest, rows=ROWS, retries=1)
    assert target == tmp_path / "data" / PHOTOS_NAME
    assert sorted(p.name for p in target.iterdir()) == ["LICENSE", "train", "validation"]
    assert (target / ROWS[0].path).read_bytes() == photo_bytes(0)
    assert content_digest(target, ROWS) == digest
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [PHOTOS_NAME]  # no zip


def test_download_with_wrong_content_leaves_nothing(tmp_path, server):
    base, www = server
    data, _ = build_archive(tmp_path)
    (www / "archive.zip").write_bytes(data)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="expected 0000") as e:
        download_photos(root, url=f"{base}/archive.zip", content_sha256="0" * 64, rows=ROWS,
                        retries=1)
    assert "download again" in str(e.value)
    assert not (root / PHOTOS_NAME).exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".unpack-")]


def test_download_404_is_a_data_error(tmp_path, server):
    base, _ = server
    with pytest.raises(DataError, match="HTTP 404"):
        download_photos(tmp_path / "data", url=f"{base}/missing.zip", rows=ROWS, retries=1)
    assert not (tmp_path / "data" / PHOTOS_NAME).exists()


def test_archive_member_outside_its_folder_is_refused(tmp_path, server):
    base, www = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("top/train/../../evil.jpg", b"x")
    (www / "evil.zip").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="outside"):
        download_photos(tmp_path / "data", url=f"{base}/evil.zip", rows=ROWS, retries=1)
    assert not (tmp_path / "evil.jpg").exists()


# --------------------------------------------------------------------------- cache


def test_cache_is_reused_and_invalidated_by_photo_or_preprocessing(tmp_path, cache, monkeypatch):
    root = write_photos(tmp_path / "photos")
    calls = []
    real = photo_data.preprocess_photos
    monkeypatch.setattr(photo_data, "preprocess_photos",
                        lambda r, rows, view=None: calls.append(1) or real(r, rows, view))
    first = cached_images(root, ROWS)
    assert first.shape == (len(ROWS), 28, 28) and first.dtype == np.uint8 and first.max() == 255
    assert np.array_equal(cached_images(root, ROWS), first) and len(calls) == 1
    (root / ROWS[0].path).write_bytes(photo_bytes(42))  # a photo changed
    cached_images(root, ROWS)
    assert len(calls) == 2
    monkeypatch.setattr(photo_data, "preprocess_version", lambda: "changed")
    cached_images(root, ROWS)
    assert len(calls) == 3
    assert len(list((cache / "photos").glob("*.npz"))) == 3
    assert not (root / "photos").exists()  # nothing written into the user's data folder


def test_views_are_seeded_cached_per_view_and_keep_labels(tmp_path, cache, fake_labels,
                                                          monkeypatch):
    root = write_photos(tmp_path / "photos")
    views = photo_data.load_labelled_photos(root, views=2, offline=True)
    assert views.images.shape == (4, 28, 28) and views.labels.tolist() == [1, 7, 1, 7]
    assert views.images.max(axis=(1, 2)).min() == 255  # every view still shows its item
    plain = photo_data.load_labelled_photos(root, offline=True).images
    assert not np.array_equal(views.images[:2], plain)  # a view is not the photo itself
    assert not np.array_equal(views.images[:2], views.images[2:])  # nor the other view
    assert len(list((cache / "photos").glob("*.npz"))) == 3  # one file per view + plain
    again = photo_data.load_labelled_photos(root, views=1, offline=True,
                                            cache=tmp_path / "other")
    assert np.array_equal(again.images, views.images[:2])  # same seed, same views
    monkeypatch.setattr(photo_data, "VIEW_SEED", 1)
    reseeded = photo_data.load_labelled_photos(root, views=1, offline=True)
    assert not np.array_equal(reseeded.images, views.images[:2])
    monkeypatch.setattr(photo_data, "photo_augment_version", lambda: "changed")
    photo_data.load_labelled_photos(root, views=1, offline=True)
    assert len(list((cache / "photos").glob("*.npz"))) == 5


def test_missing_photo_names_it(tmp_path, cache):
    root = write_photos(tmp_path / "photos")
    (root / ROWS[1].path).unlink()
    with pytest.raises(DataError, match="b.jpg"):
        cached_images(root, ROWS)


# --------------------------------------------------------------------------- datasets


def test_photo_split_keeps_none_rows_and_dataset_drops_them(tmp_path, cache, fake_labels):
    root = write_photos(tmp_path / PHOTOS_NAME)
    split = load_photo_split("train", root, offline=True)
    assert split.labels.tolist() == [1, 7, -1] and len(split.paths) == 3
    ds = load_dataset(PHOTOS_NAME, root, offline=True, verify=False)
    assert ds.train.labels.tolist() == [1, 7] and ds.test.labels.tolist() == [1, 7]
    assert ds.classes[7] == "Sneaker" and ds.format == "photos" and not ds.verified


def test_verify_checks_the_photos_against_the_known_digest(tmp_path, cache, fake_labels,
                                                          monkeypatch):
    root = write_photos(tmp_path / PHOTOS_NAME)
    with pytest.raises(DataError, match="download again"):
        load_dataset(PHOTOS_NAME, root, offline=True)  # not the real photos
    monkeypatch.setattr(photo_data, "CONTENT_SHA256", content_digest(root, ROWS))
    assert load_dataset(PHOTOS_NAME, root, offline=True).verified


def test_fashion_mnist_plus_photos_repeats_photos_and_keeps_the_test_set(
        tmp_path, cache, fake_labels, learnable_csv_dir, monkeypatch):
    root = write_photos(tmp_path / PHOTOS_NAME)
    monkeypatch.setenv("FMNIST_PHOTOS_DIR", str(root))
    base = load_dataset("fashion-mnist", learnable_csv_dir)
    ds = photo_data.load_fashion_mnist_with_photos(learnable_csv_dir, repeat=3, views=2,
                                                   verify=False)
    assert ds.name == MIXED_NAME
    assert len(ds.train) == len(base.train) + 3 * 2 + 2 * 2
    assert ds.train.labels[len(base.train):].tolist() == [1, 7] * 5
    photos = ds.train.images[len(base.train):]
    assert np.array_equal(photos[0], photos[2]) and not np.array_equal(photos[0], photos[6])
    plain = photo_data.load_fashion_mnist_with_photos(learnable_csv_dir, repeat=1, views=0,
                                                      verify=False)
    assert plain.train.labels[len(base.train):].tolist() == [1, 7]
    assert np.array_equal(ds.test.images, base.test.images)
    # --data-dir may point at the photos instead; fashion-mnist then comes from its variable
    monkeypatch.delenv("FMNIST_PHOTOS_DIR")
    monkeypatch.setenv("FMNIST_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="fashion-mnist"):
        load_dataset(MIXED_NAME, root, offline=True, verify=False)


def test_mix_appends_the_photos_repeat_times():
    base = Split(np.zeros((3, 28, 28), np.uint8), np.array([0, 1, 2]))
    photos = Split(np.full((2, 28, 28), 7, np.uint8), np.array([5, 6]))
    out = mix(base, photos, 2)
    assert out.labels.tolist() == [0, 1, 2, 5, 6, 5, 6]
    assert out.images[3:].min() == 7 and out.images[:3].max() == 0


# --------------------------------------------------------------------------- real photos


@pytest.mark.realdata
def test_real_photos_digest_and_validation_split(tmp_path, cache):
    if not REAL_PHOTOS or not Path(REAL_PHOTOS).is_dir():
        pytest.skip("real photos not available: set FMNIST_PHOTOS_DIR to clothing-dataset-small")
    assert content_digest(REAL_PHOTOS) == CONTENT_SHA256
    rows = [r for r in read_labels("validation") if r.label >= 0][::10]  # 28 photos
    images = cached_images(Path(REAL_PHOTOS), rows)
    assert images.shape == (28, 28, 28) and images.dtype == np.uint8
    # dataset-like: light items on black, every image with a bright item
    assert np.median(images[:, 0, :]) == 0 and images.max(axis=(1, 2)).min() == 255
