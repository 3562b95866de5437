"""Each model's headline in the format readers of this field know: one RobustBench-style JSON entry
per model (``results/robustbench_<model>.json``), written from the records.

The fields follow RobustBench's ``model_info`` entries (name, link, authors, dataset, threat model,
eps, clean and robust accuracy as strings with two decimals, additional data, forward passes,
architecture, venue, unreliable, footnote) with what an entry of this study also needs: which
evaluation gave the robust accuracy, on how many images, the model's source and its training.
"""
from __future__ import annotations

import pandas as pd

from lwta_utils.analysis.headline import DATASET_NAMES, released_rows
from lwta_utils.analysis.queries import attack_label, headline_rows
from lwta_utils.analysis.queries import reported as reported_accuracy
from lwta_utils.analysis.sources import SOURCES
from lwta_utils.core.jsonfiles import write_versioned
from lwta_utils.core.paths import display_path
from lwta_utils.core.provenance import git_sha

ARCHITECTURES = {"mnist_cnn": "MNIST CNN (conv 5x5 x32, conv 5x5 x64, fc 128)", "wrn": "WideResNet-34"}


def _eps_text(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if eps < 0.1 and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def _acc(r) -> str:
    return f"{100 * reported_accuracy(r)[0]:.2f}"


def entry(*, name: str, label: str, dataset: str, eps: float, clean, robust, arch: str, training: str,
          source: str, link: str, authors: str, reported: str = "", flags: list[str] | None = None,
          draws: int = 1) -> dict:
    """One entry (see the module's docstring); ``clean`` and ``robust`` are records (``git_sha``: the
    commit that computed the robust accuracy)."""
    flags = list(flags or [])
    return {"name": label, "model": name, "link": link, "authors": authors, "additional_data": False,
            "number_forward_passes": 1, "evaluation_draws": draws, "dataset": dataset.lower().replace("-", ""),
            "venue": "", "architecture": arch, "threat_model": "Linf", "eps": _eps_text(eps),
            "clean_acc": _acc(clean), "reported": reported, "robust_acc": _acc(robust),
            "robust_evaluation": attack_label(robust), "robust_acc_ci95": [round(100 * reported_accuracy(robust)[1], 2),
                                                                           round(100 * reported_accuracy(robust)[2], 2)],
            "n_examples": int(robust["n_examples"]), "source": source, "training": training,
            "unreliable": bool(flags), "footnote": ("sanity flags: " + "; ".join(flags)) if flags else "",
            "git_sha": str(robust.get("git_sha") or git_sha())}


def robustbench_entries(cfg) -> list[dict]:
    """The entries of the profile's models with a worst case (or strongest attack) at the headline
    eps, and of the LWTA authors' released checkpoint when its records exist."""
    data = DATASET_NAMES.get(cfg.data.name, cfg.data.name)
    out = []
    for r in released_rows(cfg):
        if r.clean is None or r.strongest is None:
            continue
        src = SOURCES["lwta_code"]
        out.append(entry(name=r.name, label=r.label, dataset="CIFAR-10", eps=r.eps, clean=r.clean, robust=r.strongest,
                         arch="WideResNet-34-1 (stochastic LWTA)", training=str(r.clean.get("training") or "PGD-AT"),
                         source="the LWTA authors' released checkpoint", link=src.link,
                         authors=", ".join(SOURCES["lwta_paper"].authors),
                         reported=", ".join(f"{v:g}" for v, _ in r.claimed), draws=int(r.strongest.get("draws", 1))))
    for h in headline_rows(cfg):
        robust = h["worst_case"] if h["worst_case"] is not None else h["strongest"]
        if robust is None:
            continue
        m = cfg.models[h["name"]]
        arch = ARCHITECTURES.get(m.arch, m.arch) + f", activation {m.activation}"
        out.append(entry(name=h["name"], label=cfg.label(h["name"]), dataset=data, eps=cfg.eval.headline_eps,
                         clean=h["clean"], robust=robust, arch=arch, training=str(h["clean"].get("training", "")),
                         source="trained by this study", link="", authors="this study", flags=h["flags"],
                         draws=int(robust.get("draws", 1))))
    return out


def export_robustbench(cfg) -> pd.DataFrame:
    """Write ``results/robustbench_<model>.json`` for every entry; return them as a table with the
    path of each file (relative to the report and the notebooks: ``../results/...``)."""
    rows = []
    for e in robustbench_entries(cfg):
        path = write_versioned(cfg.results_dir / f"robustbench_{e['model']}.json", "robustbench", e)
        rows.append({"model": e["name"], "threat model": f"{e['threat_model']} {e['eps']}", "clean": e["clean_acc"],
                     "robust": e["robust_acc"], "robust evaluation": e["robust_evaluation"], "n": e["n_examples"],
                     "source": e["source"], "file": f"../results/{path.name}",
                     "written to": display_path(path)})
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def robustbench_links(table: pd.DataFrame) -> str:
    """Markdown links to the entries (for the report)."""
    if table.empty:
        return "No entries yet (no model has a worst case at the headline eps)."
    return "\n".join(f"- [{model}]({row['file']}): {row['threat model']}, clean {row['clean']}%, robust "
                     f"{row['robust']}% ({row['robust evaluation']}, n {row['n']}; {row['source']})"
                     for model, row in table.iterrows())


def robustbench(cfg):
    """Write the entries (``export_robustbench``) and show links to them (Markdown)."""
    from IPython.display import Markdown

    return Markdown(robustbench_links(export_robustbench(cfg)))
