"""One error type for bad input, and small checks that raise it early.

Every message names the parameter, the value it got and what is allowed, so
that a user can fix the call without reading a traceback.
"""
from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """A parameter has a value that is not allowed (raised before any work)."""


def bad(param: str, value: Any, allowed: str) -> ConfigError:
    """Build the error for ``param`` having ``value``; ``allowed`` says what would do."""
    return ConfigError(f"parameter '{param}' = {value!r} is not allowed: {allowed}")


def check_choice(param: str, value: Any, choices: Iterable[str]) -> None:
    choices = sorted(choices)
    if value not in choices:
        raise bad(param, value, f"choose one of {', '.join(map(repr, choices))}")


def check_range(param: str, value: Any, lo: float | None = None, hi: float | None = None,
                integer: bool = False) -> None:
    """Check ``lo <= value <= hi`` (either bound optional) and the type."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise bad(param, value, f"must be {kind}")
    if value != value:  # NaN
        raise bad(param, value, f"must be {kind}, not NaN")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = (f"in [{lo}, {hi}]" if lo is not None and hi is not None
                else f">= {lo}" if lo is not None else f"<= {hi}")
        raise bad(param, value, f"must be {kind} {span}")
