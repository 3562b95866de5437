"""What the k-WTA and adversarial-training notebooks measure about the defenses themselves.

Each function loads trained models (their configuration hashes must match),
computes its numbers from the models, the training records and the test
split, writes a small JSON record to ``results/`` and returns a table.
"""
from __future__ import annotations

import pandas as pd
import torch

from lwta_utils.analysis.probe_cache import cached_probe
from lwta_utils.core.jsonfiles import read_versioned
from lwta_utils.core.modes import eval_mode
from lwta_utils.core.stats import wilson_interval
from lwta_utils.core.switches import is_stochastic, stream, switches
from lwta_utils.defenses.kwta import KWTA
from lwta_utils.defenses.pni import NoiseInjection, PNIConv2d, PNILinear
from lwta_utils.defenses.wca import WCAHead
from lwta_utils.evaluation.evaluate import draw_summary
from lwta_utils.evaluation.loading import load_trained
from lwta_utils.models.inference import draw_logits, predict_logits

CPU = torch.device("cpu")


def _names(cfg, names, pick) -> list[str]:
    return [n for n, m in cfg.models.items() if pick(m)] if names is None else list(names)


@torch.no_grad()
def kwta_layer_table(cfg, splits, names: list[str] | None = None, n: int | None = None) -> pd.DataFrame:
    """Per k-WTA model and layer, on ``n`` test inputs: values per sample N, gamma, k, and the
    measured share of values kept (k/N when there are no ties) and share of samples keeping
    exactly k. Writes ``results/kwta_layers.json``."""
    names = _names(cfg, names, lambda m: m.activation == "kwta")
    n = cfg.report.probes.n_kwta if n is None else n
    x = splits.x_test[:n]

    def measure(name: str) -> list[dict]:
        model, rows, seen = load_trained(cfg, name, CPU)[0], [], []
        hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, out)))
                 for m in model.modules() if isinstance(m, KWTA)]
        with eval_mode(model):
            model(x)
        for h in hooks:
            h.remove()
        for i, (mod, out) in enumerate(seen):
            kept = (out.flatten(1) != 0).sum(1)  # a kept value that is exactly 0 counts as dropped
            N = out[0].numel()
            k = max(1, int(mod.gamma * N))
            rows.append({"model": cfg.label(name), "layer": i + 1, "shape": "x".join(map(str, out.shape[1:])),
                         "N": N, "gamma": mod.gamma, "k": k, "kept_share": float(kept.float().mean() / N),
                         "exactly_k": float((kept == k).float().mean())})
        return rows

    rows = cached_probe(cfg, "kwta_layers", names, measure, {"n": len(x)})
    return pd.DataFrame(rows).set_index(["model", "layer"]) if rows else pd.DataFrame()


