"""Modules imported on first use. ``import lwta_utils`` is paid by every process that touches the
study (each notebook kernel, each test that spawns the chain, the launcher); the plotting libraries
(matplotlib, seaborn and the scipy.stats it pulls in: about 1.2 s on 2 CPU cores) are needed only
by the cells that draw, so the modules that draw hold a :class:`LazyModule` instead."""
from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for the module ``name`` and imports it on the first attribute access
    (``plt = LazyModule("matplotlib.pyplot")``; ``plt.subplots(...)`` imports pyplot then)."""

    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def module(self) -> ModuleType:
        return importlib.import_module(self.__dict__["_name"])

    def __getattr__(self, attr: str):
        return getattr(self.module(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_name']}>"
