"""Datasets of the Fashion-MNIST shape: registry, locating, downloading, verifying, reading.

``load_dataset("fashion-mnist")`` finds the four IDX files in this order:

1. an explicit ``data_dir`` (``--data-dir``);
2. the environment variable ``FMNIST_DATA_DIR``;
3. the default data root ``./data/<dataset>/``;
4. the Keras cache ``~/.keras/datasets/<dataset>/``;

where each place may hold the files directly, in ``<dataset>/``, in a torchvision-style
``raw/`` or ``<TorchName>/raw/`` folder, gzipped or not. Failing that it downloads them
into ``data_dir`` (or the default root) from the public mirrors with retries, an MD5 check
and an atomic rename; ``offline=True`` forbids that and says where it looked.

An explicit ``data_dir`` is used or refused, never replaced by another place: it may hold
the IDX files (as above), Kaggle-style CSVs (``*train*.csv`` and ``*test*.csv``) or an
image folder (``<class>/<images>``, optionally under ``train/`` and ``test/``). When it does
not exist or is empty, a registered dataset is downloaded into it (unless ``offline``);
anything else it holds that is not a dataset is refused with what was looked for.

Files are verified by the MD5 of their uncompressed content, so a genuine copy that was
unzipped or re-compressed is still recognised; a file with other content is refused.
Every loaded dataset is checked by :func:`validate_dataset` (two classes or more, both
splits non-empty, the same classes in both).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import DataError
from .fileio import atomic_write
from .progress import Progress
from .registry import Registry

log = logging.getLogger("fmnist")

IMAGE_SIZE = 28
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
PARTS = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _augment_name(spec: str) -> str:
    return spec.partition(":")[0].strip()


@dataclass(frozen=True)
class AugmentPolicy:
    """Which training augmentations keep a dataset's labels (a flipped 2 is no 2)."""

    label_preserving: tuple[str, ...] | None = None  # augmentation names; None: every one
    instead: tuple[str, ...] = ()  # added when a recipe's augmentation had to be dropped

    def preserves(self, augment: str) -> bool:
        """Does ``augment`` ("name" or "name:param") keep this dataset's labels?"""
        return self.label_preserving is None or _augment_name(augment) in self.label_preserving

    def fit(self, augment: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(applied, dropped): the label-preserving part of ``augment``, plus ``instead``
        (those of its names not there yet) when something was dropped."""
        kept = tuple(a for a in augment if self.preserves(a))
        dropped = tuple(a for a in augment if not self.preserves(a))
        if dropped:
            have = {_augment_name(a) for a in kept}
            kept += tuple(a for a in self.instead if _augment_name(a) not in have)
        return kept, dropped


# Digits and characters change under a mirror flip; small shifts, mild affine maps and
# erasing keep them. 1-px shifts replace a recipe's flips (gentle enough for 3 epochs).
CHARACTERS = AugmentPolicy(label_preserving=("translate", "affine", "erase", "photometric"),
                           instead=("translate:1",))


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: its four IDX files, their MD5s, where to get them, class names."""

    name: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # part -> MD5 of the .gz file as published
    raw_md5: dict[str, str] = field(default_factory=dict)  # part -> MD5 of the content
    torch_name: str = ""  # torchvision's folder name, e.g. FashionMNIST
    description: str = ""
    augment_policy: AugmentPolicy = AugmentPolicy()
    # a dataset not made of four IDX files (photos, mixes) brings its own
    # loader(data_dir, offline=..., verify=...) -> Dataset; see fmnist.photo_data
    loader: Callable[..., Dataset] | None = None
    files: dict[str, str] = field(
        default_factory=lambda: {
            "train_images": "train-images-idx3-ubyte.gz",
            "train_labels": "train-labels-idx1-ubyte.gz",
            "test_images": "t10k-images-idx3-ubyte.gz",
            "test_labels": "t10k-labels-idx1-ubyte.gz",
        }
    )


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.add(spec.name, spec)


register_dataset(
    DatasetSpec(
        name="fashion-mnist",
        description="Zalando's 70,000 clothing images, 10 classes",
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        mirrors=(
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",  # Keras
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # torchvision
        ),
        md5={
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # computed here from the genuine files: gzip -dc FILE.gz | md5sum
        raw_md5={
            "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
            "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
            "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        torch_name="FashionMNIST",
    )
)
register_dataset(
    DatasetSpec(
        name="mnist",
        description="LeCun's 70,000 handwritten digits",
        classes=tuple(str(d) for d in range(10)),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        # MD5s of the unzipped files, listed next to the .gz MD5s above (the same four
        # pairs) in public MNIST fetch scripts, e.g. a bash script declaring
        # MNIST_EXTRACTED_FILES_MD5 / MNIST_ARCHIVE_MD5 and a CMake fetch_mnist() with
        # MNIST_EXTRACTED_FILE_MD5S / MNIST_ARCHIVE_MD5S; secml's CDataLoaderMNIST and a
        # paper's data script ("MD5 checksums of the uncompressed files") give the same.
        raw_md5={
            "train_images": "6bbc9ace898e44ae57da46a324031adb",
            "train_labels": "a25bea736e30d166cdddb491f175f624",
            "test_images": "2646ac647ad5339dbf082846283269ea",
            "test_labels": "27ae3e4e09519cfbb04c329615203637",
        },
        torch_name="MNIST",
        augment_policy=CHARACTERS,
    )
)
register_dataset(
    DatasetSpec(
        name="kmnist",
        description="Kuzushiji-MNIST: 70,000 cursive Japanese characters",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),  # torchvision
        md5={
            "train_images": "bdb82020997e1d708af4cf47b453dcf7",
            "train_labels": "e144d726b3acfaa3e44228e80efcd344",
            "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
            "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        # No trustworthy MD5 of the unzipped KMNIST files was found: the genuine .gz files
        # are verified by their own MD5; unzipped ones load as "not verified".
        torch_name="KMNIST",
        augment_policy=CHARACTERS,
    )
)


def list_datasets() -> list[str]:
    return DATASETS.names()


# --------------------------------------------------------------------------- data objects


def pixel_moments(images: np.ndarray) -> tuple[float, float]:
    """(mean, standard deviation) of the pixels of ``images``, scaled to [0, 1].

    uint8 images (every registered format) are counted value by value in chunks and the
    moments computed from the exact integer sums: 0.05 s for Fashion-MNIST's 47 million
    pixels, where ``ndarray.std`` (a float64 copy and two passes) took 0.8 s of every
    training command's start. Any other dtype falls back to numpy's float64 moments."""
    flat = np.asarray(images).reshape(-1)
    if flat.dtype != np.uint8 or flat.size == 0:
        return (float(flat.mean(dtype=np.float64) / 255.0),
                float(flat.std(dtype=np.float64) / 255.0))
    counts = np.zeros(256, np.int64)
    for start in range(0, flat.size, 1 << 18):
        counts += np.bincount(flat[start:start + (1 << 18)], minlength=256)
    values = np.arange(256, dtype=np.int64)
    n, total = int(flat.size), int(counts @ values)
    squares = int(counts @ (values * values))
    var = (n * squares - total * total) / (n * n)  # exact integers, one rounding
    return total / n / 255.0, math.sqrt(var) / 255.0


@dataclass(frozen=True, eq=False)
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: train and test splits, class names and where it came from."""

    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split
    source: Path
    format: str  # "idx", "csv" or "image-folder"
    checksums: dict[str, str] = field(default_factory=dict)  # file -> "ok" | "unknown"
    augment_policy: AugmentPolicy = AugmentPolicy()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train):,}, test={len(self.test):,}, "
                f"classes={len(self.classes)}, format={self.format!r}, "
                f"source={str(self.source)!r})")

    def _repr_html_(self) -> str:
        from .display import dataset_card

        return dataset_card(self)

    @property
    def verified(self) -> bool:
        """True when every file's MD5 was checked against the registry and matched."""
        return bool(self.checksums) and all(v == "ok" for v in self.checksums.values())

    @cached_property
    def _pixel_moments(self) -> tuple[float, float]:
        """(mean, std) of the training pixels: one pass for both, read as they are asked."""
        return pixel_moments(self.train.images)

    @property
    def mean(self) -> float:
        """Mean pixel value of the training images, in [0, 1] (for normalization)."""
        return self._pixel_moments[0]

    @property
    def std(self) -> float:
        """Pixel standard deviation of the training images, in [0, 1]."""
        return self._pixel_moments[1]

    def split_validation(self, fraction: float, seed: int = 0) -> tuple[Split, Split]:
        """Stratified, deterministic (train, validation) split of the training set."""
        train_idx, val_idx = stratified_split(self.train.labels, fraction, seed)
        return self.train.subset(train_idx), self.train.subset(val_idx)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) holding out ``fraction`` of every class, seeded."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1); got {fraction}.")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        held.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


# --------------------------------------------------------------------------- IDX reader


def _open_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":  # one call (CRC checked) that lets go of the GIL
            return gzip.decompress(path.read_bytes())
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{path}: cannot read ({e}). The file is truncated or corrupt: delete it and "
            "download again, or pass the right folder with --data-dir."
        ) from None


