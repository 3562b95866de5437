"""What the IBP papers report about the IBP / stick-breaking variant, measured on our models.

Panousis, Chatzis & Theodoridis ("Nonparametric Bayesian Deep Networks with Local Competition",
ICML 2019) report accuracy at a fraction of the weights: the utility indicators whose posterior
probability q(z = 1) falls below the test threshold are cut, and the weights they multiply can be
dropped. Here, per model and gated layer: the share of active indicators (q above the threshold),
the weights kept, the blocks removed altogether, the clean test accuracy of the network as it runs
at test time (that is, at that compression) beside the plain LWTA and ReLU CNNs, the same at higher
thresholds, how each ELBO variant was trained (KL weight, warm-up, epochs to convergence), and
the learned stick-breaking probabilities. Everything is computed from the checkpoints, the
training records and the test split, and written to ``results/ibp_compression.json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lwta_utils.analysis.figures import model_colors, save_figure
from lwta_utils.analysis.probe_cache import probe_hash
from lwta_utils.config.schema import STAGES
from lwta_utils.core.errors import ConfigError, check_range
from lwta_utils.core.jsonfiles import read_versioned, write_versioned
from lwta_utils.core.lazy import LazyModule
from lwta_utils.core.modes import eval_mode
from lwta_utils.core.provenance import provenance
from lwta_utils.core.stats import wilson_interval
from lwta_utils.core.switches import is_stochastic, maybe_switches, stream
from lwta_utils.defenses.ibp import gated_layers, kept_weights
from lwta_utils.evaluation.loading import load_models
from lwta_utils.models.inference import draw_logits

plt = LazyModule("matplotlib.pyplot")  # imported by the first figure drawn
sns = LazyModule("seaborn")

THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)  # test thresholds of the sweep (0.01: the authors')
RESULT = "ibp_compression.json"


def ibp_model_names(cfg, stage: str | None = None) -> list[str]:
    """The profile's IBP models (of one training stage, when given)."""
    return [n for n, m in cfg.models.items() if m.ibp and stage in (None, m.stage)]


def compared_model_names(cfg) -> list[str]:
    """The default comparison: the reference ReLU model when it is trained by the time of stage 'lwta'
    (else the first model of stage 'baseline', if any), then the LWTA models of stage 'lwta' (plain
    and IBP)."""
    by_now = STAGES[: STAGES.index("lwta") + 1]
    reference = cfg.report.reference if cfg.report.reference in cfg.models else None
    if reference is None or cfg.models[reference].stage not in by_now:
        reference = next((n for n, m in cfg.models.items() if m.stage == "baseline"), None)
    lwta = [n for n, m in cfg.models.items() if m.activation == "lwta" and m.stage == "lwta" and n != reference]
    return ([reference] if reference else []) + lwta


def layer_rows(model: nn.Module) -> list[dict]:
    """Per gated layer, at the layers' current test thresholds: indicators, active indicators and
    their share (q(z = 1) above the threshold), blocks of U units removed (every indicator of the
    block cut), weights and weights kept (those multiplied by an active indicator)."""
    rows = []
    for name, layer in gated_layers(model):
        gate = layer.gate
        active = gate.active_mask()
        kept, total = kept_weights(layer)
        rows.append({"layer": f"{name}: {gate.kind} {gate.K * gate.U}", "kind": gate.kind,
                     "threshold": gate.threshold, "indicators": active.numel(), "active": int(active.sum()),
                     "active_share": float(active.float().mean()), "blocks": gate.K,
                     "blocks_removed": int((~active.any(1)).sum()), "weights": total, "weights_kept": kept,
                     "weights_kept_share": kept / total})
    return rows


def compression_summary(model: nn.Module) -> dict:
    """Over the whole model: the share of active indicators, the weights of the gated layers kept,
    and the weights of every conv / linear layer kept (the classifier and ungated layers count as
    kept; biases and BatchNorm not counted), with the compression ratio (weights / weights kept)."""
    rows = layer_rows(model)
    all_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    gated = sum(r["weights"] for r in rows)
    kept = sum(r["weights_kept"] for r in rows)
    kept_all = all_weights - gated + kept
    indicators = sum(r["indicators"] for r in rows)
    return {"active_share": sum(r["active"] for r in rows) / indicators if indicators else float("nan"),
            "gated_weights_kept_share": kept / gated if gated else 1.0,
            "weights": all_weights, "weights_kept": kept_all, "weights_kept_share": kept_all / all_weights,
            "compression": all_weights / max(kept_all, 1)}


def set_thresholds(model: nn.Module, threshold: float) -> dict:
    """Set every gate's test threshold; returns the previous ones (gate -> threshold)."""
    before = {layer.gate: layer.gate.threshold for _, layer in gated_layers(model)}
    for gate in before:
        gate.threshold = float(threshold)
    return before


