"""Running the notebooks of a cohort with papermill, safely and only when something changed.

``research run --cohort NAME`` ingests the cohort's configured sources (idempotently),
then executes every numbered notebook in ``notebooks/`` in order with papermill, each
in its own process with a time limit, exports each to HTML without code cells, writes
``index.html`` and a ``manifest.json``, and only then swaps the new folder in for the
cohort's last report. So:

- a run writes into ``reports/.NAME.run-<id>/`` and replaces ``reports/NAME/`` only on
  success: a failed or killed run never leaves a half-written report in place of the
  last good one (a failed run's folder is kept as ``reports/.NAME.failed-<id>/`` with the
  partially executed notebook, for debugging);
- a lock (``reports/.NAME.lock``) makes sure two runs never write the same cohort at once;
- ``--changed`` skips a cohort whose fingerprint (input files' hashes, configuration,
  notebooks, package version) equals that of its last successful run.

Exit codes of ``research run`` (see :data:`EXIT_CODES`): 0 every cohort ran or was
unchanged; 1 user error (bad configuration, unknown cohort); 2 data rejected in part
while ingesting (the run still happened); 3 a notebook failed; 4 a cohort was locked
by another run and skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
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
from research.cohort_config import CohortConfig, find_config
from research.errors import ConfigError, ResearchError
from research.paths import default_warehouse, notebooks_dir, project_root, resolve

EXIT_CODES = {
    0: "success: every cohort ran, or was unchanged and skipped",
    1: "user error: bad configuration, unknown cohort or missing file (message printed)",
    2: "data rejected in part while ingesting the cohort's sources (summary printed; the run went on)",
    3: "a notebook failed: the message names cohort, notebook, cell and error; the last good report is kept",
    4: "another run holds the cohort's lock; this cohort was skipped",
}
#: Notebooks that are not part of a cohort's scheduled run.
NOT_SCHEDULED = ("00_tour",)
#: Notebooks that only run when the cohort has a predecessor to compare with.
NEEDS_PREDECESSOR = ("07_compare_cohorts",)
KEY_LIBRARIES = ("numpy", "pandas", "scipy", "statsmodels", "pymc", "pytensor", "arviz", "duckdb", "papermill", "nutpie")


class LockedError(ResearchError):
    """Another process is running the same cohort."""


class NotebookFailed(ResearchError):
    """A notebook raised an error or ran past its time limit."""


@dataclass
class NotebookRun:
    notebook: str
    started: str
    ended: str
    seconds: float
    outcome: str  # "ok", "failed", "timeout"
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
    from research.warehouse import Warehouse

    with Warehouse(warehouse, read_only=True) as wh:
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


def fingerprint(cohort: str, files: list[dict], config: CohortConfig | None, notebooks: list[Path]) -> str:
    """A hash of everything a run's output depends on.

    The configured sources are ingested before this is taken, so a changed source file
    shows up as a new content hash among the cohort's loaded ``files``; it is not hashed again.
    """
    parts = [f"cohort={cohort}", f"version={research.__version__}"]
    if config is not None:
        parts.append("config=" + sha256_bytes(config.text.encode("utf-8")))
    parts += sorted(f"loaded={f['sha256']}" for f in files)
    parts += [f"notebook={nb.name}:{sha256_bytes(nb.read_bytes())}" for nb in notebooks]
    return sha256_bytes("\n".join(parts).encode("utf-8"))


class CohortLock:
    """An exclusive, non-blocking lock on one cohort's report folder."""

    def __init__(self, reports: Path, cohort: str):
        self.path = reports / f".{cohort}.lock"
        self._fh = None

    def __enter__(self) -> CohortLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            raise LockedError(f"cohort {self.path.stem.lstrip('.')!r} is being run by another process ({holder}); skipped") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()} since {_now()}")
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


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


