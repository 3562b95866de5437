"""The activation registry: every non-linearity of the models, chosen by name.

An activation factory (a function or a class) is called as ``factory(num_features, kind,
**options)`` where ``kind`` is 'conv' (inputs (B, C, H, W)) or 'dense' (inputs (B, C)), so that
competition-based activations (LWTA, k-WTA) can size their blocks per layer. Its options and their
defaults are the keyword parameters of its signature, declared once there
(:func:`activation_options` reads them). A defense registers itself in its own module with
``@register_activation("name")``; this module never imports them (``lwta_utils.defenses``
imports every defense).
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from lwta_utils.core.errors import bad, check_choice
from lwta_utils.core.registry import ACTIVATIONS

ActivationFactory = Callable[..., nn.Module]
KINDS = ("conv", "dense")


def register_activation(name: str) -> Callable[[ActivationFactory], ActivationFactory]:
    def deco(factory: ActivationFactory) -> ActivationFactory:
        ACTIVATIONS.add(name, factory)
        return factory
    return deco


def activation_options(name: str, options: dict | None, param: str = "activation_options") -> dict[str, Any]:
    """The options activation ``name`` runs with: ``options`` completed with its declared defaults
    (an unknown option is an error naming ``param``)."""
    return ACTIVATIONS.options(param, name, options)


def make_activation(name: str, num_features: int, kind: str, **options) -> nn.Module:
    check_choice("kind", kind, KINDS)
    opts = activation_options(name, options)
    try:
        return ACTIVATIONS[name](num_features, kind, **opts)
    except TypeError as exc:
        raise bad("activation_options", options, f"not accepted by activation '{name}': {exc}") from None


@register_activation("relu")
def _relu(num_features: int, kind: str) -> nn.Module:
    return nn.ReLU()
