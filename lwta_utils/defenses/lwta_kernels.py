"""Fast kernels of the U = 2 LWTA competition, and fast uniform draws on the CPU.

For U = 2 the Gumbel-softmax mask is ``s = sigmoid((a - b + L) / tau)`` with
``L ~ Logistic(0, 1)`` (the difference of two Gumbels), and

    y_a = a s,   y_b = b (1 - s)
    dL/da = g_a s + c,   dL/db = g_b (1 - s) - c,   c = (g_a a - g_b b) s (1 - s) / tau

(``c`` is dropped for the straight-through gradient). Two implementations of
the same formulas, chosen by ``kernel``:

- 'eager': hand-written in-place torch operations (about 14 passes over
  memory per layer, no compiler needed);
- 'compiled': the same formulas through ``torch.compile`` (one fused loop
  forward, one backward; needs a C++ compiler on the CPU; compiled once per
  process, cached on disk by torch);
- 'auto' (the default): 'compiled' on the CPU when ``torch.compile`` works
  here, otherwise 'eager'. The tests check both give the same numbers.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

KERNELS = ("auto", "eager", "compiled")


_COMPILED: dict | None = None


_COMPILE_STATE = {"tried": False, "ok": False}


def random_bits(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random int32 words of ``shape`` on ``like``'s device, seeded from torch's RNG.

    On the CPU torch's Mersenne Twister needs about 3 ns per number on one
    core, more than all the rest of the layer. Here one 63-bit seed is drawn
    from ``generator`` (or torch's global generator, so ``torch.manual_seed``
    fixes everything) and NumPy's SFC64 fills the words from its raw 64-bit
    output (no copy). Elsewhere ``torch.randint``.
    """
    if like.device.type != "cpu":
        return torch.randint(-2**31, 2**31 - 1, shape, generator=generator, device=like.device, dtype=torch.int32)
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    raw = np.random.SFC64(seed).random_raw((n + 1) // 2)
    return torch.from_numpy(raw.view(np.int32))[:n].view(shape)


def bits_to_uniform(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The top 23 bits k of each word as a uniform draw (k + 1/2) / 2^23, exactly
    representable in float32 and strictly inside (0, 1)."""
    return ((bits >> 9) & 0x7FFFFF).to(dtype) * 2.0**-23 + 2.0**-24


def uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U(0, 1) draws of ``shape`` on ``like``'s device and dtype (never exactly 0 or 1)."""
    return bits_to_uniform(random_bits(shape, like, generator), like.dtype)


def logistic(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logistic(0, 1) draws, ``logit(u)`` (|L| <= 16.6 since u is in [2^-24, 1 - 2^-24])."""
    u = uniform(shape, like, generator)
    return torch.logit(u, out=u)


def _eager_forward(hv, noise, tau):
    a, b = hv.select(2, 0), hv.select(2, 1)
    d = torch.sub(a, b) if noise is None else noise.add_(a).sub_(b)
    s = d.div_(tau).sigmoid_()
    y = torch.empty_like(hv)
    torch.mul(a, s, out=y.select(2, 0))
    torch.addcmul(b, b, s, value=-1.0, out=y.select(2, 1))
    return y, s


def _eager_backward(hv, gy, s, tau, straight_through: bool, tau_grad: bool):
    a, b = hv.select(2, 0), hv.select(2, 1)
    ga, gb = gy.select(2, 0), gy.select(2, 1)
    gh = torch.empty_like(hv)
    gha, ghb = gh.select(2, 0), gh.select(2, 1)
    if straight_through:
        torch.mul(ga, s, out=gha)
        torch.addcmul(gb, gb, s, value=-1.0, out=ghb)
        return gh, None
    # gha first holds dL/dz, z = (a - b + L) / tau: (ga a - gb b) s (1 - s), without temporaries
    torch.mul(ga, a, out=gha).addcmul_(gb, b, value=-1.0)
    gha.mul_(s)
    gha.addcmul_(gha, s, value=-1.0)
    gtau = -(gha * torch.logit(s, 1e-7)).sum() / tau if tau_grad else None
    gha.div_(tau)
    torch.addcmul(gb, gb, s, value=-1.0, out=ghb).sub_(gha)
    gha.addcmul_(ga, s)
    return gh, gtau


def _plain_forward(hv, bits, tau):
    """``bits``: random int32 words (turned into Logistic noise here) or None."""
    a, b = hv.select(2, 0), hv.select(2, 1)
    if bits is None:
        z = (a - b) / tau
    else:
        u = bits_to_uniform(bits, hv.dtype)
        z = (a - b + torch.log(u / (1 - u))) / tau   # one log per draw
    s = torch.sigmoid(z)
    return torch.stack((a * s, b - b * s), 2), s


def _plain_backward_relaxed(hv, gy, s, tau):
    a, b = hv.select(2, 0), hv.select(2, 1)
    ga, gb = gy.select(2, 0), gy.select(2, 1)
    c = (ga * a - gb * b) * s * (1 - s) / tau
    return torch.stack((ga * s + c, gb - gb * s - c), 2)


def _plain_tau_grad(hv, gy, s, tau):
    a, b = hv.select(2, 0), hv.select(2, 1)
    ga, gb = gy.select(2, 0), gy.select(2, 1)
    gz = (ga * a - gb * b) * s * (1 - s)
    return -(gz * torch.logit(s, 1e-7)).sum() / tau


def _plain_backward_st(hv, gy, s):
    ga, gb = gy.select(2, 0), gy.select(2, 1)
    return torch.stack((ga * s, gb - gb * s), 2)


def compiled_available() -> bool:
    """Whether torch.compile works here (tried once per process, on a tiny input)."""
    global _COMPILED
    if not _COMPILE_STATE["tried"]:
        _COMPILE_STATE["tried"] = True
        try:
            # one graph per (rank, noise on/off, grad mode, dtype): the attack suite needs more than
            # dynamo's default 8 before it would fall back to eager with a warning
            dyn = torch._dynamo.config
            for limit in ("recompile_limit", "cache_size_limit"):
                if hasattr(dyn, limit):
                    setattr(dyn, limit, max(getattr(dyn, limit), 64))
            fns = {name: torch.compile(fn, dynamic=True) for name, fn in
                   (("forward", _plain_forward), ("relaxed", _plain_backward_relaxed),
                    ("tau_grad", _plain_tau_grad), ("straight_through", _plain_backward_st))}
            gen = torch.Generator().manual_seed(0)  # the trial never draws from torch's RNG: a
            hv, tau = torch.randn(2, 3, 2, 5, generator=gen), torch.tensor(0.5)  # run's numbers must not
            bits = torch.randint(-2**31, 2**31 - 1, (2, 3, 5), dtype=torch.int32, generator=gen)  # depend on
            y, s = fns["forward"](hv, bits, tau)  # whether this process compiled the kernel already
            fns["relaxed"](hv, torch.ones_like(hv), s, tau)
            fns["straight_through"](hv, torch.ones_like(hv), s)
            _COMPILED, _COMPILE_STATE["ok"] = fns, True
        except Exception as exc:  # no compiler, unsupported platform: fall back, say so once
            warnings.warn(f"LWTA: torch.compile is not usable here ({type(exc).__name__}: {exc}); "
                          "using the eager kernel (same numbers, slower)", RuntimeWarning, stacklevel=2)
    return _COMPILE_STATE["ok"]


def resolve_kernel(kernel: str, device: torch.device) -> str:
    if kernel == "auto":
        return "compiled" if device.type == "cpu" and compiled_available() else "eager"
    if kernel == "compiled" and not compiled_available():
        return "eager"
    return kernel


class PairCompetition(torch.autograd.Function):
    """U = 2 competition on the block view ``hv`` ``(B, K, 2, ...)``.

    ``bits``: random int32 words of shape ``(B, K, ...)`` or None
    (deterministic); ``tau``: a 0-d tensor, learnable or not; ``keep``: a list
    that receives ``s`` when not None. Returns y with ``hv``'s shape.
    """

    @staticmethod
    def forward(ctx, hv, bits, tau, straight_through: bool, kernel: str, keep):
        if kernel == "compiled":
            y, s = _COMPILED["forward"](hv, bits, tau)
        else:
            noise = None if bits is None else torch.logit(bits_to_uniform(bits, hv.dtype))
            y, s = _eager_forward(hv, noise, tau)
        ctx.straight_through, ctx.kernel = straight_through, kernel
        ctx.save_for_backward(hv, s, tau)
        if keep is not None:
            keep.append(s.detach())
        return y

    @staticmethod
    def backward(ctx, gy):
        hv, s, tau = ctx.saved_tensors
        tau_grad = ctx.needs_input_grad[2]
        gy = gy.contiguous()
        if ctx.kernel != "compiled":
            gh, gtau = _eager_backward(hv, gy, s, tau, ctx.straight_through, tau_grad)
        elif ctx.straight_through:
            gh, gtau = _COMPILED["straight_through"](hv, gy, s), None
        else:
            gh = _COMPILED["relaxed"](hv, gy, s, tau)
            gtau = _COMPILED["tau_grad"](hv, gy, s, tau) if tau_grad else None
        return gh, None, gtau if tau_grad else None, None, None, None
