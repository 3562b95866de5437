"""Warm what every run reads at start-up (``make setup`` runs this once, and again when the LWTA
kernels change): the bytecode of the environment's modules that the study imports, and numba's
compiled LWTA kernels.

- Bytecode. pip installs with ``--no-compile``: byte-compiling every one of the environment's
  ~14,000 Python files took 60 of pip's 100 s on 2 CPU cores, and the chain, its notebook
  kernels, the report and the tests import about a third of them. A plain interpreter imports
  what they import (:data:`MODULES`) and writes the bytecode (``__pycache__/*.pyc``) as it goes; a
  notebook kernel is started once for what a kernel imports; what this process loaded besides
  (numba's compiler, for one) is byte-compiled over the usable cores. Without this step Python
  writes that bytecode on the first import anyway, unless ``PYTHONDONTWRITEBYTECODE`` is set (as
  on some CI machines): then every process would compile those modules again. Nothing is
  written beside the project's own modules. A module first imported later (a rare code path) is
  compiled as Python does by default: on import.
- numba. The LWTA kernels and the k-WTA kernel are compiled into numba's disk cache
  (``lwta_kernels.prime_cache``, ``kwta.prime_cache``: 5-20 s a kernel on a small CPU, where a
  cached one loads in well under a second; the k-WTA kernel alone took 20 s in every fresh clone's
  smoke chain before it was primed here).

    python -m lwta_utils.pipeline.warm        # says what it compiled and how long it took
"""
from __future__ import annotations

import compileall
import importlib
import importlib.util
import os
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from lwta_utils.core.provenance import usable_cores
from lwta_utils.defenses import kwta, lwta_kernels

# What the processes of a run and of the test suite import beyond the package itself: the chain and the
# report (papermill, nbconvert, the report's browser check), the plots (imported on first use), the data
# set, torch's compiler (every optimiser's constructor imports torch._dynamo; the compile option),
# torchrun, the attack libraries, and the test tools (absent without the test extra: skipped).
MODULES = (
    "torch", "numpy", "pandas", "yaml", "tqdm", "numba",
    "matplotlib.pyplot", "matplotlib.backends.backend_agg", "matplotlib_inline.backend_inline", "seaborn",
    "scipy.stats", "PIL.PngImagePlugin", "mlxtend.data",
    "torch._dynamo", "torch._inductor.config", "torch._inductor.compile_fx", "torch.distributed.run",
    "torch.nn.parallel", "foolbox", "pyautoattack", "torchattacks",
    "papermill", "papermill.iorw", "nbclient", "nbformat", "nbconvert", "jupyter_client", "IPython",
    "IPython.core.ultratb", "stack_data", "pygments.lexers.python", "pygments.formatters.html",
    "selenium.webdriver", "trio", "psutil",
    "pytest", "xdist", "xdist.remote", "nbmake",
)
# the project's own entry points: imported here, never byte-compiled (only the environment's modules are)
ENTRY_POINTS = ("lwta_utils.pipeline.chain", "lwta_utils.pipeline.report", "lwta_utils.pipeline.launch",
                "lwta_utils.pipeline.compare")
# run in a plain interpreter that writes bytecode as it imports: the environment's modules only
_IMPORT_WRITING = """import importlib, sys
sys.dont_write_bytecode = False
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:  # not installed, or not importable here: its bytecode is left to the first import
        missing.append(name)
print(" ".join(missing))
"""


def environment_roots() -> list[Path]:
    """The folders the environment's packages are installed in (site-packages)."""
    return sorted({Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")})


def loaded_without_bytecode(roots: list[Path]) -> list[str]:
    """The source files of the modules loaded now that lie under ``roots`` and have no bytecode."""
    out = set()
    for mod in list(sys.modules.values()):
        src = getattr(mod, "__file__", None)
        if not src or not src.endswith(".py"):
            continue
        path = Path(src).resolve()
        if any(r in path.parents for r in roots) and not Path(importlib.util.cache_from_source(str(path))).is_file():
            out.add(str(path))
    return sorted(out)


def _compile(files: list[str]) -> int:
    return sum(bool(compileall.compile_file(f, quiet=2)) for f in files)


def compile_files(files: list[str], workers: int | None = None) -> int:
    """Byte-compile ``files`` over ``workers`` processes (default: the usable cores); returns how many
    compiled."""
    workers = max(1, min(workers or usable_cores(), len(files)))
    if workers == 1:
        return _compile(files)
    with ProcessPoolExecutor(workers) as pool:
        return sum(pool.map(_compile, [files[i::workers] for i in range(workers)]))


def warm_kernel(kernel: str = "python3") -> None:
    """Start a notebook kernel once (until it answers) with bytecode writing on, so that it writes
    the bytecode of what a kernel imports at start (ipykernel, IPython, debugpy, zmq, tornado)."""
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    manager, client = start_new_kernel(kernel_name=kernel, env=env)
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def warm(modules=MODULES, kernel: str | None = "python3") -> dict:
    """Write the bytecode of what a run imports and compile the numba kernels (LWTA, k-WTA); returns what it
    did (counts and seconds).

    A plain interpreter imports ``modules`` and writes their bytecode as it goes (those that do not
    import are skipped and returned), while this process starts a notebook kernel once (``kernel``;
    None: no kernel) and compiles the numba kernels. Then this process imports the study's entry
    points and byte-compiles every environment module it loaded that still has none (numba's own,
    for instance)."""
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _IMPORT_WRITING, *modules], stdout=subprocess.PIPE, text=True)
    try:
        if kernel:
            warm_kernel(kernel)
        numba = {**lwta_kernels.prime_cache(), **kwta.prime_cache()}
        t1 = time.perf_counter()
        missing = child.communicate()[0].split()
    finally:
        if child.poll() is None:
            child.kill()
    if child.returncode:
        raise RuntimeError(f"importing the environment's modules failed (exit status {child.returncode})")
    t2 = time.perf_counter()
    for name in ENTRY_POINTS:
        importlib.import_module(name)
    compiled = compile_files(loaded_without_bytecode(environment_roots()))
    return {"missing": missing, "numba_kernels": len(numba), "numba_s": t1 - t0, "imports_s": t2 - t0,
            "compiled": compiled, "compile_s": time.perf_counter() - t2}


def main() -> None:
    did = warm()
    note = f"; not importable here, skipped: {', '.join(did['missing'])}" if did["missing"] else ""
    print(f"warm: {did['numba_kernels']} numba kernel(s) in numba's cache (compiled or loaded) "
          f"in {did['numba_s']:.0f} s, "
          f"beside the imports that write the environment's bytecode ({did['imports_s']:.0f} s); then "
          f"{did['compiled']} more module(s) byte-compiled in {did['compile_s']:.0f} s{note}")


if __name__ == "__main__":
    main()
