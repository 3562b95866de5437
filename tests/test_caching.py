"""Nothing is recomputed that a hash can cache: the probes of the defenses keep each model's rows
under the hash of what they depend on, like checkpoints and evaluation records."""

import lwta_utils as lu
from lwta_utils.analysis import lwta_probes
from lwta_utils.core.jsonfiles import read_versioned
from lwta_utils.pipeline import steps


def test_probes_measure_only_what_changed(cfg, splits, monkeypatch):
    cfg.models["lwta_std"].train.epochs = 1
    steps.train_stage(cfg, "lwta", splits, names=["lwta_std"])
    calls = []
    real = lwta_probes.load_trained
    monkeypatch.setattr(lwta_probes, "load_trained", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    first = lu.draw_statistics(cfg, splits, names=["lwta_std"], draws=3)
    assert calls == ["lwta_std"]
    again = lu.draw_statistics(cfg, splits, names=["lwta_std"], draws=3)
    assert calls == ["lwta_std"] and again.equals(first)  # reused: no model loaded, the same rows
    lu.draw_statistics(cfg, splits, names=["lwta_std"], draws=4)  # another setting: measured again
    assert calls == ["lwta_std", "lwta_std"]
    record = read_versioned(cfg.results_dir / "lwta_draws.json", "lwta_draws")
    assert set(record["hashes"]) == {"lwta_std"} and record["rows"][0]["draws"] == 4
    cfg.models["lwta_std"].train.epochs = 2  # another checkpoint: its rows are stale
    steps.train_stage(cfg, "lwta", splits, names=["lwta_std"])
    lu.draw_statistics(cfg, splits, names=["lwta_std"], draws=4)
    assert calls == ["lwta_std"] * 3
