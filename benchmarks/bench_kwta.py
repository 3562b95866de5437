"""k-WTA versus ReLU, and our k-WTA versus the official formulation: step times side by side.

    python benchmarks/bench_kwta.py [--device cpu|cuda|all] [--reps 25] [--threads 0] [--batch 128]
        [--wrn-reps 3] [--no-wrn] [--gamma 0.2] [--json results/bench_kwta.json]

For the MNIST CNN (batch 128) and one WRN-34-10 block (160 channels, 32 x 32,
batch 128), times one training step (forward + backward) with ReLU and with
k-WTA (gamma 0.2) under each kernel of ``lwta_utils.defenses.kwta``: 'auto' (ours:
the numba sample-then-select threshold on CPU, topk(sorted=False) on CUDA),
'topk', 'scatter', and 'official' (the authors' ``topk(sorted=True)`` +
``repeat`` + float mask). Prints each step time over ReLU's, and the
official formulation's step time over ours ('official / auto'), both as
medians of per-repetition ratios (see ``common.py``). Targets (CPU): k-WTA
<= 2x ReLU for the MNIST CNN; official / ours >= 1.5.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired_ratio, parse_args, run_cases  # noqa: E402

from lwta_utils.defenses.kwta import _numba_kwta  # noqa: E402


def variants(gamma: float) -> dict:
    return {"relu": ("relu", {}),
            "kwta": ("kwta", {"gamma": gamma}),
            "kwta_topk": ("kwta", {"gamma": gamma, "kernel": "topk"}),
            "kwta_scatter": ("kwta", {"gamma": gamma, "kernel": "scatter"}),
            "kwta_official": ("kwta", {"gamma": gamma, "kernel": "official"})}


def main(argv=None) -> dict:
    a = parse_args(__doc__, argv, extra=lambda p: p.add_argument("--gamma", type=float, default=0.2,
                                                                 help="share of values k-WTA keeps"))
    gamma = a.gamma
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, gamma {gamma}, "
          f"numba kernel available: {_numba_kwta() is not None}")
    out = run_cases(a, variants(gamma), extra=lambda t: {
        "official / auto (x faster)": paired_ratio(t, "kwta_official", "kwta"),
        "official / topk (x faster)": paired_ratio(t, "kwta_official", "kwta_topk")})
    out["gamma"] = gamma
    return out


if __name__ == "__main__":
    main()
