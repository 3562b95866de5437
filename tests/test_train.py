import copy

import pytest
import torch

from lwta_utils.config.schema import TrainConfig
from lwta_utils.models import build_model
from lwta_utils.training.fit import fit, lr_factor, train_eps


def _tiny(splits, n=200):
    s = copy.copy(splits)
    s.x_train, s.y_train = splits.x_train[:n], splits.y_train[:n]
    return s


def test_loss_falls_on_a_tiny_set(smoke_cfg, splits):
    m = copy.deepcopy(smoke_cfg.models["relu_std"])
    m.train.epochs, m.train.augment = 6, "none"
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    res = fit(model, _tiny(splits), m.train, device=torch.device("cpu"), seed=0, progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0]
    assert res.history[-1]["train_acc"] > 0.9


def test_best_validation_epoch_is_kept(smoke_cfg, splits):
    m = copy.deepcopy(smoke_cfg.models["relu_std"])
    m.train.epochs = 3
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    res = fit(model, splits, m.train, device=torch.device("cpu"), seed=0, progress=False)
    vals = [h["val_acc"] for h in res.history]
    assert res.best_metric == max(vals) and vals[res.best_epoch - 1] == max(vals)
    from lwta_utils.models.inference import accuracy
    assert accuracy(model, splits.x_val, splits.y_val) == pytest.approx(max(vals))


def test_pgd_adversarial_training_runs_and_selects_on_val_pgd(smoke_cfg, splits):
    m = copy.deepcopy(smoke_cfg.models["relu_pgdat"])
    m.train.epochs = 1
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    res = fit(model, _tiny(splits), m.train, device=torch.device("cpu"), seed=0, progress=False)
    assert res.select_metric == "val_pgd_acc" and "val_pgd_acc" in res.history[0]
    assert model.training is False


def test_same_seed_same_weights(smoke_cfg, splits):
    m = copy.deepcopy(smoke_cfg.models["relu_std"])
    m.train.epochs = 1
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(m, splits.info)
        fit(model, _tiny(splits), m.train, device=torch.device("cpu"), seed=0, progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_schedules():
    t = TrainConfig(epochs=10, schedule="lwta", milestones=[7], lr_gamma=0.5)
    assert [lr_factor(t, e) for e in (0, 6, 7, 8)] == [1.0, 1.0, 0.5, 0.25]
    t = TrainConfig(epochs=10, schedule="multistep", milestones=[3, 6], lr_gamma=0.1)
    assert lr_factor(t, 2) == 1.0 and lr_factor(t, 3) == pytest.approx(0.1) and lr_factor(t, 9) == pytest.approx(0.01)
    t = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(t, 0) == 1.0 and lr_factor(t, 5) == pytest.approx(0.5) and lr_factor(t, 10) == pytest.approx(0)


def test_eps_warmup():
    t = TrainConfig()
    t.adversarial.method, t.adversarial.eps, t.adversarial.eps_warmup_epochs = "pgd", 0.3, 3
    assert [round(train_eps(t, e), 3) for e in range(4)] == [0.1, 0.2, 0.3, 0.3]
    t.adversarial.clean_epochs = 2  # the PNI recipe: clean epochs first, then the warm-up
    assert [round(train_eps(t, e), 3) for e in range(6)] == [0.0, 0.0, 0.1, 0.2, 0.3, 0.3]
