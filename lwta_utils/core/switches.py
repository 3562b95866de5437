"""Explicit switches of stochastic layers, independent of ``model.train()`` / ``model.eval()``.

A layer that has switches subclasses :class:`Switchable` and lists them, with
their allowed values, in ``SWITCHES``. ``set_switches(model, **settings)``
sets each given switch on every layer of ``model`` that has it and returns
what was there before; ``switches(model, **settings)`` does the same for a
``with`` block and restores the previous values after it, even on error.
Attack libraries call ``model.eval()``; nothing here depends on it.

    with switches(model, phase="test", stochastic=False, test_mode="argmax"):
        acc = accuracy(model, x, y)
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from lwta_utils.core.errors import bad


class Switchable:
    """Mixin: ``SWITCHES`` maps each switch (an attribute) to its allowed values.

    A layer that draws randomness keeps an attribute ``generator`` (None: torch's global
    generator) from which it draws (:func:`noise_from` sets it for a block), and declares with
    ``per_example_noise`` whether every example of a batch gets its own independent draw (then
    several draws of one input can be stacked along the batch dimension: ``batched_draws_ok``).
    """

    SWITCHES: dict[str, tuple] = {}
    generator = None
    per_example_noise = True


def switchable_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, Switchable)]


def available_switches(model: nn.Module) -> dict[str, tuple]:
    """Every switch some layer of ``model`` has, with its allowed values."""
    out: dict[str, tuple] = {}
    for m in switchable_layers(model):
        out.update(m.SWITCHES)
    return out


def get_switches(model: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    """The current value of every switch of every switchable layer."""
    return [(m, {k: getattr(m, k) for k in m.SWITCHES}) for m in switchable_layers(model)]


def is_stochastic(model: nn.Module) -> bool:
    """Whether some layer of ``model`` draws fresh randomness on every forward pass now."""
    return any(v.get("stochastic", False) for _, v in get_switches(model))


def batched_draws_ok(model: nn.Module) -> bool:
    """Whether k draws of a batch can run as one pass on the batch repeated k times: every layer
    that draws randomness now draws it independently per example (LWTA: per example, block and
    position); a layer whose noise is shared by the batch (PNI's weight noise, the official WCA
    head's batch-shared noise, a noise scale from batch statistics) must be run once per draw."""
    return all(m.per_example_noise for m in switchable_layers(model) if getattr(m, "stochastic", False))


@contextmanager
def noise_from(model: nn.Module, generator: torch.Generator | None) -> Iterator[nn.Module]:
    """Every stochastic layer of ``model`` draws from ``generator`` inside the block (None: torch's
    global generator); the previous generators come back after it. Evaluation draws and an
    attack's own randomness use two such streams, so that neither replays the other's noise."""
    saved = [(m, m.generator) for m in switchable_layers(model)]
    for m, _ in saved:
        m.generator = generator
    try:
        yield model
    finally:
        for m, g in saved:
            m.generator = g


def stream(seed: int, *purpose) -> torch.Generator:
    """A CPU generator for one purpose of a run, independent of every other purpose's: seeded with
    a hash of (``seed``, ``purpose``...), e.g. ``stream(0, "eval", "pgd_linf", 0.3)``."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(str(p) for p in purpose)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _check(model: nn.Module, settings: dict[str, Any]) -> None:
    known = available_switches(model)
    for name, value in settings.items():
        if name not in known:
            allowed = (f"this model's stochastic layers have {sorted(known)}" if known
                       else "this model has no stochastic layer with switches")
            raise bad(name, value, allowed)
        if value not in known[name] or (isinstance(value, bool) != isinstance(known[name][0], bool)):
            raise bad(name, value, f"choose one of {', '.join(map(repr, known[name]))}")


def set_switches(model: nn.Module, **settings: Any) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Set ``settings`` (``None`` values are skipped) on every layer that has them.

    Checks every name and value first, so a bad setting changes nothing.
    Returns the previous values, for :func:`restore_switches`.
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    _check(model, settings)
    before = get_switches(model)
    for m in switchable_layers(model):
        for k, v in settings.items():
            if k in m.SWITCHES:
                setattr(m, k, v)
    return before


def restore_switches(saved: list[tuple[nn.Module, dict[str, Any]]]) -> None:
    for m, values in saved:
        for k, v in values.items():
            setattr(m, k, v)


@contextmanager
def switches(model: nn.Module, **settings: Any) -> Iterator[nn.Module]:
    """Set switches for a ``with`` block; the previous values come back after it."""
    saved = set_switches(model, **settings)
    try:
        yield model
    finally:
        restore_switches(saved)


@contextmanager
def maybe_switches(model: nn.Module, **settings: Any) -> Iterator[nn.Module]:
    """Like :func:`switches`, but only the switches this model has (none: a no-op)."""
    known = available_switches(model)
    with switches(model, **{k: v for k, v in settings.items() if k in known}):
        yield model
