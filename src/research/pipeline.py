"""Running the notebooks of a cohort with papermill, safely and only when something changed.

``research run --cohort NAME`` ingests the cohort's configured sources (idempotently),
then executes every numbered notebook in ``notebooks/`` in order with papermill, each
in its own process with a time limit (notebooks that :mod:`research.schedule` lets run at
the same time run up to ``jobs`` at once, with the same tables), exports each to HTML without code cells, writes
``index.html`` and a ``manifest.json``, and only then swaps the new folder in for the
cohort's last report. So:

- a run writes into ``reports/.NAME.run-<id>/`` and replaces ``reports/NAME/`` only on
  success: a failed or killed run never leaves a half-written report in place of the
  last good one (a failed run's folder is kept as ``reports/.NAME.failed-<id>/`` with the
  partially executed notebook, for debugging);
- a lock (``reports/.NAME.lock``) makes sure two runs never write the same cohort at once;
- ``--changed`` skips a cohort whose fingerprint (input files' hashes, configuration,
  notebooks, package version) equals that of its last successful run;
- the cohort name is checked first (:func:`research.names.cohort_name`): only its
  canonical form ever becomes part of a path, so nothing outside the reports folder and
  the warehouse is written or deleted;
- every run, good or not, is recorded in ``reports/runs.jsonl`` and the cross-cohort
  index: a failed cohort is listed there with its reason; failed folders beyond the
  newest ``keep_failed`` (default 3) of a cohort are removed;
- papermill runs with ``PR_SET_PDEATHSIG`` (Linux), so killing ``research run`` kills
  its notebook process, and the notebook's kernel follows its parent (ipykernel's
  parent poller); a run folder left by a killed run is closed as ``killed`` (kept as a
  failed folder) by the next run of the cohort, which holds the lock;
- no error reaches the user as a traceback: an unexpected one is logged to
  ``error.log`` in the failed folder and reported in one line.

Exit codes of ``research run`` (see :data:`EXIT_CODES`): 0 every cohort ran or was
unchanged; 1 user error (bad configuration, unknown cohort); 2 data rejected in part
while ingesting (the run still happened); 3 a notebook failed; 4 a cohort was locked
by another run and skipped.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import nbformat
import yaml

import research
from research.cohort_config import LANGUAGES, CohortConfig, find_config
from research.errors import ConfigError, ResearchError
from research.faults import DiskFull, RunCrashed, WarehouseCorrupt, disk_full, is_disk_full, write_traceback
from research.locks import LockedError, file_lock
from research.schedule import check_jobs, default_jobs, waits_for
from research.names import cohort_name, fold
from research.paths import default_warehouse, notebooks_dir, project_root, resolve

__all__ = [
    "KEEP_FAILED", "CohortLock", "EXIT_CODES", "NotebookRun", "RunResult", "close_dead_runs", "config_parameters",
    "ingest_sources", "input_files", "last_good", "notebook_plan", "prune_failed", "remote_references",
    "report_needs_refresh", "run_all",
    "run_cohort", "run_one", "scheduled_notebooks",
]

EXIT_CODES = {
    0: "success: every cohort ran, or was unchanged and skipped",
    1: "user error: bad configuration, unknown cohort or missing file (message printed)",
    2: "data rejected in part while ingesting the cohort's sources (summary printed; the run went on)",
    3: "a notebook failed (the message names cohort, notebook, cell and error) or a run stopped on an unexpected error "
       "(its traceback is in error.log in the failed folder); the last good report, if any, is kept",
    4: "another run holds the cohort's lock; this cohort was skipped",
}
#: Notebooks that are not part of a cohort's scheduled run.
NOT_SCHEDULED = ("00_tour",)
#: Notebooks that only run when the cohort has a predecessor to compare with.
NEEDS_PREDECESSOR = ("07_compare_cohorts",)
#: Failed run folders kept per cohort (older ones are removed); a cohort file's ``keep_failed`` overrides it.
KEEP_FAILED = 3
_RUN_ID = r"\d{8}T\d{6}Z-[0-9a-f]{6}"
KEY_LIBRARIES = ("numpy", "pandas", "scipy", "statsmodels", "pymc", "pytensor", "arviz", "duckdb", "papermill", "nutpie")


@dataclass
class NotebookRun:
    notebook: str
    started: str
    ended: str
    seconds: float
    outcome: str  # "ok", "failed", "timeout", "stopped" (another notebook of the run failed)
    parameters: dict
    error: str | None = None
    cell: int | None = None


@dataclass
class RunResult:
    cohort: str
    status: str  # "ok", "failed", "skipped-unchanged", "locked"
    exit_code: int
    report_dir: Path | None = None
    manifest: dict = field(default_factory=dict)
    message: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def scheduled_notebooks(*, with_compare: bool = False, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks a cohort run executes, in order."""
    folder = folder or notebooks_dir()
    out = []
    for nb in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        if nb.stem in NOT_SCHEDULED:
            continue
        if nb.stem in NEEDS_PREDECESSOR and not with_compare:
            continue
        out.append(nb)
    return out


def notebook_parameters(path: Path) -> dict:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(path))


