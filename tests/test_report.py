"""The report: combined notebooks, the claims' verdicts, the sources, the committed report in
headless Chromium (its first screen), the committed findings traced back to the records, and the
README and docs/ pages as a reader meets them."""
import base64
import io
import os
import re
import shutil

import nbformat
import numpy as np
import pytest

import lwta_utils as lu
from lwta_utils.analysis.claims import CLAIMS_FILE, Measurement, load_claims, measure, verdict
from lwta_utils.analysis.findings import MAX_FINDINGS, findings_text
from lwta_utils.analysis.sources import SOURCES, cite, references_markdown, render_sources, source_ids
from lwta_utils.config.schema import NOTEBOOKS
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.paths import NOTEBOOKS_DIR, ROOT
from lwta_utils.pipeline.report import (
    MAX_IMAGE_WIDTH,
    build_report,
    combine_notebooks,
    expected_anchors,
    lighten_images,
    section_anchor,
)

DOCS = ROOT / "docs"
SEEDS = ROOT.parent / "shared" / "seeds"  # the source documents, beside the repository where the study keeps them


def browser_or_skip():
    """Headless Chromium (Debian's chromium + chromedriver, and selenium); `make test` requires it."""
    ok = shutil.which("chromium") and shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        ok = False
    if not ok:
        if os.environ.get("LWTA_REQUIRE_BROWSER") == "1":
            pytest.fail("headless Chromium is required (make setup installs Debian's chromium and chromium-driver)")
        pytest.skip("no chromium / chromedriver / selenium here")


def _nb(tmp_path, name, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _two_notebooks(tmp_path):
    hidden = nbformat.v4.new_code_cell("secret = 1")
    hidden.metadata["tags"] = ["parameters"]
    a = _nb(tmp_path, "00_a", [hidden, nbformat.v4.new_markdown_cell("# 00 · First\n\n## Alpha section\ntext"),
                               nbformat.v4.new_code_cell("1 + 1")])
    b = _nb(tmp_path, "01_b", [nbformat.v4.new_markdown_cell("# 01 · Second\n\n## Beta: a section")])
    return [a, b]


def test_combined_notebook_has_findings_contents_sections_and_no_hidden_cells(tmp_path):
    nb = combine_notebooks(_two_notebooks(tmp_path), "Title", "intro text", findings="**What holds**: x")
    head = nb.cells[0].source
    assert head.startswith("# Title") and "intro text" in head and "**What holds**: x" in head
    assert head.index("## Findings") < head.index("## Contents")
    assert "[00 · First](#nb-00-a)" in head and f"(#{section_anchor('01_b', 'Beta: a section')})" in head
    assert head.count("\n- ") <= len(_two_notebooks(tmp_path)) + 1  # a short contents: one line per notebook
    assert not any("secret" in c.source for c in nb.cells)
    assert any(f'<a id="{section_anchor("00_a", "Alpha section")}">' in c.source for c in nb.cells)


def _png(width: int, height: int, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 255, np.uint8)
    for _ in range(12):  # a few flat-coloured rectangles, like a plot
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        img[y:y + 20, x:x + 60] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def test_built_report_is_self_contained_with_described_and_captioned_images(tmp_path):
    paths = _two_notebooks(tmp_path)
    img = nbformat.v4.new_code_cell("plot")
    png = base64.b64encode(_png(300, 200)).decode()
    img.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png})]
    twice = nbformat.v4.new_code_cell("plot again")
    twice.metadata["caption"] = "What to look at: the same figure."
    twice.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png})]
    paths.append(_nb(tmp_path, "02_c", [nbformat.v4.new_markdown_cell("# 02 · Third\n\n## Gamma figure\n\nThe curves "
                                                                      "fall with eps. More text."), img, twice]))
    headline = tmp_path / "headline.png"
    headline.write_bytes(_png(400, 200, seed=1))
    html = build_report(paths, tmp_path / "r" / "index.html", "My report", findings="- one finding",
                        headline=(headline, "What to look at: the circles."), references="- A. B. **T**. V, 2020.")
    html = html.read_text()
    assert "<title>My report</title>" in html
    assert not re.search(r'<script[^>]*src="https?://', html)  # nothing fetched: no MathJax / require.js CDN
    assert 'alt="Figure: Gamma figure' in html and "No description has been provided" not in html
    for anchor in expected_anchors(tmp_path, [p.stem for p in paths]) + ["headline"]:
        assert f'id="{anchor}"' in html, anchor
    assert html.index('id="headline"') < html.index('id="findings"') < html.index('id="contents"')
    assert "What to look at: the circles." in html
    assert "The curves fall with eps." in html and "What to look at: the same figure." in html  # captions
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', html)) == 2  # headline, figure; its copy: a link
    assert "The same figure as" in html


