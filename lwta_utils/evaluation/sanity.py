"""Automatic sanity checks of a robustness evaluation (Carlini et al. 2019, "On
evaluating adversarial robustness"; AutoAttack's flags).

A model that fails a check gets a short flag; the flags are stored in
``results/sanity_<name>.json`` and shown in every table the model appears in.

- monotone: under every attack, accuracy does not rise with eps (clean at 0).
- large eps: the strongest white-box attack at the largest eps it ran at
  brings accuracy to about 0.
- more steps / more EOT: of two runs of an attack that differ only in the
  number of steps (or EOT samples), the larger one does not give a higher
  accuracy.
- black-box vs white-box: no black-box or transfer attack beats every
  white-box attack at the same eps.
- gradient cosine: the input gradients of two passes point the same way
  (median cosine; stochastic layers make them differ).
- zero gradients: the input gradient is not zero everywhere for more than a
  few examples.

Accuracies are compared on the examples both runs share (the shorter prefix),
as means over draws, with ``tolerance`` of slack (at least two examples' worth).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.attacks.gradients import input_gradient
from lwta_utils.core.modes import eval_mode
from lwta_utils.evaluation.records import Record, record_key

VARY = ("steps", "eot_samples")


def two_pass_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flattened input gradients (cross-entropy) of two forward passes, fresh draws each."""
    return input_gradient(model, x, y).flatten(1), input_gradient(model, x, y).flatten(1)


def gradient_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> dict:
    """Per example: cosine between the input gradients (cross-entropy) of two passes, and
    whether the gradient is zero everywhere; summarised as median, mean and shares."""
    dev = next(model.parameters()).device
    cos, zero, norm = [], [], []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            g1, g2 = two_pass_gradients(model, xb, yb)
            cos.append(F.cosine_similarity(g1, g2, dim=1, eps=1e-30).cpu())
            zero.append(((g1 == 0).all(1) | (g2 == 0).all(1)).cpu())
            norm.append(g1.norm(dim=1).cpu())
    cos, zero, norm = torch.cat(cos), torch.cat(zero), torch.cat(norm)
    return {"gradient_cosine_median": float(cos.median()), "gradient_cosine_mean": float(cos.mean()),
            "zero_gradient_share": float(zero.float().mean()), "gradient_norm_median": float(norm.median()),
            "n_examples": len(x)}


def _acc(correct: np.ndarray, n: int) -> float:
    return float(correct[:, :n].mean())


def _tol(tol: float, n: int) -> float:
    """The slack of a comparison on n examples: ``tolerance``, or two examples' worth if more."""
    return max(tol, 2.0 / n)


def _pair_acc(correct: dict, a: Record, b: Record) -> tuple[float, float, int]:
    ka, kb = record_key(a), record_key(b)
    n = min(correct[ka].shape[1], correct[kb].shape[1])
    return _acc(correct[ka], n), _acc(correct[kb], n), n


def _check(name: str, passed: bool, detail: str, flag: str) -> dict:
    return {"check": name, "passed": bool(passed), "detail": detail, "flag": "" if passed else flag}


