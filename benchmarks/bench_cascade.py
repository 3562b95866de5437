"""What the adaptive cascade saves, measured side by side in one run: the profile's cascade (each
attack only on the digits still robust after the previous ones) against the same attacks run on
every digit, on trained models of a profile.

    python benchmarks/bench_cascade.py [--profile default] [--out DIR] [--models relu_pgdat,lwta_pgdat] [--n 100]
        [--threads 0] [--json results/bench_cascade.json]

For each model (its checkpoint in models/, trained by the chain), ``evaluate_model`` runs the
profile's ``eval.cascade`` at ``eval.headline_eps`` on the first ``--n`` test digits twice, with the
same seed: as the cascade and with ``full_cascade`` (every attack on every digit, the strongest
perturbation still kept per digit). Printed per model: the forward and backward passes each counted
(the model's own passes, every draw and every EOT sample counted), their ratio full / cascade, the
wall times and their ratio, and the robust share of the worst case of each, which must agree within
draw noise (the cascade gives up nothing). The two runs alternate in order between models.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lwta_utils as lu
from lwta_utils.core.jsonfiles import write_versioned
from lwta_utils.core.modes import memory_format
from lwta_utils.core.provenance import provenance
from lwta_utils.core.runtime import default_threads, get_device
from lwta_utils.evaluation.evaluate import evaluate_model
from lwta_utils.evaluation.loading import load_trained


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="default", help="a file in params/ whose models are trained")
    p.add_argument("--out", default=None, help="the output root holding models/ (default: the profile's out_dir)")
    p.add_argument("--models", default="relu_pgdat,lwta_pgdat", help="comma-separated model names")
    p.add_argument("--n", type=int, default=100, help="test digits (the first n)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def run(cfg, name: str, model, surrogates, x, y, full: bool) -> dict:
    e = cfg.eval
    m = cfg.models[name]
    meta = {"model": name, "label": cfg.label(name), "arch": m.arch, "activation": m.activation, "training": "",
            "split": "test", "dataset": cfg.data.name, "profile": cfg.profile}
    suite = [a for a in e.attacks if a.key in e.cascade]  # the attacks outside it cost the same in both runs
    t0 = time.perf_counter()
    with memory_format(model, e.channels_last):
        ev = evaluate_model(model, x, y, suite, batch_size=e.batch_size, seed=cfg.seed, meta=meta, draws=e.draws,
                            confirm_draws=e.confirm_draws, surrogates=surrogates, headline_eps=e.headline_eps,
                            cascade=tuple(e.cascade), full_cascade=full, progress=False)
    wall = time.perf_counter() - t0
    steps = [r for r in ev.records if r.cascade_step]
    worst = next(r for r in ev.records if r.attack == "worst_case")
    return {"forward": sum(r.attack_params["forward_passes"] for r in steps),
            "backward": sum(r.attack_params["backward_passes"] for r in steps),
            "wall_s": round(wall, 2), "robust": worst.worst_accuracy, "n": worst.n_examples,
            "steps": {r.attack: {"n_attacked": r.n_attacked, "robust_after": r.worst_accuracy} for r in steps}}


def main(argv=None) -> dict:
    a = parse(argv)
    torch.set_num_threads(a.threads or default_threads())
    cfg = lu.load_config(a.profile, out_dir=a.out)
    if not cfg.eval.cascade:
        sys.exit(f"profile '{a.profile}' has no eval.cascade")
    names = [n for n in a.models.split(",") if n]
    for n in names:
        if n not in cfg.models:
            sys.exit(f"--models: '{n}' is not a model of profile '{a.profile}' ({', '.join(cfg.models)})")
    device = get_device(cfg.device)
    splits = lu.load_data(cfg)
    x, y = splits.x_test[:a.n], splits.y_test[:a.n]
    models = {n: load_trained(cfg, n, device)[0] for n in names}
    needed = {atk.surrogate for atk in cfg.eval.attacks if atk.surrogate and atk.key in cfg.eval.cascade}
    surrogates = {s: models[s] if s in models else load_trained(cfg, s, device)[0] for s in needed}
    print(f"cascade {', '.join(cfg.eval.cascade)} at eps {cfg.eval.headline_eps:g}, {len(x)} digits, "
          f"{cfg.eval.draws} draws, {torch.get_num_threads()} threads, {device}")
    out = {}
    for i, name in enumerate(names):
        order = (False, True) if i % 2 == 0 else (True, False)
        res = {("full" if full else "cascade"): run(cfg, name, models[name], surrogates, x, y, full) for full in order}
        c, f = res["cascade"], res["full"]
        passes = (f["forward"] + f["backward"]) / max(c["forward"] + c["backward"], 1)
        res["ratios"] = {"passes full / cascade": round(passes, 2),
                         "wall full / cascade": round(f["wall_s"] / max(c["wall_s"], 1e-9), 2),
                         "robust cascade - full (points)": round(100 * (c["robust"] - f["robust"]), 1)}
        out[name] = res
        print(f"{name:>14s}: passes fwd/bwd cascade {c['forward']:,}/{c['backward']:,}, full {f['forward']:,}/"
              f"{f['backward']:,} -> {passes:.2f}x; wall {c['wall_s']:.1f}s vs {f['wall_s']:.1f}s -> "
              f"{res['ratios']['wall full / cascade']:.2f}x; worst-case robust {100 * c['robust']:.1f}% (cascade) vs "
              f"{100 * f['robust']:.1f}% (full)")
    payload = {"results": out, "profile": a.profile, "n": len(x), "cascade": list(cfg.eval.cascade),
               "draws": cfg.eval.draws, "threads": torch.get_num_threads(), **provenance()}
    if a.json:
        write_versioned(Path(a.json), "benchmark", payload)
        print(f"wrote {a.json}")
    return payload


if __name__ == "__main__":
    main()
