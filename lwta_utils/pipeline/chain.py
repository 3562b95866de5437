"""The headless chain: every notebook in order with papermill, then the report.

    python -m lwta_utils.pipeline --profile default
    python -m lwta_utils.pipeline --profile smoke --out runs/smoke --set seed=1
    python -m lwta_utils.pipeline --profile default --notebooks 05_attacks 07_analysis
    python -m lwta_utils.pipeline --profile smoke --verbose   # papermill's full log instead of progress bars

The console shows one progress line per notebook (cells done, elapsed, the running step) and the
kernel's innermost bar under it; the notebooks' outputs go to the executed notebooks and the
report, never to the console (``--verbose`` brings papermill's log back). At the end: a summary
table (each notebook's wall time and what it did) and the report's path; on failure, the same
table up to the failing notebook, then the notebook, the cell and the error's last lines.

The configuration is validated before any notebook runs; a bad parameter
stops the chain with one message (exit code 2) and nothing written. Checkpoints
and evaluation records whose configuration hash matches are reused (``--force``
redoes everything), so changing a parameter retrains and re-evaluates exactly
what depends on it, and rerunning the analysis alone takes seconds; a notebook
whose inputs are unchanged since its last successful run is not run at all
(``pipeline.nbcache``), nor is the report rendered again. The
notebooks write into a working copy (``<out>/.chain-run/``) that replaces the
outputs only when every notebook succeeded: a failing notebook stops the chain
with its name and cell (exit code 1), its executed copy holding the error stays
in ``reports/executed/``, and the last good models, results, figures and report
are left untouched. The committed outputs (``out_dir`` = the repository itself) are written only
from a clean checkout, so that every record's commit is the exact code that wrote it.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from jupyter_client import AsyncKernelManager

from lwta_utils.analysis.headline import HEADLINE_FIGURE, headline_caption
from lwta_utils.analysis.sources import references_markdown
from lwta_utils.config.loading import load_config, parse_set
from lwta_utils.config.schema import ANALYSE_NOTEBOOK, EVALUATE_NOTEBOOK, NOTEBOOKS, STAGE_NOTEBOOK, StudyConfig
from lwta_utils.core.errors import ConfigError, bad
from lwta_utils.core.jsonfiles import read_versioned, write_versioned
from lwta_utils.core.paths import NOTEBOOKS_DIR, ROOT, display_path
from lwta_utils.core.progress import ENV as PROGRESS_ENV
from lwta_utils.core.provenance import provenance, uncommitted_code
from lwta_utils.pipeline.console import Console, NotebookRun, counts_work, open_hint, summary_table
from lwta_utils.pipeline.nbcache import Digests, NotebookCache, output_files
from lwta_utils.pipeline.report import build_report, check_report, expected_anchors, update_readme_findings

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


def did_work(entry: dict) -> bool:
    """Whether a ``chain_timing.json`` entry timed a run that trained or evaluated something: what
    it did lists a count other than checkpoints or records reused ('3 models evaluated; ...')."""
    did = entry.get("did", "")
    return ";" in did and counts_work(did.split(";")[0].split(","))  # no ';': nothing was counted


def record_timing(cfg: StudyConfig, notebook: str, wall_s: float, reuse: bool, did: str = "",
                  computed: bool = True) -> None:
    """Add one notebook's wall time to ``results/chain_timing.json`` (the other notebooks' last
    times are kept, each with its own date, commit, threads and whether checkpoints were reused).
    ``computed``: whether the run trained or evaluated anything; a run that only reused
    checkpoints and records keeps, as ``last_computed``, the entry of the last run that did, so
    that the cost of the work survives a rerun that reused it."""
    path = cfg.results_dir / "chain_timing.json"
    try:
        rec = read_versioned(path, "chain_timing") if path.is_file() else {}
    except ConfigError:  # an older layout: start the table again
        rec = {}
    if rec.get("profile") != cfg.profile:
        rec = {"profile": cfg.profile, "notebooks": {}}
    prov = provenance()
    entry = {"wall_s": round(wall_s, 1), "finished": prov["created"], "git_sha": prov["git_sha"],
             "threads": torch.get_num_threads(), "reused_checkpoints": reuse, "did": did, "computed": computed}
    prev = rec["notebooks"].get(notebook)
    if not computed and prev:  # a notebook that counts its work reused it all: keep the run that did it
        last = prev if did_work(prev) else prev.get("last_computed")
        if last and did_work(last):
            entry["last_computed"] = {k: v for k, v in last.items() if k != "last_computed"}
    rec["notebooks"][notebook] = entry
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


def check_clean_checkout(out: Path, root: Path | None = None) -> str | None:
    """Refuse (``ConfigError``, before any work) to write the committed outputs (``out`` = ``root``,
    default: the repository) from a checkout whose code differs from its commit: every record
    carries the commit it was computed at, and that must be the exact code. Returns a note when
    ``root`` is not a git checkout (nothing to check), else None."""
    root = ROOT if root is None else root
    if Path(out).resolve() != Path(root).resolve():
        return None
    dirty = uncommitted_code(root)
    if dirty is None:
        return "note: not a git checkout: the records cannot name the commit that wrote them"
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise bad("out_dir", display_path(out), f"the committed outputs are written only from a clean checkout "
                  f"(every record names its commit), and {len(dirty)} path(s) differ from the commit: {shown}; "
                  f"commit them first, or write elsewhere with --out runs/<name>")
    return None


def _quiet_kernel_manager(log_path: Path) -> type:
    """A kernel manager whose kernel writes its own stdout / stderr (startup warnings, native
    libraries' messages) to ``log_path`` instead of the console."""

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            with open(log_path, "ab") as fh:
                kw["stdout"], kw["stderr"] = fh, fh
                return await super()._async_launch_kernel(kernel_cmd, **kw)

    return QuietKernelManager


def _snapshot(stage: Path) -> dict:
    return {f: (st.st_ino, st.st_mtime_ns, st.st_size) for f, st in output_files(stage, STAGED)}


def _changed(before: dict, after: dict) -> int:
    return sum(1 for f, sig in after.items() if before.get(f) != sig)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _error_tail(exc, n: int = 8) -> str:
    lines = [ANSI.sub("", ln) for ln in getattr(exc, "traceback", []) or []]
    lines = [ln for chunk in lines for ln in chunk.splitlines() if ln.strip()]
    return "\n".join("    " + ln for ln in lines[-n:])


def kernel_env(progress_file: Path) -> dict[str, str]:
    """What the notebook kernels get in their environment: where to report progress, and this
    checkout first on ``PYTHONPATH``, so that they import the same ``lwta_utils`` as the chain that
    starts them (an editable install elsewhere would otherwise win, and a chain run from a second
    working tree would write into the first one's outputs)."""
    path = os.environ.get("PYTHONPATH", "")
    return {PROGRESS_ENV: str(progress_file),
            "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in path.split(os.pathsep) if p])}


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def render_report(cfg: StudyConfig, profile: str, console: Console) -> Path:
    """``<out>/reports/index.html`` from the executed notebooks, the findings, the headline figure and
    the references; then, where headless Chromium is installed, its first screen checked at 1366x768
    and saved as ``reports/first_screen.png``."""
    executed_dir = cfg.reports_dir / "executed"
    findings = cfg.results_dir / "findings.md"
    headline = cfg.figures_dir / HEADLINE_FIGURE
    report = build_report([executed_dir / f"{nb}.ipynb" for nb in NOTEBOOKS], cfg.reports_dir / "index.html",
                          REPORT_TITLE,
                          intro=f"Profile `{profile}`, seed {cfg.seed}. Every number comes from the records in "
                                f"`{display_path(cfg.results_dir)}/` that the notebooks wrote.",
                          findings=findings.read_text() if findings.is_file() else "",
                          headline=(headline, headline_caption(cfg)) if headline.is_file() else None,
                          references=references_markdown())
    if shutil.which("chromium") and shutil.which("chromedriver"):
        try:
            res = check_report(report, expected_anchors(executed_dir, list(NOTEBOOKS)),
                               screenshot=cfg.reports_dir / "first_screen.png", first=True)
            console.say(f"report checked in headless Chromium ({res['images']} images, {res['bytes'] / 1e6:.1f} MB); "
                        f"first screen: {display_path(cfg.reports_dir / 'first_screen.png')}")
        except (AssertionError, ImportError, OSError) as exc:
            console.say(f"warning: report check: {exc}")
    return report


def run_chain(profile: str, *, out_dir: str | None = None, seed: int | None = None, device: str | None = None,
              overrides: dict | None = None, notebooks: list[str] | None = None, reuse: bool = True,
              kernel: str = "python3", report: bool = True, verbose: bool = False,
              console: Console | None = None) -> Path | None:
    """Run the chain; returns the report path (or None without a report).

    The notebooks write into a working copy (``<out>/.chain-run/``) of the outputs; only when
    every notebook succeeded are its files moved over ``<out>``'s and the report rendered. A
    failing notebook leaves the last good models, results, figures and report untouched.
    ``reuse`` (the default) keeps checkpoints and evaluation records whose configuration hash
    matches; ``reuse=False`` retrains and re-evaluates everything. ``verbose``: papermill's log
    (every cell, every output) instead of the progress lines."""
    import papermill as pm

    console = console or Console.auto(verbose)
    cfg = load_config(profile, seed=seed, device=device, out_dir=out_dir, overrides=overrides)
    notebooks = list(notebooks or NOTEBOOKS)
    for nb in notebooks:
        if nb not in NOTEBOOKS:
            raise bad("notebooks", nb, f"choose from {', '.join(NOTEBOOKS)}")
    notebooks = [nb for nb in NOTEBOOKS if nb in notebooks]
    preflight(cfg, notebooks)
    note = check_clean_checkout(cfg.out)
    if note:
        console.say(note)
    out, stage = cfg.out, cfg.out / STAGE_DIR
    stale = remove_stale_temporaries(out)
    if stale:
        console.say(f"removed {stale} temporary file(s) left by an interrupted run")
    stage_outputs(out, stage)
    stage_cfg = load_config(profile, seed=seed, device=device, out_dir=str(stage), overrides=overrides)
    executed_dir = cfg.reports_dir / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "seed": cfg.seed, "device": cfg.device, "out_dir": display_path(stage),
              "overrides": overrides or {}, "reuse_checkpoints": reuse}
    console.say(f"profile {profile}: {len(notebooks)} notebook(s), outputs under {display_path(out)}/"
                + ("" if console.mode == "verbose" else " (--verbose: the full log)"))
    start, runs = time.perf_counter(), []
    cache, digests, ran = NotebookCache(executed_dir, enabled=reuse, cfg=cfg, params=params), Digests(STAGED), {}
    for i, nb in enumerate(notebooks, 1):
        src, dst = NOTEBOOKS_DIR / f"{nb}.ipynb", executed_dir / f"{nb}.ipynb"
        progress_file = stage / "progress.json"
        progress_file.unlink(missing_ok=True)
        run = NotebookRun(nb, i, len(notebooks))
        runs.append(run)
        state = digests(stage)
        if cache.unchanged(nb, state):  # inputs unchanged since its last run: its outputs and executed copy stay
            run.skipped, run.wall_s = True, 0.0
            console.say(f"[{i}/{len(notebooks)}] {nb:<24} unchanged since its last run: not run again")
            continue
        cache.invalidate(nb)
        before = _snapshot(stage)
        quiet = {} if console.mode == "verbose" else {
            "kernel_manager_class": _quiet_kernel_manager(executed_dir / f"{nb}.kernel.log")}
        console.start(run, progress_file)
        ok = False
        try:
            with _env(kernel_env(progress_file)):
                # shutdown_kernel="immediate": the kernel is stopped once its last cell has answered (every
                # output received, every file written and closed), not asked to exit: a graceful exit
                # (torch's, numba's threads) took 1.4 to 3.3 s a notebook, about 18 s of the smoke chain
                pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel, cwd=str(NOTEBOOKS_DIR),
                                    log_output=console.mode == "verbose", progress_bar=False, report_mode=False,
                                    shutdown_kernel="immediate", **quiet, **console.engine_hooks())
            ok = True
        except pm.PapermillExecutionError as exc:
            run.failed_cell = exc.cell_index
            console.set_files_written(_changed(before, _snapshot(stage)))
            console.finish(False)
            console.say("\n" + summary_table(runs, time.perf_counter() - start))
            print(f"\nFAILED: notebook {nb}.ipynb, cell {exc.cell_index} (execution count {exc.exec_count}): "
                  f"{exc.ename}: {exc.evalue}\n{_error_tail(exc)}\nThe executed copy with the error is "
                  f"{display_path(dst)}\nThe last good outputs under {display_path(out)} are untouched; this run's "
                  f"partial outputs are in {display_path(stage)}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        finally:
            if not ok and run.wall_s is None:  # interrupted (Ctrl-C) or the kernel died: close the display
                console.finish(False)
        console.set_files_written(_changed(before, _snapshot(stage)))
        console.finish(True)
        record_timing(stage_cfg, nb, run.wall_s, reuse, run.did(), computed=run.computed())
        ran[nb] = (state, digests(stage))
    changed = promote_outputs(stage, out)
    cache.save(ran, digests(out))
    result = None
    executed = [executed_dir / f"{nb}.ipynb" for nb in NOTEBOOKS]
    if report and ANALYSE_NOTEBOOK in notebooks and all(p.is_file() for p in executed):
        key = cache.report_key(executed, [cfg.results_dir / "findings.md", cfg.figures_dir / HEADLINE_FIGURE])
        result = cfg.reports_dir / "index.html"
        if cache.report_unchanged(key, result):
            console.say(f"report: unchanged since it was last rendered ({display_path(result)})")
        else:
            cache.save_report(None)
            result = render_report(cfg, profile, console)
            cache.save_report(key)
    console.say("\n" + summary_table(runs, time.perf_counter() - start))
    console.say(f"outputs: {changed} file(s) changed under {display_path(out)}/")
    findings = cfg.results_dir / "findings.md"
    committed = cfg.out.resolve() == ROOT.resolve()  # the committed outputs: the README's findings block too
    if result is not None and findings.is_file() and committed and update_readme_findings(ROOT / "README.md",
                                                                                          findings.read_text()):
        console.say("README.md: findings block updated from results/findings.md")
    if result is not None:
        console.say(open_hint(display_path(result)))
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
    ap.add_argument("--verbose", action="store_true",
                    help="papermill's full log (every cell and every output) instead of progress lines")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s",
                        stream=sys.stdout)
    try:
        out = None if args.out is None else display_path(Path(args.out).resolve())
        run_chain(args.profile, out_dir=out, seed=args.seed, device=args.device,
                  overrides=parse_set(args.set), notebooks=args.notebooks, reuse=not args.force,
                  kernel=args.kernel, report=not args.no_report, verbose=args.verbose)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
