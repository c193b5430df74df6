"""Real clothing photos with Fashion-MNIST labels, and Fashion-MNIST mixed with them.

Two registered datasets (``fmnist data info --dataset NAME``, ``fmnist train --dataset NAME``):

- ``clothing-dataset-small``: the CC0 photos of github.com/alexeygrigorev/clothing-dataset-small
  (commit :data:`SOURCE_COMMIT`) with our Fashion-MNIST labels (shipped with fmnist as
  ``resources/clothing-dataset-small-labels.csv``). Train split: the 2,501 ``train/`` photos
  with a Fashion-MNIST class; test split: the 277 such ``validation/`` photos. Rows labelled
  -1 ("none of these classes") are kept loadable through :func:`load_photo_split`.
- ``fashion-mnist+photos``: Fashion-MNIST's 60,000 training images plus the labelled training
  photos repeated :data:`PHOTO_REPEAT` times and :data:`PHOTO_VIEWS` random views of each
  (:mod:`fmnist.photo_augment`: the raw photo changed before preprocessing); its test split
  stays Fashion-MNIST's test set.

Photos go through :func:`fmnist.preprocess.preprocess`, the function ``fmnist predict`` uses,
and the 28x28 results are cached as ``.npz`` under ``$FMNIST_CACHE_DIR`` (default
``~/.cache/fmnist``), keyed by the photos' SHA-256 and the preprocessing code's digest, so a
change to either recomputes them. The photo folder is found in this order:

1. ``--data-dir`` (the folder itself, or its ``clothing-dataset-small/`` subfolder);
2. the environment variable ``FMNIST_PHOTOS_DIR``;
3. the default data root ``./data/clothing-dataset-small/``;

failing that the source's archive is downloaded into ``--data-dir`` (or the default root),
checked against :data:`CONTENT_SHA256` and unpacked atomically; ``offline=True`` forbids it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.resources
import inspect
import io
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import (
    DATASETS,
    Dataset,
    DatasetSpec,
    Split,
    download_file,
    load_dataset,
    register_dataset,
)
from .errors import DataError, ImageError
from .fileio import atomic_write
from .progress import Progress

log = logging.getLogger("fmnist")

PHOTOS_NAME = "clothing-dataset-small"
MIXED_NAME = "fashion-mnist+photos"
SOURCE_REPO = "alexeygrigorev/clothing-dataset-small"
SOURCE_COMMIT = "11961516512414bf9f6c150a832cfd21b54a6b54"
ARCHIVE_URL = f"https://github.com/{SOURCE_REPO}/archive/{SOURCE_COMMIT}.zip"
CONTENT_SHA256 = "e238c2324f25345b9fb306770f69abfbc9485c70a82a054c47473a1893292dee"
"""SHA-256 of the labelled photos' listing (see :func:`content_digest`): the archive itself is
made on the fly by the host and not byte-stable, so its unpacked content is what is checked."""
LABELS_FILE = "clothing-dataset-small-labels.csv"
FOLDERS = {"train": "train", "test": "validation"}  # dataset split -> the source's folder
PHOTO_REPEAT = 4
"""How many times the 2,501 training photos appear among Fashion-MNIST's 60,000 images in
``fashion-mnist+photos`` (chosen by real-photo accuracy; see the ``photo`` recipe)."""
PHOTO_VIEWS = 0
"""Random views (:mod:`fmnist.photo_augment`, made before preprocessing) of each training
photo that ``fashion-mnist+photos`` adds besides the photos themselves. 0: one view did not
pay in the fine-tuning screen of the ``photo`` recipe (README), and each view costs a
preprocessing pass over 2,501 photos."""
VIEW_SEED = 0
"""Seed of the cached views: view ``j`` of photo ``i`` comes from ``(VIEW_SEED, i, j)``."""
ENV_PHOTOS = "FMNIST_PHOTOS_DIR"
ENV_CACHE = "FMNIST_CACHE_DIR"


@dataclass(frozen=True)
class PhotoRow:
    """One photo of the label file: its path under the photo folder and its label (-1: none)."""

    path: str
    folder: str
    label: int
    how: str


@dataclass(frozen=True, eq=False)
class PhotoSplit:
    """Preprocessed photos of one split: images (N, 28, 28) uint8, labels (N,) (-1 allowed)."""

    images: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def labelled(self) -> Split:
        """The photos with a Fashion-MNIST class, as a dataset split."""
        keep = self.labels >= 0
        return Split(self.images[keep], self.labels[keep])


# --------------------------------------------------------------------------- labels


def read_labels(folder: str | None = None) -> list[PhotoRow]:
    """The shipped label rows, all 3,409, or those under ``folder`` ("train"/"validation")."""
    text = importlib.resources.files("fmnist").joinpath("resources", LABELS_FILE).read_text()
    rows = [PhotoRow(r["path"], r["folder"], int(r["label"]), r["how"])
            for r in csv.DictReader(io.StringIO(text))]
    return [r for r in rows if folder is None or r.path.startswith(folder + "/")]


# --------------------------------------------------------------------------- locating


def is_photo_root(path: Path) -> bool:
    return all((path / f).is_dir() for f in FOLDERS.values())


def search_places(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, with what each one is."""
    places: list[tuple[str, Path]] = []
    if data_dir is not None:
        places.append(("--data-dir", Path(data_dir)))
    env = os.environ.get(ENV_PHOTOS)
    if env:
        places.append((ENV_PHOTOS, Path(env)))
    places.append(("default data root", Path("data") / PHOTOS_NAME))
    return places


