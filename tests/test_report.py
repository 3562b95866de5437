"""The report: combined notebooks, the claims' verdicts, the committed report in headless Chromium,
and the committed findings traced back to the records."""
import os
import re
import shutil

import nbformat
import pytest

import lwta_utils as lu
from lwta_utils.analysis.claims import CLAIMS_FILE, Measurement, load_claims, measure, verdict
from lwta_utils.analysis.findings import findings_text
from lwta_utils.config.schema import NOTEBOOKS
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.paths import NOTEBOOKS_DIR, ROOT
from lwta_utils.pipeline.report import build_report, combine_notebooks, expected_anchors, section_anchor


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
    assert not any("secret" in c.source for c in nb.cells)
    assert any(f'<a id="{section_anchor("00_a", "Alpha section")}">' in c.source for c in nb.cells)


def test_built_report_is_self_contained_with_described_images(tmp_path):
    paths = _two_notebooks(tmp_path)
    img = nbformat.v4.new_code_cell("plot")
    img.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    paths.append(_nb(tmp_path, "02_c", [nbformat.v4.new_markdown_cell("# 02 · Third\n\n## Gamma figure"), img]))
    html = build_report(paths, tmp_path / "r" / "index.html", "My report").read_text()
    assert "<title>My report</title>" in html
    assert not re.search(r'<script[^>]*src="https?://', html)  # nothing fetched: no MathJax / require.js CDN
    assert 'alt="Figure: Gamma figure' in html and "No description has been provided" not in html
    for anchor in expected_anchors(tmp_path, [p.stem for p in paths]):
        assert f'id="{anchor}"' in html, anchor


@pytest.mark.parametrize("rule,a,b,extra,want", [
    ("gap_at_least", (60, (50, 70)), (30, (20, 40)), {"points": 20}, "reproduced"),
    ("gap_at_least", (60, (50, 70)), (50, (40, 61)), {"points": 0}, "not reproduced"),  # intervals overlap
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


def test_a_claim_without_a_record_is_not_comparable(smoke_cfg):
    c = {"rule": "at_most", "a": {"model": "nope", "attack": "none"}, "value": 5}
    assert measure(smoke_cfg, c["a"]) is None
    v, why = verdict(c, None, None)
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
            if m and "model" in m:
                assert m["model"] in cfg.models and m.get("attack", "none") in ids, (c["id"], m)
            if m and "record" in m:
                assert "where" not in m or m["where"].get("model", next(iter(cfg.models))) in cfg.models
    for r in spec["seed001_table"]["rows"]:
        assert r["model"] in cfg.models
    assert set(spec["seed001_table"]["columns"].values()) <= ids


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


def test_committed_report_opens_in_headless_chromium_with_every_section():
    browser_or_skip()
    from lwta_utils.pipeline.report import check_report

    anchors = expected_anchors(NOTEBOOKS_DIR, list(NOTEBOOKS))
    for heading in ("Claims versus reproduced", "Seed 001's table, beside ours", "Compute overhead relative to ReLU",
                    "Adversarial examples classified correctly and incorrectly (seed 001's figure)"):
        assert section_anchor("07_analysis", heading) in anchors
    res = check_report(ROOT / "reports" / "index.html", anchors, min_images=15)
    assert res["images"] >= 15 and res["title"].startswith("Local competition")


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


def test_readme_result_numbers_are_in_the_records():
    """The README's findings prose quotes accuracies (or interval ends) of eval records, and its
    speed tables and cost figures quote ratios of benchmark records (or the seeds' claimed ones)."""
    import json

    readme = (ROOT / "README.md").read_text()
    results = ROOT / "results"
    acc = set()
    for path in results.glob("eval_*.json"):
        for r in json.loads(path.read_text())["records"]:
            acc |= {f"{100 * r[k]:.1f}" for k in ("accuracy", "ci_low", "ci_high")}
    bench = set()
    for path in results.glob("bench_*.json"):
        _floats(json.loads(path.read_text()), bench, ".2f")
    claimed = set(re.findall(r"\d+\.\d+", CLAIMS_FILE.read_text()))
    prose = _between(readme, "<!-- findings:end -->", "## The report")
    for pct in re.findall(r"(\d+\.\d)%", prose):
        assert pct in acc, f"README findings: {pct}% is in no eval record"
    for ratio in re.findall(r"(\d\.\d\d)x", prose):
        assert ratio in bench or ratio in claimed, f"README findings: {ratio}x is in no benchmark record"
    for start, end in (("**Speed.** For U = 2", "## k-WTA, PNI"), ("**k-WTA speed.**", "## Attack suite"),
                       ("**Speed of our PGD**", "## Paper scale")):
        for ratio in re.findall(r"(?<![\d.])(\d\.\d\d)(?![\d.])", _between(readme, start, end)):
            assert ratio in bench, f"README section {start!r}: {ratio} is in no benchmark record"
    paper = set()
    _floats(json.loads((results / "bench_paper.json").read_text()), paper, ".1f")
    _floats(json.loads((results / "bench_paper.json").read_text()), paper, ".2f")
    rows = [ln for ln in _between(readme, "### Training speed and wall time", "## JupyterLab").splitlines()
            if ln.startswith(("| ReLU", "| LWTA"))]
    assert len(rows) == 4
    for row in rows:
        for number in re.findall(r"\d+\.\d+", row):
            assert number in paper, f"README paper-scale table: {number} is in no bench_paper record"
