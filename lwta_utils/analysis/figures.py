"""Figures, generated from the records in ``results/`` only (tables: ``lwta_utils.analysis.tables``).

Seaborn's colour-blind-safe palette. Every model keeps one colour (and marker) in every
figure; within each of the report's groups (``report.groups``) every model's colour differs.
Figures with many models have one row of panels per group. Axes name their units; figures are
saved atomically to ``figures/``.
"""
from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from lwta_utils.analysis.queries import attack_label, attack_labels, reported, study_records
from lwta_utils.analysis.tables import overhead_rows
from lwta_utils.config.schema import MAX_GROUP_MODELS
from lwta_utils.core.fileio import atomic_path
from lwta_utils.core.jsonfiles import read_versioned
from lwta_utils.core.lazy import LazyModule

plt = LazyModule("matplotlib.pyplot")  # imported by the first figure drawn
sns = LazyModule("seaborn")

NORM_UNITS = {"linf": "Linf, pixel units in [0, 1]", "l2": "L2, pixel units"}


N_COLORS = MAX_GROUP_MODELS  # seaborn's colour-blind palette


def groups(cfg) -> dict[str, list[str]]:
    """The report's groups of models (``report.groups``), or one group of every model."""
    out = {g: [n for n in names if n in cfg.models] for g, names in cfg.report.groups.items()}
    return {g: names for g, names in out.items() if names} or {"all models": list(cfg.models)}


def model_colors(cfg) -> dict[str, tuple]:
    """One colour per model, in profile order, never shared by two models of the same group
    (the first free colour of the palette); with more models than colours in a group, colours repeat."""
    colors = sns.color_palette("colorblind", N_COLORS)
    member = {n: {g for g, names in groups(cfg).items() if n in names} for n in cfg.models}
    out: dict[str, tuple] = {}
    for name in cfg.models:
        taken = {out[o] for o in out if member[o] & member[name]}
        free = [c for c in colors if c not in taken]
        out[name] = free[0] if free else colors[len(out) % N_COLORS]
    return out


def model_markers(cfg) -> dict[str, str]:
    """Marker per model: circles for the first group's models, squares for the others."""
    first = next(iter(groups(cfg).values()))
    return {n: "o" if n in first else "s" for n in cfg.models}


def palette(cfg) -> dict[str, tuple]:
    """Model label -> colour (for seaborn's ``hue``)."""
    return {cfg.label(n): c for n, c in model_colors(cfg).items()}


FIGURE_DPI = 100  # the saved PNG's resolution: matplotlib's default, that of the inline backend


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as a PNG (atomically); in a notebook with matplotlib's inline backend, show that
    PNG and close the figure, so that the backend does not draw it a second time at the cell's end
    (each draw of a large figure costs about a second)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    data = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    if _inline_backend():
        from IPython.display import Image, display

        width_px = int.from_bytes(data[16:20], "big")  # the PNG header's width
        # shown at the size the inline backend would show the figure (its resolution: figure.dpi)
        display(Image(data=data, width=round(width_px * plt.rcParams["figure.dpi"] / FIGURE_DPI)))
        plt.close(fig)
    return path


def _inline_backend() -> bool:
    """Whether figures go to a notebook through matplotlib's inline backend (not in scripts or tests)."""
    if "matplotlib_inline" not in sys.modules:
        return False
    import matplotlib

    return "inline" in matplotlib.get_backend()


def _finish(fig, cfg, name: str):
    save_figure(fig, cfg.figures_dir / name)
    return fig


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


