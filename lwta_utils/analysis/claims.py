"""Claims versus reproduced: the seeds' quantitative claims beside our nearest measurement.

``claims.yaml`` (beside this file) lists each claim with its source, the setting it applies
to, a measure of ours and a rule; :func:`claims_table` reads every measure from the records
in ``results/`` and applies the rule, giving the verdict 'reproduced', 'not reproduced' or
'not comparable' and why. :func:`seed001_table` puts seed 001's results table beside ours.
Nothing here holds a number of ours: all of them come from the records.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lwta_utils.analysis.queries import attack_label, headline_rows, study_records
from lwta_utils.core.errors import bad
from lwta_utils.core.jsonfiles import kind_of, read_versioned

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")


RULES = ("gap_at_least", "gap_at_most", "not_below", "at_most", "at_least", "between", "not_comparable")


VERDICTS = ("reproduced", "not reproduced", "not comparable")


ACCURACY_ATTACKS = ("none", "standard", "strongest", "worst_case")


@dataclass
class Measurement:
    """One number of ours: ``value`` (accuracy in %, or the record's own unit), its 95% interval
    for accuracies, what it is (``setting``: model and attack), on what (``detail``: digits,
    draws) and where it was read (``source``)."""

    value: float
    ci: tuple[float, float] | None
    setting: str
    source: str
    detail: str = ""

    def text(self) -> str:
        if self.ci is None:
            return f"{self.value:.3g}"
        return f"{self.value:.1f}% [{self.ci[0]:.1f}, {self.ci[1]:.1f}]"


def load_claims(path: str | Path = CLAIMS_FILE) -> dict:
    """The claims file, checked: unique ids, known rules, the fields each rule needs."""
    spec = yaml.safe_load(Path(path).read_text())
    ids = set()
    for i, c in enumerate(spec.get("claims", [])):
        p = f"claims[{i}]"
        for key in ("id", "source", "claim", "setting", "rule"):
            if key not in c:
                raise bad(f"{p}.{key}", None, f"every claim needs {key!r}")
        if c["id"] in ids:
            raise bad(f"{p}.id", c["id"], "ids must be unique")
        ids.add(c["id"])
        if c["rule"] not in RULES:
            raise bad(f"{p}.rule", c["rule"], f"choose from {', '.join(RULES)}")
        need = {"gap_at_least": ("a", "b", "points"), "gap_at_most": ("a", "b", "points"),
                "not_below": ("a", "b", "points"), "at_most": ("a", "value"), "at_least": ("a", "value"),
                "between": ("a", "low", "high"), "not_comparable": ("why",)}[c["rule"]]
        for key in need:
            if key not in c:
                raise bad(f"{p}.{key}", None, f"rule {c['rule']!r} needs {', '.join(need)}")
    return spec


def _context(cfg) -> dict:
    """The records, read once, and a cache of their headline rows per eps, for many measures."""
    return {"records": study_records(cfg), "headline": {}}


def measure(cfg, m: dict, context: dict | None = None) -> Measurement | None:
    """Our number for measure ``m`` (see ``claims.yaml``), or None when the profile has no record.
    ``context`` (from ``_context``) saves re-reading the records for each measure."""
    if "record" in m:
        return _record_measure(cfg, m)
    name, attack = m["model"], m.get("attack", "none")
    if name not in cfg.models:
        return None
    eps = float(m.get("eps", cfg.eval.headline_eps))
    context = _context(cfg) if context is None else context
    df = context["records"]
    sub = df[df["model"] == name]
    if sub.empty:
        return None
    if attack == "none":
        hit = sub[sub["attack"] == "none"]
        r = hit.iloc[0] if len(hit) else None
    elif attack in ("standard", "strongest", "worst_case"):
        if eps not in context["headline"]:
            context["headline"][eps] = {h["name"]: h for h in headline_rows(cfg, eps, df)}
        rows = [context["headline"][eps][name]] if name in context["headline"][eps] else []
        r = rows[0][attack] if rows else None
    else:
        hit = sub[(sub["attack"] == attack) & np.isclose(sub["eps"], eps)]
        r = hit.iloc[0] if len(hit) else None
    if r is None:
        return None
    what = "clean" if attack == "none" else f"{attack_label(r)}, eps {eps:g}"
    spread = f", mean of {int(r['draws'])} draws" if r.get("draws", 1) > 1 else ""
    return Measurement(100 * float(r["accuracy"]), (100 * float(r["ci_low"]), 100 * float(r["ci_high"])),
                       f"{cfg.label(name)}: {what}", f"eval_{name}.json: {r['attack']}@{float(r['eps']):g}",
                       f"n {int(r['n_examples'])}{spread}")


def _record_measure(cfg, m: dict) -> Measurement | None:
    path = cfg.results_dir / f"{m['record']}.json"
    if not path.is_file():
        return None
    node = read_versioned(path, kind_of(path))
    for key in m.get("path", ["rows"]):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    where = dict(m.get("where", {}))
    if "model" in where:
        if where["model"] not in cfg.models:
            return None
        where["model"] = cfg.label(where["model"])
    if isinstance(node, list):
        hits = [row for row in node if all(row.get(k) == v for k, v in where.items())]
        if not hits:
            return None
        node = hits[0]
    if m["stat"] not in node:
        return None
    desc = m.get("label") or ", ".join(f"{v}" for v in where.values()) or m["stat"]
    return Measurement(float(node[m["stat"]]), None, desc, f"{m['record']}.json: {' / '.join(m.get('path', ['rows']))}",
                       m["stat"])


def verdict(c: dict, a: Measurement | None, b: Measurement | None) -> tuple[str, str]:
    """The verdict of claim ``c`` given our measurements, and why."""
    rule = c["rule"]
    if rule == "not_comparable":
        return "not comparable", c["why"]
    missing = [k for k, v in (("a", a), ("b", b)) if k in c and v is None]
    if missing:
        return "not comparable", f"not run in this profile ({', '.join(_describe(c[k]) for k in missing)})"
    if rule in ("gap_at_least", "gap_at_most", "not_below"):
        gap, pts = a.value - b.value, float(c["points"])
        if rule == "gap_at_least":
            separated = a.ci is None or b.ci is None or a.ci[0] > b.ci[1]
            ok = gap >= pts and separated
            why = (f"difference {gap:+.1f} points; reproduced if >= {pts:+g} with non-overlapping 95% intervals"
                   + ("" if separated else " (they overlap)"))
        elif rule == "gap_at_most":
            ok = gap <= pts
            why = f"difference {gap:+.1f} points; reproduced if <= {pts:+g}"
        else:
            ok = gap >= -pts
            why = f"difference {gap:+.1f} points; reproduced if not more than {pts:g} below"
    elif rule == "at_most":
        ok, why = a.value <= c["value"], f"reproduced if <= {c['value']:g}"
    elif rule == "at_least":
        ok, why = a.value >= c["value"], f"reproduced if >= {c['value']:g}"
    else:
        ok, why = c["low"] <= a.value <= c["high"], f"reproduced if within [{c['low']:g}, {c['high']:g}]"
    return ("reproduced" if ok else "not reproduced"), why


def _describe(m: dict) -> str:
    if "record" in m:
        return m["record"]
    return f"{m['model']} / {m.get('attack', 'none')}"


def evaluate_claims(cfg, path: str | Path = CLAIMS_FILE) -> list[dict]:
    """Every claim with our measurements and its verdict."""
    spec = load_claims(path)
    context = _context(cfg)
    out = []
    for c in spec["claims"]:
        a = measure(cfg, c["a"], context) if "a" in c else None
        b = measure(cfg, c["b"], context) if "b" in c else None
        v, why = verdict(c, a, b)
        out.append({**c, "ours_a": a, "ours_b": b, "verdict": v, "why": why})
    return out


def claims_table(cfg, path: str | Path = CLAIMS_FILE) -> pd.DataFrame:
    """The claims-versus-reproduced table: claim, source, its setting, our nearest setting and
    measurement (with the record it comes from), verdict and why."""
    rows, claims = [], evaluate_claims(cfg, path)
    for c in claims:
        a, b = c["ours_a"], c["ours_b"]
        ours = " versus ".join(f"{x.setting} ({x.detail})" for x in (a, b) if x is not None) or "-"
        measured = " versus ".join(x.text() for x in (a, b) if x is not None) or "-"
        rows.append({"claim": c["claim"], "source": c["source"], "claimed setting": c["setting"],
                     "ours (nearest setting)": ours, "measured": measured, "verdict": c["verdict"],
                     "why": c["why"], "record": "; ".join(x.source for x in (a, b) if x is not None) or "-"})
    return pd.DataFrame(rows, index=pd.Index([c["id"] for c in claims], name="id"))


def seed001_table(cfg, path: str | Path = CLAIMS_FILE) -> pd.DataFrame:
    """Seed 001's results table (natural, PGD, FGSM and CW accuracy per training variant) with the
    seed's reported numbers beside ours at the same attack settings, plus our standard attack and
    the worst case over every attack. Ours: % [95% interval], mean over draws when stochastic."""
    spec = load_claims(path)["seed001_table"]
    context = _context(cfg)
    rows = []
    for r in spec["rows"]:
        if r["model"] not in cfg.models:
            continue
        row = {"training variant (seed 001)": r["row"], "our model": cfg.label(r["model"])}
        for i, (col, attack) in enumerate(spec["columns"].items()):
            m = measure(cfg, {"model": r["model"], "attack": attack}, context)
            row[f"{col}: seed 001"] = "-" if r["reported"] is None else f"{r['reported'][i]:g}"
            row[f"{col}: ours"] = m.text() if m is not None else "not run"
        for extra, attack in (("ours: standard attack", "standard"), ("ours: worst case over attacks", "worst_case")):
            m = measure(cfg, {"model": r["model"], "attack": attack}, context)
            row[extra] = m.text() if m is not None else "not run"
        rows.append(row)
    return pd.DataFrame(rows).set_index("training variant (seed 001)") if rows else pd.DataFrame()