def read_idx(path: str | os.PathLike, *, kind: str) -> np.ndarray:
    """Read an IDX file (``kind`` "images" -> (N, 28, 28) uint8, "labels" -> (N,) int64)."""
    return parse_idx(_open_bytes(Path(path)), Path(path), kind=kind)


def parse_idx(data: bytes, path: Path, *, kind: str) -> np.ndarray:
    """The array in an IDX file's uncompressed bytes ``data`` (``path`` names it in errors)."""
    magic_expected, ndim = (IDX_IMAGES_MAGIC, 3) if kind == "images" else (IDX_LABELS_MAGIC, 1)
    fix = "Check that this is the right file, or delete it and download again."
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != magic_expected:
        found = f"{magic} (0x{magic:08x})" if magic is not None else "missing"
        raise DataError(
            f"{path}: IDX magic number {found}, expected {magic_expected} "
            f"(0x{magic_expected:08x}) for an {kind} file. {fix}"
        )
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header. {fix}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if kind == "images" and dims[1:] != [IMAGE_SIZE, IMAGE_SIZE]:
        raise DataError(
            f"{path}: images are {dims[1]}x{dims[2]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}. "
            "fmnist reads datasets of the Fashion-MNIST shape only."
        )
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    found = len(data) - offset
    if found != expected:
        raise DataError(
            f"{path}: header says {'x'.join(map(str, dims))} = {expected} bytes of data, "
            f"found {found}. The file is truncated or corrupt: delete it and download again."
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)
    return array.copy() if kind == "images" else array.astype(np.int64)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write uint8 images (N, 28, 28) or labels (N,) as IDX; gzipped if the name ends .gz."""
    array = np.asarray(array, dtype=np.uint8)
    magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    return atomic_write(path, lambda f: f.write(payload))


# --------------------------------------------------------------------------- CSV reader


def read_csv(path: str | os.PathLike) -> Split:
    """Read a Kaggle-style CSV: ``label,pixel1..pixel784`` with a header row."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}).") from None
    has_header = bool(first) and not first.split(",")[0].strip().lstrip("-").isdigit()
    n_cols = 1 + IMAGE_SIZE * IMAGE_SIZE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(
                path, delimiter=",", skiprows=int(has_header), dtype=np.int64, ndmin=2
            )
    except ValueError as e:
        raise DataError(
            f"{path}: not a valid CSV of integers in the layout label,pixel1..pixel784 "
            f"({str(e).splitlines()[0]})."
        ) from None
    if table.size == 0:
        raise DataError(f"{path}: no data rows. Expected label,pixel1..pixel784 rows.")
    if table.shape[1] != n_cols:
        raise DataError(
            f"{path}: {table.shape[1]} columns per row, expected {n_cols} "
            "(label,pixel1..pixel784)."
        )
    pixels = table[:, 1:]
    if pixels.min() < 0 or pixels.max() > 255:
        bad = int(np.argwhere((pixels < 0) | (pixels > 255))[0, 0]) + 1 + int(has_header)
        raise DataError(f"{path}: pixel values must be 0..255; line {bad} has one outside.")
    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return Split(images, table[:, 0].astype(np.int64))


