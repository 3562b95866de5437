"""What the attacks differentiate: their losses, and the input gradient in a gradient mode.

A gradient mode sets switches of the stochastic layers for the gradient pass only: 'model' (the
model as it is), 'straight_through' (BPDA for LWTA: the drawn winner mask held constant in the
backward pass), 'expectation' (LWTA's deterministic mean mask), 'deterministic' (every stochastic
layer's noise off). The forward pass that decides success is always the model as evaluated.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.config.schema import GRADIENT_MODES
from lwta_utils.core.runtime import max_pass
from lwta_utils.core.switches import batched_draws_ok, is_stochastic, restore_switches, set_switches

# switches that the gradient pass of each mode sets (restored right after it)
GRADIENT_SWITCHES: dict[str, dict] = {"model": {}, "straight_through": {"gradient": "straight_through"},
                                      "expectation": {"test_mode": "expectation"},
                                      "deterministic": {"stochastic": False}}
assert tuple(GRADIENT_SWITCHES) == GRADIENT_MODES


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
    settings = GRADIENT_SWITCHES[mode]
    saved = set_switches(model, **settings) if settings else []
    try:
        yield
    finally:
        restore_switches(saved)


def per_example_loss(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """The loss the attacks maximise, per example."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    return (margin_loss if loss == "margin" else dlr_loss)(logits, y)


def eot_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1, loss: str = "ce",
             gradient: str = "model", need_grad: bool = True, batched: bool | None = None,
             confirm_draws: int = 1) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One look at ``x`` through ``eot_samples`` forward passes (fresh draws each) under gradient mode
    ``gradient``: (the input gradient of the loss averaged over the draws, or None without
    ``need_grad``; the loss per example averaged over the draws; whether every draw misclassifies
    the example). Parameter gradients are left untouched.

    The draws are stacked along the batch dimension (one pass of the batch repeated, at most
    ``core.runtime.max_pass`` images a pass) when every stochastic layer draws per example
    (``core.switches.batched_draws_ok``); otherwise one pass per draw. Both give the same
    expectation; ``batched`` forces one or the other. A mode whose forward pass differs from the
    model's ('expectation', 'deterministic') judges success with extra forward passes of the model
    as it is. On a stochastic model an example counts as fooled only when at least
    ``confirm_draws`` draws misclassify it (extra forward passes on the fooled examples when the
    look has fewer; the evaluation's ``EvalConfig.confirm_draws``): an attack that stopped at the
    first iterate one draw happens to misclassify would leave an image most fresh draws classify
    correctly."""
    batched = batched_draws_ok(model) if batched is None else batched
    k = max(1, min(eot_samples, max_pass(x.device) // max(len(x), 1))) if batched and eot_samples > 1 else 1
    x = x.detach()
    grad = torch.zeros_like(x) if need_grad else None
    total = torch.zeros(len(x), device=x.device)
    fooled = torch.ones(len(x), dtype=torch.bool, device=x.device)
    same_forward = not {"test_mode", "stochastic"} & set(GRADIENT_SWITCHES[gradient])
    done = 0
    with gradient_mode(model, gradient):
        while done < eot_samples:
            n = min(k, eot_samples - done)
            xr = x.requires_grad_(True) if need_grad else x
            inp = xr.repeat(n, *([1] * (x.dim() - 1))) if n > 1 else xr
            with torch.set_grad_enabled(need_grad):
                logits = model(inp)
                losses = per_example_loss(logits, y.repeat(n), loss)
            if need_grad:
                grad += torch.autograd.grad(losses.sum(), xr)[0]
            total += losses.detach().view(n, -1).sum(0)
            if same_forward:
                fooled &= (logits.detach().argmax(1) != y.repeat(n)).view(n, -1).all(0)
            done += n
            x = x.detach()
    if not same_forward:  # success is decided by the model as evaluated, not by the gradient pass
        with torch.no_grad():
            for _ in range(eot_samples):
                fooled &= model(x).argmax(1) != y
    extra = confirm_draws - eot_samples if is_stochastic(model) else 0
    if extra > 0 and fooled.any():  # a draw or two that misclassify by chance are no success
        rows = fooled.nonzero().squeeze(1)
        with torch.no_grad():
            for _ in range(extra):
                still = model(x[rows]).argmax(1) != y[rows]
                fooled[rows[~still]] = False
                rows = rows[still]
                if not len(rows):
                    break
    return (grad.div_(eot_samples) if need_grad else None), total / eot_samples, fooled


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot_samples: int = 1,
                   loss: str = "ce", gradient: str = "model", batched: bool | None = None) -> torch.Tensor:
    """Gradient of the summed ``loss`` w.r.t. the input, averaged over ``eot_samples``
    forward passes, under gradient ``mode`` (see :func:`eot_step`); parameter gradients are left
    untouched."""
    return eot_step(model, x, y, eot_samples, loss, gradient, batched=batched)[0]
