"""Claims versus reproduced: the sources' quantitative claims beside our nearest measurement.

``claims.yaml`` (beside this file) lists each claim with its source, the setting it applies
to, a measure of ours and a rule; :func:`claims_table` reads every measure from the records
in ``results/`` and applies the rule, giving the verdict 'reproduced', 'not reproduced' or
'not comparable' and why, and the test that decides it (paired on the same examples when two of
our models are compared). :func:`seed001_table` puts the student study's results table beside ours.
Nothing here holds a number of ours: all of them come from the records.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lwta_utils.analysis.queries import attack_label, robust, study_records
from lwta_utils.analysis.tables import paired_rows
from lwta_utils.core.errors import bad
from lwta_utils.core.jsonfiles import kind_of, read_versioned

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")


RULES = ("gap_at_least", "gap_at_most", "not_below", "at_most", "at_least", "between", "not_comparable")


VERDICTS = ("reproduced", "not reproduced", "not comparable")


ALPHA = 0.05  # significance level of the paired tests


@dataclass
class Measurement:
    """One number of ours: ``value`` (accuracy in %, or the record's own unit), its 95% interval
    for accuracies, what it is (``setting``: model and attack), on what (``detail``: examples,
    draws) and where it was read (``source``); ``seeds``: the value of every training seed when the
    model's recipe was trained with several (``value`` is then their mean)."""

    value: float
    ci: tuple[float, float] | None
    setting: str
    source: str
    detail: str = ""
    seeds: list[float] | None = None

    def text(self) -> str:
        if self.seeds is not None and len(self.seeds) > 1:
            sd = float(np.std(self.seeds, ddof=1))
            return f"{self.value:.1f}% ± {sd:.1f} over {len(self.seeds)} seeds"
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
        for side in ("a", "b"):
            if side in c and c[side].get("attack") == "strongest":
                raise bad(f"{p}.{side}.attack", "strongest", "name the attack, or 'worst_case' (per example)")
    return spec


def _context(cfg) -> dict:
    """The records, read once, and a cache of their headline rows per eps, for many measures."""
    return {"records": study_records(cfg), "headline": {}}


def _attack_id(cfg, attack: str) -> str:
    """The record id a measure's attack names ('standard': ``eval.standard_attack``)."""
    return cfg.eval.standard_attack if attack == "standard" else attack


def _one(cfg, name: str, attack: str, eps: float, df: pd.DataFrame):
    """The record of model ``name`` under ``attack`` at ``eps`` (None without one)."""
    sub = df[df["model"] == name]
    if attack == "none":
        hit = sub[sub["attack"] == "none"]
    else:
        hit = sub[(sub["attack"] == _attack_id(cfg, attack)) & np.isclose(sub["eps"], eps)]
    return hit.iloc[0] if len(hit) else None


def measure(cfg, m: dict, context: dict | None = None) -> Measurement | None:
    """Our number for measure ``m`` (see ``claims.yaml``), or None when the profile has no record.
    Clean: the accuracy (mean over draws); under an attack: the share of examples classified
    correctly in every draw. A model whose recipe was trained with several seeds gives their mean
    (``Measurement.seeds``). ``context`` (from ``_context``) saves re-reading the records."""
    if "record" in m:
        return _record_measure(cfg, m)
    name, attack = m["model"], m.get("attack", "none")
    if name not in cfg.models and name != cfg.released.name:
        return None
    eps = float(m.get("eps", cfg.eval.headline_eps))
    context = _context(cfg) if context is None else context
    names = cfg.replicates(name) if name in cfg.models else [name]
    rows = [(n, _one(cfg, n, attack, eps, context["records"])) for n in names]
    rows = [(n, r) for n, r in rows if r is not None]
    if not rows:
        return None

    def value(r):
        return (100 * float(r["accuracy"]), 100 * float(r["ci_low"]), 100 * float(r["ci_high"])) \
            if attack == "none" else tuple(100 * v for v in robust(r))

    first = rows[0][1]
    v, lo, hi = value(first)
    what = "clean" if attack == "none" else f"{attack_label(first)}, eps {eps:g}, correct in every draw"
    spread = f", {int(first['draws'])} draws" if first.get("draws", 1) > 1 else ""
    seeds = [value(r)[0] for _, r in rows] if len(rows) > 1 else None
    label = cfg.label(name) if name in cfg.models else first["label"]
    return Measurement(float(np.mean(seeds)) if seeds else v, (lo, hi), f"{label}: {what}",
                       "; ".join(f"eval_{n}.json: {r['attack']}@{float(r['eps']):g}" for n, r in rows),
                       f"n {int(first['n_examples'])}{spread}" + (f", seeds {[cfg.model_seed(n) for n, _ in rows]}"
                                                                  if seeds else ""), seeds)


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


def paired(cfg, c: dict) -> list[dict] | None:
    """The paired tests behind an "A against B" claim whose two measures are accuracies of our
    models: seed by seed, on the examples both were evaluated on (examples correct in every draw);
    None when a measure is not such an accuracy."""
    a, b = c.get("a", {}), c.get("b", {})
    if "model" not in a or "model" not in b or a["model"] not in cfg.models or b["model"] not in cfg.models:
        return None
    eps = float(a.get("eps", cfg.eval.headline_eps))
    if not np.isclose(eps, float(b.get("eps", cfg.eval.headline_eps))):
        return None
    return paired_rows(cfg, a["model"], b["model"], _attack_id(cfg, a.get("attack", "none")),
                       _attack_id(cfg, b.get("attack", "none")), eps)


def _test_text(tests: list[dict]) -> str:
    parts = []
    for t in tests:
        if "error" in t:
            parts.append(f"{t['a']} vs {t['b']}: {t['error']}")
            continue
        lo, hi = t["ci"]
        parts.append(f"{100 * t['difference']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}], exact McNemar "
                     f"p = {t['p']:.2g} (n {t['n']}, discordant {t['discordant'][0]} / {t['discordant'][1]})")
    diffs = [100 * t["difference"] for t in tests if "error" not in t]
    head = (f"paired over {len(diffs)} seed pairs, difference {np.mean(diffs):+.1f} ± {np.std(diffs, ddof=1):.1f}; "
            if len(diffs) > 1 else "paired, ")
    return head + "; ".join(parts)


def verdict(c: dict, a: Measurement | None, b: Measurement | None, tests: list[dict] | None = None
            ) -> tuple[str, str, str]:
    """The verdict of claim ``c`` given our measurements (and the paired tests of an A-against-B
    claim), why, and the test that decides it."""
    rule = c["rule"]
    if rule == "not_comparable":
        return "not comparable", c["why"], ""
    missing = [k for k, v in (("a", a), ("b", b)) if k in c and v is None]
    if missing:
        return "not comparable", f"not run in this profile ({', '.join(_describe(c[k]) for k in missing)})", ""
    if rule in ("gap_at_least", "gap_at_most", "not_below"):
        pts = float(c["points"])
        if tests is None:  # not two accuracies of our models: the point estimates decide
            gap = a.value - b.value
            ok = {"gap_at_least": gap >= pts, "gap_at_most": gap <= pts, "not_below": gap >= -pts}[rule]
            return ("reproduced" if ok else "not reproduced"), f"difference {gap:+.1f} points", ""
        errors = [t for t in tests if "error" in t]
        if errors or not tests:
            return "not comparable", "; ".join(f"{t['a']} vs {t['b']}: {t['error']}" for t in errors) or \
                "no pair evaluated on the same examples", ""
        test = _test_text(tests)
        diffs = [100 * t["difference"] for t in tests]
        significant = [t["p"] < ALPHA for t in tests]
        if rule == "gap_at_least":
            ok = all(d >= pts for d in diffs) and all(significant)
            why = f"reproduced if A - B >= {pts:+g} points with p < {ALPHA:g} on every seed"
            if all(d < 0 for d in diffs) and all(significant):
                why += "; B is significantly more robust on every seed"
        elif rule == "gap_at_most":
            ok = all(d <= pts for d in diffs)
            why = f"reproduced if A - B <= {pts:+g} points on every seed"
        else:
            ok = all(d >= -pts for d in diffs)
            why = f"reproduced if A is not more than {pts:g} points below B on every seed"
        return ("reproduced" if ok else "not reproduced"), why, test
    if rule == "at_most":
        ok, why = a.value <= c["value"], f"reproduced if <= {c['value']:g}"
    elif rule == "at_least":
        ok, why = a.value >= c["value"], f"reproduced if >= {c['value']:g}"
    else:
        ok, why = c["low"] <= a.value <= c["high"], f"reproduced if within [{c['low']:g}, {c['high']:g}]"
    if a.seeds is not None and len(a.seeds) > 1 and rule in ("at_most", "at_least"):
        each = [v <= c["value"] if rule == "at_most" else v >= c["value"] for v in a.seeds]
        ok, why = all(each), why + f" on every seed ({sum(each)} of {len(each)} are)"
    return ("reproduced" if ok else "not reproduced"), why, ""


def _describe(m: dict) -> str:
    if "record" in m:
        return m["record"]
    return f"{m['model']} / {m.get('attack', 'none')}"


def evaluate_claims(cfg, path: str | Path = CLAIMS_FILE) -> list[dict]:
    """Every claim with our measurements, its verdict, why, the test that decides it ('test') and
    the models it was decided on ('decided_on')."""
    spec = load_claims(path)
    context = _context(cfg)
    out = []
    for c in spec["claims"]:
        a = measure(cfg, c["a"], context) if "a" in c else None
        b = measure(cfg, c["b"], context) if "b" in c else None
        tests = paired(cfg, c) if c["rule"] in ("gap_at_least", "gap_at_most", "not_below") else None
        v, why, test = verdict(c, a, b, tests)
        subject = c["a"].get("model") if isinstance(c.get("a"), dict) else None
        seeds = cfg.replicates(subject) if subject in cfg.models else []
        label = (cfg.label(subject) + (f" ({len(seeds)} training seeds)" if len(seeds) > 1 else "")
                 if subject in cfg.models else None)
        out.append({**c, "ours_a": a, "ours_b": b, "verdict": v, "why": why, "test": test, "paired": tests or [],
                    "decided_on": subject if subject in cfg.models or subject == cfg.released.name else None,
                    "decided_on_label": label})
    return out


def claims_table(cfg, path: str | Path = CLAIMS_FILE) -> pd.DataFrame:
    """The claims-versus-reproduced table: claim, source, its setting, our nearest setting and
    measurement (with the record it comes from), verdict and why."""
    rows, claims = [], evaluate_claims(cfg, path)
    for c in claims:
        a, b = c["ours_a"], c["ours_b"]
        ours = " versus ".join(f"{x.setting} ({x.detail})" for x in (a, b) if x is not None) or "-"
        if c.get("ours_setting"):
            ours = f"{c['ours_setting']}: {ours}"
        measured = " versus ".join(x.text() for x in (a, b) if x is not None) or "-"
        rows.append({"claim": c["claim"], "source": c["source"], "claimed setting": c["setting"],
                     "ours (nearest setting)": ours, "measured": measured, "verdict": c["verdict"],
                     "test": c["test"] or "-", "why": c["why"],
                     "record": "; ".join(x.source for x in (a, b) if x is not None) or "-"})
    return pd.DataFrame(rows, index=pd.Index([c["id"] for c in claims], name="id"))


def seed001_table(cfg, path: str | Path = CLAIMS_FILE) -> pd.DataFrame:
    """The student study's results table (natural, PGD, FGSM and CW accuracy per training variant)
    with its reported numbers beside ours at the same attack settings, plus our standard attack and
    the worst case over every attack. Ours: % [95% interval] (under attack: correct in every draw)."""
    spec = load_claims(path)["seed001_table"]
    context = _context(cfg)
    rows = []
    for r in spec["rows"]:
        if r["model"] not in cfg.models:
            continue
        row = {"the student study's variant": r["row"], "our model": cfg.label(r["model"])}
        for i, (col, attack) in enumerate(spec["columns"].items()):
            m = measure(cfg, {"model": r["model"], "attack": attack}, context)
            row[f"{col}: the study"] = "-" if r["reported"] is None else f"{r['reported'][i]:g}"
            row[f"{col}: ours"] = m.text() if m is not None else "not run"
        for extra, attack in (("ours: standard attack", "standard"), ("ours: worst case over attacks", "worst_case")):
            m = measure(cfg, {"model": r["model"], "attack": attack}, context)
            row[extra] = m.text() if m is not None else "not run"
        rows.append(row)
    return pd.DataFrame(rows).set_index("the student study's variant") if rows else pd.DataFrame()
