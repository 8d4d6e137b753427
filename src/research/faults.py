"""Faults of the machine, not of the data: turned into messages a user can act on.

Each function takes the low-level exception and returns a :class:`ResearchError` whose
message says what happened and what to do; the command line prints it without a
traceback. Tracebacks of unexpected errors go to a log file (:func:`write_traceback`),
never to the terminal.
"""

from __future__ import annotations

import errno
import traceback
from datetime import datetime, timezone
from pathlib import Path

from research.errors import ResearchError


class WarehouseLocked(ResearchError):
    """Another process has the warehouse open for writing."""


class WarehouseCorrupt(ResearchError):
    """The warehouse file is damaged, truncated or not a DuckDB database."""


class DiskFull(ResearchError):
    """No space left on the device (or over quota) while writing."""


class RunCrashed(ResearchError):
    """A run stopped on an error that is a bug, not a user mistake; its traceback is in a log file."""


_LOCK_WORDS = ("could not set lock", "conflicting lock", "resource temporarily unavailable")
_CORRUPT_WORDS = ("not a valid duckdb database", "corrupt", "could not read enough bytes", "checksum", "invalid header",
                  "database file", "unexpected end", "serializ", "version number")


def warehouse_open_error(path, exc: BaseException) -> ResearchError:
    """A clear error for a warehouse that DuckDB could not open: locked, damaged, or something else."""
    text = str(exc)
    low = text.lower()
    if is_disk_full(exc):
        return DiskFull(f"cannot open warehouse {path}: the disk is full ({text}). Free some space and run again.")
    if any(w in low for w in _LOCK_WORDS):
        return WarehouseLocked(
            f"warehouse {path} is in use by another process (it holds the file's write lock). "
            "Wait for that process (an ingest or a run) to finish and try again; nothing was changed."
        )
    if "permission denied" in low:
        return ResearchError(f"cannot open warehouse {path}: permission denied. Check the file's owner and permissions.")
    if any(w in low for w in _CORRUPT_WORDS):
        return WarehouseCorrupt(
            f"warehouse {path} is damaged or is not a DuckDB database ({text.splitlines()[0] if text else type(exc).__name__}). "
            "It cannot be repaired in place: move it aside and rebuild it from the raw exports with `research ingest` "
            "(or `research run`, which ingests each cohort's configured sources)."
        )
    return ResearchError(f"cannot open warehouse {path}: {text.splitlines()[0] if text else type(exc).__name__}")


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
