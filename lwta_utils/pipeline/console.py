"""The chain's console: one progress line per notebook, the running step's bar, a summary at the end.

Three modes (``Console(mode)``):

- ``bars`` (a terminal): per notebook one tqdm line, ``[4/7] 04_adversarial_training  7/15 cells
  |███   | 02:31  training lwta_pgdat epoch 6/10``, and under it one line for the innermost bar
  of the kernel (a training epoch's batches, an evaluation's attacks), read from the progress
  file the kernel writes (``lwta_utils.core.progress``); the notebook's line stays when it ends.
- ``lines`` (output to a file or a pipe): one line when a notebook ends, and a line every
  ``heartbeat_s`` with the step that runs.
- ``verbose``: papermill's log (every cell and every output of the notebooks), as before.

The notebooks' own outputs never reach the console outside ``verbose``: they are in the executed
notebooks and the report.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lwta_utils.core.progress import read_progress

MODES = ("bars", "lines", "verbose")


@dataclass
class NotebookRun:
    """One notebook's run as the console and the summary see it."""

    name: str
    index: int
    of: int
    cells_total: int = 0
    cells_done: int = 0
    cell_line: str = ""              # the running cell's code (shown when the kernel says nothing)
    cell_started: float = 0.0
    started: float = field(default_factory=time.monotonic)
    wall_s: float | None = None
    tallies: dict = field(default_factory=dict)
    files_written: int = 0
    failed_cell: int | None = None
    skipped: bool = False            # inputs unchanged since its last run (``pipeline.nbcache``): not run

    def computed(self) -> bool:
        """Whether the notebook trained or evaluated anything (not only reused checkpoints and records)."""
        return not self.skipped and (not self.tallies or counts_work(self.tallies))

    def did(self) -> str:
        if self.skipped:
            return "unchanged since its last run: not run again"
        parts = [f"{n} {_singular(what) if n == 1 else what}" for what, n in self.tallies.items()]
        files = f"{self.files_written} file{'s' if self.files_written != 1 else ''} written"
        return ", ".join(parts) + ("; " if parts else "") + files


def counts_work(counts) -> bool:
    """Whether tally names ('models evaluated', '3 records reused', ...) count any work other than reuse."""
    return any(not c.strip().endswith("reused") for c in counts)


def _singular(what: str) -> str:
    """'models trained' -> 'model trained' (the first word's plural s)."""
    head, _, tail = what.partition(" ")
    return (head[:-1] if head.endswith("s") else head) + (" " + tail if tail else "")


def fmt_seconds(s: float) -> str:
    """'4.1s', '3m 05s', '1h 02m'."""
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _size() -> dict:
    """tqdm's ``ncols`` and ``nrows``: the terminal's size, or 100 x 20 where it does not say (a
    pseudo-terminal of size 0, in which tqdm would draw nothing)."""
    cols, rows = shutil.get_terminal_size((100, 20))
    return {"ncols": cols if cols >= 40 else 100, "nrows": rows if rows >= 5 else 20}


