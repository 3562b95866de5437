"""Progress of long steps, shown where the user looks.

In a notebook opened by hand, :func:`progress_bar` is an ordinary tqdm bar and :func:`status` and
:func:`tally` do nothing. Under the chain (``python -m lwta_utils.pipeline``) the notebooks run in
a kernel whose output goes to the executed notebook, not to the console; the chain then sets
``LWTA_PROGRESS_FILE`` in the kernel's environment, and these three functions publish, through
that small file (a ``progress`` file of ``core.jsonfiles``, replaced atomically at most a few
times a second), what the chain's console shows:

- :func:`status`: the current step in words ("training lwta_pgdat epoch 6/10");
- :func:`progress_bar`: the innermost running bar (its description, done, total, elapsed);
- :func:`tally`: counts of what a notebook did ("models trained", "checkpoints reused"), which
  the chain's summary table prints.

    from lwta_utils.core.progress import progress_bar, status, tally
    status(f"training {name} epoch {epoch + 1}/{epochs}")
    for b in progress_bar(range(steps), desc=f"{name} epoch {epoch + 1}", leave=False): ...
    tally("models trained")
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

from tqdm import tqdm

from lwta_utils.core.errors import ConfigError
from lwta_utils.core.jsonfiles import read_versioned, write_versioned

ENV = "LWTA_PROGRESS_FILE"   # set by the chain in the kernel's environment
PUBLISH_EVERY_S = 0.5        # at most this often a running bar rewrites the file

_state: dict = {"status": "", "status_time": 0.0, "bars": [], "tallies": {}}
_last_write = [0.0]


def channel() -> Path | None:
    """The progress file of the chain that runs this process, or None (a notebook opened by hand)."""
    path = os.environ.get(ENV)
    return Path(path) if path else None


def _publish(force: bool = True) -> None:
    path = channel()
    if path is None or (not force and time.monotonic() - _last_write[0] < PUBLISH_EVERY_S):
        return
    _last_write[0] = time.monotonic()
    try:
        write_versioned(path, "progress", {**_state, "pid": os.getpid()})
    except OSError:  # the chain went away or its folder was removed: progress is best effort
        pass


def status(text: str) -> None:
    """Say what runs now (one short line, e.g. "evaluating wca: square, eps 0.3")."""
    if channel() is not None and text != _state["status"]:
        _state["status"], _state["status_time"] = text, time.time()
        _publish()


def tally(what: str, n: int = 1) -> None:
    """Count ``n`` more of ``what`` (e.g. "models trained", "records reused") for the chain's summary."""
    if channel() is not None:
        _state["tallies"][what] = _state["tallies"].get(what, 0) + n
        _publish()


class _ChannelBar(tqdm):
    """A tqdm bar that draws nothing and publishes its state to the chain's progress file."""

    def display(self, msg=None, pos=None):
        d = self.format_dict
        entry = {"id": id(self), "desc": d.get("prefix") or "", "n": d["n"], "total": d["total"],
                 "elapsed": round(d["elapsed"], 1), "unit": d.get("unit", "it")}
        _state["bars"] = [b for b in _state["bars"] if b["id"] != entry["id"]] + [entry]
        _publish(force=False)
        return True

    def close(self):
        was_open = not self.disable
        super().close()
        if was_open:
            _state["bars"] = [b for b in _state["bars"] if b["id"] != id(self)]
            _publish()


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` in a notebook opened by hand; under the chain, a bar that the
    chain's console draws on its second line (nothing is written to the notebook)."""
    if channel() is None or kwargs.get("disable"):
        return tqdm(iterable, **kwargs)
    kwargs.update(file=io.StringIO(), mininterval=min(kwargs.get("mininterval", PUBLISH_EVERY_S), PUBLISH_EVERY_S))
    return _ChannelBar(iterable, **kwargs)


def read_progress(path: str | os.PathLike) -> dict | None:
    """What a kernel last published to ``path`` (the chain's side), or None when nothing yet."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read_versioned(path, "progress")
    except ConfigError:
        return None


def reset() -> None:
    """Forget what this process published (tests)."""
    _state.update(status="", status_time=0.0, bars=[], tallies={})
