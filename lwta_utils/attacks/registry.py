"""The attack registry and its entry point ``run_attack``.

Every attack takes ``(model, x, y, **params)`` and returns ``x_adv`` inside the eps-ball of its
norm around ``x`` and inside [0, 1]. An attack registers itself in its own module with
``@register_attack(name, ...)``, declaring its properties (:class:`AttackSpec`): the norm, the
kind of access it needs, whether it needs a surrogate, whether it iterates, the gradient modes it
supports, which models it applies to, and how to describe what it actually runs. Code asks these
properties; no module matches an attack by its name. ``run_attack`` checks the parameters, runs
the attack and leaves the model's train/eval modes, randomness switches, ``requires_grad`` flags
and the global RNG state exactly as it found them.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from lwta_utils.config.schema import APPLIES_TO, GRADIENT_MODES
from lwta_utils.core.errors import bad, check_choice, check_range
from lwta_utils.core.modes import input_grads_only
from lwta_utils.core.registry import ATTACKS
from lwta_utils.core.switches import get_switches, restore_switches

Attack = Callable[..., torch.Tensor]
NORMS = ("linf", "l2")
KINDS = ("white-box", "black-box", "transfer")


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack and what the evaluation needs to know of it.

    fn: the attack, ``fn(model, x, y, **params) -> x_adv``.
    norm: 'linf' or 'l2': the ball eps bounds.
    kind: 'white-box' (gradients of the target), 'black-box' (its outputs only) or 'transfer'
        (gradients of a surrogate).
    label: display name.
    needs_surrogate: crafted on another model of the profile (``surrogate``), never on the target.
    iterative: takes steps (its display name shows their number).
    gradient_modes: the gradient modes it supports (``AttackConfig.gradient``).
    applies_to: the models it can run on ('all', 'stochastic', 'deterministic').
    describe: ``describe(model, params) -> dict``: the parameters it actually runs with on
        ``model``, where they differ from ``params`` (a preset resolved); None: ``params``.
    params: the parameters ``fn`` takes (from its signature).
    """

    fn: Attack
    norm: str = "linf"
    kind: str = "white-box"
    label: str = ""
    needs_surrogate: bool = False
    iterative: bool = False
    gradient_modes: tuple[str, ...] = ("model",)
    applies_to: str = "all"
    describe: Callable[[nn.Module, dict], dict] | None = None
    params: tuple[str, ...] = field(default=())

    def run_params(self, model: nn.Module, params: dict) -> dict:
        """``params`` as the attack runs them on ``model`` (for the records)."""
        return {**params, **(self.describe(model, params) if self.describe else {})}


def register_attack(name: str, norm: str = "linf", kind: str = "white-box", label: str | None = None, *,
                    needs_surrogate: bool = False, iterative: bool = False,
                    gradient_modes: tuple[str, ...] = ("model",), applies_to: str = "all",
                    describe: Callable[[nn.Module, dict], dict] | None = None) -> Callable[[Attack], Attack]:
    check_choice("norm", norm, NORMS)
    check_choice("kind", kind, KINDS)
    check_choice("applies_to", applies_to, APPLIES_TO)
    for mode in gradient_modes:
        check_choice("gradient_modes", mode, GRADIENT_MODES)

    def deco(fn: Attack) -> Attack:
        params = tuple(inspect.signature(fn).parameters)
        if ("gradient" in params) != (gradient_modes != ("model",)):
            raise ValueError(f"attack {name!r}: declare gradient_modes exactly when it takes 'gradient'")
        ATTACKS.add(name, AttackSpec(fn, norm, kind, label or name, needs_surrogate, iterative, gradient_modes,
                                     applies_to, describe, params))
        return fn
    return deco


def attack_spec(name: str, param: str = "attack") -> AttackSpec:
    """The registered attack ``name`` (a clear error naming ``param`` otherwise)."""
    return ATTACKS.lookup(param, name)


def check_inputs(x: torch.Tensor, y: torch.Tensor, x_name: str = "x", y_name: str = "y") -> None:
    """Images (B, C, H, W) float in [0, 1] (no NaN); labels (B,) integer."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        what = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise bad(x_name, what, "must be a float tensor of shape (B, C, H, W)")
    if x.numel() and torch.isnan(x).any():
        raise bad(x_name, "a tensor with NaN pixels", "pixels must be numbers in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise bad(x_name, f"range [{x.min().item():.3g}, {x.max().item():.3g}]",
                  "pixels must lie in [0, 1] (normalisation belongs inside the model)")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32) or y.shape != x.shape[:1]:
        what = f"{y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise bad(y_name, what, f"must be integer labels of shape ({x.shape[0]},)")


def check_eps(eps: float, norm: str) -> None:
    check_range("eps", eps, 0.0, 1.0 if norm == "linf" else None)


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Restore, after the block, every module's train/eval mode, every randomness
    switch, every parameter's ``requires_grad`` and ``.grad``, and the global (CPU and
    CUDA) RNG state. Inside the block the parameters do not require gradients."""
    modes = {m: m.training for m in model.modules()}
    saved = get_switches(model)
    grads = {p: p.grad for p in model.parameters()}
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        try:
            with input_grads_only(model):  # attacks need input gradients only (libraries' backward() fills no .grad)
                yield model
        finally:
            for m, mode in modes.items():
                m.training = mode
            restore_switches(saved)
            for p, grad in grads.items():
                p.grad = grad


def attack_params(name: str, params: dict) -> dict:
    """The subset of ``params`` that attack ``name`` takes (FGSM has no steps or
    restarts); records store exactly these, so nothing is silently ignored."""
    accepted = attack_spec(name).params
    return {k: v for k, v in params.items() if k in accepted}


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **params) -> torch.Tensor:
    """Look ``name`` up in the registry and run it with ``params`` (unknown ones are an
    error); the model comes back with its modes, switches, flags and RNG state as found."""
    spec = attack_spec(name)
    unknown = set(params) - set(attack_params(name, params))
    if unknown:
        raise bad("attack parameters", sorted(unknown), f"attack '{name}' does not take them")
    check_inputs(x, y)
    with preserved(model):
        return spec.fn(model, x, y, **params)
