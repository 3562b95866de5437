"""The headless chain end to end on the smoke profile (one run shared by these tests): every notebook,
the report, the console, a failing notebook and a rerun; the chain's other parts are in test_chain_parts.py."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from lwta_utils.config.schema import NOTEBOOKS
from lwta_utils.core.paths import ROOT, display_path
from lwta_utils.evaluation.records import RECORD_FIELDS


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lwta_utils.pipeline", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


ARTIFACTS = {  # the cells of 07_analysis that must show a table (html) or a figure (png)
    "artifact-findings": "text/markdown", "artifact-claims": "text/html", "artifact-seed001": "text/html",
    "artifact-headline": "text/html", "artifact-accuracy": "text/html", "artifact-sanity": "text/html",
    "artifact-curves": "image/png", "artifact-probs": "image/png", "artifact-examples": "image/png",
    "artifact-winners": "image/png", "artifact-gradients": "image/png", "artifact-training": "image/png",
    "artifact-overhead-table": "text/html", "artifact-overhead": "image/png",
    "artifact-headline-figure": "image/png", "artifact-robustbench": "text/markdown"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    (out / "results").mkdir()
    bench = subprocess.run([sys.executable, "benchmarks/bench_defenses.py", "--profile", "smoke", "--reps", "1",
                            "--batch", "16", "--device", "cpu", "--json", str(out / "results" / "bench_defenses.json")],
                           cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    proc = run("--profile", "smoke", "--out", str(out), timeout=1200)  # about 4 min alone; twice that loaded
    return out, proc


def test_analysis_notebook_produces_every_table_and_figure(smoke_run):
    out, proc = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nb = json.loads((out / "reports" / "executed" / "07_analysis.ipynb").read_text())
    seen = {}
    for cell in nb["cells"]:
        for tag in cell["metadata"].get("tags", []):
            if tag.startswith("artifact-"):
                seen[tag] = [o for o in cell.get("outputs", []) if o.get("output_type") in ("display_data",
                                                                                            "execute_result")]
    assert set(seen) == set(ARTIFACTS)
    for tag, mime in ARTIFACTS.items():
        data = [o["data"][mime] for o in seen[tag] if mime in o.get("data", {})]
        assert data, f"{tag}: no {mime} output"
        text = "".join(data[0]) if isinstance(data[0], list) else data[0]
        if mime == "text/html":
            assert text.count("<tr") >= 2 and "<td" in text, f"{tag}: an empty table"
        else:
            assert len(text) > (2000 if mime == "image/png" else 200), f"{tag}: empty"
    for fig in ("adversarial_examples_defenses.png", "compute_overhead.png", "lwta_winners.png",
                "lwta_gradient_cosine.png", "true_class_probs.png", "robustness_curves.png", "training_curves.png"):
        assert (out / "figures" / fig).stat().st_size > 5000, fig
    claims = [c for c in nb["cells"] if "artifact-claims" in c["metadata"].get("tags", [])][0]
    html = "".join(claims["outputs"][0]["data"]["text/html"])
    assert "not reproduced" in html and "not comparable" in html


def test_smoke_chain_end_to_end(smoke_run):
    out, proc = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for i, nb in enumerate(NOTEBOOKS, 1):
        assert f"[{i}/{len(NOTEBOOKS)}] {nb}" in proc.stdout  # progress names each notebook
        assert (out / "reports" / "executed" / f"{nb}.ipynb").is_file()
    # the epochs' lines are in the executed notebook, not on the console
    baseline = (out / "reports" / "executed" / "01_baseline.ipynb").read_text()
    assert "epoch 1/2: loss" in baseline and "epoch 1/2: loss" not in proc.stdout + proc.stderr
    for name in ("relu_std", "relu_pgdat"):
        assert (out / "models" / f"{name}.pt").is_file()
        payload = json.loads((out / "results" / f"eval_{name}.json").read_text())
        recs = payload["records"]
        # every attack of the smoke profile that applies to a deterministic ReLU model, and the worst case
        assert {r["attack"] for r in recs} == {"none", "fgsm", "pgd_linf", "pgd_s001", "cw_l2", "pgd_linf_10", "transfer",
                                               "square", "apgd_ce", "apgd_dlr", "deepfool", "pgd_l2", "pgd_ce", "worst_case"}
        assert all(set(RECORD_FIELDS) <= set(r) for r in recs)
        clean = [r for r in recs if r["attack"] == "none"][0]["accuracy"]
        assert all(r["accuracy"] <= clean for r in recs)
        at = [r for r in recs if r["eps"] == 0.3 and r["norm"] == "linf" and r["attack"] != "worst_case"]
        worst = [r for r in recs if r["attack"] == "worst_case"][0]
        assert worst["accuracy"] <= min(r["accuracy"] for r in at if r["n_examples"] == worst["n_examples"])
        sanity = json.loads((out / "results" / f"sanity_{name}.json").read_text())
        assert len(sanity["checks"]) >= 5 and isinstance(sanity["flags"], list)
        assert (out / "results" / f"correct_{name}.npz").is_file()
        assert (out / "results" / f"train_{name}.json").is_file()
    lwta = {r["attack"] for r in json.loads((out / "results" / "eval_lwta_std.json").read_text())["records"]}
    assert {"pgd_linf_eot", "pgd_st", "apgd_ce_st", "apgd_dlr"} <= lwta  # adaptive attacks, straight-through too
    kwta = {r["attack"] for r in json.loads((out / "results" / "eval_kwta_std.json").read_text())["records"]}
    assert "smoothed_pgd" in kwta and "pgd_st" not in kwta  # no straight-through mode on k-WTA
    for fig in ("data_examples.png", "true_class_probs.png", "robustness_curves.png", "training_curves.png"):
        assert (out / "figures" / fig).stat().st_size > 5000
    html = (out / "reports" / "index.html").read_text()
    for nb_title in ("00 · Data", "01 · Baseline", "05 · Attacks", "07 · Analysis", "true-class probabilities",
                     "Headline", "Sanity checks", "worst case over attacks", "strongest attack"):
        assert nb_title in html
    assert "data:image/png;base64" in html  # figures embedded
    assert "Traceback" not in html
    assert (out / "reports" / "index.html").stat().st_size <= 2.5e6
    for name in ("relu_std", "lwta_pgdat"):  # RobustBench-style entries, linked from the report
        entry = json.loads((out / "results" / f"robustbench_{name}.json").read_text())
        assert entry["threat_model"] == "Linf" and float(entry["robust_acc"]) <= float(entry["clean_acc"])
        assert f"../results/robustbench_{name}.json" in html


def test_console_shows_progress_and_a_summary_not_the_log(smoke_run):
    out, proc = smoke_run
    console = proc.stdout + proc.stderr
    for noise in ("Executing Cell", "Ending Cell", "without encryption", "Input Notebook", "Executing notebook with"):
        assert noise not in console, noise
    assert "pixel range" not in console  # a notebook's own output stays in the notebook
    table = proc.stdout.split("wall time", 1)[1]
    rows = {line.split()[0]: line for line in table.splitlines() if line.split()}
    for nb in NOTEBOOKS:
        assert nb in rows, nb
    assert re.search(r"models? trained", rows["01_baseline"])  # what it did, told by the kernel
    assert re.search(r"files? written", rows["05_attacks"])
    assert "total" in rows
    assert f"report: {display_path(out / 'reports' / 'index.html')}" in proc.stdout
    assert "xdg-open" in proc.stdout and "http.server" in proc.stdout
    assert (out / "reports" / "executed" / "00_data.kernel.log").is_file()  # the kernel's own messages


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "executed" not in p.parts and ".chain-run" not in p.parts}


def test_a_failing_notebook_leaves_the_last_good_outputs_untouched(smoke_run, tmp_path):
    out, proc = smoke_run
    assert proc.returncode == 0
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    ckpt = work / "models" / "wca.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # damaged: 05_attacks fails when it loads it
    before = _snapshot(work)
    proc = run("--profile", "smoke", "--out", str(work), "--notebooks", "00_data", "05_attacks", "--force")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FAILED: notebook 05_attacks.ipynb, cell" in proc.stderr and "wca.pt" in proc.stderr
    assert "untouched" in proc.stderr
    assert _snapshot(work) == before  # 00_data's new split record and figures were not promoted
    assert (work / "reports" / "executed" / "05_attacks.ipynb").is_file()
    # the analysis alone, on the restored records: its inputs are those of its last run, so it is not run again
    (work / "models" / "wca.pt").write_bytes((out / "models" / "wca.pt").read_bytes())
    proc = run("--profile", "smoke", "--out", str(work), "--notebooks", "07_analysis")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "07_analysis" in proc.stdout and "not run again" in proc.stdout
    after = _snapshot(work)
    assert all(after[k] == v for k, v in before.items() if k.name.startswith(("eval_", "correct_", "train_")))
    timing = json.loads((work / "results" / "chain_timing.json").read_text())["notebooks"]["07_analysis"]
    assert timing["wall_s"] > 0 and not (work / ".chain-run").exists()


def test_a_rerun_with_nothing_changed_runs_no_notebook(smoke_run, tmp_path):
    """The notebook cache (``pipeline.nbcache``): with nothing changed, no notebook runs and the report
    stays; a notebook whose output was removed runs again, and only it: what it writes again is the same
    bytes, so no later notebook runs (``--force`` is ``enabled=False`` in test_notebook_cache_keys)."""
    out, proc = smoke_run
    assert proc.returncode == 0
    work = tmp_path / "copy"
    shutil.copytree(out, work)  # other inodes and paths, the same contents: still unchanged
    before = {k: v for k, v in _snapshot(work).items() if k.name != "chain_timing.json"}
    proc = run("--profile", "smoke", "--out", str(work), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("unchanged since its last run: not run again") == 2 * len(NOTEBOOKS), proc.stdout
    assert "report: unchanged since it was last rendered" in proc.stdout
    assert {k: v for k, v in _snapshot(work).items() if k.name != "chain_timing.json"} == before
    figure = work / "figures" / "training_curves_relu_std.png"
    figure.unlink()  # an output of the baseline's notebook: it runs again, and writes it again, byte for byte
    proc = run("--profile", "smoke", "--out", str(work), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("unchanged since its last run: not run again") == 2 * (len(NOTEBOOKS) - 1), proc.stdout
    assert re.search(r"\[2/\d+\] 01_baseline +\d+/\d+ cells", proc.stdout), proc.stdout
    assert figure.read_bytes() == before[figure.relative_to(work)]
    assert "report: unchanged" not in proc.stdout  # rendered again from the new executed copy
    proc = run("--profile", "smoke", "--out", str(work), timeout=300)  # and then nothing again
    assert proc.stdout.count("unchanged since its last run: not run again") == 2 * len(NOTEBOOKS), proc.stdout


def test_smoke_report_opens_in_headless_chromium(smoke_run):
    from test_report import browser_or_skip

    from lwta_utils.core.paths import NOTEBOOKS_DIR
    from lwta_utils.pipeline.report import check_report, expected_anchors

    out, proc = smoke_run
    assert proc.returncode == 0
    browser_or_skip()
    res = check_report(out / "reports" / "index.html", expected_anchors(NOTEBOOKS_DIR, list(NOTEBOOKS)), min_images=15,
                       first=True)
    assert res["anchors"] == len(expected_anchors(NOTEBOOKS_DIR, list(NOTEBOOKS)))
    assert res["first_screen"]["figure"][1] <= 768 and res["bytes"] <= 2.5e6
    assert (out / "reports" / "first_screen.png").stat().st_size > 10000  # saved by the chain for the README
