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

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwta_utils.data import DataInfo  # noqa: E402
from lwta_utils.layers import make_activation, register_activation  # noqa: E402
from lwta_utils.lwta_kernels import compiled_available  # noqa: E402
from lwta_utils.models import MnistCNN, PreActBlock  # noqa: E402
from lwta_utils.results import provenance  # noqa: E402
from lwta_utils.switches import maybe_switches  # noqa: E402


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


def mnist_models(device):
    info = DataInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,))
    x = torch.rand(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    models = {k: MnistCNN(info, act, activation_options=opts).to(device) for k, (act, opts) in VARIANTS.items()}
    return models, lambda m: F.cross_entropy(m(x), y)


def wrn_block_models(device):
    x = torch.randn(128, 160, 32, 32, device=device)
    models = {}
    for k, (act, opts) in VARIANTS.items():
        torch.manual_seed(0)
        models[k] = PreActBlock(160, 160, 1, lambda c, a=act, o=opts: make_activation(a, c, "conv", **o)).to(device)
    return models, lambda m: m(x).square().mean()


def bench(models: dict, loss_fn, reps: int, device) -> dict:
    def step(m):
        m.zero_grad(set_to_none=True)
        loss_fn(m).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for m in models.values():
        with maybe_switches(m, phase="train"):
            for _ in range(2):
                step(m)
    times = {k: [] for k in models}
    for _ in range(reps):
        for k, m in models.items():
            with maybe_switches(m, phase="train"):
                t0 = time.perf_counter()
                step(m)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    # paired: each repetition's time over ReLU's time in the same repetition (robust to drift)
    paired = {k: statistics.median(t / r for t, r in zip(v, times["relu"])) for k, v in times.items()}
    return {k: {"median_ms": 1000 * med[k], "ratio_to_relu": paired[k], "ratio_of_medians": med[k] / med["relu"],
                "spread_ms": [1000 * min(v), 1000 * max(v)]} for k, v in times.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    p.add_argument("--reps", type=int, default=25, help="repetitions for the MNIST CNN")
    p.add_argument("--wrn-reps", type=int, default=3, help="repetitions for the WRN block (slow on CPU)")
    p.add_argument("--no-wrn", action="store_true", help="skip the WRN-34-10 block")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    import os

    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    devices = ["cpu", "cuda"] if a.device == "all" else [a.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device here: CPU only")
        devices.remove("cuda")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"torch.compile usable: {compiled_available()}")
    out = {"threads": torch.get_num_threads(), "results": {}, **provenance()}
    for dev_name in devices:
        dev = torch.device(dev_name)
        cases = [("mnist_cnn", mnist_models, a.reps)] + ([] if a.no_wrn else [("wrn34_10_block", wrn_block_models, a.wrn_reps)])
        for case, make, reps in cases:
            models, loss_fn = make(dev)
            res = bench(models, loss_fn, reps, dev)
            out["results"][f"{case}/{dev_name}"] = res
            print(f"\n{case} on {dev_name}, batch 128, {reps} interleaved repetitions (median step time):")
            for k, r in res.items():
                print(f"  {k:24s} {r['median_ms']:9.1f} ms   x{r['ratio_to_relu']:.2f} ReLU "
                      f"(ratio of medians {r['ratio_of_medians']:.2f})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
