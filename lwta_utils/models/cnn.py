"""The small MNIST CNN of the default profile."""
from __future__ import annotations

from torch import nn

from lwta_utils.config.schema import ModelConfig
from lwta_utils.models.parts import activation, activation_noise, classifier, input_layer, weight_layers
from lwta_utils.models.registry import register_model


@register_model("mnist_cnn")
class MnistCNN(nn.Module):
    """conv5x5(32w) - act - maxpool - [noise] - conv5x5(64w) - act - maxpool - [noise] -
    flatten - [noise] - fc(128w) - act - classifier.

    A slimmer version of Madry et al.'s MNIST network (32/64 channels, 1024
    units there); ``width`` multiplies every layer. The [noise] layers are
    the Paris-Dauphine study's activation-noise positions (``pni`` 'activation'/'both'; else
    identities); the classifier is a linear layer or a WCA head.
    """

    def __init__(self, info, m: ModelConfig):
        super().__init__()
        c1, c2, f = 32 * m.width, 64 * m.width, 128 * m.width
        act = activation(m)
        conv, linear = weight_layers(m)
        noise = lambda n: activation_noise(n, m)  # noqa: E731
        s = info.image_size // 4
        self.net = nn.Sequential(
            input_layer(m, info),
            conv(info.in_channels, c1, 5, padding=2), act(c1, "conv"), nn.MaxPool2d(2), noise(c1),
            conv(c1, c2, 5, padding=2), act(c2, "conv"), nn.MaxPool2d(2), noise(c2),
            nn.Flatten(), noise(c2 * s * s), linear(c2 * s * s, f), act(f, "dense"),
            classifier(f, info.num_classes, m),
        )

    def forward(self, x):
        return self.net(x)
