"""LWTA versus ReLU: forward + backward step time, measured side by side in one run.

    python benchmarks/bench_lwta.py [--device cpu|cuda|all] [--reps 15] [--threads 0]
        [--wrn-reps 3] [--no-wrn] [--json results/bench_lwta.json]

For the MNIST CNN (batch 128, 28 x 28) and for one WRN-34-10 block
(160 -> 160 channels, 32 x 32, batch 128), times one training step
(zero_grad, forward, cross-entropy or sum, backward; no optimiser step) for:
ReLU; LWTA with each kernel ('auto', 'eager', 'generic'); and a direct
implementation with ``F.gumbel_softmax`` (the reference point of the issue).
Variants run interleaved, each repetition timing every variant once, so
that the machine's noise hits all alike. The printed ratio is the median over
repetitions of (variant's step time / ReLU's step time in the same
repetition); the ratio of the medians is printed beside it. LWTA layers are in phase
'train' (temperature 0.67, sampling on), as in training.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse_args, run_cases  # noqa: E402

from lwta_utils.defenses.lwta_kernels import compiled_available  # noqa: E402
from lwta_utils.defenses.registry import register_activation  # noqa: E402


class DirectGumbelLWTA(nn.Module):
    """The straightforward version: F.gumbel_softmax over blocks of 2 (reference only)."""

    def __init__(self, num_features: int, kind: str):
        super().__init__()
        self.U = 2

    def forward(self, h):
        hv = h.view(h.shape[0], h.shape[1] // self.U, self.U, *h.shape[2:])
        return (hv * F.gumbel_softmax(hv, tau=0.67, hard=False, dim=2)).view_as(h)


register_activation("lwta_direct_gumbel")(lambda n, kind: DirectGumbelLWTA(n, kind))

VARIANTS = {  # name -> (activation, options)
    "relu": ("relu", {}),
    "lwta": ("lwta", {}),
    "lwta_eager": ("lwta", {"kernel": "eager"}),
    "lwta_generic": ("lwta", {"kernel": "generic"}),
    "direct_gumbel_softmax": ("lwta_direct_gumbel", {}),
}


def main(argv=None) -> dict:
    a = parse_args(__doc__, argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"torch.compile usable: {compiled_available()}")
    return run_cases(a, VARIANTS)


if __name__ == "__main__":
    main()
