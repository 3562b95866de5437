"""Paths anchored at the repository root (never relative to the working directory).

The root is the folder holding ``params/``: this package's parent when it is
installed in editable mode or imported from a checkout, else ``$LWTA_ROOT``,
else the first parent of the working directory that has ``params/default.yaml``.
"""
from __future__ import annotations

import os
from pathlib import Path


def find_root() -> Path:
    here = Path(__file__).resolve().parents[2]  # lwta_utils/core/paths.py -> the checkout
    if (here / "params" / "default.yaml").is_file():
        return here
    env = os.environ.get("LWTA_ROOT")
    if env and (Path(env) / "params").is_dir():
        return Path(env).resolve()
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if (parent / "params" / "default.yaml").is_file():
            return parent
    return here


ROOT = find_root()


PARAMS_DIR = ROOT / "params"


NOTEBOOKS_DIR = ROOT / "notebooks"


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path: ``path`` itself if absolute, else under the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (ROOT / p).resolve()


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when it lies inside it (no personal paths in reports)."""
    p = resolve(path)
    try:
        return str(p.relative_to(ROOT)) or "."
    except ValueError:
        return str(p)
