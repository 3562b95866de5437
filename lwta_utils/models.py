"""Models chosen by name: a small MNIST CNN and the pre-activation WideResNet.

Both take pixels in [0, 1] and normalise inside. Every non-linearity is built
by ``make_activation`` so a registered activation replaces all of them.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .data import DataInfo
from .errors import bad
from .ibp import IBPConv2d, IBPLinear
from .layers import Normalize, make_activation

MODELS: dict[str, Callable[..., nn.Module]] = {}


def weight_layers(ibp: bool, ibp_options: dict | None, activation_options: dict | None):
    """(conv, linear) constructors for layers that feed an activation: plain, or
    with IBP utility indicators over the activation's blocks of U units."""
    if not ibp:
        return nn.Conv2d, nn.Linear
    U = (activation_options or {}).get("U", 2)

    def wrap(cls):
        def make(*args, **kwargs):
            try:
                return cls(*args, U=U, ibp_options=ibp_options, **kwargs)
            except TypeError as exc:
                raise bad("ibp_options", ibp_options, f"not accepted by the IBP layers: {exc}") from None
        return make
    return wrap(IBPConv2d), wrap(IBPLinear)


def register_model(name: str):
    def deco(cls):
        MODELS[name] = cls
        return cls
    return deco


@register_model("mnist_cnn")
class MnistCNN(nn.Module):
    """conv5x5(32w) - act - maxpool - conv5x5(64w) - act - maxpool - fc(128w) - act - fc.

    A slimmer version of Madry et al.'s MNIST network (32/64 channels, 1024
    units there); ``width`` multiplies every layer.
    """

    def __init__(self, info: DataInfo, activation: str = "relu", width: int = 1,
                 activation_options: dict | None = None, ibp: bool = False, ibp_options: dict | None = None, **_):
        super().__init__()
        c1, c2, f = 32 * width, 64 * width, 128 * width
        act = lambda n, kind: make_activation(activation, n, kind, **(activation_options or {}))  # noqa: E731
        conv, linear = weight_layers(ibp, ibp_options, activation_options)
        s = info.image_size // 4
        self.net = nn.Sequential(
            Normalize(info.mean, info.std),
            conv(info.in_channels, c1, 5, padding=2), act(c1, "conv"), nn.MaxPool2d(2),
            conv(c1, c2, 5, padding=2), act(c2, "conv"), nn.MaxPool2d(2),
            nn.Flatten(), linear(c2 * s * s, f), act(f, "dense"), nn.Linear(f, info.num_classes),
        )

    def forward(self, x):
        return self.net(x)


class PreActBlock(nn.Module):
    """BN - act - conv3x3 - BN - act - conv3x3, plus identity or 1x1-conv shortcut
    (the TRADES / LWTA-paper layout: when the width changes the shortcut takes
    the activated input)."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: Callable[[int], nn.Module],
                 conv: Callable[..., nn.Module] = nn.Conv2d):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(c_in), act(c_in)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(c_out), act(c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.equal = c_in == c_out and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x):
        o = self.act1(self.bn1(x))
        residual = x if self.equal else self.shortcut(o)
        o = self.conv2(self.act2(self.bn2(self.conv1(o))))
        return o + residual


@register_model("wrn")
class WideResNet(nn.Module):
    """Pre-activation WideResNet-depth-k (LWTA paper, REFERENCE section 1):
    channels 16 / 16k / 32k / 64k, (depth-4)/6 blocks per group, final
    BN - act - global average pool - fc."""

    def __init__(self, info: DataInfo, activation: str = "relu", depth: int = 34, widen_factor: int = 1,
                 activation_options: dict | None = None, ibp: bool = False, ibp_options: dict | None = None, **_):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        act = lambda c: make_activation(activation, c, "conv", **(activation_options or {}))  # noqa: E731
        conv = weight_layers(ibp, ibp_options, activation_options)[0]
        layers: list[nn.Module] = [Normalize(info.mean, info.std),
                                   nn.Conv2d(info.in_channels, widths[0], 3, 1, 1, bias=False)]
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                layers.append(PreActBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                          stride if i == 0 else 1, act, conv))
        layers += [nn.BatchNorm2d(widths[3]), act(widths[3]), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(widths[3], info.num_classes)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


def build_model(model_cfg, info: DataInfo) -> nn.Module:
    """The model a ModelConfig describes, for inputs described by ``info``."""
    from .errors import check_choice

    check_choice("arch", model_cfg.arch, MODELS)
    return MODELS[model_cfg.arch](info, activation=model_cfg.activation, width=model_cfg.width,
                                  depth=model_cfg.depth, widen_factor=model_cfg.widen_factor,
                                  activation_options=model_cfg.activation_options, ibp=model_cfg.ibp,
                                  ibp_options=model_cfg.ibp_options)
