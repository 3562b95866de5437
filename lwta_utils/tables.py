"""Tables and the findings, generated from the records in ``results/`` only.

Accuracy in % with its 95% Wilson interval; stochastic models: mean ± sd over draws. Every
table names the records it reads; ``findings_text`` writes the summary that heads the report
and the README.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .results import load_records

ATTACK_NAMES = {"none": "clean", "fgsm": "FGSM", "pgd_linf": "PGD-Linf", "cw_l2": "CW-L2"}


def attack_label(r) -> str:
    """The display name of a record's attack: its label, with the number of steps of our
    iterative attacks, EOT samples and the gradient mode when the label does not say them."""
    from .attacks import ATTACK_INFO

    name = r.get("attack_name") if isinstance(r.get("attack_name"), str) and r.get("attack_name") else r["attack"]
    label = r.get("attack_label") if isinstance(r.get("attack_label"), str) and r.get("attack_label") else None
    label = label or ATTACK_NAMES.get(r["attack"], r["attack"])
    if r["attack"] in ("none", "worst_case"):
        return label
    custom = name in ATTACK_INFO and label != ATTACK_INFO[name].label
    steps = r.get("steps", 1)
    if name in ("pgd_linf", "pgd_l2", "transfer", "smoothed_pgd") and steps > 1:
        label += f" ({steps} steps)" if custom else f"-{steps}"
    eot = r.get("eot_samples", 1)
    if eot and eot > 1:
        label += f", EOT {eot}"
    gradient = r.get("gradient")
    if isinstance(gradient, str) and gradient != "model" and not custom:
        label += f", {gradient.replace('_', '-')} gradient"
    return label


def sanity_flags(cfg) -> dict[str, list[str]]:
    """Per model, the flags of its sanity checks (``results/sanity_<name>.json``)."""
    out = {}
    for name in cfg.models:
        path = cfg.results_dir / f"sanity_{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())["flags"]
    return out


def _flags(flags: dict, name: str) -> str:
    if name not in flags:
        return "not checked"
    return "; ".join(flags[name]) or "ok"


def study_records(cfg) -> pd.DataFrame:
    """The evaluation records of the models in the profile."""
    df = load_records(cfg.results_dir)
    return df[df["model"].isin(list(cfg.models))].reset_index(drop=True)


def attack_labels(records: pd.DataFrame) -> dict[str, str]:
    """Attack id -> its display name, from the records."""
    return {r["attack"]: attack_label(r) for _, r in records.drop_duplicates("attack").iterrows()}


def _per_model(cfg, df: pd.DataFrame):
    """(name, that model's rows of ``df``) for the profile's models that have records, in profile order."""
    for name in cfg.models:
        sub = df[df["model"] == name]
        if not sub.empty:
            yield name, sub


def _linf_at(df: pd.DataFrame, eps: float) -> pd.Series:
    return np.isclose(df["eps"], eps) & (df["norm"].fillna("linf") == "linf")


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


def headline_rows(cfg, eps: float | None = None, records: pd.DataFrame | None = None) -> list[dict]:
    """Per model, the records of the headline: clean, the standard attack and the strongest
    single attack at ``eps``, and the per-example worst case over all attacks (from ``records``,
    default: ``study_records(cfg)``)."""
    eps = cfg.eval.headline_eps if eps is None else eps
    flags = sanity_flags(cfg)
    rows = []
    for name, sub in _per_model(cfg, study_records(cfg) if records is None else records):
        at = sub[_linf_at(sub, eps) & (sub["attack"] != "none")]
        single = at[at["attack"] != "worst_case"]
        std = single[single["attack"] == cfg.eval.standard_attack]
        rows.append({"name": name, "clean": sub[sub["attack"] == "none"].iloc[0],
                     "standard": std.iloc[0] if len(std) else None,
                     "strongest": single.sort_values(["accuracy", "n_examples"], ascending=[True, False]).iloc[0]
                     if len(single) else None,
                     "worst_case": at[at["attack"] == "worst_case"].iloc[0] if (at["attack"] == "worst_case").any()
                     else None, "flags": flags.get(name)})
    return rows


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
        for c in json.loads(path.read_text())["checks"]:
            rows.append({"model": cfg.label(name), "check": c["check"], "result": "pass" if c["passed"] else
                         f"FLAG: {c['flag']}", "detail": c["detail"]})
    return pd.DataFrame(rows).set_index(["model", "check"]) if rows else pd.DataFrame()


ROBUST_FLOOR = 0.05  # findings list the models above this worst-case accuracy one by one


def findings_text(cfg) -> str:
    """The Markdown summary at the top of the report and the README, written from the records:
    the seeds' claims that hold and those that do not (``lwta_utils.claims``); then clean accuracy,
    the standard attack and the worst case over every attack at the headline eps for the models
    above ``ROBUST_FLOOR`` under the worst case, the range of the others, and the sanity flags."""
    from .claims import evaluate_claims

    eps = cfg.eval.headline_eps
    claims = evaluate_claims(cfg)
    decided = [c for c in claims if c["verdict"] != "not comparable"]
    lines = [f"Profile `{cfg.profile}`: {cfg.data.name}, test split (first {cfg.eval.n_examples} digits, the stronger "
             f"attacks on a stated prefix), Linf eps = {eps:g} in pixel units. Accuracy in % [95% Wilson interval]; "
             f"stochastic models: mean over {cfg.eval.draws} draws per input. Claims: {len(claims)} in all, "
             f"{sum(c['verdict'] == 'reproduced' for c in claims)} reproduced, "
             f"{sum(c['verdict'] == 'not reproduced' for c in claims)} not reproduced, "
             f"{len(claims) - len(decided)} not comparable (see the claims table)."]
    for title, verdict in (("What holds", "reproduced"), ("What does not hold", "not reproduced")):
        lines.append(f"\n**{title}** (claims {verdict} here):\n")
        hits = [c for c in decided if c["verdict"] == verdict]
        lines += [f"- {c['claim']}. Ours: {_ours(c)}." for c in hits] or ["- none"]
    rows = headline_rows(cfg, eps)
    robust = sorted((h for h in rows if h["worst_case"] is not None and h["worst_case"]["accuracy"] > ROBUST_FLOOR),
                    key=lambda h: -h["worst_case"]["accuracy"])
    lines.append(f"\n**The models that keep more than {100 * ROBUST_FLOOR:g}% under the worst case over every attack** "
                 f"(eps {eps:g}; clean → standard attack → worst case):\n")
    for h in robust:
        lines.append(f"- {cfg.label(h['name'])}: {_pct(h['clean'])} → {_pct(h['standard'])} "
                     f"({attack_label(h['standard'])}) → **{_pct(h['worst_case'])}** (n {h['worst_case']['n_examples']})"
                     if h["standard"] is not None else f"- {cfg.label(h['name'])}: **{_pct(h['worst_case'])}**")
    others = [h for h in rows if h not in robust and h["worst_case"] is not None]
    if others:
        accs = [100 * h["worst_case"]["accuracy"] for h in others]
        lines.append(f"\nEvery other model ends at {min(accs):.1f}–{max(accs):.1f}% under the worst case: "
                     + ", ".join(cfg.label(h["name"]) for h in others) + ".")
    missing = [n for n in cfg.models if n not in {h["name"] for h in rows}]
    if missing:
        lines.append("\nNo records yet: " + ", ".join(cfg.label(n) for n in missing) + ".")
    flagged = [f"{cfg.label(h['name'])} ({'; '.join(h['flags'])})" for h in rows if h["flags"]]
    lines.append("\nSanity flags: " + ("; ".join(flagged) if flagged else "none") + ".")
    return "\n".join(lines)


def _ours(c: dict) -> str:
    a, b = c["ours_a"], c["ours_b"]
    text = f"{a.text()} ({a.setting})"
    return text + (f" versus {b.text()} ({b.setting})" if b is not None else "")


def _pct(r) -> str:
    return f"{100 * r['accuracy']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def findings(cfg):
    """``findings_text`` as rendered Markdown; also written to ``results/findings.md``."""
    from IPython.display import Markdown

    from .fileio import write_text

    text = findings_text(cfg)
    write_text(cfg.results_dir / "findings.md", text + "\n")
    return Markdown(text)


def reference_model(cfg) -> str:
    """The ReLU reference of overhead ratios: ``report.reference`` or the profile's first model."""
    return cfg.report.reference or next(iter(cfg.models))


def overhead_rows(cfg) -> list[dict]:
    """Per model (and benchmark-only variant): ``train`` / ``inference``, the benchmark's paired
    ratios to the reference's step and inference times (``results/bench_defenses.json``), their
    medians in ms, and ``epoch``, the mean training wall time per epoch over the reference's
    (``results/train_<name>.json``, first epoch left out when there are more: it holds compilation
    and warm-up; an epoch includes adversarial training's attacks and the validation passes)."""
    ref = reference_model(cfg)
    path = cfg.results_dir / "bench_defenses.json"
    bench = json.loads(path.read_text()) if path.is_file() else {}
    dev = next(iter(bench.get("results", {})), None)
    case = bench["results"][dev] if dev else {}
    key = f"ratio_to_{bench.get('reference', ref)}"
    epochs = {}
    for name in cfg.models:
        p = cfg.results_dir / f"train_{name}.json"
        if p.is_file():
            rec = json.loads(p.read_text())
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
