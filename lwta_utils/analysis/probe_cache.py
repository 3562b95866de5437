"""Probes of the defenses cached by their inputs' hashes, like checkpoints and evaluation records.

A probe measures something per model (winner statistics, gradient cosines, k-WTA layers, ...)
and keeps one file of rows for all models (``results/<kind>.json``). Each model's rows are stored
with the hash of what they depend on: the model's configuration hash (its checkpoint), the data
split, and the probe's own settings. A rerun measures only the models whose hash changed (or that
have no rows yet) and keeps the rows of every other model in the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

from lwta_utils.core.errors import ConfigError
from lwta_utils.core.jsonfiles import read_versioned, write_versioned
from lwta_utils.core.provenance import provenance


def probe_hash(cfg, name: str, **settings) -> str:
    """Hash of what model ``name``'s rows of a probe depend on."""
    payload = {"model": cfg.model_hash(name), "data": dataclasses.asdict(cfg.data), "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_probe(cfg, kind: str, names: list[str], measure: Callable[[str], list[dict] | tuple[list[dict], list]],
                 settings: dict, detail: bool = False) -> list[dict]:
    """The rows of probe ``kind`` (file ``results/<kind>.json``) for models ``names``, in order:
    reused for every model whose inputs' hash matches, measured by ``measure(name)`` for the others
    (with ``detail``, ``measure`` returns ``(rows, per-block detail)``, stored under ``per_block``).
    Rows carry the model's label under 'model'; the file keeps the rows of models not asked for."""
    path = Path(cfg.results_dir) / f"{kind}.json"
    try:
        old = read_versioned(path, kind) if path.is_file() else {}
    except ConfigError:  # an older layout: measure again
        old = {}
    hashes = dict(old.get("hashes", {}))
    rows_of = {}
    for row in old.get("rows", []):
        rows_of.setdefault(row["model"], []).append(row)
    per_block = dict(old.get("per_block", {}))
    out, measured = [], False
    for name in names:
        key, label = probe_hash(cfg, name, **settings), cfg.label(name)
        if hashes.get(name) != key or label not in rows_of:
            result = measure(name)
            rows, blocks = result if detail else (result, None)
            rows_of[label] = rows
            if detail:
                per_block[name] = blocks
            hashes[name] = key
            measured = True
        out += rows_of[label]
    if not measured:
        return out
    payload = {"rows": [r for rows in rows_of.values() for r in rows], "hashes": hashes,
               "settings": settings, **({"per_block": per_block} if detail or per_block else {}), **provenance()}
    write_versioned(path, kind, payload)
    return out
