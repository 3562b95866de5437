"""k-WTA, PNI, WCA, Sparta and the training variants of the Paris-Dauphine study (REFERENCE sections 2-5)."""
import copy

import pytest
import torch

from lwta_utils.config.schema import MIXED_SLOTS, AdversarialConfig, TrainConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.switches import is_stochastic, switches
from lwta_utils.defenses.kwta import KWTA, KWTA_KERNELS, kwta, schedule_epochs, scheduled_gamma
from lwta_utils.defenses.pni import NoiseInjection, PNIConv2d, PNILinear, weight_noise
from lwta_utils.defenses.sparta import SpartaReLU
from lwta_utils.defenses.wca import WCAHead
from lwta_utils.models import build_model
from lwta_utils.training.fit import fit, make_optimizer
from lwta_utils.training.inputs import draw_branch, training_inputs

KERNELS = [k for k in KWTA_KERNELS if k != "auto"]


# ---------------------------------------------------------------- k-WTA
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", [(6, 32, 28, 28), (6, 8, 5, 5), (9, 128), (4, 3)])
def test_kwta_keeps_exactly_the_top_k_per_sample(kernel, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape)  # continuous values: no ties
    gamma = 0.2
    out = kwta(x, gamma, kernel)
    flat, oflat = x.flatten(1), out.flatten(1)
    N = flat.shape[1]
    k = max(1, int(gamma * N))
    top = flat.topk(k, dim=1).indices
    expected = torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top))
    assert torch.equal(oflat, expected)
    assert ((oflat != 0).sum(1) == k).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_kwta_gradient_is_grad_times_mask(kernel):
    torch.manual_seed(1)
    x = torch.randn(5, 16, 7, 7, requires_grad=True)
    out = kwta(x, 0.1, kernel)
    g = torch.randn_like(out)
    out.backward(g)
    mask = (out != 0).float()
    assert torch.equal(x.grad, g * mask)


