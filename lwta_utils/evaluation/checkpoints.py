"""Checkpoints saved with their configuration, metrics, git SHA and versions.

Loading rebuilds the model from the saved configuration and checks that the
weights match it; any problem is one :class:`ConfigError` naming the file.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from lwta_utils.config.loading import from_dict
from lwta_utils.config.schema import ModelConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.fileio import atomic_path
from lwta_utils.core.provenance import provenance
from lwta_utils.data.datasets import DataInfo
from lwta_utils.models.registry import build_model

FORMAT = "lwta-study-checkpoint"


FORMAT_VERSION = 1


def save_checkpoint(path: Path, model: nn.Module, *, name: str, model_cfg: ModelConfig, info: DataInfo,
                    config_hash: str, metrics: dict, history: list[dict], seed: int, profile: str) -> Path:
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
        "model_config": dataclasses.asdict(model_cfg), "data_info": dataclasses.asdict(info),
        "config_hash": config_hash, "state_dict": model.state_dict(), "metrics": metrics,
        "history": history, "seed": seed, "profile": profile, "provenance": provenance(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents (weights on the CPU), or a clear error."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"parameter 'path' = {path!r} is not allowed: must be a file path (str or Path)")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist: train it first (its notebook in the chain), "
                          f"or point to an existing file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted, or not a torch file
        raise ConfigError(f"checkpoint '{path}' cannot be read (truncated or corrupted?): "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"checkpoint '{path}' is not a {FORMAT} file (no 'format' marker)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"checkpoint '{path}' has format_version {ckpt.get('format_version')!r}; "
                          f"this code reads version {FORMAT_VERSION}")
    return ckpt


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the saved model on ``device``; returns (model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    try:
        model_cfg = from_dict(ModelConfig, ckpt["model_config"], "model_config")
        info = DataInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["data_info"].items()})
        model = build_model(model_cfg, info)
    except (ConfigError, TypeError, KeyError) as exc:
        raise ConfigError(f"checkpoint '{path}' holds a configuration this code cannot build: {exc}") from None
    missing, unexpected = [], []
    state = ckpt["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"checkpoint '{path}' does not match a {model_cfg.arch} with activation {model_cfg.activation!r}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, shape mismatches {shapes[:5]}")
    model.load_state_dict(state)
    model.to(device).eval()
    return model, ckpt
