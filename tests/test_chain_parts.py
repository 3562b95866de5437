"""The headless chain's parts that need no smoke chain: the console and its progress side channel, the
kernels' import path, the clean-checkout rule, bad parameters, a notebook failing at its start, the
notebook cache's keys and the timing record."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_chain import run

from lwta_utils.config.schema import NOTEBOOKS
from lwta_utils.core import progress
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.jsonfiles import write_versioned
from lwta_utils.core.paths import ROOT
from lwta_utils.pipeline import chain
from lwta_utils.pipeline.console import Console, NotebookRun, summary_table


def test_verbose_restores_the_log(tmp_path):
    proc = run("--profile", "smoke", "--out", str(tmp_path), "--notebooks", "00_data", "--no-report", "--verbose",
               timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Executing Cell" in proc.stdout and "pixel range" in proc.stdout
    assert "=== [1/1] 00_data ===" in proc.stdout and "00_data" in proc.stdout.split("wall time", 1)[1]


def test_progress_side_channel(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    progress.reset()
    progress.status("ignored without a chain")
    assert progress.read_progress(path) is None
    monkeypatch.setenv(progress.ENV, str(path))
    monkeypatch.setattr(progress, "PUBLISH_EVERY_S", 0.0)  # publish every update (the chain: a few per second)
    progress.status("training relu_std epoch 1/2")
    progress.tally("models trained")
    progress.tally("models trained")
    seen = []
    for i in progress.progress_bar(range(5), desc="relu_std epoch 1", leave=False, mininterval=0):
        if i == 2:
            seen = progress.read_progress(path)["bars"]
    assert seen and seen[-1]["desc"] == "relu_std epoch 1" and seen[-1]["total"] == 5 and seen[-1]["n"] >= 1
    state = progress.read_progress(path)
    assert state["status"] == "training relu_std epoch 1/2" and state["tallies"] == {"models trained": 2}
    assert state["bars"] == []  # the bar closed
    progress.reset()


def test_kernels_import_the_chains_own_package(tmp_path, monkeypatch):
    """A notebook kernel imports lwta_utils from the checkout whose chain started it, even when
    another copy comes first on the path (a second working tree, or an editable install elsewhere)."""
    other = tmp_path / "other_checkout"
    (other / "lwta_utils").mkdir(parents=True)
    (other / "lwta_utils" / "__init__.py").write_text("raise ImportError('the wrong checkout')\n")
    monkeypatch.setenv("PYTHONPATH", str(other))
    env = chain.kernel_env(tmp_path / "progress.json")
    assert env[progress.ENV] == str(tmp_path / "progress.json")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(other)]
    with chain._env(env):
        proc = subprocess.run([sys.executable, "-c", "import lwta_utils; print(lwta_utils.__file__)"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()).resolve().is_relative_to(ROOT.resolve())
    assert os.environ["PYTHONPATH"] == str(other) and progress.ENV not in os.environ  # restored after


def test_console_bars_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the bars fit the terminal; pytest-xdist's workers say 80 columns
    path = tmp_path / "progress.json"
    stream = io.StringIO()
    console = Console("bars", stream=stream, poll_s=0.01)
    run_ = NotebookRun("04_adversarial_training", 5, 7)
    console.start(run_, path)
    run_.cells_total, run_.cells_done = 15, 7
    write_versioned(path, "progress", {"status": "training lwta_pgdat epoch 6/10", "status_time": time.time() + 10,
                                       "bars": [{"id": 1, "desc": "lwta_pgdat epoch 6", "n": 3, "total": 9,
                                                 "elapsed": 2.0}],
                                       "tallies": {"models trained": 1, "checkpoints reused": 4}})
    deadline = time.monotonic() + 30  # the poller draws every 0.01 s; a loaded machine may take longer
    while "lwta_pgdat epoch 6" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    console.set_files_written(3)
    console.finish(True)
    text = stream.getvalue()
    assert "[5/7] 04_adversarial_training" in text and "7/15 cells" in text
    assert "training lwta_pgdat epoch 6/10" in text and "lwta_pgdat epoch 6" in text and "3/9" in text
    table = summary_table([run_], 12.5)
    assert "1 model trained, 4 checkpoints reused; 3 files written" in table and "total" in table


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(root)})


def test_committed_outputs_are_written_only_from_a_clean_checkout(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "lwta_utils").mkdir(parents=True)
    (repo / "results").mkdir()
    (repo / "lwta_utils" / "a.py").write_text("x = 1\n")
    (repo / "results" / "eval_a.json").write_text("{}\n")
    (repo / "README.md").write_text("readme\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "c")
    assert chain.check_clean_checkout(repo, repo) is None
    (repo / "results" / "eval_a.json").write_text('{"new": 1}\n')  # the chain's own outputs may differ
    (repo / "README.md").write_text("findings updated\n")
    assert chain.check_clean_checkout(repo, repo) is None
    (repo / "lwta_utils" / "a.py").write_text("x = 2\n")  # code that differs from the commit
    (repo / "lwta_utils" / "b.py").write_text("y = 1\n")  # and a new module
    with pytest.raises(ConfigError, match=r"clean checkout.*2 path\(s\).*lwta_utils/a.py.*--out runs/"):
        chain.check_clean_checkout(repo, repo)
    assert chain.check_clean_checkout(tmp_path / "elsewhere", repo) is None  # another out_dir: nothing to check
    assert "not a git checkout" in chain.check_clean_checkout(tmp_path, tmp_path)
    # through the chain: refused before any work, nothing staged or written
    monkeypatch.setattr(chain, "ROOT", repo)
    with pytest.raises(ConfigError, match="clean checkout"):
        chain.run_chain("smoke", out_dir=str(repo), report=False, console=Console("lines", stream=io.StringIO()))
    assert not (repo / ".chain-run").exists() and not (repo / "models").exists()


def test_bad_parameter_stops_before_any_work_and_touches_nothing(tmp_path, capsys):
    """The first case through a process of its own (its exit status and its whole stderr), the
    others through the same entry point in this process (``chain.main``, what the process runs)."""
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    sentinel = out / "results" / "eval_relu_std.json"
    sentinel.write_text("keep me")
    for i, (args, needle) in enumerate([
        (["--profile", "smoke", "--set", "models.relu_std.activation=swish"], "'models.relu_std.activation' = 'swish'"),
        (["--profile", "nope"], "'profile' = 'nope'"),
        (["--profile", "smoke", "--set", "data.name=imagenet"], "'data.name' = 'imagenet'"),
        (["--profile", "smoke", "--set", "eval.attacks=[{name: fgsm, eps: [2.0]}]"], "eps[0]' = 2.0"),
        (["--profile", "smoke", "--set", "models.relu_std.train.epochs=-1"], "epochs' = -1"),
        (["--profile", "smoke", "--notebooks", "05_attacks"], "checkpoint"),
    ]):
        if i == 0:
            proc = run(*args, "--out", str(out), timeout=120)
            code, stderr = proc.returncode, proc.stderr
        else:
            code, stderr = chain.main([*args, "--out", str(out)]), capsys.readouterr().err
        assert code == 2, (args, stderr)
        lines = [ln for ln in stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and needle in lines[0] and "allowed" in lines[0], (args, stderr)
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


def test_notebook_cache_keys(tmp_path, smoke_cfg):
    """A notebook is skipped only when its inputs, its own outputs, the code and the configuration are
    those of its last run; files written by later notebooks and by the chain do not count."""
    from lwta_utils.pipeline.nbcache import Digests, NotebookCache

    out, executed = tmp_path / "out", tmp_path / "executed"
    executed.mkdir()
    (out / "results").mkdir(parents=True)
    (out / "results" / "input.json").write_text("1")
    digests, params = Digests(("models", "results", "figures")), {"seed": 0, "out_dir": "a"}
    first, second = NOTEBOOKS[0], NOTEBOOKS[1]
    cache = NotebookCache(executed, enabled=True, cfg=smoke_cfg, params=params)
    assert not cache.unchanged(first, digests(out))  # never ran
    before = digests(out)
    (out / "results" / "first.json").write_text("a")  # the first notebook's output
    (out / "results" / "shared.json").write_text("s1")  # written by both notebooks (LWTA statistics, a figure)
    mid = digests(out)
    (out / "results" / "second.json").write_text("b")  # the second's
    (out / "results" / "shared.json").write_text("s2")
    (out / "results" / "chain_timing.json").write_text("t")
    after = digests(out)
    for nb in (first, second):
        (executed / f"{nb}.ipynb").write_text("{}")
    cache.save({first: (before, mid), second: (mid, after)}, after)

    def fresh(**kw):
        return NotebookCache(executed, enabled=kw.get("enabled", True), cfg=kw.get("cfg", smoke_cfg),
                             params=kw.get("params", {**params, "out_dir": "elsewhere"}))

    assert fresh().unchanged(first, digests(out)) and fresh().unchanged(second, digests(out))  # as the chain left it
    (out / "results" / "second.json").write_text("c")  # a later notebook's output: the first stays valid
    (out / "results" / "chain_timing.json").write_text("u")
    assert fresh().unchanged(first, digests(out)) and not fresh().unchanged(second, digests(out))
    (out / "results" / "second.json").write_text("b")
    (out / "results" / "first.json").write_text("z")  # its own output changed
    assert not fresh().unchanged(first, digests(out))
    (out / "results" / "first.json").write_text("a")
    (out / "results" / "input.json").write_text("2")  # an input changed
    assert not fresh().unchanged(first, digests(out))
    (out / "results" / "input.json").write_text("1")
    assert fresh().unchanged(first, digests(out))
    assert not fresh(enabled=False).unchanged(first, digests(out))  # --force
    assert not fresh(params={**params, "seed": 1}).unchanged(first, digests(out))
    other = type(smoke_cfg)(**{**smoke_cfg.__dict__, "seed": smoke_cfg.seed + 1})
    assert not fresh(cfg=other).unchanged(first, digests(out))
    c = fresh()
    c.invalidate(first)  # about to run again: the entry goes, its outputs stay attributed to it
    assert not (executed / f"{first}.cache.json").exists() and not c.unchanged(first, digests(out))
    c.save({first: (digests(out), digests(out))}, digests(out))  # ran and wrote nothing new: still its outputs
    assert json.loads((executed / f"{first}.cache.json").read_text())["outputs"] == {
        p: after[p] for p in ("results/first.json", "results/shared.json")}


def test_chain_timing_keeps_the_last_run_that_did_the_work(cfg):
    """A rerun that only reused checkpoints and records keeps the timed run that computed them
    (``last_computed``); a run that computes again replaces it."""
    from lwta_utils.core.jsonfiles import read_versioned
    from lwta_utils.pipeline.console import NotebookRun

    def timing():
        return read_versioned(cfg.results_dir / "chain_timing.json", "chain_timing")["notebooks"]["05_attacks"]

    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    full, reused = NotebookRun("05_attacks", 6, 8), NotebookRun("05_attacks", 6, 8)
    full.tallies, reused.tallies = {"models evaluated": 3}, {"records reused": 3}
    assert full.computed() and not reused.computed() and NotebookRun("07_analysis", 8, 8).computed()
    chain.record_timing(cfg, "05_attacks", 5400.0, True, full.did(), computed=full.computed())
    chain.record_timing(cfg, "05_attacks", 20.0, True, reused.did(), computed=reused.computed())
    chain.record_timing(cfg, "05_attacks", 19.0, True, reused.did(), computed=reused.computed())
    t = timing()
    assert (t["wall_s"], t["computed"]) == (19.0, False)
    assert (t["last_computed"]["wall_s"], t["last_computed"]["did"]) == (5400.0, "3 models evaluated; 0 files written")
    chain.record_timing(cfg, "05_attacks", 300.0, True, full.did(), computed=True)
    assert timing()["wall_s"] == 300.0 and "last_computed" not in timing()
    # an entry that did no work itself (reuse only, or no count at all) is never kept as the last that did
    chain.record_timing(cfg, "06_released_checkpoint", 11.0, True, "3 files written", computed=True)
    chain.record_timing(cfg, "06_released_checkpoint", 12.0, True, "1 record reused; 3 files written", computed=False)
    assert "last_computed" not in read_versioned(cfg.results_dir / "chain_timing.json",
                                                 "chain_timing")["notebooks"]["06_released_checkpoint"]
    assert chain.did_work({"did": "2 models evaluated, 3 records reused; 9 files written"})
    assert not chain.did_work({"did": "4 checkpoints reused; 4 files written"}) and not chain.did_work({"did": "x"})
