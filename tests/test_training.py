"""train(): the run folder, checkpoints, early stopping, resume, signals, DDP.

The loop's parts are tested in test_loop.py, the callbacks in test_callbacks.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fmnist.checkpoints import atomic_save, load_model, safe_load
from fmnist.errors import ConfigError, ModelFileError
from fmnist.recipes import Recipe, resolve_recipe
from fmnist.training import (
    TrainingDiverged,
    TrainingInterrupted,
    lr_factor,
    read_config,
    read_history,
    train,
)

# small, quick, and exercising every stateful part: dropout (global RNG), augmentation
# (per-epoch generator), EMA, a schedule, a validation split
QUICK = dict(model="baseline-dropout", epochs=3, batch_size=64, optimizer="adam", lr=2e-3,
             schedule="onecycle", warmup_epochs=0.5, augment=("flip", "translate:2", "erase"),
             ema_decay=0.9, val_fraction=0.2, label_smoothing=0.1, seed=5)


@pytest.mark.parametrize(
    "schedule, step, expected",
    [
        ("constant", 50, 1.0),
        ("onecycle", 0, 0.1),
        ("onecycle", 10, 1.0),  # end of warm-up
        ("onecycle", 55, 0.5),  # halfway down
        ("onecycle", 100, 0.0),
        ("cosine", 9, 1.0),  # warm-up reaches the base lr
        ("cosine", 55, 0.5),
        ("linear", 55, 0.5),
        ("linear", 100, 0.0),
    ],
)
def test_lr_schedules(schedule, step, expected):
    assert lr_factor(schedule, step, total=100, warmup=10) == pytest.approx(expected, abs=1e-9)


def test_recipe_round_trip_and_validation():
    r = resolve_recipe("fast", epochs=3, augment=("flip",), model_kwargs={"widths": [8, 16, 32]})
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ConfigError, match="epochs=0 is invalid"):
        resolve_recipe("fast", epochs=0)
    with pytest.raises(ConfigError, match="needs a validation split"):
        resolve_recipe("fast", monitor="val_acc")
    with pytest.raises(ConfigError, match="unknown recipe field.*epoch"):
        resolve_recipe("fast", epoch=3)
    with pytest.raises(ConfigError, match="unknown augmentation 'flipp'"):
        resolve_recipe("fast", augment=("flipp",))


def test_run_folder_contents_and_model_file(learnable_dataset, tmp_path):
    run = train(data=learnable_dataset, out=tmp_path / "run", **QUICK)
    d = run.dir
    for name in ("config.json", "history.csv", "model.pt", "metrics.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (d / name).is_file(), name
    config = read_config(d)
    assert config["status"] == "finished"
    assert Recipe.from_dict(config["recipe"]) == run.recipe
    assert config["environment"]["torch"] == torch.__version__
    assert config["dataset"]["train"] == 1600 and config["dataset"]["val"] == 400
    history = read_history(d)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert all(r["val_acc"] is not None and r["seconds"] > 0 for r in history)
    # a data file, not code: loads with weights_only=True and rebuilds the model
    payload = torch.load(d / "model.pt", weights_only=True)
    assert payload["meta"]["arch"] == "baseline-dropout"
    model, meta = load_model(d)
    assert meta.classes == learnable_dataset.classes
    assert not model.training
    assert run.test_accuracy > 0.8  # chance is 0.1
    assert json.loads((d / "metrics.json").read_text())["accuracy"] == run.test_accuracy


def test_whitening_stem_is_set_from_the_data_and_saved(learnable_dataset, tmp_path):
    from fmnist.models import create_model

    random_init = create_model("fastnet", stem="whiten").stem[0].conv.weight
    run = train(data=learnable_dataset, out=tmp_path / "w", model="fastnet",
                model_kwargs={"widths": (16, 32), "stem": "whiten"}, epochs=2,
                batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, seed=1,
                epoch_fractions=())
    model, _ = load_model(run.dir)
    weight = model.stem[0].conv.weight
    assert not torch.allclose(weight, random_init)  # set from the data, kept through training
    images = torch.from_numpy(learnable_dataset.train.images[:2000]).unsqueeze(1) / 255.0
    x = (images - learnable_dataset.mean) / learnable_dataset.std
    out = torch.nn.functional.conv2d(x, weight[:9]).permute(1, 0, 2, 3).reshape(9, -1)
    assert torch.allclose(out.var(dim=1), torch.ones(9), atol=0.25)  # unit variance
    assert run.test_accuracy > 0.5


def test_model_file_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "fmnist-model", "x": Evil()}, path)
    with pytest.raises(ModelFileError, match="not a readable fmnist model"):
        load_model(path)


def test_crash_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert safe_load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


class _Plateau:
    """Replaces val_loss with a constructed sequence and records the weights per epoch."""

    def __init__(self, losses):
        self.losses, self.weights = losses, {}

    def on_epoch_end(self, state):
        state.row["val_loss"] = self.losses[state.epoch - 1]
        self.weights[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}


def test_early_stopping_on_a_plateau_restores_best_weights(learnable_dataset, tmp_path):
    plateau = _Plateau([1.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    run = train(data=learnable_dataset, out=tmp_path / "es", callbacks=[plateau],
                **{**QUICK, "epochs": 6, "ema_decay": None, "patience": 2})
    assert len(run.history) == 4  # best at 2, then 3 and 4 without improvement
    assert "no improvement" in run.stop_reason
    assert run.meta.metrics["weights_epoch"] == 2
    final = run.model.state_dict()
    for k, v in plateau.weights[2].items():
        torch.testing.assert_close(final[k], v, rtol=0, atol=0)
    assert any(not torch.equal(final[k], plateau.weights[4][k]) for k in final)  # restored


class _InterruptAfter:
    """Sends this process SIGINT at the end of an epoch, as a user pressing Ctrl-C."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# alternating flips (a function of seed, epoch and image) and Muon's momentum resume too
