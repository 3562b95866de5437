"""Loading the trained models of a profile: each checkpoint is checked against the current
configuration (its hash), and evaluation records are reused when their hash matches."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lwta_utils.config.schema import StudyConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.jsonfiles import read_versioned
from lwta_utils.evaluation.checkpoints import (
    load_checkpoint,
)


def checkpoint_path(cfg: StudyConfig, name: str) -> Path:
    return cfg.models_dir / f"{name}.pt"


def load_trained(cfg: StudyConfig, name: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Load ``models/<name>.pt`` and check it was trained under the current configuration."""
    path = checkpoint_path(cfg, name)
    model, ckpt = load_checkpoint(path, device)
    if ckpt.get("config_hash") != cfg.model_hash(name):
        diffs = config_differences(ckpt.get("model_config", {}), dataclasses.asdict(cfg.models[name]))
        what = "; ".join(diffs[:5]) if diffs else "the data split, seed, amp or a model it starts from differ"
        raise ConfigError(f"checkpoint '{path}' was trained under another configuration (hash "
                          f"{ckpt.get('config_hash')} vs {cfg.model_hash(name)} now: {what}): rerun the notebook "
                          f"of stage {cfg.models[name].stage!r}")
    return model, ckpt


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: saved vs current' for every (nested) field that differs."""
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k, "<missing>"), current.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} in the file vs {b!r} in the profile")
    return out


def load_models(cfg: StudyConfig, names: list[str], device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
    """``load_trained`` for several models (each checked against the current configuration)."""
    return {n: load_trained(cfg, n, torch.device(device))[0] for n in names}


def cached_records(cfg: StudyConfig, name: str) -> list[dict] | None:
    """The records of ``results/eval_<name>.json`` if they were computed under the current
    configuration (``cfg.eval_hash``) and their per-example files exist; else None."""
    path = cfg.results_dir / f"eval_{name}.json"
    if not path.is_file():
        return None
    try:
        payload = read_versioned(path, "evaluation")
    except ConfigError:  # unreadable or an older layout: evaluate again
        return None
    if payload.get("config_hash") != cfg.eval_hash(name):
        return None
    needed = [cfg.results_dir / f"{stem}_{name}.{ext}" for stem, ext in (("sanity", "json"), ("correct", "npz"),
                                                                         ("probs", "npz"))]
    return payload["records"] if all(p.is_file() for p in needed) else None
