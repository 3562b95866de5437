"""The headless chain: every notebook in order with papermill, then the report.

    python -m lwta_utils.pipeline --profile default
    python -m lwta_utils.pipeline --profile smoke --out runs/smoke --set seed=1
    python -m lwta_utils.pipeline --profile default --notebooks 05_attacks 07_analysis

The configuration is validated before any notebook runs; a bad parameter
stops the chain with one message (exit code 2) and nothing written. Checkpoints
and evaluation records whose configuration hash matches are reused (``--force``
redoes everything), so changing a parameter retrains and re-evaluates exactly
what depends on it, and rerunning the analysis alone takes seconds. The
notebooks write into a working copy (``<out>/.chain-run/``) that replaces the
outputs only when every notebook succeeded: a failing notebook stops the chain
with its name and cell (exit code 1), its executed copy holding the error stays
in ``reports/executed/``, and the last good models, results, figures and report
are left untouched.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from lwta_utils.config.loading import load_config, parse_set
from lwta_utils.config.schema import ANALYSE_NOTEBOOK, EVALUATE_NOTEBOOK, NOTEBOOKS, STAGE_NOTEBOOK, StudyConfig
from lwta_utils.core.errors import ConfigError, bad
from lwta_utils.core.jsonfiles import read_versioned, write_versioned
from lwta_utils.core.paths import NOTEBOOKS_DIR, ROOT, display_path
from lwta_utils.core.provenance import provenance
from lwta_utils.pipeline.report import build_report, update_readme_findings

STAGE_DIR = ".chain-run"  # the working copy a run writes into until every notebook has succeeded


REPORT_TITLE = "Local competition and stochasticity against adversarial attacks: a reproducibility study"


def preflight(cfg: StudyConfig, notebooks: list[str]) -> None:
    """Files that the selected notebooks read but do not write must already exist."""
    if EVALUATE_NOTEBOOK in notebooks:
        for name, m in cfg.models.items():
            trainer, path = STAGE_NOTEBOOK[m.stage], cfg.models_dir / f"{name}.pt"
            if trainer not in notebooks and not path.is_file():
                raise bad("notebooks", notebooks, f"{EVALUATE_NOTEBOOK} needs the checkpoint '{path}', which does "
                          f"not exist; include {trainer} in the run")
    if ANALYSE_NOTEBOOK in notebooks and EVALUATE_NOTEBOOK not in notebooks:
        missing = [n for n in cfg.models if not (cfg.results_dir / f"eval_{n}.json").is_file()]
        if missing:
            raise bad("notebooks", notebooks, f"{ANALYSE_NOTEBOOK} needs results/eval_{missing[0]}.json under "
                      f"{cfg.out}; include {EVALUATE_NOTEBOOK} in the run")


def record_timing(cfg: StudyConfig, notebook: str, wall_s: float, reuse: bool) -> None:
    """Add one notebook's wall time to ``results/chain_timing.json`` (the other notebooks' last
    times are kept, each with its own date, commit, threads and whether checkpoints were reused)."""
    path = cfg.results_dir / "chain_timing.json"
    try:
        rec = read_versioned(path, "chain_timing") if path.is_file() else {}
    except ConfigError:  # an older layout: start the table again
        rec = {}
    if rec.get("profile") != cfg.profile:
        rec = {"profile": cfg.profile, "notebooks": {}}
    prov = provenance()
    rec["notebooks"][notebook] = {"wall_s": round(wall_s, 1), "finished": prov["created"], "git_sha": prov["git_sha"],
                                  "threads": torch.get_num_threads(), "reused_checkpoints": reuse}
    rec["notebooks"] = {nb: rec["notebooks"][nb] for nb in NOTEBOOKS if nb in rec["notebooks"]}
    write_versioned(path, "chain_timing", {k: v for k, v in rec.items() if k not in ("schema", "schema_version")})


STAGED = ("models", "results", "figures")


def stage_outputs(out: Path, stage: Path) -> None:
    """A working copy of ``out``'s models/, results/ and figures/ in ``stage`` (hard links where
    the file system allows, else copies). Every write of the study replaces files (temporary file,
    then rename), so the originals are never touched through the links."""
    if stage.exists():
        shutil.rmtree(stage)
    for sub in STAGED:
        for f in (out / sub).rglob("*") if (out / sub).is_dir() else []:
            if f.is_file() and not f.name.startswith(".tmp-"):
                dst = stage / sub / f.relative_to(out / sub)
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(f, dst)
                except OSError:
                    shutil.copy2(f, dst)


def promote_outputs(stage: Path, out: Path) -> int:
    """Move every file of ``stage`` over its counterpart in ``out`` (one atomic rename each);
    returns how many changed."""
    changed = 0
    for sub in STAGED:
        for f in sorted((stage / sub).rglob("*")) if (stage / sub).is_dir() else []:
            if f.is_file():
                dst = out / sub / f.relative_to(stage / sub)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not (dst.exists() and os.path.samefile(f, dst)):
                    changed += 1
                os.replace(f, dst)
    shutil.rmtree(stage)
    return changed


def remove_stale_temporaries(out: Path) -> int:
    """Delete the temporary files a killed process (SIGKILL, power loss) left beside its outputs."""
    stale = [f for sub in (*STAGED, "reports") if (out / sub).is_dir() for f in (out / sub).rglob(".tmp-*")]
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


def run_chain(profile: str, *, out_dir: str | None = None, seed: int | None = None, device: str | None = None,
              overrides: dict | None = None, notebooks: list[str] | None = None, reuse: bool = True,
              kernel: str = "python3", report: bool = True) -> Path | None:
    """Run the chain; returns the report path (or None without a report).

    The notebooks write into a working copy (``<out>/.chain-run/``) of the outputs; only when
    every notebook succeeded are its files moved over ``<out>``'s and the report rendered. A
    failing notebook leaves the last good models, results, figures and report untouched.
    ``reuse`` (the default) keeps checkpoints and evaluation records whose configuration hash
    matches; ``reuse=False`` retrains and re-evaluates everything."""
    import papermill as pm

    cfg = load_config(profile, seed=seed, device=device, out_dir=out_dir, overrides=overrides)
    notebooks = list(notebooks or NOTEBOOKS)
    for nb in notebooks:
        if nb not in NOTEBOOKS:
            raise bad("notebooks", nb, f"choose from {', '.join(NOTEBOOKS)}")
    notebooks = [nb for nb in NOTEBOOKS if nb in notebooks]
    preflight(cfg, notebooks)
    out, stage = cfg.out, cfg.out / STAGE_DIR
    stale = remove_stale_temporaries(out)
    if stale:
        print(f"removed {stale} temporary file(s) left by an interrupted run")
    stage_outputs(out, stage)
    stage_cfg = load_config(profile, seed=seed, device=device, out_dir=str(stage), overrides=overrides)
    executed_dir = cfg.reports_dir / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "seed": cfg.seed, "device": cfg.device, "out_dir": display_path(stage),
              "overrides": overrides or {}, "reuse_checkpoints": reuse}
    start = time.perf_counter()
    for i, nb in enumerate(notebooks, 1):
        src, dst = NOTEBOOKS_DIR / f"{nb}.ipynb", executed_dir / f"{nb}.ipynb"
        print(f"\n=== [{i}/{len(notebooks)}] {nb} (profile {profile}) ===", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel, cwd=str(NOTEBOOKS_DIR),
                                log_output=True, progress_bar=False, report_mode=False)
        except pm.PapermillExecutionError as exc:
            print(f"\nFAILED: notebook {nb}.ipynb, cell {exc.cell_index} (execution count {exc.exec_count}): "
                  f"{exc.ename}: {exc.evalue}\nThe executed copy with the error is {dst}\n"
                  f"The last good outputs under {display_path(out)} are untouched; this run's partial outputs "
                  f"are in {display_path(stage)}", file=sys.stderr)
            raise SystemExit(1) from None
        wall = time.perf_counter() - t0
        record_timing(stage_cfg, nb, wall, reuse)
        print(f"=== {nb} done in {wall:.1f}s ===", flush=True)
    changed = promote_outputs(stage, out)
    print(f"outputs: {changed} file(s) written under {display_path(out)}")
    result = None
    executed = [executed_dir / f"{nb}.ipynb" for nb in NOTEBOOKS]
    if report and ANALYSE_NOTEBOOK in notebooks and all(p.is_file() for p in executed):
        findings = cfg.results_dir / "findings.md"
        result = build_report(executed, cfg.reports_dir / "index.html", REPORT_TITLE,
                              intro=f"Profile `{profile}`, seed {cfg.seed}. Every number below comes from the "
                                    f"records in `{display_path(cfg.results_dir)}/` that the notebooks wrote.",
                              findings=findings.read_text() if findings.is_file() else "")
        print(f"report: {result}")
        if findings.is_file() and cfg.out.resolve() == ROOT.resolve():  # the committed profile: README too
            update_readme_findings(ROOT / "README.md", findings.read_text())
            print("README.md: findings block updated from results/findings.md")
    print(f"chain finished in {time.perf_counter() - start:.1f}s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lwta_utils.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="a file in params/ (smoke, default, paper)")
    ap.add_argument("--out", default=None, help="output root (default: the profile's out_dir)")
    ap.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    ap.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override any config key")
    ap.add_argument("--notebooks", nargs="*", default=None, help=f"a subset of {' '.join(NOTEBOOKS)}")
    ap.add_argument("--force", action="store_true",
                    help="retrain and re-evaluate everything (default: keep checkpoints and records whose "
                         "configuration hash matches)")
    ap.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old commands
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    ap.add_argument("--no-report", action="store_true", help="do not render reports/index.html")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        out = None if args.out is None else display_path(Path(args.out).resolve())
        run_chain(args.profile, out_dir=out, seed=args.seed, device=args.device,
                  overrides=parse_set(args.set), notebooks=args.notebooks, reuse=not args.force,
                  kernel=args.kernel, report=not args.no_report)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
