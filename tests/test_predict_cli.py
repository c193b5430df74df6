"""`fmnist predict`: output formats, per-file failures, exit codes, --show-steps."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.cli import main

LINE = re.compile(r"^(?P<file>.+?): (?:(?:not sure|doesn't look like any of the \d+ classes); "
                  r"best guesses: )?(?P<preds>[^:]+ \(\d+\.\d%\)(, [^:]+ \(\d+\.\d%\))*)$")


@pytest.fixture(scope="module")
def run_dir(tiny_run_copy) -> Path:
    return tiny_run_copy("predict-cli")


@pytest.fixture
def good_dir(tmp_path: Path, learnable_dataset) -> Path:
    """img/a.png, img/b.png, img/sub/a.png (a stem collision) and a non-image readme."""
    folder = tmp_path / "img"
    (folder / "sub").mkdir(parents=True)
    for i, rel in enumerate(("a.png", "b.png", "sub/a.png")):
        Image.fromarray(learnable_dataset.test.images[i]).save(folder / rel)
    (folder / "README.txt").write_text("not an image: skipped by the folder walk")
    return folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_all_good_exit_0_and_one_line_per_file(run_dir, good_dir, capsys, learnable_dataset):
    code, out, err = _run(capsys, "predict", str(run_dir), str(good_dir))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3  # README.txt was not tried
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m["file"] for m in parsed] == [str(good_dir / r) for r in ("a.png", "b.png",
                                                                        "sub/a.png")]
    assert all(m["preds"].count("%") == 3 for m in parsed)  # default --top-k 3
    from fmnist.inference import Predictor

    first = Predictor.from_path(run_dir).predict_top_k(learnable_dataset.test.images[:1])[0][0][0]
    assert parsed[0]["preds"].startswith(f"{first} (")


def test_some_failed_exit_1_rest_still_predicted(run_dir, good_dir, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    notes = good_dir / "README.txt"  # named explicitly: tried (and fails)
    code, out, err = _run(capsys, "predict", str(run_dir), str(good_dir / "a.png"), str(bad),
                          str(notes), "--top-k", "1")
    assert code == 1
    assert len(out.strip().splitlines()) == 1 and out.count("%") == 1
    assert str(bad) in err and str(notes) in err and "2 of 3 files failed" in err


@pytest.mark.parametrize("model", ["missing-run", "junk.pt"])
def test_bad_model_exit_2(model, good_dir, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    code, out, err = _run(capsys, "predict", str(tmp_path / model), str(good_dir))
    assert code == 2 and out == ""
    assert err.startswith("fmnist: error:") and len(err.strip().splitlines()) == 1


def test_usage_errors_exit_2(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(capsys, "predict", str(run_dir), str(empty))[0] == 2  # no images at all
    assert _run(capsys, "predict", str(run_dir), str(empty), "--top-k", "0")[0] == 2
    assert _run(capsys, "predict", str(run_dir), str(empty), "--backend", "onnx")[0] == 2
    with pytest.raises(SystemExit) as e:  # argparse: --json and --csv exclude each other
        main(["predict", str(run_dir), str(empty), "--json", "--csv", "x.csv"])
    assert e.value.code == 2


def test_json_output(run_dir, good_dir, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"")
    code, out, _ = _run(capsys, "predict", str(run_dir), str(good_dir), str(tmp_path / "bad.jpg"),
                        "--json", "--top-k", "2")
    assert code == 1
    data = json.loads(out)
    assert [Path(d["file"]).name for d in data] == ["a.png", "b.png", "a.png", "bad.jpg"]
    for d in data[:3]:
        assert set(d) == {"file", "predictions", "ood_score", "in_distribution", "unsure",
                          "error"} and d["error"] is None
        assert len(d["predictions"]) == 2
        assert set(d["predictions"][0]) == {"class", "probability"}
        assert d["predictions"][0]["probability"] >= d["predictions"][1]["probability"]
    assert data[3]["predictions"] == [] and "empty" in data[3]["error"]


def test_csv_output(run_dir, good_dir, tmp_path, capsys):
    (tmp_path / "bad.png").write_text("text")
    target = tmp_path / "out.csv"
    code, out, err = _run(capsys, "predict", str(run_dir), str(good_dir),
                          str(tmp_path / "bad.png"), "--csv", str(target))
    assert code == 1 and str(target) in err
    assert len(out.strip().splitlines()) == 3  # human lines still printed
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert list(rows[0]) == ["file", "rank", "class", "probability", "error"]
    ok = [r for r in rows if not r["error"]]
    assert len(ok) == 3 * 3 and [r["rank"] for r in ok[:3]] == ["1", "2", "3"]
    probs = np.array([float(r["probability"]) for r in ok]).reshape(3, 3)
    # calibrated probabilities of this easy task can round to 0.000000 beyond the top one
    assert (np.diff(probs, axis=1) <= 0).all() and (probs >= 0).all() and (probs[:, 0] > 0).all()
    (failed,) = [r for r in rows if r["error"]]
    assert failed["file"] == str(tmp_path / "bad.png") and failed["class"] == ""


def test_csv_replaces_an_existing_file_only_with_overwrite(run_dir, good_dir, tmp_path, capsys):
    target = tmp_path / "mine.csv"
    target.write_text("the user's numbers\n")
    code, out, err = _run(capsys, "predict", str(run_dir), str(good_dir), "--csv", str(target))
    assert code == 2 and out == "" and "--overwrite" in err
    assert target.read_text() == "the user's numbers\n"  # refused before any prediction
    code, _, _ = _run(capsys, "predict", str(run_dir), str(good_dir), "--csv", str(target),
                      "--overwrite")
    assert code == 0 and target.read_text().startswith("file,rank,class,probability,error")


def test_show_steps_writes_unique_pngs(run_dir, good_dir, tmp_path, capsys):
    steps = tmp_path / "steps"
    code, _, _ = _run(capsys, "predict", str(run_dir), str(good_dir), "--show-steps", str(steps))
    assert code == 0
    written = sorted(p.name for p in steps.iterdir())
    assert written == ["a-2.steps.png", "a.steps.png", "b.steps.png"]
    with Image.open(steps / "a.steps.png") as im:
        assert im.format == "PNG" and im.width > im.height > 28


def test_onnx_backend_from_cli(run_dir, good_dir, capsys):
    pytest.importorskip("onnxruntime")
    from fmnist.export import export_onnx

    export_onnx(run_dir, check=False)
    code_t, out_t, _ = _run(capsys, "predict", str(run_dir), str(good_dir), "--top-k", "1")
    code_o, out_o, _ = _run(capsys, "predict", str(run_dir), str(good_dir), "--top-k", "1",
                            "--backend", "onnx")
    code_f, out_f, _ = _run(capsys, "predict", str(run_dir / "model.onnx"), str(good_dir),
                            "--top-k", "1")
    assert code_t == code_o == code_f == 0

    def classes(out: str) -> list[str]:
        return [line.rsplit(": ", 1)[1].split(" (")[0] for line in out.strip().splitlines()]

    assert classes(out_t) == classes(out_o) == classes(out_f)


@pytest.mark.parametrize("flag, tta", [(None, True), ("--tta", True), ("--no-tta", False)])
def test_predict_averages_the_mirror_unless_no_tta(run_dir, good_dir, capsys, flag, tta,
                                                   learnable_dataset):
    """The default is image + mirror (it paid on real photos); --no-tta gives one view; the
    probabilities are the Python API's with the same setting."""
    from fmnist.inference import Predictor

    argv = ["predict", str(run_dir), str(good_dir / "a.png"), "--json", "--top-k", "10"]
    code, out, _ = _run(capsys, *argv, *([flag] if flag else []))
    assert code == 0
    got = {p["class"]: p["probability"] for p in json.loads(out)[0]["predictions"]}
    want = Predictor.from_path(run_dir, tta=tta, top_k=10).predict_proba(
        learnable_dataset.test.images[:1])[0]
    other = Predictor.from_path(run_dir, tta=not tta, top_k=10).predict_proba(
        learnable_dataset.test.images[:1])[0]
    classes = Predictor.from_path(run_dir).classes
    ours = np.log(np.array([got[c] for c in classes]))  # log: this tiny model is sure
    assert np.allclose(ours, np.log(want), rtol=1e-4, atol=1e-6)
    assert not np.allclose(ours, np.log(other), rtol=1e-4, atol=1e-6)  # the settings differ


def test_json_into_a_closed_pipe_ends_quietly(run_dir, good_dir):
    """``fmnist predict RUN DIR --json | head -1``: the reader closes the pipe; the command
    exits 1 with nothing on stderr, not a BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        done = subprocess.run([sys.executable, "-m", "fmnist", "predict", str(run_dir),
                               str(good_dir), "--json"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 1
