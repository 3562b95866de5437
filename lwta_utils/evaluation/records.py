"""Result records: small JSON files in ``results/``, with full provenance.

One evaluation record is one (model, attack, eps) cell: accuracy with its 95% Wilson interval,
the attack's parameters, the number of examples, seed, git SHA, package versions and wall time.
Tables and figures are generated from these records only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from lwta_utils.core.jsonfiles import SCHEMAS, read_versioned, write_versioned
from lwta_utils.core.provenance import git_sha, package_versions
from lwta_utils.core.stats import wilson_interval

RECORD_VERSION = SCHEMAS["evaluation"].version


@dataclass
class Record:
    """One measured accuracy. ``attack`` is 'none' for clean accuracy.

    For a model with stochastic layers every input is classified ``draws``
    times: ``accuracy`` is the mean over draws (``n_correct`` its count,
    rounded, with the Wilson interval), ``accuracy_sd`` the standard
    deviation across draws and ``worst_accuracy`` the share of inputs
    classified correctly in every draw: the per-example robustness the study
    reports under attack (``n_robust`` of ``n_examples``, with its own Wilson
    interval ``robust_ci_low`` / ``robust_ci_high``). Deterministic models:
    one draw, and both accuracies are equal.

    A step of the attack cascade (``cascade_step`` 1, 2, ...; 0 for an attack
    run on its own) attacked ``n_attacked`` examples (those still robust after
    the previous steps); its accuracies are those of every example's strongest
    perturbation so far, i.e. the cumulative robustness after the step.
    """

    model: str
    label: str
    arch: str
    activation: str
    training: str
    attack: str
    eps: float
    steps: int
    step_size: float
    restarts: int
    eot_samples: int
    n_examples: int
    n_correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    split: str
    dataset: str
    seed: int
    profile: str
    wall_time_s: float
    draws: int = 1
    accuracy_sd: float = 0.0
    worst_accuracy: float = float("nan")
    stochastic: bool = False
    attack_params: dict = field(default_factory=dict)  # every parameter the attack ran with
    attack_name: str = ""    # the registry's name ('attack' is the configuration's id)
    attack_label: str = ""   # display name
    norm: str = "linf"       # the ball eps bounds
    kind: str = ""           # clean, white-box, black-box, transfer or ensemble
    gradient: str = "model"  # gradient mode of our PGD ('straight_through' = BPDA, ...)
    n_robust: int = -1       # examples classified correctly in every draw
    robust_ci_low: float = float("nan")
    robust_ci_high: float = float("nan")
    cascade_step: int = 0    # position in the attack cascade (0: an attack run on its own)
    n_attacked: int = -1     # examples the attack ran on (a cascade step: those still robust)
    git_sha: str = field(default_factory=git_sha)
    versions: dict = field(default_factory=package_versions)
    record_version: int = RECORD_VERSION


RECORD_FIELDS = tuple(f.name for f in fields(Record))


def record_key(r) -> str:
    """The key of a record's per-example arrays (``results/correct_<model>.npz``): attack@eps."""
    return "none@0" if r.attack == "none" else f"{r.attack}@{r.eps:g}"


def make_record(n_correct: int, n_examples: int, n_robust: int | None = None, **kw) -> Record:
    lo, hi = wilson_interval(n_correct, n_examples)
    n_robust = n_correct if n_robust is None else n_robust
    r_lo, r_hi = wilson_interval(n_robust, n_examples)
    kw.setdefault("n_attacked", n_examples)
    return Record(n_correct=n_correct, n_examples=n_examples, accuracy=n_correct / n_examples,
                  ci_low=lo, ci_high=hi, worst_accuracy=n_robust / n_examples, n_robust=n_robust,
                  robust_ci_low=r_lo, robust_ci_high=r_hi, **kw)


def make_draw_record(correct: np.ndarray, **kw) -> Record:
    """A record from a (draws, n_examples) boolean array of correct predictions."""
    correct = np.asarray(correct, dtype=bool).reshape(-1, correct.shape[-1])
    per_draw = correct.mean(1)
    n = correct.shape[1]
    return make_record(int(round(per_draw.mean() * n)), n, n_robust=int(correct.all(0).sum()),
                       draws=correct.shape[0], accuracy_sd=float(per_draw.std(ddof=1)) if len(per_draw) > 1 else 0.0,
                       **kw)


def write_records(path: Path, records: list[Record], config_hash: str = "") -> Path:
    """Write a list of records as one JSON file (atomically), with the configuration hash they
    were computed under (``StudyConfig.eval_hash``; a rerun with the same hash may reuse them)."""
    return write_versioned(path, "evaluation", {"config_hash": config_hash, "records": [asdict(r) for r in records]})


def load_records(results_dir: Path, pattern: str = "eval_*.json") -> pd.DataFrame:
    """All records under ``results_dir`` matching ``pattern``, as one table."""
    rows = []
    for p in sorted(Path(results_dir).glob(pattern)):
        for r in read_versioned(p, "evaluation")["records"]:
            rows.append({**r, "source": p.name})
    return pd.DataFrame(rows, columns=[*RECORD_FIELDS, "source"])
