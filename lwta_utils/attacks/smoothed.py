"""Gradient-free PGD-Linf on the margin loss, its gradient estimated by antithetic Gaussian finite
differences (the gradient of the Gaussian-smoothed loss; Ilyas et al. 2018, Uesato et al. 2018),
for discontinuous activations such as k-WTA."""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.attacks.gradients import margin_loss
from lwta_utils.attacks.pgd import l2_norm
from lwta_utils.attacks.registry import check_eps, check_inputs, register_attack
from lwta_utils.core.errors import check_range

# (was: from . import attacks_external)


@register_attack("smoothed_pgd", "linf", kind="black-box", label="smoothed PGD (gradient-free)", iterative=True)
def smoothed_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float = 0.02,
                 steps: int = 20, samples: int = 32, sigma: float = 0.05, momentum: float = 0.9,
                 random_start: bool = True, max_batch: int = 4096, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Gradient-free Linf PGD on the margin loss. Per step the gradient of the
    Gaussian-smoothed loss is estimated from ``samples`` antithetic pairs::

        g = 1 / (2 sigma n) * sum_i (L(x + sigma u_i) - L(x - sigma u_i)) u_i,  u_i ~ N(0, I)

    (2 * samples + 1 forward passes per step, none backward); the estimates are
    accumulated with ``momentum`` (so that later steps average over more
    samples) and the signed step is projected on the eps-ball. Returns, per point, the iterate with the
    highest margin loss seen (the first one that fools the model wins)."""
    check_inputs(x, y)
    check_eps(eps, "linf")
    check_range("step_size", step_size, 0.0, 1.0)
    check_range("steps", steps, 1, integer=True)
    check_range("samples", samples, 1, integer=True)
    check_range("sigma", sigma, 1e-6, 1.0)
    check_range("momentum", momentum, 0.0, 0.999)
    check_range("max_batch", max_batch, 1, integer=True)
    x = x.detach()
    if eps == 0:
        return x.clone()
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    x_adv = x.clone()
    if random_start:
        x_adv = torch.min(torch.max(x + (2 * torch.rand(x.shape, generator=generator).to(x) - 1) * eps, lo), hi)
    chunk = max(1, max_batch // (2 * len(x)))  # antithetic pairs per forward pass
    with torch.no_grad():
        best, best_loss = x_adv.clone(), margin_loss(model(x_adv), y)
        avg = torch.zeros_like(x)
        for _ in range(steps):
            g = torch.zeros_like(x)
            for start in range(0, samples, chunk):
                m = min(chunk, samples - start)
                u = torch.randn((m, *x.shape), generator=generator).to(x)
                pts = torch.cat([x_adv + sigma * u, x_adv - sigma * u]).flatten(0, 1)
                f = margin_loss(model(pts), y.repeat(2 * m)).view(2, m, len(x))
                g += ((f[0] - f[1]).view(m, len(x), *[1] * (x.dim() - 1)) * u).sum(0)
            avg = momentum * avg + g / l2_norm(g)
            x_adv = torch.min(torch.max(x_adv + step_size * avg.sign(), lo), hi)
            cur = margin_loss(model(x_adv), y)
            better = (cur > best_loss) & (best_loss <= 0)
            best[better], best_loss[better] = x_adv[better], cur[better]
    return best