#: Python types a notebook parameter's default stands for -> (types accepted, the name in messages)
_PARAM_TYPES = {
    bool: ((bool,), "true or false"),
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    str: ((str,), "a text"),
    list: ((list, tuple), "a list"),
    dict: ((dict,), "a mapping"),
}


def _declared_type(spec: dict):
    """The type a notebook parameter takes, read off its default (None: any, for a default of None)."""
    import ast

    try:
        default = ast.literal_eval(spec.get("default", "None"))
    except (ValueError, SyntaxError):
        return None
    return type(default) if type(default) in _PARAM_TYPES else None


def check_parameter(name: str, value, spec: dict, *, notebook: str, cohort: str) -> None:
    """Raise a :class:`ConfigError` when ``value`` is not of the type notebook parameter ``name`` takes.

    papermill injects any value; a wrong type would fail deep inside a notebook, or not at all.
    """
    kind = _declared_type(spec)
    if kind is None or value is None:
        return
    accepted, words = _PARAM_TYPES[kind]
    if isinstance(value, accepted) and (kind is bool or not isinstance(value, bool)):
        return
    raise ConfigError(
        f"parameter {name!r} of cohort {cohort!r} must be {words} ({kind.__name__}, as notebook {notebook} declares it "
        f"with default {spec.get('default')}), got {value!r} ({type(value).__name__}); fix it in the cohort file"
    )


def config_parameters(config: CohortConfig | None, language: str) -> dict:
    """The notebook parameters a cohort file sets: its fields, then its ``parameters``."""
    return {
        "min_cell_size": config.min_cell_size if config else 10,
        "language": language,
        "kc_model": config.kc_model if config else None,
        "predecessor": config.predecessor if config else None,
        "changelog": str(config.changelog) if config and config.changelog else None,
        "recommend_config": config.thresholds if config and config.thresholds else None,
        **(config.parameters if config else {}),
    }


def notebook_plan(nbs: list[Path], base: dict, *, cohort: str, given: set[str] = frozenset()) -> list[tuple[Path, dict]]:
    """The parameters each notebook gets, checked before any notebook runs.

    ``base`` holds every setting of the run (the cohort file's fields and its
    ``parameters``); a notebook gets those its ``parameters`` cell declares. ``given`` (the
    cohort file's ``parameters``) must each be declared by some notebook, and every value
    must have the type the notebook's default has; otherwise a :class:`ConfigError` names
    the key, the type expected and the valid names.
    """
    declared_any: set[str] = set()
    plan = []
    for nb in nbs:
        declared = notebook_parameters(nb)
        declared_any |= set(declared)
        params = {k: v for k, v in base.items() if k in declared and v is not None}
        for name, value in params.items():
            check_parameter(name, value, declared[name], notebook=Path(nb).stem, cohort=cohort)
        plan.append((nb, params))
    unknown = sorted(set(given) - declared_any)
    if unknown:
        raise ConfigError(
            f"parameter(s) {', '.join(unknown)} in the configuration of cohort {cohort!r} are not declared by any "
            f"notebook; declared parameters: {', '.join(sorted(declared_any))}"
        )
    return plan


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_commit(root: Path) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def environment() -> dict:
    versions = {}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "libraries": versions}


def input_files(cohort: str, warehouse: Path) -> tuple[list[dict], dict[str, int]]:
    """The raw files the cohort's warehouse rows came from (with their content hashes), and the row counts."""
    from research.store import open_warehouse

    with open_warehouse(warehouse, read_only=True) as wh:
        loads = wh.con.execute(
            """SELECT source_file, file_sha256, format, min(loaded_at) AS loaded_at,
                      sum(n_read) AS n_read, sum(n_loaded) AS n_loaded, sum(n_rejected) AS n_rejected
               FROM loads WHERE cohort = ? GROUP BY ALL ORDER BY loaded_at, source_file""",
            [cohort],
        ).fetchall()
        counts = wh.counts(cohort)
    files = [
        {"file": f, "sha256": h, "format": fmt, "loaded_at": str(t), "rows_read": int(r), "rows_loaded": int(l), "rows_rejected": int(x)}
        for f, h, fmt, t, r, l, x in loads
    ]
    return files, counts


def fingerprint(cohort: str, files: list[dict], config: CohortConfig | None, notebooks: list[Path], language: str | None = None) -> str:
    """A hash of everything a run's output depends on.

    The configured sources are ingested before this is taken, so a changed source file
    shows up as a new content hash among the cohort's loaded ``files``; it is not hashed again.
    A KC-model file the cohort file adopts (``kc_model: {name, file}``) is hashed here.
    """
    parts = [f"cohort={cohort}", f"version={research.__version__}"]
    if language is not None:
        parts.append(f"language={language}")
    if config is not None:
        parts.append("config=" + sha256_bytes(config.text.encode("utf-8")))
        kcm = getattr(config, "kc_model_file", None)
        if kcm is not None:  # the KC-model file the cohort file adopts: its content, not only its name
            parts.append("kc_model_file=" + (sha256_bytes(Path(kcm).read_bytes()) if Path(kcm).is_file() else "missing"))
    parts += sorted(f"loaded={f['sha256']}" for f in files)
    parts += [f"notebook={nb.name}:{sha256_bytes(nb.read_bytes())}" for nb in notebooks]
    return sha256_bytes("\n".join(parts).encode("utf-8"))


