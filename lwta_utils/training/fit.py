"""One ``fit()`` for every training variant, with model selection on validation.

Variants are selected by configuration, never by copies of the loop:
standard training (``adversarial.method: none``); Madry PGD adversarial
training (``pgd``: cross-entropy on PGD examples only, built with the model
in eval mode and stochastic layers in phase 'test', as in the TRADES and
LWTA code); FGSM, CW, Gaussian-noise and the Paris-Dauphine study's mixed training; the PNI
recipe (``clean_weight`` 0.5, ``label`` 'predicted', ``clean_epochs``)
(``lwta_utils.training.inputs``); loss 'ce', 'elbo' (cross-entropy + KL /
N_train, the IBP variant) or 'wca' (cross-entropy - log tr(W Sigma W^T)),
with optional label smoothing; k-WTA's incremental gamma schedule. Layers
with an ``after_step()`` method (the WCA head's re-projection of L) are
called after every optimiser step. Stochastic layers are switched to phase
'train' for the training forward pass only, explicitly
(``lwta_utils.core.switches``), never through ``model.train()``. The checkpoint
kept is the epoch with the best validation metric (``select_metric``); the test split is
never looked at here.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lwta_utils.attacks.gradients import GRADIENT_SWITCHES
from lwta_utils.attacks.pgd import pgd_linf
from lwta_utils.attacks.registry import check_inputs
from lwta_utils.config.schema import ComputeConfig, TrainConfig
from lwta_utils.config.validation import validate_compute, validate_train
from lwta_utils.core.distributed import (
    SINGLE,
    DistContext,
    barrier,
    check_replicas,
    gather_objects,
    shard,
    sum_across,
)
from lwta_utils.core.errors import bad, check_range
from lwta_utils.core.fileio import atomic_path
from lwta_utils.core.modes import eval_mode, input_grads_only
from lwta_utils.core.paths import display_path
from lwta_utils.core.progress import progress_bar, status
from lwta_utils.core.provenance import native_bf16
from lwta_utils.core.switches import available_switches, maybe_switches
from lwta_utils.data.augment import augment_batch
from lwta_utils.data.splits import Splits
from lwta_utils.defenses.ibp import elbo_sums, gate_kl, has_kl_terms, model_kl
from lwta_utils.defenses.kwta import (
    kwta_layers,
    schedule_epochs,
    scheduled_gamma,
    set_gamma,
)
from lwta_utils.defenses.lwta_kernels import keep_numba_out_of_compile
from lwta_utils.defenses.wca import wca_heads, wca_penalty
from lwta_utils.models.inference import accuracy, predict_logits
from lwta_utils.training.inputs import training_inputs


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


def lr_factor(t: TrainConfig, epoch_float: float, cuts: int = 0) -> float:
    """Learning-rate multiplier at a (fractional) epoch (schedule 'plateau': after ``cuts`` cuts,
    :func:`plateau_cuts`)."""
    epoch = int(epoch_float)
    if t.schedule == "plateau":
        return t.lr_gamma ** cuts
    if t.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch_float / max(t.epochs, 1), 1.0)))
    if t.schedule == "multistep":
        return t.lr_gamma ** sum(epoch >= m for m in t.milestones)
    if t.schedule == "lwta":  # constant until milestones[0], then x gamma per epoch
        return t.lr_gamma ** max(0, epoch - t.milestones[0] + 1)
    return 1.0


def stall_counts(t: TrainConfig, metrics: list[float], first_eligible: int) -> tuple[int, int]:
    """(eligible epochs since the last improvement, lr cuts of schedule 'plateau') after the epochs
    whose selection metric (higher is better) is ``metrics``, counting from index ``first_eligible``.
    An improvement beats the value of the previous improvement by more than ``t.min_delta`` (the
    first eligible epoch always improves); the plateau schedule cuts the lr each time
    ``t.plateau_epochs`` epochs pass without one, counted afresh after each cut. A function of the
    history alone, so a resumed run continues with the same lr and the same count."""
    ref, since_cut, stalled, cuts = float("nan"), 0, 0, 0
    for value in metrics[first_eligible:]:
        if not value <= ref + t.min_delta:  # an improvement (also while ref is NaN)
            ref, since_cut, stalled = value, 0, 0
        else:
            since_cut, stalled = since_cut + 1, stalled + 1
            if since_cut >= t.plateau_epochs:
                cuts, since_cut = cuts + 1, 0
    return stalled, cuts


def plateau_cuts(t: TrainConfig, metrics: list[float], first_eligible: int) -> int:
    """How many times schedule 'plateau' has cut the lr (:func:`stall_counts`)."""
    return stall_counts(t, metrics, first_eligible)[1]


def kl_weight(t: TrainConfig, epoch_float: float, n_train: int) -> float:
    """The ELBO's KL weight at a (fractional) epoch: 1 / N (``kl_data_size``, or the training
    split's size), times the linear warm-up factor (``kl_warmup_epochs``)."""
    ramp = min(1.0, epoch_float / t.kl_warmup_epochs) if t.kl_warmup_epochs else 1.0
    return ramp / (t.kl_data_size or n_train)


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
                      generator: torch.Generator, batch_size: int = 500, ctx: DistContext = SINGLE) -> dict:
    """Clean validation accuracy (and under PGD for ``select_metric`` 'pgd', the validation ELBO per
    example at the full KL weight for 'elbo'); sharded over the processes under torch.distributed."""
    part = shard(len(splits.y_val), ctx) if ctx.active else slice(None)
    x, y = splits.x_val[part].to(device), splits.y_val[part].to(device)

    def acc(inputs: torch.Tensor) -> float:
        if not ctx.active:
            return accuracy(model, inputs, y, batch_size)
        count = float((predict_logits(model, inputs, batch_size).argmax(1) == y.cpu()).sum())
        return sum_across([count], ctx, device)[0] / len(splits.y_val)

    out = {"val_acc": acc(x)}
    if t.select_metric == "pgd":
        a = t.adversarial
        step = t.val_attack_step_factor * a.eps / t.val_attack_steps
        with eval_mode(model), input_grads_only(model):
            adv = torch.cat([pgd_linf(model, x[i:i + batch_size], y[i:i + batch_size], eps=a.eps, step_size=step,
                                      steps=t.val_attack_steps, generator=generator, keep="last")
                             for i in range(0, len(x), batch_size)])
        out["val_pgd_acc"] = acc(adv)
    if t.select_metric == "elbo":  # -(CE + KL / N): winners' KL per example, the gates' over 32 stick draws
        with torch.no_grad():
            kl_gates = gate_kl(model, 32, generator)
        ce, kl_xi, kl_gates = sum_across([*elbo_sums(model, x, y, batch_size),
                                          0.0 if kl_gates is None else float(kl_gates) / ctx.world_size], ctx, device)
        kl = kl_gates + kl_xi / len(splits.y_val)
        out["val_elbo"] = -(ce / len(splits.y_val) + kl * kl_weight(t, math.inf, len(splits.y_train)))
    return out


