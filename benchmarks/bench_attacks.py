"""Attack speed, measured side by side in one run: our PGD against foolbox's and torchattacks', and
EOT batched against looped.

    python benchmarks/bench_attacks.py [--device cpu|cuda|all] [--reps 10] [--threads 0] [--batch 128]
        [--steps 20] [--eps 0.3] [--step-size 0.01] [--eot 20] [--json results/bench_attacks.json]

1. PGD (the target: ours at most 0.8x torchattacks' time, the same steps, the same numbers). On the
   MNIST CNN (batch 128, model in eval mode) with ReLU and with LWTA, one Linf PGD call (eps 0.3,
   step 0.01, 20 steps, random start, one restart) of ``lwta_utils.attacks.pgd_linf`` ('ours', as
   the evaluation runs it: through ``run_attack`` (parameter gradients off) with the model in the
   channels-last format of ``eval.channels_last``, returning the last iterate like the others:
   the same steps), foolbox's ``LinfPGD`` and torchattacks' ``PGD`` on the same model and batch.
   The labels are the model's own predictions (every input starts classified correctly, as in an
   evaluation); the accuracy each attack leaves is printed (the same numbers: equal within the
   random starts' noise), and 'ours, best iterate + early exit' (the evaluation's default, which
   stops on every fooled input) beside them, with its own ratio to each library ('ours (the
   evaluation's) / torchattacks': the same steps at most, the same accuracy left on the ReLU CNN).
2. EOT (the target: batched at least 2x faster than looped). On the LWTA CNN: one call of PGD-20
   with EOT 20 whose draws are stacked along the batch (one pass for several draws) against the
   same PGD with one pass per draw, at batch 128, 32 and 8 (the later attacks of a cascade run on
   the few inputs still robust). A stacked pass holds at most ``core.runtime.max_pass`` images
   (128 on a CPU, where larger passes cost more per image; 512 on a GPU).

Implementations run interleaved, each repetition timing every one once; a ratio is the median over
repetitions of (one's time / the other's in the same repetition), with the quartiles of those
paired ratios; the ratio of the medians is printed beside it. A library that fails to import is
reported and skipped.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mnist_models, paired_ratio, parse_args, provenance, ratio_spread  # noqa: E402

from lwta_utils.attacks import run_attack  # noqa: E402
from lwta_utils.core.modes import memory_format  # noqa: E402
from lwta_utils.core.switches import Switchable  # noqa: E402
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"relu": ("relu", {}), "lwta": ("lwta", {})}
LABELS = {"relu": "ReLU", "lwta": "LWTA"}


def options(p) -> None:
    p.add_argument("--steps", type=int, default=20, help="PGD steps")
    p.add_argument("--eps", type=float, default=0.3, help="Linf radius")
    p.add_argument("--step-size", type=float, default=0.01, help="PGD step size")
    p.add_argument("--eot", type=int, default=20, help="EOT samples of the batched-versus-looped case")


EOT_BATCHES = (128, 32, 8)  # a full batch; the few robust digits of a cascade's later attacks


def eot_batches(a) -> list[int]:
    """The EOT case's batches, none larger than ``--batch``."""
    return sorted({min(b, a.batch) for b in EOT_BATCHES}, reverse=True)


EVAL_PGD = "ours, best iterate + early exit"  # the evaluation's PGD (keep 'best'): same steps, stops on fooled inputs


