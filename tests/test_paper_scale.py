"""Paper scale (issue 7): CIFAR-10 read without torchvision, the paper profile starting on this
machine with tiny steps, compute options, data-parallel training and sharded evaluation on
torch.distributed (2 CPU processes, gloo), and resuming a killed run to identical weights."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import lwta_utils as lu
from lwta_utils.config.schema import ComputeConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.paths import ROOT
from lwta_utils.models import build_model
from lwta_utils.training.fit import fit, load_train_state

PY = sys.executable
TORCHRUN = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# a stated tolerance: 2 processes (gloo all-reduce of two half-batch means) against 1 process (one
# mean over the batch) differ only in the order of floating-point sums; SGD keeps that tiny
DDP_TOLERANCE = 1e-5


def launch(*args, torchrun=False, timeout=300):
    cmd = (TORCHRUN if torchrun else [PY]) + ["-m", "lwta_utils.pipeline.launch", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# -- CIFAR-10 without torchvision ------------------------------------------------------------------

def test_cifar10_is_read_from_the_python_batches(fake_cifar10):
    root, x_test, y_test = fake_cifar10
    cfg = lu.load_config("paper", overrides={"data.root": str(root), "data.n_train": 80, "data.n_val": 20,
                                             "data.n_test": 40, "eval.n_examples": 40})
    s = lu.load_data(cfg)
    assert s.x_train.shape == (80, 3, 32, 32) and s.x_val.shape == (20, 3, 32, 32) and len(s.y_test) == 40
    assert s.x_train.dtype == torch.float32 and 0 <= s.x_train.min() and s.x_train.max() <= 1
    # the test split is the official test batch (a stratified permutation of it), pixels / 255
    written = {bytes(img.tobytes()): y for img, y in zip(x_test, y_test)}
    for img, y in zip(s.x_test, s.y_test):
        key = bytes(np.round(img.numpy() * 255).astype(np.uint8).tobytes())
        assert written[key] == int(y)
    assert np.bincount(s.y_val.numpy(), minlength=10).tolist() == [2] * 10


def test_cifar10_missing_or_corrupt_files_are_named(tmp_path, fake_cifar10):
    cfg = lu.load_config("paper", overrides={"data.root": str(tmp_path / "nothing")})
    with pytest.raises(ConfigError, match="cifar-10-batches-py.*does not exist.*data.download"):
        lu.load_data(cfg)
    root = fake_cifar10[0]
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated
    cfg = lu.load_config("paper", overrides={"data.root": str(root), "data.n_train": 40, "data.n_val": 10,
                                             "data.n_test": 10, "eval.n_examples": 10})
    with pytest.raises(ConfigError, match="data_batch_3.*not a CIFAR-10 python batch"):
        lu.load_data(cfg)


# -- the paper profile ------------------------------------------------------------------------------

def test_paper_profile_is_the_papers_recipe():
    cfg = lu.load_config("paper")
    assert sorted((m.widen_factor, m.activation) for m in cfg.models.values()) == \
        [(k, a) for k in (1, 5, 10) for a in ("lwta", "relu")]
    for m in cfg.models.values():
        t, a = m.train, m.train.adversarial
        assert (m.arch, m.depth, t.epochs, t.batch_size, t.optimizer, t.lr, t.momentum, t.weight_decay) == \
            ("wrn", 34, 100, 128, "sgd", 0.1, 0.9, 2e-4)
        assert (t.schedule, t.milestones, t.lr_gamma, t.augment, t.max_shift) == ("lwta", [74], 0.5, "crop_flip", 4)
        assert (a.method, a.eps, a.step_size, a.steps, a.clean_weight) == ("pgd", 0.031, 0.007, 10, 0.0)
        assert t.select_metric == "pgd"  # on the validation split, never the test split
    assert (cfg.data.name, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test) == ("cifar10", 45000, 5000, 10000)
    assert (cfg.compute.amp, cfg.compute.channels_last) == ("bf16", True)
    ids = {a.key for a in cfg.eval.attacks}
    assert {"autoattack", "pgd_st", "apgd_ce_st", "transfer", "square"} <= ids and set(cfg.eval.cascade) <= ids


def tiny_paper_overrides(root) -> list[str]:
    """The paper profile with tiny steps: 16 training images, one PGD step, cheap attacks."""
    cfg = lu.load_config("paper")
    sets = [f"data.root={root}", "data.n_train=16", "data.n_val=10", "data.n_test=10", "eval.n_examples=10",
            "eval.draws=2", "eval.sanity.n_examples=4", "eval.cascade=[]",
            "eval.attacks=[{name: fgsm, eps: [0.031373]}, "
            "{name: pgd_linf, eps: [0.031373], steps: 2, step_size: 0.01}]",
            # the released checkpoint's step (its own tests: test_released.py) on 4 images, one PGD step each
            "released.n_images=4", "released.batch_size=4", "released.draws=2", "released.attack_draws=1",
            "released.n_gradients=2", "released.n_saved_examples=2", "released.cascade=[]",
            "released.authors_attack={id: pgd20_authors, name: pgd_linf, eps: [0.03137254901960784], steps: 1, "
            "step_size: 0.0078, options: {keep: last}}",
            "released.attacks=[{id: pgd20_st, name: pgd_linf, eps: [0.03137254901960784], steps: 1, step_size: 0.0078, "
            "gradient: straight_through}]"]
    for name in cfg.models:  # the smallest WideResNet that runs the same code: depth 10 (one block per group)
        sets += [f"models.{name}.train.{k}" for k in
                 ("epochs=1", "batch_size=8", "adversarial.steps=1", "val_attack_steps=1", "milestones=[0]")]
        sets += [f"models.{name}.depth=10", f"models.{name}.widen_factor={min(cfg.models[name].widen_factor, 2)}"]
    return sets


def test_paper_profile_starts_here_with_tiny_steps(tmp_path, fake_cifar10):
    """The whole chain on the paper profile, unchanged but for sizes and steps: its six WideResNet models
    at the smallest shapes that run the same code (depth 10, widths 1 and 2), trained with bf16 autocast
    and channels-last on the CPU, evaluated, reported."""
    root = fake_cifar10[0]
    out = tmp_path / "paper"
    proc = subprocess.run([PY, "-m", "lwta_utils.pipeline", "--profile", "paper", "--out", str(out),
                           "--set", *tiny_paper_overrides(root)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in lu.load_config("paper").models:
        record = json.loads((out / "results" / f"train_{name}.json").read_text())
        assert record["compute"]["amp"] == "bf16" and record["history"][0]["epoch"] == 1
        assert not (out / "models" / f"{name}.state.pt").exists()  # the state goes once the model is done
        evals = json.loads((out / "results" / f"eval_{name}.json").read_text())["records"]
        assert {r["attack"] for r in evals} >= {"none", "fgsm", "pgd_linf", "worst_case"}
    assert (out / "reports" / "index.html").is_file()


# -- compute options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "lwta"])
def test_bf16_autocast_and_channels_last_train_on_the_cpu(smoke_cfg, splits, activation, monkeypatch):
    import warnings

    fit_module = sys.modules["lwta_utils.training.fit"]  # the package exports the function under the same name

    m = smoke_cfg.models[f"{activation}_pgdat"]
    m = type(m)(**{**m.__dict__, "train": type(m.train)(**{**m.train.__dict__, "epochs": 1})})
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    emulated = activation == "relu"  # one case each: a CPU without native bf16 is warned, one with it is not
    monkeypatch.setattr(fit_module, "native_bf16", lambda: not emulated)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit(model, splits, m.train, device=torch.device("cpu"), seed=0, progress=False,
                  compute=ComputeConfig(amp="bf16", channels_last=True))
    said = [w for w in caught if issubclass(w.category, RuntimeWarning) and "compute.amp" in str(w.message)]
    assert len(said) == int(emulated) and (not said or "native bfloat16" in str(said[0].message))
    assert np.isfinite(res.history[0]["train_loss"]) and 0 <= res.history[0]["val_acc"] <= 1
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    assert model(splits.x_val[:4]).dtype == torch.float32  # evaluation: float32, contiguous


def test_lwta_competes_in_float32_under_autocast():
    from lwta_utils.defenses.lwta import LWTA

    layer = LWTA(8, "conv")
    h = torch.randn(2, 8, 4, 4)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        hb = h.to(torch.bfloat16).contiguous(memory_format=memory_format)
        torch.manual_seed(0)
        y = layer(hb)
        torch.manual_seed(0)
        ref = layer(hb.float())
        assert y.dtype == torch.bfloat16 and y.shape == h.shape
        assert torch.equal(y, ref.to(torch.bfloat16))


def test_torch_compile_option_trains(smoke_cfg, splits):
    m = smoke_cfg.models["relu_std"]
    t = type(m.train)(**{**m.train.__dict__, "epochs": 1})
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = build_model(m, splits.info)
        results.append(fit(model, splits, t, device=torch.device("cpu"), seed=0, progress=False,
                           compute=ComputeConfig(compile=compile_)))
    # the same computation, fused: the same loss up to float rounding
    assert results[1].history[0]["train_loss"] == pytest.approx(results[0].history[0]["train_loss"], rel=1e-3)


def test_amp_is_part_of_the_configuration_hash_and_the_other_options_are_not():
    base = lu.load_config("smoke")
    fast = lu.load_config("smoke", overrides={"compute.channels_last": True, "compute.compile": True,
                                              "compute.state_every_steps": 5})
    amp = lu.load_config("smoke", overrides={"compute.amp": "bf16"})
    assert base.model_hash("relu_std") == fast.model_hash("relu_std") != amp.model_hash("relu_std")
    with pytest.raises(ConfigError, match="'compute.amp' = 'fp8'"):
        lu.load_config("smoke", overrides={"compute.amp": "fp8"})


# -- torch.distributed ---------------------------------------------------------------------------------

DDP_SETS = ["models.relu_std.train.optimizer=sgd", "models.relu_std.train.lr=0.05", "models.relu_std.train.epochs=2",
            "models.lwta_pgdat.train.epochs=1", "data.n_train=302", "num_threads=1",
            "eval.headline_eps=0.1",
            "eval.attacks=[{name: fgsm, eps: [0.1]}, {name: pgd_linf, eps: [0.1], steps: 5, step_size: 0.05, "
            "random_start: false}, {id: pgd_prefix, name: pgd_linf, eps: [0.2], steps: 5, step_size: 0.05, "
            "random_start: false, n_examples: 31}, {id: pgd_casc, name: pgd_linf, eps: [0.1], steps: 3, "
            "step_size: 0.05, random_start: false}, {id: fgsm_casc, name: fgsm, eps: [0.1]}]",
            "eval.cascade=[fgsm_casc, pgd_casc]"]


def test_two_cpu_processes_match_one(tmp_path):
    """torchrun with 2 gloo processes trains the same weights as one process (within DDP_TOLERANCE) and
    its sharded evaluation gives the same records; a stochastic PGD-AT model trains with identical replicas."""
    one, two = tmp_path / "one", tmp_path / "two"
    for out, tr in ((one, False), (two, True)):
        proc = launch("train", "--profile", "smoke", "--out", str(out), "--models", "relu_std", "lwta_pgdat",
                      "--set", *DDP_SETS, torchrun=tr)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(one / "models" / "relu_std.pt"), weights(two / "models" / "relu_std.pt")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < DDP_TOLERANCE, diff
    h1, h2 = (json.loads((o / "results" / "train_relu_std.json").read_text()) for o in (one, two))
    assert h2["processes"] == 2 and h1["processes"] == 1
    for r1, r2 in zip(h1["history"], h2["history"]):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-5)
        assert r1["val_acc"] == pytest.approx(r2["val_acc"], abs=1e-6)
    assert (two / "models" / "lwta_pgdat.pt").is_file()  # fit checks the replicas stayed identical
    # sharded evaluation of the same checkpoint: records equal to the single-process ones
    (two / "models" / "relu_std.pt").write_bytes((one / "models" / "relu_std.pt").read_bytes())
    for out, tr in ((one, False), (two, True)):
        proc = launch("evaluate", "--profile", "smoke", "--out", str(out), "--models", "relu_std",
                      "--set", *DDP_SETS, torchrun=tr)
        assert proc.returncode == 0, proc.stderr[-3000:]
    r1, r2 = (json.loads((o / "results" / "eval_relu_std.json").read_text())["records"] for o in (one, two))
    assert [(r["attack"], r["eps"], r["n_examples"], r["n_correct"]) for r in r1] == \
        [(r["attack"], r["eps"], r["n_examples"], r["n_correct"]) for r in r2]
    # an odd prefix of the 50 evaluation digits: shards of 16 and 15
    assert r1[-1]["attack"] == "worst_case" and r1[3]["attack"] == "pgd_prefix" and r1[3]["n_examples"] == 31
    steps = [(r["attack"], r["n_attacked"], r["attack_params"]["n_fooled"]) for r in r1 if r["cascade_step"]]
    assert steps == [(r["attack"], r["n_attacked"], r["attack_params"]["n_fooled"]) for r in r2 if r["cascade_step"]]
    assert [a for a, _, _ in steps] == ["fgsm_casc", "pgd_casc"]  # the cascade, sharded and merged
    c1, c2 = (np.load(o / "results" / "correct_relu_std.npz") for o in (one, two))
    assert all(np.array_equal(c1[k], c2[k]) for k in c1.files)


def test_launched_processes_share_the_cores_this_process_may_use(monkeypatch):
    from lwta_utils.pipeline import launch as launch_module

    monkeypatch.setattr(launch_module, "usable_cores", lambda: 6)  # e.g. a CPU affinity of 6 of 64 cores
    for var in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert launch_module.threads_per_process(0) == 6 and launch_module.threads_per_process(3) == 3
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert launch_module.threads_per_process(0) == 1  # 6 cores, 4 processes on this node: 1 each
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launch_module.threads_per_process(0) == 3


def test_launch_rejects_bad_arguments_before_any_work(tmp_path):
    for args, needle in ((["--models", "nope"], "'--models' = 'nope'"), (["--stage", "x"], "'--stage' = 'x'"),
                         (["--set", "compute.amp=fp8"], "'compute.amp' = 'fp8'")):
        proc = launch("train", "--profile", "smoke", "--out", str(tmp_path / "o"), *args)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


# -- resume --------------------------------------------------------------------------------------------

RESUME_SETS = ["models.lwta_pgdat.train.epochs=2", "data.n_train=256", "num_threads=1",
               "compute.deterministic=true", "compute.state_every_steps=2"]


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    """Deterministic mode on the CPU: a stochastic LWTA model under PGD-AT, killed (SIGKILL) while it
    trains, restarted from its last saved state, ends with bit-identical weights and history."""
    args = ["train", "--profile", "smoke", "--models", "lwta_pgdat", "--set", *RESUME_SETS]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert launch(*args, "--out", str(whole)).returncode == 0
    state = cut / "models" / "lwta_pgdat.state.pt"
    proc = subprocess.Popen([PY, "-m", "lwta_utils.pipeline.launch", *args, "--out", str(cut)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (cut / "models" / "lwta_pgdat.pt").exists(), "killed too late"
    saved = torch.load(state, map_location="cpu", weights_only=False)
    assert (saved["epoch"], saved["step"]) < (2, 0)
    resumed = launch(*args, "--out", str(cut))
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout + resumed.stderr
    a, b = weights(whole / "models" / "lwta_pgdat.pt"), weights(cut / "models" / "lwta_pgdat.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    h1, h2 = (json.loads((o / "results" / "train_lwta_pgdat.json").read_text())["history"] for o in (whole, cut))
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert not state.exists()


def test_a_state_of_another_configuration_is_not_resumed(tmp_path, smoke_cfg, splits):
    m = smoke_cfg.models["relu_std"]
    t = type(m.train)(**{**m.train.__dict__, "epochs": 2})
    path = tmp_path / "s.pt"
    model = build_model(m, splits.info)
    fit(model, splits, t, device=torch.device("cpu"), seed=0, progress=False, state_path=path, state_key="abc",
        compute=ComputeConfig(state_every_steps=3))
    assert load_train_state(path, "abc")["epoch"] == 1  # the state of the epoch end before the last
    assert load_train_state(path, "other") is None
    path.write_bytes(path.read_bytes()[:50])
    assert load_train_state(path, "abc") is None  # unreadable: started again, with a note
