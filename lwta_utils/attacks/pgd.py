"""Our gradient attacks: PGD in the Linf and L2 balls, and FGSM (its one-step case).

``pgd_linf`` / ``pgd_l2``: projected gradient descent (Madry et al. 2018) with random start,
restarts (a point is robust only if it survives every restart), a loss ('ce', 'margin' =
Carlini-Wagner's, 'dlr'), ``eot_samples`` gradients averaged per step (expectation over
transformation, for stochastic models) and a gradient mode (``attacks.gradients``). ``fgsm``: one
signed-gradient step of size eps (Goodfellow et al. 2015).
"""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.attacks.gradients import eot_step, input_gradient
from lwta_utils.attacks.registry import check_eps, check_inputs, register_attack
from lwta_utils.config.schema import ATTACK_LOSSES, GRADIENT_MODES
from lwta_utils.core.errors import check_choice, check_range


def _check_pgd(eps, norm, step_size, steps, restarts, eot_samples, loss, gradient) -> None:
    check_eps(eps, norm)
    check_range("step_size", step_size, 0.0)
    check_range("steps", steps, 1, integer=True)
    check_range("restarts", restarts, 1, integer=True)
    check_range("eot_samples", eot_samples, 1, integer=True)
    check_choice("loss", loss, ATTACK_LOSSES)
    check_choice("gradient", gradient, GRADIENT_MODES)


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def _l2_project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    delta = x_adv - x
    delta = delta * (eps / l2_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp_(0, 1)


KEEPS = ("best", "last")


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
        step_size: float = 0.01, steps: int = 40, random_start: bool = True, restarts: int = 1,
        eot_samples: int = 1, loss: str = "ce", gradient: str = "model",
        generator: torch.Generator | None = None, keep: str = "best", confirm_draws: int = 1) -> torch.Tensor:
    """PGD in the Linf or L2 ball, from a random start (drawn from ``generator``), each step the
    signed (Linf) or normalised (L2) gradient of ``loss`` averaged over ``eot_samples`` draws
    (``attacks.gradients.eot_step``).

    keep 'best' (the evaluation): per example the first iterate that is misclassified in every
    draw of its look (and in ``confirm_draws`` draws, see ``eot_step``), else the iterate with the
    highest loss over every restart (the last iterate is looked at too); an example stops as soon
    as it is fooled (early exit), and later restarts run only on the examples not fooled yet.
    keep 'last' (adversarial training, Madry et al.): the last iterate; with restarts, the first
    restart's last iterate that fools the model (one forward pass of the model as it is), else the
    last restart's."""
    check_inputs(x, y)
    _check_pgd(eps, norm, step_size, steps, restarts, eot_samples, loss, gradient)
    check_choice("keep", keep, KEEPS)
    check_range("confirm_draws", confirm_draws, 1, integer=True)
    x = x.detach()
    if eps == 0:
        return x.clone()
    lo, hi = ((x - eps).clamp(min=0), (x + eps).clamp(max=1)) if norm == "linf" else (None, None)

    def start(rows: torch.Tensor) -> torch.Tensor:
        xs = x[rows]
        if not random_start:
            return xs.clone()
        noise = torch.rand(xs.shape, generator=generator, dtype=x.dtype).to(x.device)
        if norm == "linf":
            return torch.min(torch.max(xs + (2 * noise - 1) * eps, lo[rows]), hi[rows])
        d = torch.randn(xs.shape, generator=generator, dtype=x.dtype).to(x.device)  # a random direction,
        return _l2_project(xs + d / l2_norm(d) * eps * noise.flatten(1)[:, :1].view(-1, 1, 1, 1), xs, eps)  # radius U[0, eps]

    def step(x_adv: torch.Tensor, g: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return x_adv.add_(g.sign_(), alpha=step_size).clamp_(min=lo[rows], max=hi[rows])
        return _l2_project(x_adv + step_size * g / l2_norm(g), x[rows], eps)

    everyone = torch.arange(len(x), device=x.device)
    if keep == "last":
        best, robust = x.clone(), torch.ones(len(x), dtype=torch.bool, device=x.device)
        for r in range(restarts):
            x_adv = start(everyone)
            for _ in range(steps):
                x_adv = step(x_adv, input_gradient(model, x_adv, y, eot_samples, loss, gradient), everyone)
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                fooled = model(x_adv).argmax(1) != y
            chosen = robust & (fooled | torch.tensor(r == restarts - 1, device=x.device))
            best[chosen] = x_adv[chosen]
            robust &= ~fooled
        return best
    best = x.clone()
    best_loss = torch.full((len(x),), -float("inf"), device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        rows = everyone[~fooled]
        if not len(rows):
            break
        x_adv = start(rows)
        for t in range(steps + 1):
            g, lossv, hit = eot_step(model, x_adv, y[rows], eot_samples, loss, gradient, need_grad=t < steps,
                                     confirm_draws=confirm_draws)
            if t > 0 or random_start:  # an iterate the attack reached: keep the strongest per example
                better = hit | (lossv > best_loss[rows])
                best[rows[better]] = x_adv[better]
                best_loss[rows[better]] = torch.where(hit[better], float("inf"), lossv[better])
                fooled[rows[hit]] = True
                if hit.any():  # early exit: a fooled example takes no more steps
                    rows, x_adv, g = rows[~hit], x_adv[~hit], None if g is None else g[~hit]
                    if not len(rows):
                        break
            if t == steps:
                break
            x_adv = step(x_adv, g, rows)
    return best


@register_attack("pgd_linf", "linf", label="PGD-Linf", iterative=True, gradient_modes=GRADIENT_MODES)
def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float = 0.01,
             steps: int = 40, random_start: bool = True, restarts: int = 1, eot_samples: int = 1,
             loss: str = "ce", gradient: str = "model", generator: torch.Generator | None = None,
             keep: str = "best", confirm_draws: int = 1) -> torch.Tensor:
    """Linf PGD (see :func:`pgd`)."""
    return pgd(model, x, y, eps=eps, norm="linf", step_size=step_size, steps=steps, random_start=random_start,
               restarts=restarts, eot_samples=eot_samples, loss=loss, gradient=gradient, generator=generator,
               keep=keep, confirm_draws=confirm_draws)


@register_attack("pgd_l2", "l2", label="PGD-L2", iterative=True, gradient_modes=GRADIENT_MODES)
def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float = 0.1,
           steps: int = 40, random_start: bool = True, restarts: int = 1, eot_samples: int = 1,
           loss: str = "ce", gradient: str = "model", generator: torch.Generator | None = None,
           keep: str = "best", confirm_draws: int = 1) -> torch.Tensor:
    """L2 PGD: steps of L2 length ``step_size`` along the gradient (see :func:`pgd`)."""
    return pgd(model, x, y, eps=eps, norm="l2", step_size=step_size, steps=steps, random_start=random_start,
               restarts=restarts, eot_samples=eot_samples, loss=loss, gradient=gradient, generator=generator,
               keep=keep, confirm_draws=confirm_draws)


@register_attack("fgsm", "linf", label="FGSM", gradient_modes=GRADIENT_MODES)
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, eot_samples: int = 1,
         gradient: str = "model") -> torch.Tensor:
    """Fast gradient sign method: x + eps * sign(grad), clipped to [0, 1]."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, restarts=1,
               eot_samples=eot_samples, gradient=gradient)
