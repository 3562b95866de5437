"""Sparta: a spatially attentive ReLU (Guo et al., arXiv 2105.08269; REFERENCE section 5).

**A reconstruction.** No public code and no accessible method section exist.
What is established: Sparta extends ReLU with a spatially attentive,
input-dependent gate learned jointly with adversarial training (related to
Swish and to feature denoising). This study's reconstruction:

- conv ``(B, C, H, W)``: ``ReLU(x) * sigmoid(dwconv_kxk(x))``, a depthwise
  ``k x k`` convolution (one filter per channel, with bias) giving a spatial
  attention map per channel;
- dense ``(B, C)``: ``ReLU(x) * sigmoid(a * x + b)`` per feature (the k = 1
  case without spatial context).

The gate starts near open (weights ~0, bias ``gate_bias_init`` = 2:
sigmoid(2) = 0.88), so an untrained Sparta network behaves like a scaled
ReLU network. It is trained with PGD adversarial training in the profiles.
Keep its row in every comparison labelled as a reconstruction.
"""
from __future__ import annotations

import torch
from torch import nn

from lwta_utils.core.errors import bad, check_range
from lwta_utils.defenses.registry import register_activation


@register_activation("sparta")
class SpartaReLU(nn.Module):
    """ReLU gated by a learned, input-dependent spatial attention map (reconstruction)."""

    def __init__(self, num_features: int, kind: str, kernel_size: int = 3, gate_bias_init: float = 2.0):
        super().__init__()
        check_range("kernel_size", kernel_size, 1, 15, integer=True)
        if kernel_size % 2 == 0:
            raise bad("kernel_size", kernel_size, "must be odd (the gate keeps the spatial size)")
        self.kind = kind
        if kind == "conv":
            self.gate = nn.Conv2d(num_features, num_features, kernel_size, padding=kernel_size // 2,
                                  groups=num_features, bias=True)
            nn.init.normal_(self.gate.weight, std=0.01)
            nn.init.constant_(self.gate.bias, gate_bias_init)
        else:
            self.scale = nn.Parameter(torch.full((num_features,), 0.01))
            self.bias = nn.Parameter(torch.full((num_features,), float(gate_bias_init)))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            return torch.sigmoid(self.gate(x))
        return torch.sigmoid(x * self.scale + self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * self.attention(x)

