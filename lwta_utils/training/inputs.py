"""The inputs a training step learns from: clean, adversarial, noisy, or drawn (the Paris-Dauphine study).

``training_inputs(model, x, y, a, eps, generator)`` returns ``(x_train,
branch)`` for one batch under :class:`~lwta_utils.config.AdversarialConfig`
``a``: ``x_train`` is None for a clean step. Attacks run with the model in
eval mode and its stochastic layers as they are (PNI's noise stays on: the
PNI recipe attacks the noisy model), against the true labels or the model's
own predictions (``a.label``).

The Paris-Dauphine study's mixed adversarial training draws ``u ~ U{0..7}`` per iteration:
0 Gaussian noise, 1 FGSM, 2 PGD, 3 Carlini-Wagner, 4-7 clean
(:data:`MIXED_SLOTS`); a slot whose branch is not in ``a.mixed_branches``
is a clean step, so the table's combinations ("smoothing + PGD", ...) keep
each branch's 1/8 frequency.
"""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.attacks.cw import cw_l2
from lwta_utils.attacks.pgd import fgsm, pgd_linf
from lwta_utils.config.schema import MIXED_SLOTS
from lwta_utils.core.modes import eval_mode, input_grads_only


def draw_branch(a, generator: torch.Generator | None = None) -> str:
    """The branch of one mixed-AT iteration: u ~ U{0..7} mapped by MIXED_SLOTS."""
    u = int(torch.randint(len(MIXED_SLOTS), (1,), generator=generator))
    branch = MIXED_SLOTS[u]
    return branch if branch in a.mixed_branches else "clean"


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return (x + std * noise).clamp(0, 1)


def attack_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, label: str) -> torch.Tensor:
    """The labels the training attack maximises the loss of: the true ones, or the model's own
    clean predictions (``label`` 'predicted')."""
    if label == "true":
        return y
    with torch.no_grad(), eval_mode(model):
        return model(x).argmax(1)


def training_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a, eps: float,
                    generator: torch.Generator | None = None, noise_generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor | None, str]:
    """``(x_train, branch)`` for one batch; ``x_train`` None means train on the clean batch.
    The mixed-AT branch is drawn from ``generator``; noise and PGD starts from
    ``noise_generator`` (default: the same; data-parallel processes share the first only)."""
    branch = draw_branch(a, generator) if a.method == "mixed" else {"gaussian": "noise"}.get(a.method, a.method)
    generator = generator if noise_generator is None else noise_generator
    if branch in ("none", "clean") or (branch != "noise" and eps <= 0):
        return None, "clean"
    if branch == "noise":
        return gaussian_noise(x, a.noise_std, generator), branch
    target = attack_targets(model, x, y, a.label)
    with eval_mode(model), input_grads_only(model):
        return BRANCHES[branch](model, x, target, a, eps, generator), branch


# how each adversarial branch builds its examples from (model, x, labels, AdversarialConfig, eps, generator)
BRANCHES = {
    "pgd": lambda model, x, t, a, eps, gen: pgd_linf(model, x, t, eps=eps, step_size=a.step_size, steps=a.steps,
                                                      random_start=a.random_start, generator=gen, keep="last",
                                                      gradient=a.gradient, eot_samples=a.eot_samples),
    "fgsm": lambda model, x, t, a, eps, gen: fgsm(model, x, t, eps=eps),
    "cw": lambda model, x, t, a, eps, gen: cw_l2(model, x, t, eps=eps, steps=a.cw_steps, step_size=a.cw_lr,
                                                  c=a.cw_c, kappa=a.cw_kappa),
}
