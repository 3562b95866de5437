"""Batched inference: logits, accuracy, and the logits of several forward passes (draws)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    dev = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    return (predict_logits(model, x, batch_size).argmax(1) == y.cpu()).float().mean().item()


def draw_logits(model: nn.Module, x: torch.Tensor, draws: int, batch_size: int = 500) -> torch.Tensor:
    """Logits of ``draws`` forward passes, shape (draws, N, classes)."""
    return torch.stack([predict_logits(model, x, batch_size) for _ in range(draws)])
