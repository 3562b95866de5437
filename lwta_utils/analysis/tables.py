"""Tables generated from the records in ``results/`` only.

Accuracy in % with its 95% Wilson interval. Clean: stochastic models as mean ± sd over draws.
Under attack: the share of examples classified correctly in every draw (the study's per-example
robustness), the mean over draws beside it. Every table names the records it reads.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lwta_utils.analysis.queries import (
    _flags,
    _linf_at,
    _per_model,
    attack_label,
    example_labels,
    headline_rows,
    per_example,
    reference_model,
    robust,
    sanity_flags,
    study_records,
)
from lwta_utils.core.jsonfiles import read_versioned
from lwta_utils.core.stats import paired_test


def _cell(r) -> str:
    """Clean: accuracy (mean ± sd over draws) [95% interval]. Under attack: the share of examples
    correct in every draw [95% interval], and for a stochastic model the mean over draws beside it."""
    draws = r.get("draws", 1) > 1
    if r["attack"] == "none":
        spread = f" ± {100 * r['accuracy_sd']:.1f}" if draws else ""
        return f"{100 * r['accuracy']:.1f}{spread} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
    value, lo, hi = robust(r)
    mean = f" (mean over {r['draws']} draws {100 * r['accuracy']:.1f})" if draws else ""
    return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]{mean}"


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
    """The headline: per defense, clean accuracy, accuracy under the standard non-adaptive attack
    (``eval.standard_attack``), the per-example worst case over the adaptive cascade (and every
    attack run on all the examples), the attack that fooled the most examples, and the sanity flags.
    Accuracy in % [95% Wilson interval]."""
    rows = []
    for h in headline_rows(cfg, eps):
        row = {"model": cfg.label(h["name"]), "clean": _cell(h["clean"])}
        std, top, worst = h["standard"], h["strongest"], h["worst_case"]
        row["standard attack"] = f"{_cell(std)} ({attack_label(std)}, n {std['n_examples']})" if std is not None else "-"
        row["worst case over attacks"] = (f"{_cell(worst)} (n {worst['n_examples']})" if worst is not None else "-")
        if top is not None and top.get("cascade_step", 0):
            fooled = top["attack_params"].get("n_fooled", 0)
            row["attack that fooled the most"] = (f"{attack_label(top)}: {fooled} of the {top['n_attacked']} examples "
                                                  f"still robust before it")
        else:
            row["attack that fooled the most"] = attack_label(top) if top is not None else "-"
        row["sanity flags"] = _flags({} if h["flags"] is None else {h["name"]: h["flags"]}, h["name"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def cascade_table(cfg, eps: float | None = None) -> pd.DataFrame:
    """The cascade per model: each attack in order, how many examples it attacked (those still
    robust) and newly fooled, the robustness after it, and the passes it made."""
    rows = []
    for h in headline_rows(cfg, eps):
        for r in h["steps"]:
            p = r["attack_params"]
            rows.append({"model": cfg.label(h["name"]), "step": int(r["cascade_step"]), "attack": attack_label(r),
                         "attacked": int(r["n_attacked"]), "newly fooled": int(p.get("n_fooled", 0)),
                         "robust after it": _cell(r), "forward passes": p.get("forward_passes"),
                         "backward passes": p.get("backward_passes"), "time (s)": round(float(r["wall_time_s"]), 1)})
    return pd.DataFrame(rows).set_index(["model", "step"]) if rows else pd.DataFrame()


def _recipes(cfg) -> dict[str, list[str]]:
    """The profile's recipes with several training seeds: the original's name -> every replicate."""
    out = {}
    for name in cfg.models:
        reps = cfg.replicates(name)
        if len(reps) > 1 and reps[0] == name:
            out[name] = reps
    return out


def seeds_table(cfg, eps: float | None = None) -> pd.DataFrame:
    """Every training seed of the recipes trained with several: clean accuracy and the per-example
    worst case per seed, then mean ± sd over the seeds (in %)."""
    rows = []
    heads = {h["name"]: h for h in headline_rows(cfg, eps)}
    for root, reps in _recipes(cfg).items():
        values = {"clean": [], "worst case": []}
        for name in reps:
            h = heads.get(name)
            if h is None:
                continue
            row = {"recipe": cfg.label(root), "seed": cfg.model_seed(name), "clean": _cell(h["clean"]),
                   "worst case": _cell(h["worst_case"]) if h["worst_case"] is not None else "-"}
            values["clean"].append(100 * h["clean"]["accuracy"])
            if h["worst_case"] is not None:
                values["worst case"].append(100 * robust(h["worst_case"])[0])
            rows.append(row)
        if values["clean"]:
            rows.append({"recipe": cfg.label(root), "seed": "mean ± sd",
                         **{k: f"{np.mean(v):.1f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.1f}" if v else "-"
                            for k, v in values.items()}})
    return pd.DataFrame(rows).set_index(["recipe", "seed"]) if rows else pd.DataFrame()


def paired_rows(cfg, a: str, b: str, attack_a: str = "worst_case", attack_b: str | None = None,
                eps: float | None = None) -> list[dict]:
    """Model ``a`` under ``attack_a`` against model ``b`` under ``attack_b`` (default: the same
    attack; 'none': clean) on the same examples, seed by seed (the i-th replicate of one recipe
    against the i-th of the other; a recipe with one seed against each of the other's): per pair,
    ``core.stats.paired_test`` on the examples correct in every draw, over the examples both were
    evaluated on (the shorter of two prefixes of the same test examples), or an ``error`` when
    there is no record or the examples differ."""
    attack_b = attack_a if attack_b is None else attack_b
    reps_a, reps_b = cfg.replicates(a), cfg.replicates(b)
    if a == b:
        pairs = [(x, x) for x in reps_a]
    elif len(reps_a) == len(reps_b) or min(len(reps_a), len(reps_b)) > 1:
        pairs = list(zip(reps_a, reps_b))
    else:
        pairs = [(x, y) for x in reps_a for y in reps_b]
    out = []
    for x, y in pairs:
        ra, rb = per_example(cfg, x, attack_a, eps), per_example(cfg, y, attack_b, eps)
        la, lb = example_labels(cfg, x), example_labels(cfg, y)
        if ra is None or rb is None:
            out.append({"a": x, "b": y, "error": "no record"})
            continue
        n = min(len(ra), len(rb))
        if la is None or lb is None or not np.array_equal(la[:n], lb[:n]):
            out.append({"a": x, "b": y, "error": "evaluated on different examples"})
            continue
        out.append({"a": x, "b": y, **paired_test(ra[:n], rb[:n])})
    return out


def comparisons_table(cfg, eps: float | None = None) -> pd.DataFrame:
    """The comparisons of ``report.comparisons`` under the per-example worst case, seed by seed: the
    two robust accuracies, the paired difference with its 95% interval (Newcombe) and the exact
    McNemar p-value on the same examples."""
    rows = []
    for a, b in cfg.report.comparisons:
        for t in paired_rows(cfg, a, b, "worst_case", eps=eps):
            row = {"comparison": f"{cfg.label(a)} vs {cfg.label(b)}",
                   "pair": f"{t['a']} vs {t['b']} (seeds {cfg.model_seed(t['a'])} / {cfg.model_seed(t['b'])})"}
            if "error" in t:
                row["result"] = t["error"]
            else:
                lo, hi = t["ci"]
                row.update({"n": t["n"], "A robust (%)": round(100 * t["accuracy_a"], 1),
                            "B robust (%)": round(100 * t["accuracy_b"], 1),
                            "A - B (points)": f"{100 * t['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                            "discordant (A only / B only)": f"{t['discordant'][0]} / {t['discordant'][1]}",
                            "McNemar p": f"{t['p']:.2g}"})
            rows.append(row)
    return pd.DataFrame(rows).set_index(["comparison", "pair"]) if rows else pd.DataFrame()


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
