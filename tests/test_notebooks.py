"""The committed notebooks: numbered, thin, parameterised and without outputs."""
import ast
import json
import re

import pytest

from lwta_utils.config.schema import NOTEBOOKS as CHAIN
from lwta_utils.core.paths import NOTEBOOKS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_the_chain_is_exactly_the_numbered_notebooks():
    assert [p.stem for p in NOTEBOOKS] == list(CHAIN)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} carries outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_is_tagged_parameters(path):
    nb = json.loads(path.read_text())
    first = [c for c in nb["cells"] if c["cell_type"] == "code"][0]
    assert "parameters" in first["metadata"].get("tags", [])
    names = {t.id for node in ast.parse("".join(first["source"])).body for t in getattr(node, "targets", [])}
    assert {"profile", "seed", "device", "out_dir"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_thin_no_definitions_and_narrative(path):
    nb = json.loads(path.read_text())
    code = [("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"]
    for src in code:
        tree = ast.parse(src)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
    markdown = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert markdown and re.match(r"# \d\d ", "".join(markdown[0]["source"]))
    assert any("import lwta_utils" in src for src in code)
    assert any("google.colab" in src for src in code)  # the Colab install cell
