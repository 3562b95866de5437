"""One self-contained HTML report from the executed notebooks (nbconvert, offline), and its check.

The executed notebooks are concatenated behind a title, the findings (``results/findings.md``,
written from the records by ``07_analysis``) and a table of contents with every notebook and
its sections. Figures are already embedded in the notebooks' outputs as PNG, and the page loads
nothing from the network (nbconvert's MathJax and require.js tags are dropped: no notebook
uses either), so it opens from disk in any browser.

    python -m lwta_utils.pipeline.report --check reports/index.html   # render in headless Chromium and check
"""
from __future__ import annotations

import argparse
import html as htmllib
import logging
import re
import sys
import time
from pathlib import Path

import nbformat

from lwta_utils.config.schema import NOTEBOOKS
from lwta_utils.core.fileio import write_text
from lwta_utils.core.paths import NOTEBOOKS_DIR
from lwta_utils.core.provenance import git_sha

EXTERNAL_SCRIPT = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>\s*', re.I)


NBCONVERT_ALT = 'alt="No description has been provided for this image"'


# Tables of long text read better left-aligned, top-aligned, and scrolled sideways when wide.
REPORT_CSS = """<style>
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { text-align: left !important; vertical-align: top; max-width: 28em; }
.jp-RenderedHTML { overflow-x: auto; }
</style>
"""


def _anchor(*parts: str) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)


def notebook_anchor(stem: str) -> str:
    return _anchor("nb", stem)


def section_anchor(stem: str, heading: str) -> str:
    return _anchor("nb", stem, heading)


