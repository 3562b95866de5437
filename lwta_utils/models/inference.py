"""Batched inference: logits, accuracy, and the logits of several forward passes (draws)."""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from lwta_utils.core.runtime import max_pass
from lwta_utils.core.switches import batched_draws_ok, noise_from


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    dev = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    return (predict_logits(model, x, batch_size).argmax(1) == y.cpu()).float().mean().item()


@torch.no_grad()
def draw_logits(model: nn.Module, x: torch.Tensor, draws: int, batch_size: int = 500,
                generator: torch.Generator | None = None, batched: bool | None = None) -> torch.Tensor:
    """Logits of ``draws`` forward passes (fresh draws each), shape (draws, N, classes), on the CPU.

    The stochastic layers draw from ``generator`` (None: torch's global generator), continuing
    across batches, so no two examples share noise. When every stochastic layer draws per example
    (``core.switches.batched_draws_ok``) the draws of a few examples are stacked along the batch
    dimension (at most ``core.runtime.max_pass`` images a pass), else one pass per draw; ``batched`` forces one
    or the other. A deterministic model needs ``draws`` 1."""
    batched = batched_draws_ok(model) if batched is None else batched
    dev = next(model.parameters()).device
    with noise_from(model, generator) if generator is not None else nullcontext():
        if not batched or draws == 1:
            return torch.stack([predict_logits(model, x, batch_size) for _ in range(draws)])
        per_pass = max(1, min(batch_size, max_pass(dev) // draws))
        out = []
        for i in range(0, len(x), per_pass):
            xb = x[i:i + per_pass].to(dev)
            out.append(model(xb.repeat(draws, *([1] * (xb.dim() - 1)))).float().cpu().view(draws, len(xb), -1))
        return torch.cat(out, 1)
