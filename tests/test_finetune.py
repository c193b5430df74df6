"""Fine-tuning from a trained run: class matching, head rows, freezing, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist.checkpoints import ModelMeta, load_model
from fmnist.errors import ConfigError, ModelFileError
from fmnist.finetune import (
    Freezer,
    InitWeights,
    apply_init,
    class_key,
    head_mode,
    head_name,
    load_init,
    match_classes,
)
from fmnist.models import create_model
from fmnist.recipes import resolve_recipe

OLD = ("T-shirt/top", "Trouser", "Sneaker")


@pytest.mark.parametrize("new, matches, mode", [
    (("T-shirt/top", "Trouser", "Sneaker"), [0, 1, 2], "same"),
    (("sneaker", "t-shirt_top", "TROUSER"), [2, 0, 1], "same"),  # order, case, punctuation
    (("Trouser", "Sneaker"), [1, 2], "subset"),
    (("Sneaker", "Hat"), [2, None], "new"),
    (("Hat", "Scarf"), [None, None], "new"),
])
def test_classes_are_matched_by_name(new, matches, mode):
    assert match_classes(OLD, new) == matches
    assert head_mode(matches, OLD) == mode


def test_class_key_ignores_case_and_punctuation():
    assert class_key("T-shirt/top") == class_key("t-shirt_top") == "tshirttop"


def init_from(model, classes=OLD) -> InitWeights:
    meta = ModelMeta(arch="fastnet", arch_kwargs={}, classes=classes, mean=0.3, std=0.4)
    return InitWeights(Path("old/model.pt"), model.state_dict(), meta)


def test_new_head_copies_rows_of_known_classes_and_the_whole_body(one_thread):
    old = create_model("fastnet", num_classes=3)
    new = create_model("fastnet", num_classes=2)
    fresh_row = new.head.weight[1].detach().clone()
    info = apply_init(new, init_from(old), ("Sneaker", "Hat"))
    assert info["head"] == "new" and info["new_classes"] == ["Hat"]
    assert info["kept_classes"] == ["Sneaker"] and info["classes"] == list(OLD)
    assert torch.equal(new.head.weight[0], old.head.weight[2])
    assert torch.equal(new.head.bias[0], old.head.bias[2])
    assert torch.equal(new.head.weight[1], fresh_row)  # a new class keeps its fresh init
    for name, value in old.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(new.state_dict()[name], value), name


def test_weights_of_another_architecture_are_refused(one_thread):
    other = create_model("baseline-small", num_classes=3)
    with pytest.raises(ModelFileError, match="do not fit"):
        apply_init(create_model("fastnet", num_classes=3), init_from(other), OLD)


def test_head_is_the_last_linear_with_the_class_count():
    assert head_name(create_model("baseline-small", num_classes=7), 7) == "head.2"
    assert head_name(create_model("fastnet", num_classes=7), 7) == "head"


def test_freezer_trains_the_head_first_and_keeps_designed_freezes(one_thread):
    model = create_model("fastnet", num_classes=3, stem="whiten")
    stem = model.stem[0].conv.weight
    assert not stem.requires_grad
    freezer = Freezer(model, 3, epochs=1)
    model.train()
    freezer.start_epoch(1)
    assert model.head.weight.requires_grad and not model.blocks[0].conv.weight.requires_grad
    assert not model.blocks[0].bn.training  # frozen BatchNorm keeps its statistics
    model.train()
    freezer.start_epoch(2)
    assert model.blocks[0].conv.weight.requires_grad and model.blocks[0].bn.training
    assert not stem.requires_grad  # frozen by design, not by the freezer


@pytest.mark.parametrize("overrides, message", [
    (dict(freeze_epochs=2), "--init"),
    (dict(init="x", freeze_epochs=3, epochs=3), "freeze_epochs"),
    (dict(init="x", freeze_epochs=-1), "freeze_epochs"),
])
def test_bad_fine_tuning_fields(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_recipe("fast", **overrides)


def test_missing_init_names_the_path(tmp_path):
    with pytest.raises(ModelFileError, match="nope"):
        load_init(resolve_recipe("fast", init=str(tmp_path / "nope")))


# --------------------------------------------------------------------------- end to end


def fmnist_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMNIST_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "fmnist", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def write_photo_folder(root: Path, classes: dict[str, int], per_class: int = 12) -> Path:
    """Larger-than-28px colour photos: a dark shape whose form encodes the class."""
    rng = np.random.default_rng(0)
    for name, shape in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = np.full((72, 56, 3), rng.integers(200, 245), np.uint8)
            h, w = (50, 14) if shape == 0 else (18, 44) if shape == 1 else (40, 40)
            y, x = rng.integers(2, 72 - h - 1), rng.integers(2, 56 - w - 1)
            a[y : y + h, x : x + w] = rng.integers(0, 90, 3)
            Image.fromarray(a).save(root / name / f"{i}.jpg", quality=90)
    return root


@pytest.mark.slow
def test_train_init_on_a_photo_folder_then_predict(tmp_path, tiny_run_copy):
    run = tiny_run_copy("finetune-base")
    folder = write_photo_folder(tmp_path / "my_photos",
                                {"Trouser": 0, "Sneaker": 1, "Scarf": 2})  # subset + new
    out = tmp_path / "tuned"
    p = fmnist_cli("train", "--init", str(run), "--data-dir", str(folder), "--out", str(out),
                   "--epochs", "3", "--freeze-epochs", "1", "--no-report", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["name"] == "finetune"  # the default recipe with --init
    assert config["recipe"]["model"] == "baseline-small"  # the init run's architecture
    assert config["init"]["from"] == str(run / "model.pt")
    assert config["init"]["head"] == "new" and config["init"]["new_classes"] == ["Scarf"]
    assert config["init"]["kept_classes"] == ["Sneaker", "Trouser"]
    model, meta = load_model(out)
    base_meta = load_model(run)[1]
    assert meta.classes == ("Scarf", "Sneaker", "Trouser")  # the folder's classes, sorted
    assert (meta.mean, meta.std) == (base_meta.mean, base_meta.std)  # the init's inputs
    assert model.head[-1].out_features == 3
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3
    pred = fmnist_cli("predict", str(out), str(folder / "Scarf" / "0.jpg"), "--json",
                      cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    [result] = json.loads(pred.stdout)
    assert result["error"] is None
    assert {p["class"] for p in result["predictions"]} <= {"Scarf", "Sneaker", "Trouser"}