class CohortLock:
    """An exclusive, non-blocking lock on one cohort's report folder (see :mod:`research.locks`)."""

    def __init__(self, reports: Path, cohort: str, timeout: float = 0):
        # names that differ only by case share a lock: they share a folder on a case-insensitive file system
        self.cohort = cohort
        self.path = reports / f".{fold(cohort)}.lock"
        self.timeout = timeout
        self._cm = None

    def __enter__(self) -> CohortLock:
        cm = file_lock(self.path, timeout=self.timeout, what=f"cohort {self.cohort!r}")
        try:
            cm.__enter__()
        except LockedError as exc:
            raise LockedError(f"cohort {self.cohort!r} is being run by another process ({exc.holder}); skipped") from None
        self._cm = cm
        return self

    def __exit__(self, *exc) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(None, None, None)


def _first_error(nb_path: Path) -> tuple[int | None, str | None]:
    """(code cell number, 'Name: message') of the first error output in an executed notebook."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception:  # noqa: BLE001 - a half-written notebook is no reason to hide the real error
        return None, None
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        n += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return n, f"{out.get('ename')}: {out.get('evalue')}"
    return None, None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when its parent dies (``PR_SET_PDEATHSIG``)."""

    def set_pdeathsig() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return  # not Linux: the run's own time limit is the only bound
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(137)

    return set_pdeathsig


@dataclass
class _Started:
    """A notebook's process (:mod:`research.launch`, in its own process group): its kernel
    starting or waiting until :meth:`go`, then running the notebook."""

    nb: Path
    out_nb: Path
    parameters: dict
    log: Path
    proc: subprocess.Popen
    timeout_s: int
    started: str = ""
    t0: float = 0.0
    sockets: str = ""  # the folder of its kernel's sockets (see research.launch)

    def go(self) -> None:
        """Run the notebook now (its time limit counts from here)."""
        self.started, self.t0 = _now(), time.perf_counter()
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it died while starting: its exit status and log say why

    def overdue(self) -> bool:
        return time.perf_counter() - self.t0 > self.timeout_s


def _start_notebook(nb: Path, out_nb: Path, parameters: dict, *, timeout_s: int, log: Path) -> _Started:
    """Start a notebook's process: it starts the kernel and waits for :meth:`_Started.go`."""
    cmd = [sys.executable, "-m", "research.launch", str(nb), str(out_nb), str(project_root()), yaml.safe_dump(parameters)]
    sockets = tempfile.mkdtemp(prefix="research-kernel-")  # removed by the process, or by _stop when it is killed
    env = {**os.environ, "RESEARCH_HOME": str(project_root()), "MPLBACKEND": "Agg", "RESEARCH_KERNEL_SOCKETS": sockets}
    with open(log, "ab") as logfh:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=logfh, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, cwd=project_root(),
                                preexec_fn=_die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None)
    return _Started(nb, out_nb, parameters, log, proc, timeout_s, sockets=sockets)


def _stop(run: _Started) -> None:
    """Kill a notebook's process group (papermill and its kernel) and reap papermill."""
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    run.proc.wait()
    shutil.rmtree(run.sockets, ignore_errors=True)  # a killed process cleans nothing up


def _finish_notebook(run: _Started, outcome: str, error: str | None = None) -> NotebookRun:
    """The record of a notebook that ended (``ok``, ``failed``, ``timeout`` or ``stopped``)."""
    cell = None
    if outcome == "failed":
        cell, error = _first_error(run.out_nb)
        if error is None:
            tail = run.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            error = " / ".join(tail) or "papermill failed before running the notebook"
    elif outcome == "timeout":
        error = f"ran longer than its time limit of {run.timeout_s} s and was stopped"
        cell, _ = _first_error(run.out_nb)
    return NotebookRun(run.nb.name, run.started, _now(), round(time.perf_counter() - run.t0, 2), outcome, run.parameters,
                       error, cell)


def _append_log(run: _Started, log: Path, outcome: str) -> None:
    """Move a notebook's own log to the end of the run's log, under a line naming it."""
    with open(log, "ab") as out:
        out.write(f"== {run.nb.name} ({outcome})\n".encode())
        out.write(run.log.read_bytes())
    run.log.unlink(missing_ok=True)


