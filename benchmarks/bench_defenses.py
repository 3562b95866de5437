"""Compute overhead of every defense of a profile relative to its ReLU baseline, side by side.

    python benchmarks/bench_defenses.py [--profile default] [--reps 15] [--threads 0]
        [--device cpu|cuda|all] [--json results/bench_defenses.json]

Builds every model of the profile (its architecture, activation, PNI, WCA head, IBP; random
weights) plus k-WTA with the authors' formulation (``kernel: official``), and times on a
batch of 128 inputs of the profile's data set, interleaved (see ``common.py``):
  * one training step: forward + loss + backward, randomness on, phase 'train';
  * one inference pass: forward under no_grad in eval mode, phase 'test' (sampling on).
Prints each model's time over the reference model's (``--ref``, default ``relu_std``) as the
median of per-repetition ratios. The cost of adversarial training itself (PGD steps per
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
from common import bench, parse_args  # noqa: E402

from lwta_utils.config import load_config  # noqa: E402
from lwta_utils.core.errors import bad  # noqa: E402
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402
from lwta_utils.core.provenance import provenance  # noqa: E402
from lwta_utils.data import DATASETS  # noqa: E402
from lwta_utils.models import build_model  # noqa: E402

OFFICIAL_KWTA = "kwta_official_kernel"


def profile_models(profile: str, device, ref: str):
    """The profile's models (and k-WTA with the official kernel) on ``device``, and the batch loss."""
    cfg = load_config(profile)
    if ref not in cfg.models:
        raise bad("--ref", ref, f"choose a model of profile {profile!r}: {', '.join(cfg.models)}")
    info = DATASETS[cfg.data.name][1]
    specs = dict(cfg.models)
    kwta = [n for n, m in cfg.models.items() if m.activation == "kwta"]
    if kwta:
        m = specs[kwta[0]]
        specs[OFFICIAL_KWTA] = dataclasses.replace(m, activation_options={**m.activation_options, "kernel": "official"},
                                                   label=f"{cfg.label(kwta[0])}, official formulation")
    models = {}
    for name, m in specs.items():
        torch.manual_seed(0)
        models[name] = build_model(m, info).to(device)
    labels = {n: (s.label or n) for n, s in specs.items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(128, info.in_channels, info.image_size, info.image_size, generator=gen).to(device)
    y = torch.randint(0, info.num_classes, (128,), generator=gen).to(device)
    return cfg, models, labels, (lambda mod: F.cross_entropy(mod(x), y))


def main(argv=None) -> dict:
    def extra(p):
        p.add_argument("--profile", default="default", help="a file in params/")
        p.add_argument("--ref", default="relu_std", help="the reference (ReLU) model of the profile")

    a = parse_args(__doc__, argv, reps=15, extra=extra, wrn=False)
    out = {"threads": torch.get_num_threads(), "profile": a.profile, "reference": a.ref, "batch": 128,
           "results": {}, **provenance()}
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        cfg, models, labels, loss_fn = profile_models(a.profile, dev, a.ref)
        case = {}
        for mode in ("train", "inference"):
            res, _ = bench(models, loss_fn, a.reps, dev, ref=a.ref, mode=mode)
            what = "training step (forward + backward)" if mode == "train" else "inference pass (no grad)"
            print(f"\n{a.profile} models on {dev_name}, batch 128, {a.reps} interleaved repetitions, {what}:")
            for k, r in res.items():
                print(f"  {k:28s} {r['median_ms']:9.1f} ms   x{r[f'ratio_to_{a.ref}']:.2f} ReLU "
                      f"(ratio of medians {r['ratio_of_medians']:.2f})")
            case[mode] = res
        case["labels"] = labels
        out["results"][dev_name] = case
    if a.json:
        write_versioned(a.json, "benchmark", out)
    return out


if __name__ == "__main__":
    main()
