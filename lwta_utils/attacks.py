"""White-box attacks on pixels in [0, 1], chosen by name.

Every attack takes ``(model, x, y, **params)`` and returns ``x_adv`` with
``|x_adv - x|_inf <= eps`` and pixels in [0, 1]. Attacks never change the
model's train/eval mode: the caller decides it (``evaluate.eval_mode``).

- ``fgsm``: one signed-gradient step of size eps (Goodfellow et al. 2015).
- ``cw_l2``: Carlini-Wagner L2 (tanh box, Adam, margin loss with
  confidence kappa); the smallest successful example per point, clipped to
  the Linf eps-ball (seed 001 reports it at eps 0.3).
- ``pgd_linf``: projected gradient descent (Madry et al. 2018) with random
  start, restarts (a point is robust only if it survives every restart) and
  ``eot_samples`` gradients averaged per step (expectation over
  transformation, for stochastic models).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import bad, check_range

Attack = Callable[..., torch.Tensor]
ATTACKS: dict[str, Attack] = {}


def register_attack(name: str) -> Callable[[Attack], Attack]:
    def deco(fn: Attack) -> Attack:
        ATTACKS[name] = fn
        return fn
    return deco


def check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    """Images (B, C, H, W) float in [0, 1]; labels (B,) integer."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise bad("x", getattr(x, "shape", type(x).__name__), "must be a float tensor of shape (B, C, H, W)")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise bad("x", f"range [{x.min().item():.3g}, {x.max().item():.3g}]",
                  "pixels must lie in [0, 1] (normalisation belongs inside the model)")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32) or y.shape != x.shape[:1]:
        raise bad("y", getattr(y, "shape", type(y).__name__), f"must be integer labels of shape ({x.shape[0]},)")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input, averaged over
    ``eot_samples`` forward passes; parameter gradients are left untouched."""
    x = x.detach().requires_grad_(True)
    grad = torch.zeros_like(x)
    for _ in range(eot_samples):
        loss = F.cross_entropy(model(x), y, reduction="sum")
        grad += torch.autograd.grad(loss, x)[0]
    return grad / eot_samples


@register_attack("pgd_linf")
def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float = 0.01,
             steps: int = 40, random_start: bool = True, restarts: int = 1, eot_samples: int = 1,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Linf PGD maximising cross-entropy; returns the first restart's example that
    fools the model per point, else the last restart's."""
    check_inputs(x, y)
    check_range("eps", eps, 0.0, 1.0)
    check_range("step_size", step_size, 0.0, 1.0)
    check_range("steps", steps, 1, integer=True)
    check_range("restarts", restarts, 1, integer=True)
    check_range("eot_samples", eot_samples, 1, integer=True)
    x = x.detach()
    if eps == 0:
        return x.clone()
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    best = x.clone()
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        if random_start:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x_adv = torch.min(torch.max(x + (2 * noise - 1) * eps, lo), hi)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            g = input_gradient(model, x_adv, y, eot_samples)
            x_adv = torch.min(torch.max(x_adv + step_size * g.sign(), lo), hi).detach()
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        newly = fooled & robust
        best[newly] = x_adv[newly]
        best[robust & ~fooled] = x_adv[robust & ~fooled]
        robust &= ~fooled
    return best


@register_attack("fgsm")
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, eot_samples: int = 1
         ) -> torch.Tensor:
    """Fast gradient sign method: x + eps * sign(grad), clipped to [0, 1]."""
    return pgd_linf(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, restarts=1,
                    eot_samples=eot_samples)


@register_attack("cw_l2")
def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 1.0, steps: int = 100,
          step_size: float = 0.01, c: float = 1.0, kappa: float = 0.0) -> torch.Tensor:
    """Carlini & Wagner (2017) L2: minimise ||x' - x||_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa)
    over x' = (tanh(w) + 1) / 2 with Adam (lr ``step_size``) for ``steps`` steps; keeps, per
    point, the smallest-L2 example that fools the model (the input itself if none does), then
    clips it to the Linf ``eps``-ball (eps 1 = unbounded)."""
    check_inputs(x, y)
    check_range("eps", eps, 0.0, 1.0)
    check_range("steps", steps, 1, integer=True)
    check_range("step_size", step_size, 0.0, 1.0)
    check_range("c", c, 0.0)
    check_range("kappa", kappa, 0.0)
    x = x.detach()
    w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=step_size)
    best, best_l2 = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
    for _ in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        logits = model(x_adv)
        onehot = F.one_hot(y, logits.shape[1]).bool()
        true = logits[onehot]
        other = logits.masked_fill(onehot, float("-inf")).amax(1)
        l2 = (x_adv - x).flatten(1).pow(2).sum(1)
        loss = (l2 + c * (true - other).clamp(min=-kappa)).sum()
        w.grad = torch.autograd.grad(loss, w)[0]  # the model's parameter gradients stay untouched
        opt.step()
        with torch.no_grad():
            better = (logits.argmax(1) != y) & (l2 < best_l2)
            best[better], best_l2[better] = x_adv[better].detach(), l2[better]
    return torch.min(torch.max(best, (x - eps).clamp(min=0)), (x + eps).clamp(max=1)).detach()


def attack_params(name: str, params: dict) -> dict:
    """The subset of ``params`` that attack ``name`` takes (FGSM has no steps or
    restarts); records store exactly these, so nothing is silently ignored."""
    if name not in ATTACKS:
        raise bad("attack", name, f"choose one of {', '.join(sorted(ATTACKS))}")
    accepted = inspect.signature(ATTACKS[name]).parameters
    return {k: v for k, v in params.items() if k in accepted}


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **params) -> torch.Tensor:
    """Look ``name`` up in the registry and run it with ``params``."""
    if name not in ATTACKS:
        raise bad("attack", name, f"choose one of {', '.join(sorted(ATTACKS))}")
    unknown = set(params) - set(attack_params(name, params))
    if unknown:
        raise bad("attack parameters", sorted(unknown), f"attack '{name}' does not take them")
    return ATTACKS[name](model, x, y, **params)
