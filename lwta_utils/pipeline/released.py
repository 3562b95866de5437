"""The chain step ``06_released_checkpoint``: the LWTA authors' released CIFAR-10 checkpoint
(a WideResNet-34-1 with stochastic LWTA, trained with PGD-AT) under the study's attacks.

It finds and checks the files (``evaluation.released``), loads the weights strictly into the
project's WideResNet, evaluates the authors' setting first (clean accuracy over many draws, their
PGD-20 with the relaxed gradient) and then the attack suite, measures the two-pass input-gradient
cosines in both gradient modes, runs the sanity checks, and writes, like ``evaluate_all`` does
for the profile's models: ``results/eval_<name>.json`` (records, with the configuration hash
that makes a rerun reuse them), ``sanity_<name>.json``, ``probs_<name>.npz``,
``correct_<name>.npz``, ``examples_<name>.npz``, and ``results/released_checkpoint.json`` (the
files and their md5, the loading, the clean draws, the gradient cosines, the wall time and the
machine). Without the files (a clone without ``../shared/``, no network) it says which files to
put where and writes nothing.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time

import numpy as np
import torch

from lwta_utils.config.schema import StudyConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.fileio import atomic_path
from lwta_utils.core.jsonfiles import read_versioned, write_versioned
from lwta_utils.core.progress import tally
from lwta_utils.core.provenance import provenance
from lwta_utils.core.registry import DATASETS
from lwta_utils.core.runtime import get_device
from lwta_utils.evaluation.records import write_records
from lwta_utils.evaluation.released import (
    ReleasedUnavailable,
    evaluate_released,
    find_released,
    gradient_cosines,
    gradient_rows,
    load_released_images,
    load_released_model,
    released_hash,
    sanity_gradients,
)
from lwta_utils.evaluation.sanity import sanity_checks

SUMMARY_FILE = "released_checkpoint.json"


def released_meta(cfg: StudyConfig) -> dict:
    """The record fields that describe the released checkpoint."""
    r = cfg.released
    return {"model": r.name, "label": r.label, "arch": "wrn", "activation": "lwta",
            "training": "PGD-AT (the authors' released checkpoint)", "split": f"test (first {r.n_images})",
            "dataset": "cifar10", "profile": cfg.profile}


def released_outputs(cfg: StudyConfig) -> dict:
    """The files the step writes, by role."""
    name, res = cfg.released.name, cfg.results_dir
    return {"records": res / f"eval_{name}.json", "sanity": res / f"sanity_{name}.json",
            "probs": res / f"probs_{name}.npz", "correct": res / f"correct_{name}.npz",
            "examples": res / f"examples_{name}.npz", "summary": res / SUMMARY_FILE}


def cached_summary(cfg: StudyConfig, config_hash: str) -> dict | None:
    """The summary of an earlier run under the same configuration hash whose files all exist."""
    out = released_outputs(cfg)
    if not all(out[k].is_file() for k in ("records", "sanity", "correct", "probs", "summary")):
        return None
    try:
        records = read_versioned(out["records"], "evaluation")
        summary = read_versioned(out["summary"], "released_checkpoint")
    except ConfigError:  # unreadable or an older layout: evaluate again
        return None
    if records.get("config_hash") != config_hash or summary.get("config_hash") != config_hash:
        return None
    return summary


def machine() -> dict:
    """What the wall times were measured on (other processes share the CPU: the load average says how much)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": [round(v, 2) for v in load]}


