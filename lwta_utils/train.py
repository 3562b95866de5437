"""One ``fit()`` for every training variant, with model selection on validation.

Variants are selected by configuration, never by copies of the loop:
standard training (``adversarial.method: none``) and Madry PGD adversarial
training (``pgd``: cross-entropy on PGD examples only, built with the model
in eval mode and stochastic layers in phase 'test', as in the TRADES and
LWTA code); loss 'ce' or 'elbo' (cross-entropy + KL / N_train, the IBP
variant). Stochastic layers are switched to phase 'train' for the training
forward pass only, explicitly (``lwta_utils.switches``), never through
``model.train()``. The checkpoint kept is the
epoch with the best validation metric (``select_metric``); the test split is
never looked at here.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm  # text bars: no ipywidgets needed in Jupyter or papermill

from .attacks import pgd_linf
from .config import ADV_METHODS, TrainConfig
from .data import Splits, augment_batch
from .evaluate import accuracy, eval_mode
from .errors import bad
from .ibp import has_kl_terms, model_kl
from .switches import maybe_switches



@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    select_metric: str = "clean"
    wall_time_s: float = 0.0


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def lr_factor(t: TrainConfig, epoch_float: float) -> float:
    """Learning-rate multiplier at a (fractional) epoch."""
    epoch = int(epoch_float)
    if t.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch_float / max(t.epochs, 1), 1.0)))
    if t.schedule == "multistep":
        return t.lr_gamma ** sum(epoch >= m for m in t.milestones)
    if t.schedule == "lwta":  # constant until milestones[0], then x gamma per epoch
        return t.lr_gamma ** max(0, epoch - t.milestones[0] + 1)
    return 1.0


def train_eps(t: TrainConfig, epoch: int) -> float:
    a = t.adversarial
    if a.eps_warmup_epochs <= 0:
        return a.eps
    return a.eps * min(1.0, (epoch + 1) / a.eps_warmup_epochs)


def validation_metric(model: nn.Module, splits: Splits, t: TrainConfig, device: torch.device,
                      generator: torch.Generator, batch_size: int = 500) -> dict:
    x, y = splits.x_val.to(device), splits.y_val.to(device)
    out = {"val_acc": accuracy(model, x, y, batch_size)}
    if t.select_metric == "pgd":
        a = t.adversarial
        step = 2.5 * a.eps / t.val_attack_steps
        with eval_mode(model):
            adv = torch.cat([pgd_linf(model, x[i:i + batch_size], y[i:i + batch_size], eps=a.eps, step_size=step,
                                      steps=t.val_attack_steps, generator=generator)
                             for i in range(0, len(x), batch_size)])
        out["val_pgd_acc"] = accuracy(model, adv, y, batch_size)
    return out


def fit(model: nn.Module, splits: Splits, t: TrainConfig, *, device: torch.device, seed: int,
        desc: str = "fit", progress: bool = True) -> FitResult:
    """Train ``model`` in place on ``splits``; load the best validation epoch at the end."""
    if t.adversarial.method not in ADV_METHODS:
        raise ValueError(f"parameter 'adversarial.method' = {t.adversarial.method!r} is not allowed: "
                         f"choose one of {ADV_METHODS}")
    elbo = t.loss == "elbo"
    if elbo and not has_kl_terms(model):
        raise bad("train.loss", t.loss, "the ELBO needs a model with KL terms (LWTA layers, optionally IBP)")
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = make_optimizer(model, t)
    x_tr, y_tr = splits.x_train.to(device), splits.y_train.to(device)
    n = len(y_tr)
    steps_per_epoch = math.ceil(n / t.batch_size)
    key = "val_pgd_acc" if t.select_metric == "pgd" else "val_acc"
    result = FitResult(select_metric=key)
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    if t.epochs == 0:
        with eval_mode(model):
            metrics = validation_metric(model, splits, t, device, gen)
        result.best_metric = metrics[key]
    for epoch in range(t.epochs):
        model.train()
        eps = train_eps(t, epoch)
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = correct = kl_sum = 0.0
        t0 = time.perf_counter()
        batches = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}", leave=False,
                       disable=not progress, mininterval=5.0)
        for b in batches:
            for g in opt.param_groups:
                g["lr"] = t.lr * lr_factor(t, epoch + b / steps_per_epoch)
            idx = perm[b * t.batch_size:(b + 1) * t.batch_size]
            xb = augment_batch(x_tr[idx], t.augment, t.max_shift, gen)
            yb = y_tr[idx]
            if t.adversarial.method == "pgd" and eps > 0:
                a = t.adversarial
                with eval_mode(model):
                    xb = pgd_linf(model, xb, yb, eps=eps, step_size=a.step_size, steps=a.steps,
                                  random_start=a.random_start, generator=gen)
            with maybe_switches(model, phase="train", track_kl=True if elbo else None):
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                if elbo:
                    kl = model_kl(model)
                    kl_sum += kl.item() * len(yb)
                    loss = loss + kl / n
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
        with eval_mode(model):
            metrics = validation_metric(model, splits, t, device, gen)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_eps": eps,
               "train_loss": loss_sum / n, "train_acc": correct / n, **({"train_kl": kl_sum / n} if elbo else {}),
               **metrics,
               "epoch_time_s": time.perf_counter() - t0}
        result.history.append(row)
        if not metrics[key] <= result.best_metric:  # also true while best is NaN
            result.best_metric, result.best_epoch = metrics[key], epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f} "
                   + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + f" ({row['epoch_time_s']:.1f}s)")
    opt.zero_grad(set_to_none=True)
    model.load_state_dict(best_state)
    model.eval()
    result.wall_time_s = time.perf_counter() - start
    return result