def _execute_plan(plan: list[tuple[Path, dict]], run_dir: Path, *, timeout_s: int, jobs: int, say,
                  cohort: str) -> tuple[list[NotebookRun], NotebookRun | None]:
    """Run the plan's notebooks, up to ``jobs`` at once where :mod:`research.schedule` allows.

    A notebook starts when every notebook it waits for has ended well; its process (and
    kernel) is started ahead, while the notebooks before it run, so that at most one more
    process than ``jobs`` exists at a time (:mod:`research.launch`). Each writes its
    own log, appended to ``run.log`` when it ends (so logs never interleave), and is
    exported to HTML once the notebooks its end lets start have started. When one fails or runs out of time, the others
    still running are stopped (recorded as ``stopped``) and none is started; the runs
    are returned in the plan's order with the first that failed.
    """
    waits = waits_for([nb.stem for nb, _ in plan])
    position = {nb.stem: i for i, (nb, _) in enumerate(plan, start=1)}
    pending = list(plan)
    running: list[_Started] = []
    ended: dict[str, NotebookRun] = {}
    failed: NotebookRun | None = None

    def end(run: _Started, outcome: str) -> None:
        nonlocal failed
        result = _finish_notebook(run, outcome, None if outcome != "stopped" else f"stopped because {failed.notebook} failed")
        ended[run.nb.stem] = result
        _append_log(run, run_dir / "run.log", result.outcome)
        if outcome == "ok":
            to_export.append(run)
            say(f"{cohort}: [{position[run.nb.stem]}/{len(plan)}] {run.nb.name} done in {result.seconds:.1f} s")
        elif outcome != "stopped" and failed is None:
            failed = result

    def start(nb: Path, params: dict) -> _Started:
        return _start_notebook(nb, run_dir / nb.name, params, timeout_s=timeout_s, log=run_dir / f".{nb.stem}.log")

    to_export: list[_Started] = []
    warm: dict[str, _Started] = {}  # started ahead: the kernel starts while the notebooks before it run
    while running or to_export or (pending and failed is None):
        ok = {name for name, r in ended.items() if r.outcome == "ok"}
        for nb, params in list(pending):
            if failed is not None or len(running) >= jobs:
                break
            if waits[nb.stem] <= ok:
                say(f"{cohort}: [{position[nb.stem]}/{len(plan)}] {nb.name} ...")
                run = warm.pop(nb.stem, None) or start(nb, params)
                run.go()
                running.append(run)
                pending.remove((nb, params))
        for nb, params in pending:  # at most one process more than may run at once
            if failed is not None or len(running) + len(warm) > jobs:
                break
            if nb.stem not in warm:
                warm[nb.stem] = start(nb, params)
        for run in to_export:  # after the next notebooks started: the export runs while they do
            export_html(run.out_nb, run_dir / f"{run.nb.stem}.html")
        to_export.clear()
        if not running:
            break  # nothing can start: a notebook it waits for did not end well
        time.sleep(0.05)
        for run in list(running):
            rc = run.proc.poll()
            if rc is None and not run.overdue():
                continue
            if rc is None:
                _stop(run)
            running.remove(run)
            end(run, "timeout" if rc is None else "ok" if rc == 0 else "failed")
            if failed is not None:
                for other in running:
                    _stop(other)
                    end(other, "stopped")
                running.clear()
                break
    for run in warm.values():  # never asked to run (a notebook before it failed)
        _stop(run)
        run.log.unlink(missing_ok=True)
    return sorted(ended.values(), key=lambda r: position[Path(r.notebook).stem]), failed


#: nbconvert's lab template without the blocks that load require.js, MathJax, mermaid and
#: the widget manager from a CDN: a report must load nothing from the network.
_SELF_CONTAINED = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
_REMOTE = re.compile(
    r"""<(script|link|img|iframe|source|audio|video|embed|object)\b[^>]*?\b(?:src|href|data)\s*=\s*["']?\s*(?:https?:)?//[^>]*>(?:\s*</\1>)?""",
    re.IGNORECASE,
)
_REMOTE_IMPORT = re.compile(r"""<script\b[^>]*>(?:(?!</script>).)*?\bimport\b[^<]*?["'](?:https?:)?//(?:(?!</script>).)*</script>""",
                            re.IGNORECASE | re.DOTALL)


def remote_references(html: str) -> list[str]:
    """The tags of ``html`` that would load something from the network (script, link, img, iframe ...)."""
    return [m.group(0)[:200] for m in _REMOTE.finditer(html)] + [m.group(0)[:200] for m in _REMOTE_IMPORT.finditer(html)]


def export_html(nb_path: Path, html_path: Path) -> None:
    """Export an executed notebook to self-contained HTML without code cells (for course developers).

    The page loads nothing from the network: no require.js, MathJax, mermaid or widget
    manager from a CDN; any remote script, stylesheet, image or frame an output brings in
    is removed.
    """
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"self_contained.html.j2": _SELF_CONTAINED})],
                            template_file="self_contained.html.j2")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4))
    body = _REMOTE_IMPORT.sub("", _REMOTE.sub("", body))
    html_path.write_text(body, encoding="utf-8")


def _recover(reports: Path, cohort: str) -> None:
    """Undo a swap that a kill interrupted: put the previous report back in place."""
    final, previous = reports / cohort, reports / f".{cohort}.previous"
    if previous.exists() and not final.exists():
        previous.rename(final)
    elif previous.exists():
        shutil.rmtree(previous, ignore_errors=True)


def _swap_in(run_dir: Path, reports: Path, cohort: str) -> Path:
    final, previous = reports / cohort, reports / f".{cohort}.previous"
    if final.exists():
        final.rename(previous)
    run_dir.rename(final)
    shutil.rmtree(previous, ignore_errors=True)
    return final


def _folders(reports: Path, cohort: str, kind: str) -> list[Path]:
    """``reports/.COHORT.KIND-<run id>`` folders of exactly this cohort, oldest first."""
    pattern = re.compile(re.escape(f".{cohort}.{kind}-") + f"({_RUN_ID})")
    found = [p for p in reports.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.name)


