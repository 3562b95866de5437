"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), our implementation of the official algorithm, with batched EOT and both
gradient modes.

The official code (PyPI ``pyautoattack``, registered as ``apgd_ce`` / ``apgd_dlr``) averages the
gradients of ``eot_iter`` forward passes in a Python loop and cannot differentiate through a
straight-through mask. This version follows the official Linf algorithm step by step (start on
the boundary of the ball, step size 2 eps, momentum 0.75, checkpoints every ``0.22 N`` iterations
shrinking by ``0.03 N`` down to ``0.06 N``, the step halved and the iterate reset to the best one
when fewer than rho = 75% of the steps since the last checkpoint raised the loss or the best loss
did not improve after the previous halving) and differs in what it looks at:

- the gradient of each iterate is the average over ``eot_samples`` draws, stacked along the batch
  (``attacks.gradients.eot_step``), under a gradient mode (the straight-through gradient of
  LWTA, or the model's own);
- an example counts as fooled when every draw of its look misclassifies it (the official code
  looks at the last draw only), and stops there (early exit); the others keep, per example, the
  iterate with the highest loss averaged over the draws, over every restart.

``tests/test_attack_suite.py`` checks it against the official APGD on a deterministic model.
"""
from __future__ import annotations


import torch
from torch import nn

from lwta_utils.attacks.gradients import eot_step
from lwta_utils.attacks.registry import check_eps, check_inputs, register_attack
from lwta_utils.config.schema import GRADIENT_MODES
from lwta_utils.core.errors import check_choice, check_range

APGD_LOSSES = ("ce", "dlr")


def _checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """(first interval, decrement, minimum interval) of the official schedule."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


def _apgd_run(model, x, y, lo, hi, eps, steps, eot_samples, loss, gradient, rho, generator, confirm_draws):
    """One restart on examples ``x``: (best iterate per example, its loss, fooled mask)."""
    n = len(x)
    t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) - 1
    x_adv = (x + eps * t / t.flatten(1).abs().amax(1).view(-1, *[1] * (x.dim() - 1))).clamp(0, 1)
    x_adv = torch.min(torch.max(x_adv, lo), hi)
    best = x_adv.clone()
    best_loss = torch.full((n,), -float("inf"), device=x.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.arange(n, device=x.device)
    step = torch.full((n,), 2.0 * eps, device=x.device)
    k, decr, k_min = _checkpoint_lengths(steps)
    since, increases = 0, torch.zeros(n, device=x.device)
    last_best_loss = best_loss.clone()
    reduced_last = torch.zeros(n, dtype=torch.bool, device=x.device)
    prev_loss = torch.full((n,), -float("inf"), device=x.device)
    x_prev = x_adv.clone()

    grad, grad_best = torch.zeros_like(x), torch.zeros_like(x)

    def look(xa: torch.Tensor, rows: torch.Tensor, need_grad: bool):
        g, lossv, hit = eot_step(model, xa, y[rows], eot_samples, loss, gradient, need_grad=need_grad,
                                 confirm_draws=confirm_draws)
        better = hit | (lossv > best_loss[rows])
        best[rows[better]] = xa[better]
        best_loss[rows[better]] = torch.where(hit[better], float("inf"), lossv[better])
        if g is not None:
            grad_best[rows[better]] = g[better]
        fooled[rows[hit]] = True
        return g, lossv, hit

    g, lossv, hit = look(x_adv[active], active, True)
    grad[active] = g
    prev_loss[active] = lossv
    active = active[~hit]
    for i in range(steps):
        if not len(active):
            break
        xa, ga, sa = x_adv[active], grad[active], step[active].view(-1, *[1] * (x.dim() - 1))
        lo_a, hi_a = lo[active], hi[active]
        z = torch.min(torch.max(xa + sa * ga.sign(), lo_a), hi_a)
        if i > 0:
            a = 0.75
            z = torch.min(torch.max(xa + a * (z - xa) + (1 - a) * (xa - x_prev[active]), lo_a), hi_a)
        x_prev[active] = xa
        x_adv[active] = z
        last = i == steps - 1
        g, lossv, hit = look(z, active, not last)
        increases[active] += (lossv > prev_loss[active]).float()
        prev_loss[active] = lossv
        if g is not None:
            grad[active] = g
        active = active[~hit]
        since += 1
        if since == k and not last:  # a checkpoint: halve the step where the loss stalled
            stalled = increases <= k * rho
            stalled |= ~reduced_last & (last_best_loss >= best_loss)
            reduced_last = stalled.clone()
            last_best_loss = best_loss.clone()
            reset = active[stalled[active]]
            if len(reset):  # restart from the best iterate with the gradient it had there
                step[reset] /= 2.0
                x_adv[reset] = best[reset]
                grad[reset] = grad_best[reset]
            increases.zero_()
            since, k = 0, max(k - decr, k_min)
    return best, best_loss, fooled


@register_attack("apgd", "linf", label="APGD", gradient_modes=GRADIENT_MODES)
def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 100, restarts: int = 1,
         loss: str = "ce", eot_samples: int = 1, gradient: str = "model", rho: float = 0.75,
         generator: torch.Generator | None = None, confirm_draws: int = 1) -> torch.Tensor:
    """APGD-CE (``loss`` 'ce') or APGD-DLR ('dlr'), Linf, ``steps`` iterations per restart, the
    gradient averaged over ``eot_samples`` draws under gradient mode ``gradient`` (see the module
    docstring); restarts run only on the examples not fooled yet; an example counts as fooled when
    ``confirm_draws`` draws misclassify it (``attacks.gradients.eot_step``)."""
    check_inputs(x, y)
    check_eps(eps, "linf")
    check_range("steps", steps, 1, integer=True)
    check_range("restarts", restarts, 1, integer=True)
    check_range("eot_samples", eot_samples, 1, integer=True)
    check_range("rho", rho, 0.0, 1.0)
    check_choice("loss", loss, APGD_LOSSES)
    check_choice("gradient", gradient, GRADIENT_MODES)
    check_range("confirm_draws", confirm_draws, 1, integer=True)
    x = x.detach()
    if eps == 0:
        return x.clone()
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    best = x.clone()
    best_loss = torch.full((len(x),), -float("inf"), device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        rows = (~fooled).nonzero().squeeze(1)
        if not len(rows):
            break
        b, bl, f = _apgd_run(model, x[rows], y[rows], lo[rows], hi[rows], eps, steps, eot_samples, loss, gradient,
                             rho, generator, confirm_draws)
        better = f | (bl > best_loss[rows])
        best[rows[better]] = b[better]
        best_loss[rows[better]] = bl[better]
        fooled[rows[f]] = True
    return best


