"""Checks of a configuration: types come from the schema, ranges and choices are checked here,
and names of registered entries (data sets, activations, models, attacks) against the registries
of ``lwta_utils.core.registry`` (filled by the layers that define the entries). Every check
raises a ConfigError naming the parameter, its value and what is allowed, before any work.
"""
from __future__ import annotations

import dataclasses

from lwta_utils.config.schema import (
    ADV_METHODS,
    AMP_MODES,
    APPLIES_TO,
    ATTACK_LABELS,
    ATTACK_LOSSES,
    AUGMENTS,
    GRADIENT_MODES,
    HEADS,
    LOSSES,
    MAX_GROUP_MODELS,
    MIXED_BRANCHES,
    OPTIMIZERS,
    PLACEMENTS,
    PNI_MODES,
    RESERVED_ATTACK_PARAMS,
    SCHEDULES,
    SELECT_METRICS,
    STAGES,
    TEST_ORDERS,
    WD_SCOPES,
    AdversarialConfig,
    AttackConfig,
    ComputeConfig,
    ReleasedConfig,
    StudyConfig,
    TrainConfig,
)
from lwta_utils.core.errors import bad, check_choice, check_range
from lwta_utils.core.registry import ACTIVATIONS, ATTACKS, DATASETS, MODELS


