"""The chain's notebook cache: a notebook whose inputs are unchanged since its last successful run
is not run again (its executed copy and its outputs stay), so that a rerun with nothing changed
takes seconds instead of a kernel start and a pass over every cached record per notebook.

A notebook's key is the digest of everything that can change what it writes:

* its source, the project's code and profiles (``lwta_utils/``, ``params/``), the installed
  versions of the tracked packages;
* the resolved configuration and the run's parameters (seed, device, overrides, reuse), without the
  output folder's name;
* the content of every file under the outputs' ``models/``, ``results/`` and ``figures/`` before it
  ran, except the files this notebook or a later one has written (its own outputs are checked
  separately: they must still be what it left) and ``results/chain_timing.json`` (the
  chain's own); the size and time of the files under the data root and the released checkpoint's
  folder; whether a GPU is there.

Entries are written only after a chain's outputs were promoted, under
``reports/executed/<notebook>.cache.json`` beside the executed copy; ``--force`` (``reuse=False``)
runs everything. A notebook that ran is recorded with what it wrote; one that was skipped keeps
its entry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from lwta_utils.config.schema import NOTEBOOKS, StudyConfig
from lwta_utils.core.paths import NOTEBOOKS_DIR, ROOT
from lwta_utils.core.provenance import package_versions

CHAIN_WRITTEN = frozenset({"results/chain_timing.json"})  # written by the chain itself, read by no notebook
CODE = (("lwta_utils", "*.py"), ("lwta_utils", "*.yaml"), ("params", "*.yaml"))
REPORT_ENTRY = "report.cache.json"


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class Digests:
    """Content digests of the files under ``root``'s ``subdirs``, keyed by their path relative to
    ``root`` ('results/eval_x.json'); a file whose inode, size and time are unchanged is not read
    again."""

    def __init__(self, subdirs: tuple[str, ...]):
        self.subdirs, self._memo = subdirs, {}

    def __call__(self, root: Path) -> dict[str, str]:
        out = {}
        for f, st in output_files(root, self.subdirs):
            sig = (str(f), st.st_ino, st.st_size, st.st_mtime_ns)
            if sig not in self._memo:
                self._memo[sig] = _sha(f.read_bytes())
            out[f.relative_to(root).as_posix()] = self._memo[sig]
        return out


def output_files(root: Path, subdirs: tuple[str, ...]):
    """(path, stat) of every file under ``root``'s ``subdirs``, temporaries (``.tmp-*``) left out."""
    for sub in subdirs:
        base = root / sub
        for f in sorted(base.rglob("*")) if base.is_dir() else []:
            if f.is_file() and not f.name.startswith(".tmp-"):
                yield f, f.stat()


def code_digest(root: Path = ROOT) -> str:
    """The project's code and profiles, and the tracked packages' versions."""
    h = hashlib.sha1()
    for sub, pattern in CODE:
        for f in sorted((root / sub).rglob(pattern)):
            if "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(json.dumps(package_versions(), sort_keys=True).encode())
    return h.hexdigest()


def _stats(folder: str) -> list:
    """Path, size and time of every file under ``folder`` (relative to the repository root)."""
    base = Path(folder) if Path(folder).is_absolute() else ROOT / folder
    stats = ((f, f.stat()) for f in sorted(base.rglob("*")) if f.is_file()) if base.is_dir() else ()
    return [[str(f), st.st_size, st.st_mtime_ns] for f, st in stats]


def config_digest(cfg: StudyConfig, params: dict) -> str:
    """The resolved configuration and the run's parameters, without where the outputs go; whether a
    GPU is there (device 'auto'); the size and time of the files under the data root and, when that
    step runs, the released checkpoint's folder (their contents are checked where they are read)."""
    import torch

    conf = dataclasses.asdict(cfg)
    conf.pop("out_dir", None)
    run = {k: v for k, v in params.items() if k != "out_dir"}
    files = _stats(cfg.data.root) + (_stats(cfg.released.root) if cfg.released.run else [])
    return _sha(json.dumps([conf, run, torch.cuda.is_available(), files], sort_keys=True, default=str).encode())