def _title_of(nb) -> str | None:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def _shown(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return "parameters" not in tags and "report-hide" not in tags


def sections(nb) -> list[str]:
    """The '## ' headings of the cells a report shows."""
    return [line[3:].strip() for c in nb.cells if c.cell_type == "markdown" and _shown(c)
            for line in c.source.splitlines() if line.startswith("## ")]


def _with_anchors(source: str, stem: str) -> str:
    out = []
    for line in source.splitlines():
        if line.startswith("## "):
            out.append(f'<a id="{section_anchor(stem, line[3:].strip())}"></a>\n')
        out.append(line)
    return "\n".join(out)


def combine_notebooks(paths: list[Path], title: str, intro: str = "", findings: str = "") -> nbformat.NotebookNode:
    """One notebook: title, intro, findings, contents (notebooks and their sections), then every
    notebook's shown cells behind an anchor; cells tagged 'parameters' or 'report-hide' are left out."""
    nbs = [(p, nbformat.read(p, as_version=4)) for p in paths]
    toc = []
    for i, (p, nb) in enumerate(nbs, 1):
        toc.append(f"{i}. [{_title_of(nb) or p.stem}](#{notebook_anchor(p.stem)})")
        toc += [f"    - [{s}](#{section_anchor(p.stem, s)})" for s in sections(nb)]
    head = (f"# {title}\n\n{intro}\n\nGenerated {time.strftime('%Y-%m-%d %H:%M')} from commit `{git_sha()}`.\n\n"
            f'<a id="findings"></a>\n\n## Findings\n\n{findings or "No findings yet: run 07_analysis."}\n\n'
            f'<a id="contents"></a>\n\n## Contents\n\n' + "\n".join(toc) + "\n")
    out = nbformat.v4.new_notebook()
    out.cells.append(nbformat.v4.new_markdown_cell(head))
    for p, nb in nbs:
        out.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{notebook_anchor(p.stem)}"></a>\n\n---\n'))
        for cell in nb.cells:
            if not _shown(cell):
                continue
            if cell.cell_type == "markdown":
                cell = nbformat.from_dict({**cell, "source": _with_anchors(cell.source, p.stem)})
            out.cells.append(cell)
    out.metadata = nbs[0][1].metadata if nbs else {}
    return out


def _alt_texts(html: str) -> str:
    """Give every image that nbconvert left without a description the text of the nearest heading
    before it (nbconvert's placeholder alt text otherwise)."""
    out, last, pos = [], "figure", 0
    for m in re.finditer(r"<h[1-4][^>]*>(.*?)</h[1-4]>|" + re.escape(NBCONVERT_ALT), html, re.S | re.I):
        if m.group(0).lower().startswith("<h"):
            text = re.sub(r"<[^>]+>", "", m.group(1)).replace("¶", "").strip()
            last = htmllib.unescape(text) or last
            continue
        out.append(html[pos:m.start()] + f'alt="{htmllib.escape("Figure: " + last)}"')
        pos = m.end()
    return "".join(out) + html[pos:]


def build_report(paths: list[Path], out_html: Path, title: str, intro: str = "", findings: str = "") -> Path:
    """Render the executed notebooks ``paths`` into one self-contained HTML file (written atomically)."""
    from nbconvert import HTMLExporter

    nb = combine_notebooks(paths, title, intro, findings)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    level = exporter.log.level
    exporter.log.setLevel(logging.ERROR)  # its "alternative text is missing" warning: _alt_texts supplies them
    try:
        html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    finally:
        exporter.log.setLevel(level)
    html = _alt_texts(EXTERNAL_SCRIPT.sub("", html)).replace("</head>", REPORT_CSS + "</head>", 1)
    return write_text(out_html, html)


FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"


def update_readme_findings(readme: Path, findings: str) -> bool:
    """Replace the README's findings block (between its two markers) with ``findings``; False,
    and nothing written, when the README has no such block."""
    text = Path(readme).read_text()
    if FINDINGS_START not in text or FINDINGS_END not in text:
        return False
    head, rest = text.split(FINDINGS_START, 1)
    tail = rest.split(FINDINGS_END, 1)[1]
    write_text(readme, f"{head}{FINDINGS_START}\n{findings.strip()}\n{FINDINGS_END}{tail}")
    return True


def expected_anchors(notebooks_dir: Path, stems: list[str]) -> list[str]:
    """The anchors a complete report has: findings, contents, each notebook and each of its sections
    (read from the notebooks in ``notebooks_dir``: the sources or their executed copies)."""
    out = ["findings", "contents"]
    for stem in stems:
        nb = nbformat.read(Path(notebooks_dir) / f"{stem}.ipynb", as_version=4)
        out += [notebook_anchor(stem)] + [section_anchor(stem, s) for s in sections(nb)]
    return out


def check_report(path: Path, anchors: list[str], min_images: int = 1, screenshot: Path | None = None) -> dict:
    """Open ``path`` in headless Chromium (Debian's chromium and chromedriver) and check it: every
    anchor is present, every image decoded, no console error, nothing fetched from the network.
    Returns what was measured; raises AssertionError naming the first problem."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(Path(path).resolve().as_uri())
        found = driver.execute_script("return arguments[0].filter(a => document.getElementById(a) !== null);", anchors)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt]);")
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name).filter(n => /^https?:/.test(n));")
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        title = driver.title
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    missing = [a for a in anchors if a not in found]
    assert not missing, f"{path}: sections missing: {missing}"
    assert len(images) >= min_images, f"{path}: {len(images)} images, expected at least {min_images}"
    broken = [alt for ok, alt in images if not ok]
    assert not broken, f"{path}: {len(broken)} images did not decode: {broken[:3]}"
    assert not errors, f"{path}: console errors: {errors[:3]}"
    assert not resources, f"{path}: fetched from the network: {resources[:3]}"
    return {"title": title, "anchors": len(found), "images": len(images), "console_errors": 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lwta_utils.pipeline.report", description=__doc__.splitlines()[0])
    ap.add_argument("--check", required=True, help="the report to open in headless Chromium")
    ap.add_argument("--notebooks", default=None, help="the notebooks whose sections it must hold (default: notebooks/)")
    ap.add_argument("--screenshot", default=None, help="also save a screenshot of the top of the page")
    args = ap.parse_args(argv)
    report = Path(args.check)
    try:
        res = check_report(report, expected_anchors(Path(args.notebooks or NOTEBOOKS_DIR), list(NOTEBOOKS)),
                           screenshot=Path(args.screenshot) if args.screenshot else None)
    except AssertionError as exc:
        print(f"report check FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"report check passed: {res}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
