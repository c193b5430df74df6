"""Harness for the table-driven bad-input tests (tests/test_bad_inputs_*.py).

Each case runs one ``fmnist`` command line in a fresh process and asserts what a user
relies on when they make a mistake:

- the exit code (2 for a user error, 1 for a partial failure, 130 for an interrupt);
- **one line** on stderr, no traceback, that names the input (``names``) and says how to
  fix it (``fix``): each a substring checked case-insensitively;
- nothing changed: the files under the watched folders are byte-for-byte the same as
  before the command (``changes`` lists paths a case is allowed to create or change).

A case is data::

    Case("train-dataset-unknown", ["train", "--dataset", "nope"], names="nope",
         fix="fashion-mnist")
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """One bad input: the arguments after ``fmnist`` and what must come back.

    Arguments may hold ``{tmp}`` (the case's own temporary folder) and any key that the
    module's ``setup`` callable returns (``{run}``, ``{data}``, ...)."""

    id: str
    args: Sequence[str]
    code: int = 2
    names: str | Sequence[str] = ()
    fix: str | Sequence[str] = ()
    changes: Sequence[str] = ()  # glob patterns (relative to {tmp}) allowed to change
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 180.0

    def __str__(self) -> str:  # pytest ids
        return self.id


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_fmnist(args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 180.0, stdin: str | None = None) -> Result:
    """``python -m fmnist ARGS`` in ``cwd`` with a small, fixed environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FMNIST_", "RANK",
                                                                      "WORLD_SIZE"))}
    base.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "120"})
    base.update(env or {})
    p = subprocess.run([sys.executable, "-m", "fmnist", *args], cwd=cwd, env=base,
                       capture_output=True, text=True, timeout=timeout,
                       input=stdin)
    return Result(p.returncode, p.stdout, p.stderr)


def snapshot(*roots: Path) -> dict[str, str]:
    """Path -> sha256 (or "dir") of everything under ``roots``; modes included."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            key = str(p)
            if p.is_dir():
                out[key] = "dir"
            elif p.is_file():
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _as_list(v: str | Sequence[str]) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def check_case(case: Case, tmp: Path, values: dict[str, str], watch: Sequence[Path],
               *, cwd: Path | None = None) -> Result:
    """Run ``case`` and assert its exit code, its one stderr line and that nothing under
    ``watch`` changed (except ``case.changes``)."""
    fmt = {"tmp": str(tmp), **values}
    args = [a.format(**fmt) for a in case.args]
    env = {k: v.format(**fmt) for k, v in case.env.items()}
    before = snapshot(*watch)
    res = run_fmnist(args, cwd=cwd or tmp, env=env, timeout=case.timeout)
    after = snapshot(*watch)
    where = (f"fmnist {' '.join(args)}\n--- stdout\n{res.stdout[-2000:]}"
             f"\n--- stderr\n{res.stderr[-3000:]}")
    assert res.code == case.code, f"exit {res.code}, expected {case.code}: {where}"
    assert "Traceback" not in res.stderr, where
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if case.code == 2:
        errors = [ln for ln in lines if ln.startswith("fmnist: error:")]
        assert len(errors) == 1, f"expected one 'fmnist: error:' line: {where}"
        msg = errors[0].lower()
        for s in _as_list(case.names):
            assert s.format(**fmt).lower() in msg, f"{s!r} not named: {where}"
        for s in _as_list(case.fix):
            assert s.format(**fmt).lower() in msg, f"fix {s!r} not said: {where}"
    allowed = [str(tmp / pat.format(**fmt)) for pat in case.changes]
    diff = [p for p in changed(before, after)
            if not any(Path(p).match(a) or p.startswith(a.rstrip("*")) for a in allowed)]
    assert not diff, f"changed on disk: {diff[:10]}: {where}"
    return res


def parametrize_cases(cases: Sequence[Case]) -> Callable:
    import pytest

    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids), "case ids must be unique"
    return pytest.mark.parametrize("case", cases, ids=ids)