def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int,
                   generator: torch.Generator | None = None) -> dict:
    """Clean accuracy at test time (test phase, sampling on: the deployed network), mean over
    ``draws`` forward passes (one for a deterministic model), the noise from ``generator``, with
    the 95% Wilson interval of round(mean x n) out of n."""
    draws = draws if is_stochastic(model) else 1
    with eval_mode(model), maybe_switches(model, phase="test", stochastic=True):
        pred = draw_logits(model, x, draws, generator=generator).argmax(2)
    per_draw = (pred == y).float().mean(1)
    k = int(round(float(per_draw.mean()) * len(y)))
    lo, hi = wilson_interval(k, len(y))
    return {"acc": k / len(y), "acc_ci": [lo, hi], "acc_sd": float(per_draw.std()) if draws > 1 else 0.0,
            "n": len(y), "draws": draws}


def training_setting(cfg, name: str) -> dict:
    """How an ELBO model was trained, from its configuration and ``results/train_<name>.json``: the
    KL's N and warm-up, the selection metric, the epochs budgeted and run, the best epoch, the wall
    time."""
    m = cfg.models[name]
    t = m.train
    out = {"loss": t.loss, "adversarial": t.adversarial.method}
    if t.loss == "elbo":
        out |= {"kl_n": t.kl_data_size or cfg.data.n_train,
                "kl_n_source": "N_train (exact ELBO)" if not t.kl_data_size else "N_source (deviation)",
                "kl_warmup_epochs": t.kl_warmup_epochs}
    path = cfg.results_dir / f"train_{name}.json"
    if path.is_file():
        rec = read_versioned(path, "training")
        hist = rec["history"]
        out |= {"select_metric": rec["select_metric"], "best_val_metric": rec["best_val_metric"],
                "epochs_budget": t.epochs, "epochs_run": len(hist), "stopped_early": len(hist) < t.epochs,
                "best_epoch": rec["best_epoch"], "train_wall_time_s": rec["train_wall_time_s"],
                "s_per_epoch": rec["train_wall_time_s"] / max(len(hist), 1)}
        best = next((r for r in hist if r["epoch"] == rec["best_epoch"]), {})
        out |= {f"{k}_at_best": best[k] for k in ("val_acc", "train_kl") if k in best}
    return out


def _stick_profile(model: nn.Module) -> list[dict]:
    """Per gated layer: the learned stick-breaking probabilities E_q[pi_k] and the mean q(z = 1)
    of each block (over its indicators)."""
    out = []
    for name, layer in gated_layers(model):
        gate = layer.gate
        with torch.no_grad():
            out.append({"layer": f"{name}: {gate.kind} {gate.K * gate.U}", "threshold": gate.threshold,
                        "prior_probs": gate.prior_probs().tolist(), "q_block_mean": gate.probs().mean(1).tolist()})
    return out


def ibp_compression(cfg, splits, names: list[str] | None = None, draws: int | None = None,
                    thresholds: tuple[float, ...] = THRESHOLDS, sweep_draws: int = 5, seed: int | None = None,
                    device: str = "cpu") -> pd.DataFrame:
    """Per model (default: the reference ReLU model and the LWTA models of stage 'lwta'): the
    share of active utility indicators, the weights kept and the compression, the clean accuracy
    on the whole test split at that compression (``draws`` passes, default ``report.probes.draws``;
    95% Wilson interval) and how the model was trained; per gated layer the same shares
    (:func:`ibp_layer_table`); for IBP models the same at higher test thresholds
    (:func:`ibp_threshold_table`, ``sweep_draws`` passes each); the learned stick-breaking
    probabilities (:func:`plot_stick_breaking`). Writes ``results/ibp_compression.json`` (the
    rows of models measured before are kept)."""
    names = compared_model_names(cfg) if names is None else list(names)
    if not names:  # a profile without LWTA models of stage 'lwta' (paper): nothing to compare
        return pd.DataFrame()
    draws = cfg.report.probes.draws if draws is None else draws
    check_range("draws", draws, 1, integer=True)
    check_range("sweep_draws", sweep_draws, 1, integer=True)
    for i, th in enumerate(thresholds):
        check_range(f"thresholds[{i}]", th, 0.0, 1.0)
    seed = cfg.seed if seed is None else seed
    x, y = splits.x_test, splits.y_test
    settings = {"draws": draws, "sweep_draws": sweep_draws, "thresholds": list(thresholds), "seed": seed, "n": len(y)}
    hashes = {n: probe_hash(cfg, n, **settings) for n in names}
    cached = (_read(cfg) or {}).get("hashes", {})
    todo = [n for n in names if cached.get(n) != hashes[n]]  # the others' rows in the file still hold
    if not todo:
        return ibp_summary_table(cfg)
    rows, layers, sweep, sticks = [], [], [], {}
    for name, model in load_models(cfg, todo, device).items():
        label = cfg.label(name)
        row = {"model": label, "name": name, "ibp": cfg.models[name].ibp, **compression_summary(model),
               **clean_accuracy(model, x, y, draws, stream(seed, "probe", "ibp", name)),
               **training_setting(cfg, name)}
        rows.append(row)
        layers += [{"model": label, **r} for r in layer_rows(model)]
        if not cfg.models[name].ibp:
            continue
        sticks[name] = _stick_profile(model)
        for th in thresholds:
            before = set_thresholds(model, th)
            summary = compression_summary(model)
            acc = clean_accuracy(model, x, y, sweep_draws, stream(seed, "probe", "ibp", name, th))
            for gate, old in before.items():
                gate.threshold = old
            sweep.append({"model": label, "threshold": th, "active_share": summary["active_share"],
                          "weights_kept_share": summary["weights_kept_share"],
                          "compression": summary["compression"], **acc})
    _write(cfg.results_dir / RESULT, {r["model"] for r in rows}, rows, layers, sweep, sticks,
           {n: hashes[n] for n in todo}, seed=seed,
           n=len(y), draws=draws, sweep_draws=sweep_draws)
    return ibp_summary_table(cfg)


