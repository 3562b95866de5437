"""Parametric Noise Injection (He, Rakin & Fan, CVPR 2019; REFERENCE section 3).

Weight noise (PNI-W): ``w~ = w + alpha * eta``, ``eta ~ N(0, std(w)^2)``, the
standard deviation of the whole weight tensor recomputed on every pass under
no_grad; ``alpha`` learnable, initialised to 0.25, one per layer ('layer') or
one per output channel ('channel'), never weight-decayed (``train.py`` puts
every parameter named ``alpha`` in a group without weight decay).

Activation noise (the Paris-Dauphine study's "noise injection" layers after pool1, pool2 and
the flatten): ``x~ = x + alpha * eta``, ``eta ~ N(0, std(x)^2)`` (std of the
batch's activation tensor, no_grad).

The noise is ON in training and at test time. It is an explicit switch,
``stochastic`` (``lwta_utils.core.switches``), never tied to ``model.eval()``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.core.conv import Conv2d
from lwta_utils.core.errors import check_choice, check_range
from lwta_utils.core.switches import Switchable

GRANULARITIES = ("layer", "channel")


ALPHA_INIT = 0.25  # the noise scale alpha starts here (He et al.)


def _alpha(channels: int, ndim: int, granularity: str, alpha_init: float) -> nn.Parameter:
    check_choice("pni_options.granularity", granularity, GRANULARITIES)
    check_range("pni_options.alpha_init", alpha_init, 0.0, 10.0)
    shape = (channels,) + (1,) * (ndim - 1) if granularity == "channel" else ()
    return nn.Parameter(torch.full(shape, float(alpha_init)))


def weight_noise(w: torch.Tensor, alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """w + alpha * N(0, std(w)^2), the std taken without gradient; the noise from ``generator``
    (None: torch's global generator)."""
    with torch.no_grad():
        std = w.std()
    return w + alpha * torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device) * std


class PNIConv2d(Conv2d, Switchable):
    """``nn.Conv2d`` (``core.conv.Conv2d``) whose weight carries parametric Gaussian noise (PNI-W)."""

    SWITCHES = {"stochastic": (True, False)}
    per_example_noise = False  # one weight noise per forward pass, shared by the batch

    def __init__(self, *args, granularity: str = "channel", alpha_init: float = ALPHA_INIT, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = _alpha(self.out_channels, 4, granularity, alpha_init)
        self.stochastic = True

    def forward(self, x):
        w = weight_noise(self.weight, self.alpha, self.generator) if self.stochastic else self.weight
        return self._conv_forward(x, w, self.bias)


class PNILinear(nn.Linear, Switchable):
    """``nn.Linear`` whose weight carries parametric Gaussian noise (PNI-W)."""

    SWITCHES = {"stochastic": (True, False)}
    per_example_noise = False  # one weight noise per forward pass, shared by the batch

    def __init__(self, *args, granularity: str = "channel", alpha_init: float = ALPHA_INIT, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = _alpha(self.out_features, 2, granularity, alpha_init)
        self.stochastic = True

    def forward(self, x):
        w = weight_noise(self.weight, self.alpha, self.generator) if self.stochastic else self.weight
        return F.linear(x, w, self.bias)


class NoiseInjection(nn.Module, Switchable):
    """Activation noise: x + alpha * N(0, std(x)^2), alpha learnable (scalar, or per channel)."""

    SWITCHES = {"stochastic": (True, False)}
    per_example_noise = False  # its scale is the std of the whole batch

    def __init__(self, channels: int, granularity: str = "layer", alpha_init: float = ALPHA_INIT):
        super().__init__()
        self.alpha = _alpha(channels, 2, granularity, alpha_init)
        self.stochastic = True

    def forward(self, x):
        if not self.stochastic:
            return x
        with torch.no_grad():
            std = x.std()
        alpha = self.alpha.view(1, -1, *([1] * (x.ndim - 2))) if self.alpha.ndim else self.alpha
        return x + alpha * torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device) * std

    def extra_repr(self) -> str:
        return f"alpha shape={tuple(self.alpha.shape)}"
