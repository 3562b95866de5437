"""Attacks on pixels in [0, 1], chosen by name from one registry.

Every attack takes ``(model, x, y, **params)`` and returns ``x_adv`` inside
the eps-ball of its norm around ``x`` and inside [0, 1]. ``run_attack`` is
the entry point of the evaluation: it checks the parameters, runs the
attack and leaves the model's train/eval modes, randomness switches,
``requires_grad`` flags and the global RNG state exactly as it found them.

Our own attacks (this module; fast, with EOT and gradient modes):

- ``fgsm``: one signed-gradient step of size eps (Goodfellow et al. 2015).
- ``pgd_linf`` / ``pgd_l2``: projected gradient descent (Madry et al. 2018)
  with random start, restarts (a point is robust only if it survives every
  restart), a loss ('ce', 'margin' = Carlini-Wagner's, 'dlr'),
  ``eot_samples`` gradients averaged per step (expectation over
  transformation, for stochastic models) and a ``gradient`` mode:
  'model' (the model as it is), 'straight_through' (BPDA for LWTA: the drawn
  winner mask is held constant in the backward pass), 'expectation' (LWTA's
  deterministic mean mask in the gradient pass), 'deterministic' (every
  stochastic layer's noise off in the gradient pass). The forward pass that
  decides success is always the model as evaluated.
- ``cw_l2``: Carlini-Wagner L2 (tanh box, Adam, margin loss with confidence
  kappa), the smallest successful example clipped to the Linf eps-ball (seed
  001 reports it at eps 0.3).
- ``transfer``: PGD-Linf on a ``surrogate`` model (a ReLU PGD-AT network),
  its examples fed to the target (Papernot et al. 2017).
- ``smoothed_pgd``: gradient-free PGD-Linf on the margin loss, its gradient
  estimated by antithetic Gaussian finite differences (the gradient of the
  Gaussian-smoothed loss; Ilyas et al. 2018, Uesato et al. 2018), for
  discontinuous activations such as k-WTA.

Through foolbox and the official AutoAttack code (``attacks_external``):
``fb_fgsm``, ``fb_pgd_linf``, ``fb_pgd_l2``, ``fb_cw_l2``, ``fb_deepfool_linf``,
``fb_deepfool_l2``, ``apgd_ce``, ``apgd_dlr``, ``apgd_t``, ``fab``, ``fab_t``,
``square`` and ``autoattack`` ('standard', 'rand', or 'auto': 'rand' for
stochastic models).
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import bad, check_choice, check_range
from .switches import get_switches, restore_switches, set_switches

Attack = Callable[..., torch.Tensor]
ATTACKS: dict[str, Attack] = {}
NORMS = ("linf", "l2")
KINDS = ("white-box", "black-box", "transfer")
LOSSES = ("ce", "margin", "dlr")
# switches that the gradient pass of each mode sets (restored right after it)
GRADIENT_MODES: dict[str, dict] = {"model": {}, "straight_through": {"gradient": "straight_through"},
                                   "expectation": {"test_mode": "expectation"},
                                   "deterministic": {"stochastic": False}}


@dataclass(frozen=True)
class AttackInfo:
    """What the evaluation needs to know of a registered attack."""

    norm: str            # 'linf' or 'l2': the ball eps bounds
    kind: str            # 'white-box' (gradients of the target), 'black-box' (its outputs only), 'transfer'
    label: str           # display name
    random: bool = True  # draws randomness (takes ``generator`` or ``seed``)


ATTACK_INFO: dict[str, AttackInfo] = {}


def register_attack(name: str, norm: str = "linf", kind: str = "white-box", label: str | None = None
                    ) -> Callable[[Attack], Attack]:
    check_choice("norm", norm, NORMS)
    check_choice("kind", kind, KINDS)

    def deco(fn: Attack) -> Attack:
        ATTACKS[name] = fn
        ATTACK_INFO[name] = AttackInfo(norm, kind, label or name)
        return fn
    return deco


def check_inputs(x: torch.Tensor, y: torch.Tensor, x_name: str = "x", y_name: str = "y") -> None:
    """Images (B, C, H, W) float in [0, 1] (no NaN); labels (B,) integer."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        what = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise bad(x_name, what, "must be a float tensor of shape (B, C, H, W)")
    if x.numel() and torch.isnan(x).any():
        raise bad(x_name, "a tensor with NaN pixels", "pixels must be numbers in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise bad(x_name, f"range [{x.min().item():.3g}, {x.max().item():.3g}]",
                  "pixels must lie in [0, 1] (normalisation belongs inside the model)")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32) or y.shape != x.shape[:1]:
        what = f"{y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise bad(y_name, what, f"must be integer labels of shape ({x.shape[0]},)")


