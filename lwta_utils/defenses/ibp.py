"""The IBP / stick-breaking variant of LWTA networks, and the ELBO's KL terms.

Panousis, Chatzis & Theodoridis, "Nonparametric Bayesian Deep Networks with
Local Competition" (ICML 2019), and the ELBO of the Paris-Dauphine student study (Hicheur,
Bourdrez & Kaspar; REFERENCE section 1):

- utility indicators ``z ~ Bernoulli(pi_k)``, ``pi_k = prod_{i<=k} u_i``,
  ``u_i ~ Beta(alpha, 1)`` (stick-breaking, one stick per LWTA block k);
  dense layers: one z per (input j, block k), tiled over the U units of the
  block; conv layers: one z per block of U kernels; ``W <- z * W``;
- posteriors ``q(u_k) = Kumaraswamy(a_k, b_k)`` (softplus-parametrised,
  sampled by the inverse CDF ``u = (1 - (1 - U)^(1/b))^(1/a)``) and
  ``q(z) = Bernoulli(sigmoid(t))``, relaxed in training by a binary
  concrete at temperature 0.67 (dense) / 0.5 (conv);
- KL terms: Kumaraswamy-Beta in closed form (Nalisnick & Smyth 2017), the
  Bernoulli KL against the sampled ``pi``, and the winners' KL
  ``sum q log(q U)`` (kept by the LWTA layers when ``track_kl`` is on);
- loss (``TrainConfig.loss = 'elbo'``): cross-entropy + KL / N_train;
- phase 'test': ``z = sigmoid(t) * 1[sigmoid(t) > threshold]``, threshold 0.01.

Deviations, stated: no Bayesian (Gaussian) weights, the KL of z is the
Bernoulli one (the authors' code uses a binary-concrete Monte Carlo term),
and the dense utility indicators are tiled over the units of their own block
(the authors' TensorFlow ``tile`` interleaves them across blocks).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.core.conv import Conv2d
from lwta_utils.core.errors import bad, check_range
from lwta_utils.core.switches import Switchable, maybe_switches
from lwta_utils.defenses.lwta import LWTA, PHASES
from lwta_utils.defenses.lwta_kernels import uniform

EULER_GAMMA = 0.5772156649015329


def kumaraswamy_sample(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A reparametrised draw from Kumaraswamy(a, b) by the inverse CDF."""
    v = uniform(a.shape, a, generator)
    return (1 - (1 - v).pow(1 / b)).pow(1 / a)


