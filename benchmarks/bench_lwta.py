"""LWTA versus ReLU: training step and inference pass times, measured side by side in one run.

    python benchmarks/bench_lwta.py [--device cpu|cuda|all] [--reps 25] [--threads 0] [--batch 128]
        [--wrn-reps 3] [--no-wrn] [--compiled] [--bf16 auto|on|off] [--json results/bench_lwta.json]

For the MNIST CNN (batch 128, 28 x 28), in NCHW and in channels-last, times
one training step (zero_grad, forward, cross-entropy, backward; no optimiser
step; LWTA in phase 'train', temperature 0.67) and one inference pass
(forward under no_grad; phase 'test', temperature 0.01, sampling on) for:

- relu: the baseline;
- lwta: kernel 'auto', the main path (on the CPU: the numba kernel);
- lwta_eager: the fallback kernel (plain torch operations, no compiler of
  any kind; its random words still drawn by numba);
- lwta_eager_no_numba: the same where numba is not installed (words from
  NumPy's SFC64);
- lwta_generic: the softmax path used for any U;
- direct_gumbel_softmax: ``F.gumbel_softmax`` over blocks of 2 (a reference
  point: the straightforward implementation);
- lwta_compiled (with ``--compiled``): the torch.compile kernel (compiles
  for every shape and gradient mode: minutes on a small CPU);
- relu_bf16, lwta_bf16 (``--bf16``; ``auto``, the default: where bfloat16 is
  native, a CPU with avx512_bf16 or AMX, or CUDA): the same steps under bf16
  autocast (``compute.amp: bf16``); each case then prints bf16 / float32 for
  ReLU and for LWTA, paired per repetition.

The same for one WRN-34-10 block (160 -> 160 channels, 32 x 32, batch 128)
unless ``--no-wrn``. Variants run interleaved (``common.py``); each line
prints the median time, the median over repetitions of the paired ratio to
ReLU with its quartiles, and the ratio of the medians. The summary at the
end gives LWTA / ReLU of the main and fallback paths with the targets of
the issue (inference <= 1.2, training <= 1.1; fallback <= 1.4).
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired_ratio, parse_args, run_cases  # noqa: E402

from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402
from lwta_utils.core.provenance import cpu_description, native_bf16  # noqa: E402
from lwta_utils.defenses.lwta_kernels import numba_kernels, without_numba  # noqa: E402
from lwta_utils.defenses.registry import register_activation  # noqa: E402

TARGETS = {"lwta": {"inference": 1.2, "train": 1.1}, "lwta_eager": {"inference": 1.4, "train": 1.4},
           "lwta_eager_no_numba": {"inference": 1.4, "train": 1.4}}


class DirectGumbelLWTA(nn.Module):
    """The straightforward version: F.gumbel_softmax over blocks of 2 (reference only)."""

    def __init__(self, num_features: int, kind: str):
        super().__init__()
        self.U = 2

    def forward(self, h):
        hv = h.view(h.shape[0], h.shape[1] // self.U, self.U, *h.shape[2:])
        return (hv * F.gumbel_softmax(hv, tau=0.67, hard=False, dim=2)).view_as(h)


register_activation("lwta_direct_gumbel")(lambda n, kind: DirectGumbelLWTA(n, kind))


def bf16_autocast() -> contextlib.ExitStack:
    """bf16 autocast on the CPU and, where there is one, the GPU (what ``compute.amp: bf16`` does)."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    if torch.cuda.is_available():
        stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
    return stack


def bf16_ratios(times: dict) -> dict:
    """bf16 autocast / float32, paired per repetition, for ReLU and for LWTA."""
    return {f"{k} bf16 / float32": paired_ratio(times, f"{k}_bf16", k) for k in ("relu", "lwta")
            if f"{k}_bf16" in times}


def variants(compiled: bool, bf16: bool = False) -> dict:
    """name -> (activation, options[, context])."""
    v = {
        "relu": ("relu", {}),
        "lwta": ("lwta", {}),
        "lwta_eager": ("lwta", {"kernel": "eager"}),
        "lwta_eager_no_numba": ("lwta", {"kernel": "eager"}, without_numba),
        "lwta_generic": ("lwta", {"kernel": "generic"}),
        "direct_gumbel_softmax": ("lwta_direct_gumbel", {}),
    }
    if compiled:
        v["lwta_compiled"] = ("lwta", {"kernel": "compiled"})
    if bf16:
        v["relu_bf16"] = ("relu", {}, bf16_autocast)
        v["lwta_bf16"] = ("lwta", {}, bf16_autocast)
    return v


def summary(out: dict, device: str) -> dict:
    """LWTA / ReLU of the main and fallback paths on the MNIST CNN, per mode and memory format."""
    rows = {}
    for name in TARGETS:
        row = {}
        for mode in ("inference", "train"):
            for fmt in ("nchw", "channels_last"):
                key = f"mnist_cnn/{device}" if (mode, fmt) == ("train", "nchw") else f"mnist_cnn/{device}/{mode}/{fmt}"
                r = out["results"].get(key, {}).get(name)
                if r:
                    row[f"{mode}/{fmt}"] = {"ratio": r["ratio_to_relu"], "quartiles": r["ratio_quartiles_to_relu"],
                                            "target": TARGETS[name][mode]}
        rows[name] = row
    label = {"lwta": "main (auto)", "lwta_eager": "fallback (eager)", "lwta_eager_no_numba": "fallback, no numba"}
    print(f"\nLWTA / ReLU, MNIST CNN, batch {out['batch']}, {device} (median paired ratio [quartiles], target):")
    cols = [f"{m}/{f}" for m in ("inference", "train") for f in ("nchw", "channels_last")]
    print("  " + " " * 40 + "".join(f"{c:>26s}" for c in cols))
    for name, row in rows.items():
        cells = []
        for c in cols:
            r = row.get(c)
            cells.append(f"{r['ratio']:.2f} [{r['quartiles'][0]:.2f},{r['quartiles'][1]:.2f}] <={r['target']}"
                         if r else "-")
        print(f"  {name + ' = ' + label[name]:40s}" + "".join(f"{c:>26s}" for c in cells))
    return rows


def main(argv=None) -> dict:
    def options(p):
        p.add_argument("--compiled", action="store_true", help="also time the torch.compile kernel (slow to compile)")
        p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                       help="also time ReLU and LWTA under bf16 autocast (auto: where bfloat16 is native)")

    a = parse_args(__doc__, argv, extra=options)
    json_path, a.json = a.json, None
    # auto: where bfloat16 is native; the variants are shared by the devices of one run, so with the CPU
    # among them its support decides (run --device cuda alone to time the GPU's bf16 beside a CPU without it)
    with_bf16 = a.bf16 == "on" or (a.bf16 == "auto" and (native_bf16() if "cpu" in a.devices else True))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, numba kernel: "
          f"{numba_kernels() is not None}; CPU: {cpu_description()}; bf16 autocast timed: {with_bf16}")
    out = run_cases(a, variants(a.compiled, with_bf16), extra=bf16_ratios if with_bf16 else None,
                    modes=("inference", "train"), formats=("nchw", "channels_last"))
    out["bf16_timed"] = {dev: with_bf16 for dev in a.devices}
    out["summary"] = {dev: summary(out, dev) for dev in a.devices}
    if json_path:
        write_versioned(json_path, "benchmark", out)
    return out


if __name__ == "__main__":
    main()
