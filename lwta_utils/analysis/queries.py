"""Queries of the records in ``results/``: a profile's evaluation records, display names of
attacks, sanity flags, and the headline rows (clean, standard, strongest, worst case) per model."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lwta_utils.core.jsonfiles import read_versioned
from lwta_utils.core.registry import ATTACKS
from lwta_utils.evaluation.records import load_records


def attack_label(r) -> str:
    """The display name of a record's attack: its label, with the number of steps of our
    iterative attacks, EOT samples and the gradient mode when the label does not say them."""
    name = r.get("attack_name") if isinstance(r.get("attack_name"), str) and r.get("attack_name") else r["attack"]
    spec = ATTACKS.get(name)
    label = r.get("attack_label") if isinstance(r.get("attack_label"), str) and r.get("attack_label") else None
    label = label or (spec.label if spec else "clean" if r["attack"] == "none" else r["attack"])
    if r["attack"] in ("none", "worst_case"):
        return label
    custom = spec is not None and label != spec.label
    steps = r.get("steps", 1)
    if spec is not None and spec.iterative and steps > 1:
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
            out[name] = read_versioned(path, "sanity")["flags"]
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


def reference_model(cfg) -> str:
    """The ReLU reference of overhead ratios: ``report.reference`` or the profile's first model."""
    return cfg.report.reference or next(iter(cfg.models))
