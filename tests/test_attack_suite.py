"""The attack suite: every registered attack stays in its ball, AutoAttack's official
budget, EOT, gradient modes, restoring the model, and the sanity checks."""
import copy

import pytest
import torch
from torch import nn

from lwta_utils.attacks import ATTACKS
from lwta_utils.attacks.foolbox import ExpectedModel
from lwta_utils.attacks.gradients import input_gradient
from lwta_utils.attacks.registry import run_attack
from lwta_utils.config.schema import AttackConfig, SanityConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.switches import Switchable, get_switches, set_switches
from lwta_utils.evaluation.evaluate import evaluate_model
from lwta_utils.evaluation.sanity import gradient_stats, sanity_checks
from lwta_utils.models import build_model
from lwta_utils.models.inference import accuracy

# small but real settings for every registered attack (a new attack must be added here)
FAST = {
    "fgsm": {"eps": 0.2},
    "pgd_linf": {"eps": 0.2, "step_size": 0.05, "steps": 5, "restarts": 2},
    "pgd_l2": {"eps": 1.5, "step_size": 0.3, "steps": 5},
    "cw_l2": {"eps": 0.2, "steps": 10, "c": 1.0},
    "transfer": {"eps": 0.2, "step_size": 0.05, "steps": 5},
    "smoothed_pgd": {"eps": 0.2, "steps": 3, "samples": 4},
    "fb_fgsm": {"eps": 0.2},
    "fb_pgd_linf": {"eps": 0.2, "step_size": 0.05, "steps": 5},
    "fb_pgd_l2": {"eps": 1.5, "step_size": 0.3, "steps": 5},
    "fb_cw_l2": {"eps": 1.5, "steps": 10, "binary_steps": 2, "c": 0.1},
    "fb_deepfool_linf": {"eps": 0.2, "steps": 5, "candidates": 3},
    "fb_deepfool_l2": {"eps": 1.5, "steps": 5, "candidates": 3},
    "apgd": {"eps": 0.2, "steps": 5, "restarts": 2, "loss": "dlr"},
    "apgd_ce": {"eps": 0.2, "steps": 5},
    "apgd_dlr": {"eps": 0.2, "steps": 5},
    "apgd_t": {"eps": 0.2, "steps": 5, "n_targets": 2},
    "fab": {"eps": 0.2, "steps": 5},
    "fab_t": {"eps": 0.2, "steps": 5, "n_targets": 2},
    "square": {"eps": 0.2, "queries": 50},
    "autoattack": {"eps": 0.2, "version": "standard"},
}


@pytest.fixture(scope="module")
def batch(splits):
    return splits.x_test[:40], splits.y_test[:40]


@pytest.fixture(scope="module")
def lwta_model(smoke_cfg, splits):
    """An (untrained) stochastic LWTA CNN of the smoke profile."""
    torch.manual_seed(0)
    return build_model(copy.deepcopy(smoke_cfg.models["lwta_std"]), splits.info)


def _params(name, surrogate):
    p = dict(FAST[name])
    if name == "transfer":
        p["surrogate"] = surrogate
    return p


def test_every_registered_attack_is_covered():
    assert set(FAST) == set(ATTACKS)


@pytest.mark.parametrize("name", sorted(FAST))
def test_attack_stays_in_its_ball_and_in_range(trained, batch, name):
    torch.manual_seed(0)  # attacks that draw from the global generator: the same draws whatever ran before
    x, y = batch
    if name == "autoattack":  # the official ensemble: 9 targets and 5,000 Square queries per robust digit
        x, y = x[:10], y[:10]
    params = _params(name, trained)
    x_adv = run_attack(name, trained, x, y, **params)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if ATTACKS[name].norm == "linf" else delta.norm(dim=1)
    assert size.max() <= params["eps"] + 1e-4, (name, size.max().item())
    assert accuracy(trained, x_adv, y) <= accuracy(trained, x, y)