# --------------------------------------------------------------------------- image folders


MIN_IMAGES_PER_CLASS = 4  # without train/ and test/: 1/7 held out, so >= 1 test image


def _read_image_28(path: Path) -> np.ndarray:
    """One image file as ``predict`` sees it: 28x28 dataset-like images pass through,
    any other size (a photo) goes through :func:`fmnist.preprocess.preprocess`."""
    from .errors import ImageError
    from .preprocess import preprocess

    try:
        return preprocess(path, name=str(path)).image
    except ImageError as e:
        reason = str(e).removeprefix(f"{path}: ").rstrip(".")
        raise DataError(f"{path}: {reason}; or remove it from the folder.") from None


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(
    root: str | os.PathLike, classes: Sequence[str] | None = None
) -> tuple[Split, tuple[str, ...]]:
    """Read ``root/<class>/*.png|jpg|...`` as 28x28 grayscale; class names from folders.

    Every image is decoded and sized exactly as ``fmnist predict`` does it. With
    ``classes`` given, their folders are read in that order (a missing folder adds none)."""
    root = Path(root)
    dirs = _class_dirs(root)
    names = tuple(classes) if classes is not None else tuple(d.name for d in dirs)
    if not names:
        raise DataError(f"{root}: no class folders. Expected {root}/<class name>/<image files>.")
    files = {name: _image_files(root / name) for name in names}
    empty = [n for n in names if (root / n).is_dir() and not files[n]]
    if empty:
        raise DataError(
            f"{root / empty[0]}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)}); "
            "add images of that class or remove the folder."
        )
    paths = [p for name in names for p in files[name]]
    labels = [label for label, name in enumerate(names) for _ in files[name]]
    images: list[np.ndarray] = []
    if len(paths) > 300:
        log.info("reading %d images from %s (photos are preprocessed like predict's)",
                 len(paths), root)
    with Progress(f"read {root}", len(paths), unit="images", enabled=len(paths) > 300) as bar:
        for path in paths:
            images.append(_read_image_28(path))
            bar.advance()
    if not images:
        raise DataError(
            f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} in class folders)."
        )
    split = Split(np.stack(images), np.asarray(labels, dtype=np.int64))
    return split, names