def attacks(model, eps: float, step_size: float, steps: int, device, skipped: dict) -> dict:
    """Name -> (x, y) -> x_adv for ours (last iterate, as the libraries; and best + early exit) and each
    library that imports."""
    def ours(keep):
        def run(x, y):
            with memory_format(model, True):
                return run_attack("pgd_linf", model, x, y, eps=eps, step_size=step_size, steps=steps,
                                  random_start=True, restarts=1, keep=keep, generator=torch.Generator().manual_seed(0))
        return run

    out = {"ours": ours("last"), EVAL_PGD: ours("best")}
    try:
        import foolbox
        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=device)
        fb = foolbox.attacks.LinfPGD(abs_stepsize=step_size, steps=steps, random_start=True)
        out["foolbox"] = lambda x, y: fb(fmodel, x, y, epsilons=eps)[0]
    except Exception as e:  # noqa: BLE001 - any import or set-up failure means: skip it
        skipped["foolbox"] = f"{type(e).__name__}: {e}"
    try:
        import torchattacks
        ta = torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=True)
        out["torchattacks"] = lambda x, y: ta(x, y)
    except Exception as e:  # noqa: BLE001
        skipped["torchattacks"] = f"{type(e).__name__}: {e}"
    return out


def check(name: str, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    """The attack's output stays in the eps-ball around x and in [0, 1]."""
    dist = (x_adv - x).abs().max().item()
    assert x_adv.shape == x.shape, (name, tuple(x_adv.shape))
    assert dist <= eps + 1e-6, f"{name}: |x_adv - x|_inf = {dist} > eps {eps}"
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1, f"{name}: pixels outside [0, 1]"


def bench(fns: dict, x, y, reps: int, device, ref: str = "ours", score=None) -> tuple[dict, dict]:
    """Per implementation: median call time, paired ratio to ``ref`` with its quartiles, ratio of
    medians, spread, and (``score(x_adv)``) the accuracy it leaves; the raw times."""
    def call(fn):
        x_adv = fn(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return x_adv

    scores = {}
    for k, fn in fns.items():  # the first call doubles as the warm-up (and compiles what compiles)
        x_adv = call(fn)
        if score is not None:
            scores[k] = score(x_adv)
    times = {k: [] for k in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(reps):
        shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            call(fns[k])
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"median_ms": 1000 * med[k], f"ratio_to_{ref}": paired_ratio(times, k, ref),
                f"ratio_quartiles_to_{ref}": ratio_spread(times, k, ref), "ratio_of_medians": med[k] / med[ref],
                "spread_ms": [1000 * min(v), 1000 * max(v)], **({"accuracy": scores[k]} if k in scores else {})}
            for k, v in times.items()}, times


def pgd_case(model, x, a, dev, skipped) -> dict:
    """Ours against the libraries on one model; labels = the model's own predictions."""
    with torch.no_grad():
        y = model(x).argmax(1)
    fns = attacks(model, a.eps, a.step_size, a.steps, dev, skipped)
    for k, fn in fns.items():
        check(k, fn(x, y), x, a.eps)

    def score(x_adv):
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).float().mean())

    res, times = bench(fns, x, y, a.reps, dev, score=score)
    for k, r in res.items():
        lo, hi = r["ratio_quartiles_to_ours"]
        print(f"  {k:34s} {r['median_ms']:9.1f} ms   x{r['ratio_to_ours']:.2f} ours [{lo:.2f}, {hi:.2f}] "
              f"(ratio of medians {r['ratio_of_medians']:.2f}); accuracy left {100 * r['accuracy']:.1f}%")
    res["ratios"] = {}
    for lib in ("foolbox", "torchattacks"):
        if lib in fns:
            for mine, name in (("ours", "ours"), (EVAL_PGD, "ours (the evaluation's)")):
                res["ratios"][f"{name} / {lib}"] = paired_ratio(times, mine, lib)
                lo, hi = ratio_spread(times, mine, lib)
                res["ratios"][f"{name} / {lib} quartiles"] = [lo, hi]
                print(f"  {name} / {lib}: {res['ratios'][f'{name} / {lib}']:.2f} [{lo:.2f}, {hi:.2f}]")
        else:
            print(f"  {lib}: skipped ({skipped[lib]})")
    return res


