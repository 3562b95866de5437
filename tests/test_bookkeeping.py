"""Bookkeeping (issue 8): every entry point rejects bad input early and clearly; writes are atomic
(an interrupted write or a killed run leaves the previous file and no partial one); damaged or
incompatible checkpoints are named; same-seed reruns give identical records; the chain caches by
configuration hash and redoes exactly what a change touches."""
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import lwta_utils as lu  # noqa: E402
from lwta_utils.analysis import figures as plots  # noqa: E402
from lwta_utils.attacks.registry import run_attack  # noqa: E402
from lwta_utils.config.schema import AttackConfig, ComputeConfig  # noqa: E402
from lwta_utils.core import fileio  # noqa: E402
from lwta_utils.core.errors import ConfigError  # noqa: E402
from lwta_utils.core.paths import ROOT  # noqa: E402
from lwta_utils.evaluation import checkpoints  # noqa: E402
from lwta_utils.evaluation.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from lwta_utils.evaluation.evaluate import evaluate_model  # noqa: E402
from lwta_utils.evaluation.loading import load_trained  # noqa: E402
from lwta_utils.pipeline import (
    report,  # noqa: E402
    steps,  # noqa: E402
)
from lwta_utils.pipeline.chain import remove_stale_temporaries  # noqa: E402
from lwta_utils.training.fit import fit  # noqa: E402

CPU = torch.device("cpu")


def _bad_inputs(model, splits, cfg, tmp_path):
    """(parameter named in the message, a call that must reject its input before any work)."""
    t = cfg.models["relu_std"].train
    x, y = splits.x_test[:8], splits.y_test[:8]
    atk = [AttackConfig(name="fgsm", eps=[0.1])]
    with_t = lambda **kw: dataclasses.replace(t, **kw)  # noqa: E731
    bad_splits = lambda **kw: dataclasses.replace(splits, **kw)  # noqa: E731
    return [
        # fit
        ("model", lambda: fit("not a model", splits, t, device=CPU, seed=0)),
        ("splits", lambda: fit(model, {"x": x}, t, device=CPU, seed=0)),
        ("train.epochs", lambda: fit(model, splits, with_t(epochs=-1), device=CPU, seed=0)),
        ("train.lr", lambda: fit(model, splits, with_t(lr=float("nan")), device=CPU, seed=0)),
        ("train.optimizer", lambda: fit(model, splits, with_t(optimizer="lbfgs"), device=CPU, seed=0)),
        ("train.batch_size", lambda: fit(model, splits, with_t(batch_size=10**6), device=CPU, seed=0)),
        ("device", lambda: fit(model, splits, t, device="gpu0", seed=0)),
        ("seed", lambda: fit(model, splits, t, device=CPU, seed=-3)),
        ("compute.amp", lambda: fit(model, splits, t, device=CPU, seed=0, compute=ComputeConfig(amp="fp16x"))),
        ("splits.x_train", lambda: fit(model, bad_splits(x_train=splits.x_train * 255), t, device=CPU, seed=0)),
        ("splits.x_train", lambda: fit(model, bad_splits(x_train=splits.x_train.double()[:, 0]), t, device=CPU,
                                       seed=0)),
        ("splits.y_val", lambda: fit(model, bad_splits(y_val=splits.y_val.float()), t, device=CPU, seed=0)),
        ("splits.y_train", lambda: fit(model, bad_splits(y_train=splits.y_train + 10), t, device=CPU, seed=0)),
        # attacks
        ("attack", lambda: run_attack("pgd_infinity", model, x, y, eps=0.1)),
        ("attack parameters", lambda: run_attack("fgsm", model, x, y, eps=0.1, stepz=3)),
        ("eps", lambda: run_attack("fgsm", model, x, y, eps=1.5)),
        ("x", lambda: run_attack("fgsm", model, x - 0.5, y, eps=0.1)),
        ("x", lambda: run_attack("fgsm", model, torch.full_like(x, float("nan")), y, eps=0.1)),
        ("y", lambda: run_attack("fgsm", model, x, y[:3], eps=0.1)),
        # evaluation
        ("batch_size", lambda: evaluate_model(model, x, y, atk, batch_size=0, seed=0, meta={"model": "m"})),
        ("draws", lambda: evaluate_model(model, x, y, atk, batch_size=8, seed=0, meta={"model": "m"}, draws=0)),
        ("attacks", lambda: evaluate_model(model, x, y, [{"name": "fgsm"}], batch_size=8, seed=0,
                                           meta={"model": "m"})),
        ("headline_eps", lambda: evaluate_model(model, x, y, atk, batch_size=8, seed=0, meta={"model": "m"},
                                                headline_eps=3.0)),
        ("y", lambda: evaluate_model(model, x, y.float(), atk, batch_size=8, seed=0, meta={"model": "m"})),
        ("names", lambda: steps.evaluate_all(cfg, splits, ["relu_std", "resnet_9000"])),
        ("names", lambda: steps.train_stage(cfg, "baseline", splits, names=["lwta_std"])),
        ("stage", lambda: steps.train_stage(cfg, "pretraining", splits)),
        # checkpoints
        ("path", lambda: load_checkpoint(12345)),
        # configuration
        ("models.relu_std.train.adversarial.eps", lambda: lu.load_config(
            "smoke", overrides={"models.relu_std.train.adversarial.eps": 8})),
        ("compute.state_every_steps", lambda: lu.load_config("smoke", overrides={"compute.state_every_steps": -1})),
    ]