@pytest.mark.parametrize("name", ["pgd_linf", "pgd_l2", "smoothed_pgd", "square", "apgd", "apgd_ce", "autoattack"])
def test_attack_lowers_accuracy_of_a_standard_model(trained, batch, name):
    x, y = batch
    params = {**_params(name, trained), "eps": 0.3 if ATTACKS[name].norm == "linf" else 2.5}
    params.update({"smoothed_pgd": {"steps": 10, "samples": 16}, "square": {"queries": 300}}.get(name, {}))
    assert accuracy(trained, run_attack(name, trained, x, y, **params), y) < accuracy(trained, x, y) - 0.3


@pytest.mark.parametrize("name", sorted(FAST))
def test_attack_restores_modes_switches_flags_and_rng(lwta_model, batch, trained, name):
    x, y = batch
    x, y = x[:6], y[:6]
    model = lwta_model
    model.train()
    list(model.modules())[1].eval()  # a mix of modes, as a user might leave it
    saved = set_switches(model, phase="train", test_mode="argmax", gradient="relaxed", stochastic=True)
    first = next(model.parameters())
    first.requires_grad_(False)
    try:
        modes = {m: m.training for m in model.modules()}
        switches = [(m, dict(v)) for m, v in get_switches(model)]
        flags = [p.requires_grad for p in model.parameters()]
        rng = torch.get_rng_state()
        run_attack(name, model, x, y, **_params(name, trained))
        assert {m: m.training for m in model.modules()} == modes
        assert [(m, dict(v)) for m, v in get_switches(model)] == switches
        assert [p.requires_grad for p in model.parameters()] == flags
        assert torch.equal(torch.get_rng_state(), rng)
        assert all(p.grad is None for p in model.parameters())
    finally:
        first.requires_grad_(True)
        for m, values in saved:
            for k, v in values.items():
                setattr(m, k, v)
        model.eval()


class CountingLinear(nn.Module):
    """A linear classifier whose bias makes class 0 win by far: nothing within eps 0.3 fools it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        with torch.no_grad():
            self.fc.weight.mul_(0.01)
            self.fc.bias.copy_(torch.tensor([100.0] + [0.0] * 9))
        self.calls = self.grad_calls = 0

    def forward(self, x):
        self.calls += 1
        self.grad_calls += int(torch.is_grad_enabled() and x.requires_grad)
        return self.fc(x.flatten(1))


def test_autoattack_rand_makes_the_official_number_of_model_calls():
    model = CountingLinear()
    x, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    run_attack("autoattack", model, x, y, eps=0.3, version="rand")
    n_iter, eot, restarts, attacks = 100, 20, 1, 2  # the official 'rand': APGD-CE + APGD-DLR
    per_apgd = 1 + restarts * eot * (n_iter + 1)  # initial prediction; EOT gradients at the start and every iteration
    checks = 3  # AutoAttack's output-range and dynamic-defense checks, and the clean accuracy
    assert model.grad_calls == attacks * restarts * eot * (n_iter + 1) == 4040
    assert model.calls == checks + attacks * (per_apgd + 1) == 4047  # + the success check after each attack


class CyclingScale(nn.Module, Switchable):
    """A 'stochastic' model whose k-th forward pass scales its input by SCALES[k % 3]."""

    SWITCHES = {"stochastic": (True, False)}
    SCALES = (1.0, 2.0, -3.0)
    per_example_noise = False  # one scale per pass, shared by the batch: EOT needs one pass per draw

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.stochastic, self.calls = True, 0

    def forward(self, x):
        s = self.SCALES[self.calls % 3] if self.stochastic else 1.0
        self.calls += 1
        return self.fc(s * x.flatten(1))


def test_eot_averages_over_the_requested_number_of_draws():
    torch.manual_seed(0)
    model = CyclingScale()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    singles = []
    for k in range(3):
        model.calls = k
        singles.append(input_gradient(model, x, y))
    model.calls = 0
    g = input_gradient(model, x, y, eot_samples=3)
    assert model.calls == 3  # 3 EOT passes (no confirmation draws outside an attack's success check)
    assert torch.allclose(g, torch.stack(singles).mean(0), atol=1e-6)
    assert not torch.allclose(g, singles[0])
    with torch.no_grad():  # every draw keeps class 0, so no early exit: every step runs
        model.fc.bias.copy_(torch.tensor([1e3] + [0.0] * 9))
    model.calls = 0
    run_attack("pgd_linf", model, x, torch.zeros_like(y), eps=0.1, steps=4, step_size=0.01, eot_samples=5)
    assert model.calls == (4 + 1) * 5  # (steps + the last iterate's look) x EOT samples, no other pass
    model.calls = 0
    with torch.no_grad():
        ExpectedModel(model, 6)(x)
    assert model.calls == 6
    model.calls = 0
    input_gradient(model, x, torch.zeros_like(y), gradient="deterministic")
    assert model.stochastic and model.calls == 2  # noise off for the gradient pass only, then on for the success check


def test_gradient_modes_need_their_switches(trained, lwta_model, batch):
    x, y = batch
    with pytest.raises(ConfigError, match="'gradient' = 'straight_through'"):
        run_attack("pgd_linf", trained, x[:4], y[:4], eps=0.1, steps=1, gradient="straight_through")
    with pytest.raises(ConfigError, match="'gradient' = 'bpda'"):
        run_attack("pgd_linf", trained, x[:4], y[:4], eps=0.1, steps=1, gradient="bpda")
    x_adv = run_attack("pgd_linf", lwta_model, x[:4], y[:4], eps=0.1, steps=2, gradient="straight_through")
    assert (x_adv - x[:4]).abs().max() <= 0.1 + 1e-6


def test_transfer_never_queries_the_target(trained, batch):
    x, y = batch
    target = CountingLinear()
    run_attack("transfer", target, x[:5], y[:5], surrogate=trained, eps=0.1, steps=2)
    assert target.calls == 0
    with pytest.raises(ConfigError, match="'surrogate'"):
        run_attack("transfer", target, x[:5], y[:5], surrogate="relu_pgdat", eps=0.1)


class Quantised(nn.Module):
    """Gradient masking by construction: the input is rounded to {0, 1} (zero gradient everywhere)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x))


