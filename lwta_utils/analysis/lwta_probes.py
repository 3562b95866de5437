"""What the LWTA notebook measures: randomness across draws, winner statistics, gradient noise.

Each function takes trained models, uses the explicit switches (never
``model.train()``), writes a small JSON record to ``results/`` and returns a
table. Every number is computed here from the models and the test split.
"""
from __future__ import annotations

import dataclasses
from contextlib import ExitStack

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.analysis.probe_cache import cached_probe
from lwta_utils.core.modes import eval_mode
from lwta_utils.core.stats import wilson_interval
from lwta_utils.core.switches import noise_from, stream, switches
from lwta_utils.defenses.ibp import IBPGate
from lwta_utils.defenses.lwta import LWTA, lwta_layers
from lwta_utils.evaluation.evaluate import draw_summary
from lwta_utils.evaluation.loading import load_trained
from lwta_utils.evaluation.sanity import two_pass_gradients
from lwta_utils.models.inference import draw_logits, predict_logits


def lwta_model_names(cfg, stage: str | None = None) -> list[str]:
    """The profile's LWTA models (of one training stage, when given)."""
    return [n for n, m in cfg.models.items() if m.activation == "lwta" and stage in (None, m.stage)]


def draw_statistics(cfg, splits, names: list[str] | None = None, draws: int | None = None, seed: int | None = None,
                    device: str = "cpu") -> pd.DataFrame:
    """Clean test accuracy over ``draws`` stochastic forward passes (mean, sd, min, max, worst-of-draws),
    the share of test inputs whose predicted class changes across draws, and the accuracy of the
    deterministic test modes (argmax winner, expectation). Writes ``results/lwta_draws.json``
    (default: the LWTA models of stage 'lwta'; the rows of other models already there are kept)."""
    names = lwta_model_names(cfg, "lwta") if names is None else names
    if not names:
        return pd.DataFrame()
    draws = cfg.report.probes.draws if draws is None else draws
    x, y = splits.x_test[: cfg.eval.n_examples], splits.y_test[: cfg.eval.n_examples]
    seed = cfg.seed if seed is None else seed

    def measure(name: str) -> list[dict]:
        model = load_trained(cfg, name, torch.device(device))[0]
        with eval_mode(model), switches(model, phase="test", stochastic=True, test_mode="sample"):
            pred = draw_logits(model, x, draws, generator=stream(seed, "probe", "draws", name)).argmax(2)
        row = {"model": cfg.label(name), "n": len(y), "draws": draws, **draw_summary(pred, y)}
        for mode in ("argmax", "expectation"):
            with eval_mode(model), switches(model, phase="test", stochastic=False, test_mode=mode):
                k = int((predict_logits(model, x).argmax(1) == y).sum())
            row[f"acc_{mode}"] = k / len(y)
            row[f"acc_{mode}_ci"] = list(wilson_interval(k, len(y)))
        return [row]

    rows = cached_probe(cfg, "lwta_draws", names, measure, {"draws": draws, "n": len(y), "seed": seed})
    return pd.DataFrame(rows).set_index("model")


