"""Shared parts of the activation benchmarks: models per variant, interleaved timing, CLI.

Variants run interleaved, each repetition timing every variant once (in a
new random order each repetition), so that the machine's noise hits all
alike. A ratio is the median over repetitions of (one variant's step time /
another's in the same repetition), printed with the quartiles of those
per-repetition ratios (their spread); the ratio of the medians is recorded
beside it. One training step = zero_grad, forward, loss, backward (no
optimiser step), stochastic layers in phase 'train'; one inference pass =
forward and loss under no_grad, phase 'test'. A variant is
``(activation, options)`` or ``(activation, options, context)``: ``context()``
is entered around each of its steps (e.g. ``without_numba``).
"""
from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwta_utils.config import ModelConfig  # noqa: E402
from lwta_utils.core.errors import bad  # noqa: E402
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402
from lwta_utils.core.provenance import provenance  # noqa: E402
from lwta_utils.core.runtime import default_threads  # noqa: E402
from lwta_utils.core.switches import maybe_switches  # noqa: E402
from lwta_utils.data.datasets import DataInfo  # noqa: E402
from lwta_utils.defenses.registry import make_activation  # noqa: E402
from lwta_utils.models import build_model  # noqa: E402
from lwta_utils.models.wrn import PreActBlock


FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def variant_contexts(variants: dict) -> dict:
    """The context factory of every variant that declares one (see the module docstring)."""
    return {k: v[2] for k, v in variants.items() if len(v) > 2}


def mnist_models(variants: dict, device, memory_format: str = "nchw", batch: int = 128):
    """The MNIST CNN (a batch of ``batch``, 28 x 28) with each variant's activation, in ``memory_format``
    ('nchw' or 'channels_last': the weights and the batch, as ``compute.channels_last`` does)."""
    fmt = FORMATS[memory_format]
    info = DataInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,))
    x = torch.rand(batch, 1, 28, 28, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    models = {}
    for k, (act, opts, *_) in variants.items():
        torch.manual_seed(0)
        models[k] = build_model(ModelConfig(activation=act, activation_options=opts), info).to(device, memory_format=fmt)
    return models, lambda m: F.cross_entropy(m(x), y)


def wrn_block_models(variants: dict, device, memory_format: str = "nchw", batch: int = 128):
    """One WRN-34-10 block (160 -> 160 channels, 32 x 32, a batch of ``batch``)."""
    fmt = FORMATS[memory_format]
    x = torch.randn(batch, 160, 32, 32, device=device).contiguous(memory_format=fmt)
    models = {}
    for k, (act, opts, *_) in variants.items():
        torch.manual_seed(0)
        models[k] = PreActBlock(160, 160, 1, lambda c, a=act, o=opts: make_activation(a, c, "conv", **o)).to(
            device, memory_format=fmt)
    return models, lambda m: m(x).square().mean()


def paired_ratio(times: dict, num: str, den: str) -> float:
    """Median over repetitions of times[num] / times[den] in the same repetition."""
    return statistics.median(t / r for t, r in zip(times[num], times[den]))


def ratio_spread(times: dict, num: str, den: str) -> list[float]:
    """[first quartile, third quartile] of the per-repetition ratios times[num] / times[den]."""
    r = [t / d for t, d in zip(times[num], times[den])]
    if len(r) < 2:
        return [r[0], r[0]]
    q = statistics.quantiles(r, n=4, method="inclusive")
    return [q[0], q[2]]


def bench(models: dict, loss_fn, reps: int, device, ref: str = "relu", mode: str = "train",
          contexts: dict | None = None) -> tuple[dict, dict]:
    """Per variant: median time, paired ratio to ``ref`` with its quartiles, ratio of medians,
    spread of the times; and the raw times.

    mode 'train': one step = zero_grad, forward, loss, backward, stochastic layers in phase 'train';
    mode 'inference': one forward pass under no_grad in eval mode, phase 'test' (randomness as at test).
    ``contexts``: variant -> a context factory entered around each of its steps.
    """
    contexts = contexts or {}

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
    for k, m in models.items():
        m.train(mode == "train")
        with maybe_switches(m, phase=phase), contexts.get(k, contextlib.nullcontext)():
            step(m)   # warm-up: allocations, first-call work (a compiled kernel's compilation)
    times = {k: [] for k in models}
    order = list(models)
    shuffle = random.Random(0).shuffle   # a fixed sequence of orders: no variant always runs first
    for _ in range(reps):
        shuffle(order)
        for k in order:
            m = models[k]
            with maybe_switches(m, phase=phase), contexts.get(k, contextlib.nullcontext)():
                t0 = time.perf_counter()
                step(m)
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"median_ms": 1000 * med[k], f"ratio_to_{ref}": paired_ratio(times, k, ref),
                f"ratio_quartiles_to_{ref}": ratio_spread(times, k, ref),
                "ratio_of_medians": med[k] / med[ref], "spread_ms": [1000 * min(v), 1000 * max(v)]}
            for k, v in times.items()}, times


