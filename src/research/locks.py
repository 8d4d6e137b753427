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

__all__ = ["LockedError", "file_lock", "warehouse_write_lock"]

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
def file_lock(path: str | os.PathLike[str], *, timeout: float | None = None, what: str | None = None) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``path`` (created when missing) for the block.

    ``timeout=None`` waits as long as it takes; ``timeout=0`` tries once; a positive
    ``timeout`` waits that many seconds. When the lock is not had, :class:`LockedError`
    names ``what`` (default: the lock file) and the holder written into the lock file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        if timeout is None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + max(0.0, timeout)
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        label = what or str(path)
                        waited = f" after waiting {timeout:g} s" if timeout else ""
                        err = LockedError(f"{label} is in use by another process ({_holder(fh)}){waited}")
                        err.holder = _holder(fh)
                        raise err from None
                    time.sleep(POLL_S)
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


def warehouse_write_lock(warehouse: str | os.PathLike[str], timeout: float | None = None):
    """The lock an ingest holds while it has the warehouse open for writing.

    DuckDB lets one process at a time write to a file and refuses a second at once;
    this lock makes concurrent runs of different cohorts queue for the write instead,
    each waiting at most ``timeout`` seconds.
    """
    warehouse = Path(warehouse)
    if timeout is None:
        timeout = float(os.environ.get("RESEARCH_WAREHOUSE_WAIT", WAREHOUSE_WAIT_S))
    return file_lock(warehouse.with_name(f".{warehouse.name}.write.lock"), timeout=timeout, what=f"the warehouse {warehouse}")