# --------------------------------------------------------------------------- checksums


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _owner(path: Path, content: bytes | None = None) -> str | None:
    """Name of the registered dataset whose file this is (by content or container MD5)."""
    raw = hashlib.md5(_open_bytes(path) if content is None else content).hexdigest()
    packed = md5sum(path) if path.suffix == ".gz" else raw
    for name, spec in DATASETS.items():
        if raw in spec.raw_md5.values() or packed in spec.md5.values():
            return name
    return None


def verify_content(path: Path, content: bytes, spec: DatasetSpec, part: str) -> str:
    """Check a file against the registry: "ok", "unknown" (nothing to check against) or raise.

    ``content`` is the file's uncompressed bytes. Its MD5 is compared with the published
    MD5 of the uncompressed file, so an unzipped or re-compressed genuine copy is "ok".
    Without one, only a .gz file can be checked, by the MD5 of the published .gz."""
    expected = spec.raw_md5.get(part)
    if expected:
        found, what = hashlib.md5(content).hexdigest(), "uncompressed content"
    elif path.suffix == ".gz" and spec.md5.get(part):
        expected, found, what = spec.md5[part], md5sum(path), ".gz file"
    else:
        return "unknown"
    if found == expected:
        return "ok"
    other = _owner(path, content)
    what_else = f" It is a {other} file, not {spec.name}." if other and other != spec.name else ""
    unzip = ("" if spec.raw_md5.get(part) else
             " (a re-compressed copy cannot be checked: unzip it to load it unverified)")
    raise DataError(
        f"{path}: MD5 checksum mismatch for {spec.name} {part}: expected {expected}, "
        f"found {found} (MD5 of the {what}).{what_else} It is not the genuine file{unzip}: "
        "replace it with a genuine copy (delete it and run without --offline to download "
        "one), or pass the folder with the right files via --data-dir."
    )


