"""Attacks from foolbox 3, registered under our calling convention.

foolbox has no expectation over transformation: for a model with stochastic layers,
``eot_samples > 1`` wraps it in :class:`ExpectedModel`, whose output is the log of the softmax
averaged over that many passes, so foolbox's gradients are those of the expected prediction.
"""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.attacks.registry import check_eps, check_inputs, register_attack
from lwta_utils.core.errors import check_range


class ExpectedModel(nn.Module):
    """log E[softmax(model(x))] over ``samples`` forward passes (one pass: the model's logits)."""

    def __init__(self, model: nn.Module, samples: int):
        super().__init__()
        check_range("eot_samples", samples, 1, integer=True)
        self.model, self.samples = model, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.samples == 1:
            return self.model(x)
        probs = sum(self.model(x).softmax(1) for _ in range(self.samples)) / self.samples
        return probs.clamp_min(1e-30).log()


def _foolbox(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, eps: float | None,
             eot_samples: int) -> torch.Tensor:
    import foolbox as fb

    check_inputs(x, y)
    fmodel = fb.PyTorchModel(ExpectedModel(model, eot_samples).eval(), bounds=(0, 1), device=x.device)
    _, clipped, _ = attack(fmodel, x.detach(), y, epsilons=eps)
    return clipped.detach()


@register_attack("fb_fgsm", "linf", label="FGSM (foolbox)")
def fb_fgsm(model, x, y, *, eps: float, eot_samples: int = 1) -> torch.Tensor:
    import foolbox as fb

    check_eps(eps, "linf")
    return _foolbox(model, x, y, fb.attacks.FGSM(random_start=False), eps, eot_samples)


def _fb_pgd(norm: str, model, x, y, eps, step_size, steps, random_start, eot_samples) -> torch.Tensor:
    import foolbox as fb

    check_eps(eps, norm)
    check_range("steps", steps, 1, integer=True)
    check_range("step_size", step_size, 0.0)
    cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
    return _foolbox(model, x, y, cls(abs_stepsize=step_size, steps=steps, random_start=random_start), eps,
                    eot_samples)


@register_attack("fb_pgd_linf", "linf", label="PGD-Linf (foolbox)")
def fb_pgd_linf(model, x, y, *, eps: float, step_size: float = 0.01, steps: int = 40, random_start: bool = True,
                eot_samples: int = 1) -> torch.Tensor:
    """foolbox's Linf PGD (step ``step_size`` in pixel units)."""
    return _fb_pgd("linf", model, x, y, eps, step_size, steps, random_start, eot_samples)


@register_attack("fb_pgd_l2", "l2", label="PGD-L2 (foolbox)")
def fb_pgd_l2(model, x, y, *, eps: float, step_size: float = 0.1, steps: int = 40, random_start: bool = True,
              eot_samples: int = 1) -> torch.Tensor:
    """foolbox's L2 PGD (steps of L2 length ``step_size``)."""
    return _fb_pgd("l2", model, x, y, eps, step_size, steps, random_start, eot_samples)


@register_attack("fb_cw_l2", "l2", label="CW-L2 (foolbox)")
def fb_cw_l2(model, x, y, *, eps: float, steps: int = 100, step_size: float = 0.01, c: float = 1e-3,
             kappa: float = 0.0, binary_steps: int = 5, eot_samples: int = 1) -> torch.Tensor:
    """foolbox's Carlini-Wagner L2 (a binary search of ``binary_steps`` over the constant from
    ``c``, ``steps`` Adam steps of ``step_size`` each, confidence ``kappa``); a point counts as
    fooled only within the L2 ball of radius ``eps`` (the example is projected on it)."""
    import foolbox as fb

    check_eps(eps, "l2")
    check_range("steps", steps, 1, integer=True)
    check_range("binary_steps", binary_steps, 1, integer=True)
    check_range("c", c, 0.0)
    check_range("kappa", kappa, 0.0)
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=binary_steps, steps=steps, stepsize=step_size,
                                              confidence=kappa, initial_const=c, abort_early=True)
    return _foolbox(model, x, y, attack, eps, eot_samples)


def _deepfool(norm: str, model, x, y, eps, steps, candidates, overshoot, eot_samples) -> torch.Tensor:
    import foolbox as fb

    check_eps(eps, norm)
    check_range("steps", steps, 1, integer=True)
    check_range("candidates", candidates, 2, 10, integer=True)
    check_range("overshoot", overshoot, 0.0)
    cls = fb.attacks.LinfDeepFoolAttack if norm == "linf" else fb.attacks.L2DeepFoolAttack
    return _foolbox(model, x, y, cls(steps=steps, candidates=candidates, overshoot=overshoot), eps, eot_samples)


@register_attack("fb_deepfool_linf", "linf", label="DeepFool-Linf (foolbox)")
def fb_deepfool_linf(model, x, y, *, eps: float, steps: int = 50, candidates: int = 10, overshoot: float = 0.02,
                     eot_samples: int = 1) -> torch.Tensor:
    """DeepFool (Moosavi-Dezfooli et al. 2016), Linf, against the ``candidates`` most likely classes."""
    return _deepfool("linf", model, x, y, eps, steps, candidates, overshoot, eot_samples)


@register_attack("fb_deepfool_l2", "l2", label="DeepFool-L2 (foolbox)")
def fb_deepfool_l2(model, x, y, *, eps: float, steps: int = 50, candidates: int = 10, overshoot: float = 0.02,
                   eot_samples: int = 1) -> torch.Tensor:
    """DeepFool, L2, against the ``candidates`` most likely classes."""
    return _deepfool("l2", model, x, y, eps, steps, candidates, overshoot, eot_samples)
