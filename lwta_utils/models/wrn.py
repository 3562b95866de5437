"""The pre-activation WideResNet of the LWTA paper (TRADES layout)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from lwta_utils.config.schema import ModelConfig
from lwta_utils.core.errors import bad
from lwta_utils.models.parts import activation, classifier, input_layer, weight_layers
from lwta_utils.models.registry import register_model


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

    def __init__(self, info, m: ModelConfig):
        super().__init__()
        if m.pni in ("activation", "both"):
            raise bad("pni", m.pni, "activation noise is placed in the MNIST CNN only; use 'weight' for the WRN")
        n = (m.depth - 4) // 6
        widths = [16, 16 * m.widen_factor, 32 * m.widen_factor, 64 * m.widen_factor]
        make = activation(m)
        act = lambda c: make(c, "conv")  # noqa: E731
        final_act = act if m.activation_placement == "all" else (lambda c: nn.ReLU())
        conv = weight_layers(m)[0]
        plain_conv = weight_layers(m, gated=False)[0]  # stem, shortcuts: PNI but no IBP
        layers: list[nn.Module] = [input_layer(m, info),
                                   plain_conv(info.in_channels, widths[0], 3, 1, 1, bias=False)]
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                layers.append(PreActBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                          stride if i == 0 else 1, act, conv, plain_conv))
        layers += [nn.BatchNorm2d(widths[3]), final_act(widths[3]), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   classifier(widths[3], info.num_classes, m)]
        self.net = nn.Sequential(*layers)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d) and mod.groups == 1:  # not the depthwise Sparta gates
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Linear):
                nn.init.zeros_(mod.bias)

    def forward(self, x):
        return self.net(x)
