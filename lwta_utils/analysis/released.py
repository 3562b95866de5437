"""Tables and figures of the LWTA authors' released checkpoint (the chain step
``06_released_checkpoint``), from its records only: ``results/eval_<name>.json`` (with the
sanity checks and per-image files beside it) and ``results/released_checkpoint.json``.

Every function returns None (and draws nothing) when the step has not written its records (it is
off, or its files were not there).
"""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from lwta_utils.analysis.figures import NORM_UNITS, save_figure
from lwta_utils.analysis.queries import attack_label
from lwta_utils.core.jsonfiles import read_versioned
from lwta_utils.core.lazy import LazyModule
from lwta_utils.evaluation.records import load_records

plt = LazyModule("matplotlib.pyplot")  # imported by the first figure drawn

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def released_records(cfg) -> pd.DataFrame | None:
    """The released checkpoint's records (None before the step has run)."""
    path = cfg.results_dir / f"eval_{cfg.released.name}.json"
    if not path.is_file():
        return None
    return load_records(cfg.results_dir, path.name)


def released_summary(cfg) -> dict | None:
    """``results/released_checkpoint.json`` (None before the step has run)."""
    path = cfg.results_dir / "released_checkpoint.json"
    return read_versioned(path, "released_checkpoint") if path.is_file() else None


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _eps255(eps: float) -> str:
    return "0" if eps == 0 else f"{eps * 255:g}/255"


def _robust(r) -> str:
    """The share of images correct in every draw (%), with its Wilson interval where the record has one."""
    lo, hi = r.get("robust_ci_low"), r.get("robust_ci_high")
    ci = f" [{_pct(lo)}, {_pct(hi)}]" if lo is not None and hi is not None and lo == lo and hi == hi else ""
    return f"{_pct(r['worst_accuracy'])}{ci}"


def released_table(cfg) -> pd.DataFrame | None:
    """Every record of the released checkpoint: accuracy (mean over draws, %, with its 95% Wilson
    interval and the sd over draws), the share of images correct in every draw (robust, with its
    interval), the number of images (and, for a step of the cascade, its position and how many
    images it attacked) and draws, the wall time, and the authors' own number where they report
    one (``released.reported``) with our difference to it."""
    df = released_records(cfg)
    if df is None:
        return None
    reported = cfg.released.reported
    rows = []
    for _, r in df.iterrows():
        theirs = reported.get(r["attack"]) if r["attack"] == "none" or np.isclose(r["eps"], cfg.released.eps) else None
        rows.append({"attack": attack_label(r), "eps": _eps255(float(r["eps"])),
                     "accuracy % (mean over draws) [95% CI]": f"{_pct(r['accuracy'])} [{_pct(r['ci_low'])}, "
                                                              f"{_pct(r['ci_high'])}]",
                     "sd over draws": _pct(r["accuracy_sd"]),
                     "correct in every draw % [95% CI]": _robust(r),
                     "n": int(r["n_examples"]), "draws": int(r["draws"]),
                     "cascade step (attacked)": (f"{int(r['cascade_step'])} ({int(r['n_attacked'])})"
                                                 if r.get("cascade_step", 0) and r["cascade_step"] == r["cascade_step"]
                                                 else ""),
                     "authors' number %": f"{theirs:.2f}" if theirs is not None else "",
                     "ours - theirs (points)": f"{100 * r['accuracy'] - theirs:+.1f}" if theirs is not None else "",
                     "wall s": f"{r['wall_time_s']:.0f}"})
    return pd.DataFrame(rows).set_index(["attack", "eps"])


def released_authors_table(cfg) -> pd.DataFrame | None:
    """The authors' setting against their logs: clean accuracy over the draws and their PGD-20
    (relaxed gradient), each with its interval, their number and whether it lies inside."""
    df, summary = released_records(cfg), released_summary(cfg)
    if df is None or summary is None:
        return None
    key = cfg.released.authors_attack.key
    rows = []
    for attack in ("none", key):
        sub = df[(df["attack"] == attack) & (np.isclose(df["eps"], cfg.released.eps) | (df["attack"] == "none"))]
        if sub.empty:
            continue
        r = sub.iloc[0]
        theirs = cfg.released.reported.get(attack)
        inside = "" if theirs is None else ("yes" if 100 * r["ci_low"] <= theirs <= 100 * r["ci_high"] else "no")
        c = summary["clean_draws"]
        spread = (f"{100 * c['mean']:.2f} +- {100 * c['sd']:.2f} (min {_pct(c['min'])}, max {_pct(c['max'])})"
                  if attack == "none" else f"{100 * r['accuracy']:.2f} +- {_pct(r['accuracy_sd'])}")
        mean = c["mean"] if attack == "none" else r["accuracy"]
        rows.append({"measure": "clean" if attack == "none" else attack_label(r),
                     "ours: mean +- sd over draws %": spread,
                     "95% CI %": f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
                     "images x draws": f"{int(r['n_examples'])} x {int(r['draws'])}",
                     "authors' %": f"{theirs:.2f}" if theirs is not None else "not reported",
                     "ours - theirs (points)": f"{100 * mean - theirs:+.2f}" if theirs is not None else "",
                     "theirs inside our CI": inside})
    return pd.DataFrame(rows).set_index("measure")