def _toy_evaluation(model, surrogate, x, y):
    attacks = [AttackConfig(name="pgd_linf", eps=[0.1, 0.3, 0.5], steps=10, step_size=0.05),
               AttackConfig(name="pgd_linf", id="pgd_linf_20", eps=[0.3], steps=20, step_size=0.05),
               AttackConfig(name="transfer", surrogate="plain", eps=[0.3], steps=10, step_size=0.05),
               AttackConfig(name="square", eps=[0.3], options={"queries": 200})]
    meta = {"model": "toy", "label": "toy", "arch": "mnist_cnn", "activation": "relu", "training": "standard",
            "split": "test", "dataset": "mnist", "profile": "test"}
    ev = evaluate_model(model, x, y, attacks, batch_size=100, seed=0, meta=meta, surrogates={"plain": surrogate},
                        headline_eps=0.3, progress=False)
    return ev, sanity_checks(ev.records, ev.correct, gradient_stats(model, x, y), SanityConfig())


def test_sanity_checks_pass_a_plain_model_and_flag_a_masked_one(trained, batch):
    x, y = batch
    masked = Quantised(trained).eval()
    assert accuracy(masked, x, y) >= accuracy(trained, x, y) - 0.1  # rounding barely changes MNIST digits
    ev, plain = _toy_evaluation(trained, trained, x, y)
    assert plain["flags"] == [], plain["checks"]
    assert {c["check"] for c in plain["checks"]} >= {"monotone in eps", "about 0 at large eps",
                                                    "more steps never help the model", "gradients not zero",
                                                    "black-box and transfer do not beat white-box",
                                                    "input gradients agree between passes"}
    worst = next(r for r in ev.records if r.attack == "worst_case")
    assert worst.accuracy <= min(r.accuracy for r in ev.records if r.eps == 0.3 and r.attack != "worst_case")
    _, flagged = _toy_evaluation(masked, trained, x, y)
    flags = " | ".join(flagged["flags"])
    assert "zero gradients" in flags and "black-box beats white-box" in flags and "left at eps 0.5" in flags


