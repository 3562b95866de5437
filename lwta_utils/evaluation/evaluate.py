"""Accuracy of one model, clean and under every attack that applies, as records with intervals.

``evaluate_model`` runs the attacks of a profile on a model (in eval mode) and returns the records,
the per-example correctness in every draw and the kept examples; ``merge_shards`` rebuilds one
evaluation from the shards of a data-parallel run. The adaptive cascade and the per-example
strongest perturbation are in ``evaluation.cascade``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lwta_utils.attacks.gradients import GRADIENT_SWITCHES
from lwta_utils.attacks.registry import attack_params, attack_spec, check_inputs
from lwta_utils.config.schema import APPLIES_TO, AttackConfig
from lwta_utils.core.distributed import interleave
from lwta_utils.core.errors import bad, check_range
from lwta_utils.core.modes import eval_mode
from lwta_utils.core.progress import status
from lwta_utils.core.switches import available_switches, is_stochastic, stream
from lwta_utils.evaluation.cascade import attack_in_batches, fold, look, run_cascade
from lwta_utils.evaluation.records import Record, make_draw_record, record_key


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


def run_params(atk, eps: float, stochastic: bool, seed: int, confirm_draws: int = 1) -> dict:
    """The parameters attack config ``atk`` runs with at ``eps`` (EOT and the confirmation draws of
    a success only on stochastic models)."""
    base = {"eps": eps, "steps": atk.steps, "step_size": atk.step_size, "restarts": atk.restarts,
            "random_start": atk.random_start, "c": atk.c, "kappa": atk.kappa,
            "eot_samples": atk.eot_samples if stochastic else 1, "gradient": atk.gradient, "loss": atk.loss,
            "confirm_draws": confirm_draws if stochastic else 1, "seed": seed, **atk.options}
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


def check_evaluate_inputs(model, x, y, attacks, batch_size, seed, draws, confirm_draws, headline_eps,
                          n_saved_examples) -> None:
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
    check_range("confirm_draws", confirm_draws, 1, 1000, integer=True)
    if headline_eps is not None:
        check_range("headline_eps", headline_eps, 0.0, 1.0)
    check_range("n_saved_examples", n_saved_examples, 0, integer=True)


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: list, *, batch_size: int,
                   seed: int, meta: dict, draws: int = 1, confirm_draws: int = 1, surrogates: dict | None = None,
                   headline_eps: float | None = None, cascade: tuple | list = (), full_cascade: bool = False,
                   example_attacks: tuple = (), n_saved_examples: int = 0,
                   progress: bool = True) -> ModelEvaluation:
    """Clean accuracy, then every attack that applies to the model, in eval mode.

    ``attacks`` holds AttackConfig objects. The ids in ``cascade`` form the adaptive cascade run at
    ``headline_eps`` (``evaluation.cascade``: each attack only on the examples still robust, the
    strongest perturbation kept per example; ``full_cascade``: every attack on every example);
    the other attacks run on their own at each of their eps (on the prefix of ``n_examples``).
    ``meta`` holds the record fields that describe the model (model, label, arch, activation,
    training, split, dataset, profile); ``surrogates`` maps the names of transfer attacks'
    surrogates to loaded models. A model with stochastic layers is evaluated with ``draws``
    forward passes per input, from a generator of the evaluation's own (never an attack's);
    an example is robust when it is classified correctly in every draw. At ``headline_eps`` a
    last record, attack 'worst_case', holds every example's strongest perturbation over the
    cascade (without a cascade: over every Linf attack run on its own on all the examples at that eps;
    attacks run on their own are otherwise outside the worst case). The first
    ``n_saved_examples`` adversarial examples of the attacks ``example_attacks`` (ids) at
    ``headline_eps`` are kept, with the first draw's predictions (``ModelEvaluation.examples``).
    """
    check_evaluate_inputs(model, x, y, attacks, batch_size, seed, draws, confirm_draws, headline_eps, n_saved_examples)
    records, probs, correct, examples = [], {}, {}, {}
    k_saved = min(n_saved_examples, len(x))
    surrogates = surrogates or {}
    keys = [a.key for a in attacks]
    for i, key in enumerate(cascade):
        if key not in keys:
            raise bad(f"cascade[{i}]", key, f"must be one of the attacks' ids: {', '.join(keys)}")
    if cascade and headline_eps is None:
        raise bad("headline_eps", None, "the cascade runs at the headline eps: give one")
    for atk in attacks:
        if attack_spec(atk.name).needs_surrogate and atk.surrogate not in surrogates:
            raise bad("surrogates", sorted(surrogates), f"attack '{atk.key}' needs the surrogate model "
                      f"'{atk.surrogate}' (pass surrogates={{'{atk.surrogate}': model}})")
    stochastic = is_stochastic(model)
    n_draws = draws if stochastic else 1
    say = (lambda text: print(text, flush=True)) if progress else (lambda text: None)

    def params_of(atk, eps):
        params = run_params(atk, eps, stochastic, seed, confirm_draws)
        recorded = attack_spec(atk.name).run_params(model, params)
        if attack_spec(atk.name).needs_surrogate:
            params["surrogate"] = surrogates[atk.surrogate]
            recorded["surrogate"] = atk.surrogate
        return params, recorded

    def record(c, atk, eps, params, recorded, wall, **extra):
        info = attack_spec(atk.name)
        return make_draw_record(c, attack=atk.key, attack_name=atk.name, attack_label=atk.label or info.label,
                                norm=params.get("norm", info.norm), kind=info.kind,
                                gradient=params.get("gradient", "model"), eps=eps, steps=params.get("steps", 1),
                                step_size=params.get("step_size", eps), restarts=params.get("restarts", 1),
                                eot_samples=params.get("eot_samples", 1), seed=seed, stochastic=stochastic,
                                wall_time_s=wall, attack_params=recorded, **extra, **meta)

    def report(rec):
        spread = f" (mean over draws {rec.accuracy:.3f} sd {rec.accuracy_sd:.3f})" if stochastic else ""
        step = f" after cascade step {rec.cascade_step}, {rec.n_attacked} attacked" if rec.cascade_step else ""
        say(f"  {meta['model']:>16s} {rec.attack:>16s} eps {rec.eps:<5g} n {rec.n_examples:<4d} robust "
            f"{rec.worst_accuracy:.3f} [{rec.robust_ci_low:.3f}, {rec.robust_ci_high:.3f}]{spread}{step} "
            f"({rec.wall_time_s:.1f}s)")

    with eval_mode(model):
        t0 = time.perf_counter()
        correct["none@0"], clean_loss, logits = look(model, x, y, n_draws, batch_size, stream(seed, "eval", "clean"))
        records.append(make_draw_record(correct["none@0"], attack="none", attack_name="none", attack_label="clean",
                                        kind="clean", eps=0.0, steps=0, step_size=0.0, restarts=0, eot_samples=1,
                                        seed=seed, stochastic=stochastic, wall_time_s=time.perf_counter() - t0, **meta))
        probs["none@0"] = mean_true_class_probs(logits, y)
        clean_logits = logits
        if k_saved:
            examples.update({"x": x[:k_saved].half().numpy(), "y": y[:k_saved].numpy(),
                             "pred_none@0": logits[0, :k_saved].argmax(1).numpy()})
        # the worst case at the headline eps: every example's strongest perturbation so far
        worst = {"x": x.clone(), "loss": clean_loss.copy(), "correct": correct["none@0"].copy(),
                 "logits": logits.clone(), "attacks": []}
        for atk in attacks:
            if atk.key in cascade or not applies(atk, model, meta.get("activation", ""), meta.get("model")):
                continue
            n = min(atk.n_examples or len(x), len(x))
            for eps in atk.eps:
                params, recorded = params_of(atk, eps)
                status(f"evaluating {meta['model']}: {atk.label or attack_spec(atk.name).label}, eps {eps:g}")
                t0 = time.perf_counter()
                x_adv = attack_in_batches(model, atk.name, x[:n], y[:n], batch_size,
                                          stream(seed, "attack", atk.key, eps), params, desc=atk.key)
                c, lossv, logits = look(model, x_adv, y[:n], n_draws, batch_size, stream(seed, "eval", atk.key, eps))
                key = f"{atk.key}@{eps:g}"
                correct[key] = c
                rec = record(c, atk, eps, params, recorded, time.perf_counter() - t0)
                records.append(rec)
                report(rec)
                probs[key] = mean_true_class_probs(logits, y[:n])
                at_headline = headline_eps is not None and np.isclose(eps, headline_eps)
                if k_saved and atk.key in example_attacks and at_headline:
                    k = min(k_saved, n)
                    examples[f"adv_{key}"] = x_adv[:k].half().numpy()
                    examples[f"pred_{key}"] = logits[0, :k].argmax(1).numpy()
                if at_headline and n == len(x) and rec.norm == "linf" and not cascade:  # no suite: every full attack
                    fold(np.arange(n), x_adv, c, lossv, logits, worst["x"], worst["loss"], worst["correct"],
                         worst["logits"])
                    worst["attacks"].append(atk.key)
        steps = [atk for key in cascade for atk in attacks
                 if atk.key == key and applies(atk, model, meta.get("activation", ""), meta.get("model"))]
        if steps:
            res = run_cascade(model, x, y, steps, eps=headline_eps, params_of=lambda a: params_of(a, headline_eps)[0],
                              draws=n_draws, batch_size=batch_size, seed=seed, full=full_cascade,
                              clean=(correct["none@0"], clean_loss, clean_logits), progress=lambda text: say(f"  {meta['model']:>16s} cascade: {text}"))
            for i, (atk, st) in enumerate(zip(steps, res.steps), 1):
                params, recorded = params_of(atk, headline_eps)
                recorded.update(n_fooled=st.n_fooled, forward_passes=st.forward, backward_passes=st.backward,
                                mode="full" if full_cascade else "cascade")
                key = f"{atk.key}@{headline_eps:g}"
                correct[key] = st.correct
                rec = record(st.correct, atk, headline_eps, params, recorded, st.wall_time_s, cascade_step=i,
                             n_attacked=st.n_attacked)
                records.append(rec)
                report(rec)
            fold(np.arange(len(x)), res.x_best, res.correct, F.cross_entropy(
                res.logits.flatten(0, 1), y.repeat(n_draws), reduction="none").view(n_draws, -1).mean(0).numpy(),
                res.logits, worst["x"], worst["loss"], worst["correct"], worst["logits"])
            worst["attacks"] = [a.key for a in steps] + worst["attacks"]
            worst["passes"] = {"forward": res.passes.forward, "backward": res.passes.backward}
        if headline_eps is not None and (steps or len(worst["attacks"]) >= 2):
            key = f"worst_case@{headline_eps:g}"
            correct[key] = worst["correct"]
            probs[key] = mean_true_class_probs(worst["logits"], y)
            records.append(make_draw_record(
                worst["correct"], attack="worst_case", attack_name="worst_case",
                attack_label=f"worst case over {len(worst['attacks'])} attacks", kind="ensemble", eps=headline_eps,
                steps=0, step_size=0.0, restarts=0, eot_samples=1, seed=seed, stochastic=stochastic, wall_time_s=0.0,
                attack_params={"attacks": worst["attacks"], "cascade": list(cascade), "n_examples": len(x),
                               **({"passes": worst["passes"]} if "passes" in worst else {})}, **meta))
            report(records[-1])
    return ModelEvaluation(records, probs, correct, examples)


DERIVED_FIELDS = ("n_correct", "n_examples", "accuracy", "ci_low", "ci_high", "draws", "accuracy_sd",
                  "worst_accuracy", "n_robust", "robust_ci_low", "robust_ci_high", "git_sha", "versions",
                  "record_version")


def merge_shards(parts: list[ModelEvaluation]) -> ModelEvaluation:
    """One evaluation from the shards of ``lwta_utils.core.distributed.shard`` (part r holds examples
    r, r + W, ...): per-example arrays put back in order and every record recomputed from them (its
    wall time the slowest shard's, the examples each step attacked and the passes counted summed);
    examples of part 0."""
    correct = {k: interleave([p.correct[k] for p in parts], axis=-1) for k in parts[0].correct}
    probs = {k: interleave([p.probs[k] for p in parts], axis=0) for k in parts[0].probs}
    records = []
    for i, r in enumerate(parts[0].records):
        kw = {k: v for k, v in dataclasses.asdict(r).items() if k not in DERIVED_FIELDS}
        kw["wall_time_s"] = max(p.records[i].wall_time_s for p in parts)
        kw["n_attacked"] = sum(p.records[i].n_attacked for p in parts)
        kw["attack_params"] = {k: (sum(p.records[i].attack_params[k] for p in parts)
                                   if k in ("n_fooled", "forward_passes", "backward_passes", "n_examples") else v)
                               for k, v in r.attack_params.items()}
        records.append(make_draw_record(correct[record_key(r)], **kw))
    return ModelEvaluation(records, probs, correct, parts[0].examples)
