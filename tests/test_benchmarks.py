"""The benchmark scripts run and print their ratios (their figures are checked by reading them, not here)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BENCHMARKS = {
    "bench_lwta.py": ("relu", "lwta", "lwta_eager", "lwta_generic", "direct_gumbel_softmax", "relu_bf16", "lwta_bf16",
                      "relu bf16 / float32", "lwta bf16 / float32"),  # --bf16 on: whatever the CPU
    "bench_kwta.py": ("relu", "kwta", "kwta_topk", "kwta_scatter", "kwta_official",
                      "official / auto (x faster)"),
    "bench_attacks.py": ("ours", "foolbox", "torchattacks", "ours / foolbox", "ours / torchattacks", "EOT 3, batch 16",
                         "EOT 3, batch 8"),
    "bench_defenses.py": ("relu_std", "lwta_std", "kwta_std", "pni_pgdat", "wca", "sparta_pgdat",
                          "kwta_official_kernel"),
    "bench_training.py": ("relu", "relu_grads_on", "lwta", "lwta_grads_on", "relu: grads off / on",
                          "lwta: grads off / on"),
    "bench_paper.py": ("relu_fp32", "relu_bf16_cl", "lwta_fp32", "lwta_bf16_cl", "relu: ",
                       "full recipe, lwta_bf16_cl"),  # --bf16 on: every variant, whatever the CPU
}
# Small batches: these tests check that each script runs and prints its ratios, not the ratios (measured at 128)
ARGS = {"bench_lwta.py": ["--no-wrn", "--bf16", "on", "--batch", "16"], "bench_kwta.py": ["--no-wrn", "--batch", "16"],
        "bench_defenses.py": ["--profile", "smoke", "--batch", "16"],
        "bench_attacks.py": ["--steps", "3", "--eot", "3", "--batch", "16"],
        "bench_training.py": ["--steps", "2", "--batch", "8"],
        "bench_paper.py": ["--batch", "2", "--width", "1", "--attack-steps", "1", "--bf16", "on"]}


@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_prints_its_ratios(tmp_path, script):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--device", "cpu",
                           "--reps", "1", "--json", str(out)] + ARGS.get(script, ["--no-wrn"]),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in BENCHMARKS[script]:
        assert f"  {name}" in proc.stdout, name
    assert "x1." in proc.stdout and "ReLU" in proc.stdout and out.is_file()
    args = ARGS.get(script, [])
    if "--batch" in args:
        record = json.loads(out.read_text())
        assert record.get("settings", record)["batch"] == int(args[args.index("--batch") + 1])


def test_bench_batch_must_be_positive(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kwta.py"), "--device", "cpu", "--batch", "0",
                           "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "'--batch' = 0" in proc.stderr and not (tmp_path / "b.json").exists()


def test_bench_paper_times_float32_only_without_bf16(tmp_path):
    """``--bf16 off`` (what ``auto`` does on a CPU without native bf16): the float32 variants only, said."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_paper.py"), "--device", "cpu", "--reps", "1",
                           "--json", str(out), *ARGS["bench_paper.py"][:-2], "--bf16", "off"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bf16 + channels-last not timed (--bf16 off)" in proc.stdout
    assert "  relu_fp32" in proc.stdout and "  lwta_fp32" in proc.stdout and "bf16_cl" not in proc.stdout
    record = json.loads(out.read_text())
    assert record["bf16_timed"] == {"cpu": False}
    assert set(record["results"]["wrn34_1_pgd_at/cpu"]) >= {"relu_fp32", "lwta_fp32"}
    assert not any("bf16" in k for k in record["results"]["wrn34_1_pgd_at/cpu"])
