"""The findings: at most ten lines under the headline figure of the report and the README.

Written from the records and the claims only: one sentence with the count of verdicts, then at
most ``MAX_FINDINGS`` bullets, each with its number and the test that decides it: the paper-scale
result on the LWTA authors' released checkpoint first (when its records exist), the models that
keep any robustness under the worst case over every attack, the paired comparisons of
``report.comparisons`` that no claim shown decides (the ablation), then the claims (those marked
``headline: true`` in ``claims.yaml``, else a few per source in the file's order).
"""
from __future__ import annotations

from lwta_utils.analysis.claims import evaluate_claims
from lwta_utils.analysis.headline import released_rows, scale_name
from lwta_utils.analysis.queries import attack_label, headline_rows, reported
from lwta_utils.analysis.tables import paired_rows
from lwta_utils.analysis.sources import render_sources, source_ids
from lwta_utils.core.fileio import write_text

MAX_FINDINGS = 10
QUESTION = "Does local competition with stochasticity make networks robust?"


def _pct(r) -> str:
    v, lo, hi = reported(r)
    return f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _ours(c: dict) -> str:
    a, b = c.get("ours_a"), c.get("ours_b")
    if a is None:
        return "not measured"
    text = f"{a.text()} ({a.setting})"
    return text + (f" versus {b.text()} ({b.setting})" if b is not None else "")


def _source(c: dict) -> str:
    ids = source_ids(c.get("source", ""))
    return "; ".join(render_sources(i, full=False) for i in ids) if ids else render_sources(c.get("source", ""))


def claim_bullet(c: dict, scale: str) -> str:
    """One finding from one claim: verdict, claim, source, the source's setting, our numbers, the test."""
    test = c.get("test") or c.get("why", "")
    where = f"decided on {c['decided_on_label']}; " if c.get("decided_on_label") else ""
    return (f"- **{c['verdict'].capitalize()}**: {c['claim']} ({_source(c)}; {c['setting']}). "
            f"Ours ({scale}): {_ours(c)}; {where}{test}.")


def pick_claims(claims: list[dict], n: int) -> list[dict]:
    """The claims the findings show: the decided ones marked ``headline`` (those about robustness, an
    attack on a model, first; otherwise in the file's order), then the other decided ones, again
    robustness first, a few per source (round robin over the sources, each source's claims in the
    file's order)."""
    decided = [c for c in claims if c["verdict"] != "not comparable"]
    rank, seen = {}, {}
    for i, c in enumerate(decided):
        key = (source_ids(c.get("source", "")) or [c.get("source", "")])[0]
        rank[c["id"]] = (seen.get(key, 0), i)
        seen[key] = seen.get(key, 0) + 1
    return sorted(decided, key=lambda c: (not c.get("headline"), not _about_robustness(c),
                                          *((0, 0) if c.get("headline") else rank[c["id"]])))[:n]


def _about_robustness(c: dict) -> bool:
    a = c.get("a") if isinstance(c.get("a"), dict) else {}
    return "model" in a and a.get("attack", "none") != "none"


def released_bullets(cfg, claims: list[dict]) -> list[str]:
    """The paper-scale finding: the LWTA authors' released CIFAR-10 checkpoint under our attacks."""
    out = []
    for r in released_rows(cfg, claims):
        parts = []
        if r.clean is not None:
            parts.append(f"clean {_pct(r.clean)}")
        if r.standard is not None:  # the authors' attack: their measure (one draw) is our mean over draws
            s = r.standard
            parts.append(f"{attack_label(s)} {100 * s['accuracy']:.1f}% [{100 * s['ci_low']:.1f}, "
                         f"{100 * s['ci_high']:.1f}] (mean over {int(s['draws'])} draws; {_pct(s)} correct in every draw)")
        if r.strongest is not None:
            n = int(r.strongest["n_examples"])
            parts.append(f"**{_pct(r.strongest)}** correct in every draw under {attack_label(r.strongest)} (n {n})")
        claimed = " and ".join(f"{v:g}% {what}" for v, what in r.claimed)
        verdict = f" Verdict: {r.verdict}." if r.verdicts else ""
        out.append(f"- **Paper scale, {r.label}** (CIFAR-10, Linf eps 8/255): the authors report {claimed}; "
                   if claimed else f"- **Paper scale, {r.label}** (CIFAR-10, Linf eps 8/255): ")
        out[-1] += "ours: " + ", ".join(parts) + f".{verdict}"
    return out


def robust_bullet(cfg) -> str | None:
    """Which of our models keep more than ``report.robust_floor`` under the worst case over every attack."""
    rows = [h for h in headline_rows(cfg) if h["worst_case"] is not None]
    if not rows:
        return None
    floor, eps = cfg.report.robust_floor, cfg.eval.headline_eps
    robust = sorted((h for h in rows if reported(h["worst_case"])[0] > floor),
                    key=lambda h: -reported(h["worst_case"])[0])
    others = [100 * reported(h["worst_case"])[0] for h in rows if h not in robust]
    kept = ", ".join(f"{cfg.label(h['name'])} {_pct(h['worst_case'])}" for h in robust) or "none"
    spread = f"{min(others):.1f}%" if others and f"{min(others):.1f}" == f"{max(others):.1f}" else \
        f"{min(others, default=0):.1f}–{max(others, default=0):.1f}%"
    rest = f"; the other {len(others)} end at {spread}" if others else ""
    return (f"- **Robust under every attack** ({scale_name(cfg)}, eps {eps:g}, per-example worst case over every "
            f"attack): {len(robust)} of our {len(rows)} models keep more than {100 * floor:g}%: {kept}{rest}.")


