"""Carlini-Wagner L2 (ours): tanh box, Adam, margin loss with confidence kappa; the smallest
successful example clipped to the Linf eps-ball (the Paris-Dauphine study reports it at eps 0.3)."""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.attacks.gradients import margin_loss
from lwta_utils.attacks.registry import check_inputs, register_attack
from lwta_utils.core.errors import check_range

# (was: from . import attacks_external)


@register_attack("cw_l2", "linf", label="CW-L2")
def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 1.0, steps: int = 100,
          step_size: float = 0.01, c: float = 1.0, kappa: float = 0.0, eot_samples: int = 1) -> torch.Tensor:
    """Carlini & Wagner (2017) L2: minimise ||x' - x||_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa)
    over x' = (tanh(w) + 1) / 2 with Adam (lr ``step_size``) for ``steps`` steps (the loss averaged
    over ``eot_samples`` passes); keeps, per point, the smallest-L2 example that fools the model (the
    input itself if none does), then clips it to the Linf ``eps``-ball (eps 1 = unbounded)."""
    check_inputs(x, y)
    check_range("eps", eps, 0.0, 1.0)
    check_range("steps", steps, 1, integer=True)
    check_range("step_size", step_size, 0.0, 1.0)
    check_range("c", c, 0.0)
    check_range("kappa", kappa, 0.0)
    check_range("eot_samples", eot_samples, 1, integer=True)
    x = x.detach()
    w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=step_size)
    best, best_l2 = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
    for _ in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        l2 = (x_adv - x).flatten(1).pow(2).sum(1)
        loss, fooled = 0.0, None
        for _ in range(eot_samples):
            logits = model(x_adv)
            loss = loss + (l2 + c * (-margin_loss(logits, y)).clamp(min=-kappa)).sum() / eot_samples
            fooled = logits.argmax(1) != y if fooled is None else fooled
        w.grad = torch.autograd.grad(loss, w)[0]  # the model's parameter gradients stay untouched
        opt.step()
        with torch.no_grad():
            better = fooled & (l2 < best_l2)
            best[better], best_l2[better] = x_adv[better].detach(), l2[better]
    return torch.min(torch.max(best, (x - eps).clamp(min=0)), (x + eps).clamp(max=1)).detach()
