"""The official AutoAttack code (PyPI ``pyautoattack``), registered under our calling convention.

AutoAttack's components run with the official hyperparameters (``pyautoattack.AutoAttack``): APGD
100 iterations, rho 0.75; APGD-T and FAB-T 9 target classes; Square 5,000 queries, p_init 0.8.
Version 'standard' = APGD-CE, APGD-T, FAB-T, Square (1 restart each); 'rand' = APGD-CE + APGD-DLR,
100 iterations, EOT 20, 1 restart; 'auto' picks 'rand' for a model with stochastic layers. Each
attack only perturbs the points the model classifies correctly, as AutoAttack does; AutoAttack's
seed is the ``seed`` parameter (it reseeds torch's global RNG, which ``run_attack`` restores
afterwards).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from lwta_utils.attacks.registry import check_eps, check_inputs, register_attack
from lwta_utils.core.errors import bad, check_choice, check_range
from lwta_utils.core.switches import is_stochastic

AA_VERSIONS = ("standard", "rand", "auto")


AA_COMPONENTS = {"apgd_ce": "apgd-ce", "apgd_dlr": "apgd-dlr", "apgd_t": "apgd-t", "fab": "fab",
                 "fab_t": "fab-t", "square": "square"}


logging.getLogger("auto-attack").setLevel(logging.ERROR)


def _norm_name(norm: str) -> str:
    check_choice("norm", norm, ("linf", "l2"))
    return {"linf": "Linf", "l2": "L2"}[norm]


def _autoattack(model: nn.Module, eps: float, norm: str, seed: int, device, version: str, attacks=None):
    from pyautoattack import AutoAttack

    check_range("seed", seed, 0, integer=True)
    aa = AutoAttack(model, attacks=attacks, device=device, eps=eps, norm=_norm_name(norm), seed=seed,
                    version=version)
    aa.verbose = False
    return aa


def _component(component: str, model, x, y, *, eps, norm, seed, steps, restarts, eot_samples=1,
               n_targets=9, queries=5000, p_init=0.8) -> torch.Tensor:
    check_inputs(x, y)
    check_eps(eps, norm)
    check_range("steps", steps, 1, integer=True)
    check_range("restarts", restarts, 1, integer=True)
    check_range("eot_samples", eot_samples, 1, integer=True)
    check_range("n_targets", n_targets, 1, 9, integer=True)
    check_range("queries", queries, 1, integer=True)
    if eps == 0:
        return x.detach().clone()
    aa = _autoattack(model, eps, norm, seed, x.device, "custom", [AA_COMPONENTS[component]])
    for apgd in (aa.apgd, aa.apgd_targeted):
        apgd.n_iter, apgd.n_restarts, apgd.eot_iter = steps, restarts, eot_samples
        apgd.n_iter_orig = steps
        apgd.n_iter_2, apgd.n_iter_min = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1)
        apgd.size_decr = max(int(0.03 * steps), 1)
    aa.apgd_targeted.n_target_classes = n_targets
    aa.fab.n_iter, aa.fab.n_restarts, aa.fab.n_target_classes = steps, restarts, n_targets
    aa.square.n_queries, aa.square.n_restarts, aa.square.p_init = queries, restarts, p_init
    return aa.run_standard_evaluation(x.detach(), y, batch_size=len(x))[0].detach()


@register_attack("apgd_ce", "linf", label="APGD-CE")
def apgd_ce(model, x, y, *, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
            eot_samples: int = 1, seed: int = 0) -> torch.Tensor:
    """APGD on the cross-entropy (Croce & Hein 2020), official code."""
    return _component("apgd_ce", model, x, y, eps=eps, norm=norm, seed=seed, steps=steps, restarts=restarts,
                      eot_samples=eot_samples)


@register_attack("apgd_dlr", "linf", label="APGD-DLR")
def apgd_dlr(model, x, y, *, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
             eot_samples: int = 1, seed: int = 0) -> torch.Tensor:
    """APGD on the difference-of-logits-ratio loss, official code."""
    return _component("apgd_dlr", model, x, y, eps=eps, norm=norm, seed=seed, steps=steps, restarts=restarts,
                      eot_samples=eot_samples)


@register_attack("apgd_t", "linf", label="APGD-T")
def apgd_t(model, x, y, *, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1,
           eot_samples: int = 1, n_targets: int = 9, seed: int = 0) -> torch.Tensor:
    """Targeted APGD on the DLR loss, against each of the ``n_targets`` most likely wrong classes."""
    return _component("apgd_t", model, x, y, eps=eps, norm=norm, seed=seed, steps=steps, restarts=restarts,
                      eot_samples=eot_samples, n_targets=n_targets)


@register_attack("fab", "linf", label="FAB")
def fab(model, x, y, *, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1, seed: int = 0
        ) -> torch.Tensor:
    """FAB (Croce & Hein 2020), untargeted, official code; the minimal example is kept if within eps."""
    return _component("fab", model, x, y, eps=eps, norm=norm, seed=seed, steps=steps, restarts=restarts)


@register_attack("fab_t", "linf", label="FAB-T")
def fab_t(model, x, y, *, eps: float, norm: str = "linf", steps: int = 100, restarts: int = 1, n_targets: int = 9,
          seed: int = 0) -> torch.Tensor:
    """Targeted FAB against the ``n_targets`` most likely wrong classes, official code."""
    return _component("fab_t", model, x, y, eps=eps, norm=norm, seed=seed, steps=steps, restarts=restarts,
                      n_targets=n_targets)


@register_attack("square", "linf", kind="black-box", label="Square")
def square(model, x, y, *, eps: float, norm: str = "linf", queries: int = 5000, p_init: float = 0.8,
           restarts: int = 1, seed: int = 0) -> torch.Tensor:
    """Square Attack (Andriushchenko et al. 2020): score-based random search, official code."""
    check_range("p_init", p_init, 0.0, 1.0)
    return _component("square", model, x, y, eps=eps, norm=norm, seed=seed, steps=1, restarts=restarts,
                      queries=queries, p_init=p_init)


def _describe_autoattack(model: nn.Module, params: dict) -> dict:
    """What ``autoattack`` runs on ``model``: the version, 'auto' resolved."""
    return {"version": autoattack_version(model, params.get("version", "auto"))}


@register_attack("autoattack", "linf", label="AutoAttack", describe=_describe_autoattack)
def autoattack(model, x, y, *, eps: float, version: str = "auto", norm: str = "linf", seed: int = 0
               ) -> torch.Tensor:
    """The official AutoAttack ensemble, ``version`` 'standard', 'rand' or 'auto'
    ('rand' when the model has stochastic layers switched on, else 'standard'),
    with the official settings; points fooled by an earlier attack are not attacked again."""
    check_inputs(x, y)
    check_eps(eps, norm)
    version = autoattack_version(model, version)
    if eps == 0:
        return x.detach().clone()
    aa = _autoattack(model, eps, norm, seed, x.device, version)
    return aa.run_standard_evaluation(x.detach(), y, batch_size=len(x))[0].detach()


def autoattack_version(model: nn.Module, version: str) -> str:
    """The version ``autoattack`` runs on ``model`` ('auto' resolved)."""
    if version not in AA_VERSIONS:
        raise bad("version", version, f"choose one of {', '.join(AA_VERSIONS)}")
    return ("rand" if is_stochastic(model) else "standard") if version == "auto" else version