def _decided_pairs(claims: list[dict]) -> set[tuple[str, str]]:
    """The pairs of models that the given claims compare under the worst case (either order)."""
    out = set()
    for c in claims:
        a, b = c.get("a"), c.get("b")
        if isinstance(a, dict) and isinstance(b, dict) and "model" in a and "model" in b \
                and a.get("attack") == b.get("attack") == "worst_case":
            out |= {(a["model"], b["model"]), (b["model"], a["model"])}
    return out


def comparison_bullet(cfg, shown: list[dict]) -> str | None:
    """The paired comparisons of ``report.comparisons`` (worst case, same digits, seed by seed) that
    none of the ``shown`` claims already decides, in one bullet: per seed pair the two accuracies,
    the difference A - B in points with its 95% interval (Newcombe) and the exact McNemar p-value;
    seed pairs without a record are counted, not hidden."""
    decided = _decided_pairs(shown)
    parts = []
    for a, b in cfg.report.comparisons:
        if (a, b) in decided:
            continue
        rows = paired_rows(cfg, a, b, "worst_case")
        ok = [t for t in rows if "error" not in t]
        if not ok:
            continue
        same_n = len({t["n"] for t in ok}) == 1
        per = "; ".join(
            f"{100 * t['accuracy_a']:.1f}% versus {100 * t['accuracy_b']:.1f}%, {100 * t['difference']:+.1f} points "
            f"[{100 * t['ci'][0]:+.1f}, {100 * t['ci'][1]:+.1f}], McNemar p = {t['p']:.2g}"
            + ("" if same_n else f", n {t['n']}")
            + (f" (training seeds {cfg.model_seed(t['a'])} / {cfg.model_seed(t['b'])})" if len(rows) > 1 else "")
            for t in ok)
        missing = f" ({len(rows) - len(ok)} of {len(rows)} seed pairs without a common record)" if len(ok) < len(rows) else ""
        parts.append(f"{cfg.label(a)} against {cfg.label(b)}" + (f" (n {ok[0]['n']})" if same_n else "")
                     + f": {per}{missing}")
    if not parts:
        return None
    return (f"- **Paired comparisons** ({scale_name(cfg)}, eps {cfg.eval.headline_eps:g}, per-example worst case, the "
            f"same digits, exact McNemar test): " + ". ".join(parts) + ".")


def findings_text(cfg) -> str:
    """The Markdown findings at the top of the report and the README (see the module's docstring)."""
    claims = evaluate_claims(cfg)
    n = {v: sum(c["verdict"] == v for c in claims) for v in ("reproduced", "not reproduced", "not comparable")}
    scale = scale_name(cfg)
    head = (f"**{QUESTION}** Of the {n['reproduced'] + n['not reproduced']} claims of the sources we could test, "
            f"{n['reproduced']} are reproduced and {n['not reproduced']} are not ({n['not comparable']} more are not "
            f"comparable: see the claims table). Accuracy in % [95% Wilson interval]; {scale}: profile "
            f"`{cfg.profile}`, {_digits(cfg)}, "
            f"Linf eps {cfg.eval.headline_eps:g} in pixel units; under attack, the share of digits classified "
            f"correctly in every one of {cfg.eval.draws} draws of a stochastic model (clean: the mean over draws).")
    bullets = released_bullets(cfg, claims)
    robust = robust_bullet(cfg)
    bullets += [robust] if robust else []
    room = MAX_FINDINGS - len(bullets)
    shown = pick_claims(claims, max(room - 1, 0))  # one place for the comparisons no shown claim decides
    compared = comparison_bullet(cfg, shown)
    if compared is None:
        shown = pick_claims(claims, max(room, 0))
    bullets += [compared] if compared else []
    bullets += [claim_bullet(c, scale) for c in shown]
    return "\n".join([head, "", *bullets[:MAX_FINDINGS]])


def _digits(cfg) -> str:
    """Which test examples the headline numbers are on."""
    n = cfg.eval.n_examples
    if cfg.data.n_test and n >= cfg.data.n_test:
        return f"all {cfg.data.n_test:,} test images (some attacks on a stated prefix)"
    return f"the first {n:,} test images (the stronger attacks on a stated prefix)"


def findings(cfg):
    """``findings_text`` as rendered Markdown; also written to ``results/findings.md``."""
    from IPython.display import Markdown

    text = findings_text(cfg)
    write_text(cfg.results_dir / "findings.md", text + "\n")
    return Markdown(text)
