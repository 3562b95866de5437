"""Registries: names -> entries of one kind (data set, activation, model, attack).

The four registries are the study's extension points. They live here, at the bottom of the
package, and are filled by the modules that define their entries (``@register_activation("lwta")``
in ``defenses/lwta.py``, ``@register_attack(...)`` in ``attacks/pgd.py``, ...). A layer that only
needs the names or declared properties of the entries (the configuration's validation) asks the
registry, never the implementations, so imports point down. Importing ``lwta_utils`` imports every
layer, so the registries are complete before any configuration is read.

An entry that is a factory (a function or a class) declares its options, with their defaults, as
the keyword parameters of its signature: :meth:`Registry.options` reads them there, so a default
is written in one place.
"""
from __future__ import annotations

import inspect
from typing import Any

from lwta_utils.core.errors import bad


class Registry(dict):
    """An ordered map from names to entries of one ``kind``; a name is registered once.

    skip: the positional parameters of a factory entry that come before its options
        (an activation: ``num_features, kind``; a model: ``info``).
    """

    def __init__(self, kind: str, skip: int = 0):
        super().__init__()
        self.kind, self.skip = kind, skip

    def add(self, name: str, entry: Any) -> Any:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")  # a programming error
        self[name] = entry
        return entry

    def lookup(self, param: str, name: Any) -> Any:
        """The entry of ``name``; else a ConfigError naming ``param`` and the registered names."""
        if name not in self:
            raise bad(param, name, f"choose one of {', '.join(map(repr, sorted(self)))}")
        return self[name]

    def defaults(self, name: str) -> dict[str, Any]:
        """The options factory ``name`` takes, with their declared defaults."""
        params = list(inspect.signature(self[name]).parameters.values())[self.skip:]
        return {p.name: p.default for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty}

    def options(self, param: str, name: str, options: dict | None) -> dict[str, Any]:
        """``options`` completed with the declared defaults of factory ``name``; an option it
        does not take is a ConfigError naming ``param`` and the options it takes."""
        self.lookup(self.kind, name)
        defaults = self.defaults(name)
        options = dict(options or {})
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise bad(f"{param}.{unknown[0]}", options[unknown[0]],
                      f"{self.kind} '{name}' takes these options: {', '.join(defaults) or 'none'}")
        return {**defaults, **options}


DATASETS = Registry("dataset")
ACTIVATIONS = Registry("activation", skip=2)
MODELS = Registry("model", skip=1)
ATTACKS = Registry("attack")
