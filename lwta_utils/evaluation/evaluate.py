"""Accuracy of one model, clean and under every attack that applies, as records with intervals.

``evaluate_model`` runs the attacks of a profile on a model (in eval mode) and returns the records,
the per-example correctness in every draw and the kept examples; ``merge_shards`` rebuilds one
evaluation from the shards of a data-parallel run; ``worst_case_record`` combines the attacks per
example.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lwta_utils.attacks.gradients import GRADIENT_SWITCHES
from lwta_utils.attacks.registry import attack_params, attack_spec, check_inputs, run_attack
from lwta_utils.config.schema import APPLIES_TO, AttackConfig
from lwta_utils.core.distributed import interleave
from lwta_utils.core.errors import bad, check_range
from lwta_utils.core.modes import eval_mode
from lwta_utils.core.switches import available_switches, is_stochastic
from lwta_utils.evaluation.records import Record, make_draw_record
from lwta_utils.models.inference import draw_logits


def draw_summary(pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy over the draws of (draws, N) predictions: mean, sd and worst of draws (the share of
    inputs classified correctly in every draw), and the share of inputs whose prediction changes."""
    correct = (pred == y).float()
    per_draw = correct.mean(1).numpy()
    return {"acc_mean": float(per_draw.mean()), "acc_sd": float(per_draw.std(ddof=1)),
            "acc_min": float(per_draw.min()), "acc_max": float(per_draw.max()),
            "acc_worst_of_draws": float(correct.min(0).values.mean()),
            "share_changing": float((pred != pred[0]).any(0).float().mean())}