def verify_file(path: Path, spec: DatasetSpec, part: str) -> str:
    """:func:`verify_content` of a file on disk."""
    return verify_content(path, _open_bytes(path), spec, part)


# --------------------------------------------------------------------------- locating


def _part_path(folder: Path, spec: DatasetSpec, part: str) -> Path | None:
    gz = folder / spec.files[part]
    for candidate in (gz, gz.with_suffix("")):
        if candidate.is_file():
            return candidate
    return None


def _expand(place: Path, spec: DatasetSpec) -> list[Path]:
    """The folders inside one search place where the files may sit."""
    subs = [place / spec.name, place / spec.name / "raw", place / "raw", place]
    if spec.torch_name:
        subs.insert(2, place / spec.torch_name / "raw")
    return subs


def search_places(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places searched, in order, with what each one is: an explicit ``data_dir``
    alone, else the environment variable, the default data root and the Keras cache."""
    if data_dir is not None:
        return [("--data-dir", Path(data_dir))]
    places: list[tuple[str, Path]] = []
    env = os.environ.get("FMNIST_DATA_DIR")
    if env:
        places.append(("FMNIST_DATA_DIR", Path(env)))
    places.append(("default data root", Path("data")))
    places.append(("Keras cache", Path.home() / ".keras" / "datasets"))
    return places


@dataclass
class Search:
    """The outcome of :func:`find_files`: the files, or where we looked and what we skipped."""

    files: dict[str, Path] | None
    looked: list[Path]
    skipped: list[tuple[Path, str]]  # (folder, the dataset its files belong to)


def find_files(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> Search:
    """Find the four files in the search places, in order (see the module docstring)."""
    looked: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for _, place in search_places(data_dir):
        for folder in _expand(place, spec):
            looked.append(folder)
            found = {part: _part_path(folder, spec, part) for part in PARTS}
            if not all(found.values()):
                continue
            owner = _owner(found["train_labels"])  # type: ignore[arg-type]
            if owner is not None and owner != spec.name:
                log.debug("skipping %s: it holds %s, not %s", folder, owner, spec.name)
                skipped.append((folder, owner))
                continue
            return Search(found, looked, skipped)  # type: ignore[arg-type]
    return Search(None, looked, skipped)


# --------------------------------------------------------------------------- downloading


def download_file(
    urls: Iterable[str],
    dest: Path,
    md5: str | None,
    *,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    opener: Callable[..., object] = urllib.request.urlopen,
) -> Path:
    """Download the first URL that works into ``dest``, atomically, checking the MD5.

    Each URL is tried ``retries`` times on network and server errors (with growing
    pauses); a 404 or a checksum mismatch moves on to the next URL at once. No partial
    or unverified file is ever left under ``dest``.
    """
    errors: list[str] = []
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                _fetch(url, dest, md5, timeout=timeout, opener=opener)
                return dest
            except _ChecksumError as e:
                errors.append(f"{url}: {e}")
                break
            except urllib.error.HTTPError as e:
                errors.append(f"{url}: HTTP {e.code} {e.reason}")
                if e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                errors.append(f"{url}: {reason}")
            if attempt < retries:
                time.sleep(backoff * attempt)
    raise DataError(
        f"could not download {dest.name}: " + "; ".join(errors[-4:]) + ". Check the network, "
        "or download the files yourself and pass their folder with --data-dir."
    )


class _ChecksumError(Exception):
    pass


def _fetch(url: str, dest: Path, md5: str | None, *, timeout: float, opener) -> None:
    digest = hashlib.md5()

    def write(f) -> None:
        with opener(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            with Progress(f"download {dest.name}", float(total) if total else None, unit="B") as p:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    p.advance(len(chunk))
        if md5 and digest.hexdigest() != md5:
            raise _ChecksumError(f"MD5 {digest.hexdigest()}, expected {md5}")

    atomic_write(dest, write)


def download(spec: DatasetSpec, root: str | os.PathLike, **kwargs) -> dict[str, Path]:
    """Download any of the dataset's files missing from ``root``; returns their paths."""
    root = Path(root)
    paths: dict[str, Path] = {}
    for part in PARTS:
        existing = _part_path(root, spec, part)
        if existing is not None:
            paths[part] = existing
            continue
        name = spec.files[part]
        log.info("downloading %s %s into %s", spec.name, name, root)
        urls = [m + name for m in spec.mirrors]
        paths[part] = download_file(urls, root / name, spec.md5[part], **kwargs)
    return paths


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str | DatasetSpec = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    offline: bool = False,
    verify: bool = True,
) -> Dataset:
    """Load a registered dataset (IDX), or the CSVs / image folder in ``data_dir``.

    ``name`` is a registered dataset (``fmnist.datasets.list_datasets()``) or a
    :class:`DatasetSpec` of your own; its class names are used for CSVs. An explicit
    ``data_dir`` is used or refused, never replaced by another place (see the module
    docstring). Raises :class:`~fmnist.errors.DataError` with what was looked for and how
    to fix it; the result has passed :func:`validate_dataset`.
    """
    spec = name if isinstance(name, DatasetSpec) else DATASETS.get(name)
    if spec.loader is not None:
        return validate_dataset(spec.loader(data_dir, offline=offline, verify=verify))
    if data_dir is not None:
        ds = _load_explicit(spec, Path(data_dir), offline=offline, verify=verify)
    else:
        ds = _load_searched(spec, offline=offline, verify=verify)
    return validate_dataset(ds)


