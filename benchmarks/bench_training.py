"""The PGD adversarial-training step, measured side by side in one run: the inner attack with the
parameters' gradients switched off (as ``fit`` runs it) against on (as it ran before).

    python benchmarks/bench_training.py [--device cpu|cuda|all] [--reps 30] [--threads 0] [--batch 32]
        [--steps 7] [--format channels_last|nchw] [--json results/bench_training.json]

One step as ``lwta_utils.training.fit`` takes it for the default profile's PGD-AT models: the
adversarial batch from ``training_inputs`` (Linf PGD, eps 0.3, step 0.06, 7 steps, random start,
the model in eval mode), then forward, cross-entropy and backward on it (stochastic layers in phase
'train'; no optimiser step), on the MNIST CNN with ReLU and with LWTA (random weights, batch 32, the
channels-last format of ``compute.channels_last``). 'grads_on' runs the same step with the inner
attack's parameters still requiring gradients: the autograd engine then computes the same input
gradient, but ``core.conv.Conv2d`` (the one-channel first layer) cannot take its input-gradient
path, which it takes only where no parameter asks for a gradient. Variants run interleaved; a ratio
is the median over repetitions of (one's time / the other's in the same repetition), with quartiles.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FORMATS, bench, paired_ratio, parse_args, print_results, provenance, ratio_spread  # noqa: E402

from lwta_utils.config import AdversarialConfig, ModelConfig  # noqa: E402
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402
from lwta_utils.data.datasets import DataInfo  # noqa: E402
from lwta_utils.models import build_model  # noqa: E402
from lwta_utils.training import inputs  # noqa: E402

ACTIVATIONS = ("relu", "lwta")


def grads_on():
    """The inner attack as before: the parameters keep requiring gradients."""
    return mock.patch.object(inputs, "input_grads_only", lambda model: contextlib.nullcontext(model))


def options(p) -> None:
    p.add_argument("--batch", type=int, default=32, help="inputs per step (32: the default profile's PGD-AT batch)")
    p.add_argument("--steps", type=int, default=7, help="PGD steps of the inner attack")
    p.add_argument("--format", default="channels_last", choices=sorted(FORMATS), help="memory format")


def main(argv=None) -> dict:
    a = parse_args(__doc__, argv, reps=30, extra=options, wrn=False, batch=False)
    adv = AdversarialConfig(method="pgd", eps=0.3, step_size=0.06, steps=a.steps, random_start=True)
    info = DataInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,))
    fmt = FORMATS[a.format]
    out = {"threads": torch.get_num_threads(), "batch": a.batch, "steps": a.steps, "format": a.format,
           "results": {}, **provenance()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        x = torch.rand(a.batch, 1, 28, 28, device=dev).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (a.batch,), device=dev)
        gen = torch.Generator(dev).manual_seed(0)
        models, contexts = {}, {}
        for act in ACTIVATIONS:
            for k in (act, f"{act}_grads_on"):
                torch.manual_seed(0)
                models[k] = build_model(ModelConfig(activation=act), info).to(dev, memory_format=fmt)
            contexts[f"{act}_grads_on"] = grads_on

        def loss_fn(m):
            x_adv, _ = inputs.training_inputs(m, x, y, adv, adv.eps, gen)
            return F.cross_entropy(m(x_adv), y)

        res, times = bench(models, loss_fn, a.reps, dev, mode="train", contexts=contexts)
        print_results(f"PGD-AT step on {dev_name}, MNIST CNN, {a.format}, batch {a.batch}, PGD-{a.steps} inside, "
                      f"{a.reps} interleaved repetitions (median time; median paired ratio [quartiles])", res)
        res["ratios"] = {}
        for act in ACTIVATIONS:
            key = f"{act}: grads off / on"
            res["ratios"][key] = paired_ratio(times, act, f"{act}_grads_on")
            res["ratios"][f"{key} quartiles"] = ratio_spread(times, act, f"{act}_grads_on")
            lo, hi = res["ratios"][f"{key} quartiles"]
            print(f"  {key}: {res['ratios'][key]:.2f} [{lo:.2f}, {hi:.2f}]")
        out["results"][f"mnist_cnn/{dev_name}/pgd_at_step/{a.format}"] = res
    if a.json:
        write_versioned(a.json, "benchmark", out)
    return out


if __name__ == "__main__":
    main()
