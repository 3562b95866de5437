"""One self-contained HTML report from the executed notebooks (nbconvert, offline), and its check.

The first screen answers the study's question: the title, the headline figure
(``figures/headline.png``, from the records) with a caption saying what to look at, and the
findings (``results/findings.md``, at most ten lines); then a short table of contents, the
executed notebooks (the claims table, the per-model tables and the details) and the references.
Every figure gets a caption (a cell's ``caption`` metadata, else the first sentence of the text
before it). The page loads nothing from the network (nbconvert's MathJax and require.js tags are
dropped: no notebook uses either) and stays light: images are re-encoded for the screen (at most
``MAX_IMAGE_WIDTH`` pixels wide, 256 colours when that is smaller) and a figure shown twice is
embedded once.

    python -m lwta_utils.pipeline.report --check reports/index.html   # render in headless Chromium and check
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html as htmllib
import io
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from lwta_utils.config.schema import NOTEBOOKS
from lwta_utils.core.fileio import write_text
from lwta_utils.core.paths import NOTEBOOKS_DIR
from lwta_utils.core.provenance import git_sha
from lwta_utils.core.runtime import default_threads

EXTERNAL_SCRIPT = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>\s*', re.I)


NBCONVERT_ALT = 'alt="No description has been provided for this image"'


# Tables of long text read better left-aligned, top-aligned, and scrolled sideways when wide; the
# headline figure fits the first screen with the title and the start of the findings.
REPORT_CSS = """<style>
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th {
  text-align: left !important; vertical-align: top; max-width: 28em; }