def _write(path: Path, models: set[str], rows, layers, sweep, sticks, hashes: dict, **meta) -> None:
    """Write the measurements, keeping those of other models already in the file."""
    try:
        old = read_versioned(path, "ibp_compression") if path.is_file() else {}
    except ConfigError:  # an older layout: rewritten
        old = {}
    keep = lambda key: [r for r in old.get(key, []) if r["model"] not in models]  # noqa: E731
    names = {r["name"] for r in rows}
    write_versioned(path, "ibp_compression", {
        "rows": keep("rows") + rows, "per_layer": keep("per_layer") + layers, "sweep": keep("sweep") + sweep,
        "sticks": {**{k: v for k, v in old.get("sticks", {}).items() if k not in names}, **sticks},
        "hashes": {**old.get("hashes", {}), **hashes},  # per model: its checkpoint, the data and these settings
        **meta, **provenance()})


def _read(cfg) -> dict | None:
    path = cfg.results_dir / RESULT
    return read_versioned(path, "ibp_compression") if path.is_file() else None


SUMMARY_COLUMNS = ("acc", "acc_ci", "active_share", "weights_kept_share", "compression", "kl_n", "kl_n_source",
                   "kl_warmup_epochs", "adversarial", "select_metric", "epochs_budget", "epochs_run", "best_epoch",
                   "stopped_early", "train_wall_time_s", "s_per_epoch")


def _table(cfg, key: str, index: list[str]) -> pd.DataFrame:
    """The rows ``key`` of ``results/ibp_compression.json`` as a table (empty without them)."""
    rec = _read(cfg)
    if rec is None or not rec[key]:
        return pd.DataFrame()
    return pd.DataFrame(rec[key]).set_index(index)


def ibp_summary_table(cfg) -> pd.DataFrame:
    """One row per model from ``results/ibp_compression.json``: clean test accuracy (interval) at
    the model's compression, active indicators, weights kept, and how it was trained."""
    df = _table(cfg, "rows", ["model"])
    return df[[c for c in SUMMARY_COLUMNS if c in df]]


def ibp_layer_table(cfg) -> pd.DataFrame:
    """Per IBP model and gated layer: active indicators, blocks removed, weights kept."""
    return _table(cfg, "per_layer", ["model", "layer"])


def ibp_threshold_table(cfg) -> pd.DataFrame:
    """Per IBP model and test threshold: active indicators, weights kept, clean accuracy."""
    return _table(cfg, "sweep", ["model", "threshold"])


def plot_stick_breaking(cfg) -> plt.Figure | None:
    """The learned stick-breaking probabilities E_q[pi_k] per block k (solid) and the mean
    q(z = 1) of each block's indicators (dashed), one panel per gated layer, one colour per model,
    with the test threshold; from ``results/ibp_compression.json``."""
    rec = _read(cfg)
    if rec is None or not rec["sticks"]:
        return None
    names = list(rec["sticks"])
    colors = model_colors(cfg)
    if len({colors.get(n) for n in names}) < len(names):  # models outside the report's groups may share one
        colors = dict(zip(names, sns.color_palette("colorblind", len(names))))
    n_layers = max(len(v) for v in rec["sticks"].values())
    fig, axes = plt.subplots(1, n_layers, figsize=(4.6 * n_layers, 3.6), squeeze=False)
    for name, layers in rec["sticks"].items():
        label = cfg.label(name) if name in cfg.models else name
        for ax, L in zip(axes[0], layers):
            k = np.arange(1, len(L["prior_probs"]) + 1)
            ax.plot(k, L["prior_probs"], color=colors[name], label=f"{label}: E[pi_k]")
            ax.plot(k, L["q_block_mean"], color=colors[name], ls="--", label=f"{label}: mean q(z = 1)")
            ax.set_title(L["layer"], fontsize=10)
    for ax, L in zip(axes[0], next(iter(rec["sticks"].values()))):
        ax.axhline(L["threshold"], color="black", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(ax.get_ylim()[0], L["threshold"] / 2))
        ax.set_xlabel("block k (stick order)")
        ax.set_ylabel("probability")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    fig.suptitle("Learned stick-breaking probabilities (solid) and utility-indicator probabilities (dashed); "
                 "dotted: the test threshold", y=1.02, fontsize=10)
    fig.tight_layout()
    save_figure(fig, cfg.figures_dir / "ibp_sticks.png")
    return fig
