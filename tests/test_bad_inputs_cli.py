"""Bad inputs at the command line in general (table-driven; harness in badinput.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import badinput
from badinput import Case, check_case, parametrize_cases

CASES = [
    Case("unknown-command", ["nope"], names="nope", fix="--help"),
    Case("train-unknown-recipe", ["train", "--recipe", "nope", "--out", "{tmp}/r"],
         names="nope", fix="fast"),
    Case("predict-missing-model", ["predict", "{tmp}/no-model", "{tmp}/x.png"],
         names="no-model"),
]


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path, {}, [tmp_path])


def test_harness_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself can fail: a wrong exit code, a fix not said, a file changed."""
    with pytest.raises(AssertionError, match="exit 2, expected 0"):
        check_case(Case("code", ["nope"], code=0), tmp_path, {}, [tmp_path])
    with pytest.raises(AssertionError, match="not said"):
        check_case(Case("fix", ["nope"], fix="no such advice"), tmp_path, {}, [tmp_path])
    real = badinput.run_fmnist

    def run_and_write(*a, **kw):
        (tmp_path / "written").write_text("x")
        return real(*a, **kw)

    monkeypatch.setattr(badinput, "run_fmnist", run_and_write)
    with pytest.raises(AssertionError, match="changed on disk"):
        check_case(Case("writes", ["nope"]), tmp_path, {}, [tmp_path])