def photos_in(place: Path) -> Path | None:
    """``place`` or its ``clothing-dataset-small/`` subfolder, if it holds ``train/`` and
    ``validation/``."""
    return next((f for f in (place, place / PHOTOS_NAME) if is_photo_root(f)), None)


def find_photos(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The photo folder in the first search place that has one, else None."""
    for _, place in search_places(data_dir):
        if (found := photos_in(place)) is not None:
            return found
    return None


def locate_photos(data_dir: str | os.PathLike | None = None, *, offline: bool = False) -> Path:
    """The photo folder: found (see the module docstring) or downloaded."""
    found = find_photos(data_dir)
    if found is not None:
        return found
    if offline:
        where = ", ".join(f"{p} ({what})" for what, p in search_places(data_dir))
        raise DataError(
            f"{PHOTOS_NAME} photos not found and --offline forbids downloading; looked in "
            f"{where}: pass the folder holding train/ and validation/ with --data-dir or set "
            f"{ENV_PHOTOS}."
        )
    root = Path(data_dir) if data_dir is not None else Path("data")
    return download_photos(root)


# --------------------------------------------------------------------------- checksums


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_digests(root: Path, rows: Sequence[PhotoRow]) -> list[str]:
    """SHA-256 of each row's photo; a missing photo raises naming it and the fix."""
    digests = []
    for r in rows:
        path = root / r.path
        if not path.is_file():
            raise DataError(
                f"{path}: photo listed in the labels is missing; {root} is not a complete "
                f"{PHOTOS_NAME} folder (commit {SOURCE_COMMIT[:7]}): restore it or delete it "
                "and download again."
            )
        digests.append(sha256_file(path))
    return digests


def listing_digest(rows: Sequence[PhotoRow], digests: Sequence[str]) -> str:
    """SHA-256 of the lines ``<path> <sha256>\\n`` of the rows, in label-file order."""
    h = hashlib.sha256()
    for r, d in zip(rows, digests, strict=True):
        h.update(f"{r.path} {d}\n".encode())
    return h.hexdigest()


def content_digest(root: str | os.PathLike, rows: Sequence[PhotoRow] | None = None) -> str:
    """The digest :data:`CONTENT_SHA256` holds for the real photo folder."""
    rows = read_labels() if rows is None else rows
    return listing_digest(rows, file_digests(Path(root), rows))


def verify_photos(root: Path) -> dict[str, str]:
    """``{root: "ok"}`` when the labelled photos are the source's, byte for byte; else raise."""
    found = content_digest(root)
    if found != CONTENT_SHA256:
        raise DataError(
            f"{root}: the photos' SHA-256 listing is {found}, expected {CONTENT_SHA256}; some "
            f"photos differ from {SOURCE_REPO} at {SOURCE_COMMIT[:7]}: restore them, or delete "
            "the folder and download again."
        )
    return {str(root): "ok"}


# --------------------------------------------------------------------------- downloading


def _safe_members(archive: zipfile.ZipFile, source: str) -> list[zipfile.ZipInfo]:
    """The archive's train/ and validation/ files (and README/LICENSE), refusing unsafe names."""
    keep = []
    for info in archive.infolist():
        parts = Path(info.filename).parts
        if info.filename.startswith("/") or ".." in parts:
            raise DataError(f"{source}: archive member {info.filename!r} points outside its "
                            "folder; refusing to unpack it. Download the archive again.")
        if len(parts) >= 2 and not info.is_dir() and (
                parts[1] in FOLDERS.values() or parts[1:] in (("README.md",), ("LICENSE",))):
            keep.append(info)
    return keep


def unpack_photos(zip_path: Path, target: Path, rows: Sequence[PhotoRow],
                  content_sha256: str) -> Path:
    """Unpack the archive's photos into ``target`` if their digest is ``content_sha256``;
    ``target`` appears complete or not at all."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: not a readable zip archive ({e}); delete it and "
                        "download again.") from None
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with archive:
            for info in _safe_members(archive, str(zip_path)):
                dest = tmp.joinpath(*Path(info.filename).parts[1:])
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
        found = content_digest(tmp, rows)
        if found != content_sha256:
            raise DataError(
                f"{zip_path}: unpacked photos have SHA-256 {found}, expected {content_sha256}; "
                f"the archive is not {SOURCE_REPO} at {SOURCE_COMMIT[:7]}: delete it and "
                "download again."
            )
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def download_photos(
    root: str | os.PathLike,
    *,
    url: str = ARCHIVE_URL,
    content_sha256: str = CONTENT_SHA256,
    rows: Sequence[PhotoRow] | None = None,
    **download_kwargs,
) -> Path:
    """Download the source's archive into ``root``, verify and unpack it as
    ``root/clothing-dataset-small``; returns that folder. Retries, progress and the atomic
    rename come from :func:`fmnist.datasets.download_file`."""
    root = Path(root)
    target = root / PHOTOS_NAME
    if target.exists():
        raise DataError(f"{target}: exists but has no train/ and validation/ folders; move it "
                        "away or pass the right folder with --data-dir.")
    root.mkdir(parents=True, exist_ok=True)
    zip_path = root / f"{PHOTOS_NAME}-{SOURCE_COMMIT[:7]}.zip"
    log.info("downloading %s into %s", url, root)
    download_file([url], zip_path, None, **download_kwargs)
    unpack_photos(zip_path, target, read_labels() if rows is None else rows, content_sha256)
    zip_path.unlink()
    return target


# --------------------------------------------------------------------------- preprocessing


def cache_root() -> Path:
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "fmnist"


def preprocess_version() -> str:
    """Digest of the preprocessing code: any change to it invalidates cached images."""
    from . import preprocess

    return hashlib.sha256(inspect.getsource(preprocess).encode()).hexdigest()[:16]


def _photo_images(task: tuple[str, int, int | None]) -> np.ndarray:
    """(28, 28) uint8: one photo through ``preprocess``; with a view number, one random view
    of it (:func:`fmnist.photo_augment.augment_photo`, seeded by ``(VIEW_SEED, index, view)``).
    A top-level function so that worker processes can run it."""
    from PIL import Image

    from .photo_augment import augment_photo, view_rng
    from .preprocess import preprocess

    path, index, view = task
    try:
        if view is None:
            return preprocess(Path(path)).image
        with Image.open(path) as photo:
            return preprocess(augment_photo(photo, view_rng(VIEW_SEED, index, view))).image
    except (ImageError, OSError) as e:
        raise DataError(f"{path}: cannot preprocess this photo ({e}); restore the original "
                        "file.") from None


def preprocess_photos(root: Path, rows: Sequence[PhotoRow], view: int | None = None,
                      workers: int | None = None) -> np.ndarray:
    """(N, 28, 28) uint8: each row's photo (or its random ``view``) through
    :func:`fmnist.preprocess.preprocess`, on ``workers`` processes (default: one per CPU)."""
    tasks = [(str(root / r.path), i, view) for i, r in enumerate(rows)]
    workers = min(len(tasks), workers or os.cpu_count() or 1)
    out = np.zeros((len(rows), 28, 28), np.uint8)
    what = "preprocess photos" if view is None else f"preprocess photo view {view}"
    with Progress(what, len(rows)) as bar, contextlib.ExitStack() as stack:
        results: Iterable[np.ndarray] = map(_photo_images, tasks)
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers))
            results = pool.map(_photo_images, tasks, chunksize=8)
        for i, image in enumerate(results):
            out[i] = image
            bar.advance()
    return out


def photo_augment_version() -> str:
    """Digest of the photo augmentation code: a change to it recomputes the cached views."""
    from . import photo_augment

    return hashlib.sha256(inspect.getsource(photo_augment).encode()).hexdigest()[:16]


def cached_images(root: Path, rows: Sequence[PhotoRow], cache: Path | None = None,
                  view: int | None = None) -> np.ndarray:
    """Preprocessed photos (or their random ``view``) from the cache, or computed and cached,
    keyed by the photos' SHA-256, :func:`preprocess_version` and, for a view, its number,
    :data:`VIEW_SEED` and :func:`photo_augment_version`."""
    what = "" if view is None else f"\nview {view} seed {VIEW_SEED} {photo_augment_version()}"
    key = hashlib.sha256(
        f"{preprocess_version()}\n{listing_digest(rows, file_digests(root, rows))}{what}".encode()
    ).hexdigest()[:32]
    path = (cache or cache_root()) / "photos" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                images = z["images"]
            if images.shape == (len(rows), 28, 28) and images.dtype == np.uint8:
                return images
        except (OSError, ValueError, KeyError):
            pass
        log.warning("%s: unreadable cache file; preprocessing the photos again", path)
    images = preprocess_photos(root, rows, view)
    atomic_write(path, lambda f: np.savez_compressed(f, images=images))
    log.info("cached %d preprocessed photos in %s", len(rows), path)
    return images


# --------------------------------------------------------------------------- loading


def load_photo_split(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    offline: bool = False,
    cache: Path | None = None,
) -> PhotoSplit:
    """Every photo of a split ("train" or "test" = the source's validation/), labels -1
    included; :meth:`PhotoSplit.labelled` keeps those with a class."""
    if split not in FOLDERS:
        raise DataError(f"photo split {split!r} is unknown; use one of {', '.join(FOLDERS)}.")
    root = locate_photos(data_dir, offline=offline)
    rows = read_labels(FOLDERS[split])
    images = cached_images(root, rows, cache)
    labels = np.array([r.label for r in rows], dtype=np.int64)
    return PhotoSplit(images, labels, tuple(r.path for r in rows))


def load_clothing_photos(data_dir: str | os.PathLike | None = None, *, offline: bool = False,
                         verify: bool = True) -> Dataset:
    """The ``clothing-dataset-small`` dataset: labelled train/ photos, labelled validation/
    photos as the test split; ``verify`` checks the photos against :data:`CONTENT_SHA256`."""
    train = load_photo_split("train", data_dir, offline=offline)
    test = load_photo_split("test", data_dir, offline=offline)
    root = locate_photos(data_dir, offline=True)
    return Dataset(PHOTOS_NAME, DATASETS.get(PHOTOS_NAME).classes, train.labelled(),
                   test.labelled(), root, "photos", verify_photos(root) if verify else {})


def mix(base: Split, photos: Split, repeat: int) -> Split:
    """``base`` followed by ``photos`` repeated ``repeat`` times."""
    images = np.concatenate([base.images] + [photos.images] * repeat)
    labels = np.concatenate([base.labels] + [photos.labels] * repeat)
    return Split(images, labels)


def load_labelled_photos(
    data_dir: str | os.PathLike | None = None,
    *,
    views: int | None = None,
    offline: bool = False,
    cache: Path | None = None,
) -> Split:
    """The 2,501 labelled training photos (rows -1 are never preprocessed); with ``views``,
    that many random views of each instead (augmented before preprocessing,
    :mod:`fmnist.photo_augment`), view after view: ``views * 2,501`` images."""
    root = locate_photos(data_dir, offline=offline)
    rows = [r for r in read_labels(FOLDERS["train"]) if r.label >= 0]
    labels = np.array([r.label for r in rows], dtype=np.int64)
    if views is None:
        return Split(cached_images(root, rows, cache), labels)
    images = [cached_images(root, rows, cache, view=v) for v in range(views)]
    return Split(np.concatenate(images or [np.zeros((0, 28, 28), np.uint8)]),
                 np.tile(labels, views))


def load_fashion_mnist_with_photos(
    data_dir: str | os.PathLike | None = None,
    *,
    offline: bool = False,
    verify: bool = True,
    repeat: int = PHOTO_REPEAT,
    views: int = PHOTO_VIEWS,
) -> Dataset:
    """``fashion-mnist+photos``: Fashion-MNIST train + the labelled training photos x
    ``repeat`` + ``views`` random views of each; test = Fashion-MNIST's test set.
    ``data_dir`` may hold either dataset (the other is found through its environment
    variable)."""
    photo_dir = photos_in(Path(data_dir)) if data_dir is not None else None
    fmnist = load_dataset("fashion-mnist", None if photo_dir else data_dir,
                          offline=offline, verify=verify)
    photos = load_labelled_photos(photo_dir, offline=offline)
    extra = load_labelled_photos(photo_dir, views=views, offline=offline)
    checksums = {**fmnist.checksums,
                 **(verify_photos(locate_photos(photo_dir, offline=True)) if verify else {})}
    train = mix(mix(fmnist.train, photos, repeat), extra, 1)
    return Dataset(MIXED_NAME, fmnist.classes, train, fmnist.test, fmnist.source,
                   "idx+photos", checksums)


_FMNIST_CLASSES = DATASETS.get("fashion-mnist").classes
register_dataset(DatasetSpec(
    name=PHOTOS_NAME, classes=_FMNIST_CLASSES, mirrors=(ARCHIVE_URL,), md5={},
    description="3,409 real clothing photos (CC0) with Fashion-MNIST labels",
    loader=load_clothing_photos,
))
register_dataset(DatasetSpec(
    name=MIXED_NAME, classes=_FMNIST_CLASSES, mirrors=(), md5={},
    description=f"Fashion-MNIST train + the clothing photos x{PHOTO_REPEAT}; "
                "Fashion-MNIST test",
    loader=load_fashion_mnist_with_photos,
))
