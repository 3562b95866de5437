"""Paper-scale training speed: images per second of ReLU and LWTA WRN-34-10 on CIFAR-sized inputs.

Every variant runs interleaved (``common.bench``): ReLU and LWTA WRN-34-k, in float32 and with
the paper profile's compute options (bf16 autocast + channels-last), for a standard training
step and for a PGD-AT step of the paper recipe (the PGD-10 examples built by
``lwta_utils.training.fit.step_inputs`` in eval mode, then ``step_loss``'s forward and backward:
fit's own code; the optimiser step, a small share, is left out). Printed: median step time,
training images per second, the paired ratio to ReLU float32 in the same repetition, the
FLOPs of one step per image (from the forward's, counted by ``torch.utils.flop_counter``), and the wall time of
the full recipe (100 epochs of 45,000 images, plus PGD-10 selection on 5,000 validation
images per epoch) projected from the measured images per second of this device. With
``--assume-tflops`` it also prints the projection for an accelerator sustaining that many
TFLOP/s on this work: an estimate, labelled as such. ``--bf16 auto`` (the default) times the bf16
variants only where bf16 is native (CUDA, or a CPU with avx512_bf16 / AMX): an emulated bf16 step
is about 12x slower than float32 and would take hours at WRN-34-10; the record says which ran.

    python benchmarks/bench_paper.py --device cpu --batch 16 --reps 3 --json results/bench_paper.json
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import bench, parse_args  # noqa: E402

from lwta_utils.config import ModelConfig, load_config  # noqa: E402
from lwta_utils.config.schema import AdversarialConfig, ComputeConfig, TrainConfig
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402
from lwta_utils.core.provenance import native_bf16, provenance  # noqa: E402
from lwta_utils.data import DATASETS  # noqa: E402
from lwta_utils.models import build_model  # noqa: E402
from lwta_utils.training.fit import step_inputs, step_loss  # noqa: E402

EPOCHS, N_TRAIN, N_VAL = 100, 45000, 5000  # the paper recipe (params/paper.yaml)


class Variant(nn.Module):
    """One WRN with its compute options and recipe; ``loss()`` is one training step's loss, computed
    by fit's own ``step_inputs`` and ``step_loss``."""

    def __init__(self, activation: str, width: int, compute: ComputeConfig, train: TrainConfig | None,
                 x: torch.Tensor, y: torch.Tensor):
        super().__init__()
        torch.manual_seed(0)
        opts = {"learn_temperature": "conv"} if activation == "lwta" else {}
        self.net = build_model(ModelConfig(arch="wrn", depth=34, widen_factor=width, activation=activation,
                                           activation_options=opts), DATASETS["cifar10"][1]).to(x.device)
        self.compute, self.train_cfg = compute, train or TrainConfig()
        if compute.channels_last:
            self.net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.y = x, y

    @property
    def adversarial(self) -> AdversarialConfig | None:
        a = self.train_cfg.adversarial
        return a if a.method != "none" else None

    def loss(self) -> torch.Tensor:
        x_adv = None
        if self.adversarial is not None:
            x_adv, _ = step_inputs(self.net, self.x, self.y, self.train_cfg, self.adversarial.eps, self.compute)
        return step_loss(self.net, self.x, x_adv, self.y, self.train_cfg, self.compute)[1]


