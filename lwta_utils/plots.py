"""Tables and figures, generated from the records in ``results/`` only.

Seaborn's colour-blind-safe palette; one colour per model, in profile order,
in every figure; figures are saved atomically to ``figures/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .fileio import atomic_path
from .results import load_records

ATTACK_NAMES = {"none": "clean", "fgsm": "FGSM", "pgd_linf": "PGD-Linf", "cw_l2": "CW-L2"}
PROB_ATTACKS = ("fgsm", "pgd_linf", "cw_l2")  # seed 001's figure: natural, FGSM, PGD and CW
NORM_UNITS = {"linf": "Linf, pixel units in [0, 1]", "l2": "L2, pixel units"}


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


def palette(cfg) -> dict[str, tuple]:
    labels = [cfg.label(n) for n in cfg.models]
    return dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 3))))


def save_figure(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def study_records(cfg) -> pd.DataFrame:
    """The evaluation records of the models in the profile."""
    df = load_records(cfg.results_dir)
    return df[df["model"].isin(list(cfg.models))].reset_index(drop=True)


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
    df = df[(df["attack"] == "none") | (np.isclose(df["eps"], eps) & (df["norm"].fillna("linf") == "linf"))]
    flags = sanity_flags(cfg)
    rows = []
    for name in cfg.models:
        sub = df[df["model"] == name]
        if sub.empty:
            continue
        row = {"model": cfg.label(name), "training": sub["training"].iloc[0], "n": int(sub["n_examples"].iloc[0])}
        for _, r in sub.iterrows():
            row[attack_label(r) + ("" if r["attack"] == "none" else f" (n {r['n_examples']})")] = _cell(r)
        row["sanity flags"] = _flags(flags, name)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def headline_rows(cfg, eps: float | None = None) -> list[dict]:
    """Per model, the records of the headline: clean, the standard attack and the strongest
    single attack at ``eps``, and the per-example worst case over all attacks."""
    eps = cfg.eval.headline_eps if eps is None else eps
    df = study_records(cfg)
    flags = sanity_flags(cfg)
    rows = []
    for name in cfg.models:
        sub = df[df["model"] == name]
        if sub.empty:
            continue
        at = sub[np.isclose(sub["eps"], eps) & (sub["norm"].fillna("linf") == "linf") & (sub["attack"] != "none")]
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


def _finish(fig, cfg, name: str):
    save_figure(fig, cfg.figures_dir / name)
    return fig


def plot_true_class_probs(cfg, eps: float | None = None) -> plt.Figure:
    """Seed 001's figure: distribution of the softmax probability of the true
    class, per model, clean and under each attack at ``eps``."""
    eps = cfg.eval.headline_eps if eps is None else eps
    rows = []
    for name in cfg.models:
        path = cfg.results_dir / f"probs_{name}.npz"
        if not path.is_file():
            continue
        with np.load(path) as data:
            for key in data.files:
                if key == "labels":
                    continue
                attack, e = key.rsplit("@", 1)
                if attack != "none" and (attack not in PROB_ATTACKS or not np.isclose(float(e), eps)):
                    continue
                cond = ATTACK_NAMES.get(attack, attack) + ("" if attack == "none" else f" (eps {float(e):g})")
                rows.append(pd.DataFrame({"model": cfg.label(name), "condition": cond, "p_true": data[key]}))
    df = pd.concat(rows, ignore_index=True)
    grid = sns.displot(df, x="p_true", hue="model", col="condition", kind="hist", bins=20, binrange=(0, 1),
                       stat="percent", common_norm=False, element="step", palette=palette(cfg),
                       height=3.2, aspect=1.1, facet_kws={"sharey": False})
    grid.set_axis_labels("probability of the true class", "test examples (%)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Distribution of true-class probabilities (test split)", y=1.04)
    return _finish(grid.figure, cfg, "true_class_probs.png")


def plot_robustness_curves(cfg) -> plt.Figure:
    """Accuracy versus eps per model, one panel per attack run at several eps (clean at
    eps 0), with 95% Wilson bands."""
    df = study_records(cfg)
    clean = df[df["attack"] == "none"]
    atk = df[df["attack"] != "none"]
    counts = atk.groupby("attack")["eps"].nunique()
    attacks = [a for a in atk["attack"].unique() if counts[a] > 1]
    pal = palette(cfg)
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.4), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks):
        first = atk[atk["attack"] == attack].iloc[0]
        for name in cfg.models:
            label = cfg.label(name)
            sub = pd.concat([clean[clean["model"] == name], df[(df["model"] == name) & (df["attack"] == attack)]])
            sub = sub.sort_values("eps")
            if len(sub) < 2:
                continue
            ax.plot(sub["eps"], 100 * sub["accuracy"], marker="o", color=pal[label], label=label)
            ax.fill_between(sub["eps"], 100 * sub["ci_low"], 100 * sub["ci_high"], color=pal[label], alpha=0.2)
        ax.set_title(f"{attack_label(first)} (n {first['n_examples']})")
        ax.set_xlabel(f"eps ({NORM_UNITS.get(first.get('norm', 'linf'), 'pixel units')})")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(loc="upper right", fontsize=7)
    return _finish(fig, cfg, "robustness_curves.png")


def plot_training_curves(cfg, names: list[str] | None = None) -> plt.Figure | None:
    """Training loss and validation accuracy per epoch, from ``results/train_*.json``."""
    names = names or list(cfg.models)
    hist = []
    for name in names:
        path = cfg.results_dir / f"train_{name}.json"
        if path.is_file():
            rec = json.loads(path.read_text())
            hist += [{"model": cfg.label(name), **h} for h in rec["history"]]
    if not hist:
        return None
    df = pd.DataFrame(hist)
    metrics = [c for c in ("train_loss", "val_acc", "val_pgd_acc") if c in df]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for i, (ax, col) in enumerate(zip(axes[0], metrics)):
        sns.lineplot(df, x="epoch", y=col, hue="model", palette=palette(cfg), marker="o", ax=ax, legend=i == 0)
        ax.set_ylabel({"train_loss": "training objective (CE; + KL / N for the ELBO)", "val_acc": "validation accuracy",
                       "val_pgd_acc": "validation accuracy under PGD-10"}[col])
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    stem = "training_curves" if names == list(cfg.models) else "training_curves_" + "_".join(names)
    return _finish(fig, cfg, f"{stem}.png")


def plot_winner_stats(cfg) -> plt.Figure | None:
    """LWTA winner statistics from ``results/lwta_winners.json``: per model and layer, the distribution
    over blocks of how often the first unit of a block wins, and the share of ~zero outputs."""
    path = cfg.results_dir / "lwta_winners.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    freq = pd.DataFrame([{"model": cfg.label(m), "layer": L["layer"], "p": f[0]}
                         for m, layers in rec["per_block"].items() for L in layers for f in L["win_freq"]])
    rows = pd.DataFrame(rec["rows"])
    models = list(dict.fromkeys(freq["model"]))
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 3.2 * len(models)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    names = {"output_sparsity": "outputs ~0 (losers)", "ibp_kept_share": "IBP indicators kept"}
    for i, model in enumerate(models):
        ax = axes[i][0]
        sns.histplot(freq[freq["model"] == model], x="p", hue="layer", bins=20, binrange=(0, 1), stat="percent",
                     common_norm=False, element="step", palette="colorblind", ax=ax)
        ax.set_xlabel("how often unit 1 of a block wins (share of inputs x positions)")
        ax.set_ylabel("blocks (%)")
        ax.set_title(f"{model}: winner frequency per block", fontsize=10)
        sub = rows[rows["model"] == model].melt(id_vars=["layer"], value_vars=[c for c in (
            "output_sparsity", "ibp_kept_share") if c in rows and rows.loc[rows["model"] == model, c].notna().any()])
        sub["variable"] = sub["variable"].map(names)
        sns.barplot(sub, x="layer", y="value", hue="variable", palette="colorblind", ax=axes[i][1])
        axes[i][1].set_ylim(0, 1)
        axes[i][1].set_ylabel("share")
        axes[i][1].set_xlabel("LWTA layer")
        axes[i][1].set_title(f"{model}: shares per layer", fontsize=10)
        axes[i][1].legend(fontsize=8)
    fig.suptitle(f"LWTA winner statistics at test temperature, sampling on ({rec['n']} test inputs)", y=1.0)
    fig.tight_layout()
    return _finish(fig, cfg, "lwta_winners.png")


def plot_gradient_cosine(cfg) -> plt.Figure | None:
    """Cosine between input gradients of two forward passes, relaxed vs straight-through
    (``results/lwta_gradients.json``)."""
    path = cfg.results_dir / "lwta_gradients.json"
    if not path.is_file():
        return None
    df = pd.DataFrame(json.loads(path.read_text())["rows"])
    grid = sns.catplot(df, x="gradient", y="cos_mean", hue="model", col="temperature", kind="bar",
                       palette=palette(cfg), height=3.2, aspect=1.2)
    for ax in grid.axes.flat:
        ax.axhline(0, color="black", lw=0.8)
    grid.set_axis_labels("gradient mode", "mean cosine between two passes")
    grid.set_titles("temperature: {col_name}")
    grid.figure.suptitle("Are the input gradients of two forward passes alike?", y=1.04)
    return _finish(grid.figure, cfg, "lwta_gradient_cosine.png")


def plot_examples(cfg, splits, n_per_class: int = 8) -> plt.Figure:
    """A grid of training digits, one row per class."""
    k = splits.info.num_classes
    fig, axes = plt.subplots(k, n_per_class, figsize=(n_per_class * 0.7, k * 0.7))
    for c in range(k):
        idx = (splits.y_train == c).nonzero().flatten()[:n_per_class]
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(idx):
                img = splits.x_train[idx[j]].permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    fig.suptitle(f"{splits.info.name}: training examples, one row per class")
    return _finish(fig, cfg, "data_examples.png")


def findings_text(cfg) -> str:
    """A Markdown summary written from the records: per model, clean accuracy, accuracy under
    the standard attack and under the strongest attack found at the headline eps, and the
    sanity flags."""
    eps = cfg.eval.headline_eps
    lines = [f"Test split, first {cfg.eval.n_examples} digits (stronger attacks on a stated prefix), Linf eps = "
             f"{eps:g} (pixel units); accuracy in % with 95% Wilson interval, mean over draws for stochastic models."]
    rows = {h["name"]: h for h in headline_rows(cfg, eps)}
    for name in cfg.models:
        h = rows.get(name)
        if h is None:
            lines.append(f"- **{cfg.label(name)}**: no records yet.")
            continue
        text = f"- **{cfg.label(name)}**: clean {_pct(h['clean'])}"
        if h["standard"] is not None:
            text += f"; standard attack ({attack_label(h['standard'])}) {_pct(h['standard'])}"
        if h["strongest"] is not None:
            top = h["strongest"]
            text += f"; strongest attack {attack_label(top)}: {_pct(top)} on {top['n_examples']} digits"
        if h["worst_case"] is not None:
            text += f"; worst case over attacks {_pct(h['worst_case'])}"
        if h["flags"]:
            text += f"; sanity flags: {'; '.join(h['flags'])}"
        lines.append(text + ".")
    return "\n".join(lines)


def _pct(r) -> str:
    return f"{100 * r['accuracy']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def findings(cfg):
    """``findings_text`` as rendered Markdown; also written to ``results/findings.md``."""
    from IPython.display import Markdown

    from .fileio import write_text

    text = findings_text(cfg)
    write_text(cfg.results_dir / "findings.md", text + "\n")
    return Markdown(text)
