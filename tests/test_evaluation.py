"""The decisive evaluation: independent noise streams, batched draws and EOT, the attack cascade
against every attack on every example, our APGD against the official one, paired statistics."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from lwta_utils.attacks import run_attack
from lwta_utils.attacks.gradients import eot_step
from lwta_utils.config import AttackConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.stats import mcnemar_exact, paired_difference_interval, paired_test
from lwta_utils.core.switches import Switchable, noise_from, stream, switches
from lwta_utils.evaluation.evaluate import evaluate_model
from lwta_utils.models import build_model
from lwta_utils.models.inference import draw_logits

META = {"model": "m", "label": "m", "arch": "mnist_cnn", "activation": "relu", "training": "t", "split": "test",
        "dataset": "d", "profile": "p"}


class Noisy(nn.Module, Switchable):
    """logits = W x + noise, the noise per example from ``self.generator``; keeps every draw."""

    SWITCHES = {"stochastic": (True, False)}

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)
        self.stochastic, self.generator, self.drawn = True, None, []

    def forward(self, x):
        out = self.fc(x.flatten(1))
        if self.stochastic:
            noise = torch.randn(out.shape, generator=self.generator)
            self.drawn.append(noise.clone())
            out = out + noise
        return out


def test_evaluation_draws_never_replay_the_attacks_and_batches_do_not_share_noise(splits):
    torch.manual_seed(0)
    model = Noisy().eval()
    x = splits.x_test[:8].repeat(2, 1, 1, 1)  # two batches of the same 8 images
    y = splits.y_test[:8].repeat(2)
    logits = draw_logits(model, x, 3, batch_size=8, generator=stream(0, "eval", "clean"))
    assert not torch.allclose(logits[:, :8], logits[:, 8:])  # same images, different noise
    model.drawn.clear()
    atk = AttackConfig(name="pgd_linf", id="pgd", eps=[0.1], steps=2, step_size=0.05, eot_samples=2)
    ev = evaluate_model(model, x, y, [atk], batch_size=8, seed=0, meta=META, draws=3, headline_eps=0.1,
                        cascade=["pgd"], progress=False)
    assert ev.records[-1].attack == "worst_case"
    drawn = torch.cat([d.flatten() for d in model.drawn])
    # every draw of the run (clean, attack, evaluation of the attack) is fresh: no value repeats
    assert len(torch.unique(drawn)) == len(drawn)
    # the attack's stream and the evaluation's stream are different generators
    a, e = stream(0, "attack", "pgd", 0.1), stream(0, "eval", "pgd", 0.1)
    assert not torch.equal(torch.randn(100, generator=a), torch.randn(100, generator=e))


def test_batched_draws_and_eot_match_looped_ones_in_expectation(smoke_cfg, splits):
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(smoke_cfg.models["lwta_std"]), splits.info).eval()
    x, y = splits.x_test[:4], splits.y_test[:4]
    cos = torch.nn.functional.cosine_similarity
    with switches(model, phase="train"):  # the training temperature: smooth gradients, a sharp comparison
        with noise_from(model, stream(0, "batched")):
            g_b, loss_b, _ = eot_step(model, x, y, eot_samples=100, batched=True)
        with noise_from(model, stream(0, "looped")):
            g_l, loss_l, _ = eot_step(model, x, y, eot_samples=100, batched=False)
        with noise_from(model, stream(0, "looped again")):
            g_l2, _, _ = eot_step(model, x, y, eot_samples=100, batched=False)
    # batched and looped agree as well as two looped estimates of the same expectation do
    c_bl, c_ll = cos(g_b.flatten(1), g_l.flatten(1), dim=1), cos(g_l.flatten(1), g_l2.flatten(1), dim=1)
    assert c_bl.mean() > c_ll.mean() - 0.05 and c_ll.mean() > 0.9, (c_bl, c_ll)
    assert torch.allclose(loss_b, loss_l, rtol=0.1, atol=0.05)
    p_b = draw_logits(model, x, 200, generator=stream(0, "a"), batched=True).softmax(2).mean(0)
    p_l = draw_logits(model, x, 200, generator=stream(0, "b"), batched=False).softmax(2).mean(0)
    assert (p_b - p_l).abs().max() < 0.08
    # a deterministic model: batched and looped are the same numbers
    with torch.no_grad():
        relu = build_model(copy.deepcopy(smoke_cfg.models["relu_std"]), splits.info).eval()
    g1, _, _ = eot_step(relu, x, y, eot_samples=3, batched=True)
    g2, _, _ = eot_step(relu, x, y, eot_samples=3, batched=False)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_a_draw_that_misclassifies_by_chance_is_no_success():
    """A coin-flip model (two classes tied, fresh noise every pass): one draw misclassifies half the
    examples, but an attack's look counts an example fooled only when ``confirm_draws`` draws agree
    (the evaluation's ``eval.confirm_draws``)."""
    confirm = 5
    model = Noisy().eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 0.0] + [-100.0] * 8))
    x, y = torch.rand(4000, 1, 28, 28), torch.zeros(4000, dtype=torch.long)
    with noise_from(model, stream(0, "coin")):
        _, _, fooled_one = eot_step(model, x, y, eot_samples=1, need_grad=False)  # no confirmation
        _, _, fooled = eot_step(model, x, y, eot_samples=1, need_grad=False, confirm_draws=confirm)
        _, _, fooled_eot = eot_step(model, x, y, eot_samples=confirm + 1, need_grad=False, confirm_draws=confirm)
    # binomial sd over 4,000 examples: 0.008 at p = 0.5, 0.003 at 0.03, 0.002 at 0.016
    assert abs(fooled_one.float().mean() - 0.5) < 0.04, fooled_one.float().mean()
    assert abs(fooled.float().mean() - 0.5 ** confirm) < 0.012, fooled.float().mean()
    # 0.5 ** 6 = 0.0156: the EOT draws decide, the confirmation adds nothing
    assert 0.008 < fooled_eot.float().mean() < 0.024, fooled_eot.float().mean()
    with torch.no_grad():
        model.fc.bias[1] = 1.0
    with switches(model, stochastic=False):  # deterministic: one look decides
        _, _, fooled_det = eot_step(model, x, y, eot_samples=1, need_grad=False, confirm_draws=confirm)
    assert bool(fooled_det.all())