def flops_per_image(v: Variant) -> float:
    """FLOPs of one training step per image: the forward's F counted by ``torch.utils.flop_counter``,
    3F for the training forward and backward (activation and weight gradients), 2F per attack
    step (forward and input gradient, no weight gradients)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        v.net(v.x)
    f = counter.get_total_flops() / len(v.y)
    return 3 * f + (2 * f * v.adversarial.steps if v.adversarial is not None else 0.0)


def main(argv=None) -> dict:
    def extra(p):
        p.add_argument("--batch", type=int, default=16, help="images per step (the paper: 128; CPUs: less)")
        p.add_argument("--width", type=int, default=10, help="WRN-34 widen factor (10: the paper's largest)")
        p.add_argument("--attack-steps", type=int, default=0, help="PGD steps (0: the paper profile's 10)")
        p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                       help="time the bf16 + channels-last variants (auto: where bf16 is native)")
        p.add_argument("--assume-tflops", type=float, default=0.0,
                       help="also project the recipe's wall time at this sustained TFLOP/s (an estimate)")

    a = parse_args(__doc__, argv, reps=3, extra=extra, wrn=False, batch=False)  # its own --batch
    paper = load_config("paper")
    train = next(iter(paper.models.values())).train
    if a.attack_steps:
        train = dataclasses.replace(train, adversarial=dataclasses.replace(train.adversarial, steps=a.attack_steps))
    adv = train.adversarial
    fast = paper.compute
    f32 = ComputeConfig()
    out = {"threads": torch.get_num_threads(), "batch": a.batch, "width": a.width, "attack_steps": adv.steps,
           "results": {}, **provenance()}
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        x = torch.rand(a.batch, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (a.batch,), device=dev)
        with_bf16 = a.bf16 == "on" or (a.bf16 == "auto" and (dev.type == "cuda" or native_bf16()))
        tags = (("fp32", f32), ("bf16_cl", fast)) if with_bf16 else (("fp32", f32),)
        if not with_bf16:
            print(f"{dev_name}: bf16 + channels-last not timed ("
                  + ("--bf16 off" if a.bf16 == "off" else "no native bfloat16 on this CPU: no avx512_bf16 or AMX")
                  + "): float32 only")
        out.setdefault("bf16_timed", {})[dev_name] = with_bf16
        standard = dataclasses.replace(train, adversarial=AdversarialConfig(method="none"))
        for recipe, recipe_train in (("standard", standard), ("pgd_at", train)):
            adversarial = recipe_train.adversarial if recipe == "pgd_at" else None
            variants = {f"{act}_{tag}": Variant(act, a.width, comp, recipe_train, x, y)
                        for act in ("relu", "lwta") for tag, comp in tags}
            flops = {k: flops_per_image(v) for k, v in variants.items() if k.endswith("fp32")}
            res, _ = bench(variants, lambda v: v.loss(), a.reps, dev, ref="relu_fp32")
            print(f"\nWRN-34-{a.width} {recipe} training step on {dev_name}, batch {a.batch}"
                  + (f", PGD-{adv.steps}" if adversarial else "") + f", {a.reps} interleaved repetitions:")
            for k, r in res.items():
                r["images_per_s"] = a.batch / (r["median_ms"] / 1000)
                print(f"  {k:14s} {r['median_ms']:9.1f} ms/step {r['images_per_s']:9.1f} images/s   "
                      f"x{r['ratio_to_relu_fp32']:.2f} ReLU fp32 (ratio of medians {r['ratio_of_medians']:.2f})")
            for act in ("relu", "lwta"):
                print(f"  {act}: {flops[f'{act}_fp32'] / 1e9:.1f} GFLOP per image per step"
                      + (f"; bf16+channels-last x{res[f'{act}_fp32']['median_ms'] / res[f'{act}_bf16_cl']['median_ms']:.2f}"
                         " faster" if with_bf16 else ""))
            if adversarial is not None:
                # per epoch: N_TRAIN PGD-AT images + N_VAL images under PGD (about the same work per image)
                # + N_VAL clean forwards (negligible): the recipe is about EPOCHS * (N_TRAIN + N_VAL) step-images
                work = EPOCHS * (N_TRAIN + N_VAL)
                proj = {}
                for k, r in res.items():
                    act = k.split("_")[0]
                    proj[k] = {"measured_hours": work / r["images_per_s"] / 3600,
                               "flops_total": work * flops[f"{act}_fp32"]}
                    line = f"  full recipe, {k}: {proj[k]['measured_hours']:,.1f} h at this device's speed"
                    if a.assume_tflops:
                        proj[k]["estimated_hours_at_assumed_tflops"] = (
                            proj[k]["flops_total"] / (a.assume_tflops * 1e12) / 3600)
                        line += (f"; estimate at {a.assume_tflops:g} sustained TFLOP/s: "
                                 f"{proj[k]['estimated_hours_at_assumed_tflops']:.2f} h")
                    print(line)
                res["projection"] = {"epochs": EPOCHS, "n_train": N_TRAIN, "n_val": N_VAL,
                                     "assumed_tflops": a.assume_tflops, **proj}
            res["gflop_per_image"] = {k: v / 1e9 for k, v in flops.items()}
            out["results"][f"wrn34_{a.width}_{recipe}/{dev_name}"] = res
            del variants
    if a.json:
        write_versioned(a.json, "benchmark", out)
    return out


if __name__ == "__main__":
    main()