def validate(cfg: StudyConfig) -> None:
    """Range and registry checks; raises ConfigError on the first bad value."""
    check_range("seed", cfg.seed, 0, 2**32 - 1, integer=True)
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise bad("device", cfg.device, "choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    check_range("num_threads", cfg.num_threads, 0, integer=True)
    validate_compute("compute", cfg.compute)
    d = cfg.data
    DATASETS.lookup("data.name", d.name)
    check_range("data.n_train", d.n_train, 10, integer=True)
    check_range("data.n_val", d.n_val, 10, integer=True)
    check_range("data.n_test", d.n_test, 10, integer=True)
    check_range("data.split_seed", d.split_seed, 0, 2**32 - 1, integer=True)
    check_choice("data.test_order", d.test_order, TEST_ORDERS)
    if not cfg.models:
        raise bad("models", cfg.models, "the profile must define at least one model")
    for name, m in cfg.models.items():
        p = f"models.{name}"
        if not name.replace("_", "").isalnum():
            raise bad(p, name, "model names use letters, digits and '_' only")
        MODELS.lookup(f"{p}.arch", m.arch)
        ACTIVATIONS.lookup(f"{p}.activation", m.activation)
        options = ACTIVATIONS.options(f"{p}.activation_options", m.activation, m.activation_options)
        check_choice(f"{p}.stage", m.stage, STAGES)
        check_range(f"{p}.width", m.width, 1, 16, integer=True)
        check_range(f"{p}.widen_factor", m.widen_factor, 1, 20, integer=True)
        if m.ibp and m.activation != "lwta":
            raise bad(f"{p}.ibp", m.ibp, f"the IBP variant needs activation 'lwta' (got {m.activation!r})")
        if m.train.loss == "elbo" and m.activation != "lwta":
            raise bad(f"{p}.train.loss", "elbo", f"the ELBO needs KL terms: activation 'lwta' (got {m.activation!r})")
        check_choice(f"{p}.pni", m.pni, PNI_MODES)
        check_choice(f"{p}.head", m.head, HEADS)
        check_choice(f"{p}.activation_placement", m.activation_placement, PLACEMENTS)
        if m.pni != "none" and m.ibp:
            raise bad(f"{p}.pni", m.pni, "PNI and the IBP variant both rewrite the weight layers: use one")
        if m.pni in ("activation", "both") and m.arch != "mnist_cnn":
            raise bad(f"{p}.pni", m.pni, "activation noise sits at the Paris-Dauphine study's positions of the MNIST CNN only")
        if m.head != "wca" and m.head_options:
            raise bad(f"{p}.head_options", m.head_options, "only head 'wca' takes options")
        if m.train.loss == "wca" and m.head != "wca":
            raise bad(f"{p}.train.loss", "wca", f"the WCA loss needs head 'wca' (got {m.head!r})")
        if m.train.weight_decay_scope == "wca" and m.head != "wca":
            raise bad(f"{p}.train.weight_decay_scope", "wca", f"needs head 'wca' (got {m.head!r})")
        check_range(f"{p}.seed", m.seed, -1, 2**32 - 1, integer=True)
        if m.replicate_of:
            names = list(cfg.models)
            if m.replicate_of not in names or names.index(m.replicate_of) >= names.index(name):
                raise bad(f"{p}.replicate_of", m.replicate_of, "name a model defined earlier in the profile")
            src = cfg.models[m.replicate_of]
            if src.replicate_of:
                raise bad(f"{p}.replicate_of", m.replicate_of, f"name the original recipe ({src.replicate_of!r})")
            ignore = {"label", "seed", "replicate_of"}
            diff = [k for k in dataclasses.asdict(m) if k not in ignore
                    and dataclasses.asdict(m)[k] != dataclasses.asdict(src)[k]]
            if diff:
                raise bad(f"{p}.replicate_of", m.replicate_of, f"a replicate differs only in its seed (differs in {diff})")
            if cfg.model_seed(name) in [cfg.model_seed(r) for r in cfg.replicates(m.replicate_of) if r != name]:
                raise bad(f"{p}.seed", m.seed, "give each replicate its own seed")
        if m.init_from:
            names = list(cfg.models)
            if m.init_from not in names or names.index(m.init_from) >= names.index(name):
                raise bad(f"{p}.init_from", m.init_from,
                          "name a model defined earlier in the profile (it is trained first)")
            src = cfg.models[m.init_from]
            if STAGES.index(src.stage) > STAGES.index(m.stage):
                raise bad(f"{p}.init_from", m.init_from,
                          f"it is trained by a later notebook (stage {src.stage!r} after {m.stage!r})")
            if (src.arch, src.width, src.depth, src.widen_factor) != (m.arch, m.width, m.depth, m.widen_factor):
                raise bad(f"{p}.init_from", m.init_from, "must have the same architecture and size")
        gs = m.train.gamma_schedule
        if gs.start:
            if "gamma" not in options:
                raise bad(f"{p}.train.gamma_schedule.start", gs.start,
                          f"the gamma schedule needs an activation with a gamma (k-WTA), not {m.activation!r}")
            check_range(f"{p}.train.gamma_schedule.start", gs.start, options["gamma"], 1.0)
            check_range(f"{p}.train.gamma_schedule.step", gs.step, 1e-6, 1.0)
            check_range(f"{p}.train.gamma_schedule.every_epochs", gs.every_epochs, 1, integer=True)
        if m.arch == "wrn" and (m.depth - 4) % 6:
            raise bad(f"{p}.depth", m.depth, "WideResNet depth must be 6n+4 (e.g. 16, 28, 34)")
        t = m.train
        validate_train(f"{p}.train", t)
    e = cfg.eval
    check_range("eval.n_examples", e.n_examples, 1, d.n_test, integer=True)
    check_range("eval.batch_size", e.batch_size, 1, integer=True)
    check_range("eval.headline_eps", e.headline_eps, 0.0, 1.0)
    check_range("eval.draws", e.draws, 1, 1000, integer=True)
    check_range("eval.confirm_draws", e.confirm_draws, 1, 1000, integer=True)
    check_range("eval.n_saved_examples", e.n_saved_examples, 0, integer=True)  # clipped to n_examples
    check_range("eval.sanity.tolerance", e.sanity.tolerance, 0.0, 1.0)
    check_range("eval.sanity.large_eps_accuracy", e.sanity.large_eps_accuracy, 0.0, 1.0)
    check_range("eval.sanity.min_gradient_cosine", e.sanity.min_gradient_cosine, -1.0, 1.0)
    check_range("eval.sanity.max_zero_gradients", e.sanity.max_zero_gradients, 0.0, 1.0)
    check_range("eval.sanity.n_examples", e.sanity.n_examples, 1, integer=True)
    keys = [atk.key for atk in e.attacks]
    for i, atk in enumerate(e.attacks):
        validate_attack(f"eval.attacks[{i}]", atk, cfg)
        if atk.key in keys[:i]:
            raise bad(f"eval.attacks[{i}].id", atk.key, "ids must be unique: give each entry of the same attack an id")
    for i, key in enumerate(e.cascade):
        check_choice(f"eval.cascade[{i}]", key, keys)
        atk = e.attacks[keys.index(key)]
        if atk.eps != [e.headline_eps]:
            raise bad(f"eval.cascade[{i}]", key, f"a cascade attack runs at the headline eps only: give it "
                      f"eps [{e.headline_eps:g}] (it has {atk.eps})")
        if ATTACKS[atk.name].norm != "linf" or atk.options.get("norm", "linf") != "linf":
            raise bad(f"eval.cascade[{i}]", key, "the cascade is a Linf suite")
        if key in e.cascade[:i]:
            raise bad(f"eval.cascade[{i}]", key, "each attack once")
    if e.attacks and e.standard_attack not in keys:
        raise bad("eval.standard_attack", e.standard_attack, f"must be one of the attacks' ids: {', '.join(keys)}")
    validate_released("released", cfg.released, cfg)
    if cfg.report.reference:
        check_choice("report.reference", cfg.report.reference, cfg.models)
    for i, pair in enumerate(cfg.report.comparisons):
        if len(pair) != 2:
            raise bad(f"report.comparisons[{i}]", pair, "a pair [A, B] of model names")
        for j, name in enumerate(pair):
            check_choice(f"report.comparisons[{i}][{j}]", name, cfg.models)
    for group, names in cfg.report.groups.items():
        for j, name in enumerate(names):
            check_choice(f"report.groups.{group}[{j}]", name, cfg.models)
        if len(names) > MAX_GROUP_MODELS:
            raise bad(f"report.groups.{group}", f"{len(names)} models",
                      f"at most {MAX_GROUP_MODELS} (one colour each from the colour-blind palette): split the group")
    for j, name in enumerate(cfg.report.headline_models):
        check_choice(f"report.headline_models[{j}]", name, cfg.models)


def validate_released(p: str, r: ReleasedConfig, cfg: StudyConfig) -> None:
    """Checks of the released-checkpoint step's section (``ReleasedConfig``)."""
    for name in ("run", "fetch"):
        if not isinstance(getattr(r, name), bool):
            raise bad(f"{p}.{name}", getattr(r, name), "must be true or false")
    if not r.name.replace("_", "").isalnum():
        raise bad(f"{p}.name", r.name, "letters, digits and '_' only (it names results/eval_<name>.json)")
    if r.name in cfg.models:
        raise bad(f"{p}.name", r.name, "is a model of the profile; give the released checkpoint its own name")
    for name in ("root", "fetch_root", "checkpoint", "images"):
        if not getattr(r, name):
            raise bad(f"{p}.{name}", getattr(r, name), "give a path")
    for name in ("checkpoint_md5", "images_md5", "images_content_md5"):
        value = getattr(r, name)
        if len(value) != 32 or any(ch not in "0123456789abcdef" for ch in value):
            raise bad(f"{p}.{name}", value, "an md5 sum: 32 lower-case hex digits")
    if not r.checkpoint_url.startswith(("https://", "http://", "file://")):
        raise bad(f"{p}.checkpoint_url", r.checkpoint_url, "an https://, http:// or file:// URL")
    check_range(f"{p}.n_images", r.n_images, 1, 1000, integer=True)
    check_range(f"{p}.batch_size", r.batch_size, 1, integer=True)
    check_range(f"{p}.draws", r.draws, 2, 1000, integer=True)
    check_range(f"{p}.attack_draws", r.attack_draws, 1, 1000, integer=True)
    check_range(f"{p}.eps", r.eps, 0.0, 1.0)
    check_range(f"{p}.n_gradients", r.n_gradients, 1, r.n_images, integer=True)
    check_range(f"{p}.n_saved_examples", r.n_saved_examples, 0, r.n_images, integer=True)
    entries = [(f"{p}.authors_attack", r.authors_attack)] + [(f"{p}.attacks[{i}]", a) for i, a in enumerate(r.attacks)]
    keys: list[str] = []
    for q, atk in entries:
        if ATTACKS.lookup(f"{q}.name", atk.name).needs_surrogate:
            raise bad(f"{q}.name", atk.name, "the profile has no CIFAR-10 surrogate model: no transfer attack here")
        if atk.models:
            raise bad(f"{q}.models", atk.models, "the released checkpoint is not a model of the profile: leave empty")
        validate_attack(q, atk, cfg)
        check_range(f"{q}.n_examples", atk.n_examples, 0, r.n_images, integer=True)
        if atk.key in keys or atk.key == "none":
            raise bad(f"{q}.id", atk.key, "ids must be unique (and not 'none'): give each entry its own id")
        keys.append(atk.key)
    for i, key in enumerate(r.cascade):
        check_choice(f"{p}.cascade[{i}]", key, keys)
        atk = entries[keys.index(key)][1]
        if len(atk.eps) != 1 or abs(atk.eps[0] - r.eps) > 1e-9:
            raise bad(f"{p}.cascade[{i}]", key, f"a cascade attack runs at {p}.eps only: give it eps [{r.eps:g}] "
                      f"(it has {atk.eps})")
        if ATTACKS.lookup(f"{p}.cascade[{i}]", atk.name).norm != "linf" or atk.options.get("norm", "linf") != "linf":
            raise bad(f"{p}.cascade[{i}]", key, "the cascade is a Linf suite")
        if key in r.cascade[:i]:
            raise bad(f"{p}.cascade[{i}]", key, "each attack once")
    if not any(abs(e - r.eps) < 1e-9 for e in r.authors_attack.eps):
        raise bad(f"{p}.authors_attack.eps", r.authors_attack.eps, f"must include the threat model's eps {r.eps:g} "
                  f"({p}.eps); a profile that sets authors_attack gives it in full (a field left out takes "
                  f"AttackConfig's default, not the authors' setting)")
    for key, value in r.reported.items():  # ids the profile does not run are not shown
        check_range(f"{p}.reported.{key}", value, 0.0, 100.0)


def validate_attack(p: str, atk: AttackConfig, cfg: StudyConfig) -> None:
    """Checks of one attack entry: registry name, id, eps per its norm, ranges, the options
    and fields the attack takes, and a transfer attack's surrogate."""
    spec = ATTACKS.lookup(f"{p}.name", atk.name)
    if atk.id and not atk.id.replace("_", "").replace("-", "").isalnum():
        raise bad(f"{p}.id", atk.id, "ids use letters, digits, '_' and '-' only")
    if not atk.eps:
        raise bad(f"{p}.eps", atk.eps, "give at least one eps")
    linf = spec.norm == "linf" and atk.options.get("norm", "linf") == "linf"
    for j, eps in enumerate(atk.eps):
        check_range(f"{p}.eps[{j}]", eps, 0.0, 1.0 if linf else None)
    check_range(f"{p}.steps", atk.steps, 1, integer=True)
    check_range(f"{p}.step_size", atk.step_size, 0.0)
    check_range(f"{p}.restarts", atk.restarts, 1, integer=True)
    check_range(f"{p}.c", atk.c, 0.0)
    check_range(f"{p}.kappa", atk.kappa, 0.0)
    check_range(f"{p}.eot_samples", atk.eot_samples, 1, integer=True)
    check_choice(f"{p}.gradient", atk.gradient, GRADIENT_MODES)
    if atk.gradient not in spec.gradient_modes:
        raise bad(f"{p}.gradient", atk.gradient,
                  f"attack '{atk.name}' supports the gradient modes {', '.join(map(repr, spec.gradient_modes))}")
    check_choice(f"{p}.loss", atk.loss, ATTACK_LOSSES)
    check_choice(f"{p}.applies_to", atk.applies_to, APPLIES_TO + tuple(ACTIVATIONS))
    for j, name in enumerate(atk.models):
        check_choice(f"{p}.models[{j}]", name, cfg.models)
    check_range(f"{p}.n_examples", atk.n_examples, 0, integer=True)
    accepted = spec.params
    defaults = AttackConfig()
    for field_name in ("eot_samples", "loss"):
        given = getattr(atk, field_name)
        if given != getattr(defaults, field_name) and field_name not in accepted:
            raise bad(f"{p}.{field_name}", given, f"attack '{atk.name}' does not take it")
    if spec.needs_surrogate:
        check_choice(f"{p}.surrogate", atk.surrogate, cfg.models)
    elif atk.surrogate:
        raise bad(f"{p}.surrogate", atk.surrogate, "only transfer attacks (those crafted on a surrogate) take one")
    own = {f.name for f in dataclasses.fields(AttackConfig)}
    for k in atk.options:
        if k in own or k not in accepted or k in RESERVED_ATTACK_PARAMS:
            allowed = sorted(set(accepted) - own - set(RESERVED_ATTACK_PARAMS))
            raise bad(f"{p}.options.{k}", atk.options[k],
                      f"attack '{atk.name}' takes these options: {', '.join(allowed) or 'none'}")


def validate_train(p: str, t: TrainConfig) -> None:
    """Checks of one training configuration (``p`` names it in messages)."""
    if not isinstance(t, TrainConfig):
        raise bad(p, type(t).__name__, "must be a TrainConfig")
    check_range(f"{p}.epochs", t.epochs, 0, integer=True)
    check_range(f"{p}.batch_size", t.batch_size, 1, integer=True)
    check_choice(f"{p}.optimizer", t.optimizer, OPTIMIZERS)
    check_range(f"{p}.lr", t.lr, 0.0, 10.0)
    check_range(f"{p}.momentum", t.momentum, 0.0, 1.0)
    check_range(f"{p}.weight_decay", t.weight_decay, 0.0, 1.0)
    check_choice(f"{p}.schedule", t.schedule, SCHEDULES)
    for i, ms in enumerate(t.milestones):
        check_range(f"{p}.milestones[{i}]", ms, 0, integer=True)
    if t.schedule in ("multistep", "lwta") and not t.milestones:
        raise bad(f"{p}.milestones", t.milestones, f"schedule '{t.schedule}' needs milestones")
    check_range(f"{p}.lr_gamma", t.lr_gamma, 0.0, 1.0)
    check_range(f"{p}.plateau_epochs", t.plateau_epochs, 1, integer=True)
    if t.schedule == "plateau" and 0 < t.patience <= t.plateau_epochs:
        raise bad(f"{p}.patience", t.patience, f"schedule 'plateau' needs a patience above plateau_epochs "
                                               f"({t.plateau_epochs}) so that the lr is cut before training "
                                               f"stops, or 0 (all epochs)")
    check_choice(f"{p}.select_metric", t.select_metric, SELECT_METRICS)
    check_range(f"{p}.val_attack_steps", t.val_attack_steps, 1, integer=True)
    check_choice(f"{p}.augment", t.augment, AUGMENTS)
    check_range(f"{p}.max_shift", t.max_shift, 0, 8, integer=True)
    check_choice(f"{p}.loss", t.loss, LOSSES)
    check_choice(f"{p}.weight_decay_scope", t.weight_decay_scope, WD_SCOPES)
    check_range(f"{p}.label_smoothing", t.label_smoothing, 0.0, 0.99)
    validate_adversarial(f"{p}.adversarial", t.adversarial)
    if t.select_metric == "pgd" and t.adversarial.method == "none":
        raise bad(f"{p}.select_metric", "pgd", "'pgd' selection needs an adversarial.method")
    check_range(f"{p}.patience", t.patience, 0, integer=True)
    check_range(f"{p}.min_delta", t.min_delta, 0.0)
    check_range(f"{p}.kl_data_size", t.kl_data_size, 0, integer=True)
    check_range(f"{p}.kl_warmup_epochs", t.kl_warmup_epochs, 0, integer=True)
    elbo_only = {"select_metric": t.select_metric == "elbo", "kl_data_size": t.kl_data_size > 0,
                 "kl_warmup_epochs": t.kl_warmup_epochs > 0}
    for name, used in elbo_only.items():
        if used and t.loss != "elbo":
            raise bad(f"{p}.{name}", getattr(t, name), f"only the ELBO has a KL term (loss 'elbo', not {t.loss!r})")
    if t.kl_warmup_epochs and t.kl_warmup_epochs >= t.epochs:
        raise bad(f"{p}.kl_warmup_epochs", t.kl_warmup_epochs,
                  f"fewer than the {t.epochs} epochs: selection needs at least one epoch at the full KL weight")


def validate_compute(p: str, c: ComputeConfig) -> None:
    if not isinstance(c, ComputeConfig):
        raise bad(p, type(c).__name__, "must be a ComputeConfig")
    check_choice(f"{p}.amp", c.amp, AMP_MODES)
    check_range(f"{p}.state_every_steps", c.state_every_steps, 0, integer=True)
    for name in ("channels_last", "compile", "deterministic", "resume", "sync_batchnorm"):
        if not isinstance(getattr(c, name), bool):
            raise bad(f"{p}.{name}", getattr(c, name), "must be true or false")


def validate_adversarial(p: str, a: AdversarialConfig) -> None:
    check_choice(f"{p}.method", a.method, ADV_METHODS)
    check_range(f"{p}.eps", a.eps, 0.0, 1.0)
    check_range(f"{p}.step_size", a.step_size, 0.0, 1.0)
    check_range(f"{p}.steps", a.steps, 1, integer=True)
    check_range(f"{p}.eps_warmup_epochs", a.eps_warmup_epochs, 0, integer=True)
    check_choice(f"{p}.gradient", a.gradient, GRADIENT_MODES)
    check_range(f"{p}.eot_samples", a.eot_samples, 1, integer=True)
    check_choice(f"{p}.label", a.label, ATTACK_LABELS)
    check_range(f"{p}.clean_weight", a.clean_weight, 0.0, 1.0)
    check_range(f"{p}.clean_epochs", a.clean_epochs, 0, integer=True)
    check_range(f"{p}.noise_std", a.noise_std, 0.0, 1.0)
    if not a.mixed_branches:
        raise bad(f"{p}.mixed_branches", a.mixed_branches, f"give a non-empty subset of {MIXED_BRANCHES}")
    for i, b in enumerate(a.mixed_branches):
        check_choice(f"{p}.mixed_branches[{i}]", b, MIXED_BRANCHES)
    check_range(f"{p}.cw_c", a.cw_c, 0.0)
    check_range(f"{p}.cw_kappa", a.cw_kappa, 0.0)
    check_range(f"{p}.cw_steps", a.cw_steps, 1, integer=True)
    check_range(f"{p}.cw_lr", a.cw_lr, 0.0, 1.0)