def eot_case(model, a, dev, batch: int) -> dict:
    """PGD-20 with EOT on a stochastic model: draws stacked along the batch against one pass per draw."""
    torch.manual_seed(1)
    x = torch.rand(batch, 1, 28, 28, device=dev)
    with torch.no_grad():
        y = model(x).argmax(1)
    layers = [m for m in model.modules() if isinstance(m, Switchable)]

    def pgd(batched):
        def run(x, y):
            for m in layers:  # a layer that says its noise is not per example is attacked one draw a pass
                m.per_example_noise = batched
            try:
                with memory_format(model, True):
                    return run_attack("pgd_linf", model, x, y, eps=a.eps, step_size=a.step_size, steps=a.steps,
                                      eot_samples=a.eot, keep="last", generator=torch.Generator().manual_seed(0))
            finally:
                for m in layers:
                    del m.per_example_noise
        return run

    fns = {"looped": pgd(False), "batched": pgd(True)}
    res, times = bench(fns, x, y, max(3, a.reps // 3), dev, ref="looped")
    speed = 1 / paired_ratio(times, "batched", "looped")
    lo, hi = ratio_spread(times, "looped", "batched")
    res["batched_speedup"] = speed
    res["batched_speedup_quartiles"] = [lo, hi]
    print(f"  EOT {a.eot}, batch {batch}: looped {res['looped']['median_ms']:.0f} ms, batched "
          f"{res['batched']['median_ms']:.0f} ms: batched x{speed:.2f} faster [{lo:.2f}, {hi:.2f}]")
    return res


def main(argv=None) -> dict:
    a = parse_args(__doc__, argv, reps=10, extra=options, wrn=False)
    a.json = a.json or str(ROOT / "results" / "bench_attacks.json")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, PGD Linf eps {a.eps}, "
          f"step {a.step_size}, {a.steps} steps, random start, 1 restart; EOT case: {a.eot} samples")
    out = {"threads": torch.get_num_threads(), "results": {},
           "settings": {"eps": a.eps, "step_size": a.step_size, "steps": a.steps, "restarts": 1, "eot": a.eot,
                        "random_start": True, "batch": a.batch, "eot_batches": eot_batches(a), "reps": a.reps},
           "skipped": {}, **provenance()}
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        models, _ = mnist_models(MODELS, dev, batch=a.batch)
        torch.manual_seed(0)
        x = torch.rand(a.batch, 1, 28, 28, device=dev)
        for key, model in models.items():
            model.eval()
            print(f"\nPGD on the mnist_cnn with {LABELS[key]} on {dev_name}, batch {a.batch}, {a.reps} interleaved "
                  f"repetitions (median ms per attack call):")
            out["results"][f"mnist_cnn_{key}/{dev_name}"] = pgd_case(model, x, a, dev, out["skipped"])
        print(f"\nEOT on the mnist_cnn with LWTA on {dev_name}:")
        out["results"][f"eot/{dev_name}"] = {f"batch_{b}": eot_case(models["lwta"].eval(), a, dev, b)
                                             for b in eot_batches(a)}
    print("\ntargets: ours / torchattacks <= 0.8 on the ReLU CNN; EOT batched >= 2x faster than looped")
    for dev_name in a.devices:
        ratios = out["results"][f"mnist_cnn_relu/{dev_name}"]["ratios"]
        r, r_eval = ratios.get("ours / torchattacks"), ratios.get("ours (the evaluation's) / torchattacks")
        e = {b: out["results"][f"eot/{dev_name}"][f"batch_{b}"]["batched_speedup"] for b in eot_batches(a)}
        print(f"  {dev_name}: ours / torchattacks {r if r is None else round(r, 2)} (last iterate, every step), "
              f"{r_eval if r_eval is None else round(r_eval, 2)} (the evaluation's: best iterate + early exit); "
              f"EOT batched speed-up " + ", ".join(f"{v:.2f} (batch {b})" for b, v in e.items()))
    write_versioned(a.json, "benchmark", out)
    return out


if __name__ == "__main__":
    main()
