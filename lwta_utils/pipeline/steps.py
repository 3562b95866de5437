"""The steps the notebooks call: set up, train a stage's models, evaluate them.

Notebooks exchange only files: checkpoints in ``models/`` and records in ``results/`` under the
profile's ``out_dir``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lwta_utils.config.describe import training_name
from lwta_utils.config.loading import load_config
from lwta_utils.config.schema import STAGES, StudyConfig
from lwta_utils.core.distributed import (
    SINGLE,
    DistContext,
    barrier,
    gather_objects,
    shard,
)
from lwta_utils.core.errors import bad, check_choice
from lwta_utils.core.fileio import atomic_path
from lwta_utils.core.jsonfiles import write_versioned
from lwta_utils.core.modes import memory_format
from lwta_utils.core.paths import display_path
from lwta_utils.core.progress import status, tally
from lwta_utils.core.provenance import provenance
from lwta_utils.core.runtime import get_device, seed_everything, set_threads
from lwta_utils.core.switches import noise_from, stream
from lwta_utils.data.splits import Splits
from lwta_utils.evaluation.checkpoints import (
    read_checkpoint,
    save_checkpoint,
)
from lwta_utils.evaluation.evaluate import evaluate_model, merge_shards
from lwta_utils.evaluation.loading import cached_records, checkpoint_path, load_trained
from lwta_utils.evaluation.records import write_records
from lwta_utils.evaluation.sanity import gradient_stats, sanity_checks
from lwta_utils.models.registry import build_model
from lwta_utils.training.fit import fit


def setup(profile: str = "default", *, seed: int | None = None, device: str | None = None,
          out_dir: str | None = None, overrides: dict | None = None, verbose: bool = True) -> StudyConfig:
    """Load and validate the profile, set threads and seeds, show tables in full (no truncated
    cells, every row and column); print what is in force."""
    cfg = load_config(profile, seed=seed, device=device, out_dir=out_dir, overrides=overrides)
    for option, value in (("display.max_colwidth", None), ("display.max_columns", None), ("display.max_rows", 500)):
        pd.set_option(option, value)
    threads = set_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    if verbose:
        print(f"profile {cfg.profile!r}, seed {cfg.seed}, device {get_device(cfg.device)}, "
              f"{threads} CPU threads, outputs under {display_path(cfg.out)}/"
              + (f", overrides {overrides}" if overrides else ""))
    return cfg


def stage_models(cfg: StudyConfig, stage: str) -> list[str]:
    """Names of the profile's models trained by ``stage``'s notebook."""
    check_choice("stage", stage, STAGES)
    return [n for n, m in cfg.models.items() if m.stage == stage]


def data_summary(cfg: StudyConfig, splits: Splits) -> pd.DataFrame:
    """Write ``results/data_split.json`` and return the per-class counts table."""
    summary = splits.summary()
    write_versioned(cfg.results_dir / "data_split.json", "data_split", {**summary, "provenance": provenance()})
    counts = pd.DataFrame(summary["class_counts"])
    counts.index.name = "class"
    return counts


def state_path(cfg: StudyConfig, name: str) -> Path:
    """Where an interrupted training of ``name`` keeps its state (``compute.state_every_steps``)."""
    return cfg.models_dir / f"{name}.state.pt"


def train_stage(cfg: StudyConfig, stage: str, splits: Splits, *, reuse: bool = False,
                names: list[str] | None = None, ctx: DistContext = SINGLE,
                device: torch.device | None = None) -> pd.DataFrame:
    """Train every model of the profile whose ``stage`` is ``stage`` (or only ``names`` of them).

    Each is saved to ``models/<name>.pt`` with its configuration hash, and its
    history to ``results/train_<name>.json``. With ``reuse``, a checkpoint
    whose hash matches the current configuration is kept instead. While it
    trains, its state is saved to ``models/<name>.state.pt`` (every epoch and
    every ``compute.state_every_steps`` steps) and an interrupted run resumes
    from it (``compute.resume``). Under torch.distributed (``ctx``, from
    ``lwta_utils.pipeline.launch``) every process trains its share and rank 0 writes.
    """
    in_stage = stage_models(cfg, stage)
    for n in names or []:
        check_choice("names", n, in_stage)
    names = in_stage if names is None else list(names)
    if not names:
        print(f"The profile {cfg.profile!r} defines no model for stage {stage!r} yet: nothing to train.")
        return pd.DataFrame()
    device = device or get_device(cfg.device)
    say = print if ctx.is_main else (lambda *args, **kw: None)
    rows = []
    for name in names:
        m = cfg.models[name]
        path, chash = checkpoint_path(cfg, name), cfg.model_hash(name)
        ckpt = read_checkpoint(path) if reuse and path.is_file() else None
        if ckpt is not None and ckpt.get("config_hash") == chash:
            say(f"{name}: reusing {display_path(path)} (configuration hash {chash} matches)")
            tally("checkpoints reused")
            rows.append({"model": name, **ckpt["metrics"]})
            continue
        seed = cfg.model_seed(name)
        seed_everything(seed)
        model = build_model(m, splits.info)
        if m.init_from:  # fine-tuning: start from the weights of an earlier model of the profile
            model.load_state_dict(load_trained(cfg, m.init_from, torch.device("cpu"))[0].state_dict())
        n_params = sum(p.numel() for p in model.parameters())
        say(f"{name}: {m.arch} / {m.activation}, {n_params:,} parameters, {training_name(cfg, name)}, "
              f"{m.train.epochs} epochs on {len(splits.y_train)} examples"
              + (f", initialised from {m.init_from}" if m.init_from else ""))
        status(f"training {name}")
        res = fit(model, splits, m.train, device=device, seed=seed, desc=name, compute=cfg.compute, ctx=ctx,
                  state_path=state_path(cfg, name), state_key=chash)
        metrics = {"best_epoch": res.best_epoch, "select_metric": res.select_metric,
                   "best_val_metric": res.best_metric, "train_wall_time_s": res.wall_time_s,
                   "n_params": n_params, "processes": ctx.world_size}
        rows.append({"model": name, **metrics})
        tally("models trained")
        if not ctx.is_main:
            continue
        save_checkpoint(path, model, name=name, model_cfg=m, info=splits.info, config_hash=chash,
                        metrics=metrics, history=res.history, seed=seed, profile=cfg.profile)
        write_versioned(cfg.results_dir / f"train_{name}.json", "training",
                   {"model": name, "label": cfg.label(name), "training": training_name(cfg, name),
                    "config_hash": chash, **metrics, "history": res.history, "seed": seed,
                    "profile": cfg.profile, "model_config": dataclasses.asdict(m),
                    "compute": dataclasses.asdict(cfg.compute), **provenance()})
        state_path(cfg, name).unlink(missing_ok=True)
    barrier(ctx)
    return pd.DataFrame(rows).set_index("model")


def evaluate_all(cfg: StudyConfig, splits: Splits, names: list[str] | None = None, *,
                 ctx: DistContext = SINGLE, device: torch.device | None = None, reuse: bool = False) -> pd.DataFrame:
    """Evaluate every model of the profile (or ``names``) on the first ``eval.n_examples``
    test examples: clean, then each attack that applies at each eps, the per-example worst
    case over attacks at the headline eps, then the sanity checks. Writes, per model,
    ``results/eval_<name>.json`` (records), ``results/sanity_<name>.json`` (checks and
    flags), ``results/probs_<name>.npz`` (true-class probabilities per example) and
    ``results/correct_<name>.npz`` (per-example correctness in every draw) and
    ``results/examples_<name>.npz`` (the first adversarial examples of ``eval.example_attacks``).
    Under torch.distributed (``ctx``) process r evaluates examples r, r + W, ...; rank 0
    gathers them, computes the records and writes. With ``reuse``, a model whose records were
    computed under the current configuration hash (``cfg.eval_hash``) is not evaluated again."""
    device = device or get_device(cfg.device)
    e = cfg.eval
    x, y = splits.x_test[: e.n_examples], splits.y_test[: e.n_examples]
    names = list(cfg.models) if names is None else list(names)
    for n in names:
        check_choice("names", n, cfg.models)
    attacks = e.attacks
    if ctx.active:
        for i, atk in enumerate(attacks):
            if atk.n_examples and atk.n_examples < ctx.world_size:
                raise bad(f"eval.attacks[{i}].n_examples", atk.n_examples,
                          f"at least the number of processes ({ctx.world_size}), or 0 for all")
        n_local = [len(range(ctx.rank, min(atk.n_examples or len(x), len(x)), ctx.world_size)) for atk in attacks]
        attacks = [dataclasses.replace(atk, n_examples=k) for atk, k in zip(attacks, n_local)]
    xs, ys = (x[shard(len(x), ctx)], y[shard(len(y), ctx)]) if ctx.active else (x, y)
    all_records = []
    if reuse:
        for name in list(names):
            cached = cached_records(cfg, name)
            if cached is not None:
                if ctx.is_main:
                    print(f"{name}: reusing results/eval_{name}.json (configuration hash {cfg.eval_hash(name)} matches)")
                tally("records reused")
                all_records += cached
                names.remove(name)
    models = {name: load_trained(cfg, name, device)[0] for name in names}  # all checked before any work
    needed = {a.surrogate for a in e.attacks if a.surrogate}
    surrogates = {s: models[s] if s in models else load_trained(cfg, s, device)[0] for s in needed} if models else {}
    for i, (name, model) in enumerate(models.items(), 1):
        status(f"evaluating {name} ({i}/{len(models)})")
        m = cfg.models[name]
        meta = {"model": name, "label": cfg.label(name), "arch": m.arch, "activation": m.activation,
                "training": training_name(cfg, name), "split": "test", "dataset": cfg.data.name,
                "profile": cfg.profile}
        t0 = time.perf_counter()
        with memory_format(model, e.channels_last):
            ev = evaluate_model(model, xs, ys, attacks, batch_size=e.batch_size, seed=cfg.seed, meta=meta,
                                draws=e.draws, confirm_draws=e.confirm_draws, surrogates=surrogates,
                                headline_eps=e.headline_eps,
                                cascade=tuple(e.cascade), example_attacks=tuple(e.example_attacks),
                                n_saved_examples=e.n_saved_examples, progress=ctx.is_main)
        if ctx.active:
            parts = gather_objects(ev, ctx)
            if not ctx.is_main:
                continue
            ev = merge_shards(parts)
        n = min(e.sanity.n_examples, len(x))
        with noise_from(model, stream(cfg.seed, "sanity", name)):
            grads = gradient_stats(model, x[:n], y[:n], e.batch_size)
        sanity = sanity_checks(ev.records, ev.correct, grads, e.sanity)
        write_versioned(cfg.results_dir / f"sanity_{name}.json", "sanity", {"model": name, "label": cfg.label(name), **sanity,
                                                              "profile": cfg.profile, **provenance()})
        for stem, arrays in (("probs", ev.probs), ("correct", ev.correct), ("examples", ev.examples)):
            if arrays:
                with atomic_path(cfg.results_dir / f"{stem}_{name}.npz") as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez_compressed(fh, **({} if stem == "examples" else {"labels": y.numpy()}), **arrays)
        # last: its configuration hash vouches for the files above when a rerun reuses them
        write_records(cfg.results_dir / f"eval_{name}.json", ev.records, config_hash=cfg.eval_hash(name))
        flags = ", ".join(sanity["flags"]) or "none"
        print(f"{name}: {len(ev.records)} records in {time.perf_counter() - t0:.1f}s; sanity flags: {flags}")
        tally("models evaluated")
        all_records += [dataclasses.asdict(r) for r in ev.records]
    barrier(ctx)
    return pd.DataFrame(all_records)
