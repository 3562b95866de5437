"""Accuracy, clean and under attack, as records with intervals.

``eval_mode`` puts a model in eval mode for a block and restores the mode it
found; attacks and evaluation never leave a model changed.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .attacks import attack_params, run_attack
from .results import Record, make_draw_record
from .switches import get_switches


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every submodule's previous mode restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    dev = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    return (predict_logits(model, x, batch_size).argmax(1) == y.cpu()).float().mean().item()


def is_stochastic(model: nn.Module) -> bool:
    """Whether some layer of ``model`` draws fresh randomness on every forward pass now."""
    return any(v.get("stochastic", False) for _, v in get_switches(model))


def draw_logits(model: nn.Module, x: torch.Tensor, draws: int, batch_size: int = 500) -> torch.Tensor:
    """Logits of ``draws`` forward passes, shape (draws, N, classes)."""
    return torch.stack([predict_logits(model, x, batch_size) for _ in range(draws)])


def draw_summary(pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy over the draws of (draws, N) predictions: mean, sd and worst of draws (the share of
    inputs classified correctly in every draw), and the share of inputs whose prediction changes."""
    correct = (pred == y).float()
    per_draw = correct.mean(1).numpy()
    return {"acc_mean": float(per_draw.mean()), "acc_sd": float(per_draw.std(ddof=1)),
            "acc_min": float(per_draw.min()), "acc_max": float(per_draw.max()),
            "acc_worst_of_draws": float(correct.min(0).values.mean()),
            "share_changing": float((pred != pred[0]).any(0).float().mean())}


def mean_true_class_probs(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """True-class probability per example, averaged over the draws of (draws, N, classes) logits."""
    return logits.softmax(2).mean(0).gather(1, y.view(-1, 1)).squeeze(1).numpy()


def attack_batched(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                   generator: torch.Generator | None = None, **params) -> torch.Tensor:
    """Run attack ``name`` over ``x`` in batches on the model's device; returns x_adv on the CPU."""
    dev = next(model.parameters()).device
    if "generator" in attack_params(name, {"generator": None}):
        params["generator"] = generator
    out = [run_attack(name, model, x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev), **params).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list, *, batch_size: int,
                   seed: int, meta: dict, draws: int = 1, progress: bool = True
                   ) -> tuple[list[Record], dict[str, np.ndarray]]:
    """Clean accuracy, then every attack at every eps, in eval mode.

    ``attacks`` holds AttackConfig objects; ``meta`` the record fields that
    describe the model (model, label, arch, activation, training, split,
    dataset, profile). A model with stochastic layers is evaluated with
    ``draws`` forward passes per input (each attack itself runs once, with
    its own draws). Returns the records and, per (attack, eps), the
    true-class probability of every example, averaged over draws (for the
    distribution figures).
    """
    records, probs = [], {}
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the stochastic layers' draws
    stochastic = is_stochastic(model)
    n_draws = draws if stochastic else 1
    with eval_mode(model):
        t0 = time.perf_counter()
        logits = draw_logits(model, x, n_draws, batch_size)
        records.append(make_draw_record((logits.argmax(2) == y).numpy(), attack="none", eps=0.0, steps=0,
                                        step_size=0.0, restarts=0, eot_samples=1, seed=seed, stochastic=stochastic,
                                        wall_time_s=time.perf_counter() - t0, **meta))
        probs["none@0"] = mean_true_class_probs(logits, y)
        for atk in attacks:
            for eps in atk.eps:
                params = attack_params(atk.name, {"eps": eps, "steps": atk.steps, "step_size": atk.step_size,
                                                  "restarts": atk.restarts, "random_start": atk.random_start,
                                                  "c": atk.c, "kappa": atk.kappa})
                t0 = time.perf_counter()
                x_adv = attack_batched(model, atk.name, x, y, batch_size, gen, **params)
                logits = draw_logits(model, x_adv, n_draws, batch_size)
                wall = time.perf_counter() - t0
                rec = make_draw_record((logits.argmax(2) == y).numpy(), attack=atk.name, eps=eps,
                                       steps=params.get("steps", 1), step_size=params.get("step_size", eps),
                                       restarts=params.get("restarts", 1), eot_samples=params.get("eot_samples", 1),
                                       seed=seed, stochastic=stochastic, wall_time_s=wall,
                                       attack_params=params, **meta)
                records.append(rec)
                probs[f"{atk.name}@{eps:g}"] = mean_true_class_probs(logits, y)
                if progress:
                    spread = f" sd {rec.accuracy_sd:.3f} worst {rec.worst_accuracy:.3f}" if stochastic else ""
                    print(f"  {meta['model']:>16s} {atk.name:>9s} eps {eps:<5g} acc {rec.accuracy:.3f} "
                          f"[{rec.ci_low:.3f}, {rec.ci_high:.3f}]{spread} ({wall:.1f}s)", flush=True)
    return records, probs