@contextmanager
def deterministic_algorithms(on: bool, device: torch.device) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(on)`` and cuDNN autotuning off (on: deterministic) or
    on (a GPU run without it) inside the block; the previous settings restored after."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not on
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def autocast(compute: ComputeConfig, device: torch.device):
    """The mixed-precision context of the training step (``compute.amp``)."""
    if compute.amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def step_inputs(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, t: TrainConfig, eps: float,
                compute: ComputeConfig, generator: torch.Generator | None = None,
                noise_generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, str]:
    """The inputs of one training step (``adversarial.training_inputs`` under ``compute.amp``):
    (x_train or None for the clean batch, branch)."""
    with autocast(compute, xb.device):
        return training_inputs(model, xb, yb, t.adversarial, eps, generator, noise_generator=noise_generator)


def step_loss(model: nn.Module, xb: torch.Tensor, x_adv: torch.Tensor | None, yb: torch.Tensor, t: TrainConfig,
              compute: ComputeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, cross-entropy) of one training step under ``compute.amp``, on ``x_adv`` (or the clean
    batch), mixed with the clean loss by ``adversarial.clean_weight``; the loss in float32."""
    a = t.adversarial
    with autocast(compute, xb.device):
        logits = model(xb if x_adv is None else x_adv)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=t.label_smoothing)
        if x_adv is not None and a.clean_weight > 0:
            clean_loss = F.cross_entropy(model(xb).float(), yb, label_smoothing=t.label_smoothing)
            loss = a.clean_weight * clean_loss + (1 - a.clean_weight) * loss
    return logits, loss


def _rng_states(device: torch.device, gens: dict[str, torch.Generator]) -> dict:
    out = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
           **{k: g.get_state() for k, g in gens.items()}}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_states(states: dict, device: torch.device, gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    for k, g in gens.items():
        g.set_state(states[k])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


class _Epoch:
    """The running sums of one epoch (kept on the device: no synchronisation per step)."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.kl = torch.zeros((), dtype=torch.float64, device=device)
        self.branches: dict[str, int] = {}
        self.seconds = 0.0

    def state(self) -> dict:
        return {"loss": self.loss, "correct": self.correct, "kl": self.kl, "branches": dict(self.branches),
                "seconds": self.seconds}

    def load(self, state: dict) -> None:
        self.loss, self.correct, self.kl = (state[k].to(self.loss.device) for k in ("loss", "correct", "kl"))
        self.branches, self.seconds = dict(state["branches"]), state["seconds"]


