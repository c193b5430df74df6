"""Callbacks one by one, and their state across a resume (collected by the checkpoint)."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch

from fmnist.callbacks import (
    EMA,
    Callback,
    CallbackList,
    EarlyStopping,
    TerminateOnNaN,
    TrainingDiverged,
    callback_states,
    should_stop,
)
from fmnist.checkpoints import safe_load
from fmnist.training import TrainingInterrupted, read_history, train


@pytest.mark.parametrize(
    "values, mode, patience, min_delta, stop",
    [
        ([1.0, 0.9, 0.8], "min", 2, 0.0, False),  # still improving
        ([1.0, 0.9, 0.95, 0.97], "min", 2, 0.0, True),  # two epochs without a new best
        ([1.0, 0.9, 0.95], "min", 2, 0.0, False),  # one epoch only
        ([0.5, 0.6, 0.7, 0.65, 0.66], "max", 2, 0.0, True),
        ([1.0, 0.99, 0.985], "min", 2, 0.02, True),  # improvements below min_delta don't count
        ([1.0, 0.95, 0.93], "min", 2, 0.02, False),  # 0.05 beats min_delta
        ([1.0], "min", 1, 0.0, False),
    ],
)
def test_should_stop_table(values, mode, patience, min_delta, stop):
    decided, reason = should_stop(values, mode=mode, patience=patience, min_delta=min_delta)
    assert decided is stop
    assert bool(reason) is stop


def test_early_stopping_tracks_best_and_round_trips():
    es = EarlyStopping("val_acc", patience=1)
    assert es.mode == "max" and es.best_epoch() == 0 and not es.improved()
    for v, improved in ((0.5, True), (0.7, True), (0.6, False)):
        es.update({"val_acc": v})
        assert es.improved() is improved
    assert es.best_epoch() == 2
    again = EarlyStopping("val_acc", patience=1)
    again.load_state_dict(es.state_dict())
    assert again.values == es.values and again.best_epoch() == 2


class _Plain:
    """A user callback from before the Callback class: only on_epoch_end, no state."""

    def on_epoch_end(self, state):
        return None


class _Counter(Callback):
    def __init__(self, reason=None):
        self.n, self.reason = 0, reason

    def on_epoch_end(self, loop):
        self.n += 1
        return self.reason

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def test_callback_list_keys_states_and_reasons():
    a, b, plain = _Counter(), _Counter("stop b"), _Plain()
    hooks = CallbackList([a, plain, b, _Counter("stop c")])
    assert hooks.keys == ["_Counter", "_Plain", "_Counter#2", "_Counter#3"]
    assert hooks.epoch_end(loop=None) == "stop b"  # the first reason wins; all ran
    assert (a.n, b.n) == (1, 1)
    states = hooks.state_dict()
    assert states == {"_Counter": {"n": 1}, "_Counter#2": {"n": 1}, "_Counter#3": {"n": 1}}
    fresh = [_Counter(), _Plain(), _Counter(), _Counter()]
    CallbackList(fresh).load_state_dict({**states, "_Counter#2": {"n": 7}})
    assert [fresh[0].n, fresh[2].n, fresh[3].n] == [1, 7, 1]
    hooks.call("on_step_end", loop=None)  # hooks a callback lacks are skipped


def test_callback_states_read_checkpoints_from_before_callbacks_had_state():
    legacy = {"stopper": {"values": [0.5]}, "ema": None, "history": [{"epoch": 1}]}
    assert callback_states(legacy) == {"EarlyStopping": {"values": [0.5]},
                                       "History": {"rows": [{"epoch": 1}]}}
    assert callback_states({"callbacks": {"X": {}}}) == {"X": {}}


def test_ema_averages_parameters_with_its_decay():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.75)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, start + 1.0)  # 0.75 * w + 0.25 * (w + 4)
    assert not any(p.requires_grad for p in ema.module.parameters())


class _FakeLoop:
    def __init__(self, step, loss_sum, steps_per_epoch=100):
        from fmnist.loop import Meters

        self.epoch, self.step, self.steps_per_epoch = 3, step, steps_per_epoch
        self.meters = Meters(torch.device("cpu"), loss_sum=loss_sum)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        self.state = type("S", (), {"scheduler": torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 1.0)})()


def test_terminate_on_nan_checks_every_n_steps_and_at_the_epochs_end():
    every5 = TerminateOnNaN(every=5)
    every5.on_step_end(_FakeLoop(step=7, loss_sum=math.nan))  # not a checking step
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 3 step 6-10"):
        every5.on_step_end(_FakeLoop(step=10, loss_sum=math.nan))
    with pytest.raises(TrainingDiverged, match="inf at epoch 3 step 96-98"):
        every5.on_step_end(_FakeLoop(step=98, loss_sum=math.inf, steps_per_epoch=98))
    with pytest.raises(TrainingDiverged, match=r"at epoch 3 step 7 \(lr 0.5\)"):
        TerminateOnNaN().on_step_end(_FakeLoop(step=7, loss_sum=math.nan))
    TerminateOnNaN().on_step_end(_FakeLoop(step=7, loss_sum=12.5))


QUICK = dict(model="baseline-small", epochs=3, batch_size=64, optimizer="adam", lr=2e-3,
             val_fraction=0.2, augment=("flip",), ema_decay=0.9, seed=2)


class _EpochLog(Callback):
    """A user callback with state: the epochs it saw, and SIGINT after ``interrupt_at``."""

    def __init__(self, interrupt_at=None):
        self.seen, self.interrupt_at = [], interrupt_at

    def on_epoch_end(self, loop):
        self.seen.append(loop.epoch)
        loop.row["my_metric"] = 10.0 * loop.epoch  # kept by history.csv and the checkpoint
        if loop.epoch == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    def state_dict(self):
        return {"seen": list(self.seen)}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])


def test_user_callback_state_is_checkpointed_and_restored_on_resume(learnable_dataset,
                                                                     tmp_path):
    with pytest.raises(TrainingInterrupted):
        train(data=learnable_dataset, out=tmp_path / "cut", callbacks=[_EpochLog(1)],
              **QUICK)
    ckpt = safe_load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ckpt["callbacks"]["_EpochLog"] == {"seen": [1]}
    assert set(ckpt["callbacks"]) >= {"EMA", "EarlyStopping", "History"}
    log = _EpochLog()
    train(data=learnable_dataset, resume=tmp_path / "cut", callbacks=[log])
    assert log.seen == [1, 2, 3]  # restored, then continued
    assert [r["my_metric"] for r in read_history(tmp_path / "cut")] == [10.0, 20.0, 30.0]
