"""The findings: the summary at the top of the report and the README, written from the records."""
from __future__ import annotations

from lwta_utils.analysis.claims import evaluate_claims
from lwta_utils.analysis.queries import attack_label, headline_rows
from lwta_utils.core.fileio import write_text


def findings_text(cfg) -> str:
    """The Markdown summary at the top of the report and the README, written from the records:
    the seeds' claims that hold and those that do not (``lwta_utils.analysis.claims``); then clean accuracy,
    the standard attack and the worst case over every attack at the headline eps for the models
    above ``report.robust_floor`` under the worst case, the range of the others, and the sanity flags."""
    eps, floor = cfg.eval.headline_eps, cfg.report.robust_floor
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
    robust = sorted((h for h in rows if h["worst_case"] is not None and h["worst_case"]["accuracy"] > floor),
                    key=lambda h: -h["worst_case"]["accuracy"])
    lines.append(f"\n**The models that keep more than {100 * floor:g}% under the worst case over every attack** "
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

    text = findings_text(cfg)
    write_text(cfg.results_dir / "findings.md", text + "\n")
    return Markdown(text)
