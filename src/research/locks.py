"""Advisory file locks shared by the whole package.

One implementation (``fcntl.flock``) serves the per-cohort run lock, the reports
folder's lock on its history and index, and the demo exports' lock. A lock either
waits for its turn (``timeout=None``), gives up at once (``timeout=0``) or waits at
most ``timeout`` seconds; giving up raises :class:`LockedError`, which ``research
run`` reports with exit status 4 ("locked").
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from research.errors import ResearchError

__all__ = ["LockedError", "WAREHOUSE_WAIT_S", "file_lock", "folder_lock", "warehouse_lock", "warehouse_write_lock"]

#: Seconds between tries while waiting for a lock with a time-out.
POLL_S = 0.05


class LockedError(ResearchError):
    """Another process holds the lock (for a run: the same cohort is being run)."""

    holder: str = "unknown"


def _holder(fh) -> str:
    try:
        fh.seek(0)
        return fh.read().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def file_lock(path: str | os.PathLike[str], *, timeout: float | None = None, what: str | None = None,
              shared: bool = False) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``path`` (created when missing) for the block.

    ``shared=True`` takes a shared lock instead: any number of shared holders at once, none
    while an exclusive one holds it (readers and a writer).

    ``timeout=None`` waits as long as it takes; ``timeout=0`` tries once; a positive
    ``timeout`` waits that many seconds. When the lock is not had, :class:`LockedError`
    names ``what`` (default: the lock file) and the holder written into the lock file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        if timeout is None:
            fcntl.flock(fh, mode)
        else:
            deadline = time.monotonic() + max(0.0, timeout)
            while True:
                try:
                    fcntl.flock(fh, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        label = what or str(path)
                        waited = f" after waiting {timeout:g} s" if timeout else ""
                        err = LockedError(f"{label} is in use by another process ({_holder(fh)}){waited}")
                        err.holder = _holder(fh)
                        raise err from None
                    time.sleep(POLL_S)
        if not shared:  # a writer leaves a note naming itself; readers leave the last writer's
            try:
                fh.seek(0)
                fh.truncate()
                fh.write(f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
                fh.flush()
            except OSError:
                pass  # the note is a courtesy; the lock itself is held
        try:
            yield path
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


#: Seconds an ingest waits for another process's ingest into the same warehouse file
#: (``RESEARCH_WAREHOUSE_WAIT`` overrides); past it the run is reported "locked" (exit 4).
WAREHOUSE_WAIT_S = 300.0


#: Warehouse locks this process holds: lock file -> [shared?, depth]. A process that holds
#: the warehouse (an ingest holding the write lock around several opens) opens it again
#: without waiting for itself.
_HELD: dict[str, list] = {}


def _warehouse_lock_path(warehouse: Path) -> Path:
    return warehouse.with_name(f".{warehouse.name}.write.lock")


@contextmanager
def warehouse_lock(warehouse: str | os.PathLike[str], *, shared: bool = False, timeout: float | None = None) -> Iterator[Path]:
    """The warehouse file's readers/writer lock: shared to read, exclusive to write.

    DuckDB lets one process write a file, and no other process open it while it does (nor
    a writer open it while readers have it); so runs and ingests of different cohorts
    queue here instead of failing. Readers share; a writer waits for the readers and they
    for it, each at most ``timeout`` seconds (default ``RESEARCH_WAREHOUSE_WAIT`` or
    :data:`WAREHOUSE_WAIT_S`), past which :class:`LockedError` says "locked" (exit 4).
    Re-entrant within a process: an open inside a held lock does not wait (a shared lock
    held cannot become exclusive: that is refused rather than waited for).
    """
    warehouse = Path(warehouse)
    if timeout is None:
        timeout = float(os.environ.get("RESEARCH_WAREHOUSE_WAIT", WAREHOUSE_WAIT_S))
    path = _warehouse_lock_path(warehouse)
    key = str(path.resolve() if path.parent.exists() else path)
    held = _HELD.get(key)
    if held is not None:
        if held[0] and not shared:
            raise LockedError(f"the warehouse {warehouse} is open read-only in this process; close it before writing")
        held[1] += 1
        try:
            yield path
        finally:
            held[1] -= 1
        return
    with file_lock(path, timeout=timeout, what=f"the warehouse {warehouse}", shared=shared):
        _HELD[key] = [shared, 1]
        try:
            yield path
        finally:
            del _HELD[key]


def warehouse_write_lock(warehouse: str | os.PathLike[str], timeout: float | None = None):
    """The lock an ingest holds while it has the warehouse open for writing (:func:`warehouse_lock`, exclusive)."""
    return warehouse_lock(warehouse, timeout=timeout)


#: Report folders this process holds locked: resolved path -> depth.
_FOLDERS: dict[str, int] = {}


@contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on the folder itself for the block (created when missing); no file is added to it.

    The notebooks of one run that run at the same time write into one report folder: this
    makes each read-modify-write of a table they share (the record of analyses, the record
    of hidden cells, with the table written beside it) one step. Waits as long as it takes;
    re-entrant within a process.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _FOLDERS:
        _FOLDERS[key] += 1
        try:
            yield folder
        finally:
            _FOLDERS[key] -= 1
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _FOLDERS[key] = 1
        try:
            yield folder
        finally:
            del _FOLDERS[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