def execute_notebook(nb: Path, out_nb: Path, parameters: dict, *, timeout_s: int, log: Path) -> NotebookRun:
    """Run one notebook with papermill in its own process group, killed after ``timeout_s``."""
    started, t0 = _now(), time.perf_counter()
    cmd = [
        sys.executable, "-m", "papermill", str(nb), str(out_nb),
        "--kernel", "python3", "--cwd", str(project_root()), "--no-progress-bar",
        "-y", yaml.safe_dump(parameters),
    ]
    env = {**os.environ, "RESEARCH_HOME": str(project_root()), "MPLBACKEND": "Agg"}
    with open(log, "ab") as logfh:
        proc = subprocess.Popen(cmd, stdout=logfh, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            rc = proc.wait(timeout=timeout_s)
            outcome = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            outcome = "timeout"
    cell, error = (None, None)
    if outcome == "failed":
        cell, error = _first_error(out_nb)
        if error is None:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            error = " / ".join(tail) or "papermill failed before running the notebook"
    elif outcome == "timeout":
        error = f"ran longer than its time limit of {timeout_s} s and was stopped"
        cell, _ = _first_error(out_nb)
    return NotebookRun(nb.name, started, _now(), round(time.perf_counter() - t0, 2), outcome, parameters, error, cell)


def export_html(nb_path: Path, html_path: Path) -> None:
    """Export an executed notebook to HTML without code cells (for course developers)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4))
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


def last_manifest(reports: Path, cohort: str) -> dict | None:
    path = reports / cohort / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


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
) -> RunResult:
    """Run every scheduled notebook for ``cohort``; see the module docstring for the guarantees."""
    say = progress or (lambda message: None)
    config = config if config is not None else find_config(cohort)
    wh_path = resolve(warehouse) if warehouse else (config.warehouse if config and config.warehouse else default_warehouse())
    reports_dir = resolve(reports or "reports")
    reports_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = CohortLock(reports_dir, cohort).__enter__()
    except LockedError as exc:
        return RunResult(cohort, "locked", 4, message=str(exc))
    try:
        _recover(reports_dir, cohort)
        exit_code = 0
        ingest_summary = None
        if config is not None and config.sources:
            ingest_summary = ingest_sources(config, wh_path)
            if ingest_summary.n_rejected:
                exit_code = 2
            say(str(ingest_summary))
        elif cohort == "demo":
            from research.demo import ensure_demo

            ensure_demo(wh_path, cohort=cohort)
        if not wh_path.exists():
            raise ConfigError(f"warehouse {wh_path} does not exist; ingest the cohort first (research ingest PATH --cohort {cohort})")
        from research.warehouse import Warehouse

        with Warehouse(wh_path, read_only=True) as wh:
            if not wh.has_cohort(cohort):
                known = ", ".join(wh.cohorts()["cohort"]) or "none"
                raise ConfigError(f"cohort {cohort!r} is not in warehouse {wh_path} (cohorts there: {known})")
        predecessor = config.predecessor if config else None
        nbs = notebooks if notebooks is not None else scheduled_notebooks(with_compare=bool(predecessor))
        files, counts = input_files(cohort, wh_path)
        fp = fingerprint(cohort, files, config, nbs)
        previous = last_manifest(reports_dir, cohort)
        if changed_only and previous and previous.get("outcome") == "ok" and previous.get("fingerprint") == fp:
            say(f"{cohort}: unchanged since its run of {previous.get('finished')}; skipped")
            return RunResult(cohort, "skipped-unchanged", 0, reports_dir / cohort, previous, "unchanged")
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        run_dir = reports_dir / f".{cohort}.run-{run_id}"
        run_dir.mkdir(parents=True)
        manifest = {
            "cohort": cohort,
            "run_id": run_id,
            "started": _now(),
            "finished": None,
            "outcome": "running",
            "fingerprint": fp,
            "package": {"name": "course-research", "version": research.__version__, **git_commit(project_root())},
            "configuration": {"file": str(config.path) if config and config.path else None,
                              "sha256": sha256_bytes(config.text.encode()) if config and config.path else None},
            "inputs": files,
            "warehouse": {"path": str(wh_path), "row_counts": counts},
            "environment": environment(),
            "notebooks": [],
        }
        base = {
            "cohort": cohort,
            "warehouse": str(wh_path),
            "out_dir": str(run_dir),
            "min_cell_size": config.min_cell_size if config else 10,
            "language": config.language if config else "en",
            "kc_model": config.kc_model if config else None,
            "predecessor": predecessor,
            "changelog": str(config.changelog) if config and config.changelog else None,
            "recommend_config": config.thresholds if config and config.thresholds else None,
            **(config.parameters if config else {}),
        }
        declared_any: set[str] = set()
        plan = []
        for nb in nbs:
            declared = notebook_parameters(nb)
            declared_any |= set(declared)
            plan.append((nb, {k: v for k, v in base.items() if k in declared and v is not None}))
        unknown = sorted(set(config.parameters if config else {}) - declared_any)
        if unknown:
            raise ConfigError(
                f"parameter(s) {', '.join(unknown)} in the configuration of cohort {cohort!r} are not declared by any "
                f"notebook; declared parameters: {', '.join(sorted(declared_any))}"
            )
        limit = timeout_s or (config.notebook_timeout_s if config else 1800)
        log = run_dir / "run.log"
        failed = None
        for i, (nb, params) in enumerate(plan, start=1):
            say(f"{cohort}: [{i}/{len(plan)}] {nb.name} ...")
            out_nb = run_dir / nb.name
            result = execute_notebook(nb, out_nb, params, timeout_s=limit, log=log)
            manifest["notebooks"].append(result.__dict__)
            if result.outcome != "ok":
                failed = result
                break
            export_html(out_nb, run_dir / f"{nb.stem}.html")
            say(f"{cohort}: [{i}/{len(plan)}] {nb.name} done in {result.seconds:.1f} s")
        manifest["finished"] = _now()
        manifest["outcome"] = "ok" if failed is None else "failed"
        (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        if failed is not None:
            kept = reports_dir / f".{cohort}.failed-{run_id}"
            run_dir.rename(kept)
            cell = f"cell {failed.cell}" if failed.cell else "an unknown cell"
            message = (
                f"cohort {cohort!r}: notebook {failed.notebook} failed at {cell}: {failed.error}. "
                f"The partially executed notebook is kept at {kept / failed.notebook}; "
                f"the last good report in {reports_dir / cohort} is unchanged."
            )
            return RunResult(cohort, "failed", 3, kept, manifest, message)
        from research.report_index import write_cohort_index, write_reports_index

        _refresh_report(run_dir, cohort, wh_path, config, manifest)
        write_cohort_index(run_dir, manifest)
        final = _swap_in(run_dir, reports_dir, cohort)
        write_reports_index(reports_dir)
        return RunResult(cohort, "ok", exit_code, final, manifest, f"cohort {cohort!r}: report written to {final}")
    finally:
        lock.__exit__(None, None, None)


def _refresh_report(run_dir: Path, cohort: str, warehouse: Path, config: CohortConfig | None, manifest: dict) -> None:
    """Render the report again now that every notebook (the comparison of 07 too) has written its tables."""
    from research.report import refresh_report

    try:
        refresh_report(run_dir, cohort=cohort, warehouse=warehouse, config=config)
    except Exception as exc:  # noqa: BLE001 - every notebook succeeded; notebook 06's report stays as it was
        manifest["report_refresh"] = f"the report was not rendered again: {type(exc).__name__}: {exc}"


def ingest_sources(config: CohortConfig, warehouse: Path):
    """Ingest a cohort's configured sources; files already loaded are skipped."""
    from research.warehouse import LoadSummary, Warehouse

    summary = LoadSummary()
    with Warehouse(warehouse) as wh:
        for src in config.sources:
            if not src.path.exists():
                raise ConfigError(f"{config.path}: source file {src.path} does not exist")
            options = dict(src.options)
            if src.mapping:
                options["mapping"] = str(src.mapping)
            summary.files += wh.ingest([src.path], cohort=config.cohort, format=src.format, options=options or None).files
    return summary


def run_all(
    configs: list[CohortConfig],
    *,
    warehouse: str | os.PathLike[str] | None = None,
    reports: str | os.PathLike[str] | None = None,
    changed_only: bool = True,
    notebooks: list[Path] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[RunResult]:
    """Run every configured cohort in turn; one failing cohort does not stop the others.

    Cohorts with a predecessor run after it, so a comparison reads the predecessor's
    newest data.
    """
    order = {c.cohort: i for i, c in enumerate(configs)}
    ranked = sorted(configs, key=lambda c: (order.get(c.predecessor, -1) >= 0 and order[c.predecessor] > order[c.cohort], order[c.cohort]))
    results = []
    for cfg in ranked:
        try:
            results.append(run_cohort(cfg.cohort, warehouse=warehouse, reports=reports, config=cfg,
                                      changed_only=changed_only, notebooks=notebooks, progress=progress))
        except ResearchError as exc:
            results.append(RunResult(cfg.cohort, "failed", 1, message=f"cohort {cfg.cohort!r}: {exc}"))
    return results