def print_results(title: str, res: dict, ref: str = "relu", width: int = 24) -> None:
    """One line per variant: median time, paired ratio to ``ref`` [quartiles], ratio of medians."""
    print(f"\n{title}:")
    for k, r in res.items():
        lo, hi = r[f"ratio_quartiles_to_{ref}"]
        print(f"  {k:{width}s} {r['median_ms']:9.1f} ms   x{r[f'ratio_to_{ref}']:.2f} ReLU "
              f"[{lo:.2f}, {hi:.2f}] (ratio of medians {r['ratio_of_medians']:.2f})")


def parse_args(doc: str, argv=None, reps: int = 25, extra=None, wrn: bool = True, batch: bool = True):
    """The shared options (the WRN block's only with ``wrn``; ``--batch`` only with ``batch``: a
    benchmark may define its own); ``extra(parser)`` may add a benchmark's own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    if extra:
        extra(p)
    p.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    p.add_argument("--reps", type=int, default=reps, help="repetitions for the MNIST CNN")
    if batch:
        p.add_argument("--batch", type=int, default=128,
                       help="inputs per timed call (128; the tests use fewer: the ratios are measured at 128)")
    if wrn:
        p.add_argument("--wrn-reps", type=int, default=3, help="repetitions for the WRN block (slow on CPU)")
        p.add_argument("--no-wrn", action="store_true", help="skip the WRN-34-10 block")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    if getattr(a, "batch", 1) < 1:
        raise bad("--batch", a.batch, "a positive number of inputs")
    torch.set_num_threads(a.threads or default_threads())
    devices = ["cpu", "cuda"] if a.device == "all" else [a.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device here: CPU only")
        devices.remove("cuda")
    a.devices = devices
    return a


def run_cases(a, variants: dict, extra=None, modes=("train",), formats=("nchw",)) -> dict:
    """Time every variant on the MNIST CNN (and the WRN block) on every device, in every mode
    ('train', 'inference') and memory format; print and return.

    Results are keyed ``case/device`` for mode 'train' in NCHW (as before), else
    ``case/device/mode/format``. ``extra(times)`` may return further named ratios per case.
    """
    out = {"threads": torch.get_num_threads(), "batch": a.batch, "results": {}, **provenance()}
    contexts = variant_contexts(variants)
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        cases = [("mnist_cnn", mnist_models, a.reps)]
        cases += [] if getattr(a, "no_wrn", True) else [("wrn34_10_block", wrn_block_models, a.wrn_reps)]
        for case, make, reps in cases:
            for fmt in formats:
                models, loss_fn = make(variants, dev, fmt, a.batch)
                for mode in modes:
                    res, times = bench(models, loss_fn, reps, dev, mode=mode, contexts=contexts)
                    what = "training step" if mode == "train" else "inference pass"
                    print_results(f"{case} on {dev_name}, {fmt}, batch {a.batch}, {what}, {reps} interleaved "
                                  f"repetitions (median time; median paired ratio [quartiles])", res)
                    if extra:
                        res["ratios"] = extra(times)
                        for k, v in res["ratios"].items():
                            print(f"  {k}: {v:.2f}")
                    key = f"{case}/{dev_name}" if (mode, fmt) == ("train", "nchw") else f"{case}/{dev_name}/{mode}/{fmt}"
                    out["results"][key] = res
    if a.json:
        write_versioned(a.json, "benchmark", out)
    return out