.jp-RenderedHTML { overflow-x: auto; }
.jp-RenderedHTMLCommon h1:first-child { font-size: 1.6em; margin: 0.2em 0 0.3em 0; }
#headline { margin: 0; }
#headline img { max-height: 52vh; max-width: 100%; width: auto; height: auto; display: block; }
#headline figcaption, .figure-caption { font-size: 0.85em; color: #444; margin: 0.2em 0 0.6em 0; max-width: 60em; }
.jp-Cell:first-child { padding-top: 0; }
</style>
"""

MAX_IMAGE_WIDTH = 1200  # pixels: the report's column is narrower on common screens
REPORT_BUDGET = 2_400_000  # bytes: images lose colours (256 to 32), then width, until the page fits, under 2.5 MB
COLOURS = (256, 128, 64, 32)
QUICK_LEVEL = 6  # zlib level of the quick full-colour encoding (see _Reencoder)
FULL_COLOUR_TRY = 1.25  # the full-colour image is encoded at its smallest only when its quick size is within 25 %
WIDTHS = (MAX_IMAGE_WIDTH, 1000, 800, 640)  # pixels, tried in turn when the colours alone do not fit the budget
STYLE_TAG = re.compile(r"<style\b[^>]*>.*?</style>", re.S | re.I)
FIRST_SCREEN = (1366, 768)


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


def _image_outputs(cell) -> bool:
    return any(k.startswith("image/") for o in cell.get("outputs", []) for k in o.get("data", {}))


def _first_sentence(markdown: str) -> str:
    text = " ".join(line for line in markdown.splitlines() if line.strip() and not line.startswith("#"))
    text = re.sub(r"<[^>]+>", "", text).strip()
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return (m.group(1) if m else text)[:400]


def caption_of(cell, last_markdown: str) -> str:
    """A figure's caption: the cell's ``caption`` metadata, else the first sentence of the text
    before it."""
    return cell.get("metadata", {}).get("caption") or _first_sentence(last_markdown)


def _headline_html(headline: tuple[Path, str] | None) -> str:
    if headline is None or not Path(headline[0]).is_file():
        return ""
    path, caption = Path(headline[0]), headline[1]
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure id="headline"><img src="data:image/png;base64,{data}" alt="Headline figure: per defense, '
            f'our accuracy under the standard attack and under the strongest evaluation beside the claimed number, '
            f'coloured by verdict"><figcaption>{htmllib.escape(caption)}</figcaption></figure>\n\n')


def _contents(nbs, key_sections: list[tuple[str, str]]) -> str:
    lines = []
    if key_sections:
        lines.append("- " + " · ".join(f"[{text}](#{anchor})" for text, anchor in key_sections))
    for i, (p, nb) in enumerate(nbs, 1):
        secs = sections(nb)
        inner = (": " + " · ".join(f"[{s}](#{section_anchor(p.stem, s)})" for s in secs)) if secs else ""
        lines.append(f"- [{_title_of(nb) or p.stem}](#{notebook_anchor(p.stem)}){inner}")
    return "\n".join(lines)


KEY_SECTIONS = ("Claims versus reproduced", "Per defense: standard versus strongest attack", "RobustBench entries")


def combine_notebooks(paths: list[Path], title: str, intro: str = "", findings: str = "",
                      headline: tuple[Path, str] | None = None, references: str = "") -> nbformat.NotebookNode:
    """One notebook: title, headline figure (``headline``: the PNG and its caption), findings, a short
    contents (the key sections, then each notebook with its sections on one line), the intro, every
    notebook's shown cells behind an anchor (cells tagged 'parameters' or 'report-hide' left out; a
    figure followed by its caption), then the references."""
    nbs = [(p, nbformat.read(p, as_version=4)) for p in paths]
    key = [(s, section_anchor(p.stem, s)) for p, nb in nbs for s in sections(nb) if s in KEY_SECTIONS]
    key += [("References", "references")] if references else []
    head = (f"# {title}\n\n{_headline_html(headline)}"
            f'<a id="findings"></a>\n\n## Findings\n\n{findings or "No findings yet: run the analysis notebook."}\n\n'
            f'<a id="contents"></a>\n\n## Contents\n\n{_contents(nbs, key)}\n\n'
            f"{intro} Generated {time.strftime('%Y-%m-%d %H:%M')} from commit `{git_sha()}`.\n")
    out = nbformat.v4.new_notebook()
    out.cells.append(nbformat.v4.new_markdown_cell(head))
    for p, nb in nbs:
        out.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{notebook_anchor(p.stem)}"></a>\n\n---\n'))
        last_markdown = ""
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                last_markdown = cell.source
            if not _shown(cell):
                continue
            if cell.cell_type == "markdown":
                cell = nbformat.from_dict({**cell, "source": _with_anchors(cell.source, p.stem)})
            out.cells.append(cell)
            if cell.cell_type == "code" and _image_outputs(cell):
                caption = caption_of(cell, last_markdown)
                if caption:
                    out.cells.append(nbformat.v4.new_markdown_cell(
                        f'<p class="figure-caption">{htmllib.escape(caption)}</p>'))
    if references:
        out.cells.append(nbformat.v4.new_markdown_cell(f'<a id="references"></a>\n\n---\n\n## References\n\n'
                                                       f"{references}\n"))
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


def _png(img, quick: bool = False) -> bytes:
    """PNG bytes: the smallest encoding (``optimize``: zlib level 9), or a quick one (level 6: 1 to 3 %
    larger on the study's figures, four times faster)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", **({"compress_level": QUICK_LEVEL} if quick else {"optimize": True}))
    return buf.getvalue()


class _Reencoder:
    """One embedded PNG at the widths and colour counts :func:`lighten_images` tries: the resized
    image and its quick full-colour encoding are computed once per width."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self._rgb: dict[int, tuple] = {}

    def _at(self, max_width: int) -> tuple:
        """(the image at most ``max_width`` wide, the size of its quick full-colour encoding)."""
        if max_width not in self._rgb:
            from PIL import Image

            img = Image.open(io.BytesIO(self.raw))
            img.load()
            if img.width > max_width:
                img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
            rgb = img.convert("RGB") if img.mode not in ("RGB", "L") else img
            self._rgb[max_width] = (rgb, len(_png(rgb, quick=True)))
        return self._rgb[max_width]

    def __call__(self, max_width: int = MAX_IMAGE_WIDTH, colours: int = 256) -> bytes:
        """The image at most ``max_width`` pixels wide, with ``colours`` colours when that is smaller
        (figures of flat colours lose nothing visible at 256); the original when nothing is gained. The
        full-colour image is encoded at its smallest only where its quick encoding is within
        ``FULL_COLOUR_TRY`` of the best (a grey digit can be; a figure's is two to three times larger)."""
        from PIL import Image

        rgb, full_quick = self._at(max_width)
        quantized = _png(rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        best = min((self.raw, quantized), key=len)
        if full_quick <= FULL_COLOUR_TRY * len(best):
            best = min((self.raw, _png(rgb), quantized), key=len)  # the first of equal sizes, as before
        return best


IMG_TAG = re.compile(r'<img\b[^>]*?src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"[^>]*>', re.I)


def unique_styles(html: str) -> str:
    """The page with every ``<style>`` block that repeats an earlier one removed (the notebooks'
    outputs each carry the same table and widget styles)."""
    seen: set[str] = set()

    def once(m: re.Match) -> str:
        if m.group(0) in seen:
            return ""
        seen.add(m.group(0))
        return m.group(0)

    return STYLE_TAG.sub(once, html)


def lighten_images(html: str, max_width: int = MAX_IMAGE_WIDTH, budget: int = REPORT_BUDGET) -> str:
    """Re-encode every embedded PNG for the screen (see ``_Reencoder``: 256 colours, or 128 and
    then 64 and 32, then the same at 1,000, 800 and 640 pixels wide, while the page is over
    ``budget`` bytes) and embed a figure shown twice only once: the later copy becomes a link to
    the first."""
    matches = list(IMG_TAG.finditer(html))
    digests = [hashlib.sha1(m.group(1).encode()).hexdigest() for m in matches]
    first: dict[str, int] = {}
    for i, digest in enumerate(digests):
        first.setdefault(digest, i)
    coders = {d: _Reencoder(base64.b64decode(matches[i].group(1))) for d, i in first.items()}
    widths = [max_width] + [w for w in WIDTHS if w < max_width]
    # PIL releases the GIL while it resizes, quantizes and encodes: the images are done in parallel
    with ThreadPoolExecutor(max_workers=default_threads()) as pool:
        for width, colours in ((w, c) for w in widths for c in COLOURS):
            encoded = pool.map(_Reencoder.__call__, coders.values(), [width] * len(coders), [colours] * len(coders))
            small = {d: base64.b64encode(png).decode() for d, png in zip(coders, encoded)}
            out, pos = [], 0
            for i, (m, digest) in enumerate(zip(matches, digests)):
                out.append(html[pos:m.start()])
                anchor = f"figure-{first[digest] + 1}"
                if first[digest] != i:
                    out.append(f'<p class="figure-caption">(The same figure as <a href="#{anchor}">above</a>.)</p>')
                else:
                    tag = m.group(0).replace(m.group(1), small[digest])
                    out.append(tag if " id=" in tag else tag.replace("<img", f'<img id="{anchor}"', 1))
                pos = m.end()
            text = "".join(out) + html[pos:]
            if len(text.encode()) <= budget:
                break
    return text


def build_report(paths: list[Path], out_html: Path, title: str, intro: str = "", findings: str = "",
                 headline: tuple[Path, str] | None = None, references: str = "") -> Path:
    """Render the executed notebooks ``paths`` into one self-contained HTML file (written atomically)."""
    from nbconvert import HTMLExporter

    nb = combine_notebooks(paths, title, intro, findings, headline, references)
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
    html = unique_styles(html)
    return write_text(out_html, lighten_images(html))


FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"


def update_readme_findings(readme: Path, findings: str) -> bool:
    """Replace the README's findings block (between its two markers) with ``findings``; False,
    and nothing written, when the README has no such block or already holds these findings."""
    text = Path(readme).read_text()
    if FINDINGS_START not in text or FINDINGS_END not in text:
        return False
    head, rest = text.split(FINDINGS_START, 1)
    tail = rest.split(FINDINGS_END, 1)[1]
    new = f"{head}{FINDINGS_START}\n{findings.strip()}\n{FINDINGS_END}{tail}"
    if new == text:
        return False
    write_text(readme, new)
    return True


def expected_anchors(notebooks_dir: Path, stems: list[str]) -> list[str]:
    """The anchors a complete report has: findings, contents, each notebook and each of its sections
    (read from the notebooks in ``notebooks_dir``: the sources or their executed copies), references."""
    out = ["findings", "contents"]
    for stem in stems:
        nb = nbformat.read(Path(notebooks_dir) / f"{stem}.ipynb", as_version=4)
        out += [notebook_anchor(stem)] + [section_anchor(stem, s) for s in sections(nb)]
    return out + ["references"]


FIRST_SCREEN_JS = """
const box = e => { if (!e) return null; const r = e.getBoundingClientRect(); return [r.top, r.bottom]; };
const img = document.querySelector('#headline img');
const heading = Array.from(document.querySelectorAll('h2')).find(h => h.textContent.startsWith('Findings'));
let text = heading ? heading.nextElementSibling : null;
return {height: window.innerHeight, width: window.innerWidth,
        title: box(document.querySelector('h1')), figure: box(img),
        figure_ok: !!img && img.complete && img.naturalWidth > 0,
        findings_heading: box(heading), findings_text: box(text)};
"""


def _driver(size: tuple[int, int]):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--window-size={size[0]},{size[1]}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def first_screen(driver, size: tuple[int, int] = FIRST_SCREEN) -> dict:
    """Make the viewport ``size`` (CSS pixels), scroll to the top and measure where the title, the
    headline figure and the findings sit."""
    for _ in range(3):
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
        if list(inner) == list(size):
            break
        outer = driver.get_window_size()
        driver.set_window_size(outer["width"] + size[0] - inner[0], outer["height"] + size[1] - inner[1])
    driver.execute_script("window.scrollTo(0, 0);")
    return driver.execute_script(FIRST_SCREEN_JS)


def check_first_screen(m: dict, path: Path) -> None:
    """The title, the whole headline figure and the start of the findings are visible without scrolling."""
    h = m["height"]
    assert m["title"] and 0 <= m["title"][0] < h, f"{path}: the title is not on the first screen ({m})"
    assert m["figure"] and m["figure_ok"], f"{path}: no headline figure ({m})"
    assert 0 <= m["figure"][0] and m["figure"][1] <= h, \
        f"{path}: the headline figure is not all on the first screen ({m})"
    for key in ("findings_heading", "findings_text"):
        assert m[key] and m[key][0] < h, f"{path}: the findings do not start on the first screen ({m})"


def check_report(path: Path, anchors: list[str], min_images: int = 1, screenshot: Path | None = None,
                 first: bool = False) -> dict:
    """Open ``path`` in headless Chromium (Debian's chromium and chromedriver) and check it: every
    anchor is present, every image decoded, no console error, nothing fetched from the network; with
    ``first``, at 1366x768 the title, the headline figure and the start of the findings are on the
    first screen (and ``screenshot`` saves that screen). Returns what was measured; raises
    AssertionError naming the first problem."""
    driver = _driver(FIRST_SCREEN if first else (1400, 1000))
    try:
        driver.get(Path(path).resolve().as_uri())
        found = driver.execute_script("return arguments[0].filter(a => document.getElementById(a) !== null);", anchors)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt]);")
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name).filter(n => /^https?:/.test(n));")
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        title = driver.title
        screen = first_screen(driver) if first else None
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
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
    if screen is not None:
        check_first_screen(screen, path)
    return {"title": title, "anchors": len(found), "images": len(images), "console_errors": 0,
            "first_screen": screen, "bytes": Path(path).stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lwta_utils.pipeline.report", description=__doc__.splitlines()[0])
    ap.add_argument("--check", required=True, help="the report to open in headless Chromium")
    ap.add_argument("--notebooks", default=None, help="the notebooks whose sections it must hold (default: notebooks/)")
    ap.add_argument("--screenshot", default=None, help="also save a screenshot of the first screen (1366x768)")
    args = ap.parse_args(argv)
    report = Path(args.check)
    try:
        res = check_report(report, expected_anchors(Path(args.notebooks or NOTEBOOKS_DIR), list(NOTEBOOKS)),
                           screenshot=Path(args.screenshot) if args.screenshot else None, first=True)
    except AssertionError as exc:
        print(f"report check FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"report check passed: {res}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
