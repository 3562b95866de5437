"""Kernels of the U = 2 LWTA competition, and the random draws they use.

For U = 2 the Gumbel-softmax mask is ``s = sigmoid((a - b + L) / tau)`` with
``L ~ Logistic(0, 1)`` (the difference of two Gumbels), and

    y_a = a s,   y_b = b (1 - s)
    dL/da = g_a s + c,   dL/db = g_b (1 - s) - c,   c = (g_a a - g_b b) s (1 - s) / tau

(``c`` is dropped for the straight-through gradient). Implementations of the
same formulas, chosen by ``kernel``:

- 'numba': one parallel loop per direction on float32 CPU tensors, in their
  own memory format (NCHW, channels-last, dense ``(B, C)``), no copy. The
  forward loop draws each pair's random word, computes the mask and both
  outputs (and stores the mask only when a backward pass or ``keep_mask``
  needs it); the backward loop computes both input gradients (and the
  temperature's). ``s = 1 / (1 + 2^((log2((1 - u) / u) - (a - b) log2 e) / tau))``:
  one log2 and one exp2 per pair, as polynomials that vectorise (float32
  accuracy). Compiled once per machine into numba's disk cache (``make setup``
  runs ``prime_cache``), whatever the shapes.
- 'eager': in-place torch operations (6 passes over the pairs forward, 8
  backward) on Logistic noise from ``pair_logistic``; no compiler of any kind.
  The fallback where numba is missing, for float64 and off the CPU.
- 'compiled': the same formulas through ``torch.compile`` (needs a C++
  compiler on the CPU; compiles per process, shape layout and gradient mode;
  kept for comparison, never picked by 'auto').
- 'auto' (the default): 'numba' for float32 CPU tensors when numba imports,
  else 'eager'. The tests check that every kernel gives the numbers of the
  generic softmax path (``lwta.LWTA.mask``), which uses the same noise.

Random draws (REFERENCE section 1: every (sample, block, position) draws its
own winner): one 63-bit seed is drawn per layer call from the layer's
generator (or torch's global generator, so ``torch.manual_seed`` fixes
everything); pair ``k`` of sample ``b`` at position ``(h, w)`` gets the upper
32 bits of output ``i + 1`` of the SplitMix64 generator started at that seed,
``i = ((b H + h) W + w) K + k`` its number in channels-last order, and
``u = (k' + 1/2) / 2^23`` from the word's top 23 bits ``k'`` (the highest
flipped; ``bits_to_uniform``). A counter-based draw: the same numbers in any
memory format and with any number of threads, and the numba kernel draws
inside its loop the noise that ``pair_logistic`` gives the other kernels.
Without numba (not installed, or inside ``without_numba()``) the uniforms
come from NumPy's SFC64 generator started at the same seed, in the same
order: other numbers, the same law (SplitMix64 in NumPy would cost more than
the layer). Off the CPU: ``torch.rand``.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch

KERNELS = ("auto", "numba", "eager", "compiled")


_COMPILED: dict | None = None


_COMPILE_STATE = {"tried": False, "ok": False}


_NUMBA: dict = {"off": 0}  # the numba kernels, built on first use (importing numba costs ~1 s)


_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


_SERIAL_BELOW = 1 << 16  # pairs: fewer run on one thread, their words drawn by NumPy (no compile)


# --- random draws --------------------------------------------------------------------------------

def draw_seed(generator: torch.Generator | None = None) -> int:
    """One 63-bit seed from ``generator`` (None: torch's global generator)."""
    return int(torch.randint(0, 2**63 - 1, (), generator=generator))


def _numpy_words(seed: int, n: int) -> np.ndarray:
    """SplitMix64 words 1..n from ``seed`` (uint64), as ``_word`` computes them."""
    with np.errstate(over="ignore"):
        z = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        return z ^ (z >> np.uint64(31))


def seeded_bits(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The int32 words of ``shape`` drawn from ``seed`` (CPU; module docstring)."""
    n = math.prod(shape)
    kernels = numba_kernels()
    if kernels is None:  # NumPy's SFC64 (~1 ns a word, one thread)
        out = np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.int32)[:n]
    elif n < _SERIAL_BELOW:  # the same words by NumPy: no kernel to compile for a few words
        out = (_numpy_words(seed, n) >> np.uint64(32)).astype(np.uint32).view(np.int32)
    else:
        out = np.empty(n, np.int32)
        _numba_threads(n)
        kernels["bits"](out, seed)
    return torch.from_numpy(out).view(shape)


def random_bits(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random int32 words of ``shape`` on ``like``'s device: on the CPU, those of one seed drawn
    from ``generator`` (``seeded_bits``); elsewhere ``torch.randint``."""
    if like.device.type != "cpu":
        return torch.randint(-2**31, 2**31 - 1, shape, generator=generator, device=like.device, dtype=torch.int32)
    return seeded_bits(draw_seed(generator), shape)


def bits_to_uniform(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The top 23 bits of each word as a uniform draw (k + 1/2) / 2^23, exactly representable in
    float32 and strictly inside (0, 1): with v = word >> 9 (arithmetic shift, -2^22 <= v < 2^22),
    u = v / 2^23 + 1/2 + 1/2^24, i.e. k = v + 2^22 (every step exact)."""
    return torch.add(torch.tensor(0.5 + 2.0**-24, dtype=dtype), bits >> 9, alpha=2.0**-23)


def uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U(0, 1) draws of ``shape`` on ``like``'s device and dtype (never exactly 0 or 1)."""
    return bits_to_uniform(random_bits(shape, like, generator), like.dtype)


def logistic(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logistic(0, 1) draws, ``logit(u)`` (|L| <= 16.6 since u is in [2^-24, 1 - 2^-24])."""
    u = uniform(shape, like, generator)
    return torch.logit(u, out=u)


def pair_logistic(first: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logistic(0, 1) noise for the pairs of a U = 2 layer, ``first`` being the view ``(B, K, ...)``
    of the pairs' first units: the noise the numba kernel draws for one seed from ``generator``
    (module docstring), laid out in memory as ``first`` (channels-last or C order), so that the
    eager operations run on matching layouts."""
    shape, dtype = first.shape, first.dtype
    if first.device.type != "cpu":
        u = torch.rand(shape, generator=generator, device=first.device, dtype=dtype)
        return torch.logit(u, eps=2.0**-24, out=u)
    seed = draw_seed(generator)
    B, K, rest = shape[0], shape[1], shape[2:]
    n, order = first.numel(), (B, *rest, K)
    adjacent = n == B * K or first.stride(1) < first.stride(-1)
    kernels = numba_kernels()
    if kernels is None:
        u = torch.from_numpy(np.random.Generator(np.random.SFC64(seed)).random(n, dtype=np.float32))
        u = u.view(order).movedim(-1, 1)
        u = (u if adjacent else u.contiguous()).to(dtype)
        return u.logit_(eps=2.0**-24)
    if n < _SERIAL_BELOW:   # the same words by NumPy (no kernel to compile for a small layer)
        u = bits_to_uniform(seeded_bits(seed, order).movedim(-1, 1), dtype)
        return (u if adjacent else u.contiguous()).logit_()
    out = np.empty(n, np.float32)
    _numba_threads(n)
    kernels["logistic"](out, B, K, n // (B * K), seed, not adjacent)
    noise = torch.from_numpy(out)
    noise = noise.view(order).movedim(-1, 1) if adjacent else noise.view(shape)
    return noise.to(dtype)


# --- eager and compiled kernels ------------------------------------------------------------------

def _eager_forward(hv, noise, tau):
    """``noise``: Logistic noise laid out as the pairs (overwritten), or None."""
    a, b = hv.select(2, 0), hv.select(2, 1)
    z = torch.sub(a, b) if noise is None else noise.add_(a).sub_(b)
    s = z.div_(tau).sigmoid_()
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


def _plain_forward(hv, noise, tau):
    """``noise``: Logistic noise or None."""
    a, b = hv.select(2, 0), hv.select(2, 1)
    z = (a - b) / tau if noise is None else (a - b + noise) / tau
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
            noise = torch.randn(2, 3, 5, generator=gen)  # depend on whether this process compiled it already
            y, s = fns["forward"](hv, noise, tau)
            fns["relaxed"](hv, torch.ones_like(hv), s, tau)
            fns["straight_through"](hv, torch.ones_like(hv), s)
            _COMPILED, _COMPILE_STATE["ok"] = fns, True
        except Exception as exc:  # no compiler, unsupported platform: fall back, say so once
            warnings.warn(f"LWTA: torch.compile is not usable here ({type(exc).__name__}: {exc}); "
                          "using the eager kernel (same numbers, slower)", RuntimeWarning, stacklevel=2)
    return _COMPILE_STATE["ok"]


def resolve_kernel(kernel: str, h: torch.Tensor) -> str:
    """The kernel that runs for ``h``: 'auto' -> 'numba' for float32 CPU tensors when numba
    imports, else 'eager'; 'numba' or 'compiled' where they cannot run -> 'eager'."""
    if kernel in ("auto", "numba"):
        usable = h.device.type == "cpu" and h.dtype == torch.float32 and numba_kernels() is not None
        return "numba" if usable else "eager"
    if kernel == "compiled" and not compiled_available():
        return "eager"
    return kernel


class PairCompetition(torch.autograd.Function):
    """U = 2 competition on the block view ``hv`` ``(B, K, 2, ...)`` by the 'eager' or 'compiled'
    kernel. ``noise``: Logistic noise ``(B, K, ...)`` (``pair_logistic``; overwritten) or None
    (deterministic); ``tau``: a 0-d tensor, learnable or not; ``keep``: a list that receives
    ``s`` when not None. Returns y with ``hv``'s shape.
    """

    @staticmethod
    def forward(ctx, hv, noise, tau, straight_through: bool, kernel: str, keep):
        if kernel == "compiled":
            y, s = _COMPILED["forward"](hv, noise, tau)
        else:
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
        if gy.stride() != hv.stride():   # in hv's layout (channels-last stays so): same-layout operations
            gy = torch.empty_like(hv).copy_(gy)
        if ctx.kernel != "compiled":
            gh, gtau = _eager_backward(hv, gy, s, tau, ctx.straight_through, tau_grad)
        elif ctx.straight_through:
            gh, gtau = _COMPILED["straight_through"](hv, gy, s), None
        else:
            gh = _COMPILED["relaxed"](hv, gy, s, tau)
            gtau = _COMPILED["tau_grad"](hv, gy, s, tau) if tau_grad else None
        return gh, None, gtau if tau_grad else None, None, None, None


# --- the numba kernel ----------------------------------------------------------------------------

def numba_kernels() -> dict | None:
    """The numba functions (compiled on their first call), or None without numba.

    ``bits(out, seed)``: the int32 words of ``seeded_bits``;
    ``logistic(out, B, K, P, seed, split)``: the noise of ``pair_logistic``, in channels-last
    order or (``split``) in C order ``(B, K, P)``;
    ``forward_split(h, y, s, B, K, P, seed, stochastic, inv_tau, want_s)``: pairs ``P``
    apart (NCHW: channels 2k and 2k+1 of a sample are two planes of ``P = H W`` values);
    ``forward_adjacent(...)``: pairs adjacent (channels-last, dense, 1 x 1 maps);
    ``backward_split`` / ``backward_adjacent(h, gy, s, gh, B, K, P, inv_tau, relaxed,
    tau_grad)`` return ``sum(g_z logit(s))`` (for the temperature's gradient) when ``tau_grad``.
    Every array is a flat float32 (or int32) view of a contiguous tensor; one compiled
    version of each function serves every shape.
    """
    if _NUMBA["off"]:
        return None
    if "kernels" in _NUMBA:
        return _NUMBA["kernels"]
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; kept optional for odd platforms
        _NUMBA["kernels"] = None
        return None
    _NUMBA["kernels"] = _build_numba(numba)
    _NUMBA["numba"] = numba
    return _NUMBA["kernels"]


@contextmanager
def without_numba():
    """Inside the block, everything runs as where numba is not installed (the fallback's
    tests and benchmark): kernel 'auto' is 'eager' and the noise comes from SFC64."""
    _NUMBA["off"] += 1
    try:
        yield
    finally:
        _NUMBA["off"] -= 1


# Plain Python functions at module level, compiled by ``_build_numba`` (which also replaces the
# helpers below by their compiled versions and ``_prange`` by numba's): numba's on-disk cache
# works for module-level functions, not for closures (their key holds the closure's objects).

_U64, _I32, _F32 = np.uint64, np.int32, np.float32
_GOLD, _M1, _M2 = _U64(_GOLDEN), _U64(_MIX1), _U64(_MIX2)
_LOG2E, _LN2 = _F32(1.4426950408889634), _F32(0.6931471805599453)
_CHUNK = 1 << 14  # pairs per parallel task (adjacent layout, words)
_prange = range   # numba.prange once numba is loaded
_HELPERS = ("_word", "_log2", "_exp2", "_mask", "_logit", "_grads", "_logistic")
_KERNELS = ("bits", "logistic", "forward_split", "forward_adjacent", "backward_split", "backward_adjacent")


def _word(key, idx):
    """Output idx + 1 of SplitMix64 started at ``key`` (uint64s)."""
    z = key + (idx + _U64(1)) * _GOLD
    z = (z ^ (z >> _U64(30))) * _M1
    z = (z ^ (z >> _U64(27))) * _M2
    return z ^ (z >> _U64(31))


def _log2(r):
    """log2 of a positive normal float32: exponent + atanh series of the mantissa in
    [sqrt(1/2), sqrt(2)) (error < 1e-7)."""
    ix = _I32(np.float32(r).view(np.int32) - _I32(0x3F3504F3))
    e = _I32(ix >> _I32(23))
    m = _I32((ix & _I32(0x7FFFFF)) + _I32(0x3F3504F3)).view(np.float32)
    t = (m - _F32(1.0)) / (m + _F32(1.0))
    t2 = t * t
    p = _F32(1 / 9) * t2 + _F32(1 / 7)
    p = p * t2 + _F32(1 / 5)
    p = p * t2 + _F32(1 / 3)
    p = p * t2 + _F32(1.0)
    return _F32(e) + t * p * _F32(2.0 * 1.4426950408889634)


def _exp2(x):
    """2^x for x clamped to [-126, 64]: 2^round(x) by the exponent bits times a degree-7
    Taylor polynomial of 2^f, |f| <= 1/2 (error < 1e-8). The upper clamp keeps the mask
    1 / (1 + 2^x) >= 2^-64 (instead of ~0): a mask near 2^-126 would make the outputs
    a s subnormal numbers, and every operation on those (here, in the max-pooling and
    the convolutions after) costs ~100 times more."""
    x = min(max(x, _F32(-126.0)), _F32(64.0))
    n = _F32(math.floor(x + _F32(0.5)))
    f = (x - n) * _LN2
    p = _F32(1 / 5040) * f + _F32(1 / 720)
    p = p * f + _F32(1 / 120)
    p = p * f + _F32(1 / 24)
    p = p * f + _F32(1 / 6)
    p = p * f + _F32(0.5)
    p = p * f + _F32(1.0)
    p = p * f + _F32(1.0)
    return p * _I32((_I32(n) + _I32(127)) << _I32(23)).view(np.float32)


def _mask(a, b, key, idx, stochastic, inv_tau):
    """s = sigmoid((a - b + logit(u)) / tau), u = (k + 1/2) / 2^23 as in ``bits_to_uniform``
    (k: the word's top 23 bits with the highest flipped): (1 - u) / u = (2^24 - 2k - 1) / (2k + 1),
    both exact in float32."""
    x = (b - a) * _LOG2E
    if stochastic:
        k = _F32(_I32(((_word(key, idx) >> _U64(41)) & _U64(0x7FFFFF)) ^ _U64(0x400000)))
        x += _log2((_F32(16777215.0) - _F32(2.0) * k) / (_F32(2.0) * k + _F32(1.0)))
    return _F32(1.0) / (_F32(1.0) + _exp2(x * inv_tau))


def _logit(s):
    s = min(max(s, _F32(1e-7)), _F32(1.0 - 1e-7))
    return _log2(s / (_F32(1.0) - s)) * _LN2


def _grads(a, b, ga, gb, m, it, relaxed):
    """(dL/da, dL/db, dL/dz) with z = (a - b + L) / tau (m (1 - m), not m - m m: m m may be subnormal)."""
    gz = (ga * a - gb * b) * (m * (_F32(1.0) - m)) if relaxed else _F32(0.0)
    c = gz * it
    return ga * m + c, gb - gb * m - c, gz


def _k_bits(out, seed):
    key = _U64(seed)
    n = out.shape[0]
    for c in _prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            out[i] = _I32(_word(key, _U64(i)) >> _U64(32))


def _logistic(z):
    """Logistic noise logit(u) = -ln 2 log2((1 - u) / u) of a word (u as in ``_mask``)."""
    k = _F32(_I32(((z >> _U64(41)) & _U64(0x7FFFFF)) ^ _U64(0x400000)))
    return -_LN2 * _log2((_F32(16777215.0) - _F32(2.0) * k) / (_F32(2.0) * k + _F32(1.0)))


def _k_logistic(out, B, K, P, seed, split):
    key = _U64(seed)
    if split:
        for r in _prange(B * K):
            base = (r // K) * P * K + r % K
            o = out[r * P:(r + 1) * P]
            for p in range(P):
                o[p] = _logistic(_word(key, _U64(base + p * K)))
    else:
        n = out.shape[0]
        for c in _prange((n + _CHUNK - 1) // _CHUNK):
            for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
                out[i] = _logistic(_word(key, _U64(i)))


def _k_forward_split(h, y, s, B, K, P, seed, stochastic, inv_tau, want_s):
    key, it = _U64(seed), _F32(inv_tau)
    for r in _prange(B * K):
        ha, hb = h[2 * r * P:(2 * r + 1) * P], h[(2 * r + 1) * P:(2 * r + 2) * P]
        ya, yb = y[2 * r * P:(2 * r + 1) * P], y[(2 * r + 1) * P:(2 * r + 2) * P]
        base = (r // K) * P * K + r % K   # the pair's number in (B, H, W, K) order: base + p K
        if want_s:
            sr = s[r * P:(r + 1) * P]
            for p in range(P):
                a, b = ha[p], hb[p]
                m = _mask(a, b, key, _U64(base + p * K), stochastic, it)
                ya[p] = a * m
                yb[p] = b - b * m
                sr[p] = m
        else:
            for p in range(P):
                a, b = ha[p], hb[p]
                m = _mask(a, b, key, _U64(base + p * K), stochastic, it)
                ya[p] = a * m
                yb[p] = b - b * m


def _k_forward_adjacent(h, y, s, B, K, P, seed, stochastic, inv_tau, want_s):
    key, it = _U64(seed), _F32(inv_tau)
    n = B * P * K
    for c in _prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        hc, yc = h[2 * lo:2 * hi], y[2 * lo:2 * hi]
        if want_s:
            sc = s[lo:hi]
            for j in range(hi - lo):
                a, b = hc[2 * j], hc[2 * j + 1]
                m = _mask(a, b, key, _U64(lo + j), stochastic, it)
                yc[2 * j] = a * m
                yc[2 * j + 1] = b - b * m
                sc[j] = m
        else:
            for j in range(hi - lo):
                a, b = hc[2 * j], hc[2 * j + 1]
                m = _mask(a, b, key, _U64(lo + j), stochastic, it)
                yc[2 * j] = a * m
                yc[2 * j + 1] = b - b * m


def _k_backward_split(h, gy, s, gh, B, K, P, inv_tau, relaxed, tau_grad):
    it = _F32(inv_tau)
    total = 0.0
    for r in _prange(B * K):
        lo, mid, hi, base = 2 * r * P, (2 * r + 1) * P, (2 * r + 2) * P, r * P
        ha, hb, ga, gb = h[lo:mid], h[mid:hi], gy[lo:mid], gy[mid:hi]
        da, db, sr = gh[lo:mid], gh[mid:hi], s[base:base + P]
        acc = _F32(0.0)
        if tau_grad:
            for p in range(P):
                da[p], db[p], gz = _grads(ha[p], hb[p], ga[p], gb[p], sr[p], it, relaxed)
                acc += gz * _logit(sr[p])
        else:
            for p in range(P):
                da[p], db[p], gz = _grads(ha[p], hb[p], ga[p], gb[p], sr[p], it, relaxed)
        total += acc
    return total


def _k_backward_adjacent(h, gy, s, gh, B, K, P, inv_tau, relaxed, tau_grad):
    it = _F32(inv_tau)
    n = B * P * K
    total = 0.0
    for c in _prange((n + _CHUNK - 1) // _CHUNK):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        hc, gc, dc, sc = h[2 * lo:2 * hi], gy[2 * lo:2 * hi], gh[2 * lo:2 * hi], s[lo:hi]
        acc = _F32(0.0)
        if tau_grad:
            for j in range(hi - lo):
                dc[2 * j], dc[2 * j + 1], gz = _grads(hc[2 * j], hc[2 * j + 1], gc[2 * j], gc[2 * j + 1],
                                                      sc[j], it, relaxed)
                acc += gz * _logit(sc[j])
        else:
            for j in range(hi - lo):
                dc[2 * j], dc[2 * j + 1], gz = _grads(hc[2 * j], hc[2 * j + 1], gc[2 * j], gc[2 * j + 1],
                                                      sc[j], it, relaxed)
        total += acc
    return total


def _build_numba(numba) -> dict:
    """Compile the kernels (lazily, on their first call; from numba's disk cache when there)."""
    # no FMA contraction nor reassociation: the vector loops and their scalar remainders compute
    # the same bits, so every layout and thread count gives the same numbers
    fast = {"nnan", "ninf", "nsz"}
    g = globals()
    g["_prange"] = numba.prange
    for name in _HELPERS:
        g[name] = numba.njit(inline="always", fastmath=fast, error_model="numpy", cache=True)(g[name])
    kernel = numba.njit(parallel=True, fastmath=fast, error_model="numpy", cache=True, nogil=True)
    return {name: kernel(g["_k_" + name]) for name in _KERNELS}


def _numba_threads(pairs: int) -> None:
    """numba's threads follow torch's setting (``torch.set_num_threads``); one for small layers."""
    nb = _NUMBA["numba"]
    n = 1 if pairs < _SERIAL_BELOW else min(torch.get_num_threads(), nb.config.NUMBA_NUM_THREADS)
    nb.set_num_threads(max(1, n))


def _pair_layout(h: torch.Tensor) -> tuple[torch.Tensor, bool, int, int, int]:
    """(h in a layout the numba kernel reads, adjacent, B, K, P): pairs adjacent in memory
    (channels-last, dense, 1 x 1 maps) or ``P = H W`` apart (NCHW)."""
    B, C = h.shape[:2]
    P = math.prod(h.shape[2:])
    if P == 1:
        return h.contiguous(), True, B, C // 2, 1
    if h.is_contiguous():
        return h, False, B, C // 2, P
    if h.is_contiguous(memory_format=torch.channels_last):
        return h, True, B, C // 2, P
    return h.contiguous(), False, B, C // 2, P


def _flat(t: torch.Tensor, adjacent: bool) -> np.ndarray:
    """The memory of ``t`` (contiguous in its layout) as a flat NumPy view (never a copy)."""
    if t.dim() == 4 and adjacent:
        t = t.permute(0, 2, 3, 1)
    return t.detach().view(-1).numpy()


def _mask_tensor(h: torch.Tensor, adjacent: bool) -> torch.Tensor:
    """An empty mask ``(B, K, ...)`` for ``h``, laid out as the kernel writes it."""
    B, C = h.shape[:2]
    if h.dim() == 4 and adjacent:
        return torch.empty(B, h.shape[2], h.shape[3], C // 2, dtype=h.dtype).permute(0, 3, 1, 2)
    return torch.empty(B, C // 2, *h.shape[2:], dtype=h.dtype)


def _numba_forward(h: torch.Tensor, seed: int | None, inv_tau: float, want_s: bool):
    kernels = numba_kernels()
    h, adjacent, B, K, P = _pair_layout(h)
    _numba_threads(B * K * P)
    y = torch.empty_like(h)
    s = _mask_tensor(h, adjacent) if want_s else torch.empty(0, dtype=h.dtype)
    fn = kernels["forward_adjacent" if adjacent else "forward_split"]
    fn(_flat(h, adjacent), _flat(y, adjacent), _flat(s, adjacent), B, K, P,
       seed or 0, seed is not None, inv_tau, want_s)
    return y, (s if want_s else None)


def _numba_backward(h, gy, s, inv_tau: float, relaxed: bool, tau_grad: bool):
    kernels = numba_kernels()
    h, adjacent, B, K, P = _pair_layout(h)
    _numba_threads(B * K * P)
    fmt = torch.channels_last if adjacent and h.dim() == 4 and P > 1 else torch.contiguous_format
    gy = gy.contiguous(memory_format=fmt)
    gh = torch.empty_like(h)
    fn = kernels["backward_adjacent" if adjacent else "backward_split"]
    total = fn(_flat(h, adjacent), _flat(gy, adjacent), _flat(s, adjacent), _flat(gh, adjacent),
               B, K, P, inv_tau, relaxed, tau_grad)
    return gh, total


class NumbaPair(torch.autograd.Function):
    """U = 2 competition on ``h`` (``(B, C)`` or ``(B, C, H, W)``, float32, CPU) by the numba
    kernels; ``seed`` None: deterministic; ``keep``: a list that receives the mask ``s``."""

    @staticmethod
    def forward(ctx, h, tau, seed, straight_through: bool, keep):
        y, s = _numba_forward(h, seed, 1.0 / float(tau), True)
        ctx.straight_through = straight_through
        ctx.save_for_backward(h, s, tau)
        if keep is not None:
            keep.append(s)
        return y

    @staticmethod
    def backward(ctx, gy):
        h, s, tau = ctx.saved_tensors
        tau_grad = ctx.needs_input_grad[1] and not ctx.straight_through
        gh, total = _numba_backward(h, gy, s, 1.0 / float(tau), not ctx.straight_through, tau_grad)
        gtau = (-total / tau.detach()).to(tau.dtype) if tau_grad else None
        return gh, gtau, None, None, None


def numba_pair(h: torch.Tensor, tau: torch.Tensor, seed: int | None, straight_through: bool,
               keep_mask: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(output, mask ``s`` or None) of the U = 2 competition by the numba kernel. Without a
    gradient to compute, one forward pass that keeps no mask unless ``keep_mask``."""
    if torch.is_grad_enabled() and (h.requires_grad or tau.requires_grad):
        keep = [] if keep_mask else None
        y = NumbaPair.apply(h, tau, seed, straight_through, keep)
        return y, (keep[0] if keep else None)
    return _numba_forward(h, seed, 1.0 / float(tau), keep_mask)


_numba_pair_eager = numba_pair


def keep_numba_out_of_compile() -> None:
    """Make :func:`numba_pair` a graph break for ``torch.compile`` (dynamo cannot trace a numba
    kernel). Called before a model is compiled (``training.fit`` with ``compute.compile``), not
    done by a ``torch.compiler.disable`` decorator, because that imports ``torch._dynamo`` (1.5 s
    on 2 CPU cores) in every process that imports the package, most of which never compile.
    Callers look the function up at call time (``lwta_kernels.numba_pair``)."""
    global numba_pair
    if numba_pair is _numba_pair_eager:
        numba_pair = torch.compiler.disable(_numba_pair_eager)


def prime_cache() -> dict[str, float]:
    """Compile every numba kernel now, into numba's disk cache (``make setup`` runs this, so
    that no run pays the compilation: 5-10 s a kernel on a small CPU, where a cached one loads in
    well under a second). Returns the seconds each first call took (kernel name -> s)."""
    if numba_kernels() is None:
        return {}
    took = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        took[name] = time.perf_counter() - t0
        return out

    gen = torch.Generator().manual_seed(0)   # never torch's global generator: a run's numbers stay put
    for fmt, name in ((torch.contiguous_format, "split"), (torch.channels_last, "adjacent")):
        h = torch.randn(2, 4, 3, 3, generator=gen).contiguous(memory_format=fmt)
        y, s = timed(f"forward_{name}", _numba_forward, h, 1, 2.0, True)
        timed(f"backward_{name}", _numba_backward, h, torch.ones_like(y), s, 2.0, True, True)
    timed("bits", seeded_bits, 1, (_SERIAL_BELOW,))   # large enough for the noise kernels
    timed("logistic", pair_logistic, torch.zeros(1, 2, 2, _SERIAL_BELOW).select(2, 0), gen)
    return took
