"""Provenance of every file the study writes: the git commit, package versions and the date."""
from __future__ import annotations

import functools
import platform
import subprocess
import time
from importlib import metadata

from lwta_utils.core.paths import ROOT

TRACKED_PACKAGES = ("torch", "numpy", "foolbox", "pyautoattack", "mlxtend", "pandas", "papermill", "torchvision")


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The checkout's commit, with '+dirty' when tracked files differ; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance() -> dict:
    return {"git_sha": git_sha(), "versions": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
