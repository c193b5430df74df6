"""Bad inputs for `fmnist models --summary` and `fmnist similar` (harness in badinput.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from badinput import Case, check_case, parametrize_cases

CASES = [
    Case("summary-unknown-model", ["models", "nope", "--summary"], names="nope",
         fix="fastnet"),
    Case("summary-without-name", ["models", "--summary"], names="--summary", fix="NAME"),
    Case("similar-missing-run", ["similar", "{tmp}/no-run", "{image}"], names="no-run",
         fix="fmnist train"),
    Case("similar-k-zero", ["similar", "{run}", "{image}", "--k", "0"], names="--k",
         fix="at least 1"),
    Case("similar-missing-image", ["similar", "{run}", "{tmp}/nope.png"], names="nope.png"),
    Case("similar-not-an-image", ["similar", "{run}", "{run}/config.json"],
         names="config.json"),
    Case("similar-out-exists", ["similar", "{run}", "{image}", "--out", "{image}"],
         names="{image}", fix="new file name"),
]


@pytest.fixture(scope="module")
def values(tiny_run_copy, learnable_dataset, tmp_path_factory) -> dict[str, str]:
    """A tiny run whose similar-items index is already built (so a case writes nothing),
    and one query image."""
    from fmnist.similar import SimilarFinder

    run = tiny_run_copy("similar-bad")
    SimilarFinder.from_run(run)
    image = tmp_path_factory.mktemp("query") / "query.png"
    Image.fromarray(learnable_dataset.test.images[0]).save(image)
    return {"run": str(run), "image": str(image)}


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path, values: dict[str, str]) -> None:
    check_case(case, tmp_path, values, [tmp_path, Path(values["run"]),
                                        Path(values["image"]).parent])