def check_eps(eps: float, norm: str) -> None:
    check_range("eps", eps, 0.0, 1.0 if norm == "linf" else None)


# ----------------------------------------------------------------------------
# Losses and gradients
# ----------------------------------------------------------------------------


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: max_{i != y} z_i - z_y (positive once misclassified)."""
    onehot = F.one_hot(y, logits.shape[1]).bool()
    return logits.masked_fill(onehot, float("-inf")).amax(1) - logits[onehot]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference of logits ratio, per example (needs >= 3 classes)."""
    srt = logits.sort(1).values
    return margin_loss(logits, y) / (srt[:, -1] - srt[:, -3] + 1e-12)


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Summed loss the attacks maximise."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    return (margin_loss if loss == "margin" else dlr_loss)(logits, y).sum()


@contextmanager
def gradient_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Set the switches of gradient ``mode`` for a block (an error if the model lacks them)."""
    settings = GRADIENT_MODES[mode]
    saved = set_switches(model, **settings) if settings else []
    try:
        yield
    finally:
        restore_switches(saved)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1,
                   loss: str = "ce", gradient: str = "model") -> torch.Tensor:
    """Gradient of the summed ``loss`` w.r.t. the input, averaged over ``eot_samples``
    forward passes, under gradient ``mode``; parameter gradients are left untouched."""
    x = x.detach().requires_grad_(True)
    grad = None
    with gradient_mode(model, gradient):
        for _ in range(eot_samples):
            g = torch.autograd.grad(attack_loss(model(x), y, loss), x)[0]
            grad = g if grad is None else grad.add_(g)
    return grad if eot_samples == 1 else grad.div_(eot_samples)


def _check_pgd(eps, norm, step_size, steps, restarts, eot_samples, loss, gradient) -> None:
    check_eps(eps, norm)
    check_range("step_size", step_size, 0.0)
    check_range("steps", steps, 1, integer=True)
    check_range("restarts", restarts, 1, integer=True)
    check_range("eot_samples", eot_samples, 1, integer=True)
    check_choice("loss", loss, LOSSES)
    check_choice("gradient", gradient, GRADIENT_MODES)


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def _l2_project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    delta = x_adv - x
    delta = delta * (eps / _l2_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp_(0, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
        step_size: float = 0.01, steps: int = 40, random_start: bool = True, restarts: int = 1,
        eot_samples: int = 1, loss: str = "ce", gradient: str = "model",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD in the Linf or L2 ball; with several restarts, per point the first
    restart's example that fools the model (one forward pass of the model as
    it is), else the last restart's."""
    check_inputs(x, y)
    _check_pgd(eps, norm, step_size, steps, restarts, eot_samples, loss, gradient)
    x = x.detach()
    if eps == 0:
        return x.clone()
    if norm == "linf":
        lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    best = x.clone()
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for r in range(restarts):
        if random_start:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            if norm == "linf":
                x_adv = torch.min(torch.max(x + (2 * noise - 1) * eps, lo), hi)
            else:  # a random direction, at a uniform radius in [0, eps]
                d = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x_adv = _l2_project(x + d / _l2_norm(d) * eps * noise.flatten(1)[:, :1].view(-1, 1, 1, 1), x, eps)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            g = input_gradient(model, x_adv, y, eot_samples, loss, gradient)
            if norm == "linf":
                x_adv = x_adv.add_(g.sign_(), alpha=step_size).clamp_(min=lo, max=hi)
            else:
                x_adv = _l2_project(x_adv + step_size * g / _l2_norm(g), x, eps)
        if restarts == 1:
            return x_adv
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        keep = robust & (fooled | torch.tensor(r == restarts - 1, device=x.device))
        best[keep] = x_adv[keep]
        robust &= ~fooled
    return best


