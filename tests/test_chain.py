"""The headless chain, end to end on the smoke profile, and its failure modes."""
import json
import shutil
import subprocess
import sys

import pytest

from lwta_utils.config.schema import NOTEBOOKS
from lwta_utils.core.paths import ROOT
from lwta_utils.evaluation.records import RECORD_FIELDS


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "lwta_utils.pipeline", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


ARTIFACTS = {  # the cells of 07_analysis that must show a table (html) or a figure (png)
    "artifact-findings": "text/markdown", "artifact-claims": "text/html", "artifact-seed001": "text/html",
    "artifact-headline": "text/html", "artifact-accuracy": "text/html", "artifact-sanity": "text/html",
    "artifact-curves": "image/png", "artifact-probs": "image/png", "artifact-examples": "image/png",
    "artifact-winners": "image/png", "artifact-gradients": "image/png", "artifact-training": "image/png",
    "artifact-overhead-table": "text/html", "artifact-overhead": "image/png"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    (out / "results").mkdir()
    bench = subprocess.run([sys.executable, "benchmarks/bench_defenses.py", "--profile", "smoke", "--reps", "1",
                            "--device", "cpu", "--json", str(out / "results" / "bench_defenses.json")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    proc = run("--profile", "smoke", "--out", str(out))
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
    assert "epoch 1/2" in proc.stdout  # epochs are shown inside
    for name in ("relu_std", "relu_pgdat"):
        assert (out / "models" / f"{name}.pt").is_file()
        payload = json.loads((out / "results" / f"eval_{name}.json").read_text())
        recs = payload["records"]
        # every attack of the smoke profile that applies to a deterministic ReLU model, and the worst case
        assert {r["attack"] for r in recs} == {"none", "fgsm", "pgd_linf", "pgd_s001", "cw_l2", "pgd_linf_10", "transfer",
                                               "square", "apgd_ce", "apgd_dlr", "deepfool", "pgd_l2", "worst_case"}
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
    assert {"pgd_linf_eot", "pgd_linf_bpda", "pgd_linf_nonoise", "apgd_dlr"} <= lwta  # adaptive attacks
    kwta = {r["attack"] for r in json.loads((out / "results" / "eval_kwta_std.json").read_text())["records"]}
    assert "smoothed_pgd" in kwta and "pgd_linf_bpda" not in kwta
    for fig in ("data_examples.png", "true_class_probs.png", "robustness_curves.png", "training_curves.png"):
        assert (out / "figures" / fig).stat().st_size > 5000
    html = (out / "reports" / "index.html").read_text()
    for nb_title in ("00 · Data", "01 · Baseline", "05 · Attacks", "07 · Analysis", "true-class probabilities",
                     "Headline", "Sanity checks", "worst case over attacks", "strongest attack"):
        assert nb_title in html
    assert "data:image/png;base64" in html  # figures embedded
    assert "Traceback" not in html


def test_bad_parameter_stops_before_any_work_and_touches_nothing(tmp_path):
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    sentinel = out / "results" / "eval_relu_std.json"
    sentinel.write_text("keep me")
    for args, needle in [
        (["--profile", "nope"], "'profile' = 'nope'"),
        (["--profile", "smoke", "--set", "models.relu_std.activation=swish"], "'models.relu_std.activation' = 'swish'"),
        (["--profile", "smoke", "--set", "data.name=imagenet"], "'data.name' = 'imagenet'"),
        (["--profile", "smoke", "--set", "eval.attacks=[{name: fgsm, eps: [2.0]}]"], "eps[0]' = 2.0"),
        (["--profile", "smoke", "--set", "models.relu_std.train.epochs=-1"], "epochs' = -1"),
        (["--profile", "smoke", "--notebooks", "05_attacks"], "checkpoint"),
    ]:
        proc = run(*args, "--out", str(out), timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and needle in lines[0] and "allowed" in lines[0], (args, proc.stderr)
    assert sentinel.read_text() == "keep me"
    assert sorted(p.name for p in out.rglob("*")) == ["eval_relu_std.json", "results"]


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    # the paper profile validates and starts; without the CIFAR-10 files it stops in 00_data
    proc = run("--profile", "paper", "--out", str(tmp_path), "--notebooks", "00_data",
               "--set", f"data.root={tmp_path / 'no-data'}", timeout=300)
    assert proc.returncode == 1
    assert "FAILED: notebook 00_data.ipynb, cell" in proc.stderr
    assert "cifar-10-batches-py" in proc.stderr and "data.download" in proc.stderr
    assert (tmp_path / "reports" / "executed" / "00_data.ipynb").is_file()


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
    # the analysis alone, on the cached records: records unchanged, figures and report rendered again
    (work / "models" / "wca.pt").write_bytes((out / "models" / "wca.pt").read_bytes())
    proc = run("--profile", "smoke", "--out", str(work), "--notebooks", "07_analysis")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = _snapshot(work)
    assert all(after[k] == v for k, v in before.items() if k.name.startswith(("eval_", "correct_", "train_")))
    timing = json.loads((work / "results" / "chain_timing.json").read_text())["notebooks"]["07_analysis"]
    assert timing["wall_s"] > 0 and not (work / ".chain-run").exists()


def test_smoke_report_opens_in_headless_chromium(smoke_run):
    from test_report import browser_or_skip

    from lwta_utils.core.paths import NOTEBOOKS_DIR
    from lwta_utils.pipeline.report import check_report, expected_anchors

    out, proc = smoke_run
    assert proc.returncode == 0
    browser_or_skip()
    res = check_report(out / "reports" / "index.html", expected_anchors(NOTEBOOKS_DIR, list(NOTEBOOKS)), min_images=15)
    assert res["anchors"] == len(expected_anchors(NOTEBOOKS_DIR, list(NOTEBOOKS)))
