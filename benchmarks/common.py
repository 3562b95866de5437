"""Shared parts of the activation benchmarks: models per variant, interleaved timing, CLI.

Variants run interleaved, each repetition timing every variant once, so that
the machine's noise hits all alike. A ratio is the median over repetitions
of (one variant's step time / another's in the same repetition); the ratio
of the medians is printed beside it. One step = zero_grad, forward, loss,
backward (no optimiser step). Stochastic layers are in phase 'train'.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwta_utils.config import ModelConfig  # noqa: E402
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402
from lwta_utils.core.provenance import provenance  # noqa: E402
from lwta_utils.core.switches import maybe_switches  # noqa: E402
from lwta_utils.data.datasets import DataInfo  # noqa: E402
from lwta_utils.defenses.registry import make_activation  # noqa: E402
from lwta_utils.models import build_model  # noqa: E402
from lwta_utils.models.wrn import PreActBlock


def mnist_models(variants: dict, device):
    """The MNIST CNN (batch 128, 28 x 28) with each variant's activation."""
    info = DataInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,))
    x = torch.rand(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    models = {}
    for k, (act, opts) in variants.items():
        torch.manual_seed(0)
        models[k] = build_model(ModelConfig(activation=act, activation_options=opts), info).to(device)
    return models, lambda m: F.cross_entropy(m(x), y)


def wrn_block_models(variants: dict, device):
    """One WRN-34-10 block (160 -> 160 channels, 32 x 32, batch 128)."""
    x = torch.randn(128, 160, 32, 32, device=device)
    models = {}
    for k, (act, opts) in variants.items():
        torch.manual_seed(0)
        models[k] = PreActBlock(160, 160, 1, lambda c, a=act, o=opts: make_activation(a, c, "conv", **o)).to(device)
    return models, lambda m: m(x).square().mean()


def paired_ratio(times: dict, num: str, den: str) -> float:
    """Median over repetitions of times[num] / times[den] in the same repetition."""
    return statistics.median(t / r for t, r in zip(times[num], times[den]))


def bench(models: dict, loss_fn, reps: int, device, ref: str = "relu", mode: str = "train") -> tuple[dict, dict]:
    """Per variant: median time, paired ratio to ``ref``, ratio of medians, spread; and the raw times.

    mode 'train': one step = zero_grad, forward, loss, backward, stochastic layers in phase 'train';
    mode 'inference': one forward pass under no_grad in eval mode, phase 'test' (randomness as at test).
    """
    def step(m):
        if mode == "train":
            m.zero_grad(set_to_none=True)
            loss_fn(m).backward()
        else:
            with torch.no_grad():
                loss_fn(m)
        if device.type == "cuda":
            torch.cuda.synchronize()

    phase = "train" if mode == "train" else "test"
    for m in models.values():
        m.train(mode == "train")
        with maybe_switches(m, phase=phase):
            for _ in range(2):
                step(m)
    times = {k: [] for k in models}
    for _ in range(reps):
        for k, m in models.items():
            with maybe_switches(m, phase=phase):
                t0 = time.perf_counter()
                step(m)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"median_ms": 1000 * med[k], f"ratio_to_{ref}": paired_ratio(times, k, ref),
                "ratio_of_medians": med[k] / med[ref], "spread_ms": [1000 * min(v), 1000 * max(v)]}
            for k, v in times.items()}, times


def parse_args(doc: str, argv=None, reps: int = 25, extra=None, wrn: bool = True):
    """The shared options (the WRN block's only with ``wrn``); ``extra(parser)`` may add a benchmark's own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    if extra:
        extra(p)
    p.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    p.add_argument("--reps", type=int, default=reps, help="repetitions for the MNIST CNN")
    if wrn:
        p.add_argument("--wrn-reps", type=int, default=3, help="repetitions for the WRN block (slow on CPU)")
        p.add_argument("--no-wrn", action="store_true", help="skip the WRN-34-10 block")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    devices = ["cpu", "cuda"] if a.device == "all" else [a.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device here: CPU only")
        devices.remove("cuda")
    a.devices = devices
    return a


def run_cases(a, variants: dict, extra=None) -> dict:
    """Time every variant on the MNIST CNN (and the WRN block) on every device; print and return.

    ``extra(times)`` may return further named ratios per case (printed and recorded).
    """
    out = {"threads": torch.get_num_threads(), "results": {}, **provenance()}
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        cases = [("mnist_cnn", mnist_models, a.reps)]
        cases += [] if a.no_wrn else [("wrn34_10_block", wrn_block_models, a.wrn_reps)]
        for case, make, reps in cases:
            models, loss_fn = make(variants, dev)
            res, times = bench(models, loss_fn, reps, dev)
            print(f"\n{case} on {dev_name}, batch 128, {reps} interleaved repetitions (median step time):")
            for k, r in res.items():
                print(f"  {k:24s} {r['median_ms']:9.1f} ms   x{r['ratio_to_relu']:.2f} ReLU "
                      f"(ratio of medians {r['ratio_of_medians']:.2f})")
            if extra:
                res["ratios"] = extra(times)
                for k, v in res["ratios"].items():
                    print(f"  {k}: {v:.2f}")
            out["results"][f"{case}/{dev_name}"] = res
    if a.json:
        write_versioned(a.json, "benchmark", out)
    return out
