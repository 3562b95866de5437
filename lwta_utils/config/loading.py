"""Building a typed configuration from a profile (YAML) and overrides, with errors naming the
parameter; ``from_dict`` builds any section from plain data (a checkpoint's saved configuration)."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml

from lwta_utils.config.schema import StudyConfig
from lwta_utils.config.validation import validate
from lwta_utils.core.errors import ConfigError, bad
from lwta_utils.core.paths import PARAMS_DIR


def from_dict(tp: Any, value: Any, path: str = "") -> Any:
    """``value`` (plain dicts, lists, scalars) as the typed section ``tp`` (a dataclass of the schema);
    a wrong type or an unknown key is a ConfigError naming its dotted path."""
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
        kwargs = {k: from_dict(hints[k], v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return tp(**kwargs)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad(path, value, "must be a list")
        return [from_dict(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad(path, value, "must be a mapping")
        return {str(k): from_dict(item, v, f"{path}.{k}") for k, v in value.items()}
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


REPLICATE_OWN_FIELDS = ("label", "seed", "replicate_of")  # what a replicate may set apart from its original


def _to_replicates(raw: dict, overrides: dict) -> dict:
    """An override of a model's recipe reaches its replicates (``replicate_of``: the same recipe,
    another seed) unless it names a replicate's field itself: ``models.lwta_pgdat.train.epochs=1``
    also sets ``models.lwta_pgdat_s1.train.epochs``."""
    models = raw.get("models") if isinstance(raw.get("models"), dict) else {}
    out = {}
    for key, value in overrides.items():
        parts = key.split(".") if isinstance(key, str) else []
        if len(parts) < 3 or parts[0] != "models" or parts[2] in REPLICATE_OWN_FIELDS:
            continue
        for name, m in models.items():
            twin = ".".join(["models", name, *parts[2:]])
            if isinstance(m, dict) and m.get("replicate_of") == parts[1] and twin not in overrides:
                out[twin] = value
    return out


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
    for key, value in _to_replicates(raw, overrides or {}).items():
        _set_dotted(raw, key, value)
    for key, value in (("seed", seed), ("device", device), ("out_dir", out_dir)):
        if value is not None:
            raw[key] = value
    cfg = from_dict(StudyConfig, raw, "")
    validate(cfg)
    return cfg


def parse_set(items: list[str]) -> dict:
    """``key=value`` pairs; values are read as YAML (numbers, booleans, lists)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise bad("--set", item, "use key=value with a dotted config key, e.g. seed=1")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
