"""Provenance of every file the study writes: the git commit, package versions, the CPU and the date."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from lwta_utils.core.paths import ROOT

TRACKED_PACKAGES = ("torch", "numpy", "foolbox", "pyautoattack", "mlxtend", "pandas", "papermill", "torchvision")


OUTPUT_PATHS = ("models", "results", "figures", "reports", "README.md")  # what the chain writes: not code


def uncommitted_code(root: Path = ROOT, untracked: bool = True) -> list[str] | None:
    """The paths of ``root``'s checkout that differ from its commit (modified, staged, deleted, and
    with ``untracked`` untracked and not ignored), the chain's own outputs (``OUTPUT_PATHS``) aside;
    None outside a git checkout."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", f"--untracked-files={'all' if untracked else 'no'}",
                               "--", ".", *[f":(exclude){p}" for p in OUTPUT_PATHS]], cwd=root,
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return [line[3:] for line in proc.stdout.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The checkout's commit, with '+dirty' when tracked code differs from it (the chain's own outputs,
    ``OUTPUT_PATHS``, aside: a run that replaces them still ran the commit's code); 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if uncommitted_code(ROOT, untracked=False) else "")) if sha else "unknown"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the ones that change CPU speed and bf16 support


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, frozenset]:
    """The CPU model and flags from Linux's /proc/cpuinfo (None, empty elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None, frozenset()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())
    return model, frozenset(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))


def usable_cores() -> int:
    """The CPU cores this process may use (its affinity where the OS says, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def cpu_description() -> str:
    """'AMD EPYC 9B14, 2 cores (avx2, avx512f, avx512_bf16)': the CPU model, the cores this process
    may use and its speed-relevant flags (Linux's /proc/cpuinfo; elsewhere the platform's name)."""
    cores = usable_cores()
    model, flags = _cpuinfo()
    if model is None:
        return f"{platform.processor() or platform.machine()}, {cores} cores"
    return f"{model}, {cores} cores ({', '.join(f for f in CPU_FLAGS if f in flags) or 'no AVX2'})"


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (avx512_bf16 or AMX): without it, bf16 autocast
    on the CPU emulates every product and runs about ten times slower than float32 (a WRN-34-10
    step measured 12.5x on an AVX2-only machine)."""
    return bool(_cpuinfo()[1] & {"avx512_bf16", "amx_bf16"})


def provenance() -> dict:
    return {"git_sha": git_sha(), "versions": package_versions(), "cpu": cpu_description(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