def check_fit_inputs(model, splits, t, device, seed, compute, ctx, state_path) -> None:
    """Everything ``fit`` is given, checked before any work (one clear error naming the parameter)."""
    if not isinstance(model, nn.Module):
        raise bad("model", type(model).__name__, "must be a torch.nn.Module")
    if not isinstance(splits, Splits):
        raise bad("splits", type(splits).__name__, "must be a lwta_utils.data.Splits (from load_data)")
    validate_train("train", t)
    if not isinstance(device, torch.device):
        raise bad("device", device, "must be a torch.device (lwta_utils.get_device('auto'|'cpu'|'cuda'))")
    check_range("seed", seed, 0, 2**63 - 1, integer=True)
    validate_compute("compute", compute)
    if not isinstance(ctx, DistContext):
        raise bad("ctx", type(ctx).__name__, "must be a DistContext (lwta_utils.core.distributed)")
    if state_path is not None and not isinstance(state_path, (str, os.PathLike)):
        raise bad("state_path", state_path, "must be a path or None")
    for part in ("train", "val"):
        x, y = getattr(splits, f"x_{part}"), getattr(splits, f"y_{part}")
        check_inputs(x, y, f"splits.x_{part}", f"splits.y_{part}")
        if len(y) == 0:
            raise bad(f"splits.y_{part}", 0, "the split must hold at least one example")
        if y.min() < 0 or y.max() >= splits.info.num_classes:
            raise bad(f"splits.y_{part}", f"labels in [{int(y.min())}, {int(y.max())}]",
                      f"labels must lie in [0, {splits.info.num_classes - 1}]")
    needed = GRADIENT_SWITCHES[t.adversarial.gradient]
    if not set(needed) <= set(available_switches(model)):
        raise bad("train.adversarial.gradient", t.adversarial.gradient,
                  f"this model's layers lack the switches it sets ({', '.join(needed)}): use 'model'")
    if t.batch_size > len(splits.y_train):
        raise bad("train.batch_size", t.batch_size, f"at most the {len(splits.y_train)} training examples")


def fit(model: nn.Module, splits: Splits, t: TrainConfig, *, device: torch.device, seed: int,
        desc: str = "fit", progress: bool = True, compute: ComputeConfig | None = None,
        ctx: DistContext = SINGLE, state_path: Path | None = None, state_key: str = "") -> FitResult:
    """Train ``model`` in place on ``splits``; load the best validation epoch at the end.

    ``compute`` sets mixed precision, channels-last, torch.compile and deterministic
    algorithms (:class:`~lwta_utils.config.ComputeConfig`). ``ctx`` is the torch.distributed
    context (``lwta_utils.core.distributed``; every process calls ``fit`` with the same arguments).
    With ``state_path`` the training state is saved at the end of every epoch and every
    ``compute.state_every_steps`` steps, and a state there whose ``state_key`` matches is
    resumed (``compute.resume``): an interrupted run continues where it was saved and, in
    deterministic mode, ends with the same weights as an uninterrupted one.
    """
    compute = compute or ComputeConfig()
    check_fit_inputs(model, splits, t, device, seed, compute, ctx, state_path)
    elbo = t.loss == "elbo"
    if elbo and not has_kl_terms(model):
        raise bad("train.loss", t.loss, "the ELBO needs a model with KL terms (LWTA layers, optionally IBP)")
    if t.loss == "wca" and not wca_heads(model):
        raise bad("train.loss", t.loss, "the WCA loss needs a model with a WCA head (head: wca)")
    plan = gamma_plan(model, t)
    if plan and t.epochs <= plan[1]:
        raise bad("train.epochs", t.epochs, f"the gamma schedule reaches gamma {plan[0]:g} at epoch "
                  f"{plan[1] + 1}: train at least that many epochs")
    with deterministic_algorithms(compute.deterministic, device):
        return _fit(model, splits, t, device=device, seed=seed, desc=desc, progress=progress and ctx.is_main,
                    compute=compute, ctx=ctx, state_path=state_path, state_key=state_key, plan=plan)


