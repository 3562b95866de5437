"""One ``fit()`` for every training variant, with model selection on validation.

Variants are selected by configuration, never by copies of the loop:
standard training (``adversarial.method: none``); Madry PGD adversarial
training (``pgd``: cross-entropy on PGD examples only, built with the model
in eval mode and stochastic layers in phase 'test', as in the TRADES and
LWTA code); FGSM, CW, Gaussian-noise and seed 001's mixed training; the PNI
recipe (``clean_weight`` 0.5, ``label`` 'predicted', ``clean_epochs``)
(``lwta_utils.adversarial``); loss 'ce', 'elbo' (cross-entropy + KL /
N_train, the IBP variant) or 'wca' (cross-entropy - log tr(W Sigma W^T)),
with optional label smoothing; k-WTA's incremental gamma schedule. Layers
with an ``after_step()`` method (the WCA head's re-projection of L) are
called after every optimiser step. Stochastic layers are switched to phase
'train' for the training forward pass only, explicitly
(``lwta_utils.switches``), never through ``model.train()``. The checkpoint
kept is the epoch with the best validation metric (``select_metric``); the test split is
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

from .adversarial import training_inputs
from .attacks import pgd_linf
from .config import ADV_METHODS, TrainConfig
from .data import Splits, augment_batch
from .evaluate import accuracy, eval_mode
from .errors import bad
from .ibp import has_kl_terms, model_kl
from .kwta import kwta_layers, schedule_epochs, scheduled_gamma, set_gamma
from .switches import maybe_switches
from .wca import wca_heads, wca_penalty


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    select_metric: str = "clean"
    wall_time_s: float = 0.0


def param_groups(model: nn.Module, t: TrainConfig) -> list[dict]:
    """Parameters with and without weight decay: PNI's ``alpha`` never decays;
    scope 'wca' decays only the WCA head's L and W (the authors' optimiser)."""
    if t.weight_decay_scope == "wca":
        decayed = {id(p) for h in wca_heads(model) for p in h.decayed_parameters()}
    else:
        decayed = {id(p) for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] != "alpha"}
    params = list(model.parameters())
    groups = [{"params": [p for p in params if id(p) in decayed], "weight_decay": t.weight_decay},
              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, t)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    return torch.optim.Adam(groups, lr=t.lr)


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
    """The attack radius at ``epoch`` (0-based): 0 during the clean epochs, then
    ramped over ``eps_warmup_epochs``."""
    a = t.adversarial
    if a.method == "none" or epoch < a.clean_epochs:
        return 0.0
    if a.eps_warmup_epochs <= 0:
        return a.eps
    return a.eps * min(1.0, (epoch - a.clean_epochs + 1) / a.eps_warmup_epochs)


def gamma_plan(model: nn.Module, t: TrainConfig) -> tuple[float, int] | None:
    """(final gamma, first epoch at it) of the k-WTA schedule, or None without one."""
    gs = t.gamma_schedule
    if not gs.start:
        return None
    layers = kwta_layers(model)
    if not layers:
        raise bad("train.gamma_schedule.start", gs.start, "the gamma schedule needs a model with k-WTA layers")
    final = layers[0].gamma
    return final, schedule_epochs(gs.start, final, gs.step, gs.every_epochs)


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
        raise bad("adversarial.method", t.adversarial.method, f"choose one of {ADV_METHODS}")
    elbo = t.loss == "elbo"
    if elbo and not has_kl_terms(model):
        raise bad("train.loss", t.loss, "the ELBO needs a model with KL terms (LWTA layers, optionally IBP)")
    if t.loss == "wca" and not wca_heads(model):
        raise bad("train.loss", t.loss, "the WCA loss needs a model with a WCA head (head: wca)")
    plan = gamma_plan(model, t)
    if plan and t.epochs <= plan[1]:
        raise bad("train.epochs", t.epochs, f"the gamma schedule reaches gamma {plan[0]:g} at epoch "
                  f"{plan[1] + 1}: train at least that many epochs")
    post_step = [m for m in model.modules() if callable(getattr(m, "after_step", None))]
    a = t.adversarial
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
        if plan:
            set_gamma(model, scheduled_gamma(t.gamma_schedule.start, plan[0], t.gamma_schedule.step,
                                             t.gamma_schedule.every_epochs, epoch))
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = correct = kl_sum = 0.0
        branches: dict[str, int] = {}
        t0 = time.perf_counter()
        batches = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}", leave=False,
                       disable=not progress, mininterval=5.0)
        for b in batches:
            for g in opt.param_groups:
                g["lr"] = t.lr * lr_factor(t, epoch + b / steps_per_epoch)
            idx = perm[b * t.batch_size:(b + 1) * t.batch_size]
            xb = augment_batch(x_tr[idx], t.augment, t.max_shift, gen)
            yb = y_tr[idx]
            x_adv, branch = (training_inputs(model, xb, yb, a, eps, gen) if a.method != "none"
                             and epoch >= a.clean_epochs else (None, "clean"))
            branches[branch] = branches.get(branch, 0) + 1
            with maybe_switches(model, phase="train", track_kl=True if elbo else None):
                logits = model(xb if x_adv is None else x_adv)
                loss = F.cross_entropy(logits, yb, label_smoothing=t.label_smoothing)
                if x_adv is not None and a.clean_weight > 0:
                    clean_loss = F.cross_entropy(model(xb), yb, label_smoothing=t.label_smoothing)
                    loss = a.clean_weight * clean_loss + (1 - a.clean_weight) * loss
                if elbo:
                    kl = model_kl(model)
                    kl_sum += kl.item() * len(yb)
                    loss = loss + kl / n
                if t.loss == "wca":
                    loss = loss + wca_penalty(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            for m in post_step:
                m.after_step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
        with eval_mode(model):
            metrics = validation_metric(model, splits, t, device, gen)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_eps": eps,
               **({"gamma": kwta_layers(model)[0].gamma} if plan else {}),
               **({"branches": branches} if a.method == "mixed" else {}),
               "train_loss": loss_sum / n, "train_acc": correct / n, **({"train_kl": kl_sum / n} if elbo else {}),
               **metrics,
               "epoch_time_s": time.perf_counter() - t0}
        result.history.append(row)
        eligible = not plan or epoch >= plan[1]  # k-WTA schedule: only epochs at the final gamma
        if eligible and not metrics[key] <= result.best_metric:  # also true while best is NaN
            result.best_metric, result.best_epoch = metrics[key], epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f} "
                   + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + f" ({row['epoch_time_s']:.1f}s)")
    opt.zero_grad(set_to_none=True)
    model.load_state_dict(best_state)
    if plan:
        set_gamma(model, plan[0])
    model.eval()
    result.wall_time_s = time.perf_counter() - start
    return result
