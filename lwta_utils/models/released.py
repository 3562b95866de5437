"""The LWTA authors' released CIFAR-10 checkpoint as a model of this project.

The checkpoint (``model-cifar-wideResNet/ckpt.pt`` of the authors' repository) holds the
``state_dict`` of their ``models/wideresnet_lwta.py``: a pre-activation WideResNet (TRADES layout)
with an ``LWTA`` module in place of every ReLU, each with a learnable ``temp`` (training
temperature ``softplus(temp)``; test temperature 0.01), and no input normalisation (pixels in
[0, 1]). It is this project's WideResNet (``models.wrn``) with activation 'lwta', the learned
per-layer temperature on every (conv) LWTA layer (``learn_temperature: conv``, its ``t`` is their
``temp``) and ``input_normalization`` off; only the names differ:

=====================================  ======================================
theirs                                  ours (``net`` is one ``nn.Sequential``)
=====================================  ======================================
``conv1``                               the stem convolution
``block{g}.layer.{i}.bn1 / lwta1 /``    the i-th ``PreActBlock`` of group g:
``conv1 / bn2 / lwta2 / conv2 /``       ``bn1 / act1 / conv1 / bn2 / act2 /``
``convShortcut``                        ``conv2 / shortcut``
``bn1``, ``lwta``, ``fc``               the final BatchNorm, LWTA and classifier
``<lwta>.temp``                         ``<act>.t``
``sub_block1.*``                        none: built by their constructor, never used by
                                        their forward pass (ignored)
=====================================  ======================================

Loading the file (finding it, its md5, the strict check) is ``lwta_utils.evaluation.released``.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from lwta_utils.config.schema import ModelConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.defenses.lwta import LWTA
from lwta_utils.models.registry import build_model
from lwta_utils.models.wrn import PreActBlock

UNUSED_PREFIX = "sub_block1."  # their constructor builds it; their forward pass never calls it


BLOCK_PARTS = {"bn1": "bn1", "act1": "lwta1", "conv1": "conv1", "bn2": "bn2", "act2": "lwta2", "conv2": "conv2",
               "shortcut": "convShortcut"}  # ours -> theirs, inside a residual block


LEAVES = {"t": "temp"}  # the learned temperature's parameter: ours -> theirs


def released_model_config(depth: int = 34, widen_factor: int = 1) -> ModelConfig:
    """This project's configuration of the authors' architecture: WRN-depth-widen_factor, LWTA
    (U = 2, test temperature 0.01, sampling on at test time) with a learned temperature per layer,
    no input normalisation."""
    return ModelConfig(arch="wrn", activation="lwta", activation_options={"learn_temperature": "conv"},
                       depth=depth, widen_factor=widen_factor, input_normalization=False,
                       label="LWTA WideResNet (the authors' released checkpoint)")


def released_architecture(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(depth, widen_factor) of the authors' WideResNet whose ``state_dict`` is ``state``: blocks
    per group from the indices of ``block1.layer.*``, the width from its first convolution."""
    idx = {int(m.group(1)) for k in state if (m := re.match(r"block1\.layer\.(\d+)\.", k))}
    first = state.get("block1.layer.0.conv1.weight")
    if not idx or first is None or first.dim() != 4 or first.shape[0] % 16:
        raise ConfigError("the state_dict is not the LWTA authors' WideResNet: it lacks block1.layer.<i>.* with a "
                          "first convolution of 16k output channels")
    return 6 * (max(idx) + 1) + 4, int(first.shape[0]) // 16


def released_module_names(model: nn.Module) -> dict[str, str]:
    """Our module path -> the authors' module path, for every module of ``model`` (a WideResNet
    built from :func:`released_model_config`) that holds a parameter or buffer."""
    children = list(model.net.named_children())
    blocks = [name for name, m in children if isinstance(m, PreActBlock)]
    n = len(blocks) // 3
    stem = [name for name, m in children if isinstance(m, nn.Conv2d)]
    tail_bn = [name for name, m in children if isinstance(m, nn.BatchNorm2d)]
    tail_act = [name for name, m in children if isinstance(m, LWTA)]
    heads = [name for name, m in children if isinstance(m, nn.Linear)]
    if len(blocks) != 3 * n or not n or len(stem) != 1 or len(tail_bn) != 1 or len(tail_act) != 1 or len(heads) != 1:
        raise ConfigError("the model is not the LWTA WideResNet of released_model_config() (three groups of "
                          "residual blocks, a stem convolution, a final BatchNorm, LWTA and linear classifier)")
    out = {f"net.{stem[0]}": "conv1", f"net.{tail_bn[0]}": "bn1", f"net.{tail_act[0]}": "lwta",
           f"net.{heads[0]}": "fc"}
    for j, name in enumerate(blocks):
        for ours, theirs in BLOCK_PARTS.items():
            out[f"net.{name}.{ours}"] = f"block{j // n + 1}.layer.{j % n}.{theirs}"
    return out


def released_key_map(model: nn.Module) -> dict[str, str]:
    """Every key of ``model.state_dict()`` -> the authors' key that holds its tensor."""
    modules = released_module_names(model)
    out = {}
    for key in model.state_dict():
        module, leaf = key.rsplit(".", 1)
        if module not in modules:
            raise ConfigError(f"no key of the authors' checkpoint corresponds to '{key}' of the model")
        out[key] = f"{modules[module]}.{LEAVES.get(leaf, leaf)}"
    return out


def map_released_state(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, list[str]]]:
    """The authors' ``state`` renamed to ``model``'s keys, and what did not fit: 'missing' (keys of
    the model whose tensor is not in ``state``), 'shape' ('key: theirs vs ours' for every tensor
    of another shape), 'unexpected' (keys of ``state`` the model has no place for, ``sub_block1``
    aside) and 'ignored' (the ``sub_block1`` keys, never used by the authors' forward pass)."""
    key_map = released_key_map(model)
    ours = model.state_dict()
    mapped, problems = {}, {"missing": [], "shape": [], "unexpected": [], "ignored": []}
    for key, theirs in key_map.items():
        if theirs not in state:
            problems["missing"].append(theirs)
        elif tuple(state[theirs].shape) != tuple(ours[key].shape):
            problems["shape"].append(f"{theirs}: {tuple(state[theirs].shape)} in the file vs {tuple(ours[key].shape)} "
                                     f"in the model")
        else:
            mapped[key] = state[theirs]
    used = set(key_map.values())
    for key in state:
        if key not in used:
            problems["ignored" if key.startswith(UNUSED_PREFIX) else "unexpected"].append(key)
    return mapped, problems


def build_released_model(state: dict[str, torch.Tensor], info) -> tuple[nn.Module, dict[str, list[str]]]:
    """The project's model for the authors' ``state`` (its depth and width read from it), its
    weights not yet loaded, and the mapped state with what did not fit (:func:`map_released_state`)."""
    depth, widen_factor = released_architecture(state)
    model = build_model(released_model_config(depth, widen_factor), info)
    return model, map_released_state(model, state)