def test_images_are_lightened_for_the_screen():
    from PIL import Image

    raw = _png(2400, 900)
    html = f'<p><img src="data:image/png;base64,{base64.b64encode(raw).decode()}" alt="x"></p>'
    out = lighten_images(html)
    small = base64.b64decode(re.search(r"base64,([^\"]+)", out).group(1))
    img = Image.open(io.BytesIO(small))
    assert img.width == MAX_IMAGE_WIDTH and img.height == round(900 * MAX_IMAGE_WIDTH / 2400)
    assert len(small) < len(raw) / 4
    assert len(lighten_images(html, budget=len(out) - 1)) <= len(out)  # over the budget: fewer colours
    tight = lighten_images(html, budget=1)                                  # nothing fits: the narrowest, 32 colours
    assert Image.open(io.BytesIO(base64.b64decode(re.search(r"base64,([^\"]+)", tight).group(1)))).width == 640


def test_a_grey_image_keeps_its_full_colour_encoding_where_that_is_the_smallest():
    """The full-colour encoding is tried only where a quick one comes close (report._Reencoder): a grey
    image's is smaller than its 256-colour palette version (no palette to store), and still chosen."""
    from PIL import Image

    from lwta_utils.pipeline import report

    grey = Image.fromarray((np.add.outer(np.arange(90), np.arange(120)) % 256).astype(np.uint8), mode="L")  # a ramp
    buf = io.BytesIO()
    grey.save(buf, format="PNG", compress_level=0)  # an original larger than any re-encoding
    full = report._png(grey)
    quantized = report._png(grey.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    assert len(full) < len(quantized) < len(buf.getvalue())
    assert report._Reencoder(buf.getvalue())() == full


def test_repeated_style_blocks_are_embedded_once():
    from lwta_utils.pipeline.report import unique_styles

    a, b = "<style>.x { color: red; }</style>", "<style type='text/css'>.y { margin: 0; }</style>"
    assert unique_styles(f"<head>{a}{b}</head><body>{a}<p>t</p>{b}{a}</body>") == f"<head>{a}{b}</head><body><p>t</p></body>"


@pytest.mark.parametrize("rule,a,b,extra,want", [
    ("gap_at_least", (60, (50, 70)), (30, (20, 40)), {"points": 20}, "reproduced"),
    ("gap_at_least", (45, (40, 50)), (20, (15, 25)), {"points": 30}, "not reproduced"),  # gap too small
    ("gap_at_most", (60, None), (55, None), {"points": 7.2}, "reproduced"),
    ("gap_at_most", (60, None), (40, None), {"points": 7.2}, "not reproduced"),
    ("not_below", (95, None), (96.5, None), {"points": 2}, "reproduced"),
    ("not_below", (90, None), (96, None), {"points": 2}, "not reproduced"),
    ("at_most", (4, None), None, {"value": 5}, "reproduced"),
    ("at_least", (4, None), None, {"value": 5}, "not reproduced"),
    ("between", (1.5, None), None, {"low": 1.3, "high": 1.8}, "reproduced"),
    ("between", (2.5, None), None, {"low": 1.3, "high": 1.8}, "not reproduced"),
    ("not_comparable", (50, None), None, {"why": "other data"}, "not comparable"),
])
def test_verdict_rules(rule, a, b, extra, want):
    m = (lambda v: None if v is None else Measurement(v[0], v[1], "s", "r"))
    c = {"rule": rule, "a": {}, **({"b": {}} if b else {}), **extra}
    assert verdict(c, m(a), m(b))[0] == want


def _paired(diff, p):
    return {"a": "A", "b": "B", "difference": diff, "ci": (diff - 0.05, diff + 0.05), "p": p, "n": 1000,
            "discordant": (120, 20)}


@pytest.mark.parametrize("rule,tests,want", [
    ("gap_at_least", [_paired(0.25, 1e-6)], "reproduced"),
    ("gap_at_least", [_paired(0.25, 0.2)], "not reproduced"),  # large, but not significant
    ("gap_at_least", [_paired(0.25, 1e-6), _paired(0.15, 1e-6)], "not reproduced"),  # one seed below 20 points
    ("gap_at_least", [_paired(0.25, 1e-6), _paired(0.22, 1e-3), _paired(0.3, 1e-9)], "reproduced"),
    ("gap_at_most", [_paired(0.05, 0.5), _paired(0.09, 0.01)], "not reproduced"),  # 9 > 7.2 points on one seed
    ("not_below", [_paired(-0.01, 0.6)], "reproduced"),
    ("gap_at_least", [], "not comparable"),
    ("gap_at_least", [{"a": "A", "b": "B", "error": "no shared examples"}], "not comparable"),
])
def test_paired_rules_decide_on_every_seed(rule, tests, want):
    """A-against-B claims on our models are decided by the paired tests, seed by seed: each seed's
    difference must pass the rule and, for a gap, be significant (exact McNemar p < 0.05)."""
    c = {"rule": rule, "a": {}, "b": {}, "points": {"gap_at_least": 20, "gap_at_most": 7.2, "not_below": 2}[rule]}
    m = Measurement(50, (45, 55), "s", "r")
    v, why, test = verdict(c, m, m, tests)
    assert v == want, (v, why)
    if want != "not comparable":
        assert "McNemar" in test and (len(tests) == 1 or f"over {len(tests)} seed pairs" in test)


def test_findings_show_the_marked_claims_first():
    from lwta_utils.analysis.findings import pick_claims

    claims = [{"id": f"c{i}", "source": "lwta_paper", "verdict": v, "a": {"model": "m", "attack": "fgsm"},
               **({"headline": True} if i in (3, 5) else {})}
              for i, v in enumerate(["reproduced", "not reproduced", "not comparable", "reproduced",
                                     "reproduced", "not comparable", "not reproduced"])]
    picked = [c["id"] for c in pick_claims(claims, 3)]
    assert picked[0] == "c3" and "c5" not in picked  # marked first; a claim not decided is never shown
    assert len(picked) == 3 and len(set(picked)) == 3


def test_a_claim_without_a_record_is_not_comparable(smoke_cfg):
    c = {"rule": "at_most", "a": {"model": "nope", "attack": "none"}, "value": 5}
    assert measure(smoke_cfg, c["a"]) is None
    v, why, _ = verdict(c, None, None)
    assert v == "not comparable" and "not run" in why


@pytest.mark.parametrize("text,needle", [
    ("claims:\n  - {id: x, source: s, claim: c, setting: t, rule: guess}\n", "'claims[0].rule' = 'guess'"),
    ("claims:\n  - {id: x, source: s, claim: c, setting: t, rule: at_most, a: {}}\n", "'claims[0].value'"),
    ("claims:\n  - {id: x, source: s, claim: c, rule: not_comparable, why: w}\n", "'claims[0].setting'"),
    ("claims:\n  - {id: x, source: s, claim: c, setting: t, rule: not_comparable, why: w}\n"
     "  - {id: x, source: s, claim: c, setting: t, rule: not_comparable, why: w}\n", "'claims[1].id' = 'x'"),
])
def test_bad_claims_files_are_named(tmp_path, text, needle):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_claims(path)


def test_every_claim_points_at_models_and_attacks_of_the_default_profile():
    cfg = lu.load_config("default")
    ids = {a.key for a in cfg.eval.attacks} | {"none", "standard", "strongest", "worst_case"}
    spec = load_claims(CLAIMS_FILE)
    for c in spec["claims"]:
        for key in ("a", "b"):
            m = c.get(key)
            if m and m.get("model") == cfg.released.name:  # the released checkpoint: its own attacks
                rel = {cfg.released.authors_attack.id, *(a.key for a in cfg.released.attacks), "none", "worst_case"}
                assert m.get("attack", "none") in rel, (c["id"], m)
            elif m and "model" in m:
                assert m["model"] in cfg.models and m.get("attack", "none") in ids, (c["id"], m)
            if m and "record" in m:
                assert "where" not in m or m["where"].get("model", next(iter(cfg.models))) in cfg.models
    for r in spec["seed001_table"]["rows"]:
        assert r["model"] in cfg.models
    assert set(spec["seed001_table"]["columns"].values()) <= ids


def test_findings_give_the_paired_comparisons_no_headline_claim_decides():
    """The ablation's comparisons reach the findings with the paired test; a pair a headline claim
    already decides (LWTA-AT against ReLU-AT) is not repeated."""
    from lwta_utils.analysis.claims import evaluate_claims
    from lwta_utils.analysis.findings import comparison_bullet

    cfg = lu.load_config("default")
    text = comparison_bullet(cfg, evaluate_claims(cfg))
    ablation = cfg.label("lwta_pgdat_st")
    assert text.startswith("- **Paired comparisons**")
    assert f"{ablation} against {cfg.label('relu_pgdat')}" in text
    assert f"{ablation} against {cfg.label('lwta_pgdat')}" in text
    assert f"{cfg.label('lwta_pgdat')} against" not in text  # decided by the headline claim
    n_pairs = len(cfg.replicates("relu_pgdat")) + len(cfg.replicates("lwta_pgdat"))
    assert text.count("McNemar p = ") == n_pairs and text.count("points [") == n_pairs


def test_committed_findings_come_from_the_committed_records():
    """Every number of the findings (report and README) is recomputed from results/ here."""
    cfg = lu.load_config("default")
    text = findings_text(cfg)
    assert (cfg.results_dir / "findings.md").read_text().strip() == text.strip()
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- findings:start -->")[1].split("<!-- findings:end -->")[0]
    assert block.strip() == text.strip()
    html = (ROOT / "reports" / "index.html").read_text()
    for number in set(re.findall(r"\d+\.\d+% \[\d+\.\d+, \d+\.\d+\]", text)):
        assert number in html, number
    bullets = [line for line in text.splitlines() if line.startswith("- ")]
    assert 1 <= len(bullets) <= MAX_FINDINGS
    for b in bullets:  # each with its number
        assert re.search(r"\d+\.\d+% \[\d+\.\d+, \d+\.\d+\]|\d\.\d+", b), b


def test_committed_report_opens_in_headless_chromium_with_every_section():
    browser_or_skip()
    from lwta_utils.pipeline.report import check_report

    anchors = expected_anchors(NOTEBOOKS_DIR, list(NOTEBOOKS))
    for heading in ("Claims versus reproduced", "The Paris-Dauphine study's table, beside ours",
                    "Compute overhead relative to ReLU", "RobustBench entries",
                    "Adversarial examples classified correctly and incorrectly (the Paris-Dauphine study's figure)"):
        assert section_anchor("07_analysis", heading) in anchors
    report = ROOT / "reports" / "index.html"
    res = check_report(report, anchors, min_images=15, first=True)  # title, headline figure, findings at 1366x768
    assert res["images"] >= 15 and res["title"].startswith("Local competition")
    assert report.stat().st_size <= 2.5e6
    assert (ROOT / "reports" / "first_screen.png").is_file()


@pytest.mark.parametrize("profile", ["smoke", "default"])
def test_each_model_has_one_colour_distinct_within_its_groups(profile):
    from lwta_utils.analysis.figures import groups, model_colors, palette

    cfg = lu.load_config(profile)
    colors = model_colors(cfg)
    assert set(colors) == set(cfg.models)
    for names in groups(cfg).values():
        assert len({colors[n] for n in names}) == len(names)  # the default's groups hold at most 10 models
    assert palette(cfg) == {cfg.label(n): c for n, c in colors.items()}


def _floats(node, out: set, fmt: str) -> set:
    if isinstance(node, dict):
        for v in node.values():
            _floats(v, out, fmt)
    elif isinstance(node, list):
        for v in node:
            _floats(v, out, fmt)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out.add(format(node, fmt))
    return out


def _between(text: str, start: str, end: str) -> str:
    assert start in text and end in text, (start, end)
    return text.split(start, 1)[1].split(end, 1)[0]


def _page(name: str) -> str:
    return (DOCS / name).read_text()


def test_readme_and_docs_numbers_are_in_the_records():
    """The results discussion quotes accuracies (or interval ends) of eval records, and its cost
    figures and the speed tables of the docs pages quote ratios of benchmark records (or the
    sources' claimed ones)."""
    import json

    results = ROOT / "results"
    acc = set()
    for path in results.glob("eval_*.json"):
        for r in json.loads(path.read_text())["records"]:
            acc |= {f"{100 * r[k]:.1f}" for k in ("accuracy", "ci_low", "ci_high", "worst_accuracy", "robust_ci_low",
                                                  "robust_ci_high") if r.get(k) is not None}
    bench = set()
    for path in results.glob("bench_*.json"):
        _floats(json.loads(path.read_text()), bench, ".2f")
    claimed = set(re.findall(r"\d+\.\d+", CLAIMS_FILE.read_text()))
    prose = _between(_page("results.md"), "<!-- discussion:start -->", "<!-- discussion:end -->")
    for pct in re.findall(r"(\d+\.\d)%", prose):
        assert pct in acc, f"docs/results.md: {pct}% is in no eval record"
    for ratio in re.findall(r"(\d\.\d\d)x", prose):
        assert ratio in bench or ratio in claimed, f"docs/results.md: {ratio}x is in no benchmark record"
    for page, start, end in (("defenses.md", "**Speed.** For U = 2", "## k-WTA, PNI"),
                             ("defenses.md", "**k-WTA speed.**", "<!-- end of k-WTA speed -->"),
                             ("evaluation.md", "**Speed of our PGD**", "<!-- end of PGD speed -->")):
        for ratio in re.findall(r"(?<![\d.])(\d\.\d\d)(?![\d.])", _between(_page(page), start, end)):
            assert ratio in bench, f"docs/{page} {start!r}: {ratio} is in no benchmark record"
    paper = set()
    _floats(json.loads((results / "bench_paper.json").read_text()), paper, ".1f")
    _floats(json.loads((results / "bench_paper.json").read_text()), paper, ".2f")
    rows = [ln for ln in _between(_page("paper_scale.md"), "## Training speed and wall time", "<!-- end of speed -->")
            .splitlines() if ln.startswith(("| ReLU", "| LWTA"))]
    assert len(rows) == 4
    for row in rows:
        for number in re.findall(r"\d+\.\d+", row):
            assert number in paper, f"docs/paper_scale.md table: {number} is in no bench_paper record"


def test_released_page_quotes_the_released_records():
    """docs/released_checkpoint.md's tables of our numbers quote the committed released records: every
    percentage (one decimal) is an accuracy, interval end or share of the evaluation record, and every
    wall time of the cascade table is a step's rounded wall time."""
    import json

    results = ROOT / "results"
    recs = json.loads((results / "eval_lwta_wrn34_1_released.json").read_text())["records"]
    acc = {f"{100 * r[k]:.1f}" for r in recs for k in ("accuracy", "ci_low", "ci_high", "worst_accuracy",
                                                        "robust_ci_low", "robust_ci_high") if r.get(k) is not None}
    ours = _between(_page("released_checkpoint.md"), "## Ours", "## Wall time")
    rows = [ln for ln in ours.splitlines() if ln.startswith("| ") and "%" in ln]
    assert len(rows) >= 10
    for row in rows:
        cells = row.split("|")[1:-2]  # the last column: the authors' numbers
        for pct in re.findall(r"(?<![\d.])(\d+\.\d)%", "|".join(cells)):
            assert pct in acc, f"docs/released_checkpoint.md: {pct}% is in no released record ({row[:60]})"
    walls = {str(round(r["wall_time_s"])) for r in recs}
    for row in (ln for ln in ours.splitlines() if re.match(r"\| \d", ln)):
        assert row.split("|")[-2].strip() in walls, row


def test_readme_fits_a_few_screens_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 210, len(lines)
    first_screen = "\n".join(lines[:45])
    assert "make run" in first_screen and "make test" in first_screen
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", readme + "".join(p.read_text() for p in DOCS.glob("*.md"))):
        base = ROOT if not target.startswith("../") else DOCS
        assert (base / target).exists() or (DOCS / target).exists() or (ROOT / target).exists(), target


def test_sources_render_as_a_reader_knows_them():
    assert cite("lwta_paper") == ("Panousis, Chatzis & Theodoridis (2021), Stochastic Local Winner-Takes-All "
                                  "Networks Enable Profound Adversarial Robustness")
    assert render_sources("kwta_paper (abstract)", full=False) == "Xiao, Zhong & Zheng (2020) (abstract)"
    refs = references_markdown()
    for s in SOURCES.values():
        assert s.title in refs and (not s.link or s.link in refs)
    with pytest.raises(ConfigError, match="'source' = 'nope'"):
        cite("nope")
    for c in load_claims(CLAIMS_FILE)["claims"]:  # every claim names its source by id
        assert source_ids(c["source"]), (c["id"], c["source"])


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the source documents are not beside the repository here")
def test_the_starting_sources_are_the_documents_the_study_starts_from():
    def norm(text):
        return re.sub(r"[^a-z0-9]+", " ", text.lower())

    docs = [norm(p.read_text(errors="replace")) for p in sorted(SEEDS.glob("*.txt"))]
    reference = norm((SEEDS.parent / "REFERENCE.md").read_text()) if (SEEDS.parent / "REFERENCE.md").is_file() else ""
    starting = [s for s in SOURCES.values() if s.starting]
    assert len(starting) == 6
    for s in starting:  # the title in one of the documents, each author's surname there or in REFERENCE.md
        title = norm(s.title.split(" (a reproduction")[0])
        hits = [d for d in docs if title.strip() in d]
        assert hits, s.id
        for author in s.authors:
            if author != "et al.":
                surname = norm(author.split()[-1]).strip()
                assert any(surname in d for d in hits) or surname in reference, (s.id, author)


def test_no_internal_source_names_anywhere_a_reader_looks():
    """No 'seed 00N' (the project's internal names of its source documents) in the README, the
    docs, the notebooks, the claims, the profiles' labels or the report."""
    paths = [ROOT / "README.md", CLAIMS_FILE, ROOT / "reports" / "index.html", *DOCS.glob("*.md"),
             *NOTEBOOKS_DIR.glob("*.ipynb")]
    for path in paths:
        hits = re.findall(r".{0,40}seed 00.{0,20}", path.read_text(), flags=re.IGNORECASE)
        assert not hits, f"{path.relative_to(ROOT)}: {hits[:3]}"
    for profile in ("smoke", "default", "paper"):
        cfg = lu.load_config(profile)
        for name in cfg.models:
            assert "seed 00" not in cfg.label(name).lower(), (profile, name)


def test_readme_findings_block_is_rewritten_only_when_it_changes(tmp_path):
    from lwta_utils.pipeline.report import FINDINGS_END, FINDINGS_START, update_readme_findings

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{FINDINGS_START}\nold\n{FINDINGS_END}\nrest\n")
    assert update_readme_findings(readme, "new") and "new" in readme.read_text() and "old" not in readme.read_text()
    before = readme.stat().st_mtime_ns
    assert not update_readme_findings(readme, "new") and readme.stat().st_mtime_ns == before  # nothing to do
    readme.write_text("# no block\n")
    assert not update_readme_findings(readme, "new") and readme.read_text() == "# no block\n"
