"""The benchmark scripts run and print their ratios (their figures are checked by reading them, not here)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lwta_benchmark_prints_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_lwta.py"), "--device", "cpu",
                           "--reps", "1", "--no-wrn", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("relu", "lwta", "lwta_eager", "lwta_generic", "direct_gumbel_softmax"):
        assert f"  {name} " in proc.stdout
    assert "ReLU" in proc.stdout and out.is_file()


def test_kwta_benchmark_prints_both_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kwta.py"), "--device", "cpu",
                           "--reps", "1", "--no-wrn", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("relu", "kwta", "kwta_topk", "kwta_scatter", "kwta_official"):
        assert f"  {name} " in proc.stdout
    assert "official / auto (x faster)" in proc.stdout and "x1." in proc.stdout and out.is_file()
