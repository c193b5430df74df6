"""Output paths, checked before any work: one owner for "can we write there, and may we?".

Policy (the same for every command): a file you name with ``--out`` / ``--csv`` is never
replaced unless you add ``--overwrite``; a missing parent folder is created. Files fmnist
owns inside a run folder (the default ``RUN/model.onnx``, ``RUN/report.html``) and the
``*.steps.png`` files that ``predict --show-steps`` writes are regenerated in place. Every
refusal is one :class:`~fmnist.errors.OutputPathError` naming the flag, the path and the fix,
raised before a model is loaded or a dataset read.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputPathError


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder (or file in the way) of ``path`` that exists."""
    p = path.absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_parent(path: Path, flag: str) -> None:
    """The folder ``path`` will be written into exists and is writable, or can be made."""
    parent = _existing_ancestor(path)
    if not parent.is_dir():
        raise OutputPathError(f"{flag} {path}: {parent} is a file, not a folder; pass a path "
                              "under a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: the folder {parent} is not writable; pass a "
                              "path in a folder you can write to.")


def check_output_file(path: str | os.PathLike, *, flag: str, overwrite: bool = False,
                      suffix: str | None = None) -> Path:
    """Refuse an output file that is a folder, exists (unless ``overwrite``), has the wrong
    ``suffix``, or cannot be written; return it as a Path. Writes nothing."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{flag} {p}: is a folder, not a file; pass a file name "
                              f"(e.g. {p / ('out' + (suffix or ''))}).")
    if suffix is not None and p.suffix.lower() != suffix:
        raise OutputPathError(f"{flag} {p}: the file name must end in {suffix}; pass e.g. "
                              f"{p.with_suffix(suffix)}.")
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise OutputPathError(f"{flag} {p}: the file exists; pass another name, or add "
                                  "--overwrite to replace it.")
        if not os.access(p, os.W_OK):
            raise OutputPathError(f"{flag} {p}: the file is not writable; pass a path you can "
                                  "write to.")
    _check_parent(p, flag)
    return p


def check_output_dir(path: str | os.PathLike, *, flag: str) -> Path:
    """Refuse an output folder that is a file or cannot be written (a missing one is fine:
    it is created when written); return it as a Path. Writes nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {p}: is a file, not a folder; pass a folder (it is "
                              "created if missing).")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"{flag} {p}: the folder is not writable; pass a folder you "
                                  "can write to.")
        return p
    _check_parent(p, flag)
    return p