def mean_true_class_probs(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """True-class probability per example, averaged over the draws of (draws, N, classes) logits."""
    return logits.softmax(2).mean(0).gather(1, y.view(-1, 1)).squeeze(1).numpy()


def attack_batched(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                   generator: torch.Generator | None = None, **params) -> torch.Tensor:
    """Run attack ``name`` over ``x`` in batches on the model's device; returns x_adv on the CPU."""
    dev = next(model.parameters()).device
    if "generator" in attack_params(name, {"generator": None}):
        params["generator"] = generator
    out = [run_attack(name, model, x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev), **params).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def applies(atk, model: nn.Module, activation: str, name: str | None = None) -> bool:
    """Whether attack config ``atk`` runs on ``model`` (the profile's ``name``): its ``applies_to``
    and ``models`` admit it, and the model has the switches its gradient mode sets (a noise-free
    gradient only where there is noise)."""
    if atk.models and name not in atk.models:
        return False
    stochastic = is_stochastic(model)
    for target in (attack_spec(atk.name).applies_to, atk.applies_to):  # the attack's own, then the entry's
        if (target == "stochastic" and not stochastic) or (target == "deterministic" and stochastic):
            return False
        if target not in APPLIES_TO and target != activation:
            return False
    needed = GRADIENT_SWITCHES[atk.gradient]
    if not set(needed) <= set(available_switches(model)):
        return False
    return stochastic or "stochastic" not in needed


def run_params(atk, eps: float, stochastic: bool, seed: int) -> dict:
    """The parameters attack config ``atk`` runs with at ``eps`` (EOT only on stochastic models)."""
    base = {"eps": eps, "steps": atk.steps, "step_size": atk.step_size, "restarts": atk.restarts,
            "random_start": atk.random_start, "c": atk.c, "kappa": atk.kappa,
            "eot_samples": atk.eot_samples if stochastic else 1, "gradient": atk.gradient, "loss": atk.loss,
            "seed": seed, **atk.options}
    return attack_params(atk.name, base)


@dataclass
class ModelEvaluation:
    """What ``evaluate_model`` measured on one model.

    records: one per (attack, eps), clean first, the per-example worst case over attacks last.
    probs: per 'attack@eps', the true-class probability of every example (mean over draws).
    correct: per 'attack@eps', the (draws, n) correctness of every example in every draw.
    examples: the first examples kept for the report's grids: 'x' (clean pixels, float16),
        'y', 'pred_none@0' (the clean prediction of the first draw), and per kept
        'attack@eps' its 'adv_attack@eps' (adversarial pixels, float16) and 'pred_attack@eps'.
    """

    records: list[Record]
    probs: dict[str, np.ndarray]
    correct: dict[str, np.ndarray]
    examples: dict[str, np.ndarray] = field(default_factory=dict)

    def __iter__(self):  # records, probs = evaluate_model(...)
        return iter((self.records, self.probs))


def check_evaluate_inputs(model, x, y, attacks, batch_size, seed, draws, headline_eps, n_saved_examples) -> None:
    """Everything ``evaluate_model`` is given, checked before any work."""
    if not isinstance(model, nn.Module):
        raise bad("model", type(model).__name__, "must be a torch.nn.Module")
    check_inputs(x, y)
    if len(y) == 0:
        raise bad("x", "0 examples", "evaluate at least one example")
    if not isinstance(attacks, (list, tuple)) or not all(isinstance(a, AttackConfig) for a in attacks):
        raise bad("attacks", attacks if not isinstance(attacks, (list, tuple)) else [type(a).__name__ for a in attacks],
                  "must be a list of AttackConfig (cfg.eval.attacks)")
    check_range("batch_size", batch_size, 1, integer=True)
    check_range("seed", seed, 0, 2**63 - 1, integer=True)
    check_range("draws", draws, 1, 1000, integer=True)
    if headline_eps is not None:
        check_range("headline_eps", headline_eps, 0.0, 1.0)
    check_range("n_saved_examples", n_saved_examples, 0, integer=True)


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list, *, batch_size: int,
                   seed: int, meta: dict, draws: int = 1, surrogates: dict | None = None,
                   headline_eps: float | None = None, example_attacks: tuple = (), n_saved_examples: int = 0,
                   progress: bool = True) -> ModelEvaluation:
    """Clean accuracy, then every attack that applies to the model at every eps, in eval mode.

    ``attacks`` holds AttackConfig objects (an attack with ``n_examples`` runs on that
    prefix of ``x``); ``meta`` the record fields that describe the model (model, label,
    arch, activation, training, split, dataset, profile); ``surrogates`` maps the names of
    transfer attacks' surrogates to loaded models. A model with stochastic layers is
    evaluated with ``draws`` forward passes per input (each attack itself runs once, with
    its own draws). At ``headline_eps`` a last record, attack 'worst_case', counts an
    example as robust in draw d only if it is classified correctly, clean and after every
    Linf attack, in draw d (see :func:`worst_case_correct` for which attacks and examples).
    The first ``n_saved_examples`` adversarial examples of the attacks ``example_attacks`` (ids) at
    ``headline_eps`` are kept, with the first draw's predictions (``ModelEvaluation.examples``).
    """
    check_evaluate_inputs(model, x, y, attacks, batch_size, seed, draws, headline_eps, n_saved_examples)
    records, probs, correct, examples = [], {}, {}, {}
    k_saved = min(n_saved_examples, len(x))
    surrogates = surrogates or {}
    for atk in attacks:
        if attack_spec(atk.name).needs_surrogate and atk.surrogate not in surrogates:
            raise bad("surrogates", sorted(surrogates), f"attack '{atk.key}' needs the surrogate model "
                      f"'{atk.surrogate}' (pass surrogates={{'{atk.surrogate}': model}})")
    torch.manual_seed(seed)  # the stochastic layers' draws
    stochastic = is_stochastic(model)
    n_draws = draws if stochastic else 1
    with eval_mode(model):
        t0 = time.perf_counter()
        logits = draw_logits(model, x, n_draws, batch_size)
        correct["none@0"] = (logits.argmax(2) == y).numpy()
        records.append(make_draw_record(correct["none@0"], attack="none", attack_name="none", attack_label="clean",
                                        kind="clean", eps=0.0, steps=0, step_size=0.0, restarts=0, eot_samples=1,
                                        seed=seed, stochastic=stochastic, wall_time_s=time.perf_counter() - t0, **meta))
        probs["none@0"] = mean_true_class_probs(logits, y)
        if k_saved:
            examples.update({"x": x[:k_saved].half().numpy(), "y": y[:k_saved].numpy(),
                             "pred_none@0": logits[0, :k_saved].argmax(1).numpy()})
        for atk in attacks:
            if not applies(atk, model, meta.get("activation", ""), meta.get("model")):
                continue
            n = min(atk.n_examples or len(x), len(x))
            info = attack_spec(atk.name)
            for eps in atk.eps:
                params = run_params(atk, eps, stochastic, seed)
                recorded = info.run_params(model, params)
                if info.needs_surrogate:
                    params["surrogate"] = surrogates[atk.surrogate]
                    recorded["surrogate"] = atk.surrogate
                gen = torch.Generator().manual_seed(seed)  # the same start for every model (and transfer source)
                t0 = time.perf_counter()
                x_adv = attack_batched(model, atk.name, x[:n], y[:n], batch_size, gen, **params)
                logits = draw_logits(model, x_adv, n_draws, batch_size)
                wall = time.perf_counter() - t0
                key = f"{atk.key}@{eps:g}"
                correct[key] = (logits.argmax(2) == y[:n]).numpy()
                label = atk.label or info.label
                rec = make_draw_record(correct[key], attack=atk.key, attack_name=atk.name, attack_label=label,
                                       norm=params.get("norm", info.norm), kind=info.kind,
                                       gradient=params.get("gradient", "model"), eps=eps,
                                       steps=params.get("steps", 1), step_size=params.get("step_size", eps),
                                       restarts=params.get("restarts", 1), eot_samples=params.get("eot_samples", 1),
                                       seed=seed, stochastic=stochastic, wall_time_s=wall,
                                       attack_params=recorded, **meta)
                records.append(rec)
                probs[key] = mean_true_class_probs(logits, y[:n])
                if k_saved and atk.key in example_attacks and headline_eps is not None and np.isclose(eps, headline_eps):
                    k = min(k_saved, n)
                    examples[f"adv_{key}"] = x_adv[:k].half().numpy()
                    examples[f"pred_{key}"] = logits[0, :k].argmax(1).numpy()
                if progress:
                    spread = f" sd {rec.accuracy_sd:.3f} worst {rec.worst_accuracy:.3f}" if stochastic else ""
                    print(f"  {meta['model']:>16s} {atk.key:>16s} eps {eps:<5g} n {n:<4d} acc {rec.accuracy:.3f} "
                          f"[{rec.ci_low:.3f}, {rec.ci_high:.3f}]{spread} ({wall:.1f}s)", flush=True)
        if headline_eps is not None:
            worst, both = worst_case_record(records, correct, headline_eps, seed=seed, stochastic=stochastic,
                                            meta=meta)
            if worst is not None:
                records.append(worst)
                correct[f"worst_case@{headline_eps:g}"] = both
    return ModelEvaluation(records, probs, correct, examples)