def released_gradient_table(cfg) -> pd.DataFrame | None:
    """Two-pass input-gradient cosines of the released checkpoint, relaxed and straight-through."""
    summary = released_summary(cfg)
    if summary is None:
        return None
    return pd.DataFrame(summary["gradients"]).set_index(["gradient", "temperature"])


def released_sanity_table(cfg) -> pd.DataFrame | None:
    """The sanity checks of the released checkpoint."""
    path = cfg.results_dir / f"sanity_{cfg.released.name}.json"
    if not path.is_file():
        return None
    checks = read_versioned(path, "sanity")["checks"]
    return pd.DataFrame([{"check": c["check"], "passed": c["passed"], "detail": c["detail"]} for c in checks]
                        ).set_index("check")


def released_timing_table(cfg) -> pd.DataFrame | None:
    """The step's wall time and what it ran on."""
    summary = released_summary(cfg)
    if summary is None:
        return None
    t = summary["timing"]
    m = t["machine"]
    rows = {"whole step (s)": t["step_wall_s"], "evaluation: clean draws and attacks (s)": t["evaluation_wall_s"],
            "of which clean draws (s)": t["clean_draws_wall_s"], "gradient cosines (s)": t["gradients_wall_s"],
            "CPU": m["cpu"], "torch threads": m["torch_threads"],
            "load average at the end (1, 5, 15 min)": ", ".join(map(str, m["load_average_1_5_15"]))}
    return pd.DataFrame({"value": rows})