def test_eot_and_gradient_mode_attacks_only_run_where_they_apply(trained, lwta_model, batch):
    x, y = batch
    attacks = [AttackConfig(name="pgd_linf", id="eot", eps=[0.1], steps=1, eot_samples=2, applies_to="stochastic"),
               AttackConfig(name="pgd_linf", id="bpda", eps=[0.1], steps=1, gradient="straight_through"),
               AttackConfig(name="pgd_linf", id="nonoise", eps=[0.1], steps=1, gradient="deterministic"),
               AttackConfig(name="fgsm", id="kwta_only", eps=[0.1], applies_to="kwta"),
               AttackConfig(name="fgsm", id="named_only", eps=[0.1], models=["other"]),
               AttackConfig(name="fgsm", id="named_m", eps=[0.1], models=["m"], applies_to="stochastic")]
    meta = {"model": "m", "label": "m", "arch": "mnist_cnn", "training": "standard", "split": "test",
            "dataset": "mnist", "profile": "test"}
    plain = evaluate_model(trained, x[:8], y[:8], attacks, batch_size=8, seed=0, meta={**meta, "activation": "relu"},
                           progress=False)
    lwta = evaluate_model(lwta_model, x[:8], y[:8], attacks, batch_size=8, seed=0, draws=3,
                          meta={**meta, "activation": "lwta"}, progress=False)
    assert [r.attack for r in plain.records] == ["none"]
    assert [r.attack for r in lwta.records] == ["none", "eot", "bpda", "nonoise", "named_m"]  # 'models' restricts
    assert [r.eot_samples for r in lwta.records[1:4]] == [2, 1, 1] and lwta.records[2].gradient == "straight_through"
    assert all(r.draws == 3 for r in lwta.records)


STANDARD = {"name": "pgd_linf", "eps": [0.3], "steps": 2}


@pytest.mark.parametrize("extra,match", [
    ({"name": "pgd"}, "'eval.attacks\\[1\\].name' = 'pgd'"),
    ({"name": "fgsm", "models": ["nope"]}, "'eval.attacks\\[1\\].models\\[0\\]' = 'nope'"),
    ({"name": "pgd_linf"}, "'eval.attacks\\[1\\].id' = 'pgd_linf'.*unique"),
    ({"name": "fgsm", "eps": [1.5]}, "'eval.attacks\\[1\\].eps\\[0\\]' = 1.5"),
    ({"name": "square", "options": {"querys": 10}}, "'eval.attacks\\[1\\].options.querys'.*queries"),
    ({"name": "square", "eot_samples": 5}, "'eval.attacks\\[1\\].eot_samples' = 5.*does not take"),
    ({"name": "pgd_linf", "id": "b", "gradient": "bpda"}, "'eval.attacks\\[1\\].gradient' = 'bpda'"),
    ({"name": "fgsm", "applies_to": "convnets"}, "'eval.attacks\\[1\\].applies_to' = 'convnets'"),
    ({"name": "transfer", "surrogate": "resnet"}, "'eval.attacks\\[1\\].surrogate' = 'resnet'"),
    ({"name": "fgsm", "surrogate": "relu_std"}, "'eval.attacks\\[1\\].surrogate'.*only transfer"),
    ({"name": "fgsm", "id": "a b"}, "'eval.attacks\\[1\\].id' = 'a b'"),
])
def test_bad_attack_configurations_name_the_parameter(extra, match):
    from lwta_utils.config import load_config

    with pytest.raises(ConfigError, match=match):
        load_config("smoke", overrides={"eval.attacks": [STANDARD, extra]})


def test_standard_attack_must_be_an_attack_of_the_profile():
    from lwta_utils.config import load_config

    with pytest.raises(ConfigError, match="'eval.standard_attack' = 'pgd_linf_40'"):
        load_config("smoke", overrides={"eval.attacks": [STANDARD], "eval.cascade": [],
                                        "eval.standard_attack": "pgd_linf_40"})
    cfg = load_config("smoke", overrides={"eval.attacks": [STANDARD, {"name": "pgd_l2", "eps": [2.0]}],
                                          "eval.cascade": []})
    assert cfg.eval.attacks[1].eps == [2.0]  # L2 radii may exceed 1
