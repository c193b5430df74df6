"""Bad inputs for `fmnist models --summary` and `fmnist similar` (harness in badinput.py)."""

from __future__ import annotations

from pathlib import Path

from badinput import Case, check_case, parametrize_cases

CASES = [
    Case("summary-unknown-model", ["models", "nope", "--summary"], names="nope",
         fix="fastnet"),
    Case("summary-without-name", ["models", "--summary"], names="--summary", fix="NAME"),
]


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path, {}, [tmp_path])