def _bars(acc: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Error bars (%) below and above ``acc`` from its interval (never negative: rounding)."""
    return 100 * np.clip(np.vstack([acc - lo, hi - acc]).astype(float), 0, None)


def plot_released_curves(cfg) -> plt.Figure | None:
    """Accuracy versus eps (Linf, pixel units) on the released checkpoint: one line per attack
    that ran at several eps, a point per attack that ran at one (clean at eps 0), with 95%
    Wilson bands; mean over draws (solid) and correct in every draw (dashed)."""
    df = released_records(cfg)
    if df is None:
        return None
    clean = df[df["attack"] == "none"].iloc[0]
    atk = df[(df["attack"] != "none") & (df["attack"] != "worst_case") & (df["norm"].fillna("linf") == "linf")]
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    colors = plt.get_cmap("tab10").colors
    for i, (key, sub) in enumerate(atk.groupby("attack", sort=False)):
        sub = sub.sort_values("eps")
        label = f"{attack_label(sub.iloc[0])} (n {int(sub['n_examples'].min())})"
        eps = np.r_[0.0, sub["eps"].to_numpy()] if len(sub) > 1 else sub["eps"].to_numpy()
        acc = np.r_[clean["accuracy"], sub["accuracy"]] if len(sub) > 1 else sub["accuracy"].to_numpy()
        lo = np.r_[clean["ci_low"], sub["ci_low"]] if len(sub) > 1 else sub["ci_low"].to_numpy()
        hi = np.r_[clean["ci_high"], sub["ci_high"]] if len(sub) > 1 else sub["ci_high"].to_numpy()
        c = colors[i % len(colors)]
        ax.plot(eps * 255, 100 * acc, marker="o", color=c, label=label)
        if len(sub) > 1:
            ax.fill_between(eps * 255, 100 * lo, 100 * hi, color=c, alpha=0.12)
            ax.plot(eps * 255, 100 * np.r_[clean["worst_accuracy"], sub["worst_accuracy"]], ls="--", color=c, alpha=0.7)
        else:
            ax.errorbar(eps * 255, 100 * acc, yerr=_bars(acc, lo, hi), color=c, capsize=3, ls="none")
    ax.errorbar([0], [100 * clean["accuracy"]], yerr=_bars(*(np.array([clean[k]]) for k in ("accuracy", "ci_low", "ci_high"))),
                marker="s", color="black", capsize=3, label=f"clean ({int(clean['draws'])} draws)")
    reported = cfg.released.reported
    for key, value in reported.items():
        if key == "none":
            continue
        ax.scatter([cfg.released.eps * 255], [value], marker="*", s=90, color="grey", zorder=5)
    if any(k != "none" for k in reported):
        ax.scatter([], [], marker="*", s=90, color="grey", label="the authors' numbers at 8/255")
    ax.set_xlabel(f"eps x 255 ({NORM_UNITS['linf']})")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title(textwrap.fill(f"{cfg.released.label}: robustness versus eps (solid: mean over draws; dashed: "
                               f"correct in every draw)", 80), fontsize=9)
    fig.tight_layout()
    save_figure(fig, cfg.figures_dir / "released_robustness_curves.png")
    return fig


def plot_released_probs(cfg) -> plt.Figure | None:
    """The distribution of the true-class probability (mean over draws) over the images: clean and
    under each attack at the threat model's eps."""
    path = cfg.results_dir / f"probs_{cfg.released.name}.npz"
    df = released_records(cfg)
    if df is None or not path.is_file():
        return None
    labels = {r["attack"]: attack_label(r) for _, r in df.drop_duplicates("attack").iterrows()}
    with np.load(path) as data:
        keys = [k for k in data.files if k == "none@0" or (k != "labels" and "@" in k and
                                                             np.isclose(float(k.rsplit("@", 1)[1]), cfg.released.eps))]
        values = {k: data[k] for k in keys}
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(values) + 1.2))
    names = [("clean" if k == "none@0" else labels.get(k.rsplit("@", 1)[0], k)) + f" (n {len(v)})"
             for k, v in values.items()]
    parts = ax.violinplot(list(values.values()), vert=False, showmedians=True, widths=0.85)
    for body in parts["bodies"]:
        body.set_alpha(0.5)
    ax.set_yticks(range(1, len(names) + 1), [textwrap.fill(n, 48) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of the true class (mean over draws)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(textwrap.fill(f"{cfg.released.label}: true-class probability over the CIFAR-10 test images, clean "
                               f"and at eps {_eps255(cfg.released.eps)}", 80), fontsize=9)
    fig.tight_layout()
    save_figure(fig, cfg.figures_dir / "released_true_class_probs.png")
    return fig


def plot_released_examples(cfg, n_images: int = 6) -> plt.Figure | None:
    """A colour grid of the first kept test images: per row, the clean image with its label and the
    model's clean prediction (first draw), then its adversarial example under each kept attack at
    the threat model's eps with the prediction (first draw): blue when correct, orange when fooled."""
    path = cfg.results_dir / f"examples_{cfg.released.name}.npz"
    df = released_records(cfg)
    if df is None or not path.is_file():
        return None
    with np.load(path) as data:
        d = {k: data[k] for k in data.files}
    eps = cfg.released.eps
    attacks = [a for a in cfg.released.example_attacks if f"adv_{a}@{eps:g}" in d]
    labels = {r["attack"]: attack_label(r) for _, r in df.drop_duplicates("attack").iterrows()}
    k = min(n_images, len(d["y"]))
    fig, axes = plt.subplots(k, 1 + len(attacks), figsize=(1.9 * (1 + len(attacks)), 1.9 * k + 0.5), squeeze=False)
    for i in range(k):
        y = int(d["y"][i])
        cells = [("clean", d["x"][i], d["pred_none@0"][i])]
        cells += [(labels.get(a, a), d[f"adv_{a}@{eps:g}"][i], d[f"pred_{a}@{eps:g}"][i]) for a in attacks]
        for j, (title, img, pred) in enumerate(cells):
            ax = axes[i][j]
            ax.imshow(np.clip(np.asarray(img, np.float32).transpose(1, 2, 0), 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            ok = int(pred) == y
            head = f"{textwrap.fill(title, 26)}\n" if i == 0 else ""
            ax.set_title(f"{head}pred {CLASSES[int(pred)]}", fontsize=7, color="#0072B2" if ok else "#D55E00")
        axes[i][0].set_ylabel(f"label {CLASSES[y]}", fontsize=7)
    fig.suptitle(textwrap.fill(f"{cfg.released.label}: CIFAR-10 test images and their adversarial examples at eps "
                               f"{_eps255(eps)} (prediction of the first draw; blue correct, orange fooled)", 90),
                 fontsize=8)
    fig.tight_layout()
    save_figure(fig, cfg.figures_dir / "released_adversarial_examples.png")
    return fig