def _load_searched(spec: DatasetSpec, *, offline: bool, verify: bool) -> Dataset:
    search = find_files(spec)
    found = search.files
    if found is None:
        if offline:
            where = "\n  ".join(str(p) for p in search.looked)
            other = "".join(f"\nSkipped {folder}: it holds {owner} files, not {spec.name}."
                            for folder, owner in search.skipped)
            raise DataError(
                f"{spec.name} files not found and --offline forbids downloading. Looked in:\n  "
                f"{where}{other}\nPut {', '.join(spec.files.values())} in one of these "
                "folders, or set FMNIST_DATA_DIR to the folder holding them."
            )
        found = download(spec, Path("data") / spec.name)
    return _load_idx_dataset(spec, found, verify=verify)


def _load_explicit(spec: DatasetSpec, folder: Path, *, offline: bool, verify: bool) -> Dataset:
    """The dataset in ``folder`` (CSV, image folder or IDX), a download into it when it is
    missing or empty, or a DataError: never a dataset from somewhere else."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a folder. Pass the folder that holds the "
                        "dataset files with --data-dir.")
    if folder.is_dir():
        csvs = _find_csvs(folder)
        if csvs is not None:
            return _load_csv_dataset(spec, folder, *csvs)
        if _is_image_folder(folder):
            return _load_image_folder_dataset(folder)
        search = find_files(spec, folder)
        if search.files is not None:
            return _load_idx_dataset(spec, search.files, verify=verify)
        if search.skipped:
            where, owner = search.skipped[0]
            raise DataError(f"{where}: holds {owner} files, not {spec.name}. Add --dataset "
                            f"{owner}, or pass the folder with the {spec.name} files.")
    partial = folder.is_dir() and any(_part_path(folder, spec, p) for p in PARTS)
    if folder.is_dir() and any(folder.iterdir()) and not partial:
        raise DataError(
            f"{folder}: holds no dataset: expected the {spec.name} IDX files "
            f"({', '.join(spec.files.values())}), a *train*.csv and a *test*.csv, or an image "
            "folder (<class>/<images>). Pass the folder that holds them with --data-dir."
        )
    if offline or not spec.mirrors:
        missing = [spec.files[p] for p in PARTS if not (folder.is_dir() and _part_path(
            folder, spec, p))]
        raise DataError(
            f"{folder}: no {spec.name} files ({', '.join(missing)} missing) and "
            f"{'--offline forbids' if offline else 'no mirror allows'} downloading. Put the "
            "files there, or drop --offline to download them into it."
        )
    log.info("%s holds no %s files: downloading them into it", folder, spec.name)
    created = not folder.exists()
    try:
        files = download(spec, folder)
    except DataError:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # leave no empty folder behind a failed download
        raise
    return _load_idx_dataset(spec, files, verify=verify)


def _load_idx_dataset(spec: DatasetSpec, files: dict[str, Path], *, verify: bool) -> Dataset:
    arrays: dict[str, np.ndarray] = {}
    checksums: dict[str, str] = {}
    for part, path in files.items():
        content = _open_bytes(path)
        if verify:
            checksums[str(path)] = verify_content(path, content, spec, part)
        arrays[part] = parse_idx(content, path, kind=part.split("_")[1])
    train = Split(arrays["train_images"], arrays["train_labels"])
    test = Split(arrays["test_images"], arrays["test_labels"])
    for split_name, split, img_part in (("train", train, "train_images"),
                                        ("test", test, "test_images")):
        if len(split.images) != len(split.labels):
            raise DataError(
                f"{files[img_part]}: {len(split.images)} {split_name} images but "
                f"{len(split.labels)} labels. The two files do not belong together."
            )
        _check_labels(split.labels, len(spec.classes), files[img_part].parent)
    return Dataset(spec.name, spec.classes, train, test, files["train_images"].parent, "idx",
                   checksums, spec.augment_policy)


def _check_labels(labels: np.ndarray, num_classes: int, source: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{source}: labels range {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}."
        )


def _find_csvs(folder: Path) -> tuple[Path, Path] | None:
    """(train, test) CSVs in ``folder``; None without CSVs; a DataError for only one."""
    csvs = sorted(folder.glob("*.csv"))
    train = [p for p in csvs if "train" in p.name.lower()]
    test = [p for p in csvs if "test" in p.name.lower()]
    if train and test:
        return train[0], test[0]
    if train or test:
        have, role = (train[0], "test") if train else (test[0], "train")
        raise DataError(f"{folder}: found {have.name} but no {role} CSV; add one whose name "
                        f"contains '{role}' (e.g. {role}.csv, rows label,pixel1..pixel784) "
                        "next to it.")
    return None


def _load_csv_dataset(spec: DatasetSpec, folder: Path, train_csv: Path, test_csv: Path
                      ) -> Dataset:
    train, test = read_csv(train_csv), read_csv(test_csv)
    _check_labels(train.labels, len(spec.classes), train_csv)
    _check_labels(test.labels, len(spec.classes), test_csv)
    return Dataset(spec.name, spec.classes, train, test, folder, "csv",
                   augment_policy=spec.augment_policy)


def _is_image_folder(folder: Path) -> bool:
    dirs = _class_dirs(folder)
    return bool(dirs) and not any((d / "raw").exists() for d in dirs) and any(
        p.suffix.lower() in IMAGE_SUFFIXES for d in dirs for p in d.rglob("*")
    )


def _load_image_folder_dataset(folder: Path, test_fraction: float = 1 / 7) -> Dataset:
    has = [part for part in ("train", "test") if (folder / part).is_dir()]
    if len(has) == 1:
        other = "test" if has == ["train"] else "train"
        raise DataError(f"{folder}: has {has[0]}/ but no {other}/ folder; add "
                        f"{folder / other}/<class>/<images>, or put the class folders directly "
                        f"in {folder} to hold out a test split automatically.")
    if has:
        names = sorted({d.name for part in ("train", "test") for d in _class_dirs(folder / part)})
        train, classes = read_image_folder(folder / "train", names)
        test, _ = read_image_folder(folder / "test", names)
    else:
        everything, classes = read_image_folder(folder)
        counts = everything.counts(len(classes))
        if counts.min() < MIN_IMAGES_PER_CLASS:
            few = int(counts.argmin())
            raise DataError(
                f"{folder / classes[few]}: only {counts[few]} images; at least "
                f"{MIN_IMAGES_PER_CLASS} per class are needed to hold out a test image. Add "
                "images, or split them yourself into train/<class>/ and test/<class>/."
            )
        rest, held = stratified_split(everything.labels, test_fraction, seed=0)
        train, test = everything.subset(rest), everything.subset(held)
        log.info("%s has no train/ and test/ folders: held out %.0f%% per class as test",
                 folder, 100 * test_fraction)
    return Dataset(folder.resolve().name, classes, train, test, folder, "image-folder")


def validate_dataset(ds: Dataset) -> Dataset:
    """Refuse a dataset no classifier can be trained and tested on: one class, an empty
    split, or classes found in one split only. Returns ``ds`` unchanged."""
    for split_name in ("train", "test"):
        if len(getattr(ds, split_name)) == 0:
            raise DataError(f"{ds.source}: the {split_name} split of {ds.name} is empty; add "
                            f"{split_name} images of every class.")
    in_train, in_test = set(np.unique(ds.train.labels)), set(np.unique(ds.test.labels))
    if len(in_train) < 2:
        only = ds.classes[next(iter(in_train))]
        raise DataError(f"{ds.source}: the training split holds one class ({only!r}); a "
                        "classifier needs at least 2: add images of the other classes.")
    for missing, have, lack in ((in_test - in_train, "test", "training"),
                                (in_train - in_test, "training", "test")):
        if missing:
            names = ", ".join(repr(ds.classes[c]) for c in sorted(missing))
            raise DataError(f"{ds.source}: class {names} has {have} images but no {lack} "
                            f"images; add {lack} images of it, or remove it from the "
                            f"{have} split.")
    return ds


def summary(ds: Dataset) -> dict:
    """Shapes, per-class counts, pixel statistics and provenance, as plain data."""
    return {
        "dataset": ds.name,
        "format": ds.format,
        "source": str(ds.source),
        "checksums": ds.checksums,
        "verified": ds.verified,
        "classes": list(ds.classes),
        "train_shape": list(ds.train.images.shape),
        "test_shape": list(ds.test.images.shape),
        "train_counts": ds.train.counts(ds.num_classes).tolist(),
        "test_counts": ds.test.counts(ds.num_classes).tolist(),
        "pixel_mean": round(ds.mean, 4),
        "pixel_std": round(ds.std, 4),
        "pixel_min": int(ds.train.images.min()),
        "pixel_max": int(ds.train.images.max()),
        "label_preserving_augment": (None if ds.augment_policy.label_preserving is None
                                     else list(ds.augment_policy.label_preserving)),
    }


from . import photo_data  # noqa: E402, F401  (registers the photo datasets)
