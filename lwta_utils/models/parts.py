"""Parts the architectures share: input normalisation, the weight layers that feed an activation
(plain, IBP-gated or PNI-noisy), the classifier (linear or WCA head) and the Paris-Dauphine study's activation noise.
"""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.config.schema import ModelConfig
from lwta_utils.core.conv import Conv2d
from lwta_utils.core.errors import bad
from lwta_utils.defenses.ibp import IBPConv2d, IBPLinear
from lwta_utils.defenses.pni import NoiseInjection, PNIConv2d, PNILinear
from lwta_utils.defenses.registry import activation_options, make_activation
from lwta_utils.defenses.wca import WCAHead


class Normalize(nn.Module):
    """(x - mean) / std per channel; the model's first layer, so attacks work on [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def input_layer(m: ModelConfig, info) -> nn.Module:
    """The model's first layer: the data set's normalisation, or none (``input_normalization``
    off: a model whose weights expect [0, 1] pixels, such as the LWTA authors' checkpoint)."""
    return Normalize(info.mean, info.std) if m.input_normalization else nn.Identity()


def activation(m: ModelConfig):
    """``act(num_features, kind)``: the model's activation with its options."""
    opts = activation_options(m.activation, m.activation_options)
    return lambda n, kind: make_activation(m.activation, n, kind, **opts)


def weight_layers(m: ModelConfig, gated: bool = True):
    """(conv, linear) constructors for layers that feed an activation: plain, with IBP utility
    indicators over the activation's blocks of U units (``m.ibp``, when ``gated``), or with PNI
    weight noise (``pni`` 'weight' or 'both')."""
    if m.pni in ("weight", "both"):
        return _options(PNIConv2d, m.pni_options, "pni_options"), _options(PNILinear, m.pni_options, "pni_options")
    if not (m.ibp and gated):
        return Conv2d, nn.Linear  # nn.Conv2d with a faster input gradient for a one-channel input
    U = activation_options(m.activation, m.activation_options)["U"]
    return (_options(IBPConv2d, {"U": U, "ibp_options": m.ibp_options}, "ibp_options"),
            _options(IBPLinear, {"U": U, "ibp_options": m.ibp_options}, "ibp_options"))


def _options(cls, options: dict | None, name: str):
    """``cls`` with keyword ``options`` bound; a rejected option names ``name``."""
    def make(*args, **kwargs):
        try:
            return cls(*args, **(options or {}), **kwargs)
        except TypeError as exc:
            raise bad(name, options, f"not accepted by {cls.__name__}: {exc}") from None
    return make


def classifier(in_features: int, num_classes: int, m: ModelConfig) -> nn.Module:
    """The last layer: a linear map (with PNI weight noise under ``pni`` 'weight'/'both') or a WCA head."""
    if m.head == "wca":
        return _options(WCAHead, m.head_options, "head_options")(in_features, num_classes)
    if m.head_options:
        raise bad("head_options", m.head_options, "only head 'wca' takes options")
    return weight_layers(m, gated=False)[1](in_features, num_classes)


def activation_noise(channels: int, m: ModelConfig) -> nn.Module:
    """The Paris-Dauphine study's activation-noise layer (``pni`` 'activation' or 'both'), else identity."""
    if m.pni not in ("activation", "both"):
        return nn.Identity()
    opts = {k: v for k, v in (m.pni_options or {}).items() if k == "alpha_init"}  # scalar alpha, as the Paris-Dauphine study
    return _options(NoiseInjection, opts, "pni_options")(channels)
