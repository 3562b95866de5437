"""The output comparison that shows a change of code left behaviour unchanged."""
import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lwta_utils.core.errors import ConfigError
from lwta_utils.pipeline.compare import compare_outputs, main


def _outputs(root, acc=0.5, wall=1.0, sha="abc", weight=1.0, pixels=0.0):
    for d in ("models", "results", "figures"):
        (root / d).mkdir(parents=True, exist_ok=True)
    record = {"schema": "eval", "git_sha": sha, "created": f"2026-12-0{int(wall)}",
              "records": [{"attack": "pgd", "accuracy": acc, "wall_time_s": wall, "epoch_time_s": wall}]}
    (root / "results" / "eval_m.json").write_text(json.dumps(record))
    (root / "results" / "chain_timing.json").write_text(json.dumps({"total_s": wall}))
    np.savez(root / "results" / "correct_m.npz", correct=np.array([1, 0, 1]))
    torch.save({"model": {"w": torch.full((2,), weight)}, "created": str(wall)}, root / "models" / "m.pt")
    fig = plt.figure(figsize=(1, 1))
    fig.patch.set_facecolor((pixels, 0, 0))
    fig.savefig(root / "figures" / "f.png")
    plt.close(fig)


def test_same_numbers_agree_whatever_the_wall_times_dates_and_commits(tmp_path):
    _outputs(tmp_path / "a")
    _outputs(tmp_path / "b", wall=7.0, sha="def")
    assert compare_outputs(tmp_path / "a", tmp_path / "b") == []
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0


def test_every_kind_of_difference_is_named(tmp_path, capsys):
    _outputs(tmp_path / "a")
    _outputs(tmp_path / "b", acc=0.51, weight=2.0, pixels=1.0)
    np.savez(tmp_path / "b" / "results" / "correct_m.npz", correct=np.array([1, 1, 1]))
    (tmp_path / "b" / "results" / "extra.json").write_text("{}")
    diffs = compare_outputs(tmp_path / "a", tmp_path / "b")
    assert "results/eval_m.json.records[0].accuracy: 0.5, now 0.51" in diffs
    assert "results/correct_m.npz[correct]: 1 of 3 values differ" in diffs
    assert "models/m.pt[model.w]: 2 of 2 values differ" in diffs
    assert any(d.startswith("figures/f.png[pixels]") for d in diffs)
    assert "results/extra.json: only in the new output" in diffs
    assert len(diffs) == 5
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "5 difference(s)" in capsys.readouterr().out
    assert compare_outputs(tmp_path / "a", tmp_path / "b", folders=("figures",)) != []
    assert "records[0].accuracy" not in " ".join(compare_outputs(tmp_path / "a", tmp_path / "b",
                                                                  ignore=frozenset({"accuracy"})))


def test_a_missing_folder_is_a_clear_error(tmp_path):
    _outputs(tmp_path / "a")
    with pytest.raises(ConfigError, match="'new' = .*nowhere"):
        compare_outputs(tmp_path / "a", tmp_path / "nowhere")
