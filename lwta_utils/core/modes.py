"""Train / eval mode for a block, restored after it (attacks and evaluation never leave a model
changed; randomness is never tied to these modes: see ``switches``)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every submodule's previous mode restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


@contextmanager
def input_grads_only(model: nn.Module) -> Iterator[nn.Module]:
    """No parameter requires a gradient inside the block; each one's flag restored after.

    An attack needs the input's gradient only. The autograd engine skips the weights'
    gradients either way, but a custom autograd function (``core.conv.Conv2d``'s input-gradient
    path) can only see ``requires_grad``, so this is what lets it take its faster path."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


@contextmanager
def memory_format(model: nn.Module, channels_last: bool) -> Iterator[nn.Module]:
    """The model's 4-d weights in the channels-last memory format inside the block (when
    ``channels_last``; faster convolutions on the CPU), contiguous again after it."""
    if not channels_last:
        yield model
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)
