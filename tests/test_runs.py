"""The run folder's owner (fmnist.runs): config reader, creation and locking, status,
the dataset a run was trained on; and the atomic writer and model-file checks it relies on."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.checkpoints import ModelMeta, atomic_write_text, read_model_file, save_model
from fmnist.datasets import Dataset, Split
from fmnist.errors import ConfigError, DataError, ModelFileError
from fmnist.runs import (
    RunLock,
    check_dataset,
    config_of_model,
    create_run,
    dataset_checksums,
    find_runs,
    is_locked,
    latest_run,
    list_runs,
    metrics_filename,
    model_path,
    prepare_data,
    read_config,
    read_metrics,
    read_predictions,
    run_dataset,
    run_status,
    write_config,
    write_metrics,
    write_predictions,
)

CONFIG = {"recipe": {"name": "fast"}, "status": "finished"}


def _run(folder: Path, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, {**CONFIG, **config})
    return folder


# --------------------------------------------------------------------------- config.json


@pytest.mark.parametrize("content, says", [
    (None, "no config.json"),
    ('{"recipe": {"name": "fa', "truncated"),
    ("[1, 2]", "not an fmnist run config"),
    ('{"status": "finished"}', "not an fmnist run config"),
    ("\xff\xfe", "truncated"),
])
def test_bad_config_is_one_clear_error(tmp_path, content, says):
    if content is not None:
        (tmp_path / "config.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError, match=says) as e:
        read_config(tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_config_round_trip(tmp_path):
    write_config(tmp_path, {**CONFIG, "x": [1, 2]})
    assert read_config(tmp_path) == {**CONFIG, "x": [1, 2]}


# --------------------------------------------------------------------------- creating


def test_create_run_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="notes.txt"):
            create_run(mine, "fast", overwrite=overwrite)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_create_run_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        create_run(tmp_path / "f", "fast")
    with pytest.raises(ConfigError, match="writable"):
        create_run(tmp_path / "f" / "run", "fast")


def test_overwrite_replaces_only_a_runs_files(tmp_path):
    run = _run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    (run / "model.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--overwrite"):
        create_run(run, "fast")
    path, lock = create_run(run, "fast", overwrite=True)
    lock.release()
    assert path == run and [p.name for p in run.iterdir()] == [".lock"]


def test_default_folder_is_new_and_unique(tmp_path):
    a, la = create_run(None, "fast", root=tmp_path)
    b, lb = create_run(None, "fast", root=tmp_path)
    la.release()
    lb.release()
    assert a != b and a.parent == b.parent == tmp_path and a.name.startswith("fast-")


def test_second_trainer_is_refused_while_the_first_holds_the_lock(tmp_path):
    path, lock = create_run(tmp_path / "run", "fast")
    assert is_locked(path)
    with pytest.raises(ConfigError, match="in use"):
        RunLock.acquire(path)
    with pytest.raises(ConfigError, match="in use"):
        create_run(path, "fast", overwrite=True)
    lock.release()
    assert not is_locked(path)
    RunLock.acquire(path).release()


def test_failed_start_removes_only_the_folder_it_made(tmp_path):
    path, lock = create_run(tmp_path / "new", "fast")
    lock.discard()
    assert not path.exists()
    (tmp_path / "empty").mkdir()
    path, lock = create_run(tmp_path / "empty", "fast")
    lock.discard()
    assert path.is_dir()  # the user's folder stays


def test_taking_the_lock_removes_stale_temp_files(tmp_path):
    run = _run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    stale = [run / "checkpoints" / ".last.pt.abc123.tmp", run / ".config.json.x.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    (run / "checkpoints" / "last.pt").write_bytes(b"keep")
    with RunLock.acquire(run):
        assert not any(p.exists() for p in stale)
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"keep"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


# --------------------------------------------------------------------------- status


@pytest.mark.parametrize("recorded, locked, last_pt, shown", [
    ("running", True, True, "running"),
    ("running", True, False, "started"),
    ("running", False, True, "stopped"),  # killed: nobody holds the lock
    ("failed", False, True, "failed"),
    ("interrupted", False, True, "interrupted"),
    ("finished", False, True, "finished"),
])
def test_status_shown(tmp_path, recorded, locked, last_pt, shown):
    run = _run(tmp_path / "run", status=recorded)
    if last_pt:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.pt").write_bytes(b"x")
    lock = RunLock.acquire(run) if locked else None
    try:
        assert run_status(run, read_config(run)) == shown
        assert list_runs(tmp_path)[0]["status"] == shown
    finally:
        if lock:
            lock.release()


# --------------------------------------------------------------------------- the run's data


def _dataset(seed: int = 0, source: str = "/data/a") -> Dataset:
    rng = np.random.default_rng(seed)
    split = lambda n: Split(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),  # noqa: E731
                            np.arange(n) % 10)
    return Dataset("fashion-mnist", tuple("abcdefghij"), split(30), split(10), Path(source),
                   "csv")


def test_checksums_see_one_pixel_and_one_label():
    ds = _dataset()
    base = dataset_checksums(ds)
    ds.test.images[3, 4, 5] ^= 1
    assert [k for k, v in dataset_checksums(ds).items() if v != base[k]] == ["test_images"]
    ds.train.labels[0] = 9
    assert dataset_checksums(ds)["train_labels"] != base["train_labels"]


def test_run_is_scored_only_on_its_own_data(tmp_path, caplog):
    ds, other = _dataset(0), _dataset(1, "/data/b")
    config = {**CONFIG, "dataset": {"source": "/data/a", "sha256": dataset_checksums(ds)}}
    assert run_dataset(tmp_path, config, data=ds) is ds
    with pytest.raises(DataError, match="/data/b is not the data this run was trained on"):
        run_dataset(tmp_path, config, data=other)
    with caplog.at_level(logging.WARNING, logger="fmnist"):  # a run made before checksums
        check_dataset(tmp_path, {**CONFIG, "dataset": {}}, other)
    assert "no dataset checksums recorded" in caplog.text


def test_moved_folder_data_is_refused_with_the_fix(tmp_path):
    config = {**CONFIG, "data_dir": str(tmp_path / "gone"),
              "dataset": {"format": "csv", "source": str(tmp_path / "gone")}}
    with pytest.raises(DataError, match="no longer in .*gone; pass --data-dir"):
        run_dataset(tmp_path, config)


# --------------------------------------------------------------------------- model.pt checks


def _model_file(tmp_path: Path, **meta) -> Path:
    from fmnist.models import create_model

    m = ModelMeta(arch="baseline-small", arch_kwargs={}, classes=tuple("abcdefghij"),
                  mean=0.3, std=0.35)
    path = save_model(tmp_path / "model.pt", create_model("baseline-small"), m)
    payload = torch.load(path, weights_only=True)
    payload["meta"].update(meta)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("meta, says", [
    ({"std": 0.0}, "std must be a finite number > 0"),
    ({"std": float("nan")}, "std must be"),
    ({"mean": float("inf")}, "std must be"),
    ({"mean": "grey"}, "unusable model metadata"),
    ({"classes": []}, "no classes"),
    ({"arch": ""}, "without metadata"),
])
def test_model_file_metadata_is_checked(tmp_path, meta, says):
    with pytest.raises(ModelFileError, match=says):
        read_model_file(_model_file(tmp_path, **meta))


def test_model_file_without_metadata_or_weights(tmp_path):
    path = _model_file(tmp_path)
    payload = torch.load(path, weights_only=True)
    torch.save({k: v for k, v in payload.items() if k != "meta"}, path)
    with pytest.raises(ModelFileError, match="without metadata"):
        read_model_file(path)
    torch.save({**payload, "state_dict": {"w": "not a tensor"}}, path)
    with pytest.raises(ModelFileError, match="without weights"):
        read_model_file(path)


# --------------------------------------------------------------------------- one owner


def test_every_consumer_refuses_data_the_run_was_not_trained_on(tiny_run_copy, monkeypatch):
    """evaluate, export's parity check and the serve gallery all go through run_dataset /
    check_dataset: with the recorded test-image checksum changed (as if the folder now
    held other images), each refuses, and metrics.json and model.onnx are not written."""
    from fmnist.export import export_onnx
    from fmnist.runs import evaluate_run
    from fmnist.serve.app import Gallery

    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    run = tiny_run_copy("other-data")
    config = read_config(run)
    config["dataset"]["sha256"]["test_images"] = "0" * 64
    write_config(run, config)
    metrics = (run / "metrics.json").read_bytes()
    with pytest.raises(DataError, match="not the data this run was trained on"):
        evaluate_run(run, device="cpu")
    assert (run / "metrics.json").read_bytes() == metrics
    with pytest.raises(DataError, match="not the data this run was trained on"):
        export_onnx(run)
    assert not (run / "model.onnx").exists()
    sample = Gallery(True, run / "model.pt", tuple(config["dataset"]["classes"]),
                     "fashion-mnist").sample(4)
    assert sample["items"] == [] and "not the data" in sample["note"]


# --------------------------------------------------------------------------- finding runs


def test_one_rule_finds_runs_and_the_newest_with_a_model(tmp_path):
    old = _run(tmp_path / "a", created="2026-01-01T00:00:00")
    new = _run(tmp_path / "b" / "nested", created="2026-02-01T00:00:00")
    _run(tmp_path / "c", created="2026-03-01T00:00:00")  # newest, but no model.pt yet
    (tmp_path / "not-a-run").mkdir()
    for d in (old, new):
        (d / "model.pt").write_bytes(b"x")
    assert find_runs(tmp_path) == [old, new, tmp_path / "c"]
    assert [r["name"] for r in list_runs(tmp_path)] == ["a", "b/nested", "c"]
    assert latest_run(tmp_path) == new
    with pytest.raises(ConfigError, match="no run with a model.pt"):
        latest_run(tmp_path / "not-a-run")


def test_model_path(tmp_path):
    run = _run(tmp_path / "run")
    with pytest.raises(ModelFileError, match="no model.pt yet.*--resume"):
        model_path(run)
    with pytest.raises(ModelFileError, match="no model.onnx yet.*fmnist export"):
        model_path(run, "onnx")
    with pytest.raises(ModelFileError, match="no such file or folder"):
        model_path(tmp_path / "missing")
    (run / "model.pt").write_bytes(b"x")
    assert model_path(run) == run / "model.pt"
    assert model_path(run / "model.pt") == run / "model.pt"
    assert config_of_model(run / "model.pt") == read_config(run)
    (tmp_path / "loose.pt").write_bytes(b"x")
    assert config_of_model(tmp_path / "loose.pt") == {}


def test_saved_predictions_are_dropped_when_the_model_changes(tmp_path):
    run = _run(tmp_path / "run")
    (run / "model.pt").write_bytes(b"weights 1")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), 5)
    write_predictions(run, probs, tta=True)
    saved, tta = read_predictions(run)
    np.testing.assert_allclose(saved, probs, atol=1e-6)
    assert tta is True
    (run / "model.pt").write_bytes(b"weights 2")  # e.g. `fmnist calibrate` rewrote it
    assert read_predictions(run) is None
    (run / "predictions.npz").write_bytes(b"truncated")
    assert read_predictions(run) is None


def test_metrics_files(tmp_path):
    run = _run(tmp_path / "run")
    assert read_metrics(run) == {}
    write_metrics(run, {"accuracy": 0.5})
    write_metrics(run, {"accuracy": 0.6}, "val")
    assert read_metrics(run) == {"accuracy": 0.5}
    assert (run / metrics_filename("val")).is_file() and read_metrics(run, "val")["accuracy"] == 0.6


def test_prepare_data_gives_the_same_splits_every_time(learnable_dataset):
    from fmnist.recipes import resolve_recipe

    recipe = resolve_recipe("fast", val_fraction=0.2, train_limit=500, test_limit=100, seed=3)
    a, b = prepare_data(recipe, learnable_dataset), prepare_data(recipe, learnable_dataset)
    assert [len(s) for s in a] == [400, 100, 100]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.images, y.images)
    assert prepare_data(resolve_recipe("fast", val_fraction=0.0), learnable_dataset)[1] is None


def test_atomic_write_fsyncs_unless_told_the_file_is_redrawn(tmp_path, monkeypatch):
    """Run files are fsynced; the report's figures (durable=False) only renamed into place."""
    from fmnist import fileio

    synced = []
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: synced.append(fd))
    fileio.atomic_write(tmp_path / "a.bin", lambda f: f.write(b"a"))
    assert len(synced) == 1
    fileio.atomic_write(tmp_path / "b.png", lambda f: f.write(b"b"), durable=False)
    assert len(synced) == 1 and (tmp_path / "b.png").read_bytes() == b"b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.png"]  # no temp left