def kumaraswamy_log_prob(u: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.log(a) + torch.log(b) + (a - 1) * torch.log(u) + (b - 1) * torch.log1p(-u.pow(a))


def kl_kumaraswamy_beta(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """KL(Kumaraswamy(a, b) || Beta(alpha, 1)), elementwise, in closed form.

    Nalisnick & Smyth (2017) with prior beta = 1 (the infinite series
    vanishes): (a - alpha)/a (-gamma - psi(b) - 1/b) + log(a b) - log(alpha) - (b - 1)/b.
    """
    return ((a - alpha) / a * (-EULER_GAMMA - torch.digamma(b) - 1 / b) + torch.log(a * b)
            - math.log(alpha) - (b - 1) / b)


def kl_bernoulli(q: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bernoulli(q) || Bernoulli(p)), elementwise."""
    q, p = q.clamp(eps, 1 - eps), p.clamp(eps, 1 - eps)
    return q * (torch.log(q) - torch.log(p)) + (1 - q) * (torch.log1p(-q) - torch.log1p(-p))


class IBPGate(nn.Module, Switchable):
    """Stick-breaking utility indicators for a weight of ``K * U`` output units.

    K: blocks (output units / U); J: indicators per block (dense: input
    features; conv: 1). Options (``ModelConfig.ibp_options``): alpha (prior
    Beta(alpha, 1), 1.0), temperature (binary concrete; None = 0.67 dense,
    0.5 conv), threshold (test-time cut, 0.01), a_init / b_init (initial
    raw Kumaraswamy parameters; None = the authors' code: K and 2 dense, 3
    and 1 conv), t_init (range of the initial logits of q(z); None = the
    authors' code: [-0.1, 0.1] dense, [-5, 1] conv).
    """

    SWITCHES = {"phase": PHASES, "stochastic": (True, False)}

    def __init__(self, K: int, J: int, U: int, kind: str, alpha: float = 1.0, temperature: float | None = None,
                 threshold: float = 0.01, a_init: float | None = None, b_init: float | None = None,
                 t_init: tuple[float, float] | list[float] | None = None):
        super().__init__()
        check_range("ibp_options.alpha", alpha, 1e-3)
        check_range("ibp_options.threshold", threshold, 0.0, 1.0)
        dense = kind == "dense"
        temperature = (0.67 if dense else 0.5) if temperature is None else temperature
        check_range("ibp_options.temperature", temperature, 1e-3)
        t_init = ((-0.1, 0.1) if dense else (-5.0, 1.0)) if t_init is None else tuple(t_init)
        if len(t_init) != 2 or t_init[0] > t_init[1]:
            raise bad("ibp_options.t_init", t_init, "a pair [low, high] with low <= high")
        self.K, self.J, self.U, self.kind = K, J, U, kind
        self.alpha, self.temperature, self.threshold = float(alpha), float(temperature), float(threshold)
        if a_init is None:
            a_init = float(K) if dense else 3.0
        if b_init is None:
            b_init = 2.0 if dense else 1.0
        self.a_raw = nn.Parameter(torch.full((K,), float(a_init)))
        self.b_raw = nn.Parameter(torch.full((K,), float(b_init)))
        self.t = nn.Parameter(torch.empty(K, J).uniform_(*t_init))
        self.phase, self.stochastic = "test", True
        self.generator: torch.Generator | None = None

    def extra_repr(self) -> str:
        return f"K={self.K}, J={self.J}, U={self.U}, kind={self.kind}, alpha={self.alpha:g}"

    @property
    def per_example_noise(self) -> bool:
        """At test time the indicators are thresholded probabilities (no noise); in training one
        draw of z per forward pass is shared by the batch."""
        return self.phase == "test"

    def probs(self) -> torch.Tensor:
        """q(z = 1), shape (K, J)."""
        return torch.sigmoid(self.t)

    def z(self) -> torch.Tensor:
        """The indicators in force, shape (K, J): relaxed draws in training, thresholded probabilities at test."""
        q = self.probs()
        if self.phase == "test":
            return q * (q > self.threshold)
        if not self.stochastic:
            return q
        lu = torch.logit(uniform(self.t.shape, self.t, self.generator))
        return torch.sigmoid((self.t + lu) / self.temperature)

    def weight_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """z tiled over the U units of each block, broadcastable to ``weight`` (out = K * U first)."""
        z = self.z().repeat_interleave(self.U, dim=0)            # (K U, J)
        return z.view(z.shape[0], *([1] * (weight.dim() - 1))) if self.J == 1 else z

    def kl_divergence(self, draws: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """KL of the sticks (closed form) + KL of z given the sticks, averaged over ``draws`` fresh
        draws of the sticks (1 in training: an unbiased estimate; more: a steadier validation ELBO).
        ``generator``: the draws' generator (default: the gate's)."""
        a, b = F.softplus(self.a_raw), F.softplus(self.b_raw)
        u = kumaraswamy_sample(a.expand(draws, -1), b.expand(draws, -1), generator or self.generator)
        pi = torch.cumprod(u, 1)                                           # (draws, K)
        kl_z = kl_bernoulli(self.probs().unsqueeze(0), pi.unsqueeze(2)).sum((1, 2)).mean()
        return kl_kumaraswamy_beta(a, b, self.alpha).sum() + kl_z

    def prior_probs(self) -> torch.Tensor:
        """The learned stick-breaking probabilities E_q[pi_k] = prod_{i<=k} E_q[u_i], shape (K,)
        (the sticks are independent; E Kumaraswamy(a, b) = b B(1 + 1/a, b))."""
        a, b = F.softplus(self.a_raw), F.softplus(self.b_raw)
        mean_u = torch.exp(torch.log(b) + torch.lgamma(1 + 1 / a) + torch.lgamma(b) - torch.lgamma(1 + 1 / a + b))
        return torch.cumprod(mean_u, 0)

    def active_mask(self) -> torch.Tensor:
        """Which indicators are kept at test time (q > threshold), boolean, shape (K, J)."""
        return self.probs() > self.threshold

    def active_share(self) -> float:
        """Share of indicators kept at test time (q > threshold)."""
        return self.active_mask().float().mean().item()


class IBPLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by stick-breaking utility indicators (one per input and block)."""

    def __init__(self, in_features: int, out_features: int, U: int = 2, bias: bool = True,
                 ibp_options: dict | None = None):
        super().__init__(in_features, out_features, bias)
        if out_features % U:
            raise bad("activation_options.U", U, f"must divide the {out_features} outputs of an IBP layer")
        self.gate = IBPGate(out_features // U, in_features, U, "dense", **(ibp_options or {}))

    def forward(self, x):
        return F.linear(x, self.weight * self.gate.weight_mask(self.weight), self.bias)


class IBPConv2d(Conv2d):
    """nn.Conv2d (``core.conv.Conv2d``) whose kernels are multiplied by stick-breaking utility indicators (one
    per block of U kernels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, U: int = 2,
                 ibp_options: dict | None = None, **conv_kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **conv_kwargs)
        if out_channels % U:
            raise bad("activation_options.U", U, f"must divide the {out_channels} kernels of an IBP layer")
        self.gate = IBPGate(out_channels // U, 1, U, "conv", **(ibp_options or {}))

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.gate.weight_mask(self.weight), self.bias)


def gated_layers(model: nn.Module) -> list[tuple[str, IBPLinear | IBPConv2d]]:
    """(name, layer) of every weight layer with IBP utility indicators, in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (IBPLinear, IBPConv2d))]


def kept_weights(layer: IBPLinear | IBPConv2d) -> tuple[int, int]:
    """(weights kept, weights) of a gated layer at test time: a weight is dropped when the
    indicator that multiplies it is below the threshold (biases are not gated and not counted)."""
    gate, w = layer.gate, layer.weight
    keep = gate.active_mask().repeat_interleave(gate.U, dim=0)            # (K U, J)
    keep = keep.view(keep.shape[0], *([1] * (w.dim() - 1))) if gate.J == 1 else keep
    return int(keep.expand_as(w).sum()), w.numel()


def gate_kl(model: nn.Module, draws: int = 1, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The KL terms of the model's IBP gates (sticks and indicators: they do not depend on the
    input), each averaged over ``draws`` draws of the sticks; None without gates."""
    terms = [m.kl_divergence(draws, generator) for m in model.modules() if isinstance(m, IBPGate)]
    return torch.stack(terms).sum() if terms else None


@torch.no_grad()
def elbo_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> tuple[float, float]:
    """(sum of the cross-entropies, sum of the winners' KL terms) over the examples ``x``, in the
    model's current phase (the terms of the ELBO that depend on the input)."""
    dev = next(model.parameters()).device
    ce = kl = 0.0
    with maybe_switches(model, track_kl=True):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            ce += float(F.cross_entropy(model(xb).float(), yb, reduction="sum"))
            terms = [m.kl for m in model.modules() if isinstance(m, LWTA) and m.kl is not None]
            kl += float(sum(terms)) * len(yb) if terms else 0.0          # each LWTA kl: mean over the batch
    return ce, kl


def model_kl(model: nn.Module) -> torch.Tensor | None:
    """Sum of the model's KL terms: IBP gates, and the winners' KL of LWTA layers that track it.

    None when the model has no KL term at all.
    """
    terms = [m.kl_divergence() for m in model.modules() if isinstance(m, IBPGate)]
    terms += [m.kl for m in model.modules() if isinstance(m, LWTA) and m.track_kl and m.kl is not None]
    return torch.stack(terms).sum() if terms else None


def has_kl_terms(model: nn.Module) -> bool:
    return any(isinstance(m, (IBPGate, LWTA)) for m in model.modules())