def close_dead_runs(reports: Path, cohort: str, reason: str | None = None) -> list[str]:
    """Run folders of this cohort left by killed runs become failed folders, recorded as ``killed`` with ``reason``.

    A report that a kill took out in the middle of its swap is put back first. Called with
    the cohort's lock held: no live run of the cohort can own such a folder.
    """
    from research.report_index import record_run

    _recover(reports, cohort)
    reason = reason or "the run was killed before it finished (its process stopped without cleaning up); closed by the next run"
    closed = []
    for run_dir in _folders(reports, cohort, "run"):
        run_id = run_dir.name.rsplit(".run-", 1)[1]
        kept = reports / f".{cohort}.failed-{run_id}"
        run_dir.rename(kept)
        (kept / "error.log").write_text(f"{_now()}\n{reason}\n", encoding="utf-8")
        record_run(reports, {"cohort": cohort, "run_id": run_id, "finished": _now(), "outcome": "killed",
                             "reason": reason, "failed_dir": kept.name})
        closed.append(kept.name)
    return closed


def prune_failed(reports: Path, cohort: str, keep: int = KEEP_FAILED) -> list[str]:
    """Remove all but the newest ``keep`` failed folders of ``cohort``; returns the names removed."""
    removed = []
    old = _folders(reports, cohort, "failed")
    for folder in old[: max(len(old) - max(keep, 0), 0)]:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def _refuse_case_twin(reports: Path, cohort: str) -> None:
    """Refuse a cohort whose name differs only by case from a cohort that already has a report."""
    key = fold(cohort)
    for p in reports.iterdir():
        if not p.name.startswith(".") and p.name != cohort and fold(p.name) == key and (p / "manifest.json").exists():
            raise ConfigError(
                f"cohort {cohort!r} differs only by case from cohort {p.name!r}, which has a report in {p}; "
                "on a case-insensitive file system they would share one folder. Use one spelling."
            )


def last_manifest(reports: Path, cohort: str) -> dict | None:
    path = reports / cohort / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def last_good(reports: Path, cohort: str) -> str:
    """What a failure message may truthfully say about the cohort's published report."""
    previous = last_manifest(reports, cohort)
    if previous and previous.get("outcome") == "ok":
        return f"the last good report in {reports / cohort} (run of {previous.get('finished')}) is unchanged"
    return "there is no earlier report of this cohort, so none is published"


def _as_research_error(exc: BaseException, cohort: str, log: Path | None, warehouse: Path | None = None) -> ResearchError:
    """The exception a user sees for ``exc``: ResearchErrors as they are, faults explained, bugs pointed to the log."""
    if isinstance(exc, ResearchError):
        return exc
    if is_disk_full(exc):
        return disk_full(exc, f"running cohort {cohort!r}")
    try:
        import duckdb

        if isinstance(exc, duckdb.Error):
            from research.faults import warehouse_open_error

            err = warehouse_open_error(warehouse or "of the cohort", exc)
            if isinstance(err, (WarehouseCorrupt, DiskFull)):
                return err
    except ImportError:  # pragma: no cover - duckdb is a dependency
        pass
    where = f"; the details are in {log}" if log else ""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return RunCrashed(f"cohort {cohort!r}: the run stopped on an unexpected error ({type(exc).__name__}: {first[:300]}){where}")


def run_cohort(
    cohort: str,
    *,
    warehouse: str | os.PathLike[str] | None = None,
    reports: str | os.PathLike[str] | None = None,
    config: CohortConfig | None = None,
    changed_only: bool = False,
    notebooks: list[Path] | None = None,
    progress: Callable[[str], None] | None = None,
    timeout_s: int | None = None,
    language: str | None = None,
    keep_failed: int | None = None,
    jobs: int | None = None,
) -> RunResult:
    """Run every scheduled notebook for ``cohort``; see the module docstring for the guarantees.

    ``language`` (sv, da or en) overrides the cohort file's report language. ``jobs`` is how
    many notebooks run at once where :mod:`research.schedule` lets them (default
    :func:`research.schedule.default_jobs`: 2, or 1 when two would not fit in memory);
    the tables are the same for any value. User errors
    raise a :class:`ResearchError` (after recording the failure in the index when the
    cohort's lock was taken); any other error is logged with its traceback in the failed
    folder and raised as a :class:`~research.faults.RunCrashed` with a one-line message.
    """
    say = progress or (lambda message: None)
    cohort = cohort_name(cohort)
    jobs = None if jobs is None else check_jobs(jobs)
    if language is not None and language not in LANGUAGES:
        raise ConfigError(f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)}")
    config = config if config is not None else find_config(cohort)
    language = language or (config.language if config else "en")
    if config is not None:  # the parameters are checked before anything is ingested, locked or run
        nbs = notebooks if notebooks is not None else scheduled_notebooks(with_compare=bool(config.predecessor))
        notebook_plan(nbs, config_parameters(config, language), cohort=cohort, given=set(config.parameters))
    keep = keep_failed if keep_failed is not None else (getattr(config, "keep_failed", None) if config else None)
    keep = KEEP_FAILED if keep is None else int(keep)
    wh_path = resolve(warehouse) if warehouse else (config.warehouse if config and config.warehouse else default_warehouse())
    reports_dir = resolve(reports or "reports")
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
        _refuse_case_twin(reports_dir, cohort)
        lock = CohortLock(reports_dir, cohort).__enter__()
    except LockedError as exc:
        return RunResult(cohort, "locked", 4, message=str(exc))
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(exc, f"preparing the reports folder {reports_dir}") from None
        raise ConfigError(f"cannot use the reports folder {reports_dir}: {exc.strerror or exc}") from None
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    state: dict = {"run_dir": None, "keep": keep}
    try:
        _recover(reports_dir, cohort)
        for name in close_dead_runs(reports_dir, cohort):
            say(f"{cohort}: closed the folder of a killed run as {name}")
        return _run_locked(cohort, run_id, state, wh_path=wh_path, reports_dir=reports_dir, config=config,
                           changed_only=changed_only, notebooks=notebooks, say=say, timeout_s=timeout_s, language=language,
                           jobs=jobs)
    except Exception as exc:
        if state.get("unknown") and isinstance(exc, ConfigError):
            raise  # nothing to record: an unknown cohort has no place in the index
        err = _record_error(exc, cohort, run_id, state, reports_dir=reports_dir, wh_path=wh_path)
        _prune_quietly(reports_dir, cohort, keep)
        if err is exc:
            raise
        raise err from None
    finally:
        lock.__exit__(None, None, None)


