"""Cohorts in parallel on a Dask cluster: ``research run --all --workers N`` or ``--scheduler ADDRESS``.

Each cohort is one task that calls :func:`research.pipeline.run_one` on a worker: the
cohort's lock, its atomic report swap, its manifest and its exit code are the same as in
a serial run. What the parallel run adds around the tasks:

- **ingest where the warehouse allows it**: into a Parquet store (:mod:`research.store`)
  each cohort's ingest takes only its own partition's lock, so it is the first step of the
  cohort's own task, and cohorts ingest in parallel on the workers. A single-file DuckDB
  warehouse takes one writer, and a writer and a reader of the same file refuse each other:
  so there the cohorts' configured sources are ingested first, one cohort after another, in
  this process (each under its cohort's lock and the warehouse's write lock, files already
  loaded are skipped, as in a serial run); then the notebooks run on the workers, which only
  read. Either way a cohort whose ingest fails (or whose lock another run holds) fails or is
  skipped with the serial run's message and exit code, and runs no notebook;
- **order**: a cohort with a predecessor among the cohorts run is submitted when its
  predecessor's task has finished (whatever its outcome, as in the serial run);
- **one cohort per worker**: workers of the local cluster run one task at a time (one
  thread, resource ``cohort=1``), and no more tasks are in flight than the cluster has threads;
- **a lost worker fails only its cohort**: a task whose worker died (killed, out of
  memory) is retried once by Dask on another worker (``allowed-failures`` 1 on the local
  cluster); when it fails again its cohort is a failed result (exit 3): the run folder the
  dead worker left is kept as a failed folder, the failure is recorded in
  ``reports/runs.jsonl`` and the cohort's last good report stays as it was;
- **one index**: the tasks append failures to the history but leave
  ``reports/index.html`` to one rewrite here at the end
  (:func:`research.report_index.index_deferred`);
- **progress**: each notebook's start and end on a worker, and each cohort's outcome as
  it arrives, go to ``progress``;
- **the pseudonym key stays a secret**: it is read where the sources are ingested (this
  process for a warehouse file, the worker for a store) and is never part of a task's
  arguments or of anything logged. A task that ingests gets the fingerprint of this
  process's key (a keyed hash of a fixed text that reveals nothing; the warehouse records
  it per cohort) and ingests nothing on a worker whose key is missing or differs. On a local
  cluster the workers inherit this process's environment (``RESEARCH_PSEUDONYM_KEY``, or the
  key file); on a cluster of your own, give each worker ``RESEARCH_PSEUDONYM_KEY`` or a key
  file named by ``RESEARCH_PSEUDONYM_KEY_FILE`` (see the README).

The workers read the cohort files, the warehouse and the notebooks, and write the
reports folder, by the same paths as this process: on a cluster of your own they need a
shared file system and the same version of course-research (checked before anything runs).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import research
from research.cohort_config import CohortConfig
from research.errors import ConfigError, ResearchError
from research.locks import LockedError

__all__ = ["INGEST_TOPIC", "PROGRESS_TOPIC", "connect", "local_cluster", "run_cohort_task", "run_parallel"]

#: The Dask event topic on which tasks report their notebooks' progress.
PROGRESS_TOPIC = "research-progress"
#: The Dask event topic on which a task reports its cohort's ingest (cohort, worker, pid, start, end).
INGEST_TOPIC = "research-ingest"
#: Times Dask retries a task whose worker died before its cohort fails (local cluster).
ALLOWED_FAILURES = 1
#: Worker resource that makes a worker run one cohort at a time.
RESOURCE = "cohort"
#: Seconds to wait for a scheduler given with ``--scheduler`` and for its first worker.
CONNECT_TIMEOUT_S = 30


def local_cluster(n_workers: int, *, allowed_failures: int = ALLOWED_FAILURES, memory_limit: str | float | None = "auto"):
    """A :class:`dask.distributed.LocalCluster` on 127.0.0.1: ``n_workers`` processes, one thread each, its HTTP server on a free port."""
    import dask
    from dask.distributed import LocalCluster

    if n_workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {n_workers}")
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0", resources={RESOURCE: 1}, memory_limit=memory_limit,
                            silence_logs=logging.ERROR)


def connect(address: str, *, timeout: float = CONNECT_TIMEOUT_S):
    """A client of the Dask scheduler at ``address``, with at least one worker; a :class:`ConfigError` when there is none."""
    from dask.distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address!r} ({type(exc).__name__}: {exc}); "
                          "check the address (tcp://HOST:PORT) and that the scheduler is running") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise ConfigError(f"the Dask scheduler at {address!r} has no workers (waited {timeout:g} s: {exc}); start some") from None
    return client


def _worker_version() -> str:
    return research.__version__


def _check_workers(client) -> tuple[int, bool]:
    """(threads of the cluster, whether every worker offers the ``cohort`` resource); refuses workers of another version."""
    try:
        versions = client.run(_worker_version)
    except Exception as exc:  # noqa: BLE001 - a worker that cannot even import the package
        raise ConfigError(f"the Dask workers cannot run course-research ({type(exc).__name__}: {str(exc)[:200]}); "
                          f"install course-research {research.__version__} in every worker's environment") from None
    other = {addr: v for addr, v in versions.items() if v != research.__version__}
    if other:
        listed = ", ".join(f"{a} has {v}" for a, v in sorted(other.items()))
        raise ConfigError(f"the Dask workers must run course-research {research.__version__}, as this process does: {listed}")
    workers = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) else client.scheduler_info()["workers"]
    threads = sum(w.get("nthreads", 1) for w in workers.values()) or 1
    return threads, bool(workers) and all(RESOURCE in (w.get("resources") or {}) for w in workers.values())


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _log_event(topic: str, message) -> None:
    try:
        from dask.distributed import get_worker

        get_worker().log_event(topic, message)
    except (ValueError, RuntimeError, ImportError):  # not on a worker (a direct call): nowhere to send it
        pass


def _worker_address() -> str:
    try:
        from dask.distributed import get_worker

        return get_worker().address
    except (ValueError, RuntimeError, ImportError):
        return "this process"


def run_cohort_task(cohort: str, config: CohortConfig, options: dict, ingest: bool = False, key_fingerprint: str | None = None):
    """The task a worker runs for one cohort: with ``ingest``, its configured sources' ingest
    first (a store's cohort), then :func:`research.pipeline.run_one`; the index is left for the end.

    ``options`` are :func:`run_one`'s keyword arguments (paths, flags): never a key or
    any other secret. The ingest reads the pseudonym key where it runs (the worker's
    ``RESEARCH_PSEUDONYM_KEY`` or key file); ``key_fingerprint`` is the fingerprint of the
    calling process's key (a hash that reveals nothing, the one the warehouse records),
    and a worker whose key differs ingests nothing. Progress goes to the client on
    :data:`PROGRESS_TOPIC`; each ingest's worker, process and interval on :data:`INGEST_TOPIC`.
    """
    from research.paths import resolve
    from research.pipeline import RunResult, run_one
    from research.report_index import index_deferred

    def say(message: str) -> None:
        _log_event(PROGRESS_TOPIC, message)

    code = 0
    if ingest and (config.sources or cohort == "demo"):
        reports_dir = resolve(options.get("reports") or "reports")
        started = time.time()
        code = _ingest(config, resolve(options["warehouse"]), reports_dir, say, key_fingerprint=key_fingerprint)
        _log_event(INGEST_TOPIC, {"cohort": cohort, "worker": _worker_address(), "pid": os.getpid(), "start": started, "end": time.time()})
        if isinstance(code, RunResult):
            return code
        config = dataclasses.replace(config, sources=[])  # ingested: the run only reads
    with index_deferred():
        result = run_one(cohort, config=config, progress=say, **options)
    if code == 2 and result.exit_code == 0:
        result.exit_code = 2  # rows rejected at ingest: the run happened (as in a serial run)
    return result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _record(reports_dir: Path, row: dict) -> None:
    from research.report_index import record_run

    try:
        record_run(reports_dir, row)
    except (OSError, ValueError):
        pass  # a full disk: the message still reaches the user


def _key_fingerprint() -> str:
    """The fingerprint of this process's pseudonym key (read, or made, as an ingest here would)."""
    from research.pseudonym import Pseudonymiser

    return Pseudonymiser().fingerprint()


def _check_key(expected: str) -> None:
    """Refuse to ingest on a worker whose pseudonym key is missing or is not the calling process's."""
    from research.pseudonym import key_file

    where = _worker_address()
    if not os.environ.get("RESEARCH_PSEUDONYM_KEY") and not key_file().is_file():
        raise ConfigError(f"the Dask worker {where} has no pseudonym key, so it cannot ingest: set RESEARCH_PSEUDONYM_KEY "
                          "or RESEARCH_PSEUDONYM_KEY_FILE in the workers' environment (see the README); nothing was ingested")
    if _key_fingerprint() != expected:
        raise ConfigError(f"the Dask worker {where} has another pseudonym key than the process that started the run "
                          "(their fingerprints differ), so its pseudonyms would not match: give the workers the same "
                          "RESEARCH_PSEUDONYM_KEY or key file; nothing was ingested")


def _ingest(cfg: CohortConfig, wh_path: Path, reports_dir: Path, say, *, key_fingerprint: str | None = None):
    """Ingest one cohort's sources under its lock (a serial run's first step): its exit code, or a RunResult when it stops there."""
    from research.pipeline import CohortLock, RunResult, ingest_sources

    cohort = cfg.cohort
    if not cfg.sources and cohort != "demo":
        return 0
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
        lock = CohortLock(reports_dir, cohort).__enter__()
    except LockedError as exc:
        return RunResult(cohort, "locked", 4, message=str(exc))
    except OSError as exc:
        return RunResult(cohort, "failed", 1, message=f"cohort {cohort!r}: cannot use the reports folder {reports_dir}: {exc.strerror or exc}")
    try:
        if cfg.sources:
            if key_fingerprint is not None:
                _check_key(key_fingerprint)
            summary = ingest_sources(cfg, wh_path)
            say(str(summary))
            return 2 if summary.n_rejected else 0
        from research.demo import ensure_demo

        ensure_demo(wh_path, cohort=cohort)
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure is this cohort's, and never a traceback
        if isinstance(exc, LockedError):
            status, code = "locked", 4
        elif isinstance(exc, ResearchError):
            status, code = "failed", 1
        else:
            status, code = "failed", 3
        text = str(exc) if isinstance(exc, ResearchError) else f"the ingest stopped on an unexpected error ({type(exc).__name__}: {str(exc)[:300]})"
        message = text if text.startswith(f"cohort {cohort!r}") else f"cohort {cohort!r}: {text}"
        _record(reports_dir, {"cohort": cohort, "run_id": _run_id(), "finished": _now(), "outcome": "failed", "reason": message[:1000]})
        return RunResult(cohort, status, code, message=message)
    finally:
        lock.__exit__(None, None, None)


def _worker_lost(cohort: str, exc: BaseException, reports_dir: Path, keep: int):
    """The failed result of a cohort whose task did not come back; its dead run's folder is kept as a failed folder."""
    from research.pipeline import CohortLock, RunResult, close_dead_runs, last_good, prune_failed

    first = (str(exc).splitlines() or [""])[0][:300]
    reason = f"the Dask worker running it stopped before the run finished ({type(exc).__name__}: {first})"
    kept = None
    try:
        with CohortLock(reports_dir, cohort, timeout=5):
            closed = close_dead_runs(reports_dir, cohort, reason)  # a swap the kill interrupted is undone too
            if closed:
                kept = reports_dir / closed[-1]
            else:
                _record(reports_dir, {"cohort": cohort, "run_id": _run_id(), "finished": _now(), "outcome": "failed", "reason": reason})
            prune_failed(reports_dir, cohort, keep)
    except LockedError:
        reason += "; its run folder is closed by the cohort's next run"
    except OSError as exc2:
        reason += f"; its folders could not be tidied ({exc2.strerror or exc2})"
    return RunResult(cohort, "failed", 3, kept, message=f"cohort {cohort!r}: {reason}. {last_good(reports_dir, cohort).capitalize()}.")


def _ranked(configs: list[CohortConfig]) -> list[CohortConfig]:
    order = {c.cohort: i for i, c in enumerate(configs)}
    return sorted(configs, key=lambda c: (order.get(c.predecessor, -1) >= 0 and order[c.predecessor] > order[c.cohort], order[c.cohort]))


def run_parallel(
    configs: list[CohortConfig],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    warehouse: str | os.PathLike[str] | None = None,
    reports: str | os.PathLike[str] | None = None,
    changed_only: bool = True,
    notebooks: list[Path] | None = None,
    progress: Callable[[str], None] | None = None,
    language: str | None = None,
    keep_failed: int | None = None,
    broken: list[tuple[Path, ResearchError]] | None = None,
    jobs: int = 1,
) -> list:
    """:func:`research.pipeline.run_all` with each cohort a task on a Dask cluster; see the module docstring.

    ``jobs`` is the number of notebooks each cohort's task runs at once (default 1: the
    cohorts are the parallelism, one a worker).

    The cluster is ``client`` when given (it is left running), else the scheduler at
    ``scheduler``, else a local cluster of ``workers`` processes started for this run.
    Returns one :class:`~research.pipeline.RunResult` per cohort (broken cohort files
    first, then in the order the cohorts finished).
    """
    from research.paths import default_warehouse, resolve
    from research.pipeline import KEEP_FAILED, run_all
    from research.report_index import index_deferred, write_reports_index

    say = progress or (lambda message: None)
    reports_dir = resolve(reports or "reports")
    if not configs:  # only broken cohort files: nothing to run anywhere
        return run_all([], reports=reports_dir, broken=broken)
    nbs = [resolve(nb) for nb in notebooks] if notebooks is not None else None
    own, cluster = client is None, None
    if client is None:
        if scheduler:
            client = connect(scheduler)
        else:
            from dask.distributed import Client

            cluster = local_cluster(workers or 2)
            client = Client(cluster, set_as_default=False)
    try:
        threads, one_per_worker = _check_workers(client)
        where = f"the Dask scheduler at {scheduler}" if scheduler else f"{len(client.nthreads())} local worker(s)"
        say(f"running {len(configs)} cohort(s) on {where}")
        client.subscribe_topic(PROGRESS_TOPIC, lambda event: say(str(event[1])))
        with index_deferred():
            results = run_all([], reports=reports_dir, broken=broken) if broken else []
            results += _schedule(client, _ranked(configs), threads=threads, one_per_worker=one_per_worker,
                                 reports_dir=reports_dir, warehouse=warehouse, default_wh=default_warehouse,
                                 resolve=resolve, keep_default=KEEP_FAILED, say=say,
                                 options={"reports": str(reports_dir), "changed_only": changed_only, "notebooks": nbs,
                                          "language": language, "keep_failed": keep_failed, "jobs": jobs})
        try:
            write_reports_index(reports_dir)  # once, for every cohort of the run
        except OSError as exc:
            say(f"the cross-cohort index {reports_dir / 'index.html'} could not be written: {exc.strerror or exc}")
        return results
    finally:
        try:
            client.unsubscribe_topic(PROGRESS_TOPIC)
        except Exception:  # noqa: BLE001 - closing down: nothing left to report to
            pass
        if own:
            client.close()
            if cluster is not None:
                cluster.close()


def _ingest_files_first(ranked: list[CohortConfig], paths: dict, codes: dict, *, reports_dir: Path, warehouse, default_wh,
                        resolve, say) -> tuple[list, set[str]]:
    """Into a warehouse file, every ingest first, one writer at a time, before any worker opens it to read.

    Into a store, each cohort's ingest is the first step of its own task: those cohorts are
    returned (``in_task``), with the cohorts whose ingest stopped them (``stopped``: config and
    result). ``paths`` and ``codes`` (exit code so far) are filled per cohort.
    """
    from research.store import is_store

    stopped: list[tuple[CohortConfig, object]] = []
    in_task: set[str] = set()
    t0, serial = time.perf_counter(), 0
    for cfg in ranked:
        paths[cfg.cohort] = resolve(warehouse) if warehouse else (cfg.warehouse or default_wh())
        if is_store(paths[cfg.cohort]):
            in_task.add(cfg.cohort)
            codes[cfg.cohort] = 0
            continue
        serial += 1
        code = _ingest(cfg, paths[cfg.cohort], reports_dir, say)
        if isinstance(code, int):
            codes[cfg.cohort] = code
        else:
            stopped.append((cfg, code))
    if serial:
        say(f"ingest: {serial} cohort(s) in {time.perf_counter() - t0:.1f} s, one after another (a warehouse file takes one writer)")
    if in_task:
        say(f"ingest: {len(in_task)} cohort(s) into a store, each in its own task (a store takes one writer per cohort)")
    return stopped, in_task


def _schedule(client, ranked: list[CohortConfig], *, threads: int, one_per_worker: bool, reports_dir: Path, warehouse,
              default_wh, resolve, keep_default: int, say, options: dict) -> list:
    from dask.distributed import as_completed

    def keep_of(cfg: CohortConfig) -> int:
        keep = options["keep_failed"] if options["keep_failed"] is not None else cfg.keep_failed
        return keep_default if keep is None else int(keep)

    results, codes, paths = [], {}, {}
    done, total = 0, len(ranked)

    def finished(cfg: CohortConfig, result) -> None:
        nonlocal done
        done += 1
        if codes.get(cfg.cohort) == 2 and result.exit_code == 0:
            result.exit_code = 2  # rows rejected at ingest: the run happened (as in a serial run)
        results.append(result)
        say(f"[{done}/{total}] {cfg.cohort}: {result.status}")
        ready.extend(children.pop(cfg.cohort, []))

    position = {c.cohort: i for i, c in enumerate(ranked)}
    children: dict[str, list[CohortConfig]] = defaultdict(list)
    ready: list[CohortConfig] = []
    stopped, in_task = _ingest_files_first(ranked, paths, codes, reports_dir=reports_dir, warehouse=warehouse,
                                           default_wh=default_wh, resolve=resolve, say=say)
    fingerprint = _key_fingerprint() if any(c.sources for c in ranked if c.cohort in in_task) else None
    # 2. a cohort waits for its predecessor's task when the predecessor comes first (so there is never a cycle)
    for cfg in ranked:
        if cfg.cohort not in codes:
            continue
        pred = cfg.predecessor
        if pred in codes and position[pred] < position[cfg.cohort]:
            children[pred].append(cfg)
        else:
            ready.append(cfg)
    for cfg, result in stopped:
        finished(cfg, result)

    in_flight: dict = {}
    pending = as_completed(loop=client.loop)

    def fill() -> None:
        while ready and len(in_flight) < threads:
            cfg = ready.pop(0)
            if cfg.cohort in in_task:  # a store: the task ingests its own cohort
                task_config, ingest, key = cfg, True, fingerprint
            else:  # ingested above: the workers only read
                task_config, ingest, key = dataclasses.replace(cfg, sources=[]), False, None
            fut = client.submit(run_cohort_task, cfg.cohort, task_config, {**options, "warehouse": str(paths[cfg.cohort])}, ingest, key,
                                key=f"research-cohort-{uuid.uuid4().hex}", pure=False,
                                resources={RESOURCE: 1} if one_per_worker else None)
            in_flight[fut] = cfg
            pending.add(fut)

    fill()
    while in_flight:
        fut = next(pending)
        cfg = in_flight.pop(fut)
        try:
            result = fut.result()
        except Exception as exc:  # noqa: BLE001 - KilledWorker, CancelledError, a lost connection: this cohort's failure
            result = _worker_lost(cfg.cohort, exc, reports_dir, keep_of(cfg))
        finally:
            fut.release()
        finished(cfg, result)
        fill()
    return results
