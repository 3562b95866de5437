"""Do two runs' outputs agree? Compares two output folders (``models/``, ``results/``, ``figures/``)
file by file, ignoring what is expected to differ between runs: wall times, dates, commit ids,
the machine's description and package versions.

    python -m lwta_utils.pipeline.compare OLD_OUT NEW_OUT            # differences, one per line
    python -m lwta_utils.pipeline.compare OLD_OUT NEW_OUT --ignore config_hash --values-only

JSON files are compared value by value (exactly: numbers are not rounded), ``.npz`` arrays and
checkpoint tensors element by element, figures by their pixels. Exit status 0 when the outputs
agree, 1 when they differ. It shows that a change of code did not change behaviour: run the chain
before and after it on the same profile and compare.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import torch

from lwta_utils.core.errors import bad

FOLDERS = ("models", "results", "figures")
# keys whose values differ between two runs of the same code on the same inputs
RUN_KEYS = frozenset({"created", "git_sha", "cpu", "versions", "processes", "hostname", "python", "platform"})
TIME_KEY = re.compile(r"(^|_)(time|wall|seconds|elapsed)(_|$)|_s$")
SKIPPED_FILES = re.compile(r"(^|/)(chain_timing\.json|bench_[^/]*\.json|.*\.state\.pt|progress\.json)$")


def _ignored(key: str, ignore: frozenset[str]) -> bool:
    return key in RUN_KEYS or key in ignore or bool(TIME_KEY.search(key))


def _diff_json(a, b, where: str, ignore: frozenset[str], out: list[str], added: bool = True) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if _ignored(str(k), ignore):
                continue
            if k not in a or k not in b:
                if added:
                    out.append(f"{where}.{k}: only in {'the new' if k not in a else 'the old'} output")
            else:
                _diff_json(a[k], b[k], f"{where}.{k}", ignore, out, added)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items, now {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff_json(x, y, f"{where}[{i}]", ignore, out, added)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)):
        out.append(f"{where}: {a!r}, now {b!r}")


def _diff_arrays(a: dict, b: dict, where: str, out: list[str]) -> None:
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            out.append(f"{where}[{k}]: only in {'the new' if k not in a else 'the old'} output")
            continue
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape or x.dtype != y.dtype:
            out.append(f"{where}[{k}]: shape {x.shape} {x.dtype}, now {y.shape} {y.dtype}")
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            out.append(f"{where}[{k}]: {int((x != y).sum())} of {x.size} values differ")


def _split(obj, prefix: str = "", tensors: dict | None = None):
    """A checkpoint's tensors, flattened to dotted keys, and the rest of it (JSON-like, tensors removed)."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        tensors[prefix] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        return tensors, "<tensor>"
    if isinstance(obj, dict):
        return tensors, {k: _split(v, f"{prefix}.{k}" if prefix else str(k), tensors)[1] for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return tensors, [_split(v, f"{prefix}[{i}]", tensors)[1] for i, v in enumerate(obj)]
    return tensors, obj if isinstance(obj, (str, int, float, bool, type(None))) else str(obj)


def compare_files(a: Path, b: Path, ignore: frozenset[str] = frozenset(), added: bool = True) -> list[str]:
    """The differences between two files of the same name (empty: they agree). ``added``: name the
    JSON keys that only one side has (False: compare only the values both have, e.g. across a
    change that added fields to the records' schema)."""
    name, out = b.name, []
    if name.endswith(".json"):
        _diff_json(json.loads(a.read_text()), json.loads(b.read_text()), name, ignore, out, added)
    elif name.endswith(".npz"):
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            _diff_arrays(dict(x), dict(y), name, out)
    elif name.endswith(".pt"):
        (ta, ra), (tb, rb) = (_split(torch.load(p, map_location="cpu", weights_only=False)) for p in (a, b))
        _diff_arrays(ta, tb, name, out)
        _diff_json(ra, rb, name, ignore, out, added)
    elif name.endswith(".png") and a.read_bytes() != b.read_bytes():
        _diff_arrays({"pixels": mpimg.imread(a)}, {"pixels": mpimg.imread(b)}, name, out)
    elif not name.endswith(".png") and a.read_bytes() != b.read_bytes():
        out.append(f"{name}: the bytes differ")
    return out


def compare_outputs(old: Path, new: Path, ignore: frozenset[str] = frozenset(),
                    folders: tuple[str, ...] = FOLDERS, added: bool = True) -> list[str]:
    """Every difference between two output folders (``models/``, ``results/``, ``figures/`` under
    each), one line each; files that only one side has are named too. Run-specific files (wall-time
    records, benchmarks, training states) are left out."""
    old, new = Path(old), Path(new)
    for label, root in (("old", old), ("new", new)):
        if not root.is_dir():
            raise bad(label, str(root), "an output folder (with models/, results/, figures/)")
    diffs = []
    for folder in folders:
        files = {}
        for side, root in ((0, old), (1, new)):
            for p in sorted((root / folder).rglob("*")):
                rel = p.relative_to(root).as_posix()
                if p.is_file() and not SKIPPED_FILES.search(rel):
                    files.setdefault(rel, [None, None])[side] = p
        for rel, (a, b) in sorted(files.items()):
            if a is None or b is None:
                diffs.append(f"{rel}: only in the {'new' if a is None else 'old'} output")
            else:
                diffs.extend(f"{Path(rel).parent.as_posix()}/{d}" for d in compare_files(a, b, ignore, added))
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lwta_utils.pipeline.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path, help="an output folder (a profile's out_dir, or a checkout's root)")
    ap.add_argument("new", type=Path)
    ap.add_argument("--ignore", action="append", default=[], metavar="KEY",
                    help="a JSON key to leave out as well (repeatable), e.g. config_hash")
    ap.add_argument("--folders", nargs="+", default=list(FOLDERS), metavar="FOLDER")
    ap.add_argument("--values-only", action="store_true",
                    help="compare only the JSON values both sides have (keys added or removed by a schema change "
                         "are not named)")
    args = ap.parse_args(argv)
    diffs = compare_outputs(args.old, args.new, frozenset(args.ignore), tuple(args.folders), not args.values_only)
    for d in diffs:
        print(d)
    print(f"{len(diffs)} difference(s) between {args.old} and {args.new}"
          + (" (wall times, dates, commit ids and the machine ignored)" if not diffs else ""))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