def test_entry_points_reject_bad_inputs_with_one_clear_message(trained, splits, cfg, tmp_path):
    cases = _bad_inputs(trained, splits, cfg, tmp_path)
    assert len(cases) >= 20
    before = copy.deepcopy(trained.state_dict())
    for param, call in cases:
        with pytest.raises(ConfigError) as info:
            call()
        message = str(info.value)
        assert f"parameter '{param}' = " in message and "is not allowed: " in message, (param, message)
        assert len(message.splitlines()) == 1, message
    # nothing was trained, written or changed before the errors
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert not cfg.out.exists()


# -- checkpoints -----------------------------------------------------------------------------------

def _save(model, cfg, splits, path, name="relu_std"):
    return save_checkpoint(path, model, name=name, model_cfg=cfg.models[name], info=splits.info,
                           config_hash=cfg.model_hash(name), metrics={}, history=[], seed=0, profile="smoke")


def test_damaged_and_incompatible_checkpoints_are_named(trained, cfg, splits, tmp_path):
    path = _save(trained, cfg, splits, tmp_path / "m.pt")
    cases = {}
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    cases["noise.pt' cannot be read"] = tmp_path / "noise.pt"
    torch.save({"weights": 1}, tmp_path / "other.pt")
    cases["other.pt' is not a lwta-study-checkpoint"] = tmp_path / "other.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["net.1.weight"]
    torch.save(ckpt, tmp_path / "missing.pt")
    cases["missing.pt' does not match a mnist_cnn.*missing keys \\['net.1.weight'\\]"] = tmp_path / "missing.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["arch"] = "wrn"
    torch.save(ckpt, tmp_path / "arch.pt")
    cases["arch.pt' does not match a wrn"] = tmp_path / "arch.pt"
    for needle, p in cases.items():
        with pytest.raises(ConfigError, match=needle):
            load_checkpoint(p)
    # a good file trained for another model of the profile: the mismatch is spelled out
    cfg.models_dir.mkdir(parents=True)
    _save(trained, cfg, splits, cfg.models_dir / "lwta_std.pt", name="relu_std")
    with pytest.raises(ConfigError, match=r"lwta_std.pt' was trained under another configuration.*"
                                          r"activation: 'relu' in the file vs 'lwta' in the profile"):
        load_trained(cfg, "lwta_std", CPU)


# -- atomic writes --------------------------------------------------------------------------------