QUICK_ALT = {**QUICK, "augment": ("altflip", "translate:2"), "optimizer": "muon-sgd",
             "lr": 0.02, "momentum": 0.9, "muon_lr": 0.02}


@pytest.mark.parametrize("quick", [QUICK, QUICK_ALT], ids=["adam-flips", "muon-altflip"])
def test_resume_after_interrupt_gives_identical_results(learnable_dataset, tmp_path, quick):
    ref = train(data=learnable_dataset, out=tmp_path / "ref", **quick)
    with pytest.raises(TrainingInterrupted) as e:
        train(data=learnable_dataset, out=tmp_path / "cut", callbacks=[_InterruptAfter(1)],
              **quick)
    assert e.value.epoch == 2 and e.value.step == 0
    assert read_config(tmp_path / "cut")["status"] == "interrupted"
    assert len(read_history(tmp_path / "cut")) == 1
    resumed = train(data=learnable_dataset, resume=tmp_path / "cut")
    assert resumed.test_metrics["accuracy"] == ref.test_metrics["accuracy"]
    assert resumed.test_metrics["loss"] == ref.test_metrics["loss"]
    a, b = _params(ref.model), _params(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    for r1, r2 in zip(read_history(ref.dir), read_history(resumed.dir), strict=True):
        assert r1["train_loss"] == r2["train_loss"] and r1["val_loss"] == r2["val_loss"]


def test_resume_rejects_overrides_and_missing_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoints/last.pt"):
        train(resume=tmp_path)


def test_nan_loss_stops_with_epoch_and_step(learnable_dataset, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 1 step \d+"):
        train(data=learnable_dataset, out=tmp_path / "nan", model="baseline-small",
              optimizer="sgd", lr=1e12, epochs=1, precision="fp32")
    config = read_config(tmp_path / "nan")  # not "running" forever: the run failed
    assert config["status"] == "failed" and "loss became" in config["error"]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fmnist", *map(str, args)],
                          capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_sigint_mid_epoch_exits_130_and_resume_matches(learnable_csv_dir, tmp_path):
    common = ["--model", "baseline-small", "--epochs", "4", "--batch-size", "16",
              "--optimizer", "adam", "--lr", "0.001", "--augment", "flip,translate:2",
              "--seed", "3", "--data-dir", learnable_csv_dir, "--no-report"]
    run_dir = tmp_path / "sig"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fmnist", "train", *map(str, common),
                             "--out", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 900  # a loaded machine takes minutes for an epoch
    while not (run_dir / "history.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # wait for epoch 1 to end, so the signal lands inside training
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"fmnist train --resume {run_dir}" in err
    ckpt = safe_load(run_dir / "checkpoints" / "last.pt")
    assert ckpt["epoch"] >= 2
    resumed = _cli("train", "--resume", run_dir, "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    ref = _cli("train", *common, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    m1 = json.loads((run_dir / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert m1["accuracy"] == m2["accuracy"] and m1["loss"] == m2["loss"]
    assert "test accuracy" in ref.stdout and str(tmp_path / "ref") in ref.stdout


def test_cli_train_usage_errors(tmp_path):
    r = _cli("train", "--resume", tmp_path / "nothing")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no checkpoints/last.pt" in r.stderr
    r = _cli("train", "--recipe", "fsat")
    assert r.returncode == 2 and "Did you mean 'fast'" in r.stderr


@pytest.mark.realdata
def test_short_training_on_real_subset_beats_chance(real_data_dir, tmp_path):
    run = train("baseline-small", out=tmp_path / "real", data_dir=real_data_dir, epochs=2,
                train_limit=3000, test_limit=1000, offline=True)
    assert run.test_accuracy > 0.70  # chance is 0.10
    assert np.isfinite(run.test_metrics["loss"])


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process(learnable_csv_dir, tmp_path):
    # no BN, dropout or augmentation: with equal shards a 2-rank step is the single-process
    # step on the same global batch, up to the order of floating-point sums (in fp32: bf16
    # rounding amplifies that order into a 1.2-point accuracy gap on this tiny model)
    common = ["--model", "baseline-small", "--epochs", "3", "--batch-size", "64",
              "--optimizer", "adam", "--lr", "0.001", "--schedule", "constant",
              "--augment", "", "--label-smoothing", "0", "--weight-decay", "0",
              "--val-fraction", "0.2", "--seed", "1", "--data-dir", learnable_csv_dir,
              "--precision", "fp32", "--no-report"]
    r = _cli("train", *common, "--nproc", "2", "--out", tmp_path / "ddp", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("test accuracy") == 1  # rank 0 alone reports
    d = tmp_path / "ddp"
    config = read_config(d)
    assert config["distributed"]["world_size"] == 2
    assert config["distributed"]["per_rank_batch"] == 32
    assert config["distributed"]["params_identical_across_ranks"] is True
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(read_history(d)) == 3  # one history, written once per epoch
    single = _cli("train", *common, "--out", tmp_path / "one", timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    m_ddp = json.loads((d / "metrics.json").read_text())
    m_one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert m_ddp["n"] == m_one["n"] == 500  # every test image evaluated exactly once
    assert abs(m_ddp["accuracy"] - m_one["accuracy"]) <= 0.01
    h_ddp, h_one = read_history(d), read_history(tmp_path / "one")
    assert h_ddp[-1]["train_loss"] == pytest.approx(h_one[-1]["train_loss"], rel=0.02)


def test_warmup_is_capped_so_short_runs_anneal():
    from fmnist.training import make_scheduler

    recipe = resolve_recipe("fast", epochs=1)  # warmup_epochs 1.5 > the whole run
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    sched = make_scheduler(recipe, opt, steps_per_epoch=100)
    lrs = []
    for _ in range(100):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(recipe.lr)  # the peak is reached...
    assert lrs[-1] < 0.02 * recipe.lr  # ...and the run ends annealed


def test_overriding_the_model_drops_the_recipes_model_kwargs():
    assert resolve_recipe("fast").model_kwargs  # fast configures its fastnet
    r = resolve_recipe("fast", model="baseline-small")
    assert r.model_kwargs == {}
    r = resolve_recipe("fast", model="resnet", model_kwargs={"depth": 8})
    assert r.model_kwargs == {"depth": 8}


# --------------------------------------------------------------------------- best.pt / last.pt

PLATEAU = [1.0, 0.5, 0.7, 0.8, 0.9, 1.0]  # best at epoch 2, early stop after epoch 4
ES = {**QUICK, "epochs": 6, "ema_decay": None, "patience": 2}


def test_crash_between_best_and_last_checkpoint_resumes_to_the_right_best(
        learnable_dataset, tmp_path, monkeypatch):
    ref = train(data=learnable_dataset, out=tmp_path / "ref", callbacks=[_Plateau(PLATEAU)],
                **ES)
    import fmnist.callbacks.checkpoint as checkpoint

    real_save = checkpoint.atomic_save
    written: list[str] = []

    def save_then_die(obj, path):  # the process dies right after best.pt of epoch 2
        real_save(obj, path)
        written.append(path.name)
        if path.name == "best.pt" and obj["epoch"] == 3:
            raise KeyboardInterrupt("killed between best.pt and last.pt")

    monkeypatch.setattr(checkpoint, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(data=learnable_dataset, out=tmp_path / "cut", callbacks=[_Plateau(PLATEAU)],
              **ES)
    monkeypatch.undo()
    assert written[-2:] == ["last.pt", "best.pt"]  # best.pt first within an epoch
    assert safe_load(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = train(data=learnable_dataset, resume=tmp_path / "cut",
                    callbacks=[_Plateau(PLATEAU)])
    assert resumed.meta.metrics["weights_epoch"] == ref.meta.metrics["weights_epoch"] == 2
    best = safe_load(tmp_path / "cut" / "checkpoints" / "best.pt")
    assert best["epoch"] == 3  # the checkpoint after epoch 2
    a, b = _params(ref.model), _params(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


class _StaleBest(_Plateau):
    """Puts epoch 1's best.pt back after epoch 3, as a crash of an fmnist that wrote
    last.pt before best.pt would have left it."""

    def on_epoch_end(self, state):
        super().on_epoch_end(state)
        ckpt = state.run_dir / "checkpoints"
        if state.epoch == 2:  # best.pt still holds epoch 1 here
            (ckpt / "epoch1.pt").write_bytes((ckpt / "best.pt").read_bytes())
        if state.epoch == 3:
            (ckpt / "best.pt").write_bytes((ckpt / "epoch1.pt").read_bytes())


def test_best_checkpoint_of_the_wrong_epoch_is_not_restored(learnable_dataset, tmp_path,
                                                            caplog):
    stale = _StaleBest(PLATEAU)
    with caplog.at_level("WARNING", logger="fmnist"):
        run = train(data=learnable_dataset, out=tmp_path / "es", callbacks=[stale], **ES)
    assert len(run.history) == 4
    assert run.meta.metrics["weights_epoch"] == 4  # what the model holds, not "2"
    assert "holds the weights of epoch 1, not of the best epoch 2" in caplog.text
    final = run.model.state_dict()
    for k, v in stale.weights[4].items():
        torch.testing.assert_close(final[k], v, rtol=0, atol=0)


# --------------------------------------------------------------------------- --nproc


def _ddp_args(data_dir, *extra):
    return ["train", "--nproc", "2", "--recipe", "baseline-small", "--train-limit", "600",
            "--data-dir", str(data_dir), "--no-report", *extra]


def _own_data_only():
    """This environment without FMNIST_DATA_DIR: only the data a test names is found."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FMNIST_")}


@pytest.mark.slow
def test_nproc_ctrl_c_exits_130_with_one_message(learnable_csv_dir, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**_own_data_only(), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmnist", *_ddp_args(learnable_csv_dir, "--epochs", "50",
                                                     "--out", str(run_dir))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)  # a terminal's Ctrl-C reaches the whole process group
    deadline = time.monotonic() + 120
    while not (run_dir / "history.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # leave no rank behind
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert err.count(f"Resume with: fmnist train --resume {run_dir}") == 1, err[-2000:]
    assert err.count("SIGINT received") == 1 and "Traceback" not in err
    assert read_config(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_nproc_user_error_in_the_ranks_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "home").mkdir()
    r = _cli(*_ddp_args(tmp_path / "no-data", "--offline", "--out", tmp_path / "r"),
             timeout=120, cwd=tmp_path, env={**_own_data_only(), "HOME": str(tmp_path / "home")})
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("fmnist: error:") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()  # nothing written, no empty run folder left


@pytest.mark.slow
def test_two_trainings_into_one_out_one_wins_the_other_is_refused(learnable_csv_dir, tmp_path):
    out = tmp_path / "same"
    env = {**_own_data_only(), "OMP_NUM_THREADS": "1"}
    procs = {seed: subprocess.Popen(
        [sys.executable, "-m", "fmnist", "train", "--recipe", "baseline-small", "--epochs", "2",
         "--train-limit", "600", "--seed", str(seed), "--data-dir", str(learnable_csv_dir),
         "--out", str(out), "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for seed in (1, 2)}
    results = {seed: (p.wait(timeout=300), p.stderr.read()) for seed, p in procs.items()}
    codes = sorted(code for code, _ in results.values())
    assert codes == [0, 2], results
    winner = next(seed for seed, (code, _) in results.items() if code == 0)
    loser_err = next(err for code, err in results.values() if code == 2)
    assert loser_err.count("fmnist: error:") == 1 and str(out) in loser_err
    assert "in use" in loser_err or "not empty" in loser_err
    # config.json, metrics.json and model.pt all come from the run that went on
    assert read_config(out)["recipe"]["seed"] == winner
    _, meta = load_model(out)
    assert meta.metrics["test_acc"] == json.loads((out / "metrics.json").read_text())["accuracy"]