def test_the_cascade_finds_the_worst_case_of_every_attack_on_every_example_for_fewer_passes(trained, splits):
    x, y = splits.x_test[:60], splits.y_test[:60]
    suite = [AttackConfig(name="fgsm", id="fgsm", eps=[0.15]),
             AttackConfig(name="pgd_linf", id="pgd", eps=[0.15], steps=10, step_size=0.03),
             AttackConfig(name="apgd", id="apgd_dlr", eps=[0.15], steps=10, options={"loss": "dlr"}),
             AttackConfig(name="square", id="square", eps=[0.15], options={"queries": 30})]
    runs = {}
    for full in (False, True):
        ev = evaluate_model(trained, x, y, suite, batch_size=60, seed=0, meta=META, headline_eps=0.15,
                            cascade=[a.key for a in suite], full_cascade=full, progress=False)
        runs[full] = ev.records[-1]
    cascade, full = runs[False], runs[True]
    assert 0 < full.worst_accuracy < 1
    assert abs(cascade.n_robust - full.n_robust) <= 2, (cascade.n_robust, full.n_robust)  # random starts differ
    passes = {k: r.attack_params["passes"]["forward"] + r.attack_params["passes"]["backward"] for k, r in runs.items()}
    assert passes[False] < passes[True], passes


def test_our_apgd_matches_the_official_one_on_a_deterministic_model(trained, splits):
    x, y = splits.x_test[:60], splits.y_test[:60]

    def acc(name, **kw):
        x_adv = run_attack(name, trained, x, y, eps=0.1, steps=20, **kw)
        with torch.no_grad():
            return (trained(x_adv).argmax(1) == y).float().mean().item()

    for loss, official in (("ce", "apgd_ce"), ("dlr", "apgd_dlr")):
        ours = acc("apgd", loss=loss, generator=torch.Generator().manual_seed(0))
        theirs = acc(official)
        assert abs(ours - theirs) <= 0.1, (loss, ours, theirs)


def test_mcnemar_and_the_paired_interval():
    # b = 10 discordant pairs one way, c = 0 the other: two-sided exact p = 2 * 0.5^10
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    lo, hi = paired_difference_interval(a=40, b=15, c=5, d=40)  # difference (b - c) / n = 0.1
    assert lo < 0.1 < hi and lo > 0
    a = np.array([1] * 55 + [0] * 45, dtype=bool)
    b = np.array([1] * 40 + [0] * 15 + [1] * 5 + [0] * 40, dtype=bool)
    t = paired_test(a, b)
    assert t["n"] == 100 and t["discordant"] == (15, 5) and t["difference"] == pytest.approx(0.10)
    assert t["p"] == pytest.approx(mcnemar_exact(15, 5))
    with pytest.raises(ValueError, match="same examples"):
        paired_test(a, b[:50])


def test_confirm_draws_reach_the_iterative_attacks_and_their_records(smoke_cfg):
    """``eval.confirm_draws`` is one setting: it reaches PGD and APGD on stochastic models only, is
    stored in the records' attack parameters, and is part of the evaluation hash."""
    import dataclasses

    from lwta_utils.evaluation.evaluate import run_params

    pgd_atk = AttackConfig(name="pgd_linf", id="pgd", eps=[0.1], steps=2, step_size=0.05)
    fgsm_atk = AttackConfig(name="fgsm", id="fgsm", eps=[0.1])
    assert run_params(pgd_atk, 0.1, True, 0, 5)["confirm_draws"] == 5
    assert run_params(pgd_atk, 0.1, False, 0, 5)["confirm_draws"] == 1
    assert "confirm_draws" not in run_params(fgsm_atk, 0.1, True, 0, 5)  # one step: nothing to confirm
    model = Noisy().eval()
    x, y = torch.rand(6, 1, 28, 28), torch.zeros(6, dtype=torch.long)
    ev = evaluate_model(model, x, y, [pgd_atk], batch_size=6, seed=0, meta=META, draws=2, confirm_draws=4,
                        progress=False)
    assert next(r for r in ev.records if r.attack == "pgd").attack_params["confirm_draws"] == 4
    other = dataclasses.replace(smoke_cfg, eval=dataclasses.replace(smoke_cfg.eval, confirm_draws=2))
    name = next(iter(smoke_cfg.models))
    assert other.eval_hash(name) != smoke_cfg.eval_hash(name)
    with pytest.raises(ConfigError, match="confirm_draws"):
        evaluate_model(model, x, y, [pgd_atk], batch_size=6, seed=0, meta=META, confirm_draws=0)