def _interrupt(monkeypatch, target, name):
    """Make ``target.name(obj, path)`` write a little to ``path``, then raise KeyboardInterrupt (a Ctrl-C
    in the middle of the write)."""
    def half_then_interrupt(obj, path, *args, **kwargs):
        path.write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(target, name, half_then_interrupt)


def test_an_interrupted_write_leaves_the_previous_file_and_no_partial_one(trained, cfg, splits, tmp_path,
                                                                         monkeypatch):

    path = _save(trained, cfg, splits, tmp_path / "m.pt")
    record = fileio.write_json(tmp_path / "r.json", {"accuracy": 0.5})
    fig = plt.figure()
    png = plots.save_figure(fig, tmp_path / "f.png")
    html = fileio.write_text(tmp_path / "index.html", "<html>good</html>")
    before = {p: p.read_bytes() for p in (path, record, png, html)}

    _interrupt(monkeypatch, checkpoints.torch, "save")
    with pytest.raises(KeyboardInterrupt):
        _save(trained, cfg, splits, path)
    monkeypatch.undo()
    monkeypatch.setattr(fileio.Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        fileio.write_json(record, {"accuracy": 0.9})
    with pytest.raises(KeyboardInterrupt):
        report.write_text(html, "<html>half</html>")
    monkeypatch.undo()
    monkeypatch.setattr(fig, "savefig", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        plots.save_figure(fig, png)
    plt.close(fig)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(tmp_path.glob(".tmp-*"))


@contextmanager
def _ctrl_c_reaches_children():
    """Processes started inside get SIGINT's default action, as from a terminal. A test run started as
    a background job of a non-interactive shell (``cmd &``, ``nohup``) ignores SIGINT and its children
    inherit that: the training then ran on after the signal and the test waited out its timeout."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_killed_training_leaves_the_previous_checkpoint_and_the_next_run_cleans_up(tmp_path):
    """SIGINT (Ctrl-C) and SIGKILL in the middle of training: the checkpoint of the previous
    configuration stays byte for byte; after SIGINT no temporary file remains, and the chain
    removes what a SIGKILL left before it writes anything."""
    out = tmp_path / "out"
    base = ["-m", "lwta_utils.pipeline.launch", "train", "--profile", "smoke", "--out", str(out), "--models", "relu_std",
            "--set", "num_threads=1", "data.n_train=500"]
    assert subprocess.run([sys.executable, *base], cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    good = out / "models" / "relu_std.pt"
    before = good.read_bytes()
    longer = [*base, "models.relu_std.train.epochs=200", "compute.state_every_steps=1"]
    for sig in (signal.SIGINT, signal.SIGKILL):
        state = out / "models" / "relu_std.state.pt"
        state.unlink(missing_ok=True)
        with _ctrl_c_reaches_children():
            proc = subprocess.Popen([sys.executable, *longer], cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not state.exists() and time.time() < deadline:
            time.sleep(0.05)
        first = state.stat().st_mtime_ns if state.exists() else None
        while state.exists() and state.stat().st_mtime_ns == first and time.time() < deadline:
            time.sleep(0.05)  # a second state written: the signal lands in the training loop, not in start-up
        time.sleep(0.3)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert good.read_bytes() == before
        if sig == signal.SIGINT:
            assert not list(out.rglob(".tmp-*"))
    (out / "results" / ".tmp-eval_x.json.abc").write_text("{partial")
    assert remove_stale_temporaries(out) >= 1 and not list(out.rglob(".tmp-*"))


# -- reruns and caching ----------------------------------------------------------------------------

CHEAP = {"eval.attacks": [{"name": "fgsm", "eps": [0.1, 0.3]},
                          {"name": "pgd_linf", "eps": [0.3], "steps": 3, "step_size": 0.1}],
         "eval.cascade": ["pgd_linf"],
         "eval.n_examples": 60, "eval.draws": 3, "data.n_train": 300, "num_threads": 1}


def _records(cfg, name):
    rows = json.loads((cfg.results_dir / f"eval_{name}.json").read_text())["records"]
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


def test_same_seed_reruns_give_identical_records(tmp_path):
    """Deterministic (ReLU) and stochastic (LWTA, PGD-AT) models: trained and evaluated twice from
    nothing with the same seed, every weight and every record field but the wall time agree."""
    names = ["relu_std", "lwta_pgdat"]
    runs = []
    for i in range(2):
        cfg = lu.load_config("smoke", out_dir=str(tmp_path / f"run{i}"), overrides=CHEAP)
        data = lu.load_data(cfg)
        for stage in ("baseline", "adversarial_training"):
            steps.train_stage(cfg, stage, data, names=[n for n in names if cfg.models[n].stage == stage])
        steps.evaluate_all(cfg, data, names)
        runs.append(cfg)
    for name in names:
        a, b = (torch.load(c.models_dir / f"{name}.pt", weights_only=True)["state_dict"] for c in runs)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert _records(runs[0], name) == _records(runs[1], name)
    assert any(r["accuracy_sd"] > 0 for r in _records(runs[0], "lwta_pgdat"))  # really stochastic


def test_the_cache_redoes_exactly_what_a_change_touches(tmp_path, capsys):
    """Checkpoints and records are reused when their configuration hash matches; changing one model's
    training retrains and re-evaluates that model only (and the models that start from it)."""
    out = str(tmp_path / "out")
    cfg = lu.load_config("smoke", out_dir=out, overrides=CHEAP)
    data = lu.load_data(cfg)
    names = ["relu_std", "lwta_std"]
    steps.train_stage(cfg, "baseline", data, names=["relu_std"])
    steps.train_stage(cfg, "lwta", data, names=["lwta_std"])
    steps.evaluate_all(cfg, data, names)
    stamps = {p.name: p.stat().st_mtime_ns for p in cfg.out.rglob("*") if p.is_file()}
    capsys.readouterr()
    # the same configuration again: nothing is trained or evaluated
    steps.train_stage(cfg, "baseline", data, reuse=True, names=["relu_std"])
    steps.train_stage(cfg, "lwta", data, reuse=True, names=["lwta_std"])
    steps.evaluate_all(cfg, data, names, reuse=True)
    said = capsys.readouterr().out
    assert said.count("reusing") == 4 and "epoch" not in said
    assert {p.name: p.stat().st_mtime_ns for p in cfg.out.rglob("*") if p.is_file()} == stamps
    # one model's epochs change: that model alone is retrained and re-evaluated
    cfg2 = lu.load_config("smoke", out_dir=out, overrides={**CHEAP, "models.lwta_std.train.epochs": 1})
    steps.train_stage(cfg2, "baseline", data, reuse=True, names=["relu_std"])
    steps.train_stage(cfg2, "lwta", data, reuse=True, names=["lwta_std"])
    steps.evaluate_all(cfg2, data, names, reuse=True)
    changed = {p.name for p in cfg.out.rglob("*") if p.is_file() and p.stat().st_mtime_ns != stamps.get(p.name)}
    assert changed == {"lwta_std.pt", "train_lwta_std.json", "eval_lwta_std.json", "sanity_lwta_std.json",
                       "correct_lwta_std.npz", "probs_lwta_std.npz", "examples_lwta_std.npz"}
    # a fine-tuned model depends on its starting point; an evaluation change re-evaluates all, retrains none
    default = lu.load_config("default")
    changed_parent = lu.load_config("default", overrides={"models.kwta_std.train.lr": 0.5})
    assert default.model_hash("kwta_incr") != changed_parent.model_hash("kwta_incr")
    assert default.model_hash("relu_std") == changed_parent.model_hash("relu_std")
    more_draws = lu.load_config("default", overrides={"eval.draws": 7})
    assert default.model_hash("lwta_std") == more_draws.model_hash("lwta_std")
    assert default.eval_hash("lwta_std") != more_draws.eval_hash("lwta_std")
