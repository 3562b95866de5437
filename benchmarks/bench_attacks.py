"""Our PGD versus foolbox's and torchattacks': time per attack call, measured side by side in one run.

    python benchmarks/bench_attacks.py [--device cpu|cuda|all] [--reps 10] [--threads 0]
        [--steps 20] [--eps 0.3] [--step-size 0.01] [--json results/bench_attacks.json]

On the MNIST CNN (batch 128 of random images in [0, 1] with random labels,
model in eval mode) with ReLU and with LWTA, times one Linf PGD call
(eps 0.3, step 0.01, 20 steps, random start, one restart) of
``lwta_utils.attacks.pgd_linf`` ('ours'), foolbox's ``LinfPGD`` (through
``foolbox.PyTorchModel(model, bounds=(0, 1))``, called as ``attack(fmodel,
x, y, epsilons=eps)``) and torchattacks' ``PGD``, all on the same model and
the same batch. Before timing, each attack's output is checked to stay
within eps of x and inside [0, 1]. Implementations run interleaved, each
repetition timing every one once (see ``common.py``); the printed ratio
'foolbox / ours' is the median over repetitions of (foolbox's time / ours
in the same repetition), > 1 meaning ours is faster; the ratio of the
medians is printed beside it. LWTA layers are left as they are (phase
'test', sampling on: the state in which the study attacks them). A library
that fails to import is reported and skipped.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mnist_models, paired_ratio, parse_args, provenance  # noqa: E402

from lwta_utils.attacks.pgd import pgd_linf  # noqa: E402
from lwta_utils.core.jsonfiles import write_versioned  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"relu": ("relu", {}), "lwta": ("lwta", {})}
LABELS = {"relu": "ReLU", "lwta": "LWTA"}


def options(p) -> None:
    p.add_argument("--steps", type=int, default=20, help="PGD steps")
    p.add_argument("--eps", type=float, default=0.3, help="Linf radius")
    p.add_argument("--step-size", type=float, default=0.01, help="PGD step size")


def attacks(model, eps: float, step_size: float, steps: int, device, skipped: dict) -> dict:
    """Name -> (x, y) -> x_adv for ours and each library that imports."""
    out = {"ours": lambda x, y: pgd_linf(model, x, y, eps=eps, step_size=step_size, steps=steps,
                                         random_start=True, restarts=1)}
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


def bench(fns: dict, x, y, reps: int, eps: float, device) -> tuple[dict, dict]:
    """Per implementation: median call time, paired ratio to ours, ratio of medians, spread; raw times."""
    def call(fn):
        x_adv = fn(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return x_adv

    for k, fn in fns.items():  # the check doubles as the warm-up (and LWTA's first-call compile)
        check(k, call(fn), x, eps)
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            call(fn)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"median_ms": 1000 * med[k], "ratio_to_ours": paired_ratio(times, k, "ours"),
                "ratio_of_medians": med[k] / med["ours"], "spread_ms": [1000 * min(v), 1000 * max(v)]}
            for k, v in times.items()}, times


def main(argv=None) -> dict:
    a = parse_args(__doc__, argv, reps=10, extra=options, wrn=False)
    a.json = a.json or str(ROOT / "results" / "bench_attacks.json")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, PGD Linf eps {a.eps}, "
          f"step {a.step_size}, {a.steps} steps, random start, 1 restart")
    out = {"threads": torch.get_num_threads(), "results": {},
           "settings": {"eps": a.eps, "step_size": a.step_size, "steps": a.steps, "restarts": 1,
                        "random_start": True, "batch": 128, "reps": a.reps},
           "skipped": {}, **provenance()}
    verdicts = []
    for dev_name in a.devices:
        dev = torch.device(dev_name)
        models, _ = mnist_models(MODELS, dev)
        torch.manual_seed(0)
        x = torch.rand(128, 1, 28, 28, device=dev)
        y = torch.randint(0, 10, (128,), device=dev)
        for key, model in models.items():
            model.eval()
            fns = attacks(model, a.eps, a.step_size, a.steps, dev, out["skipped"])
            res, times = bench(fns, x, y, a.reps, a.eps, dev)
            print(f"\nmnist_cnn with {LABELS[key]} on {dev_name}, batch 128, {a.reps} interleaved repetitions "
                  f"(median ms per attack call):")
            for k, r in res.items():
                print(f"  {k:24s} {r['median_ms']:9.1f} ms   x{r['ratio_to_ours']:.2f} ours "
                      f"(ratio of medians {r['ratio_of_medians']:.2f})")
            res["ratios"] = {}
            for lib in ("foolbox", "torchattacks"):
                if lib in fns:
                    res["ratios"][f"{lib} / ours"] = paired_ratio(times, lib, "ours")
                    print(f"  {lib} / ours: {res['ratios'][f'{lib} / ours']:.2f} "
                          f"(ratio of medians {res[lib]['ratio_of_medians']:.2f})")
                else:
                    print(f"  {lib}: skipped ({out['skipped'][lib]})")
            if res["ratios"]:
                fastest = min(res["ratios"], key=res["ratios"].get)
                lib = fastest.split(" /")[0]
                paired = sorted(t / o for t, o in zip(times[lib], times["ours"]))
                q1, q3 = paired[len(paired) // 4], paired[(3 * len(paired)) // 4]
                res["paired_ratio_iqr"] = [q1, q3]
                res["ours_at_least_as_fast"] = res["ratios"][fastest] >= 1
                verdict = ("yes" if res["ours_at_least_as_fast"] else
                           f"a tie within the repetitions' spread (paired ratios' IQR [{q1:.2f}, {q3:.2f}] holds 1)"
                           if q1 <= 1 <= q3 else "no")
                res["verdict"] = verdict
                verdicts.append(res["ours_at_least_as_fast"])
                print(f"  ours at least as fast as the fastest other ({lib}): {verdict}")
            out["results"][f"mnist_cnn_{key}/{dev_name}"] = res
    out["ours_at_least_as_fast"] = all(verdicts) if verdicts else None
    print("\nours at least as fast as the fastest of the others in every case: "
          + ("no other implementation ran" if not verdicts else "yes" if all(verdicts) else "no"))
    write_versioned(a.json, "benchmark", out)
    return out


if __name__ == "__main__":
    main()