def _record_error(exc: Exception, cohort: str, run_id: str, state: dict, *, reports_dir: Path, wh_path: Path) -> Exception:
    """Keep the run's folder as a failed one with the error (its traceback when unexpected), record the
    failure in the index, and return the error as the user should see it."""
    failed_dir = reports_dir / f".{cohort}.failed-{run_id}"
    try:
        if state["run_dir"] is not None and state["run_dir"].exists():
            state["run_dir"].rename(failed_dir)
    except OSError:
        failed_dir = state["run_dir"]
    log = None if isinstance(exc, ResearchError) else write_traceback(failed_dir, exc)
    err = _as_research_error(exc, cohort, log, wh_path)
    if isinstance(err, DiskFull) and "report" not in str(err):
        err = DiskFull(f"{err} Nothing was published: {last_good(reports_dir, cohort)}.")
    if isinstance(err, ResearchError) and log is None and failed_dir is not None:
        try:
            failed_dir.mkdir(parents=True, exist_ok=True)
            (failed_dir / "error.log").write_text(f"{_now()}\n{err}\n", encoding="utf-8")
        except OSError:
            pass
    _record_failure(reports_dir, cohort, run_id, f"{err}", failed_dir)
    return err


def _record_failure(reports_dir: Path, cohort: str, run_id: str, reason: str, failed_dir: Path | None) -> None:
    from research.report_index import record_run

    try:
        record_run(reports_dir, {"cohort": cohort, "run_id": run_id, "finished": _now(), "outcome": "failed",
                                 "reason": reason[:1000], "failed_dir": failed_dir.name if failed_dir and failed_dir.exists() else None})
    except (OSError, ValueError):
        pass  # a full disk: the message still reaches the user


def _prune_quietly(reports_dir: Path, cohort: str, keep: int) -> None:
    try:
        prune_failed(reports_dir, cohort, keep)
    except OSError:
        pass


def _ingest_and_check(cohort: str, state: dict, *, wh_path: Path, config: CohortConfig | None, say) -> int:
    """Ingest the cohort's sources (or build the demo) and check the cohort is in the warehouse; the exit code so far."""
    exit_code = 0
    if config is not None and config.sources:
        ingest_summary = ingest_sources(config, wh_path)
        if ingest_summary.n_rejected:
            exit_code = 2
        say(str(ingest_summary))
    elif cohort == "demo":
        from research.demo import ensure_demo

        ensure_demo(wh_path, cohort=cohort)
    state["unknown"] = config is None  # a name with no configuration and no data is no cohort to list as failed
    if not wh_path.exists():
        raise ConfigError(f"warehouse {wh_path} does not exist; ingest the cohort first (research ingest PATH --cohort {cohort})")
    from research.store import open_warehouse

    with open_warehouse(wh_path, read_only=True) as wh:
        if not wh.has_cohort(cohort):
            known = ", ".join(wh.cohorts()["cohort"]) or "none"
            raise ConfigError(f"cohort {cohort!r} is not in warehouse {wh_path} (cohorts there: {known})")
    state["unknown"] = False
    return exit_code


def _new_manifest(cohort: str, run_id: str, *, fp: str, language: str, config: CohortConfig | None, files: list[dict],
                  wh_path: Path, counts: dict) -> dict:
    return {
        "cohort": cohort,
        "run_id": run_id,
        "started": _now(),
        "finished": None,
        "outcome": "running",
        "fingerprint": fp,
        "language": language,
        "package": {"name": "course-research", "version": research.__version__, **git_commit(project_root())},
        "configuration": {"file": str(config.path) if config and config.path else None,
                          "sha256": sha256_bytes(config.text.encode()) if config and config.path else None},
        "inputs": files,
        "warehouse": {"path": str(wh_path), "row_counts": counts},
        "environment": environment(),
        "notebooks": [],
    }


