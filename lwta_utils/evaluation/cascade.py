"""The adaptive attack cascade: one suite for every model, in the AutoAttack manner.

The attacks run in a fixed order at one eps; each runs only on the examples still robust after
the previous ones (an example is robust when it is classified correctly in every evaluation draw)
and, per example, the strongest perturbation found so far is kept: the first that fools every
draw, else the one with the highest cross-entropy averaged over the draws. A step's record holds
the cumulative robustness after it (and how many examples it attacked and fooled); the last
step's is the per-example worst case over the suite.

Randomness: each attack draws its own noise and starts from ``stream(seed, "attack", id, eps)``;
the evaluation draws come from ``stream(seed, "eval", id, eps)``; the clean draws from
``stream(seed, "eval", "clean")``: no draw of the evaluation replays a draw of an attack, and the
streams continue across batches, so no two examples share noise.

``full=True`` runs every attack on every example instead (the definition the cascade shortcuts:
an example is robust when no attack fools it in every draw); ``PassCounter`` counts the forward
and backward passes, so the saving can be measured.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.attacks.registry import attack_spec, run_attack
from lwta_utils.core.progress import progress_bar, status
from lwta_utils.core.switches import noise_from, stream
from lwta_utils.models.inference import draw_logits


@dataclass
class PassCounter:
    """Images through the model's forward pass, and through its backward pass (an input gradient)."""

    forward: int = 0
    backward: int = 0

    @contextmanager
    def counting(self, model: nn.Module) -> Iterator["PassCounter"]:
        def hook(module, inputs, output):
            self.forward += output.shape[0]
            if output.requires_grad:
                output.register_hook(lambda g: setattr(self, "backward", self.backward + g.shape[0]))

        handle = model.register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()


def attack_in_batches(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                      generator: torch.Generator, params: dict, desc: str = "") -> torch.Tensor:
    """Attack ``name`` on ``x`` in batches on the model's device; the stochastic layers and the
    attack's random starts draw from ``generator``. Returns x_adv on the CPU. ``desc``: a
    progress bar over the batches (shown by the chain's console)."""
    dev = next(model.parameters()).device
    params = dict(params)
    if "generator" in attack_spec(name).params:
        params["generator"] = generator
    out = []
    batches = range(0, len(x), batch_size)
    with noise_from(model, generator):
        for i in progress_bar(batches, desc=desc, leave=False, unit="batch", disable=not desc or len(batches) < 2):
            out.append(run_attack(name, model, x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev),
                                  **params).cpu())
    return torch.cat(out) if out else x.clone()


def look(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int, batch_size: int,
         generator: torch.Generator) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The evaluation of ``x``: (correct in each draw (draws, n), cross-entropy averaged over the
    draws (n,), the logits (draws, n, classes))."""
    logits = draw_logits(model, x, draws, batch_size, generator=generator)
    correct = (logits.argmax(2) == y).numpy()
    loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(draws), reduction="none").view(draws, -1).mean(0)
    return correct, loss.numpy(), logits


@dataclass
class CascadeStep:
    """What one attack of the cascade did."""

    key: str
    n_attacked: int
    n_fooled: int
    correct: np.ndarray          # (draws, n): every example's strongest perturbation so far
    wall_time_s: float
    forward: int = 0
    backward: int = 0


@dataclass
class CascadeResult:
    steps: list[CascadeStep]
    x_best: torch.Tensor         # every example's strongest perturbation over the suite
    correct: np.ndarray          # (draws, n) at x_best
    logits: torch.Tensor         # (draws, n, classes) at x_best
    passes: PassCounter = field(default_factory=PassCounter)

    @property
    def robust(self) -> np.ndarray:
        return self.correct.all(0)


def run_cascade(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list, *, eps: float,
                params_of, draws: int, batch_size: int, seed: int, full: bool = False, clean=None,
                progress=None) -> CascadeResult:
    """Run ``attacks`` (AttackConfig objects, in order) as a cascade at ``eps``.

    ``params_of(atk)`` gives the parameters attack ``atk`` runs with (eps included);
    ``draws``: evaluation draws per example (1 for a deterministic model). With ``full`` every
    attack runs on every example. ``clean``: the clean look ``(correct, loss, logits)`` when the
    caller has it (else it is taken here). ``progress(text)`` is told each step."""
    counter = PassCounter()
    if clean is None:
        with counter.counting(model):
            clean = look(model, x, y, draws, batch_size, stream(seed, "eval", "clean"))
    correct, loss, logits = (v.copy() if isinstance(v, np.ndarray) else v.clone() for v in clean)
    robust = correct.all(0)
    x_best, best_loss = x.clone(), loss.copy()
    steps = []
    for atk in attacks:
        # an attack with ``n_examples`` covers that prefix of the examples only (its cost demands it)
        limit = min(atk.n_examples or len(x), len(x))
        rows = np.arange(limit) if full else np.flatnonzero(robust[:limit])
        if progress:
            progress(f"{atk.key}: {len(rows)} robust examples")
        status(f"cascade step {len(steps) + 1}/{len(attacks)}: {atk.key} on {len(rows)} robust examples")
        t0, before = time.perf_counter(), (counter.forward, counter.backward)
        n_fooled = 0
        if len(rows):
            idx = torch.as_tensor(rows)
            with counter.counting(model):
                x_adv = attack_in_batches(model, atk.name, x[idx], y[idx], batch_size,
                                          stream(seed, "attack", atk.key, eps), params_of(atk), desc=atk.key)
                c, lossv, lg = look(model, x_adv, y[idx], draws, batch_size, stream(seed, "eval", atk.key, eps))
            n_fooled = fold(rows, x_adv, c, lossv, lg, x_best, best_loss, correct, logits)
            robust = correct.all(0)
        steps.append(CascadeStep(atk.key, len(rows), n_fooled, correct.copy(), time.perf_counter() - t0,
                                 counter.forward - before[0], counter.backward - before[1]))
    return CascadeResult(steps, x_best, correct, logits, counter)


def fold(rows: np.ndarray, x_adv: torch.Tensor, c: np.ndarray, lossv: np.ndarray, lg: torch.Tensor,
         x_best: torch.Tensor, best_loss: np.ndarray, correct: np.ndarray, logits: torch.Tensor) -> int:
    """Fold an attack's result on examples ``rows`` into every example's strongest perturbation
    (in place): an example still robust takes the new one if it fools a draw or has a higher loss;
    an example already fooled keeps its first fooling perturbation. Returns how many examples the
    attack newly fooled."""
    was_robust = correct[:, rows].all(0)
    fooled_now = ~c.all(0)
    take = was_robust & (fooled_now | (lossv > best_loss[rows]))
    sel, src = torch.as_tensor(rows[take]), torch.as_tensor(np.flatnonzero(take))
    x_best[sel] = x_adv[src]
    best_loss[rows[take]] = lossv[take]
    correct[:, rows[take]] = c[:, take]
    logits[:, sel] = lg[:, src]
    return int((fooled_now & was_robust).sum())
