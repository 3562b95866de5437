"""Tables generated from the records in ``results/`` only.

Accuracy in % with its 95% Wilson interval; stochastic models: mean ± sd over draws. Every table
names the records it reads.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lwta_utils.analysis.queries import (
    _flags,
    _linf_at,
    _per_model,
    attack_label,
    headline_rows,
    reference_model,
    sanity_flags,
    study_records,
)
from lwta_utils.core.jsonfiles import read_versioned


def _cell(r) -> str:
    spread = f" ± {100 * r['accuracy_sd']:.1f}" if r.get("draws", 1) > 1 else ""
    return f"{100 * r['accuracy']:.1f}{spread} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def accuracy_table(cfg, eps: float | None = None) -> pd.DataFrame:
    """Accuracy (%) with 95% Wilson interval per model: clean, then every Linf attack at ``eps``
    (default ``eval.headline_eps``) and the sanity flags. Stochastic models: mean ± sd over
    ``eval.draws`` draws. ``n`` is the number of test digits of the clean column (attacks
    with fewer: see the headline table)."""
    eps = cfg.eval.headline_eps if eps is None else eps
    df = study_records(cfg)
    flags = sanity_flags(cfg)
    rows = []
    for name, sub in _per_model(cfg, df[(df["attack"] == "none") | _linf_at(df, eps)]):
        row = {"model": cfg.label(name), "training": sub["training"].iloc[0], "n": int(sub["n_examples"].iloc[0])}
        for _, r in sub.iterrows():
            row[attack_label(r) + ("" if r["attack"] == "none" else f" (n {r['n_examples']})")] = _cell(r)
        row["sanity flags"] = _flags(flags, name)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def headline_table(cfg, eps: float | None = None) -> pd.DataFrame:
    """The headline: per defense, clean accuracy, accuracy under the standard non-adaptive
    attack (``eval.standard_attack``) and under the strongest attack found at ``eps`` (which
    one, on how many digits), the per-example worst case over every attack, and the sanity
    flags. Accuracy in % [95% Wilson interval]; stochastic models: mean ± sd over draws."""
    rows = []
    for h in headline_rows(cfg, eps):
        row = {"model": cfg.label(h["name"]), "clean": _cell(h["clean"])}
        std, top, worst = h["standard"], h["strongest"], h["worst_case"]
        row["standard attack"] = f"{_cell(std)} ({attack_label(std)}, n {std['n_examples']})" if std is not None else "-"
        row["strongest attack"] = attack_label(top) if top is not None else "-"
        row["under strongest"] = f"{_cell(top)} (n {top['n_examples']})" if top is not None else "-"
        row["worst case over attacks"] = (f"{_cell(worst)} (n {worst['n_examples']})" if worst is not None else "-")
        row["sanity flags"] = _flags({} if h["flags"] is None else {h["name"]: h["flags"]}, h["name"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def sanity_table(cfg) -> pd.DataFrame:
    """Every sanity check of every model: passed or the flag, with the measured detail."""
    rows = []
    for name in cfg.models:
        path = cfg.results_dir / f"sanity_{name}.json"
        if not path.is_file():
            continue
        for c in read_versioned(path, "sanity")["checks"]:
            rows.append({"model": cfg.label(name), "check": c["check"], "result": "pass" if c["passed"] else
                         f"FLAG: {c['flag']}", "detail": c["detail"]})
    return pd.DataFrame(rows).set_index(["model", "check"]) if rows else pd.DataFrame()


def overhead_rows(cfg) -> list[dict]:
    """Per model (and benchmark-only variant): ``train`` / ``inference``, the benchmark's paired
    ratios to the reference's step and inference times (``results/bench_defenses.json``), their
    medians in ms, and ``epoch``, the mean training wall time per epoch over the reference's
    (``results/train_<name>.json``, first epoch left out when there are more: it holds compilation
    and warm-up; an epoch includes adversarial training's attacks and the validation passes)."""
    ref = reference_model(cfg)
    path = cfg.results_dir / "bench_defenses.json"
    bench = read_versioned(path, "benchmark") if path.is_file() else {}
    dev = next(iter(bench.get("results", {})), None)
    case = bench["results"][dev] if dev else {}
    key = f"ratio_to_{bench.get('reference', ref)}"
    epochs = {}
    for name in cfg.models:
        p = cfg.results_dir / f"train_{name}.json"
        if p.is_file():
            rec = read_versioned(p, "training")
            times = [h["epoch_time_s"] for h in rec["history"]]
            epochs[name] = (float(np.mean(times[1:] if len(times) > 1 else times)), rec["training"])
    rows = []
    for name in list(cfg.models) + [n for n in case.get("train", {}) if n not in cfg.models]:
        row = {"name": name, "label": cfg.label(name) if name in cfg.models else case.get("labels", {}).get(name, name),
               "device": f"{dev} ({bench.get('threads')} threads)" if dev else None}
        for mode in ("train", "inference"):
            r = case.get(mode, {}).get(name)
            row[mode], row[f"{mode}_ms"] = (r[key], r["median_ms"]) if r else (None, None)
        e, ref_e = epochs.get(name), epochs.get(ref)
        row["epoch"] = e[0] / ref_e[0] if e and ref_e else None
        row["training"] = e[1] if e else None
        rows.append(row)
    return rows


def overhead_table(cfg) -> pd.DataFrame:
    """``overhead_rows`` as a table: x ReLU ratios, the medians in ms, and what each training does."""
    rows = []
    for r in overhead_rows(cfg):
        rows.append({"model": r["label"],
                     "training step (x ReLU)": _num(r["train"]), "training step (ms)": _num(r["train_ms"], ".1f"),
                     "inference pass (x ReLU)": _num(r["inference"]),
                     "inference pass (ms)": _num(r["inference_ms"], ".1f"),
                     "training time per epoch (x ReLU standard)": _num(r["epoch"]),
                     "training": r["training"] or "-", "benchmark device": r["device"] or "not measured"})
    return pd.DataFrame(rows).set_index("model")


def _num(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)