def _run_locked(cohort: str, run_id: str, state: dict, *, wh_path: Path, reports_dir: Path, config: CohortConfig | None,
                changed_only: bool, notebooks: list[Path] | None, say, timeout_s: int | None, language: str,
                jobs: int | None) -> RunResult:
    exit_code = _ingest_and_check(cohort, state, wh_path=wh_path, config=config, say=say)
    predecessor = config.predecessor if config else None
    nbs = notebooks if notebooks is not None else scheduled_notebooks(with_compare=bool(predecessor))
    files, counts = input_files(cohort, wh_path)
    fp = fingerprint(cohort, files, config, nbs, language)
    previous = last_manifest(reports_dir, cohort)
    if changed_only and previous and previous.get("outcome") == "ok" and previous.get("fingerprint") == fp:
        say(f"{cohort}: unchanged since its run of {previous.get('finished')}; skipped")
        return RunResult(cohort, "skipped-unchanged", 0, reports_dir / cohort, previous, "unchanged")
    run_dir = reports_dir / f".{cohort}.run-{run_id}"
    run_dir.mkdir(parents=True)
    state["run_dir"] = run_dir
    manifest = _new_manifest(cohort, run_id, fp=fp, language=language, config=config, files=files, wh_path=wh_path,
                             counts=counts)
    base = {"cohort": cohort, "warehouse": str(wh_path), "out_dir": str(run_dir), **config_parameters(config, language)}
    plan = notebook_plan(nbs, base, cohort=cohort, given=set(config.parameters if config else {}))
    limit = timeout_s or (config.notebook_timeout_s if config else 1800)
    runs, failed = _execute_plan(plan, run_dir, timeout_s=limit, jobs=jobs or default_jobs(counts.get("attempts"), say=lambda m: say(f"{cohort}: {m}")), say=say,
                                 cohort=cohort)
    manifest["notebooks"] = [r.__dict__ for r in runs]
    manifest["finished"] = _now()
    manifest["outcome"] = "ok" if failed is None else "failed"
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    if failed is not None:
        return _failed_run(cohort, run_id, state, failed, run_dir=run_dir, reports_dir=reports_dir, manifest=manifest)
    if report_needs_refresh([nb for nb, _ in plan], config):
        _refresh_report(run_dir, cohort, wh_path, config, manifest)
    final = _publish(run_dir, reports_dir, cohort, manifest, min_cell_size=base["min_cell_size"])
    state["run_dir"] = None
    _prune_quietly(reports_dir, cohort, state["keep"])
    return RunResult(cohort, "ok", exit_code, final, manifest, f"cohort {cohort!r}: report written to {final}")


def _failed_run(cohort: str, run_id: str, state: dict, failed: NotebookRun, *, run_dir: Path, reports_dir: Path,
                manifest: dict) -> RunResult:
    """Keep a run whose notebook failed as ``.COHORT.failed-ID``, record it and say which notebook and cell failed."""
    if failed.error and is_disk_full(OSError(failed.error)):
        raise DiskFull(f"cohort {cohort!r}: the disk filled up while notebook {failed.notebook} ran ({failed.error}); "
                       f"{last_good(reports_dir, cohort)}. Free some space and run again.")
    kept = reports_dir / f".{cohort}.failed-{run_id}"
    run_dir.rename(kept)
    state["run_dir"] = None
    cell = f"cell {failed.cell}" if failed.cell else "an unknown cell"
    message = (
        f"cohort {cohort!r}: notebook {failed.notebook} failed at {cell}: {failed.error}. "
        f"The partially executed notebook is kept at {kept / failed.notebook}; "
        f"{last_good(reports_dir, cohort)}."
    )
    _record_failure(reports_dir, cohort, run_id, message, kept)
    _prune_quietly(reports_dir, cohort, state.get("keep", KEEP_FAILED))
    return RunResult(cohort, "failed", 3, kept, manifest, message)


def _publish(run_dir: Path, reports_dir: Path, cohort: str, manifest: dict, *, min_cell_size: int) -> Path:
    """Check the finished folder, describe it, swap it in for the cohort's report and rewrite the index."""
    from research.privacy import require_safe_publication
    from research.report.datapackage import write_datapackage
    from research.report_index import write_cohort_index, write_reports_index

    # nothing below the minimum cell size derivable in the folder; a PrivacyError goes down the failed-run path
    require_safe_publication(run_dir, min_cell_size=min_cell_size)
    write_datapackage(run_dir)  # the folder's tables, each with its Table Schema
    write_cohort_index(run_dir, manifest)
    final = _swap_in(run_dir, reports_dir, cohort)
    write_reports_index(reports_dir)
    return final


#: The notebook that writes the report (``report.<language>.html``).
REPORT_NOTEBOOK = "06_recommendations"


def report_needs_refresh(notebooks: list[Path], config: CohortConfig | None) -> bool:
    """Whether the report notebook 06 wrote must be rendered again after the last notebook.

    Only when a notebook ran after it (the comparison of 07 adds tables the report shows) or
    the cohort file has ``labels:`` (which the notebooks do not take). Otherwise rendering it
    again would give the same page and cost a second drawing of every figure.
    """
    stems = [Path(nb).stem for nb in notebooks]
    if REPORT_NOTEBOOK not in stems:
        return False
    after = stems[stems.index(REPORT_NOTEBOOK) + 1:]
    return bool(after) or bool(getattr(config, "labels", None))