def sanity_checks(records: list[Record], correct: dict, grads: dict, cfg) -> dict:
    """Run every check on one model's records (``cfg``: a SanityConfig). Returns
    ``{"checks": [...], "flags": [...], "gradients": grads}``; each check has
    'check', 'passed', 'detail' and, when failed, a short 'flag'."""
    tol = cfg.tolerance
    atk = [r for r in records if r.attack not in ("none", "worst_case") and not r.cascade_step]
    steps = [r for r in records if r.cascade_step]
    clean = next(r for r in records if r.attack == "none")
    checks = []

    # accuracy falls monotonically with eps (neighbours compared on the examples both ran on)
    bad = []
    for key in dict.fromkeys(r.attack for r in atk):
        curve = [clean] + sorted((r for r in atk if r.attack == key), key=lambda r: r.eps)
        for lo, hi in zip(curve, curve[1:]):
            acc_lo, acc_hi, n = _pair_acc(correct, lo, hi)
            if acc_hi > acc_lo + _tol(tol, n):
                bad.append(f"{key}: {100 * acc_lo:.1f}% at eps {lo.eps:g} < {100 * acc_hi:.1f}% at {hi.eps:g} on {n}")
    checks.append(_check("monotone in eps", not bad, "; ".join(bad) or "every attack's accuracy falls with eps",
                         "accuracy rises with eps"))

    # reaches about 0 at the largest eps (white-box, Linf)
    wb = [r for r in atk if r.kind == "white-box" and r.norm == "linf"]
    if wb:
        top = max(r.eps for r in wb)
        best = min((r for r in wb if np.isclose(r.eps, top)), key=lambda r: r.accuracy)
        ok = best.accuracy <= cfg.large_eps_accuracy
        checks.append(_check("about 0 at large eps", ok,
                             f"{best.attack} at eps {top:g}: {100 * best.accuracy:.1f}% "
                             f"(allowed <= {100 * cfg.large_eps_accuracy:g}%)", f"{100 * best.accuracy:.0f}% left at eps {top:g}"))

    # more steps / EOT samples never raise accuracy
    for vary in VARY:
        bad, pairs = [], 0
        for i, a in enumerate(atk):
            for b in atk[i + 1:]:
                pa = {k: v for k, v in a.attack_params.items() if k != vary}
                pb = {k: v for k, v in b.attack_params.items() if k != vary}
                va, vb = a.attack_params.get(vary), b.attack_params.get(vary)
                if a.attack_name != b.attack_name or pa != pb or va == vb or va is None or vb is None:
                    continue
                pairs += 1
                small, large = (a, b) if va < vb else (b, a)
                acc_s, acc_l, n = _pair_acc(correct, small, large)
                if acc_l > acc_s + _tol(tol, n):
                    bad.append(f"{large.attack} ({vary} {large.attack_params[vary]}) {100 * acc_l:.1f}% > "
                               f"{small.attack} ({vary} {small.attack_params[vary]}) {100 * acc_s:.1f}% on {n}")
        if pairs:
            what = "more steps" if vary == "steps" else "more EOT samples"
            checks.append(_check(f"{what} never help the model", not bad,
                                 "; ".join(bad) or f"{pairs} pair(s) compared", f"{what} raise accuracy"))

    # black-box and transfer attacks do not beat white-box ones
    bad = []
    for eps in sorted({r.eps for r in atk}):
        white = [r for r in atk if r.kind == "white-box" and np.isclose(r.eps, eps) and r.norm == "linf"]
        black = [r for r in atk if r.kind in ("black-box", "transfer") and np.isclose(r.eps, eps)]
        for b in black:
            if not white:
                continue
            best_white = min(white, key=lambda r: _pair_acc(correct, r, b)[0])
            acc_w, acc_b, n = _pair_acc(correct, best_white, b)
            if acc_b < acc_w - _tol(tol, n):
                bad.append(f"{b.attack} {100 * acc_b:.1f}% < {best_white.attack} {100 * acc_w:.1f}% at eps {eps:g} on {n}")
    # in the cascade: a black-box or transfer step that fools examples every white-box step before it left
    white_before = False
    for r in steps:
        white_before |= r.kind == "white-box"
        fooled = r.attack_params.get("n_fooled", 0)
        if r.kind in ("black-box", "transfer") and white_before and fooled > _tol(tol, r.n_examples) * r.n_examples:
            bad.append(f"{r.attack} fooled {fooled} of the {r.n_attacked} examples the white-box attacks before it "
                       f"left (of {r.n_examples})")
    if any(r.kind in ("black-box", "transfer") for r in atk + steps):
        checks.append(_check("black-box and transfer do not beat white-box", not bad,
                             "; ".join(bad) or "the best white-box attack is at least as strong",
                             "black-box beats white-box"))

    # the suite's worst case holds against every attack run on its own at the same eps (on its digits)
    worst = next((r for r in records if r.attack == "worst_case"), None)
    if worst is not None and steps:
        w = correct[record_key(worst)].all(0)
        bad, pairs = [], 0
        for r in atk:
            if r.norm != "linf" or not np.isclose(r.eps, worst.eps):
                continue
            pairs += 1
            rob = correct[record_key(r)].all(0)
            n = len(rob)
            beaten = int((w[:n] & ~rob).sum())
            if beaten > _tol(tol, n) * n:
                bad.append(f"{r.attack} fooled {beaten} of the first {n} digits the suite left robust")
        if pairs:
            checks.append(_check("no attack outside the suite beats its worst case", not bad,
                                 "; ".join(bad) or f"{pairs} attack(s) run on their own compared on their digits",
                                 "an attack outside the suite beats it"))
    if grads:
        c = grads["gradient_cosine_median"]
        checks.append(_check("input gradients agree between passes", c >= cfg.min_gradient_cosine,
                             f"median cosine of two passes {c:.3f} (threshold {cfg.min_gradient_cosine:g})",
                             f"gradient cosine {c:.2f}"))
        z = grads["zero_gradient_share"]
        checks.append(_check("gradients not zero", z <= cfg.max_zero_gradients,
                             f"{100 * z:.1f}% of examples have an all-zero input gradient",
                             f"zero gradients on {100 * z:.0f}%"))
    return {"checks": checks, "flags": [c["flag"] for c in checks if not c["passed"]], "gradients": grads,
            "clean_accuracy": clean.accuracy}