def _fit(model, splits, t, *, device, seed, desc, progress, compute, ctx, state_path, state_key, plan):
    a, elbo = t.adversarial, t.loss == "elbo"
    post_step = [m for m in model.modules() if callable(getattr(m, "after_step", None))]
    gen = torch.Generator().manual_seed(seed)  # permutation, augmentation, mixed-AT branch: shared
    gens = {"gen": gen}
    local_gen = gen  # attack starts and noise: the same stream in one process, per process under DDP
    if ctx.active:
        rank_seed = seed + 7919 * (ctx.rank + 1)
        local_gen = gens["local_gen"] = torch.Generator().manual_seed(rank_seed)
        torch.manual_seed(rank_seed)  # the stochastic layers' noise differs between processes
    model.to(device)
    if compute.amp == "bf16" and device.type == "cpu" and not native_bf16() and ctx.is_main:
        warnings.warn("compute.amp = 'bf16' on a CPU without native bfloat16 (no avx512_bf16 or AMX): every "
                      "product is emulated, about 10x slower than float32; set compute.amp=none on this machine "
                      "(it changes the model's configuration hash)", RuntimeWarning, stacklevel=2)
    if compute.channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx.active and device.type == "cuda" and compute.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = make_optimizer(model, t)
    step_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ctx.active else model
    attack_model = model  # attacks run on the module itself, never through DDP's gradient hooks
    if compute.compile:
        keep_numba_out_of_compile()
        attack_model = torch.compile(model)
        step_model = torch.compile(step_model) if ctx.active else attack_model
    x_tr, y_tr = splits.x_train.to(device), splits.y_train.to(device)
    n = len(y_tr)
    steps_per_epoch = math.ceil(n / t.batch_size)
    key = {"pgd": "val_pgd_acc", "elbo": "val_elbo"}.get(t.select_metric, "val_acc")
    result = FitResult(select_metric=key)
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    first_epoch, first_step, perm, resumed, prior_s = 0, 0, None, None, 0.0
    if state_path is not None and compute.resume:
        resumed = load_train_state(state_path, state_key, ctx)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        best_state = resumed["best_state"]
        result = FitResult(**resumed["result"])
        first_epoch, first_step, perm = resumed["epoch"], resumed["step"], resumed["perm"]
        prior_s = resumed.get("elapsed_s", 0.0)  # training time before the interruption
        _set_rng_states(resumed["rng"][ctx.rank], device, gens)
        if progress:
            tqdm.write(f"{desc}: resuming from {display_path(state_path)} at epoch {first_epoch + 1}, "
                       f"step {first_step}/{steps_per_epoch}")

    def save_state(epoch: int, step: int, perm: torch.Tensor | None, sums: _Epoch | None) -> None:
        rng = gather_objects(_rng_states(device, gens), ctx)
        if ctx.is_main:
            with atomic_path(state_path) as tmp:
                torch.save({"format": STATE_FORMAT, "key": state_key, "world_size": ctx.world_size,
                            "epoch": epoch, "step": step, "perm": perm, "rng": rng,
                            "model": model.state_dict(), "optimizer": opt.state_dict(), "best_state": best_state,
                            "result": dataclasses.asdict(result), "epoch_sums": sums and sums.state(),
                            "elapsed_s": time.perf_counter() - start + prior_s}, tmp)
        barrier(ctx)

    if t.epochs == 0:
        with eval_mode(model):
            metrics = validation_metric(model, splits, t, device, local_gen, ctx=ctx)
        result.best_metric = metrics[key]
    first_eligible = max(t.kl_warmup_epochs, plan[1] if plan else 0)  # final gamma, full KL weight
    stalled, cuts = stall_counts(t, [r[key] for r in result.history], first_eligible)  # a resumed run's history
    for epoch in range(first_epoch, t.epochs):
        model.train()
        eps = train_eps(t, epoch)
        if plan:
            set_gamma(model, scheduled_gamma(t.gamma_schedule.start, plan[0], t.gamma_schedule.step,
                                             t.gamma_schedule.every_epochs, epoch))
        sums = _Epoch(device)
        if resumed is not None and epoch == first_epoch and resumed["epoch_sums"] is not None:
            sums.load(resumed["epoch_sums"])
        else:
            perm, first_step = torch.randperm(n, generator=gen), 0
        perm_dev = perm.to(device)
        t0 = time.perf_counter() - sums.seconds
        status(f"training {desc} epoch {epoch + 1}/{t.epochs}")
        batches = progress_bar(range(first_step, steps_per_epoch), desc=f"{desc} epoch {epoch + 1}", leave=False,
                               disable=not progress, mininterval=5.0)
        for b in batches:
            for g in opt.param_groups:
                g["lr"] = t.lr * lr_factor(t, epoch + b / steps_per_epoch, cuts)
            idx = perm_dev[b * t.batch_size:(b + 1) * t.batch_size]
            xb = augment_batch(x_tr[idx], t.augment, t.max_shift, gen)
            yb = y_tr[idx]
            if ctx.active:  # every process augments the global batch the same way and keeps its share
                xb, yb = xb[shard(len(yb), ctx)], yb[shard(len(yb), ctx)]
            if compute.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            x_adv, branch = (step_inputs(attack_model, xb, yb, t, eps, compute, gen, local_gen)
                             if a.method != "none" and epoch >= a.clean_epochs else (None, "clean"))
            sums.branches[branch] = sums.branches.get(branch, 0) + 1
            with maybe_switches(model, phase="train", track_kl=True if elbo else None):
                logits, loss = step_loss(step_model, xb, x_adv, yb, t, compute)
                if elbo:
                    kl = model_kl(model)
                    sums.kl += kl.detach().double() * len(yb)
                    loss = loss + kl * kl_weight(t, epoch + b / steps_per_epoch, n)
                if t.loss == "wca":
                    loss = loss + wca_penalty(model)
                opt.zero_grad(set_to_none=True)
                # DDP averages the processes' gradients: weight each by its share of the global batch
                (loss * (len(yb) * ctx.world_size / len(idx)) if ctx.active else loss).backward()
            opt.step()
            for m in post_step:
                m.after_step()
            sums.loss += loss.detach().double() * len(yb)
            sums.correct += (logits.detach().argmax(1) == yb).sum()
            if state_path is not None and compute.state_every_steps and (b + 1) % compute.state_every_steps == 0 \
                    and b + 1 < steps_per_epoch:
                sums.seconds = time.perf_counter() - t0
                save_state(epoch, b + 1, perm, sums)
        loss_sum, correct, kl_sum = sum_across([float(sums.loss), float(sums.correct), float(sums.kl)], ctx, device)
        with eval_mode(model):
            metrics = validation_metric(model, splits, t, device, local_gen, ctx=ctx)
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_eps": eps,
               **({"gamma": kwta_layers(model)[0].gamma} if plan else {}),
               **({"branches": sums.branches} if a.method == "mixed" else {}),
               "train_loss": loss_sum / n, "train_acc": correct / n,
               **({"train_kl": kl_sum / n, "kl_weight": kl_weight(t, epoch + 1, n)} if elbo else {}),
               **metrics,
               "epoch_time_s": time.perf_counter() - t0}
        result.history.append(row)
        eligible = epoch >= first_eligible
        if eligible and not metrics[key] <= result.best_metric:  # also true while best is NaN
            result.best_metric, result.best_epoch = metrics[key], epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f} "
                       + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + f" ({row['epoch_time_s']:.1f}s)")
        stalled, cuts = stall_counts(t, [r[key] for r in result.history], first_eligible)
        if t.patience and stalled >= t.patience:
            break  # early stopping: no better selection metric (by min_delta) for `patience` eligible epochs
        if state_path is not None and epoch + 1 < t.epochs:
            save_state(epoch + 1, 0, None, None)
    opt.zero_grad(set_to_none=True)
    check_replicas(model, ctx)
    model.load_state_dict(best_state)
    if plan:
        set_gamma(model, plan[0])
    if compute.channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    result.wall_time_s = time.perf_counter() - start + prior_s
    return result


STATE_FORMAT = "lwta-study-train-state-1"


def load_train_state(path: Path, key: str, ctx: DistContext = SINGLE) -> dict | None:
    """The saved training state at ``path`` if it belongs to this configuration (``key``) and
    world size; None when there is none or it belongs to another run (then it is started again)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or corrupted: say so and start again
        tqdm.write(f"training state {display_path(path)} cannot be read ({type(exc).__name__}); starting again")
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        tqdm.write(f"training state {display_path(path)} has another format; starting again")
        return None
    if state["key"] != key or state["world_size"] != ctx.world_size:
        tqdm.write(f"training state {display_path(path)} belongs to another configuration or number of "
                   f"processes; starting again")
        return None
    return state
