"""k-Winners-Take-All (Xiao, Zhong & Zheng, ICLR 2020; REFERENCE section 2).

Per sample, the layer's ``N`` values (conv ``(B, C, H, W)``: jointly over
channels and space, ``N = C*H*W``; dense ``(B, C)``: ``N = C``) keep every
value ``>=`` the k-th largest, ``k = max(1, int(gamma * N))``, and the rest
are zeroed. The backward pass is ``grad * mask``. Deterministic.

Ties: with the threshold kernels ('auto', 'numba', 'topk', 'official') every
value equal to the k-th largest is kept, as in the authors' code, so a tie at
the threshold keeps more than k values (for real-valued pre-activations
ties have probability ~0; zeros after a ReLU-like layer can tie). The
'scatter' kernel keeps exactly k (among tied values, those ``torch.topk``
returns).

Kernels (how the threshold and mask are computed; the result is the same):

- 'official': the authors' formulation: ``topk(k, sorted=True)``, the k-th
  value ``repeat``-ed to the input's size, a float mask, autograd through
  ``mask * x``. Kept as the benchmark's reference.
- 'topk': the k-th largest from ``topk(k, sorted=False)`` under no_grad,
  broadcast with ``view``; a float mask saved for the backward (a bool mask
  would be converted to float by every multiply).
- 'scatter': ``topk`` indices ``scatter_``-ed into the mask (exactly k).
- 'numba': the k-th largest per row by a parallel sample-then-select kernel
  (a strided sample brackets the threshold, one pass counts the values
  above the bracket and collects those inside it, a partition of the
  few collected values gives the exact k-th largest; rows where the
  bracket misses fall back to a full partition); the same pass writes the
  output and the mask. CPU, float32.
- 'auto': 'numba' for float32 CPU tensors when numba imports, else 'topk'.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from lwta_utils.core.errors import bad, check_choice, check_range
from lwta_utils.defenses.registry import register_activation

KWTA_KERNELS = ("auto", "numba", "topk", "scatter", "official")


_numba_kernel = None  # compiled lazily: importing numba costs ~1 s


def _numba_kwta():
    """The numba kernel ``kwta_rows(x2d, k, out, mask)``, or None when numba is not installed.

    Per row (in parallel): the exact k-th largest value ``t`` by sample-then-
    select, then ``mask = (x >= t)`` and ``out = x * mask`` in the same pass
    while the row is still in cache.
    """
    global _numba_kernel
    if _numba_kernel is not None:
        return _numba_kernel or None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; kept optional for odd platforms
        _numba_kernel = False
        return None

    @numba.njit(parallel=True, cache=True)
    def kwta_rows(x, k, out, mask):
        B, N = x.shape
        step = max(1, N // 512)
        S = (N + step - 1) // step
        q = k / N
        margin = 4.0 * math.sqrt(S * q * (1.0 - q)) + 4.0
        i_hi = int(q * S - margin)
        i_lo = int(math.ceil(q * S + margin))
        for b in numba.prange(B):
            row = x[b]
            sample = np.empty(S, np.float32)
            for i in range(S):
                sample[i] = row[i * step]
            sample.sort()
            hi = np.float32(np.inf) if i_hi <= 0 else sample[S - i_hi]
            lo = np.float32(-np.inf) if i_lo >= S - 1 else sample[S - 1 - i_lo]
            inside = np.empty(N + 1, np.float32)
            above = 0
            c = 0
            for i in range(N):  # branch-free: one pass, count above, collect inside
                v = row[i]
                inside[c] = v
                c += (v >= lo) & (v <= hi)
                above += v > hi
            r = k - above
            if 1 <= r <= c:
                t = np.partition(inside[:c], c - r)[c - r]
            else:  # the bracket missed the k-th value (rare): full partition of the row
                t = np.partition(row.copy(), N - k)[N - k]
            o, m = out[b], mask[b]
            for i in range(N):
                keep = np.float32(row[i] >= t)
                m[i] = keep
                o[i] = row[i] * keep

    _numba_kernel = kwta_rows
    return kwta_rows


def prime_cache() -> dict[str, float]:
    """Compile the numba kernel now, into numba's disk cache (``make setup`` runs this: its first
    compilation takes about 20 s on a small CPU, where the cached kernel loads in under a second).
    Returns the seconds the first call took ({"kwta_rows": s}; empty without numba)."""
    if _numba_kwta() is None:
        return {}
    t0 = time.perf_counter()
    numba_kwta(torch.arange(8, dtype=torch.float32).view(2, 4), 2)
    return {"kwta_rows": time.perf_counter() - t0}


def resolve_kwta_kernel(kernel: str, x: torch.Tensor) -> str:
    if kernel != "auto":
        return kernel
    if x.device.type == "cpu" and x.dtype == torch.float32 and _numba_kwta() is not None:
        return "numba"
    return "topk"


def kth_largest(x2d: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of every row of ``x2d`` (shape (B, N)), as (B, 1); no gradient."""
    with torch.no_grad():
        return x2d.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)


