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
    """The evaluation records of the models in the profile (and of the released checkpoint's step)."""
    df = load_records(cfg.results_dir)
    return df[df["model"].isin([*cfg.models, cfg.released.name])].reset_index(drop=True)


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


def robust(r) -> tuple[float, float, float]:
    """(share of examples classified correctly in every draw, its 95% interval) of a record: the
    per-example robustness the study reports (for a deterministic model, the plain accuracy)."""
    if r.get("n_robust", -1) is None or r.get("n_robust", -1) < 0:  # a record without the field: one draw
        return float(r["accuracy"]), float(r["ci_low"]), float(r["ci_high"])
    return float(r["worst_accuracy"]), float(r["robust_ci_low"]), float(r["robust_ci_high"])


def reported(r) -> tuple[float, float, float]:
    """The number a record reports, with its 95% interval: clean, the accuracy (the mean over draws);
    under an attack, the share of examples classified correctly in every draw (``robust``)."""
    if r["attack"] == "none":
        return float(r["accuracy"]), float(r["ci_low"]), float(r["ci_high"])
    return robust(r)


def headline_rows(cfg, eps: float | None = None, records: pd.DataFrame | None = None) -> list[dict]:
    """Per model, the records of the headline at ``eps``: clean, the standard attack
    (``eval.standard_attack`` run on its own), the cascade's steps in order (``steps``), the attack
    that fooled the most examples (``strongest``: the cascade step with the most examples newly
    fooled, else the attack with the lowest robustness), and the per-example worst case (from
    ``records``, default: ``study_records(cfg)``)."""
    eps = cfg.eval.headline_eps if eps is None else eps
    flags = sanity_flags(cfg)
    rows = []
    for name, sub in _per_model(cfg, study_records(cfg) if records is None else records):
        at = sub[_linf_at(sub, eps) & (sub["attack"] != "none")]
        cascade_steps = at[at["cascade_step"].fillna(0) > 0].sort_values("cascade_step")
        single = at[(at["attack"] != "worst_case") & (at["cascade_step"].fillna(0) == 0)]
        std = single[single["attack"] == cfg.eval.standard_attack]
        if len(cascade_steps):
            fooled = cascade_steps["attack_params"].map(lambda p: p.get("n_fooled", 0) if isinstance(p, dict) else 0)
            strongest = cascade_steps.loc[fooled.idxmax()]
        elif len(single):
            strongest = single.sort_values(["worst_accuracy", "n_examples"], ascending=[True, False]).iloc[0]
        else:
            strongest = None
        rows.append({"name": name, "clean": sub[sub["attack"] == "none"].iloc[0],
                     "standard": std.iloc[0] if len(std) else None, "strongest": strongest,
                     "steps": [r for _, r in cascade_steps.iterrows()],
                     "worst_case": at[at["attack"] == "worst_case"].iloc[0] if (at["attack"] == "worst_case").any()
                     else None, "flags": flags.get(name)})
    return rows


def per_example(cfg, name: str, attack: str = "worst_case", eps: float | None = None) -> np.ndarray | None:
    """Per example, whether model ``name`` classifies it correctly in every draw under ``attack``
    ('none': clean; 'worst_case': the strongest perturbation over every attack) at ``eps``, from
    ``results/correct_<name>.npz``; None when there is no such record."""
    path = cfg.results_dir / f"correct_{name}.npz"
    if not path.is_file():
        return None
    eps = cfg.eval.headline_eps if eps is None else eps
    key = "none@0" if attack == "none" else f"{attack}@{eps:g}"
    with np.load(path) as data:
        if key not in data:
            return None
        return data[key].reshape(-1, data[key].shape[-1]).all(0)


def example_labels(cfg, name: str) -> np.ndarray | None:
    """The labels of the examples model ``name`` was evaluated on (to check two models share them)."""
    path = cfg.results_dir / f"correct_{name}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["labels"] if "labels" in data else None


def reference_model(cfg) -> str:
    """The ReLU reference of overhead ratios: ``report.reference`` or the profile's first model."""
    return cfg.report.reference or next(iter(cfg.models))
