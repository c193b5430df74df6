"""fmnist.optim: the optimizer choices, Muon on conv filters (muon-sgd) among them."""

from __future__ import annotations

import pytest
import torch

from fmnist.errors import ConfigError
from fmnist.models import create_model
from fmnist.optim import NS_COEFFICIENTS, MuonSGD, make_optimizer, newton_schulz
from fmnist.recipes import resolve_recipe

MUON = dict(optimizer="muon-sgd", lr=0.05, momentum=0.9, nesterov=True, muon_lr=0.05,
            weight_decay=5e-4, model_kwargs={"widths": (8, 16, 32), "residual": False})


def _model_and_batch():
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=10, widths=(8, 16, 32), residual=False)
    g = torch.Generator().manual_seed(0)
    return model, torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,),
                                                                          generator=g)


def test_muon_sgd_puts_the_conv_filters_under_muon_and_the_rest_under_sgd():
    model, _, _ = _model_and_batch()
    opt = make_optimizer(resolve_recipe("fast", **MUON), model)
    assert isinstance(opt, MuonSGD)
    muon = [g for g in opt.param_groups if g["muon"]]
    filters = [p for p in model.parameters() if p.requires_grad and p.ndim == 4]
    assert len(muon) == 1 and {id(p) for p in muon[0]["params"]} == {id(p) for p in filters}
    assert muon[0]["lr"] == 0.05 and muon[0]["momentum"] == 0.6
    others = [p for g in opt.param_groups if not g["muon"] for p in g["params"]]
    assert len(others) + len(filters) == sum(p.requires_grad for p in model.parameters())
    decayed = [g for g in opt.param_groups if g["weight_decay"]]
    assert [p.ndim for g in decayed for p in g["params"]] == [2]  # the head's weight only


def test_muon_sgd_steps_lower_the_loss_and_keep_filter_norms():
    model, x, y = _model_and_batch()
    opt = make_optimizer(resolve_recipe("fast", **MUON), model)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    for _ in range(5):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1
    conv = model.blocks[0].conv.weight  # rescaled to sqrt(out) before each step, then moved
    assert abs(float(conv.detach().norm()) / len(conv) ** 0.5 - 1) < 0.2
    state = opt.state_dict()  # resumable like any optimizer
    again = make_optimizer(resolve_recipe("fast", **MUON), model)
    again.load_state_dict(state)
    buf = again.state[conv]["momentum_buffer"]
    assert torch.equal(buf, opt.state[conv]["momentum_buffer"])


@pytest.mark.parametrize("overrides, match", [
    ({"optimizer": "muon"}, r"optimizer='muon' is invalid; expected .*muon-sgd"),
    ({"muon_lr": 0.0}, r"muon_lr=0.0 is invalid; expected a number > 0"),
    ({"muon_momentum": 1.0}, r"muon_momentum=1.0 is invalid; expected a number in \[0, 1\)"),
    ({"augment": ("altflip:x",)}, r"'altflip:x'.*not a number"),
])
def test_bad_optimizer_and_augment_specs_are_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        resolve_recipe("fast", **overrides)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("shape", [(32, 72), (128, 576), (10, 3)])
def test_newton_schulz_orthogonalizes_as_torchs_muon_does(shape):
    """fmnist's own iteration (no private torch module needed, so muon-sgd runs on every
    supported torch): singular values near 1, and bit for bit torch.optim.Muon's where this
    torch has it."""
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = newton_schulz(g)
    assert out.shape == g.shape and out.dtype == torch.bfloat16
    sv = torch.linalg.svdvals(out.float())
    assert 0.3 < sv.min() and sv.max() < 1.6  # cf. U V^T: all ones
    try:
        from torch.optim._muon import _zeropower_via_newtonschulz
    except ImportError:
        return
    ref = _zeropower_via_newtonschulz(g, NS_COEFFICIENTS, 5, 1e-7)
    assert torch.equal(out, ref)
