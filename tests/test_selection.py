"""Epochs that train on a share of the images, drawn towards the hard ones (fmnist.selection)."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from torch.nn import functional as F

from fmnist.errors import ConfigError
from fmnist.loop import TrainingInterrupted
from fmnist.optim import make_scheduler
from fmnist.recipes import resolve_recipe
from fmnist.runs import read_history
from fmnist.selection import LossTable, epoch_steps, total_steps
from fmnist.training import train


def test_epoch_steps_follow_the_shares_and_later_epochs_take_the_last():
    recipe = resolve_recipe("fast", epochs=5, epoch_fractions=(1, 0.5, 0.25))
    assert [epoch_steps(recipe, e, 10) for e in (1, 2, 3, 4, 5)] == [10, 5, 3, 3, 3]
    assert total_steps(recipe, 10) == 24
    assert total_steps(resolve_recipe("fast", epochs=4, epoch_fractions=()), 10) == 40


def test_the_schedule_spans_the_short_epochs_and_ends_annealed():
    recipe = resolve_recipe("fast", epochs=3, epoch_fractions=(1, 0.5, 0.5), lr=1.0,
                            warmup_epochs=0.5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(recipe, opt, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == 1.0 and lrs[-1] < 0.1  # one cycle over 10 + 5 + 5 steps
    assert opt.param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("shares", [(0.5,), (1, 0), (1, 1.5), (1, -0.2), (1, "half"),
                                    (1, math.nan), (1, True)])
def test_bad_epoch_fractions_are_refused_with_the_fix(shares):
    with pytest.raises(ConfigError, match=r"epoch_fractions=.*the first 1"):
        resolve_recipe("fast", epoch_fractions=shares)


def test_shares_given_as_text_on_the_command_line_are_numbers():
    assert resolve_recipe("fast", epoch_fractions=("1", ".5")).epoch_fractions == (1.0, 0.5)


def test_the_table_records_each_images_label_smoothed_loss():
    table = LossTable(6, label_smoothing=0.1)
    logits, labels = torch.randn(3, 4), torch.tensor([0, 3, 1])
    table.record(torch.tensor([4, 0, 2]), logits, labels)
    expected = F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1)
    torch.testing.assert_close(table.loss[[4, 0, 2]], expected)
    assert torch.isinf(table.loss[[1, 3, 5]]).all()  # never trained on yet


def test_a_draw_keeps_k_images_in_the_epochs_order_favouring_high_losses():
    n, k = 1000, 300
    table = LossTable(n)
    table.loss = torch.arange(n, dtype=torch.float32)  # image i's loss is i
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    drawn = table.draw(perm, k, seed=0, epoch=2)
    assert len(drawn) == k and len(set(drawn.tolist())) == k
    positions = {int(i): p for p, i in enumerate(perm)}
    assert [positions[int(i)] for i in drawn] == sorted(positions[int(i)] for i in drawn)
    assert drawn.float().mean() > 0.65 * n  # weight ~ rank^2: mean rank 3n/4 at k << n
    assert (drawn < n // 10).sum() > 0  # easy images still come up
    assert torch.equal(drawn, table.draw(perm, k, seed=0, epoch=2))  # seeded
    assert not torch.equal(drawn, table.draw(perm, k, seed=0, epoch=3))
    assert torch.equal(table.draw(perm, n, seed=0, epoch=2), perm)  # a full epoch


class _TwoRanks:
    """A DistContext stand-in for rank 0 of two: its sums add the other rank's tensors."""

    enabled = True

    def __init__(self, other):
        self.other = torch.stack([torch.where(other.fresh, other.loss, 0.0),
                                  other.fresh.float()])

    def sum_tensor_(self, t):
        return t.add_(self.other)


def test_merge_gives_each_rank_the_others_records():
    mine, theirs = LossTable(6), LossTable(6)
    logits, labels = torch.randn(2, 3), torch.tensor([0, 2])
    mine.record(torch.tensor([0, 1]), logits, labels)
    theirs.record(torch.tensor([4, 5]), logits.flip(0), labels.flip(0))
    expected = torch.cat([mine.loss[:2], torch.tensor([math.inf] * 2), theirs.loss[4:]])
    mine.merge(_TwoRanks(theirs))
    torch.testing.assert_close(mine.loss, expected)
    assert not mine.fresh.any()  # the next merge sends only what is new


QUICK_SHARE = dict(model="baseline-small", epochs=3, batch_size=64, optimizer="sgd", lr=0.05,
                   momentum=0.9, schedule="onecycle", warmup_epochs=1,
                   epoch_fractions=(1, 0.5, 0.5), train_limit=640, test_limit=200)


class _InterruptAt:
    """SIGINT to this process at a step of an epoch, as a user pressing Ctrl-C."""

    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def on_step_end(self, loop):
        if (loop.epoch, loop.step) == (self.epoch, self.step):
            os.kill(os.getpid(), signal.SIGINT)


class _StepCounter:
    def __init__(self):
        self.steps = {}

    def on_step_end(self, loop):
        self.steps[loop.epoch] = loop.step


def test_short_epochs_train_fewer_steps_and_resume_exactly(learnable_dataset, tmp_path):
    counter = _StepCounter()
    ref = train(data=learnable_dataset, out=tmp_path / "ref", callbacks=[counter],
                **QUICK_SHARE)
    full = counter.steps[1]
    assert counter.steps == {1: full, 2: math.ceil(full / 2), 3: math.ceil(full / 2)}
    assert len(read_history(ref.dir)) == 3
    with pytest.raises(TrainingInterrupted) as e:  # inside the first short epoch
        train(data=learnable_dataset, out=tmp_path / "cut", callbacks=[_InterruptAt(2, 2)],
              **QUICK_SHARE)
    assert (e.value.epoch, e.value.step) == (2, 2)
    resumed = train(data=learnable_dataset, resume=tmp_path / "cut")
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(v, resumed.model.state_dict()[k], rtol=0, atol=0)
    assert resumed.test_metrics["loss"] == ref.test_metrics["loss"]