@register_attack("pgd_linf", "linf", label="PGD-Linf")
def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float = 0.01,
             steps: int = 40, random_start: bool = True, restarts: int = 1, eot_samples: int = 1,
             loss: str = "ce", gradient: str = "model", generator: torch.Generator | None = None) -> torch.Tensor:
    """Linf PGD (see :func:`pgd`)."""
    return pgd(model, x, y, eps=eps, norm="linf", step_size=step_size, steps=steps, random_start=random_start,
               restarts=restarts, eot_samples=eot_samples, loss=loss, gradient=gradient, generator=generator)


@register_attack("pgd_l2", "l2", label="PGD-L2")
def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float = 0.1,
           steps: int = 40, random_start: bool = True, restarts: int = 1, eot_samples: int = 1,
           loss: str = "ce", gradient: str = "model", generator: torch.Generator | None = None) -> torch.Tensor:
    """L2 PGD: steps of L2 length ``step_size`` along the gradient (see :func:`pgd`)."""
    return pgd(model, x, y, eps=eps, norm="l2", step_size=step_size, steps=steps, random_start=random_start,
               restarts=restarts, eot_samples=eot_samples, loss=loss, gradient=gradient, generator=generator)


@register_attack("fgsm", "linf", label="FGSM")
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, eot_samples: int = 1,
         gradient: str = "model") -> torch.Tensor:
    """Fast gradient sign method: x + eps * sign(grad), clipped to [0, 1]."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, restarts=1,
               eot_samples=eot_samples, gradient=gradient)


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


@register_attack("transfer", "linf", kind="transfer", label="transfer PGD")
def transfer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, surrogate: nn.Module, eps: float,
             step_size: float = 0.01, steps: int = 40, random_start: bool = True, restarts: int = 1,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Linf PGD on ``surrogate`` (the target ``model`` is never queried)."""
    if not isinstance(surrogate, nn.Module):
        raise bad("surrogate", type(surrogate).__name__, "must be a trained model (nn.Module)")
    with preserved(surrogate):
        surrogate.eval()
        return pgd(surrogate, x, y, eps=eps, step_size=step_size, steps=steps, random_start=random_start,
                   restarts=restarts, generator=generator)


@register_attack("smoothed_pgd", "linf", kind="black-box", label="smoothed PGD (gradient-free)")
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
            avg = momentum * avg + g / _l2_norm(g)
            x_adv = torch.min(torch.max(x_adv + step_size * avg.sign(), lo), hi)
            cur = margin_loss(model(x_adv), y)
            better = (cur > best_loss) & (best_loss <= 0)
            best[better], best_loss[better] = x_adv[better], cur[better]
    return best


# ----------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Restore, after the block, every module's train/eval mode, every randomness
    switch, every parameter's ``requires_grad`` and ``.grad``, and the global (CPU and
    CUDA) RNG state. Inside the block the parameters do not require gradients."""
    modes = {m: m.training for m in model.modules()}
    saved = get_switches(model)
    grads = {p: (p.requires_grad, p.grad) for p in model.parameters()}
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        try:
            for p in grads:  # attacks need input gradients only (libraries that call backward() fill no .grad)
                p.requires_grad_(False)
            yield model
        finally:
            for m, mode in modes.items():
                m.training = mode
            restore_switches(saved)
            for p, (flag, grad) in grads.items():
                p.requires_grad_(flag)
                p.grad = grad


def attack_params(name: str, params: dict) -> dict:
    """The subset of ``params`` that attack ``name`` takes (FGSM has no steps or
    restarts); records store exactly these, so nothing is silently ignored."""
    if name not in ATTACKS:
        raise bad("attack", name, f"choose one of {', '.join(sorted(ATTACKS))}")
    accepted = inspect.signature(ATTACKS[name]).parameters
    return {k: v for k, v in params.items() if k in accepted}


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **params) -> torch.Tensor:
    """Look ``name`` up in the registry and run it with ``params`` (unknown ones are an
    error); the model comes back with its modes, switches, flags and RNG state as found."""
    if name not in ATTACKS:
        raise bad("attack", name, f"choose one of {', '.join(sorted(ATTACKS))}")
    unknown = set(params) - set(attack_params(name, params))
    if unknown:
        raise bad("attack parameters", sorted(unknown), f"attack '{name}' does not take them")
    check_inputs(x, y)
    with preserved(model):
        return ATTACKS[name](model, x, y, **params)


from . import attacks_external  # noqa: E402,F401  (registers the foolbox and AutoAttack attacks)