def test_kwta_ties_threshold_kernels_keep_all_ties_scatter_keeps_exactly_k():
    # documented behaviour: values equal to the k-th largest are all kept by the threshold
    # kernels (the authors' semantics); 'scatter' keeps exactly k of them
    x = torch.tensor([[5.0, 3.0, 3.0, 3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # k = int(0.2 * 10) = 2
    for kernel in ("numba", "topk", "official"):
        assert (kwta(x, 0.2, kernel) != 0).sum() == 4, kernel
    assert (kwta(x, 0.2, "scatter") != 0).sum() == 2


def test_kwta_numba_kernel_is_exact_on_adversarial_layouts():
    # structured rows (sorted, constant blocks, a spike) defeat a strided sample: the fallback must stay exact
    rows = [torch.arange(5000.0), torch.arange(5000.0).flip(0), torch.cat([torch.zeros(4000), torch.randn(1000)]),
            torch.cat([torch.full((100,), 9.0), torch.randn(4900)]), torch.randn(5000).sort().values]
    x = torch.stack(rows)
    for gamma in (0.001, 0.1, 0.2, 0.5, 1.0):
        assert torch.equal(kwta(x, gamma, "numba"), kwta(x, gamma, "official")), gamma


def test_kwta_gamma_schedule():
    assert [scheduled_gamma(0.2, 0.1, 0.005, 2, e) for e in (0, 1, 2, 3, 4)] == pytest.approx(
        [0.2, 0.2, 0.195, 0.195, 0.19])
    assert scheduled_gamma(0.2, 0.1, 0.025, 1, 50) == 0.1
    assert schedule_epochs(0.2, 0.1, 0.005, 2) == 40
    assert schedule_epochs(0.2, 0.1, 0.025, 1) == 4


def test_kwta_incremental_fit_lowers_gamma_and_selects_only_final_gamma(smoke_cfg, splits):
    m = copy.deepcopy(smoke_cfg.models["kwta_incr"])
    m.train.epochs = 4
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    res = fit(model, _tiny(splits), m.train, device=torch.device("cpu"), seed=0, progress=False)
    gammas = [h["gamma"] for h in res.history]
    assert gammas == pytest.approx([0.2, 0.15, 0.1, 0.1])
    assert res.best_epoch >= 3
    assert all(layer.gamma == pytest.approx(0.1) for layer in model.modules() if isinstance(layer, KWTA))


# ---------------------------------------------------------------- PNI
def test_pni_weight_noise_has_std_alpha_times_std_w():
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3) * 0.3
    alpha = torch.tensor(0.25)
    noise = torch.stack([weight_noise(w, alpha) - w for _ in range(20)])
    assert noise.std().item() == pytest.approx(0.25 * w.std().item(), rel=0.02)
    conv = PNIConv2d(4, 6, 3, granularity="channel")
    with torch.no_grad():
        conv.alpha.copy_(torch.linspace(0.1, 0.6, 6).view(6, 1, 1, 1))
    diffs = torch.stack([weight_noise(conv.weight, conv.alpha) - conv.weight for _ in range(400)])
    per_channel = diffs.transpose(0, 1).flatten(1).std(1)
    expected = torch.linspace(0.1, 0.6, 6) * conv.weight.std()
    assert torch.allclose(per_channel, expected.detach(), rtol=0.05)


@pytest.mark.parametrize("layer", [PNILinear(10, 5), PNIConv2d(3, 4, 3), NoiseInjection(3)])
def test_pni_noise_stays_on_in_eval_mode_and_follows_its_switch(layer):
    x = torch.rand(2, 10) if isinstance(layer, PNILinear) else torch.rand(2, 3, 6, 6)
    layer.eval()
    assert not torch.equal(layer(x), layer(x))  # noise on at test time
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    with switches(layer, stochastic=False):
        layer.eval()
        assert torch.equal(layer(x), layer(x))
    assert layer.stochastic


def test_pni_alpha_gets_no_weight_decay():
    net = torch.nn.Sequential(PNIConv2d(1, 2, 3), PNILinear(4, 2))
    t = TrainConfig(weight_decay=1e-3)
    groups = make_optimizer(net, t).param_groups
    decays = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in net.named_parameters():
        assert decays[id(p)] == (0.0 if name.endswith("alpha") else 1e-3), name


# ---------------------------------------------------------------- WCA
def test_wca_alignment_term_raises_variance_along_classifier_weights():
    torch.manual_seed(0)
    head = WCAHead(16, 10, dim=8)
    before = head.alignment().item()
    opt = torch.optim.SGD([head.L], lr=0.01)
    head.penalty().backward()  # the loss adds -log tr(W Sigma W^T): descending it must raise the trace
    opt.step()
    assert head.alignment().item() > before
    assert head.penalty().item() == pytest.approx(-torch.log(head.alignment()).item())
    sigma = head.covariance()
    W = head.fc.weight
    assert head.alignment().item() == pytest.approx(torch.trace(W @ sigma @ W.t()).item(), rel=1e-5)


def test_wca_L_stays_lower_triangular_after_optimiser_steps(smoke_cfg, splits):
    m = copy.deepcopy(smoke_cfg.models["wca"])
    m.train.epochs = 1
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    head = next(h for h in model.modules() if isinstance(h, WCAHead))
    L0 = head.L.detach().clone()
    fit(model, _tiny(splits), m.train, device=torch.device("cpu"), seed=0, progress=False)
    assert not torch.equal(head.L.detach(), L0)  # it was trained
    assert torch.equal(head.L.detach().triu(1), torch.zeros_like(L0))


def test_wca_noise_on_in_eval_per_example_or_batch_shared():
    torch.manual_seed(0)
    head = WCAHead(5, 3, dim=4).eval()
    x = torch.rand(1, 5).repeat(6, 1)
    out = head(x)
    assert not torch.allclose(out[0], out[1])  # per example: different noise for identical inputs
    with switches(head, noise_sharing="batch"):
        out = head(x)
        assert torch.allclose(out, out[:1].expand_as(out))  # one draw for the batch
    with switches(head, stochastic=False):
        assert torch.equal(head(x), head(x))


# ---------------------------------------------------------------- Sparta
def test_sparta_is_relu_times_a_spatial_gate():
    torch.manual_seed(0)
    act = SpartaReLU(4, "conv")
    x = torch.randn(2, 4, 6, 6)
    gate = torch.sigmoid(act.gate(x))
    assert torch.allclose(act(x), torch.relu(x) * gate)
    assert gate.shape == x.shape and act.gate.groups == 4
    dense = SpartaReLU(7, "dense")
    assert dense(torch.randn(3, 7)).shape == (3, 7)
    with pytest.raises(ConfigError, match="kernel_size"):
        SpartaReLU(4, "conv", kernel_size=2)


# ---------------------------------------------------------------- mixed adversarial training
def test_mixed_training_draws_each_branch_one_eighth_of_the_time():
    a = AdversarialConfig(method="mixed")
    gen = torch.Generator().manual_seed(0)
    n = 16000
    counts = {}
    for _ in range(n):
        b = draw_branch(a, gen)
        counts[b] = counts.get(b, 0) + 1
    for b in ("noise", "fgsm", "pgd", "cw"):
        assert abs(counts[b] / n - 1 / 8) < 0.01, (b, counts)
    assert abs(counts["clean"] / n - 4 / 8) < 0.015
    a.mixed_branches = ["pgd"]  # a combination of the study's table: the other slots train clean
    counts = {}
    for _ in range(n):
        b = draw_branch(a, gen)
        counts[b] = counts.get(b, 0) + 1
    assert set(counts) == {"pgd", "clean"} and abs(counts["pgd"] / n - 1 / 8) < 0.01
    assert MIXED_SLOTS[:4] == ("noise", "fgsm", "pgd", "cw")


@pytest.mark.parametrize("method", ["pgd", "fgsm", "cw", "gaussian"])
def test_training_inputs_stay_in_the_ball_and_pixel_range(trained, splits, method):
    x, y = splits.x_val[:16], splits.y_val[:16]
    a = AdversarialConfig(method=method, eps=0.3, steps=3, step_size=0.1, label="predicted", noise_std=0.3,
                          cw_c=10.0, cw_steps=30, cw_lr=0.1)  # CW strong enough to move (the Paris-Dauphine study's barely does)
    flags = [p.requires_grad for p in trained.parameters()]
    seen = []  # no parameter requires a gradient in the attack's passes (core.conv's input-gradient path)

    def spy(module, inputs):
        if torch.is_grad_enabled():
            seen.append(any(p.requires_grad for p in module.parameters()))
    hook = trained.register_forward_pre_hook(spy)
    try:
        x_adv, branch = training_inputs(trained, x, y, a, 0.3, torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert branch == {"gaussian": "noise"}.get(method, method)
    assert [p.requires_grad for p in trained.parameters()] == flags and any(flags)
    assert all(p.grad is None for p in trained.parameters())
    assert (len(seen) > 0) == (method != "gaussian") and not any(seen)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if method != "gaussian":
        assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert not torch.equal(x_adv, x)


# ---------------------------------------------------------------- every defense trains; flags independent of mode
DEFENSES = ["kwta_std", "wca", "pni_pgdat", "sparta_pgdat", "s001_noise", "s001_gauss", "s001_smooth",
            "s001_smooth_pgd_fgsm_cw_ni"]


def _tiny(splits, n=128):
    s = copy.copy(splits)
    s.x_train, s.y_train = splits.x_train[:n], splits.y_train[:n]
    s.x_val, s.y_val = splits.x_val[:50], splits.y_val[:50]
    return s


@pytest.mark.parametrize("name", DEFENSES)
def test_every_defense_trains_a_few_steps_and_keeps_its_randomness_flag(smoke_cfg, splits, name):
    m = copy.deepcopy(smoke_cfg.models[name])
    m.train.epochs = 2
    m.train.adversarial.clean_epochs = min(m.train.adversarial.clean_epochs, 1)
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    p0 = [p.detach().clone() for p in model.parameters()]
    res = fit(model, _tiny(splits), m.train, device=torch.device("cpu"), seed=0, progress=False)
    assert len(res.history) == 2 and all(h["train_loss"] == h["train_loss"] for h in res.history)
    assert any(not torch.equal(a, b) for a, b in zip(p0, model.parameters()))
    x = splits.x_val[:20]
    stochastic = m.pni != "none" or m.head == "wca"
    model.train()
    assert is_stochastic(model) == stochastic
    model.eval()
    assert is_stochastic(model) == stochastic  # eval() does not switch the noise off
    with torch.no_grad():
        assert torch.equal(model(x), model(x)) != stochastic
        if stochastic:
            with switches(model, stochastic=False):
                assert torch.equal(model(x), model(x))


def test_defense_config_errors_name_the_parameter():
    import lwta_utils as lu

    bad_overrides = [
        ({"models.relu_std.pni": "weights"}, "models.relu_std.pni"),
        ({"models.lwta_elbo.pni": "weight"}, "models.lwta_elbo.pni"),
        ({"models.relu_std.train.loss": "wca"}, "models.relu_std.train.loss"),
        ({"models.relu_std.head": "wca", "models.relu_std.head_options": {"dim": 0}}, None),
        ({"models.kwta_std.init_from": "kwta_incr"}, "models.kwta_std.init_from"),
        ({"models.relu_std.train.gamma_schedule.start": 0.3}, "models.relu_std.train.gamma_schedule.start"),
        ({"models.kwta_incr.train.gamma_schedule.start": 0.05}, "models.kwta_incr.train.gamma_schedule.start"),
        ({"models.relu_pgdat.train.adversarial.method": "mix"}, "models.relu_pgdat.train.adversarial.method"),
        ({"models.relu_pgdat.train.adversarial.mixed_branches": ["pgd", "deepfool"]},
         "models.relu_pgdat.train.adversarial.mixed_branches[1]"),
        ({"models.relu_pgdat.train.adversarial.label": "target"}, "models.relu_pgdat.train.adversarial.label"),
        ({"models.relu_std.train.label_smoothing": 1.5}, "models.relu_std.train.label_smoothing"),
        ({"models.relu_std.activation_placement": "stem"}, "models.relu_std.activation_placement"),
    ]
    for overrides, param in bad_overrides:
        if param is None:
            continue
        with pytest.raises(ConfigError, match=param.replace("[", r"\[").replace("]", r"\]")):
            lu.load_config("smoke", overrides=overrides)
    with pytest.raises(ConfigError, match="head_options.dim"):
        build_model(lu.load_config("smoke", overrides=bad_overrides[3][0]).models["relu_std"],
                    lu.load_data(lu.load_config("smoke")).info)