DERIVED_FIELDS = ("n_correct", "n_examples", "accuracy", "ci_low", "ci_high", "draws", "accuracy_sd",
                  "worst_accuracy", "git_sha", "versions", "record_version")


def record_key(r: Record) -> str:
    """The key of a record's arrays in ``ModelEvaluation.correct`` / ``probs``."""
    return "none@0" if r.attack == "none" else f"{r.attack}@{r.eps:g}"


def merge_shards(parts: list[ModelEvaluation], *, headline_eps: float | None, seed: int,
                 meta: dict) -> ModelEvaluation:
    """One evaluation from the shards of ``lwta_utils.core.distributed.shard`` (part r holds examples
    r, r + W, ...): per-example arrays put back in order, every record recomputed from them (its
    wall time the slowest shard's), the worst case at ``headline_eps`` added; examples of part 0."""
    correct = {k: interleave([p.correct[k] for p in parts], axis=-1) for k in parts[0].correct}
    probs = {k: interleave([p.probs[k] for p in parts], axis=0) for k in parts[0].probs}
    records = []
    for i, r in enumerate(parts[0].records):
        kw = {k: v for k, v in dataclasses.asdict(r).items() if k not in DERIVED_FIELDS}
        kw["wall_time_s"] = max(p.records[i].wall_time_s for p in parts)
        records.append(make_draw_record(correct[record_key(r)], **kw))
    if headline_eps is not None:
        stochastic = bool(parts[0].records[0].stochastic)
        worst, both = worst_case_record(records, correct, headline_eps, seed=seed, stochastic=stochastic, meta=meta)
        if worst is not None:
            records.append(worst)
            correct[f"worst_case@{headline_eps:g}"] = both
    return ModelEvaluation(records, probs, correct, parts[0].examples)


def worst_case_correct(records: list[Record], correct: dict, eps: float) -> tuple[list[str], np.ndarray | None]:
    """The Linf attacks at ``eps`` that ran on at least the median number of examples of those
    attacks (so that one expensive attack on a short prefix does not shrink the comparison),
    and the (draws, n) AND of their correctness with the clean one on the first n examples,
    n the smallest of their subsets."""
    at = [r for r in records if r.attack != "none" and r.norm == "linf" and np.isclose(r.eps, eps)]
    if not at:
        return [], None
    floor = float(np.median([r.n_examples for r in at]))
    keys = [record_key(r) for r in at if r.n_examples >= floor]
    arrays = [correct["none@0"]] + [correct[k] for k in keys]
    n = min(a.shape[1] for a in arrays)
    both = np.ones_like(arrays[0][:, :n])
    for a in arrays:
        both &= a[:, :n]
    return keys, both


def worst_case_record(records: list[Record], correct: dict, eps: float, *, seed: int, stochastic: bool,
                      meta: dict) -> tuple[Record | None, np.ndarray | None]:
    """The 'worst_case' record at ``eps`` (None with fewer than two attacks) and its correctness array."""
    keys, both = worst_case_correct(records, correct, eps)
    if len(keys) < 2:
        return None, None
    ids = [k.rsplit("@", 1)[0] for k in keys]
    return make_draw_record(both, attack="worst_case", attack_name="worst_case",
                            attack_label=f"worst case over {len(ids)} attacks", kind="ensemble", eps=eps, steps=0,
                            step_size=0.0, restarts=0, eot_samples=1, seed=seed, stochastic=stochastic,
                            wall_time_s=0.0, attack_params={"attacks": ids, "n_examples": int(both.shape[1])},
                            **meta), both