def plot_true_class_probs(cfg, eps: float | None = None) -> plt.Figure:
    """The Paris-Dauphine study's figure: the distribution of the softmax probability of the true class over the
    test digits (mean over draws), per model, clean and under the Paris-Dauphine study's attacks and the standard
    attack at ``eps`` (``report.probability_attacks``); one row per group of models."""
    eps = cfg.eval.headline_eps if eps is None else eps
    shown = tuple(cfg.report.probability_attacks)
    frames = []
    for name in cfg.models:
        path = cfg.results_dir / f"probs_{name}.npz"
        if not path.is_file():
            continue
        with np.load(path) as data:
            for key in data.files:
                if key == "labels":
                    continue
                attack, e = key.rsplit("@", 1)
                if attack != "none" and (attack not in shown or not np.isclose(float(e), eps)):
                    continue
                frames.append(pd.DataFrame({"name": name, "attack": attack, "p_true": data[key]}))
    df = pd.concat(frames, ignore_index=True)
    attacks = [a for a in ("none", *shown) if (df["attack"] == a).any()]
    labels = attack_labels(study_records(cfg))
    grp = groups(cfg)
    heights = [max(len(n), 2) * 0.42 + 0.8 for n in grp.values()]
    fig, axes = plt.subplots(len(grp), len(attacks), figsize=(3.3 * len(attacks), sum(heights)), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": heights})
    colors = palette(cfg)
    for i, (g, names) in enumerate(grp.items()):
        for j, attack in enumerate(attacks):
            ax = axes[i][j]
            sub = df[(df["attack"] == attack) & df["name"].isin(names)].assign(model=lambda d: d["name"].map(cfg.label))
            order = [cfg.label(n) for n in names if (sub["name"] == n).any()]
            if order:
                sns.violinplot(sub, x="p_true", y="model", hue="model", order=order, hue_order=order, palette=colors,
                               cut=0, density_norm="width", inner="quart", linewidth=0.8, legend=False, ax=ax)
            ax.set_xlim(0, 1)
            ax.set_ylabel(g if j == 0 else "")
            if j:
                ax.set_yticklabels([])
            cond = "clean" if attack == "none" else f"{labels.get(attack, attack)}, eps {eps:g}"
            ax.set_title(cond if i == 0 else "", fontsize=9)
            ax.set_xlabel("probability of the true class" if i == len(grp) - 1 else "")
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Distribution of the true-class probability over the test digits (mean over draws)", y=1.0)
    fig.tight_layout()
    return _finish(fig, cfg, "true_class_probs.png")


def plot_robustness_curves(cfg) -> plt.Figure:
    """Accuracy versus eps per model, one panel per attack run at several eps (clean at eps 0, the
    mean over draws; under the attack, the share correct in every draw; every attack when none runs
    at several), with 95% Wilson bands; one row per group of models."""
    df = study_records(cfg)
    clean = df[df["attack"] == "none"]
    atk = df[df["attack"] != "none"]
    counts = atk.groupby("attack")["eps"].nunique()
    attacks = [a for a in atk["attack"].unique() if counts[a] > 1]
    attacks = attacks or list(atk["attack"].unique())  # no attack at several eps: clean -> attacked per attack
    colors, markers, grp = model_colors(cfg), model_markers(cfg), groups(cfg)
    if not attacks:
        raise ValueError("no attack records to plot: run 05_attacks first")
    fig, axes = plt.subplots(len(grp), len(attacks), figsize=(4.2 * len(attacks), 3.4 * len(grp)), squeeze=False,
                             sharey=True)
    for i, (g, names) in enumerate(grp.items()):
        for ax, attack in zip(axes[i], attacks):
            first = atk[atk["attack"] == attack].iloc[0]
            for name in names:
                sub = pd.concat([clean[clean["model"] == name], df[(df["model"] == name) & (df["attack"] == attack)]])
                sub = sub.sort_values("eps")
                if len(sub) < 2:
                    continue
                y = np.array([reported(r) for _, r in sub.iterrows()]) * 100  # clean: mean; attacked: robust
                ax.plot(sub["eps"], y[:, 0], marker=markers[name], color=colors[name], label=cfg.label(name))
                ax.fill_between(sub["eps"], y[:, 1], y[:, 2], color=colors[name], alpha=0.1)
            ax.set_title(f"{attack_label(first)} (n {first['n_examples']})", fontsize=9)
            ax.set_xlabel(f"eps ({NORM_UNITS.get(first.get('norm', 'linf'), 'pixel units')})")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
        axes[i][0].set_ylabel(f"{g}\ntest accuracy (%)")
        axes[i][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
    fig.tight_layout()
    return _finish(fig, cfg, "robustness_curves.png")


TRAIN_METRICS = {"train_loss": "training objective (CE; + KL / N for the ELBO)", "val_acc": "validation accuracy (%)",
                 "val_pgd_acc": "validation accuracy under PGD-10 (%)"}


def plot_training_curves(cfg, names: list[str] | None = None) -> plt.Figure | None:
    """Training objective and validation accuracy (clean, and under PGD for adversarially trained
    models) per epoch, from ``results/train_*.json``; ``names`` in one row, else one row per group."""
    rows = {"": names} if names else groups(cfg)
    hist = []
    for name in dict.fromkeys(n for ns in rows.values() for n in ns):
        path = cfg.results_dir / f"train_{name}.json"
        if path.is_file():
            hist += [{"name": name, **h} for h in read_versioned(path, "training")["history"]]
    if not hist:
        return None
    df = pd.DataFrame(hist)
    metrics = [c for c in TRAIN_METRICS if c in df]
    colors, markers = model_colors(cfg), model_markers(cfg)
    fig, axes = plt.subplots(len(rows), len(metrics), figsize=(4.6 * len(metrics), 3.4 * len(rows)), squeeze=False)
    for i, (g, ns) in enumerate(rows.items()):
        for j, col in enumerate(metrics):
            ax = axes[i][j]
            for name in ns:
                sub = df[(df["name"] == name) & df[col].notna()]
                if len(sub):
                    scale = 1 if col == "train_loss" else 100
                    ax.plot(sub["epoch"], scale * sub[col], marker=markers[name], ms=3, color=colors[name],
                            label=cfg.label(name))
            ax.set_ylabel(TRAIN_METRICS[col])
            ax.set_xlabel("epoch")
            ax.set_title(g, fontsize=9)
            ax.grid(alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, "not recorded for these models", ha="center", va="center", transform=ax.transAxes)
        axes[i][-1].legend(*axes[i][0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.02, 0.5),
                           fontsize=7)
    fig.tight_layout()
    stem = "training_curves" + ("" if not names else "_" + "_".join(names) if len(names) <= 3
                                else f"_{names[0]}_and_{len(names) - 1}_more")
    return _finish(fig, cfg, f"{stem}.png")


def plot_winner_stats(cfg) -> plt.Figure | None:
    """LWTA winner statistics from ``results/lwta_winners.json``: per model and layer, the distribution
    over blocks of how often the first unit of a block wins, and the share of ~zero outputs."""
    path = cfg.results_dir / "lwta_winners.json"
    if not path.is_file():
        return None
    rec = read_versioned(path, "lwta_winners")
    freq = pd.DataFrame([{"model": cfg.label(m), "layer": L["layer"], "p": f[0]}
                         for m, layers in rec["per_block"].items() if m in cfg.models
                         for L in layers for f in L["win_freq"]])
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
    fig.suptitle(f"LWTA winner statistics at test temperature, sampling on ({rec['settings']['n']} test inputs)", y=1.0)
    fig.tight_layout()
    return _finish(fig, cfg, "lwta_winners.png")


def plot_gradient_cosine(cfg) -> plt.Figure | None:
    """Cosine between input gradients of two forward passes, relaxed vs straight-through
    (``results/lwta_gradients.json``)."""
    path = cfg.results_dir / "lwta_gradients.json"
    if not path.is_file():
        return None
    df = pd.DataFrame(read_versioned(path, "lwta_gradients")["rows"])
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


def _pick(ok: np.ndarray, kept: np.ndarray) -> int | None:
    idx = np.flatnonzero(ok & kept)
    return int(idx[0]) if len(idx) else None


def plot_adversarial_examples(cfg, names: list[str] | None = None) -> list[plt.Figure]:
    """The Paris-Dauphine study's grid: per model and attack of ``eval.example_attacks`` (at the headline eps), a
    test digit whose adversarial example is misclassified and one that is still classified
    correctly, each shown clean with its label and adversarial with the model's prediction (first
    draw). From ``results/examples_<name>.npz``; one figure per group (or for ``names``)."""
    eps = cfg.eval.headline_eps
    labels = attack_labels(study_records(cfg))
    figs = []
    for g, ns in ({"": names} if names else groups(cfg)).items():
        data = {}
        for name in ns:
            path = cfg.results_dir / f"examples_{name}.npz"
            if path.is_file():
                with np.load(path) as d:
                    data[name] = {k: d[k] for k in d.files}
        attacks = [a for a in cfg.eval.example_attacks if any(f"adv_{a}@{eps:g}" in d for d in data.values())]
        if not data or not attacks:
            continue
        ncol = 4 * len(attacks)
        # one axes per model and attack showing its four images side by side (264 small axes took
        # most of the analysis notebook's figure time); the columns keep the grid's proportions
        fig, axes = plt.subplots(len(data), len(attacks), figsize=(0.95 * ncol, 1.25 * len(data) + 0.6),
                                 squeeze=False)
        for i, (name, d) in enumerate(data.items()):
            y, clean_ok = d["y"], d["pred_none@0"] == d["y"]
            for j, attack in enumerate(attacks):
                key = f"{attack}@{eps:g}"
                ax = axes[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
                if f"adv_{key}" not in d:
                    ax.text(0.1, 0.5, "not run", fontsize=6, ha="center", va="center", transform=ax.transAxes)
                    continue
                adv, pred = d[f"adv_{key}"].astype(np.float32), d[f"pred_{key}"]
                n = len(pred)
                tiles = _Tiles(ax, d["x"].shape[1:])
                for k, (want, word) in enumerate(((pred != y[:n], "wrong"), (pred == y[:n], "correct"))):
                    idx = _pick(want, clean_ok[:n])
                    if idx is None:
                        tiles.note(2 * k + 1, f"none {word}\n(first {n} digits)")
                        continue
                    tiles.show(2 * k, d["x"][idx], f"label {y[idx]}")
                    tiles.show(2 * k + 1, adv[idx], f"{labels.get(attack, attack)}:\n{pred[idx]} ({word})",
                               "#0072B2" if word == "correct" else "#D55E00")
                tiles.draw()
            axes[i][0].set_ylabel(textwrap.fill(cfg.label(name), 22), fontsize=6, rotation=0, ha="right", va="center")
        title = f"Adversarial examples at eps {eps:g}: original digit and label, adversarial example and the model's " \
                f"prediction (first draw)" + (f" - {g}" if g else "")
        fig.suptitle(title, fontsize=9, y=1.0)
        fig.subplots_adjust(left=0.14, right=0.99, bottom=0.01, top=1 - 0.55 / fig.get_figheight(), wspace=0.08,
                            hspace=0.45)
        figs.append(_finish(fig, cfg, f"adversarial_examples{'_' + _slug(g) if g else ''}.png"))
    return figs


class _Tiles:
    """Four images side by side in one axes (clean and adversarial, twice), a gap of one tenth of an
    image between them, each with its title above; grey for one channel, colour for three."""

    def __init__(self, ax: plt.Axes, shape: tuple):
        self.ax, (self.c, self.h, self.w) = ax, shape
        self.gap = max(1, self.w // 10)
        self.canvas = np.ones((self.h, 4 * self.w + 3 * self.gap, 3), dtype=np.float32)

    def _x(self, k: int) -> int:
        return k * (self.w + self.gap)

    def show(self, k: int, img: np.ndarray, title: str, color: str = "black") -> None:
        img = np.clip(np.asarray(img, dtype=np.float32).transpose(1, 2, 0), 0, 1)
        self.canvas[:, self._x(k):self._x(k) + self.w] = img if img.shape[-1] == 3 else img[..., :1]
        self.ax.text(self._x(k) + self.w / 2, -1, title, fontsize=6, ha="center", va="bottom", color=color)

    def note(self, k: int, text: str) -> None:
        self.ax.text(self._x(k) - self.gap / 2, self.h / 2, text, fontsize=6, ha="center", va="center")

    def draw(self) -> None:
        self.ax.imshow(self.canvas, vmin=0, vmax=1, interpolation="nearest")
        self.ax.set_xlim(-0.5, self.canvas.shape[1] - 0.5)
        self.ax.set_ylim(self.h - 0.5, -0.5)


def plot_overhead(cfg) -> plt.Figure | None:
    """Compute overhead relative to the ReLU reference (``tables.overhead_rows``): training step,
    inference pass (benchmark, random weights) and training time per epoch (training records)."""
    rows = overhead_rows(cfg)
    measures = {"train": "training step", "inference": "inference pass", "epoch": "training time per epoch"}
    measures = {k: v for k, v in measures.items() if any(r.get(k) is not None for r in rows)}
    if not rows or not measures:
        return None
    colors = {cfg.label(n): c for n, c in model_colors(cfg).items()}
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 0.32 * len(rows) + 1.2), squeeze=False,
                             sharey=True)
    labels = [textwrap.fill(r["label"], 34) for r in rows]
    for ax, (key, title) in zip(axes[0], measures.items()):
        vals = [r.get(key) if r.get(key) is not None else np.nan for r in rows]
        bars = ax.barh(labels, vals, color=[colors.get(r["label"], "white") for r in rows], edgecolor="black",
                       linewidth=0.4)
        for bar, r in zip(bars, rows):
            if r["label"] not in colors:
                bar.set_hatch("//")
        ax.axvline(1, color="black", lw=0.8)
        ax.set_xlabel(f"{title} / ReLU reference's (x)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # the profile's order, top down (shared by every panel)
    fig.suptitle("Compute overhead relative to the ReLU reference (hatched: a benchmark-only variant)", y=1.0)
    fig.tight_layout()
    return _finish(fig, cfg, "compute_overhead.png")
