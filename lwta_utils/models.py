"""Models chosen by name: a small MNIST CNN and the pre-activation WideResNet.

Both take pixels in [0, 1] and normalise inside. Every non-linearity is built
by ``make_activation`` so a registered activation replaces all of them.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .data import DataInfo
from .errors import bad, check_choice
from .ibp import IBPConv2d, IBPLinear
from .layers import Normalize, make_activation
from .pni import NoiseInjection, PNIConv2d, PNILinear
from .wca import WCAHead

MODELS: dict[str, Callable[..., nn.Module]] = {}
HEADS = ("linear", "wca")
PLACEMENTS = ("all", "blocks")


def weight_layers(ibp: bool, ibp_options: dict | None, activation_options: dict | None,
                  pni: str = "none", pni_options: dict | None = None):
    """(conv, linear) constructors for layers that feed an activation: plain, with
    IBP utility indicators over the activation's blocks of U units, or with PNI
    weight noise (``pni`` 'weight' or 'both')."""
    if pni in ("weight", "both"):
        return _options(PNIConv2d, pni_options, "pni_options"), _options(PNILinear, pni_options, "pni_options")
    if not ibp:
        return nn.Conv2d, nn.Linear
    U = (activation_options or {}).get("U", 2)
    return (_options(IBPConv2d, {"U": U, "ibp_options": ibp_options}, "ibp_options"),
            _options(IBPLinear, {"U": U, "ibp_options": ibp_options}, "ibp_options"))


def _options(cls, options: dict | None, name: str):
    """``cls`` with keyword ``options`` bound; a rejected option names ``name``."""
    def make(*args, **kwargs):
        try:
            return cls(*args, **(options or {}), **kwargs)
        except TypeError as exc:
            raise bad(name, options, f"not accepted by {cls.__name__}: {exc}") from None
    return make


def classifier(in_features: int, num_classes: int, head: str, head_options: dict | None,
               pni: str = "none", pni_options: dict | None = None) -> nn.Module:
    """The last layer: a linear map (with PNI weight noise under ``pni`` 'weight'/'both') or a WCA head."""
    check_choice("head", head, HEADS)
    if head == "wca":
        return _options(WCAHead, head_options, "head_options")(in_features, num_classes)
    if head_options:
        raise bad("head_options", head_options, "only head 'wca' takes options")
    return weight_layers(False, None, None, pni, pni_options)[1](in_features, num_classes)


def activation_noise(channels: int, pni: str, pni_options: dict | None) -> nn.Module:
    """Seed 001's activation-noise layer (``pni`` 'activation' or 'both'), else identity."""
    if pni not in ("activation", "both"):
        return nn.Identity()
    opts = {k: v for k, v in (pni_options or {}).items() if k == "alpha_init"}  # scalar alpha, as seed 001
    return _options(NoiseInjection, opts, "pni_options")(channels)


def register_model(name: str):
    def deco(cls):
        MODELS[name] = cls
        return cls
    return deco


@register_model("mnist_cnn")
class MnistCNN(nn.Module):
    """conv5x5(32w) - act - maxpool - [noise] - conv5x5(64w) - act - maxpool - [noise] -
    flatten - [noise] - fc(128w) - act - classifier.

    A slimmer version of Madry et al.'s MNIST network (32/64 channels, 1024
    units there); ``width`` multiplies every layer. The [noise] layers are
    seed 001's activation-noise positions (``pni`` 'activation'/'both'; else
    identities); the classifier is a linear layer or a WCA head.
    """

    def __init__(self, info: DataInfo, activation: str = "relu", width: int = 1,
                 activation_options: dict | None = None, ibp: bool = False, ibp_options: dict | None = None,
                 pni: str = "none", pni_options: dict | None = None, head: str = "linear",
                 head_options: dict | None = None, **_):
        super().__init__()
        c1, c2, f = 32 * width, 64 * width, 128 * width
        act = lambda n, kind: make_activation(activation, n, kind, **(activation_options or {}))  # noqa: E731
        conv, linear = weight_layers(ibp, ibp_options, activation_options, pni, pni_options)
        noise = lambda n: activation_noise(n, pni, pni_options)  # noqa: E731
        s = info.image_size // 4
        self.net = nn.Sequential(
            Normalize(info.mean, info.std),
            conv(info.in_channels, c1, 5, padding=2), act(c1, "conv"), nn.MaxPool2d(2), noise(c1),
            conv(c1, c2, 5, padding=2), act(c2, "conv"), nn.MaxPool2d(2), noise(c2),
            nn.Flatten(), noise(c2 * s * s), linear(c2 * s * s, f), act(f, "dense"),
            classifier(f, info.num_classes, head, head_options, pni, pni_options),
        )

    def forward(self, x):
        return self.net(x)


