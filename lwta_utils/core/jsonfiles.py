"""Every JSON file the study writes has a versioned schema, and readers go through it.

A file carries ``"schema": <kind>`` and ``"schema_version": <n>`` at its top level, beside the
keys its kind requires (:data:`SCHEMAS`). :func:`write_versioned` adds them (atomically, through
``fileio``); :func:`read_versioned` checks them and names the file, the kind and what is wrong, so
a file of another kind or an older layout is one clear error instead of a ``KeyError`` deep in a
table. A change of a kind's layout raises its version here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lwta_utils.core.errors import ConfigError
from lwta_utils.core.fileio import write_json


@dataclass(frozen=True)
class Schema:
    version: int
    required: tuple[str, ...]   # top-level keys every file of the kind holds
    what: str                   # one line: what the file holds and who writes it


SCHEMAS: dict[str, Schema] = {
    "evaluation": Schema(5, ("config_hash", "records"), "results/eval_<model>.json: one record per (attack, eps)"),
    "sanity": Schema(1, ("model", "checks", "flags", "gradients"), "results/sanity_<model>.json: sanity checks"),
    "training": Schema(1, ("model", "config_hash", "history"), "results/train_<model>.json: training history"),
    "data_split": Schema(1, ("dataset", "class_counts"), "results/data_split.json: the split"),
    "lwta_draws": Schema(1, ("rows",), "results/lwta_draws.json: LWTA accuracy across draws"),
    "lwta_winners": Schema(1, ("rows",), "results/lwta_winners.json: LWTA winner statistics"),
    "lwta_gradients": Schema(1, ("rows",), "results/lwta_gradients.json: two-pass gradient cosines"),
    "kwta_layers": Schema(1, ("rows",), "results/kwta_layers.json: k-WTA layer check"),
    "noise_draws": Schema(1, ("rows",), "results/noise_draws.json: accuracy across noise draws"),
    "pni_alphas": Schema(1, ("rows",), "results/pni_alphas.json: learned PNI noise scales"),
    "wca_heads": Schema(1, ("rows",), "results/wca_heads.json: learned WCA covariances"),
    "benchmark": Schema(1, ("results",), "results/bench_<name>.json: a benchmark's measured times and ratios"),
    "chain_timing": Schema(1, ("profile", "notebooks"), "results/chain_timing.json: wall time per notebook"),
    "released_checkpoint": Schema(1, ("model", "config_hash", "files", "loading", "clean_draws", "gradients", "timing"),
                                  "results/released_checkpoint.json: the LWTA authors' released checkpoint: its files, "
                                  "loading, clean draws, gradient cosines, wall time"),
    "ibp_compression": Schema(1, ("rows", "per_layer", "sweep", "sticks"),
                              "results/ibp_compression.json: IBP active indicators, compression, accuracy, sticks"),
    "progress": Schema(1, ("status", "bars", "tallies"), "<out>/.chain-run/progress.json: what a chain's kernel runs now"),
    "robustbench": Schema(1, ("threat_model", "eps", "clean_acc", "robust_acc"),
                          "results/robustbench_<model>.json: a model's headline, RobustBench-style"),
}


def write_versioned(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as a file of ``kind`` (schema and version first), atomically."""
    schema = SCHEMAS[kind]
    missing = [k for k in schema.required if k not in payload]
    if missing:  # a programming error: the writer and the schema disagree
        raise ValueError(f"a {kind} file needs {missing}")
    return write_json(path, {"schema": kind, "schema_version": schema.version, **payload})


def read_versioned(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """The payload of the ``kind`` file at ``path``, checked against its schema."""
    path, schema = Path(path), SCHEMAS[kind]
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("schema") != kind:
        found = payload.get("schema") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(f"{path} is not a {kind!r} file (schema {found!r}); it should hold {schema.what}")
    if payload.get("schema_version") != schema.version:
        raise ConfigError(f"{path} has {kind} schema version {payload.get('schema_version')!r}; this code reads "
                          f"version {schema.version}: regenerate it (rerun the step that writes it)")
    missing = [k for k in schema.required if k not in payload]
    if missing:
        raise ConfigError(f"{path} lacks {missing}, required in a {kind} file")
    return payload


def kind_of(path: str | os.PathLike) -> str:
    """The kind of a results file from its name: ``eval_<model>.json`` -> 'evaluation',
    ``bench_<name>.json`` -> 'benchmark', ``lwta_gradients.json`` -> 'lwta_gradients', ..."""
    stem = Path(path).stem
    for prefix, kind in (("eval_", "evaluation"), ("sanity_", "sanity"), ("train_", "training"),
                         ("bench_", "benchmark")):
        if stem.startswith(prefix):
            return kind
    if stem in SCHEMAS:
        return stem
    raise ConfigError(f"{path}: no schema for this file name (known kinds: {', '.join(SCHEMAS)})")