class NotebookCache:
    """Entries of the notebooks' last successful runs, in ``executed_dir``."""

    def __init__(self, executed_dir: Path, *, enabled: bool, cfg: StudyConfig, params: dict):
        """``enabled`` False (``--force``): nothing is skipped; the entries are still written."""
        self.dir, self.enabled = executed_dir, enabled
        self.base = code_digest() + config_digest(cfg, params)
        self.entries = {nb: self._read(nb) for nb in NOTEBOOKS}
        self.previous: dict[str, dict] = {}  # the outputs of the notebooks invalidated in this run

    def _read(self, nb: str) -> dict | None:
        try:
            e = json.loads((self.dir / f"{nb}.cache.json").read_text())
        except (OSError, ValueError):
            return None
        return e if isinstance(e, dict) and {"key", "outputs"} <= set(e) else None

    def _excluded(self, nb: str, outputs: dict[str, dict]) -> set[str]:
        """Files out of ``nb``'s inputs: written by it or a later notebook (``outputs``), or by the chain."""
        later = NOTEBOOKS[NOTEBOOKS.index(nb):]
        return set(CHAIN_WRITTEN).union(*(outputs.get(n, {}) for n in later))

    def _key(self, nb: str, before: dict[str, str], excluded: set[str]) -> str:
        inputs = {p: d for p, d in before.items() if p not in excluded}
        source = (NOTEBOOKS_DIR / f"{nb}.ipynb").read_bytes()
        return _sha(json.dumps([self.base, _sha(source), inputs], sort_keys=True).encode())

    def unchanged(self, nb: str, state: dict[str, str]) -> bool:
        """Whether ``nb`` may be skipped on the current outputs ``state`` (``Digests``)."""
        e = self.entries.get(nb)
        if not self.enabled or e is None or not (self.dir / f"{nb}.ipynb").is_file():
            return False
        if any(state.get(p) != d for p, d in e["outputs"].items()):
            return False  # what it wrote was changed or removed since
        outputs = {n: x["outputs"] for n, x in self.entries.items() if x is not None}
        return self._key(nb, state, self._excluded(nb, outputs)) == e["key"]

    def invalidate(self, nb: str) -> None:
        """``nb`` is about to run: its entry goes (a failed or interrupted run leaves none); the files
        it wrote before stay attributed to it."""
        if self.entries.get(nb) is not None:
            self.previous[nb] = self.entries[nb]["outputs"]
        (self.dir / f"{nb}.cache.json").unlink(missing_ok=True)
        self.entries[nb] = None

    def save(self, ran: dict[str, tuple[dict, dict]], final: dict[str, str]) -> None:
        """Record the notebooks that ran: ``ran[nb] = (state before, state after)``; ``final``: the
        outputs' state once promoted. A notebook's outputs are what it wrote (now, and before, while
        the files exist) as the chain left them: a later notebook may rewrite a file an earlier one
        wrote (the LWTA statistics, a shared figure). The skipped notebooks keep their keys."""
        outputs = {n: e["outputs"] for n, e in self.entries.items() if e is not None}
        for nb, (before, after) in ran.items():  # what it wrote now, and what it wrote before that still exists
            outputs[nb] = {p for p, d in after.items() if before.get(p) != d} | set(self.previous.get(nb, {}))
        outputs = {n: {p: final[p] for p in sorted(set(o) - CHAIN_WRITTEN) if p in final} for n, o in outputs.items()}
        for nb, e in self.entries.items():
            if nb in ran or e is None:
                continue
            e["outputs"] = outputs[nb]
            (self.dir / f"{nb}.cache.json").write_text(json.dumps(e, sort_keys=True))
        for nb, (before, _) in ran.items():
            entry = {"key": self._key(nb, before, self._excluded(nb, outputs)), "outputs": outputs[nb]}
            (self.dir / f"{nb}.cache.json").write_text(json.dumps(entry, sort_keys=True))
            self.entries[nb] = entry

    def report_key(self, executed: list[Path], extra: list[Path]) -> str:
        return _sha(json.dumps([self.base, *(_sha(p.read_bytes()) if p.is_file() else "" for p in executed + extra)]
                               ).encode())

    def report_unchanged(self, key: str, report: Path) -> bool:
        try:
            saved = json.loads((self.dir / REPORT_ENTRY).read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            return False
        return self.enabled and report.is_file() and saved == key

    def save_report(self, key: str | None) -> None:
        """The rendered report's key (None: the report is being rendered again, the old key goes)."""
        if key is None:
            (self.dir / REPORT_ENTRY).unlink(missing_ok=True)
        else:
            (self.dir / REPORT_ENTRY).write_text(json.dumps({"key": key}))
