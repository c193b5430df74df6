"""TensorBoard logging: event files with the expected scalar and image tags, from the CLI
and the API, and a clear exit when the optional package is missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from fmnist.cli import main
from fmnist.errors import ConfigError

QUICK = dict(model="baseline-small", optimizer="adam", lr=4e-3, epochs=2, batch_size=50,
             train_limit=300, test_limit=100)
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="optional extra: pip install 'fmnist[tensorboard]'")
SCALAR_TAGS = {"loss/train", "accuracy/train", "lr", "time/epoch_seconds",
               "time/eval_seconds"}


pytestmark = pytest.mark.usefixtures("one_thread")


def read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_import_fmnist_does_not_need_tensorboard_or_optuna():
    code = ("import sys\n"
            "for m in ('tensorboard', 'torch.utils.tensorboard', 'optuna'):\n"
            "    sys.modules[m] = None\n"
            "import fmnist, fmnist.cli, fmnist.tensorboard, fmnist.tune\n"
            "assert fmnist.cli.build_parser()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cli_without_tensorboard_exits_2_with_the_install_hint(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(["train", "--tensorboard", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'fmnist[tensorboard]'" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # failed before training started


@needs_tensorboard
def test_cli_train_tensorboard_logs_scalars_and_validation_figures(tmp_path,
                                                                  learnable_csv_dir):
    run = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in QUICK.items()]
    assert main(["train", "--tensorboard", "--out", str(run), "--data-dir",
                 str(learnable_csv_dir), "--val-fraction", "0.25", "--device", "cpu",
                 "--no-report", *flags]) == 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    acc = read_events(run / "tensorboard")
    tags = acc.Tags()
    assert SCALAR_TAGS | {"loss/val", "accuracy/val"} <= set(tags["scalars"])
    assert {"confusion_matrix/val", "predictions/val"} <= set(tags["images"])
    assert [e.step for e in acc.Scalars("accuracy/val")] == [1, 2]
    assert [e.step for e in acc.Images("confusion_matrix/val")] == [1, 2]
    history = (run / "history.csv").read_text().splitlines()
    last_val_acc = float(history[-1].split(",")[5])
    assert acc.Scalars("accuracy/val")[-1].value == pytest.approx(last_val_acc)
    image = acc.Images("predictions/val")[0]
    assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and image.width > 100
    assert "recipe/text_summary" in tags["tensors"]  # the resolved recipe, as text


@needs_tensorboard
def test_logger_without_validation_uses_a_training_sample_and_extra_keys(
        tmp_path, learnable_dataset):
    from fmnist.tensorboard import TensorBoardLogger
    from fmnist.training import train

    class AddsKey:
        def on_epoch_end(self, state):
            state.row["test_acc"] = 0.5

    log_dir = tmp_path / "tb"
    with TensorBoardLogger(log_dir, dataset=learnable_dataset, max_images=100,
                           n_gallery=4, image_every=2) as tb:
        train("fast", out=tmp_path / "run", data=learnable_dataset, device="cpu",
              evaluate_test=False, callbacks=[AddsKey(), tb], **QUICK)
    acc = read_events(log_dir)
    tags = acc.Tags()
    assert SCALAR_TAGS | {"extra/test_acc"} <= set(tags["scalars"])
    assert "accuracy/val" not in tags["scalars"]  # no validation split: None is skipped
    assert {"confusion_matrix/train_sample", "predictions/train_sample"} <= set(tags["images"])
    assert [e.step for e in acc.Images("confusion_matrix/train_sample")] == [1]  # every 2
    assert len(tb.labels) == 100
    assert not (tmp_path / "run" / "tensorboard").exists()


@needs_tensorboard
def test_logger_draws_from_given_arrays_and_checks_its_arguments(tmp_path):
    from fmnist.tensorboard import TensorBoardLogger

    with pytest.raises(ConfigError, match="both images and labels"):
        TensorBoardLogger(images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ConfigError, match="image_every"):
        TensorBoardLogger(image_every=0)
