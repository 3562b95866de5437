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
from lwta_utils.core.switches import restore_switches, set_switches

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
