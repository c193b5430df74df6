"""Bad inputs to `fmnist calibrate` (table-driven; harness in badinput.py)."""

from __future__ import annotations

import json
from pathlib import Path

from badinput import Case, check_case, parametrize_cases

CASES = [
    Case("calibrate-missing-run", ["calibrate", "{tmp}/no-run"], names="no-run",
         fix="fmnist train"),
    Case("calibrate-unfinished-run", ["calibrate", "{tmp}/half"], names="half",
         fix="--resume"),
    Case("calibrate-bad-device", ["calibrate", "{tmp}/half", "--device", "tpu"],
         names="tpu", fix="cpu"),
]


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    half = tmp_path / "half"  # a run folder whose training never finished: no model.pt
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"recipe": {"name": "fast"}}))
    check_case(case, tmp_path, {}, [tmp_path])
