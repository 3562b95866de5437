"""Activations chosen by name, and the input normalisation layer.

An activation factory is called as ``factory(num_features, kind, **options)``
where ``kind`` is 'conv' (inputs (B, C, H, W)) or 'dense' (inputs (B, C)), so
that competition-based activations (LWTA, k-WTA) can size their blocks per
layer. Register a new one with ``@register_activation("name")``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ActivationFactory = Callable[..., nn.Module]
ACTIVATIONS: dict[str, ActivationFactory] = {}
KINDS = ("conv", "dense")


def register_activation(name: str) -> Callable[[ActivationFactory], ActivationFactory]:
    def deco(factory: ActivationFactory) -> ActivationFactory:
        ACTIVATIONS[name] = factory
        return factory
    return deco


def make_activation(name: str, num_features: int, kind: str, **options) -> nn.Module:
    from .errors import bad, check_choice

    check_choice("activation", name, ACTIVATIONS)
    check_choice("kind", kind, KINDS)
    try:
        return ACTIVATIONS[name](num_features, kind, **options)
    except TypeError as exc:
        raise bad("activation_options", options, f"not accepted by activation '{name}': {exc}") from None


@register_activation("relu")
def _relu(num_features: int, kind: str) -> nn.Module:
    return nn.ReLU()


class Normalize(nn.Module):
    """(x - mean) / std per channel; the model's first layer, so attacks work on [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# Activations defined in their own modules register themselves on import.
from . import lwta  # noqa: E402,F401
from . import kwta, sparta  # noqa: E402,F401
