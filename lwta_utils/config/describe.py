"""Short descriptions of a configuration for tables and records (how a model was trained)."""
from __future__ import annotations

from lwta_utils.config.schema import StudyConfig
from lwta_utils.core.registry import ACTIVATIONS


def training_name(cfg: StudyConfig, name: str) -> str:
    """A short description of how ``name`` was trained, for tables and records."""
    m = cfg.models[name]
    t, a = m.train, m.train.adversarial
    if a.method == "none":
        base = "standard"
    elif a.method == "gaussian":
        base = f"gaussian-noise(std={a.noise_std:g})"
    elif a.method == "mixed":
        base = f"mixed-at({'+'.join(a.mixed_branches)},eps={a.eps:g})"
    else:
        base = f"{a.method}-at(eps={a.eps:g}" + (f",steps={a.steps}" if a.method == "pgd" else "") + ")"
        if a.gradient != "model":
            base += f" on the {a.gradient.replace('_', '-')} gradient"
        if a.eot_samples > 1:
            base += f", EOT {a.eot_samples}"
    if a.method != "none" and a.clean_weight:
        base += f" {a.clean_weight:g} clean"
    if a.method != "none" and a.label == "predicted":
        base += " vs predicted labels"
    extras = [("IBP", m.ibp), ("ELBO", t.loss == "elbo"), ("WCA loss", t.loss == "wca"),
              (f"label smoothing {t.label_smoothing:g}", t.label_smoothing > 0),
              (f"PNI-{m.pni}", m.pni != "none"),
              (t.gamma_schedule.start and f"gamma {t.gamma_schedule.start:g}->{_option(m, 'gamma'):g}",
               bool(t.gamma_schedule.start)),
              (f"from {m.init_from}", bool(m.init_from))]
    return base + "".join(f" + {label}" for label, on in extras if on)


def _option(m, key: str):
    """The value of the activation option ``key`` a model runs with (its declared default if not set)."""
    return ACTIVATIONS.options("activation_options", m.activation, m.activation_options)[key]
