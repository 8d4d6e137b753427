"""Faults of the machine, not of the data: turned into messages a user can act on.

Each function takes the low-level exception and returns a :class:`ResearchError` whose
message says what happened and what to do; the command line prints it without a
traceback. Tracebacks of unexpected errors go to a log file (:func:`write_traceback`),
never to the terminal.
"""

from __future__ import annotations

import errno
import re
import traceback
from datetime import datetime, timezone
from pathlib import Path

from research.errors import ResearchError

__all__ = [
    "DiskFull", "RunCrashed", "WarehouseCorrupt", "WarehouseDamaged", "WarehouseLocked", "check_complete",
    "check_file", "disk_full", "is_disk_full", "warehouse_open_error", "write_traceback",
]


class WarehouseLocked(ResearchError):
    """Another process has the warehouse open for writing."""


class WarehouseCorrupt(ResearchError):
    """The warehouse file is damaged, truncated or not a DuckDB database."""


WarehouseDamaged = WarehouseCorrupt


class DiskFull(ResearchError):
    """No space left on the device (or over quota) while writing."""


class RunCrashed(ResearchError):
    """A run stopped on an error that is a bug, not a user mistake; its traceback is in a log file."""


_LOCK_WORDS = ("could not set lock", "conflicting lock", "resource temporarily unavailable")
_CORRUPT_WORDS = ("not a valid duckdb database", "corrupt", "could not read enough bytes", "checksum", "invalid header",
                  "unexpected end", "serializ", "version number", "truncated")
#: DuckDB's file starts with three 4 KiB headers; its blocks follow.
_DUCKDB_HEADER_BYTES = 3 * 4096


def warehouse_open_error(path, exc: BaseException) -> ResearchError:
    """A clear error for a DuckDB failure on the warehouse file: full disk, locked, damaged, or something else.

    A lock held by another process (wait and retry) is told apart from a truncated or
    corrupt file (rebuild it from the raw exports); ``research ingest`` and ``research run``
    both use this.
    """
    text = str(exc)
    low = text.lower()
    if is_disk_full(exc):
        return DiskFull(
            f"no space left on the device that holds warehouse {path} (the disk is full); free some space and run the "
            "command again (each file loads in one transaction, so nothing was half-loaded)"
        )
    if any(w in low for w in _LOCK_WORDS):
        pid = re.search(r"PID (\d+)", text)
        who = f" (process {pid.group(1)})" if pid else ""
        return WarehouseLocked(
            f"warehouse {path} is locked by another process{who}, probably an ingest or a run still going, which has it in use. "
            "Wait for it to finish and try again; nothing was changed."
        )
    if "permission denied" in low:
        return ResearchError(f"cannot open warehouse {path}: permission denied. Check the file's owner and permissions.")
    if any(w in low for w in _CORRUPT_WORDS):
        return WarehouseCorrupt(_damaged(path, text.splitlines()[0][:200] if text else type(exc).__name__))
    return ResearchError(f"cannot open warehouse {path}: {text.splitlines()[0] if text else type(exc).__name__}")


def _damaged(path, detail: str) -> str:
    return (
        f"warehouse {path} is damaged or is not a DuckDB database ({detail}). It cannot be repaired in place: "
        "move the file aside and rebuild it from the raw exports with `research ingest PATH... --cohort NAME` "
        "(or `research run`, which ingests each cohort's configured sources), or restore it from a backup."
    )


def check_file(path) -> None:
    """Before DuckDB opens ``path``: refuse a file that exists but is not a DuckDB database.

    DuckDB would otherwise try to open some foreign files (SQLite) by downloading an
    extension from the network.
    """
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size == 0:
            return
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return
    if head[8:12] != b"DUCK":
        kind = "an SQLite database" if head.startswith(b"SQLite format") else "something else"
        raise WarehouseCorrupt(_damaged(path, f"it looks like {kind}; check the path"))


def check_complete(con, path) -> None:
    """Raise :class:`WarehouseCorrupt` when the file is shorter than the blocks DuckDB says are in use.

    DuckDB opens a truncated file without complaint and fails only when a query reads a
    missing block; this catches the truncation when the file is opened.
    """
    import duckdb

    try:
        size = Path(path).stat().st_size
        row = con.execute("PRAGMA database_size").fetchone()
    except (OSError, duckdb.Error):  # an in-memory or unusual database: nothing to compare
        return
    block_size, used_blocks = int(row[2] or 0), int(row[4] or 0)
    needed = _DUCKDB_HEADER_BYTES + block_size * used_blocks
    if block_size and size < needed:
        con.close()
        raise warehouse_open_error(path, OSError(f"the file is truncated: {size:,} bytes, but its {used_blocks} blocks in use need {needed:,}"))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the device is full or the quota is used up."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "no space left on device" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full(exc: BaseException, doing: str) -> DiskFull:
    where = getattr(exc, "filename", None)
    return DiskFull(f"the disk is full{f' ({where})' if where else ''} while {doing}. Free some space and run again.")


def write_traceback(folder: Path, exc: BaseException, *, name: str = "error.log", note: str = "") -> Path | None:
    """Write ``exc``'s traceback into ``folder/name``; None when even that is impossible (a full disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        path.write_text(f"{stamp}\n{note}\n{text}" if note else f"{stamp}\n{text}", encoding="utf-8")
        return path
    except OSError:
        return None
