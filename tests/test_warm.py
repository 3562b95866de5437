"""``make setup``'s warm step (lwta_utils/pipeline/warm.py): the bytecode of the environment's modules
a run imports, written once, and only there (never beside the project's own modules)."""
import importlib
import importlib.util
import os
import subprocess
import sys

from lwta_utils.pipeline import warm


def _package(root, name):
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import part\n")
    (pkg / "part.py").write_text("VALUE = 3\n")
    return pkg


def test_every_listed_module_exists():
    """A misspelt name would be skipped as 'not installed' and its bytecode never written."""
    absent = [m for m in (*warm.MODULES, *warm.ENTRY_POINTS) if importlib.util.find_spec(m) is None]
    assert absent == []


def test_loaded_modules_without_bytecode_are_found_and_compiled_only_under_the_roots(tmp_path, monkeypatch):
    env, other = tmp_path / "site-packages", tmp_path / "checkout"
    _package(env, "warm_pkg_env")
    _package(other, "warm_pkg_other")
    monkeypatch.syspath_prepend(str(env))
    monkeypatch.syspath_prepend(str(other))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as under PYTHONDONTWRITEBYTECODE
    for name in ("warm_pkg_env", "warm_pkg_other"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.delitem(sys.modules, f"{name}.part", raising=False)
        importlib.import_module(name)
    files = warm.loaded_without_bytecode([env.resolve()])
    assert sorted(os.path.basename(f) for f in files) == ["__init__.py", "part.py"]
    assert all(f.startswith(str(env.resolve())) for f in files)
    assert warm.compile_files(files, workers=2) == 2
    assert warm.loaded_without_bytecode([env.resolve()]) == []
    assert all(os.path.isfile(importlib.util.cache_from_source(f)) for f in files)
    assert not list(other.rglob("*.pyc"))


def test_the_importing_interpreter_writes_bytecode_and_names_what_is_missing(tmp_path):
    env = tmp_path / "site-packages"
    pkg = _package(env, "warm_pkg_child")
    proc = subprocess.run([sys.executable, "-c", warm._IMPORT_WRITING, "warm_pkg_child", "no_such_module_here"],
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(env)},
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["no_such_module_here"]
    assert len(list(pkg.rglob("*.pyc"))) == 2



def test_the_primed_kwta_kernel_is_the_one_the_layer_calls():
    """The warm step compiles the k-WTA numba kernel for the types the layer passes it (a fresh
    clone's smoke chain compiled it for 20 s before): a layer's call compiles nothing more."""
    import torch

    from lwta_utils.defenses import kwta

    kernel = kwta._numba_kwta()
    assert set(kwta.prime_cache()) == {"kwta_rows"}
    primed = list(kernel.signatures)
    assert len(primed) == 1 and kernel.stats.cache_path
    layer = kwta.KWTA(gamma=0.2, kernel="numba")
    for x in (torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5).to(memory_format=torch.channels_last),
              torch.randn(3, 10)):
        x.requires_grad_(True)
        layer(x).sum().backward()
    assert list(kernel.signatures) == primed
