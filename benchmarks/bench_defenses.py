"""Compute overhead of every defense of a profile relative to its ReLU baseline, side by side.

    python benchmarks/bench_defenses.py [--profile default] [--reps 15] [--threads 0] [--batch 128]
        [--formats nchw,channels_last] [--device cpu|cuda|all] [--json results/bench_defenses.json]

Builds every model of the profile (its architecture, activation, PNI, WCA head, IBP; random
weights) plus k-WTA with the authors' formulation (``kernel: official``) and the plain LWTA
model with its fallback kernels ('eager': plain torch operations; and the same where numba is
not installed), and times on a batch of 128 inputs of the profile's data set, interleaved (see
``common.py``), in each memory format (NCHW; channels-last: the weights and the batch, as
``compute.channels_last`` does):
  * one training step: forward + loss + backward, randomness on, phase 'train';
  * one inference pass: forward under no_grad in eval mode, phase 'test' (sampling on).
Prints each model's time over the reference model's (``--ref``, default ``relu_std``) as the
median of per-repetition ratios with their quartiles. The JSON keeps NCHW under the device's
name (``results["cpu"]``, which the report's overhead table reads) and channels-last under
``results["cpu/channels_last"]``. The cost of adversarial training itself (PGD steps per
batch) is not in a step: the report reads it from the training records (wall time per epoch).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import FORMATS, bench, parse_args, print_results  # noqa: E402

from lwta_utils.config import load_config  # noqa: E402
from lwta_utils.core.errors import bad  # noqa: E402
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402
from lwta_utils.core.provenance import provenance  # noqa: E402
from lwta_utils.data import DATASETS  # noqa: E402
from lwta_utils.defenses.lwta_kernels import without_numba  # noqa: E402
from lwta_utils.models import build_model  # noqa: E402

OFFICIAL_KWTA = "kwta_official_kernel"
LWTA_FALLBACKS = {"lwta_eager_kernel": ("eager fallback kernel", None),       # name -> (label, context)
                  "lwta_eager_no_numba": ("eager fallback kernel, no numba", without_numba)}


def profile_models(profile: str, device, ref: str, memory_format: str = "nchw", batch: int = 128):
    """The profile's models (and the benchmark-only variants) on ``device`` in ``memory_format``,
    their labels, the batch loss, and the context of each variant that needs one."""
    cfg = load_config(profile)
    if ref not in cfg.models:
        raise bad("--ref", ref, f"choose a model of profile {profile!r}: {', '.join(cfg.models)}")
    info = DATASETS[cfg.data.name][1]
    specs = dict(cfg.models)
    contexts = {}
    kwta = [n for n, m in cfg.models.items() if m.activation == "kwta"]
    if kwta:
        m = specs[kwta[0]]
        specs[OFFICIAL_KWTA] = dataclasses.replace(m, activation_options={**m.activation_options, "kernel": "official"},
                                                   label=f"{cfg.label(kwta[0])}, official formulation")
    lwta = [n for n, m in cfg.models.items() if m.activation == "lwta" and not m.ibp and m.pni == "none"]
    if lwta:
        m = specs[lwta[0]]
        for name, (what, context) in LWTA_FALLBACKS.items():
            specs[name] = dataclasses.replace(m, activation_options={**m.activation_options, "kernel": "eager"},
                                              label=f"{cfg.label(lwta[0])}, {what}")
            if context:
                contexts[name] = context
    fmt = FORMATS[memory_format]
    models = {}
    for name, m in specs.items():
        torch.manual_seed(0)
        models[name] = build_model(m, info).to(device, memory_format=fmt)
    labels = {n: (s.label or n) for n, s in specs.items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, info.in_channels, info.image_size, info.image_size, generator=gen).to(device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, info.num_classes, (batch,), generator=gen).to(device)
    return cfg, models, labels, (lambda mod: F.cross_entropy(mod(x), y)), contexts


def main(argv=None) -> dict:
    def extra(p):
        p.add_argument("--profile", default="default", help="a file in params/")
        p.add_argument("--ref", default="relu_std", help="the reference (ReLU) model of the profile")
        p.add_argument("--formats", default="nchw,channels_last",
                       help="memory formats, comma-separated (nchw, channels_last)")

    a = parse_args(__doc__, argv, reps=15, extra=extra, wrn=False)
    formats = [f.strip() for f in a.formats.split(",") if f.strip()]
    for f in formats:
        if f not in FORMATS:
            raise bad("--formats", f, f"choose among {', '.join(FORMATS)}")
    out = {"threads": torch.get_num_threads(), "profile": a.profile, "reference": a.ref, "batch": a.batch,
           "results": {}, **provenance()}
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        for fmt in formats:
            _, models, labels, loss_fn, contexts = profile_models(a.profile, dev, a.ref, fmt, a.batch)
            case = {}
            for mode in ("train", "inference"):
                res, _ = bench(models, loss_fn, a.reps, dev, ref=a.ref, mode=mode, contexts=contexts)
                what = "training step (forward + backward)" if mode == "train" else "inference pass (no grad)"
                print_results(f"{a.profile} models on {dev_name}, {fmt}, batch {a.batch}, {a.reps} interleaved "
                              f"repetitions, {what} (median time; median paired ratio [quartiles])", res, ref=a.ref,
                              width=28)
                case[mode] = res
            case["labels"], case["memory_format"] = labels, fmt
            out["results"][dev_name if fmt == "nchw" else f"{dev_name}/{fmt}"] = case
    if a.json:
        write_versioned(a.json, "benchmark", out)
    return out


if __name__ == "__main__":
    main()