class PreActBlock(nn.Module):
    """BN - act - conv3x3 - BN - act - conv3x3, plus identity or 1x1-conv shortcut
    (the TRADES / LWTA-paper layout: when the width changes the shortcut takes
    the activated input)."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: Callable[[int], nn.Module],
                 conv: Callable[..., nn.Module] = nn.Conv2d, plain_conv: Callable[..., nn.Module] = nn.Conv2d):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(c_in), act(c_in)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(c_out), act(c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.equal = c_in == c_out and stride == 1
        self.shortcut = None if self.equal else plain_conv(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x):
        o = self.act1(self.bn1(x))
        residual = x if self.equal else self.shortcut(o)
        o = self.conv2(self.act2(self.bn2(self.conv1(o))))
        return o + residual


@register_model("wrn")
class WideResNet(nn.Module):
    """Pre-activation WideResNet-depth-k (LWTA paper, REFERENCE section 1):
    channels 16 / 16k / 32k / 64k, (depth-4)/6 blocks per group, final
    BN - act - global average pool - classifier.

    ``activation_placement``: 'all' (every activation is ``activation``: the
    LWTA paper) or 'blocks' (only the two activations of every residual block;
    the final one stays ReLU: k-WTA's ResNet placement, where the stem keeps
    ReLU). ``pni`` 'weight' puts PNI-W on every convolution and the classifier.
    """

    def __init__(self, info: DataInfo, activation: str = "relu", depth: int = 34, widen_factor: int = 1,
                 activation_options: dict | None = None, ibp: bool = False, ibp_options: dict | None = None,
                 pni: str = "none", pni_options: dict | None = None, head: str = "linear",
                 head_options: dict | None = None, activation_placement: str = "all", **_):
        super().__init__()
        check_choice("activation_placement", activation_placement, PLACEMENTS)
        if pni in ("activation", "both"):
            raise bad("pni", pni, "activation noise is placed in the MNIST CNN only; use 'weight' for the WRN")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        act = lambda c: make_activation(activation, c, "conv", **(activation_options or {}))  # noqa: E731
        final_act = act if activation_placement == "all" else (lambda c: nn.ReLU())
        conv = weight_layers(ibp, ibp_options, activation_options, pni, pni_options)[0]
        plain_conv = weight_layers(False, None, None, pni, pni_options)[0]  # stem, shortcuts: PNI but no IBP
        layers: list[nn.Module] = [Normalize(info.mean, info.std),
                                   plain_conv(info.in_channels, widths[0], 3, 1, 1, bias=False)]
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                layers.append(PreActBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                          stride if i == 0 else 1, act, conv, plain_conv))
        layers += [nn.BatchNorm2d(widths[3]), final_act(widths[3]), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   classifier(widths[3], info.num_classes, head, head_options, pni, pni_options)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:  # not the depthwise Sparta gates
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
    check_choice("arch", model_cfg.arch, MODELS)
    m = model_cfg
    return MODELS[m.arch](info, activation=m.activation, width=m.width, depth=m.depth,
                          widen_factor=m.widen_factor, activation_options=m.activation_options, ibp=m.ibp,
                          ibp_options=m.ibp_options, pni=m.pni, pni_options=m.pni_options, head=m.head,
                          head_options=m.head_options, activation_placement=m.activation_placement)
