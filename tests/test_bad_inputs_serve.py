"""Bad inputs for predict, export, report, data show and serve (table-driven; harness in
badinput.py): output paths that are folders, files in the way or a user's existing file,
out-of-range flags, missing or fake models. Each case: exit 2, one stderr line naming the
input and the fix, nothing changed on disk (the run folder and the user's files included).
The serve cases refuse before listening, so they return in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badinput import Case, check_case, parametrize_cases


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_run_copy) -> dict[str, Path]:
    """A trained run and the user's files every case must leave alone."""
    home = tmp_path_factory.mktemp("user-files")
    paths = {"run": tiny_run_copy("bad-inputs-serve"), "home": home}
    for key, name, data in (("afile", "afile", b"a user's file\n"),
                            ("existing_csv", "mine.csv", b"user,data\n1,2\n"),
                            ("existing_onnx", "mine.onnx", b"user bytes"),
                            ("existing_int8", "new.int8.onnx", b"user bytes"),
                            ("existing_html", "mine.html", b"<p>mine</p>"),
                            ("existing_png", "mine.png", b"not really a png"),
                            ("not_model", "not-a-model.pt", b"hello"),
                            ("fake_onnx", "fake.onnx", b"hello")):
        paths[key] = home / name
        paths[key].write_bytes(data)
    paths["adir"] = home / "adir"
    paths["adir"].mkdir()
    paths["img"] = home / "item.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(paths["img"])
    return paths


OVERWRITE = "--overwrite"
PREDICT = ["predict", "{run}", "{img}"]
SERVE_FAST = ["--port", "1"]  # never reached: every case fails before the port is probed

CASES = [
    # predict
    Case("predict-top-k-zero", [*PREDICT, "--top-k", "0"], names="--top-k", fix="at least 1"),
    Case("predict-csv-existing-file", [*PREDICT, "--csv", "{existing_csv}"],
         names="{existing_csv}", fix=OVERWRITE),
    Case("predict-csv-is-a-folder", [*PREDICT, "--csv", "{adir}"], names="{adir}",
         fix="pass a file name"),
    Case("predict-csv-under-a-file", [*PREDICT, "--csv", "{afile}/out.csv"],
         names=["--csv", "{afile}"], fix="under a folder"),
    Case("predict-show-steps-onto-a-file", [*PREDICT, "--show-steps", "{afile}"],
         names=["--show-steps", "{afile}"], fix="pass a folder"),
    Case("predict-show-steps-under-a-file", [*PREDICT, "--show-steps", "{afile}/steps"],
         names="{afile}", fix="under a folder"),
    Case("predict-missing-model", ["predict", "{tmp}/no-model", "{img}"], names="no-model",
         fix="run folder"),
    Case("predict-not-a-model", ["predict", "{not_model}", "{img}"], names="not-a-model.pt",
         fix="point at another file"),
    Case("predict-onnx-that-is-not", ["predict", "{fake_onnx}", "{img}"], names="fake.onnx",
         fix="fmnist export"),
    # export
    Case("export-out-under-a-file", ["export", "{run}", "--out", "{afile}/m.onnx"],
         names="{afile}", fix="under a folder"),
    Case("export-out-is-a-folder", ["export", "{run}", "--out", "{adir}"], names="{adir}",
         fix="pass a file name"),
    Case("export-out-existing-file", ["export", "{run}", "--out", "{existing_onnx}"],
         names="{existing_onnx}", fix=OVERWRITE),
    Case("export-out-int8-existing", ["export", "{run}", "--quantize", "int8", "--out",
                                      "{home}/new.onnx"],
         names="{existing_int8}", fix=OVERWRITE),
    Case("export-out-not-onnx", ["export", "{run}", "--out", "{tmp}/model.txt"],
         names="model.txt", fix=".onnx"),
    Case("export-missing-run", ["export", "{tmp}/no-run"], names="no-run"),
    # report
    Case("report-out-under-a-file", ["report", "{run}", "--out", "{afile}/r.html"],
         names="{afile}", fix="under a folder"),
    Case("report-out-existing-file", ["report", "{run}", "--out", "{existing_html}"],
         names="{existing_html}", fix=OVERWRITE),
    # data show
    Case("data-show-out-under-a-file", ["data", "show", "--out", "{afile}/grid.png"],
         names="{afile}", fix="under a folder"),
    Case("data-show-out-is-a-folder", ["data", "show", "--out", "{adir}"], names="{adir}",
         fix="pass a file name"),
    Case("data-show-out-existing-file", ["data", "show", "--out", "{existing_png}"],
         names="{existing_png}", fix=OVERWRITE),
    # serve: all refused before listening
    Case("serve-port-too-large", ["serve", "{run}", "--port", "99999"], names="--port 99999",
         fix="1 to 65535"),
    Case("serve-port-negative", ["serve", "{run}", "--port=-1"], names="--port -1",
         fix="1 to 65535"),
    Case("serve-max-upload-mb-zero", ["serve", "{run}", "--max-upload-mb", "0"],
         names="--max-upload-mb", fix="above 0"),
    Case("serve-max-upload-mb-nan", ["serve", "{run}", "--max-upload-mb", "nan"],
         names="--max-upload-mb nan", fix="above 0"),
    Case("serve-max-decodes-zero", ["serve", "{run}", "--max-decodes", "0"],
         names="--max-decodes", fix="at least 1"),
    Case("serve-not-a-model", ["serve", "{not_model}", *SERVE_FAST], names="not-a-model.pt",
         fix="point at another file"),
    Case("serve-onnx-that-is-not", ["serve", "{fake_onnx}", *SERVE_FAST], names="fake.onnx",
         fix="fmnist export"),
    Case("serve-no-runs", ["serve", *SERVE_FAST], names="runs/", fix="fmnist train"),
    Case("serve-run-without-onnx", ["serve", "{run}", "--backend", "onnx", *SERVE_FAST],
         names="model.onnx", fix="fmnist export"),
]


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path, files: dict[str, Path]) -> None:
    values = {k: str(v) for k, v in files.items()}
    res = check_case(case, tmp_path, values, [tmp_path, files["home"], files["run"]])
    assert "serving" not in res.stdout  # nothing announced for a server that never started
