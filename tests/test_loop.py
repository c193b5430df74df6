"""The fit loop's parts on their own: train_step, the device meters, validate, fit's hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmnist.callbacks import Callback, CallbackList, ProgressBar
from fmnist.datasets import Split
from fmnist.errors import ConfigError
from fmnist.loop import Loop, Meters, TrainData, TrainState, fit, train_step, validate
from fmnist.models import create_model
from fmnist.recipes import resolve_recipe

CPU = torch.device("cpu")


def _recipe(**kw):
    base = dict(model="baseline-small", optimizer="sgd", lr=0.1, momentum=0.0, epochs=2,
                batch_size=32, schedule="constant", label_smoothing=0.0, augment=(),
                weight_decay=0.0, precision="fp32", seed=0, epoch_fractions=())
    return resolve_recipe("fast", **{**base, **kw})


def _state(recipe, steps_per_epoch=4):
    torch.manual_seed(0)
    model = create_model(recipe.model, num_classes=4)
    return TrainState.create(recipe, model, CPU, steps_per_epoch)


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 4, (n,), generator=g)


def _loop(tmp_path, callbacks=(), n=128, **kw):
    recipe = _recipe(**kw)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 4, n).astype(np.int64)
    data = TrainData(torch.from_numpy(images), torch.from_numpy(labels), recipe.batch_size,
                     0.3, 0.3)
    state = _state(recipe, steps_per_epoch=-(-n // recipe.batch_size))
    return Loop(state, data, recipe, tmp_path, CallbackList(callbacks))


def test_train_step_steps_optimizer_and_schedule_and_keeps_results_on_the_device():
    recipe = _recipe(schedule="linear", warmup_epochs=0)
    state = _state(recipe)
    before = [p.detach().clone() for p in state.model.parameters()]
    lr0 = state.optimizer.param_groups[0]["lr"]
    x, y = _batch()
    loss, logits = train_step(state, x, y)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and not loss.requires_grad
    assert logits.shape == (32, 4) and not logits.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before, state.model.parameters(),
                                                    strict=True))
    assert state.optimizer.param_groups[0]["lr"] < lr0  # the schedule stepped once


def test_train_step_clips_the_gradient_norm():
    recipe = _recipe(lr=1.0, grad_clip=1e-3)
    state = _state(recipe)
    before = torch.cat([p.detach().flatten().clone() for p in state.model.parameters()])
    train_step(state, *_batch())
    after = torch.cat([p.detach().flatten() for p in state.model.parameters()])
    # plain SGD with lr 1: the update is the clipped gradient, norm <= 1e-3
    assert 0 < (after - before).norm() <= 1e-3 * 1.01


def test_train_step_uses_label_smoothing():
    x, y = _batch()
    losses = {}
    for smoothing in (0.0, 0.3):
        state = _state(_recipe(label_smoothing=smoothing))
        losses[smoothing], _ = train_step(state, x, y)
    assert losses[0.0] != losses[0.3]


def test_meters_sum_on_the_device_exactly_as_host_floats():
    meters = Meters(CPU)
    host_loss, host_correct = 0.0, 0
    for seed in range(5):
        x, y = _batch(n=7 + seed, seed=seed)
        logits = torch.randn(len(y), 4)
        loss = torch.nn.functional.cross_entropy(logits, y)
        meters.update(loss, logits, y)
        host_loss += loss.item() * len(y)
        host_correct += int((logits.argmax(1) == y).sum())
    totals = meters.totals()
    assert totals["loss_sum"] == host_loss  # bit for bit: resumed runs stay identical
    assert totals["correct"] == host_correct and totals["seen"] == sum(7 + s for s in range(5))
    assert isinstance(meters.loss_sum, torch.Tensor) and meters.loss_sum.dtype == torch.float64


def test_validate_matches_nll_and_accuracy(tmp_path):
    loop = _loop(tmp_path)
    rng = np.random.default_rng(1)
    split = Split(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
                  rng.integers(0, 4, 50).astype(np.int64))
    got = validate(loop, split)
    probs = loop.predict_probs(split.images)
    p_true = probs[np.arange(50), split.labels]
    assert got["val_loss"] == pytest.approx(float(-np.log(p_true).mean()))
    assert got["val_acc"] == pytest.approx(float((probs.argmax(1) == split.labels).mean()))
    assert validate(loop, None) == {"val_loss": None, "val_acc": None}


class _Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, loop):
        self.calls.append("train_begin")

    def on_epoch_begin(self, loop):
        self.calls.append(f"epoch_begin {loop.epoch}")

    def on_step_end(self, loop):
        self.calls.append(f"step {loop.epoch}.{loop.step}")

    def on_epoch_end(self, loop):
        self.calls.append(f"epoch_end {loop.epoch} {sorted(loop.row)}")

    def on_train_end(self, loop):
        self.calls.append("train_end")


def test_fit_calls_every_hook_in_order(tmp_path):
    rec = _Recorder()
    reason = fit(_loop(tmp_path, [rec], n=64))  # 2 steps per epoch, 2 epochs
    row = sorted(["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds",
                  "eval_seconds"])
    assert reason == ""
    assert rec.calls == ["train_begin", "epoch_begin 1", "step 1.1", "step 1.2",
                         f"epoch_end 1 {row}", "epoch_begin 2", "step 2.1", "step 2.2",
                         f"epoch_end 2 {row}", "train_end"]


def test_fit_stops_on_a_callbacks_reason_and_still_ends(tmp_path):
    class StopAfterOne(_Recorder):
        def on_epoch_end(self, loop):
            super().on_epoch_end(loop)
            return "enough"

    rec = StopAfterOne()
    assert fit(_loop(tmp_path, [rec], n=64, epochs=5)) == "enough"
    assert sum(c.startswith("epoch_end") for c in rec.calls) == 1
    assert rec.calls[-1] == "train_end"


def test_train_end_runs_when_a_step_fails(tmp_path):
    class Boom(_Recorder):
        def on_step_end(self, loop):
            raise RuntimeError("boom")

    rec = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        fit(_loop(tmp_path, [rec]))
    assert rec.calls[-1] == "train_end"


def _count_host_reads(monkeypatch):
    """Count tensor -> Python number conversions (each a host sync on a GPU)."""
    count = {"n": 0}
    for name in ("item", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            count["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


def test_steps_read_nothing_back_from_the_device(tmp_path, monkeypatch):
    steps = {"n": 0}

    class CountSteps(Callback):
        def on_step_end(self, loop):
            steps["n"] += 1

    loop = _loop(tmp_path, [CountSteps()], n=320, epochs=1)  # 10 steps
    count = _count_host_reads(monkeypatch)
    fit(loop)
    monkeypatch.undo()
    assert steps["n"] == 10
    assert count["n"] <= 3  # the epoch's row: loss sum and correct, read once


def test_the_bar_reads_the_meters_every_n_steps_only(tmp_path, monkeypatch):
    loop = _loop(tmp_path, [ProgressBar(every=5)], n=320, epochs=1)  # 10 steps
    count = _count_host_reads(monkeypatch)
    fit(loop)
    monkeypatch.undo()
    assert count["n"] <= 3 + 2 * 2  # the row, plus two reads at steps 5 and 10


def test_train_data_resizes_batches_when_a_size_is_set():
    images = torch.full((8, 28, 28), 200, dtype=torch.uint8)
    data = TrainData(images, torch.zeros(8, dtype=torch.int64), 4, 0.5, 0.25)
    perm, gen = torch.arange(8), torch.Generator()
    assert data.batch(perm, 0, gen)[0].shape == (4, 1, 28, 28)
    data.size = 20
    x, y = data.batch(perm, 1, gen)
    assert x.shape == (4, 1, 20, 20) and len(y) == 4
    torch.testing.assert_close(x, torch.full_like(x, (200 / 255 - 0.5) / 0.25))


class _Sizes(Callback):
    def __init__(self) -> None:
        self.sizes: list[int | None] = []

    def on_epoch_begin(self, loop: Loop) -> None:
        self.sizes.append(loop.data.size)


def test_epoch_sizes_resize_the_first_epochs_only(tmp_path):
    sizes = _Sizes()
    kw = {"widths": (8, 16), "residual": False}
    reason = fit(_loop(tmp_path, [sizes], n=64, model="fastnet", model_kwargs=kw, epochs=3,
                       epoch_sizes=(16, 20)))
    assert reason == "" and sizes.sizes == [16, 20, None]


@pytest.mark.parametrize("sizes", [(30,), (4,), ("x",)])
def test_epoch_sizes_outside_8_to_28_are_refused(sizes):
    with pytest.raises(ConfigError, match="epoch_sizes"):
        resolve_recipe("fast", epoch_sizes=sizes)