@torch.no_grad()
def winner_statistics(cfg, splits, names: list[str] | None = None, n: int | None = None, seed: int | None = None,
                      device: str = "cpu") -> pd.DataFrame:
    """Per model and LWTA layer, over ``n`` test inputs at test temperature with sampling on: how often
    each unit of a block wins (the hard winner of the drawn mask) summarised over blocks, the share of
    outputs that are ~0 (|y| < 1e-3 |h|, i.e. losers), and for IBP models the share of utility
    indicators kept. Writes ``results/lwta_winners.json`` (with the per-block
    frequencies; default models and kept rows as in :func:`draw_statistics`)."""
    names = lwta_model_names(cfg, "lwta") if names is None else names
    if not names:
        return pd.DataFrame()
    n = cfg.report.probes.n_winners if n is None else n
    x = splits.x_test[:n]
    seed = cfg.seed if seed is None else seed

    def measure(name: str) -> tuple[list[dict], list[dict]]:
        model = load_trained(cfg, name, torch.device(device))[0]
        rows, detail = [], []
        layers = lwta_layers(model)
        gates = [m for m in model.modules() if isinstance(m, IBPGate)]
        inputs: dict[LWTA, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out: inputs.__setitem__(mod, inp[0])) for m in layers]
        with ExitStack() as stack:
            stack.enter_context(eval_mode(model))
            stack.enter_context(switches(model, phase="test", stochastic=True, test_mode="sample", keep_mask=True))
            stack.enter_context(noise_from(model, stream(seed, "probe", "winners", name)))
            model(x)
            masks = {m: m.last_mask for m in layers}
        for h in hooks:
            h.remove()
        for i, m in enumerate(layers):
            mask = masks[m]                                               # (B, K, U, ...)
            wins = F.one_hot(mask.argmax(2), m.U).movedim(-1, 2).float()  # hard winners
            freq = wins.movedim(0, 2).reshape(m.num_features // m.U, m.U, -1).mean(2)  # (K, U)
            hv = m.blocks(inputs[m])
            out = (hv * mask).abs()
            row = {"model": cfg.label(name), "layer": f"{i + 1}: {m.kind} {m.num_features}",
                   "unit0_win_share": float(freq[:, 0].mean()),
                   "blocks_one_sided": float(((freq[:, 0] > 0.95) | (freq[:, 0] < 0.05)).float().mean()),
                   "output_sparsity": float((out < 1e-3 * hv.abs().clamp_min(1e-12)).float().mean())}
            if i < len(gates):
                row["ibp_kept_share"] = gates[i].active_share()
            rows.append(row)
            detail.append({"layer": row["layer"], "win_freq": freq.tolist()})
        return rows, detail

    rows = cached_probe(cfg, "lwta_winners", names, measure, {"n": len(x), "seed": seed}, detail=True)
    return pd.DataFrame(rows).set_index(["model", "layer"])


def gradient_cosine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gradient: str,
                    phase: str = "test", generator: torch.Generator | None = None) -> np.ndarray:
    """Per-example cosine between the input gradients of two forward passes (fresh draws each, from
    ``generator``)."""
    with eval_mode(model), switches(model, phase=phase, stochastic=True, test_mode="sample", gradient=gradient), \
            noise_from(model, generator):
        g1, g2 = two_pass_gradients(model, x, y)
    return F.cosine_similarity(g1, g2, dim=1, eps=1e-30).numpy()


def gradient_statistics(cfg, splits, names: list[str] | None = None, n: int | None = None, seed: int | None = None,
                        device: str = "cpu") -> pd.DataFrame:
    """Cosine similarity between input gradients of two passes, relaxed versus straight-through
    gradient, at the test temperature (and, for reference, the training temperature).
    Writes ``results/lwta_gradients.json`` (default models and kept rows as in :func:`draw_statistics`)."""
    names = lwta_model_names(cfg, "lwta") if names is None else names
    if not names:
        return pd.DataFrame()
    n = cfg.report.probes.n_gradients if n is None else n
    x, y = splits.x_test[:n], splits.y_test[:n]
    seed = cfg.seed if seed is None else seed

    def measure(name: str) -> list[dict]:
        model = load_trained(cfg, name, torch.device(device))[0]
        rows = []
        for phase in ("test", "train"):
            for gradient in ("relaxed", "straight_through"):
                cos = gradient_cosine(model, x, y, gradient, phase, stream(seed, "probe", "gradients", name, phase))
                rows.append({"model": cfg.label(name), "temperature": "test (0.01)" if phase == "test"
                             else "train (0.67)", "gradient": gradient, "n": len(cos),
                             "cos_mean": float(cos.mean()), "cos_sd": float(cos.std(ddof=1)),
                             "cos_median": float(np.median(cos))})
        return rows

    rows = cached_probe(cfg, "lwta_gradients", names, measure, {"n": len(x), "seed": seed})
    return pd.DataFrame(rows).set_index(["model", "temperature", "gradient"])


def lwta_config_table(cfg) -> pd.DataFrame:
    """Which LWTA model is which: the paper's setting or the IBP / ELBO variant."""
    rows = []
    for name in lwta_model_names(cfg):
        m = cfg.models[name]
        rows.append({"model": cfg.label(name), "ibp": m.ibp, "loss": m.train.loss,
                     "adversarial": m.train.adversarial.method,
                     "activation_options": dataclasses.asdict(m).get("activation_options") or "defaults",
                     "setting": "IBP / ELBO variant (Panousis et al. 2019; the student study)" if (m.ibp or m.train.loss == "elbo")
                     else "the adversarial paper's layer (no IBP, no KL)"})
    return pd.DataFrame(rows).set_index("model")
