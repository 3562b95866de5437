"""One self-contained HTML report from the executed notebooks (nbconvert, offline).

The executed notebooks are concatenated behind a title and a table of
contents; figures are already embedded in the notebooks' outputs as PNG, so
the page needs no server and no files beside it.
"""
from __future__ import annotations

import time
from pathlib import Path

import nbformat

from .fileio import write_text
from .results import git_sha


def _anchor(stem: str) -> str:
    return "nb-" + stem.replace("_", "-")


def combine_notebooks(paths: list[Path], title: str, intro: str = "") -> nbformat.NotebookNode:
    out = nbformat.v4.new_notebook()
    toc = "\n".join(f"{i + 1}. [{_title_of(p)}](#{_anchor(p.stem)})" for i, p in enumerate(paths))
    out.cells.append(nbformat.v4.new_markdown_cell(
        f"# {title}\n\n{intro}\n\nGenerated {time.strftime('%Y-%m-%d %H:%M')} from commit `{git_sha()}`.\n\n"
        f"## Contents\n\n{toc}\n"))
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        out.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{_anchor(p.stem)}"></a>\n\n---\n'))
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "parameters" in tags or "report-hide" in tags:
                continue
            out.cells.append(cell)
    out.metadata = nbformat.read(paths[0], as_version=4).metadata if paths else {}
    return out


def _title_of(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def build_report(paths: list[Path], out_html: Path, title: str, intro: str = "") -> Path:
    """Render the executed notebooks ``paths`` into one HTML file (written atomically)."""
    from nbconvert import HTMLExporter

    nb = combine_notebooks(paths, title, intro)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    html, _ = exporter.from_notebook_node(nb)
    return write_text(out_html, html)