def numba_kwta(x2d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, float mask) of k-WTA over the rows of a float32 CPU tensor, by the numba kernel."""
    kernel = _numba_kwta()
    if kernel is None:
        raise bad("kernel", "numba", "numba is not installed; use 'topk' or 'auto'")
    if x2d.device.type != "cpu" or x2d.dtype != torch.float32:
        raise bad("kernel", "numba", f"needs float32 CPU tensors (got {x2d.dtype} on {x2d.device})")
    x2d = x2d.detach().contiguous()
    out, mask = torch.empty_like(x2d), torch.empty_like(x2d)
    kernel(x2d.numpy(), k, out.numpy(), mask.numpy())
    return out, mask


class _KWTAMask(torch.autograd.Function):
    """out = x * mask (mask computed outside, no gradient; ``out`` given when already
    computed by the kernel); backward = grad * mask."""

    @staticmethod
    def forward(ctx, x, mask, out=None):
        ctx.save_for_backward(mask)
        return x * mask if out is None else out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None


def kwta(x: torch.Tensor, gamma: float, kernel: str = "auto") -> torch.Tensor:
    """Keep the top ``gamma`` share of each sample's values (all dims but the first)."""
    B = x.shape[0]
    flat = x.reshape(B, -1)
    N = flat.shape[1]
    k = max(1, int(gamma * N))
    kernel = resolve_kwta_kernel(kernel, x)
    if kernel == "official":  # the authors' code, verbatim in spirit: sorted topk + repeat + float mask
        topval = flat.topk(k, dim=1)[0][:, -1]
        topval = topval.repeat(N, 1).permute(1, 0).view_as(x)
        comp = (x >= topval).to(x)
        return comp * x
    if kernel == "numba":
        out, mask = numba_kwta(flat, k)
        return _KWTAMask.apply(x, mask.view_as(x), out.view_as(x))
    with torch.no_grad():
        if kernel == "scatter":
            idx = flat.topk(k, dim=1, sorted=False).indices
            mask = torch.zeros_like(flat).scatter_(1, idx, 1.0).view_as(x)
        else:
            mask = (x >= kth_largest(flat, k).view(B, *([1] * (x.ndim - 1)))).to(x.dtype)
    return _KWTAMask.apply(x, mask)


@register_activation("kwta")
class KWTA(nn.Module):
    """k-WTA activation: keeps the top ``gamma`` share of each sample's values.

    num_features / kind: as every activation factory (k-WTA does not need them:
        k is computed from the input's size, so one layer serves any shape).
    gamma: share of values kept, in (0, 1] (0.1 or 0.2 in the paper);
        changed during training by the incremental schedule
        (``train.gamma_schedule``).
    kernel: see the module docstring.
    """

    def __init__(self, num_features: int = 0, kind: str = "conv", gamma: float = 0.2, kernel: str = "auto"):
        super().__init__()
        check_range("gamma", gamma, 1e-6, 1.0)
        check_choice("kernel", kernel, KWTA_KERNELS)
        self.gamma, self.kernel, self.kind = float(gamma), kernel, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kwta(x, self.gamma, self.kernel)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma:g}, kernel={self.kernel!r}"


def kwta_layers(model: nn.Module) -> list[KWTA]:
    return [m for m in model.modules() if isinstance(m, KWTA)]


def set_gamma(model: nn.Module, gamma: float) -> None:
    """Set ``gamma`` on every k-WTA layer of ``model``."""
    check_range("gamma", gamma, 1e-6, 1.0)
    for m in kwta_layers(model):
        m.gamma = float(gamma)


def scheduled_gamma(start: float, end: float, step: float, every_epochs: int, epoch: int) -> float:
    """The incremental schedule (REFERENCE section 2): from ``start``, lower gamma
    by ``step`` every ``every_epochs`` epochs, never below ``end``; ``epoch`` is 0-based."""
    return max(end, start - step * (epoch // every_epochs))


def schedule_epochs(start: float, end: float, step: float, every_epochs: int) -> int:
    """Epochs until the schedule reaches ``end`` (the first epoch trained at ``end``, 0-based)."""
    return every_epochs * math.ceil(round((start - end) / step, 9))

