import pytest
import torch

from lwta_utils.attacks import ATTACKS
from lwta_utils.attacks.pgd import fgsm, pgd_linf
from lwta_utils.attacks.registry import attack_params, run_attack
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.modes import eval_mode
from lwta_utils.evaluation.cascade import attack_in_batches
from lwta_utils.models.inference import accuracy


@pytest.fixture(scope="module")
def batch(splits):
    return splits.x_test[:100], splits.y_test[:100]


@pytest.mark.parametrize("name,params", [("fgsm", {"eps": 0.2}),
                                         ("pgd_linf", {"eps": 0.2, "step_size": 0.05, "steps": 5}),
                                         ("pgd_linf", {"eps": 0.1, "step_size": 0.05, "steps": 3, "restarts": 2})])
def test_within_eps_in_range_and_not_stronger_than_clean(trained, batch, name, params):
    x, y = batch
    x_adv = run_attack(name, trained, x, y, **params)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= params["eps"] + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean, robust = accuracy(trained, x, y), accuracy(trained, x_adv, y)
    assert clean > 0.7  # the fixture model has learned something
    assert robust <= clean


def test_pgd_is_at_least_as_strong_as_fgsm_and_breaks_a_standard_model(trained, batch):
    x, y = batch
    acc_fgsm = accuracy(trained, fgsm(trained, x, y, eps=0.3), y)
    acc_pgd = accuracy(trained, pgd_linf(trained, x, y, eps=0.3, step_size=0.05, steps=20), y)
    assert acc_pgd <= acc_fgsm
    assert acc_pgd < 0.1


def test_eps_zero_is_identity(trained, batch):
    x, y = batch
    assert torch.equal(pgd_linf(trained, x, y, eps=0.0), x)


def test_attacks_leave_mode_and_gradients_alone(trained, batch):
    x, y = batch
    trained.zero_grad(set_to_none=True)
    trained.train()
    try:
        pgd_linf(trained, x[:8], y[:8], eps=0.1, steps=2)
        assert trained.training
        assert all(p.grad is None for p in trained.parameters())
        with eval_mode(trained):
            assert not trained.training
        assert trained.training
    finally:
        trained.eval()


def test_seeded_random_start_is_reproducible(trained, batch):
    x, y = batch
    a = pgd_linf(trained, x, y, eps=0.1, steps=2, generator=torch.Generator().manual_seed(1))
    b = pgd_linf(trained, x, y, eps=0.1, steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_batched_equals_unbatched_for_deterministic_attacks(trained, batch):
    x, y = batch
    full = fgsm(trained, x, y, eps=0.1)
    parts = attack_in_batches(trained, "fgsm", x, y, 30, torch.Generator().manual_seed(0), {"eps": 0.1})
    assert torch.allclose(full, parts, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"eps": 1.5}, "'eps' = 1.5"),
    ({"eps": -0.1}, "'eps' = -0.1"),
    ({"eps": 0.1, "steps": 0}, "'steps' = 0"),
])
def test_bad_attack_parameters(trained, batch, kwargs, match):
    x, y = batch
    with pytest.raises(ConfigError, match=match):
        pgd_linf(trained, x, y, **kwargs)


def test_bad_inputs_and_names(trained, batch):
    x, y = batch
    with pytest.raises(ConfigError, match="pixels must lie in \\[0, 1\\]"):
        fgsm(trained, x * 255, y, eps=0.1)
    with pytest.raises(ConfigError, match="'y'"):
        fgsm(trained, x, y[:3], eps=0.1)
    with pytest.raises(ConfigError, match="'attack' = 'cw'"):
        run_attack("cw", trained, x, y, eps=0.1)
    with pytest.raises(ConfigError, match="does not take"):
        run_attack("fgsm", trained, x, y, eps=0.1, steps=10)
    assert attack_params("fgsm", {"eps": 0.1, "steps": 10}) == {"eps": 0.1}
    assert set(ATTACKS) >= {"fgsm", "pgd_linf"}