def released_checkpoint(cfg: StudyConfig, *, reuse: bool = True, device: torch.device | None = None) -> dict | None:
    """Run the step (see the module's docstring). Returns the summary written to
    ``results/released_checkpoint.json`` (None when the step is off or its files are not there).
    With ``reuse``, an earlier run under the same configuration hash (the files' md5, the
    settings, the seed) is kept instead."""
    r = cfg.released
    if not r.run:
        print(f"released.run is false in profile {cfg.profile!r}: the released checkpoint is not evaluated.")
        return None
    t_start = time.perf_counter()
    try:
        files = find_released(r)
    except ReleasedUnavailable as exc:
        print(f"Skipped: {exc}")
        return None
    for path in files.fetched:
        print(f"fetched {path}")
    config_hash = released_hash(r, cfg.seed, cfg.eval.sanity, cfg.eval.confirm_draws)
    if reuse:
        summary = cached_summary(cfg, config_hash)
        if summary is not None:
            print(f"{r.name}: reusing results/eval_{r.name}.json (configuration hash {config_hash} matches)")
            tally("records reused")
            return summary
    device = device or get_device(cfg.device)
    _, info = DATASETS.lookup("data.name", "cifar10")
    model, loading = load_released_model(files.checkpoint, r.checkpoint_md5, info, device)
    print(f"{files.checkpoint.name}: {loading['message']}; WRN-{loading['depth']}-{loading['widen_factor']}, "
          f"epoch {loading['epoch']}")
    try:
        x, y = load_released_images(files, r)
    except ReleasedUnavailable as exc:
        print(f"Skipped: {exc}")
        return None
    meta = released_meta(cfg)
    t0 = time.perf_counter()
    ev, clean = evaluate_released(model, x, y, r, seed=cfg.seed, meta=meta, confirm_draws=cfg.eval.confirm_draws)
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = min(r.n_gradients, len(x))
    cos = gradient_cosines(model, x[:n], y[:n], r.batch_size, torch.Generator().manual_seed(cfg.seed + 2))
    t_grad = time.perf_counter() - t0
    grads = sanity_gradients(cos)
    sanity = sanity_checks(ev.records, ev.correct, grads, cfg.eval.sanity)
    out = released_outputs(cfg)
    write_versioned(out["sanity"], "sanity", {"model": r.name, "label": r.label, **sanity, "profile": cfg.profile,
                                              **provenance()})
    for stem, arrays in (("probs", ev.probs), ("correct", ev.correct), ("examples", ev.examples)):
        if arrays:
            with atomic_path(out[stem]) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, **({} if stem == "examples" else {"labels": y.numpy()}), **arrays)
    wall = time.perf_counter() - t_start
    summary = {
        "model": r.name, "label": r.label, "config_hash": config_hash, "profile": cfg.profile, "seed": cfg.seed,
        "files": {"checkpoint": str(files.checkpoint), "checkpoint_md5": r.checkpoint_md5,
                  "images": str(files.images) if files.images else f"CIFAR-10 test batch under {files.cifar_root}",
                  "images_md5": r.images_md5 if files.images else r.images_content_md5, "fetched": files.fetched,
                  "checkpoint_url": r.checkpoint_url},
        "loading": {k: v for k, v in loading.items() if k != "ignored"} | {"ignored_prefixes": sorted(
            {k.split(".")[0] for k in loading["ignored"]}), "n_ignored": len(loading["ignored"])},
        "n_images": len(y), "clean_draws": clean, "gradients": gradient_rows(cos),
        "reported": dict(r.reported), "settings": dataclasses.asdict(r),
        "timing": {"step_wall_s": round(wall, 1), "evaluation_wall_s": round(t_eval, 1),
                   "gradients_wall_s": round(t_grad, 1), "clean_draws_wall_s": round(clean["wall_time_s"], 1),
                   "machine": machine()},
        **provenance()}
    write_versioned(out["summary"], "released_checkpoint", summary)
    # last: its configuration hash vouches for the files above when a rerun reuses them
    write_records(out["records"], ev.records, config_hash=config_hash)
    tally("models evaluated")
    flags = ", ".join(sanity["flags"]) or "none"
    print(f"{r.name}: {len(ev.records)} records in {wall:.1f}s on {summary['timing']['machine']['torch_threads']} "
          f"threads (load average {summary['timing']['machine']['load_average_1_5_15']}); sanity flags: {flags}")
    return summary
