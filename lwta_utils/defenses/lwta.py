"""Stochastic Local Winner-Takes-All (Panousis, Chatzis & Theodoridis, arXiv 2112.02671).

The pre-activation ``h`` is split into blocks of ``U`` adjacent units (dense
``(B, C)``: units ``kU .. kU+U-1``; conv ``(B, C, H, W)``: channels
``kU .. kU+U-1`` compete at every spatial position separately). In each
block one winner is drawn from ``softmax(h)`` with the Gumbel-softmax
(concrete) relaxation whose logits are the activations themselves::

    xi = softmax((h + G) / tau),  G ~ Gumbel(0, 1);   output = h * xi

(REFERENCE section 1). For ``U = 2`` this is ``sigmoid((h_a - h_b + L) / tau)``
with ``L ~ Logistic(0, 1)``, computed by a fused autograd function that draws
one number per block (half the draws of ``F.gumbel_softmax``); see
``lwta_kernels``.

Behaviour is set by explicit switches (``lwta_utils.core.switches``), never by
``model.train()`` / ``model.eval()``:

- ``phase``: 'train' (temperature ``temperature``, 0.67, or a learned
  ``softplus(t)``) or 'test' (``test_temperature``, 0.01). Default 'test':
  ``fit()`` switches to 'train' around its training step only.
- ``stochastic``: draw fresh Gumbel noise on every forward pass (the paper:
  on, also at test time) or use none (deterministic).
- ``test_mode`` (phase 'test' only): 'sample' (the relaxed mask at the test
  temperature), 'argmax' (a hard one-hot winner of ``h + G``), 'expectation'
  (``xi = softmax(h)``, the mean of the winner indicator; never random).
- ``gradient``: 'relaxed' (the paper's: through ``h`` and ``xi``) or
  'straight_through' (the drawn mask held constant in the backward pass).
- ``track_kl``: keep ``KL(Cat(softmax(h)) || Cat(1/U))`` of the last pass
  (summed over blocks and positions, averaged over the batch) for the ELBO.
- ``keep_mask`` / ``mask_override``: keep the last mask, or use a given one
  (for the straight-through check and winner statistics).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.core.errors import bad, check_choice, check_range
from lwta_utils.core.switches import Switchable
from lwta_utils.defenses import lwta_kernels
from lwta_utils.defenses.lwta_kernels import (
    KERNELS,
    PairCompetition,
    draw_seed,
    pair_logistic,
    resolve_kernel,
    uniform,
)
from lwta_utils.defenses.registry import register_activation

PHASES = ("train", "test")


TEST_MODES = ("sample", "argmax", "expectation")


GRADIENTS = ("relaxed", "straight_through")


LEARN_TEMPERATURE = ("none", "conv", "all")


_EPS = 1e-6


@register_activation("lwta")
class LWTA(nn.Module, Switchable):
    """Stochastic LWTA activation for ``kind`` 'dense' ``(B, C)`` or 'conv' ``(B, C, H, W)``.

    num_features: C, a multiple of U.
    U: competing units per block (2 in the paper).
    temperature: training temperature (0.67); with a learned temperature,
        its initial value is ``softplus(temperature_init)``.
    test_temperature: temperature in phase 'test' (0.01).
    learn_temperature: 'none', 'conv' (a learnable per-layer scalar
        ``softplus(t)`` on conv layers, as in the released checkpoint's
        version; dense layers fixed) or 'all'.
    temperature_init: initial ``t`` of a learned temperature (-0.01).
    kernel: how the U = 2 competition is computed (``lwta_kernels``):
        'auto' (numba for float32 CPU tensors when numba imports, else
        eager), 'numba', 'eager', 'compiled' (torch.compile), or 'generic'
        (the plain softmax path used for any U; same numbers, slowest).
    """

    SWITCHES = {"phase": PHASES, "stochastic": (True, False), "test_mode": TEST_MODES,
                "gradient": GRADIENTS, "track_kl": (True, False), "keep_mask": (True, False)}

    def __init__(self, num_features: int, kind: str, U: int = 2, temperature: float = 0.67,
                 test_temperature: float = 0.01, learn_temperature: str = "none",
                 temperature_init: float = -0.01, kernel: str = "auto"):
        super().__init__()
        check_range("activation_options.U", U, 2, integer=True)
        if num_features % U:
            raise bad("activation_options.U", U, f"must divide the {num_features} features of a {kind} layer")
        check_range("activation_options.temperature", temperature, 1e-4)
        check_range("activation_options.test_temperature", test_temperature, 1e-4)
        check_choice("activation_options.learn_temperature", learn_temperature, LEARN_TEMPERATURE)
        self.num_features, self.kind, self.U = num_features, kind, U
        check_choice("activation_options.kernel", kernel, KERNELS + ("generic",))
        self.test_temperature, self.kernel = float(test_temperature), kernel
        if learn_temperature == "all" or (learn_temperature == "conv" and kind == "conv"):
            self.t = nn.Parameter(torch.tensor(float(temperature_init)))
        else:
            self.register_buffer("t", None)
            self.fixed_temperature = float(temperature)
        self.phase, self.stochastic, self.test_mode, self.gradient = "test", True, "sample", "relaxed"
        self.track_kl = self.keep_mask = False
        self.mask_override: torch.Tensor | None = None
        self.generator: torch.Generator | None = None
        self.kl: torch.Tensor | None = None
        self.last_mask: torch.Tensor | None = None

    def extra_repr(self) -> str:
        temp = "learned" if self.t is not None else f"{self.fixed_temperature:g}"
        return (f"{self.num_features}, kind={self.kind}, U={self.U}, temperature={temp}, "
                f"test_temperature={self.test_temperature:g}")

    def temperature(self) -> torch.Tensor | float:
        """The temperature of the current phase (a tensor when learned and training)."""
        if self.phase == "test":
            return self.test_temperature
        return F.softplus(self.t) if self.t is not None else self.fixed_temperature

    def blocks(self, h: torch.Tensor) -> torch.Tensor:
        """The block view ``(B, K, U, ...)`` of ``h`` (no copy)."""
        want = 2 if self.kind == "dense" else 4
        if h.dim() != want or h.shape[1] != self.num_features:
            shape = "(B, C)" if want == 2 else "(B, C, H, W)"
            raise bad("input", tuple(h.shape), f"this {self.kind} LWTA layer takes {shape} with C = {self.num_features}")
        return h.view(h.shape[0], self.num_features // self.U, self.U, *h.shape[2:])

    def _noise(self, hv: torch.Tensor) -> torch.Tensor | None:
        """Logistic noise per block (U = 2) or Gumbel noise per unit; None when deterministic."""
        if not self.stochastic:
            return None
        if self.U == 2:
            return pair_logistic(hv.select(2, 0), self.generator)
        return -torch.log(-torch.log(uniform(hv.shape, hv, self.generator).clamp_(_EPS, 1 - _EPS)))

    def mask(self, hv: torch.Tensor) -> torch.Tensor:
        """The competition mask xi for the block view (full size, generic path)."""
        if self.phase == "test" and self.test_mode == "expectation":
            return torch.softmax(hv, dim=2)
        noise = self._noise(hv)
        if noise is not None and self.U == 2:  # Logistic(a - b) = Gumbel_a - Gumbel_b
            noise = torch.stack((noise, torch.zeros_like(noise)), dim=2)
        logits = hv if noise is None else hv + noise
        if self.phase == "test" and self.test_mode == "argmax":
            return F.one_hot(logits.argmax(2), self.U).movedim(-1, 2).to(hv.dtype)
        return torch.softmax(logits / self.temperature(), dim=2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dtype in (torch.float16, torch.bfloat16):  # mixed precision: compete in float32
            return self.forward(h.float()).to(h.dtype)
        hv = self.blocks(h)
        self.kl = kl_categorical_uniform(hv) if self.track_kl else None
        if self.mask_override is not None:
            return (hv * self.mask_override.to(hv.dtype)).view_as(h)
        fast = (self.kernel != "generic" and self.U == 2 and not (self.phase == "test" and self.test_mode != "sample"))
        if fast:
            tau = self.temperature()
            tau = tau if torch.is_tensor(tau) else hv.new_tensor(tau)
            kernel = resolve_kernel(self.kernel, h)
            if kernel == "numba":  # one pass on h itself, in its memory format; the word drawn inside
                seed = draw_seed(self.generator) if self.stochastic else None
                y, s = lwta_kernels.numba_pair(h, tau, seed, self.gradient == "straight_through", self.keep_mask)
                if self.keep_mask:
                    self.last_mask = torch.stack((s, 1 - s), dim=2)
                return y
            keep = [] if self.keep_mask else None
            y = PairCompetition.apply(hv, self._noise(hv), tau, self.gradient == "straight_through", kernel, keep)
            if keep:
                self.last_mask = torch.stack((keep[0], 1 - keep[0]), dim=2)
            return _like(y, h)
        xi = self.mask(hv)
        if self.keep_mask:
            self.last_mask = xi.detach()
        if self.gradient == "straight_through":
            xi = xi.detach()
        return (hv * xi).view_as(h)


def _like(y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The block output ``y`` back in ``h``'s shape and memory format (channels-last stays so;
    the compiled kernel may return another layout, which then costs one copy)."""
    try:
        return y.view_as(h)
    except RuntimeError:
        fmt = torch.channels_last if h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        return y.reshape(h.shape).contiguous(memory_format=fmt)


def kl_categorical_uniform(hv: torch.Tensor) -> torch.Tensor:
    """KL(Cat(softmax(h)) || Cat(1/U)) per block, summed over blocks and positions, mean over the batch.

    For U = 2, with d = h_a - h_b and q_a = sigmoid(d), the same KL in closed form on d (half the
    elements, no strided softmax over the block view): log 2 - softplus(-d) - d sigmoid(-d)."""
    if hv.shape[2] == 2:
        d = hv.select(2, 0) - hv.select(2, 1)
        kl = math.log(2) - F.softplus(-d) - d * torch.sigmoid(-d)
    else:
        logq = torch.log_softmax(hv, dim=2)
        kl = (logq.exp() * (logq + math.log(hv.shape[2]))).sum(2)
    return kl.flatten(1).sum(1).mean()


def lwta_layers(model: nn.Module) -> list[LWTA]:
    return [m for m in model.modules() if isinstance(m, LWTA)]