def _refresh_report(run_dir: Path, cohort: str, warehouse: Path, config: CohortConfig | None, manifest: dict) -> None:
    """Render the report again now that every notebook (the comparison of 07 too) has written its tables."""
    from research.report import refresh_report

    try:
        refresh_report(run_dir, cohort=cohort, warehouse=warehouse, config=config)
    except Exception as exc:  # noqa: BLE001 - every notebook succeeded; notebook 06's report stays as it was
        manifest["report_refresh"] = f"the report was not rendered again: {type(exc).__name__}: {exc}"


def ingest_sources(config: CohortConfig, warehouse: Path):
    """Ingest a cohort's configured sources; files already loaded are skipped."""
    from research.warehouse import LoadSummary
    from research.store import open_warehouse

    summary = LoadSummary()
    # a warehouse file is had alone while it is open for writing (queueing behind readers and other
    # writers, research.locks.warehouse_lock); a store locks only this cohort, in the session
    with open_warehouse(warehouse) as wh, wh.session(config.cohort, changes=False):
        for src in config.sources:
            if getattr(src, "lrs", None):
                from research.lrs import pull

                opts = dict(src.options)
                summary.files += pull(src.lrs, cohort=config.cohort, warehouse=wh, profile=opts.get("profile"),
                                      version=opts.get("xapi_version", "1.0.3")).files
                continue
            if not src.path.exists():
                raise ConfigError(f"{config.path}: source file {src.path} does not exist")
            options = dict(src.options)
            if src.mapping:
                options["mapping"] = str(src.mapping)
            summary.files += wh.ingest([src.path], cohort=config.cohort, format=src.format, options=options or None).files
        if getattr(config, "kc_model_file", None) is not None:  # the KC model the cohort file adopts
            from research.kcmodel.files import import_kc_model

            import_kc_model(wh, config.cohort, config.kc_model_file, as_name=config.kc_model, replace=True)
    return summary


def run_one(cohort: str, **kwargs) -> RunResult:
    """:func:`run_cohort` that never raises: every error becomes a failed :class:`RunResult` with its message.

    User errors and machine faults (a full disk, a damaged or locked warehouse) exit 1;
    an unexpected error (a bug, its traceback logged in the failed folder) exits 3.
    """
    try:
        return run_cohort(cohort, **kwargs)
    except RunCrashed as exc:
        return RunResult(cohort, "failed", 3, message=str(exc))
    except LockedError as exc:
        return RunResult(cohort, "locked", 4, message=f"cohort {cohort!r}: {exc}")
    except ResearchError as exc:
        text = str(exc)
        return RunResult(cohort, "failed", 1, message=text if text.startswith(f"cohort {cohort!r}") else f"cohort {cohort!r}: {text}")
    except Exception as exc:  # noqa: BLE001 - before the lock: no folder to log into
        return RunResult(cohort, "failed", 3, message=f"cohort {cohort!r}: the run stopped on an unexpected error ({type(exc).__name__}: {exc})")


def run_all(
    configs: list[CohortConfig],
    *,
    warehouse: str | os.PathLike[str] | None = None,
    reports: str | os.PathLike[str] | None = None,
    changed_only: bool = True,
    notebooks: list[Path] | None = None,
    progress: Callable[[str], None] | None = None,
    language: str | None = None,
    keep_failed: int | None = None,
    broken: list[tuple[Path, ResearchError]] | None = None,
    jobs: int | None = None,
) -> list[RunResult]:
    """Run every configured cohort in turn; one failing cohort (or one broken cohort file) does not stop the others.

    Cohorts with a predecessor run after it, so a comparison reads the predecessor's
    newest data. ``broken`` are cohort files that could not be read
    (:func:`research.cohort_config.load_all`): each is a failed result, and is listed in
    the index under its file's name when that is a valid cohort name.
    """
    from research.report_index import record_run

    results = []
    reports_dir = resolve(reports or "reports")
    for path, exc in broken or []:
        results.append(RunResult(Path(path).stem, "failed", 1, message=str(exc)))
        try:
            name = cohort_name(Path(path).stem)
            reports_dir.mkdir(parents=True, exist_ok=True)
            run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
            record_run(reports_dir, {"cohort": name, "run_id": run_id,
                                     "finished": _now(), "outcome": "failed", "reason": str(exc)[:1000]})
        except (ResearchError, OSError):
            pass
    order = {c.cohort: i for i, c in enumerate(configs)}
    ranked = sorted(configs, key=lambda c: (order.get(c.predecessor, -1) >= 0 and order[c.predecessor] > order[c.cohort], order[c.cohort]))
    for cfg in ranked:
        results.append(run_one(cfg.cohort, warehouse=warehouse, reports=reports, config=cfg, changed_only=changed_only,
                               notebooks=notebooks, progress=progress, language=language, keep_failed=keep_failed,
                               jobs=jobs))
    return results
