"""Weight-covariance alignment (Eustratiadis et al., arXiv 2010.08852; REFERENCE section 4).

The classifier head: ``h = ReLU(fc1(g(x)))`` with ``D`` features (32),
``h~ = h + z``, ``z ~ N(0, L L^T)`` with ``L`` a learnable lower-triangular
``D x D`` matrix (initialised ``rand().tril()``, projected back onto the lower
triangle after every optimiser step by :meth:`WCAHead.after_step`), and
``logits = W h~ + b``. Training minimises ``CE - log tr(W Sigma W^T)``
(``train.loss: wca``): the second term raises the noise variance along the
classifier's weight directions, where it moves the logits most.

Switches (``lwta_utils.core.switches``), independent of ``model.eval()``:
``stochastic`` (noise on; the authors keep it on at test time) and
``noise_sharing``: 'example' (a fresh z per example, our default) or 'batch'
(one z per forward pass shared by the whole batch, as the official code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.core.errors import check_choice, check_range
from lwta_utils.core.switches import Switchable

NOISE_SHARING = ("example", "batch")


class WCAHead(nn.Module, Switchable):
    """fc1 (in -> D) - ReLU - anisotropic Gaussian noise N(0, L L^T) - fc (D -> classes)."""

    SWITCHES = {"stochastic": (True, False), "noise_sharing": NOISE_SHARING}

    def __init__(self, in_features: int, num_classes: int, dim: int = 32, noise_sharing: str = "example"):
        super().__init__()
        check_range("head_options.dim", dim, 1, 4096, integer=True)
        check_choice("head_options.noise_sharing", noise_sharing, NOISE_SHARING)
        self.fc1 = nn.Linear(in_features, dim)
        self.L = nn.Parameter(torch.rand(dim, dim).tril())
        self.fc = nn.Linear(dim, num_classes)
        self.stochastic, self.noise_sharing = True, noise_sharing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        if self.stochastic:
            rows = 1 if self.noise_sharing == "batch" else h.shape[0]
            z = torch.randn(rows, h.shape[1], generator=self.generator, device=h.device, dtype=h.dtype) @ self.L.t()
            h = h + z
        return self.fc(h)

    @property
    def per_example_noise(self) -> bool:
        return self.noise_sharing == "example"

    def covariance(self) -> torch.Tensor:
        return self.L @ self.L.t()

    def alignment(self) -> torch.Tensor:
        """tr(W Sigma W^T) = ||W L||_F^2: the noise variance projected on the classifier weights."""
        return (self.fc.weight @ self.L).pow(2).sum()

    def penalty(self) -> torch.Tensor:
        """The term added to the cross-entropy: -log tr(W Sigma W^T)."""
        return -torch.log(self.alignment())

    @torch.no_grad()
    def after_step(self) -> None:
        """Project L back onto the lower-triangular matrices (the official code's re-tril)."""
        self.L.copy_(self.L.tril())

    def decayed_parameters(self) -> list[nn.Parameter]:
        """The parameters the authors' optimiser decays (L and W)."""
        return [self.L, self.fc.weight]


def wca_heads(model: nn.Module) -> list[WCAHead]:
    return [m for m in model.modules() if isinstance(m, WCAHead)]


def wca_penalty(model: nn.Module) -> torch.Tensor:
    heads = wca_heads(model)
    if not heads:
        raise ValueError("the 'wca' loss needs a model with a WCA head (head: wca)")
    return sum(h.penalty() for h in heads)