def _code_line(source: str) -> str:
    """The cell's code on one line (its statements joined by '; ', comments left out)."""
    return "; ".join(ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#"))


class Console:
    """What the chain prints while notebooks run (see the module's docstring)."""

    def __init__(self, mode: str = "lines", stream=None, heartbeat_s: float = 60.0, poll_s: float = 0.25):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: choose from {MODES}")
        self.mode, self.stream, self.heartbeat_s, self.poll_s = mode, stream or sys.stdout, heartbeat_s, poll_s
        self.run: NotebookRun | None = None
        self._progress_file: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = self._inner = None
        self._inner_id = None

    @staticmethod
    def auto(verbose: bool = False, stream=None) -> Console:
        stream = stream or sys.stdout
        return Console("verbose" if verbose else "bars" if stream.isatty() else "lines", stream)

    def say(self, text: str) -> None:
        """One line of the chain's own (between notebooks)."""
        print(text, file=self.stream, flush=True)

    # ---- papermill / nbclient hooks (called in the main thread while the kernel runs) ----
    def engine_hooks(self) -> dict:
        return {"on_notebook_start": self._on_notebook_start, "on_cell_start": self._on_cell_start,
                "on_cell_executed": self._on_cell_executed}

    def _on_notebook_start(self, notebook=None, **_):
        self.run.cells_total = sum(1 for c in notebook.cells if c.cell_type == "code" and c.source.strip())

    def _on_cell_start(self, cell=None, cell_index=None, **_):
        if cell.cell_type == "code" and cell.source.strip():
            self.run.cell_line, self.run.cell_started = _code_line(cell.source), time.time()

    def _on_cell_executed(self, cell=None, cell_index=None, execute_reply=None, **_):
        self.run.cells_done += 1
        if execute_reply is not None and execute_reply.get("content", {}).get("status") == "error":
            self.run.failed_cell = cell_index

    # ---- one notebook ----
    def start(self, run: NotebookRun, progress_file: Path | None) -> None:
        self.run, self._progress_file = run, progress_file
        if self.mode == "verbose":
            self.say(f"\n=== [{run.index}/{run.of}] {run.name} ===")
            return
        if self.mode == "bars":
            self._bar = tqdm(total=1, desc=f"[{run.index}/{run.of}] {run.name:<24}", file=self.stream, leave=True,
                             position=0, **_size(), bar_format="{desc} {n}/{total} cells |{bar:12}| {elapsed}"
                                                                    "{postfix}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def finish(self, ok: bool) -> None:
        run = self.run
        run.wall_s = time.monotonic() - run.started
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        state = read_progress(self._progress_file) if self._progress_file else None
        if state:
            run.tallies = dict(state.get("tallies", {}))
        end = f"done in {fmt_seconds(run.wall_s)}" if ok else "FAILED"
        if self.mode == "verbose":
            self.say(f"=== {run.name} {end} ===")
        elif self.mode == "bars":
            self._close_inner()
            self._bar.total, self._bar.n = max(run.cells_total, 1), run.cells_done
            self._bar.set_postfix_str(end, refresh=False)
            self._bar.close()
            self._bar = None
        else:
            self.say(f"[{run.index}/{run.of}] {run.name:<24} {run.cells_done}/{run.cells_total} cells  {end}")

    def set_files_written(self, n: int) -> None:
        self.run.files_written = n

    # ---- the poller (its own thread: the only one drawing while a notebook runs) ----
    def _status(self, state: dict | None) -> str:
        run = self.run
        if state and state.get("status") and state.get("status_time", 0) >= run.cell_started - 1:
            return state["status"]
        return run.cell_line

    def _poll(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(self.poll_s):
            state = read_progress(self._progress_file) if self._progress_file else None
            run = self.run
            status = self._status(state)
            if self.mode == "lines":
                if time.monotonic() - last_beat >= self.heartbeat_s:
                    last_beat = time.monotonic()
                    self.say(f"      {run.name} {run.cells_done}/{run.cells_total} cells "
                             f"{fmt_seconds(time.monotonic() - run.started)}: {status[:100]}")
                continue
            width = _size()["ncols"]
            bar = self._bar
            bar.total, bar.n = max(run.cells_total, 1), run.cells_done
            room = max(10, width - len(bar.desc) - 40)
            bar.set_postfix_str(status if len(status) <= room else status[:room - 1] + "…", refresh=False)
            bar.refresh()
            bars = (state or {}).get("bars") or []
            self._draw_inner(bars[-1] if bars else None)

    def _draw_inner(self, b: dict | None) -> None:
        if b is None or b.get("total") in (None, 0):
            self._close_inner()
            return
        if self._inner is None or self._inner_id != b["id"]:
            self._close_inner()
            self._inner = tqdm(total=b["total"], file=self.stream, leave=False, position=1, smoothing=0, **_size(),
                               bar_format="    {desc} {percentage:3.0f}%|{bar:20}| {n}/{total} "
                                          "[{elapsed}<{remaining}]")
            self._inner_id = b["id"]
        self._inner.start_t = self._inner._time() - float(b.get("elapsed", 0.0))
        self._inner.total, self._inner.n = b["total"], b["n"]
        self._inner.set_description_str(str(b.get("desc", ""))[:40], refresh=False)
        self._inner.refresh()

    def _close_inner(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner, self._inner_id = None, None


def summary_table(runs: list[NotebookRun], total_s: float) -> str:
    """Each notebook with its wall time and what it did, and the total."""
    w = max([len(r.name) for r in runs] + [len("notebook")])
    lines = [f"{'notebook':<{w}}  {'wall time':>9}  what it did"]
    for r in runs:
        wall = fmt_seconds(r.wall_s) if r.wall_s is not None else "-"
        did = r.did() if r.failed_cell is None else f"FAILED at cell {r.failed_cell}; " + r.did()
        lines.append(f"{r.name:<{w}}  {wall:>9}  {did}")
    lines.append(f"{'total':<{w}}  {fmt_seconds(total_s):>9}")
    return "\n".join(lines)


def open_hint(report: str) -> str:
    """How to open the report: the file in a browser, or served over HTTP."""
    folder = str(Path(report).parent)
    return (f"report: {report}\n"
            f"  open it:  xdg-open {report}   (macOS: open {report})\n"
            f"  or serve: python -m http.server --directory {folder} 8000   then http://localhost:8000/")
