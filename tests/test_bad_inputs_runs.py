"""Bad inputs of the run-folder commands: train --out/--resume/--params/--nproc, evaluate,
report, export, predict and runs (table-driven; harness in badinput.py).

Two tiny runs (baseline-small, 1 epoch, 300 images of the learnable CSV data) are trained
once per module: ``run`` on a data folder that stays, ``moved`` on one that is renamed
afterwards. Each case gets fresh copies; a case's ``PREPARE`` entry damages its copy (a
truncated config.json, a model.pt without metadata, ...) before the command runs, and
``LOCKED`` cases hold the run's lock as a second trainer would.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from badinput import Case, check_case, parametrize_cases
from conftest import learnable_arrays, write_kaggle_csv

RUN_ARGS = dict(model="baseline-small", epochs=1, train_limit=300, batch_size=32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, learnable_csv_dir: Path) -> dict[str, Path]:
    """The module's shared runs and data folders (never changed by a case)."""
    from fmnist.training import train

    root = tmp_path_factory.mktemp("bad-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(out=root / "run", data_dir=learnable_csv_dir, **RUN_ARGS)
        shutil.copytree(learnable_csv_dir, root / "data2")
        train(out=root / "moved", data_dir=root / "data2", **RUN_ARGS)
    finally:
        torch.set_num_threads(threads)
    (root / "data2").rename(root / "data2-moved")
    other = root / "other"  # same train images, other test images: another dataset
    other.mkdir()
    shutil.copy(learnable_csv_dir / "train.csv", other / "train.csv")
    write_kaggle_csv(other / "test.csv", *learnable_arrays(50, seed=7))
    return {"root": root, "other": other}


# --------------------------------------------------------------------------- damage


def _edit_model(run: Path, change: Callable[[dict], dict]) -> None:
    path = run / "model.pt"
    payload = torch.load(path, weights_only=True)
    torch.save(change(payload), path)


def _truncate_config(t: Path) -> None:
    path = t / "run" / "config.json"
    path.write_text(path.read_text()[:150])


def _no_meta(t: Path) -> None:
    _edit_model(t / "run", lambda p: {k: v for k, v in p.items() if k != "meta"})


def _plain_state_dict(t: Path) -> None:
    _edit_model(t / "run", lambda p: p["state_dict"])


def _std_zero(t: Path) -> None:
    _edit_model(t / "run", lambda p: {**p, "meta": {**p["meta"], "std": 0.0}})


def _interrupted(t: Path) -> None:
    path = t / "run" / "config.json"
    path.write_text(path.read_text().replace('"status": "finished"', '"status": "interrupted"'))


def _user_folder(t: Path) -> None:
    (t / "mine").mkdir()
    (t / "mine" / "notes.txt").write_text("my notes\n")


def _user_file_in_run(t: Path) -> None:
    (t / "run" / "notes.txt").write_text("my notes\n")


def _a_file(t: Path) -> None:
    (t / "afile").write_text("not a folder\n")


def _image(t: Path) -> None:
    from PIL import Image

    Image.new("L", (28, 28), 128).save(t / "x.png")


def _params(text: str) -> Callable[[Path], None]:
    def write(t: Path) -> None:
        (t / "p.json").write_text(text)

    return write


PREPARE: dict[str, Callable[[Path], None]] = {
    "train-out-user-folder": _user_folder,
    "train-out-holds-interrupted-run": _interrupted,
    "train-overwrite-user-folder": _user_folder,
    "train-overwrite-run-with-user-file": _user_file_in_run,
    "train-out-is-file": _a_file,
    "train-out-under-file": _a_file,
    "resume-truncated-config": _truncate_config,
    "evaluate-truncated-config": _truncate_config,
    "report-truncated-config": _truncate_config,
    "export-truncated-config": _truncate_config,
    "evaluate-model-without-metadata": _no_meta,
    "report-model-without-metadata": _no_meta,
    "export-model-without-metadata": _no_meta,
    "evaluate-model-not-fmnist": _plain_state_dict,
    "evaluate-model-std-zero": _std_zero,
    "predict-model-std-zero": lambda t: (_std_zero(t), _image(t)),
    "evaluate-not-a-run": _user_folder,
    "params-not-json": _params('{"lr": '),
    "params-not-object": _params("[1, 2]"),
    "params-wrong-type-lr": _params('{"lr": "fast"}'),
    "params-wrong-type-epochs": _params('{"epochs": 1.5}'),
    "params-wrong-type-augment": _params('{"augment": 5}'),
    "params-unknown-field": _params('{"lr": 0.01, "speed": "fast"}'),
}
LOCKED = {"train-overwrite-locked", "resume-locked"}

TRAIN = ["train", "--recipe", "baseline-small", "--epochs", "1", "--train-limit", "300",
         "--no-report"]

CASES = [
    # --out: never into a folder that holds something, never a file, never unwritable
    Case("train-out-holds-run", [*TRAIN, "--out", "{run}"], names=["{run}", "finished"],
         fix="--overwrite"),
    Case("train-out-holds-interrupted-run", [*TRAIN, "--out", "{run}"],
         names=["{run}", "interrupted"], fix=["--resume {run}", "--overwrite"]),
    Case("train-out-user-folder", [*TRAIN, "--out", "{tmp}/mine"], names="notes.txt",
         fix="empty --out"),
    Case("train-overwrite-user-folder", [*TRAIN, "--out", "{tmp}/mine", "--overwrite"],
         names="{tmp}/mine", fix="move those away"),
    Case("train-overwrite-run-with-user-file", [*TRAIN, "--out", "{run}", "--overwrite"],
         names="notes.txt", fix="move those away"),
    Case("train-out-is-file", [*TRAIN, "--out", "{tmp}/afile"], names="afile",
         fix="folder path"),
    Case("train-out-under-file", [*TRAIN, "--out", "{tmp}/afile/run"], names="afile",
         fix="writable --out"),
    Case("train-out-unwritable", [*TRAIN, "--out", "/sys/fmnist-bad-input-run"],
         names="/sys/fmnist-bad-input-run", fix="writable --out"),
    Case("train-overwrite-locked", [*TRAIN, "--out", "{run}", "--overwrite"],
         names="{run}", fix="wait for it"),
    # --resume: only a run, only on its own data, only one trainer at a time
    Case("resume-no-run", ["train", "--resume", "{tmp}/nothing"], names="nothing",
         fix="fmnist runs"),
    Case("resume-truncated-config", ["train", "--resume", "{run}"], names="config.json",
         fix="train the run again"),
    Case("resume-moved-data", ["train", "--resume", "{moved}"], names="{moved}",
         fix="--data-dir"),
    Case("resume-other-data", ["train", "--resume", "{run}", "--data-dir", "{other}"],
         names=["{run}", "{other}"], fix="--data-dir"),
    Case("resume-locked", ["train", "--resume", "{run}"], names="{run}", fix="wait for it"),
    Case("resume-with-overrides", ["train", "--resume", "{run}", "--epochs", "3"],
         names="epochs", fix="drop the other options"),
    # evaluate / report / export / predict of a damaged run or on the wrong data
    Case("evaluate-truncated-config", ["evaluate", "{run}"], names="config.json",
         fix="train the run again"),
    Case("report-truncated-config", ["report", "{run}"], names="config.json",
         fix="train the run again"),
    Case("export-truncated-config", ["export", "{run}"], names="config.json",
         fix="train the run again"),
    Case("export-other-data", ["export", "{run}", "--data-dir", "{other}"],
         names="{other}", fix="--data-dir"),
    Case("evaluate-moved-data", ["evaluate", "{moved}"], names="{moved}", fix="--data-dir"),
    Case("report-moved-data", ["report", "{moved}"], names="{moved}", fix="--data-dir"),
    Case("evaluate-other-data", ["evaluate", "{run}", "--data-dir", "{other}"],
         names="{other}", fix="--data-dir"),
    Case("report-other-data", ["report", "{run}", "--data-dir", "{other}"],
         names="{other}", fix="--data-dir"),
    Case("evaluate-model-without-metadata", ["evaluate", "{run}"], names="model.pt",
         fix="train the run again"),
    Case("report-model-without-metadata", ["report", "{run}"], names="model.pt",
         fix="train the run again"),
    Case("export-model-without-metadata", ["export", "{run}", "--no-check"],
         names="model.pt", fix="train the run again"),
    Case("evaluate-model-not-fmnist", ["evaluate", "{run}"], names="model.pt",
         fix="run folder"),
    Case("evaluate-model-std-zero", ["evaluate", "{run}"], names=["model.pt", "std 0"],
         fix="> 0"),
    Case("predict-model-std-zero", ["predict", "{run}", "{tmp}/x.png"], names="std 0",
         fix="train the run again"),
    Case("evaluate-not-a-run", ["evaluate", "{tmp}/mine"], names="{tmp}/mine",
         fix="fmnist train"),
    Case("report-no-such-run", ["report", "{tmp}/nothing"], names="nothing",
         fix="fmnist runs"),
    # --params files
    Case("params-not-json", [*TRAIN, "--params", "{tmp}/p.json", "--out", "{tmp}/new"],
         names="p.json", fix="json object"),
    Case("params-not-object", [*TRAIN, "--params", "{tmp}/p.json", "--out", "{tmp}/new"],
         names=["p.json", "list"], fix='{{"lr": 0.01}}'),
    Case("params-wrong-type-lr", [*TRAIN, "--params", "{tmp}/p.json", "--out", "{tmp}/new"],
         names=["p.json", 'lr="fast"'], fix="a number"),
    Case("params-wrong-type-epochs",
         [*TRAIN, "--params", "{tmp}/p.json", "--out", "{tmp}/new"],
         names=["p.json", "epochs=1.5"], fix="an integer"),
    Case("params-wrong-type-augment",
         [*TRAIN, "--params", "{tmp}/p.json", "--out", "{tmp}/new"],
         names=["p.json", "augment=5"], fix="list of strings"),
    Case("params-unknown-field", [*TRAIN, "--params", "{tmp}/p.json", "--out", "{tmp}/new"],
         names="speed", fix="valid:"),
    # --nproc and the runs table
    Case("nproc-zero", [*TRAIN, "--nproc", "0", "--out", "{tmp}/new"], names="--nproc 0",
         fix="drop --nproc"),
    Case("nproc-negative", [*TRAIN, "--nproc", "-3", "--out", "{tmp}/new"],
         names="--nproc -3", fix="drop --nproc"),
    Case("nproc-out-holds-run", [*TRAIN, "--nproc", "2", "--out", "{run}"], names="{run}",
         fix="--overwrite"),
    Case("runs-bad-column", ["runs", "{tmp}", "--sort", "speed"], names="speed",
         fix="test_acc"),
]


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path, built: dict[str, Path]) -> None:
    root = built["root"]
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copytree(root / "moved", tmp_path / "moved")
    if case.id in PREPARE:
        PREPARE[case.id](tmp_path)
    values = {"run": str(tmp_path / "run"), "moved": str(tmp_path / "moved"),
              "other": str(built["other"])}
    fd = None
    if case.id in LOCKED:  # a second process holds the lock, as a running trainer does
        fd = os.open(tmp_path / "run" / ".lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        check_case(case, tmp_path, values, [tmp_path, built["other"]])
    finally:
        if fd is not None:
            os.close(fd)
    assert not Path("/sys/fmnist-bad-input-run").exists()