def training_history_table(cfg, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Chosen columns of ``results/train_<name>.json``'s per-epoch history."""
    hist = read_versioned(cfg.results_dir / f"train_{name}.json", "training")["history"]
    return pd.DataFrame([{c: h.get(c) for c in ("epoch",) + columns} for h in hist]).set_index("epoch")


def gamma_schedule_table(cfg) -> pd.DataFrame:
    """Per epoch of every model trained with k-WTA's incremental schedule: gamma, lr, loss, validation accuracy."""
    frames = {cfg.label(n): training_history_table(cfg, n, ("gamma", "lr", "train_loss", "val_acc"))
              for n, m in cfg.models.items() if m.train.gamma_schedule.start}
    return pd.concat(frames, names=["model"]) if frames else pd.DataFrame()


def mixed_branch_table(cfg, names: list[str] | None = None) -> pd.DataFrame:
    """How often each branch of the mixed adversarial training was drawn (over all epochs), with the
    share and its 95% Wilson interval; the expected share is 1/8 per attack branch."""
    names = _names(cfg, names, lambda m: m.train.adversarial.method == "mixed")
    rows = []
    for name in names:
        hist = read_versioned(cfg.results_dir / f"train_{name}.json", "training")["history"]
        counts: dict[str, int] = {}
        for h in hist:
            for b, c in h.get("branches", {}).items():
                counts[b] = counts.get(b, 0) + c
        total = sum(counts.values())
        for b, c in sorted(counts.items()):
            lo, hi = wilson_interval(c, total)
            rows.append({"model": cfg.label(name), "branch": b, "iterations": c, "share": c / total,
                         "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows).set_index(["model", "branch"]) if rows else pd.DataFrame()


def noise_statistics(cfg, splits, names: list[str] | None = None, draws: int | None = None,
                     seed: int | None = None) -> pd.DataFrame:
    """Clean test accuracy of each model with stochastic layers over ``draws`` passes (mean, sd,
    worst-of-draws, share of predictions that change) and with the noise switched off
    (``stochastic=False``). Writes ``results/noise_draws.json``."""
    x, y = splits.x_test[: cfg.eval.n_examples], splits.y_test[: cfg.eval.n_examples]
    names = _names(cfg, names, lambda m: m.pni != "none" or m.head == "wca")
    draws = cfg.report.probes.draws if draws is None else draws
    seed = cfg.seed if seed is None else seed

    def measure(name: str) -> list[dict]:
        model = load_trained(cfg, name, CPU)[0]
        if not is_stochastic(model):
            return []
        with eval_mode(model):
            pred = draw_logits(model, x, draws, generator=stream(seed, "probe", "noise", name)).argmax(2)
            with switches(model, stochastic=False):
                k = int((predict_logits(model, x).argmax(1) == y).sum())
        return [{"model": cfg.label(name), "n": len(y), "draws": draws, **draw_summary(pred, y),
                 "acc_noise_off": k / len(y), "acc_noise_off_ci": list(wilson_interval(k, len(y)))}]

    rows = cached_probe(cfg, "noise_draws", names, measure, {"draws": draws, "n": len(y), "seed": seed})
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def pni_alpha_table(cfg, names: list[str] | None = None) -> pd.DataFrame:
    """The learned noise scales alpha of every PNI layer (initial value 0.25)."""
    names = _names(cfg, names, lambda m: m.pni != "none")

    def measure(name: str) -> list[dict]:
        model = load_trained(cfg, name, CPU)[0]
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (PNIConv2d, PNILinear, NoiseInjection))]
        return [{"model": cfg.label(name), "layer": lname, "kind": type(m).__name__, "n_alpha": m.alpha.numel(),
                 "alpha_mean": float(m.alpha.mean()), "alpha_min": float(m.alpha.min()),
                 "alpha_max": float(m.alpha.max())} for lname, m in layers]

    rows = cached_probe(cfg, "pni_alphas", names, measure, {})
    return pd.DataFrame(rows).set_index(["model", "layer"]) if rows else pd.DataFrame()


@torch.no_grad()
def wca_table(cfg, names: list[str] | None = None) -> pd.DataFrame:
    """Per WCA model: tr(Sigma), tr(W Sigma W^T), and the alignment ratio tr(W Sigma W^T) /
    (tr(Sigma) ||W||_F^2 / D): 1 for isotropic noise of the same total variance, > 1 when the noise
    is aligned with the classifier's weights; and the share of variance on Sigma's top eigenvector."""
    names = _names(cfg, names, lambda m: m.head == "wca")

    def measure(name: str) -> list[dict]:
        model, rows = load_trained(cfg, name, CPU)[0], []
        for head in (m for m in model.modules() if isinstance(m, WCAHead)):
            sigma, W = head.covariance(), head.fc.weight
            D = sigma.shape[0]
            eig = torch.linalg.eigvalsh(sigma)
            tr_w = float(head.alignment())
            rows.append({"model": cfg.label(name), "D": D, "trace_sigma": float(sigma.trace()),
                         "trace_W_sigma_Wt": tr_w,
                         "alignment_ratio": tr_w / (float(sigma.trace()) * float(W.pow(2).sum()) / D),
                         "top_eigen_share": float(eig[-1] / eig.sum()),
                         "L_upper_max": float(head.L.triu(1).abs().max())})
        return rows

    rows = cached_probe(cfg, "wca_heads", names, measure, {})
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()
