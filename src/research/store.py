"""An open store: every warehouse table as Parquet, partitioned by cohort (hive style).

The single DuckDB file of :mod:`research.warehouse` takes one writer at a time. A store
is a folder that other engines (pyarrow, Polars, Spark, Trino, DuckDB itself) read with no
code of ours, and that ingests of different cohorts write in parallel::

    warehouse.store/
      store.json                               marker: format and version
      attempts/cohort=2026-spring/part-0.parquet
      attempts/cohort=2026%20autumn/part-0.parquet   (names are percent-encoded)
      loads/cohort=2026-spring/part-0.parquet
      ...                                      one folder per table, canonical and bookkeeping
      _current/<cohort>  -> ../_gen/<cohort>/<generation>
      _gen/<cohort>/<generation>/<table>/part-0.parquet
      _locks/<cohort>.lock

``<table>/cohort=<name>`` is a link to ``../../_current/<name>/<table>``, made once, and
``_current/<name>`` a link to the cohort's current *generation*: a folder holding every
table of that cohort. A change of a cohort writes a whole new generation, then swaps the
one ``_current`` link with ``os.replace`` (atomic): every table of the cohort changes at
once, and a process killed before the swap leaves the previous generation in place.
Folders whose names start with ``_`` or ``.`` are skipped by hive readers.

Writers: a cohort's ingest holds that cohort's lock (``_locks/<cohort>.lock``), reads the
cohort's current generation into a private in-memory DuckDB, runs the very same
:meth:`Warehouse.ingest` (validation, quarantine, idempotency, corrections, voiding and
the pseudonym key check stay one implementation), writes the new generation and swaps it
in. Ingests of different cohorts share no lock.

Readers pin a snapshot: on opening, a reader resolves each cohort's current generation
and holds a shared lock on its ``.pin`` file until it closes; its tables are DuckDB views
over exactly those files. A reader during a concurrent ingest therefore sees the old or
the new generation of a cohort, never a mix. A writer removes an old generation only when
no reader holds its pin.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import duckdb
import pandas as pd

from research.errors import ResearchError
from research.locks import WAREHOUSE_WAIT_S, file_lock, warehouse_write_lock
from research.names import cohort_name
from research.paths import default_warehouse, resolve
from research.warehouse import LoadSummary, Warehouse

__all__ = ["FORMAT", "MARKER", "VERSION", "StoreWarehouse", "collect", "create_store", "digests", "is_store", "migrate", "open_warehouse", "write_lock",
           "partition_name", "table_digest"]

MARKER = "store.json"
FORMAT = "course-research store"
VERSION = 1
PART = "part-0.parquet"


def is_store(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding the store marker, or a path ending in ``.store`` (a new store)."""
    path = Path(path)
    if path.is_dir():
        return (path / MARKER).is_file() or path.suffix == ".store"
    return path.suffix == ".store" and not path.exists()


def partition_name(cohort: str) -> str:
    """The cohort's folder name: its canonical form, percent-encoded (hive readers decode it)."""
    return quote(cohort_name(cohort), safe="")


def _sql_text(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _lazy_tables() -> dict[str, str]:
    """Tables the warehouse creates when first needed, with their definitions (keys and all)."""
    from research.ingest.datashop_xml import CUSTOM_SQL
    from research.ingest.voiding import AUDIT_SQL, VOIDS_SQL
    from research.kcmodel.files import KC_MODEL_FILES_SQL
    from research.warehouse import LRS_STATE_SQL as STATE_SQL

    return {"custom_fields": CUSTOM_SQL, "xapi_voids": VOIDS_SQL, "voided": AUDIT_SQL,
            "kc_model_files": KC_MODEL_FILES_SQL, "lrs_state": STATE_SQL}


#: The folders a store is made with, before its marker: a folder holding only these is a store
#: another process is making at the same moment (two first ingests of different cohorts).
_STORE_DIRS = ("_current", "_gen", "_locks")


def create_store(root: Path) -> None:
    """Make ``root`` a store (marker and folders); an existing store, or one being made, is left as it is.

    Every step is idempotent (folders made if missing, the marker renamed into place with the
    same content), so processes that make the same store at once all succeed.
    """
    marker = root / MARKER
    if marker.is_file():
        return
    if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".") and p.name not in _STORE_DIRS):
        raise ResearchError(f"{root} is a folder with files in it but no {MARKER}; a store is made in a new or empty folder")
    for sub in _STORE_DIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    tmp = root / f".{MARKER}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION,
                               "layout": "<table>/cohort=<percent-encoded cohort>/part-0.parquet"}, indent=1) + "\n")
    os.replace(tmp, marker)


def _check_marker(root: Path) -> None:
    try:
        meta = json.loads((root / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise ResearchError(f"store {root}: its marker {MARKER} could not be read ({exc})") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("version"), int):
        raise ResearchError(f"store {root}: {MARKER} does not describe a course-research store")
    if meta["version"] > VERSION:
        raise ResearchError(f"store {root} has format version {meta['version']}; this course-research reads up to {VERSION}: upgrade it")


class _Pin:
    """A shared lock on one generation's ``.pin`` file: the writer does not remove it meanwhile."""

    def __init__(self, fh):
        self.fh = fh

    def release(self) -> None:
        try:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
        finally:
            self.fh.close()


def _current_generations(root: Path) -> Iterator[tuple[str, Path, _Pin]]:
    """(cohort, generation folder, pin) of every cohort, each pinned as it is now."""
    current = root / "_current"
    if not current.is_dir():
        return
    for entry in sorted(os.listdir(current)):
        if entry.startswith("."):
            continue
        for _ in range(50):
            try:
                gen = (current / entry).resolve(strict=True)
                fh = open(gen / ".pin", "rb")
            except FileNotFoundError:
                continue  # swapped and removed between the look and the open: look again
            fcntl.flock(fh, fcntl.LOCK_SH)
            if os.fstat(fh.fileno()).st_nlink == 0:  # removed before the lock was had
                fh.close()
                continue
            yield unquote(entry), gen, _Pin(fh)
            break
        else:
            raise ResearchError(f"store {root}: cohort {unquote(entry)!r} changed 50 times while being opened; try again")


def _tables_in(gen: Path) -> list[str]:
    return sorted(p.name for p in gen.iterdir() if p.is_dir() and (p / PART).is_file())


class StoreWarehouse(Warehouse):
    """A :class:`Warehouse` kept as a Parquet store partitioned by cohort (see the module doc).

    Read-only: DuckDB views over a pinned snapshot of every cohort. Writable: the methods
    that change a cohort (ingest, load, forget_cohort, forget_learner) each check that
    cohort out into a private in-memory DuckDB under its lock and write it back as a new
    generation; :meth:`session` does the same for code that writes through ``con``.
    Reads outside a session see a fresh snapshot of the store.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._pins: list[_Pin] = []
        self._active: str | None = None
        self._pending: str | None = None  # a cohort whose session began but whose data is not read yet
        self._dirty = False
        if read_only and not (self.path / MARKER).is_file():
            if not self.path.exists():
                raise ResearchError(f"store {self.path} does not exist; create it with `research ingest PATH --cohort NAME --warehouse {self.path}` "
                                    "or `research migrate`")
            raise ResearchError(f"{self.path} is not a course-research store (no {MARKER})")
        if not read_only:
            create_store(self.path)
        _check_marker(self.path)
        self.con = self._empty_con()
        if read_only:
            self._open_snapshot()

    # -- plumbing ----------------------------------------------------------------------
    @property
    def con(self):
        """The DuckDB connection; in a session, the cohort's data is read in on first use."""
        if self._pending is not None:
            cohort, self._pending = self._pending, None
            self._checkout(cohort)
        return self._con

    @con.setter
    def con(self, value) -> None:
        self._con = value

    def _empty_con(self):
        con = duckdb.connect(":memory:")
        self.con = con
        try:
            con.execute("SET enable_progress_bar = false").fetchall()
        except duckdb.InvalidInputException:
            pass
        self._create_tables()
        return con

    def _open_snapshot(self) -> None:
        files: dict[str, list[str]] = {}
        for _, gen, pin in _current_generations(self.path):
            self._pins.append(pin)
            for table in _tables_in(gen):
                files.setdefault(table, []).append(str(gen / table / PART))
        for table, paths in files.items():
            self.con.execute(f'DROP TABLE IF EXISTS "{table}"').fetchall()
            listed = "[" + ", ".join(_sql_text(p) for p in paths) + "]"
            try:
                self.con.execute(f'CREATE VIEW "{table}" AS SELECT * FROM read_parquet({listed}, union_by_name = true)').fetchall()
                self.con.execute(f'SELECT count(*) FROM "{table}"').fetchall()  # every file's footer read once
            except duckdb.Error as exc:
                self.close()
                raise self._damaged(paths, exc) from None

    def _damaged(self, paths: list[str], exc: Exception) -> ResearchError:
        """Which file of a view could not be read, as a message that says what to do."""
        bad = paths[0]
        for p in paths:
            try:
                duckdb.sql(f"SELECT count(*) FROM read_parquet({_sql_text(p)})").fetchall()
            except duckdb.Error:
                bad = p
                break
        detail = str(exc).splitlines()[0][:200]
        return ResearchError(f"store {self.path}: the file {bad} could not be read ({detail}); it is damaged. Restore the store "
                             "from a backup, or remove the cohort's folder under _gen and _current and ingest the cohort again")

    def _has_table(self, name: str) -> bool:
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'", [name]).fetchall()[0][0])

    def _tables(self) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name").fetchall()]

    def close(self) -> None:
        try:
            self._con.close()
        finally:
            for pin in self._pins:
                pin.release()
            self._pins = []

    def _reader(self) -> StoreWarehouse:
        return StoreWarehouse(self.path, read_only=True)

    # -- one cohort checked out --------------------------------------------------------
    @contextmanager
    def session(self, cohort: str, *, changes: bool = True) -> Iterator[StoreWarehouse]:
        """Check ``cohort`` out for writing through ``con``; written back as a new generation at the end.

        Holds the cohort's lock meanwhile (other cohorts are free). Nested sessions of the
        same cohort are one session; an error inside leaves the store as it was.
        """
        if self.read_only:
            raise ResearchError(f"store {self.path} is open read-only; open it without read_only to change a cohort")
        cohort = cohort_name(cohort, what="cohort")
        if self._active is not None:
            if self._active != cohort:
                raise ResearchError(f"store {self.path}: cohort {self._active!r} is checked out; change one cohort at a time")
            self._dirty = self._dirty or changes
            yield self
            return
        name = partition_name(cohort)
        wait = float(os.environ.get("RESEARCH_WAREHOUSE_WAIT", WAREHOUSE_WAIT_S))
        with file_lock(self.path / "_locks" / f"{name}.lock", timeout=wait, what=f"cohort {cohort!r} of the store {self.path}"):
            collect(self.path, name)  # what a killed writer of this cohort left
            self._active, self._dirty, self._pending = cohort, changes, cohort  # read in when ``con`` is first used
            try:
                try:
                    yield self
                except Exception:
                    # as in a file, what finished before the error stays: each load is its own
                    # transaction, so the private copy holds whole files only (an open one is rolled back)
                    if self._pending is None:
                        try:
                            self._con.execute("ROLLBACK").fetchall()
                        except duckdb.Error:
                            pass
                        if self._dirty:
                            self._write_generation(cohort)
                    raise
                if self._dirty and self._pending is None:  # never read in: nothing was changed
                    self._write_generation(cohort)
            finally:
                checked_out = self._pending is None
                self._active, self._dirty, self._pending = None, False, None
                if checked_out:
                    self._con.close()
                    self._empty_con()

    def _checkout(self, cohort: str) -> None:
        self._con.close()
        con = self._empty_con()
        link = self.path / "_current" / partition_name(cohort)
        if not link.exists():
            return
        gen = link.resolve(strict=True)
        lazy = _lazy_tables()
        for table in _tables_in(gen):
            part = _sql_text(str(gen / table / PART))
            if not self._has_table(table):
                if table in lazy:
                    con.execute(lazy[table]).fetchall()
                else:
                    con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_parquet({part}) LIMIT 0').fetchall()
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM read_parquet({part})').fetchall()

    def _write_generation(self, cohort: str) -> None:
        """Write every table's rows of ``cohort`` as a new generation, then swap it in."""
        name = partition_name(cohort)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        gen = self.path / "_gen" / name / f"{stamp}-{uuid.uuid4().hex[:8]}"
        gen.mkdir(parents=True)
        (gen / ".pin").touch()
        tables = self._tables()
        for table in tables:
            others = self.con.execute(f'SELECT count(*) FROM "{table}" WHERE cohort IS DISTINCT FROM ?', [cohort]).fetchall()[0][0]
            if others:
                raise ResearchError(f"store {self.path}: table {table} holds {others} row(s) of other cohorts while {cohort!r} is written; nothing was changed")
            (gen / table).mkdir()
            self.con.execute(f'COPY "{table}" TO {_sql_text(str(gen / table / PART))} (FORMAT parquet, COMPRESSION zstd)').fetchall()
        _publish(self.path, name, gen, tables)

    # -- the changing methods run in a session -------------------------------------------
    def ingest(self, paths, *, cohort: str, **kwargs):
        if not cohort or not str(cohort).strip():
            return super().ingest(paths, cohort=cohort, **kwargs)  # its message
        with self.session(cohort, changes=False):
            if self._pending is not None:  # not read in yet: files loaded before need not read it at all
                done = self._already_loaded(paths, cohort, **kwargs)
                if done is not None:
                    return done
            before = self._loads_state()
            try:
                return super().ingest(paths, cohort=cohort, **kwargs)
            finally:  # whatever path the loads took inside, a change shows in their records
                self._dirty = self._dirty or self._loads_state() != before

    def _already_loaded(self, paths, cohort: str, *, format: str | None = None, pseudonymiser=None, **_) -> LoadSummary | None:
        """The summary :meth:`Warehouse.ingest` gives when every file is loaded already and the key is the
        cohort's, read from the current generation's ``loads`` and ``cohort_keys`` alone; None otherwise
        (the full ingest then decides, and says why)."""
        from research.pseudonym import Pseudonymiser
        from research.warehouse import FileLoad, file_sha256, key_fingerprint

        cohort = cohort_name(cohort, what="--cohort")
        link = self.path / "_current" / partition_name(cohort)
        paths = [Path(p) for p in paths]
        if not link.exists() or not paths or not all(p.is_file() for p in paths):
            return None
        gen = link.resolve(strict=True)
        loads, keys = gen / "loads" / PART, gen / "cohort_keys" / PART
        if not (loads.is_file() and keys.is_file()):
            return None
        with duckdb.connect() as con:
            loaded = {r[0] for r in con.execute(f"SELECT DISTINCT file_sha256 FROM read_parquet({_sql_text(str(loads))}) "
                                                "WHERE cohort = ?", [cohort]).fetchall()}
            if not {file_sha256(p) for p in paths} <= loaded:
                return None
            key = con.execute(f"SELECT key_fingerprint FROM read_parquet({_sql_text(str(keys))}) WHERE cohort = ?", [cohort]).fetchall()
        if not key or key[0][0] != key_fingerprint(pseudonymiser or Pseudonymiser()):
            return None
        return LoadSummary([FileLoad(p.name, format or "", cohort, "already loaded") for p in paths])

    def _loads_state(self) -> tuple:
        """What changes whenever a file is loaded or replaced: the load records' ids, removals, keys."""
        return tuple(self.con.execute(
            """SELECT (SELECT count(*) FROM loads), (SELECT coalesce(sum(hash(load_id)), 0) FROM loads),
                      (SELECT count(*) FROM removals), (SELECT count(*) FROM cohort_keys)""").fetchall()[0])

    def load(self, result, *, cohort: str, **kwargs):
        with self.session(cohort):
            return super().load(result, cohort=cohort, **kwargs)

    def record_key(self, cohort: str, pseudonymiser) -> None:
        with self.session(cohort, changes=False):
            before = self.con.execute("SELECT count(*) FROM cohort_keys").fetchall()[0][0]
            super().record_key(cohort, pseudonymiser)
            if self.con.execute("SELECT count(*) FROM cohort_keys").fetchall()[0][0] != before:
                self._dirty = True

    def check_key(self, cohort: str, pseudonymiser) -> None:
        if self.read_only:
            return
        with self.session(cohort, changes=False):
            super().check_key(cohort, pseudonymiser)

    def forget_cohort(self, cohort: str, *, dry_run: bool = False) -> dict[str, int]:
        if self.read_only:
            raise ResearchError(f"warehouse {self.path} is open read-only")
        with self.session(cohort, changes=not dry_run):
            return super().forget_cohort(cohort, dry_run=dry_run)

    def forget_learner(self, cohort: str, learner_id: str, *, dry_run: bool = False) -> dict[str, int]:
        if self.read_only:
            raise ResearchError(f"warehouse {self.path} is open read-only")
        with self.session(cohort, changes=not dry_run):
            return super().forget_learner(cohort, learner_id, dry_run=dry_run)

    # -- reads: the snapshot, or the checked-out cohort ------------------------------------
    def _read(self, method: str, *args, **kwargs):
        if self.read_only or self._active is not None:
            return getattr(super(), method)(*args, **kwargs)
        with self._reader() as reader:
            return getattr(reader, method)(*args, **kwargs)

    def table(self, name: str, cohort: str | None = None) -> pd.DataFrame:
        return self._read("table", name, cohort)

    def cohorts(self) -> pd.DataFrame:
        return self._read("cohorts")

    def has_cohort(self, cohort: str) -> bool:
        return self._read("has_cohort", cohort)

    def counts(self, cohort: str) -> dict[str, int]:
        return self._read("counts", cohort)

    def quarantine_summary(self, cohort: str) -> pd.DataFrame:
        return self._read("quarantine_summary", cohort)

    def removals(self, cohort: str | None = None) -> pd.DataFrame:
        return self._read("removals", cohort)

    def learner_attributes(self, cohort: str) -> pd.DataFrame:
        return self._read("learner_attributes", cohort)


def _publish(root: Path, name: str, gen: Path, tables: list[str]) -> None:
    """Swap ``gen`` in as the cohort's current generation (one atomic rename), link its tables, drop old generations."""
    current = root / "_current"
    current.mkdir(exist_ok=True)
    tmp = current / f".{name}.{uuid.uuid4().hex}"
    os.symlink(os.path.relpath(gen, current), tmp)
    os.replace(tmp, current / name)  # the swap: readers see the old generation or this one
    _fsync_dir(current)
    for table in tables:
        link = root / table / f"cohort={name}"
        if not os.path.lexists(link):
            link.parent.mkdir(exist_ok=True)
            os.symlink(os.path.join("..", "_current", name, table), link)
    collect(root, name)


def collect(root: Path, name: str) -> list[Path]:
    """Remove the generations of one cohort that are not current and that no reader pins; returns them.

    Call with the cohort's lock held (a writer does, after its swap). A generation a
    killed writer left half written is removed here too.
    """
    current = (root / "_current" / name)
    keep = current.resolve() if os.path.lexists(current) else None
    removed = []
    folder = root / "_gen" / name
    if not folder.is_dir():
        return removed
    for gen in folder.iterdir():
        if keep is not None and gen.resolve() == keep:
            continue
        try:
            fh = open(gen / ".pin", "rb")
        except FileNotFoundError:
            shutil.rmtree(gen, ignore_errors=True)
            removed.append(gen)
            continue
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a reader still reads it
            shutil.rmtree(gen, ignore_errors=True)
            removed.append(gen)
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- migrate: a warehouse file to a store and back ------------------------------------------
def table_digest(con, table: str) -> tuple[int, str]:
    """(rows, checksum) of a table: the sum of a hash of each row (columns by name, as text), so
    the order of rows and of columns does not matter; 16 hex digits."""
    cols = sorted(r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'", [table]).fetchall())
    row = "hash(" + ", ".join(f'CAST("{c}" AS VARCHAR)' for c in cols) + ")"
    n, total = con.execute(
        f'SELECT count(*), coalesce(sum(CAST({row} AS HUGEINT)), 0) % 18446744073709551616 FROM "{table}"').fetchall()[0]
    return int(n), f"{int(total):016x}"


def _table_names(con) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name").fetchall()]


def digests(wh: Warehouse) -> dict[str, tuple[int, str]]:
    """Rows and checksum of every table of an open warehouse (file or store)."""
    return {t: table_digest(wh.con, t) for t in _table_names(wh.con)}


def _kind(path: Path) -> str:
    return "store" if is_store(path) else "file"


def open_warehouse(path: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> Warehouse:
    """The warehouse at ``path``: a DuckDB file (the default), or a Parquet store (a folder holding
    ``store.json``, or a new path ending in ``.store``; this module)."""
    path = resolve(path) if path is not None else default_warehouse()
    return StoreWarehouse(path, read_only=read_only) if is_store(path) else Warehouse(path, read_only=read_only)


def write_lock(path: str | os.PathLike[str] | None = None):
    """The lock a writer of the warehouse at ``path`` holds: the whole file's, or none for a store
    (a store's writers lock only the cohort they change)."""
    path = resolve(path) if path is not None else default_warehouse()
    return nullcontext() if is_store(path) else warehouse_write_lock(path)


def migrate(source: str | os.PathLike[str], target: str | os.PathLike[str], *, replace: bool = False) -> pd.DataFrame:
    """Copy the warehouse at ``source`` to ``target`` (a DuckDB file or a store, either way), losing nothing.

    Every table is copied whole; then the target is opened again and each table's row
    count and checksum (:func:`table_digest`) compared with the source's. The target is
    built beside its final place and moved there only when every table agrees, so a
    failed migration leaves no target (or the old one, with ``replace``). An existing
    target is refused unless ``replace``. Returns one row per table: table, rows,
    checksum, rows_target, checksum_target, equal.
    """
    source, target = resolve(source), resolve(target)
    if not source.exists():
        raise ResearchError(f"research migrate: --from {source} does not exist")
    if source == target:
        raise ResearchError("research migrate: --from and --to are the same warehouse")
    if (target.exists() or os.path.lexists(target)) and not replace:
        raise ResearchError(f"research migrate: --to {target} exists; give --replace to overwrite it (it is replaced only "
                            "when the copy checks equal)")
    store_target = target.suffix == ".store" or (target.is_dir() and (target / MARKER).is_file())
    tmp = target.with_name(f".{target.name}.migrate-{uuid.uuid4().hex[:8]}" + ("" if store_target else target.suffix))
    try:
        with open_warehouse(source, read_only=True) as src:
            tables = _table_names(src.con)
            nulls = [t for t in tables if src.con.execute(f'SELECT count(*) FROM "{t}" WHERE cohort IS NULL').fetchall()[0][0]]
            if nulls:
                raise ResearchError(f"research migrate: {source} has rows without a cohort in {', '.join(nulls)}; "
                                    "a store partitions every table by cohort, so nothing was migrated")
            before = digests(src)
            if store_target:
                _write_store(src.con, tables, tmp)
            else:
                _write_file(src.con, tables, tmp)
        with (StoreWarehouse(tmp, read_only=True) if store_target else Warehouse(tmp, read_only=True)) as dst:
            after = digests(dst)
        rows = []
        for t in sorted(set(before) | set(after)):
            n, c = before.get(t, (0, f"{0:016x}"))
            n2, c2 = after.get(t, (0, f"{0:016x}"))
            rows.append({"table": t, "rows": n, "checksum": c, "rows_target": n2, "checksum_target": c2,
                         "equal": n == n2 and c == c2})
        report = pd.DataFrame(rows)
        if not report["equal"].all():
            bad = ", ".join(report.loc[~report["equal"], "table"])
            raise ResearchError(f"research migrate: the copy differs from {source} in {bad}; {target} was not written")
        with write_lock(target) if not store_target else nullcontext():
            _swap_into_place(tmp, target)
        return report
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
        for extra in (tmp.with_name(tmp.name + ".wal"), tmp.with_name(f".{tmp.name}.write.lock")):  # the copy's DuckDB log and lock
            if extra.exists():
                extra.unlink()


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    wal = target.with_name(target.name + ".wal")
    if wal.exists() and not target.is_dir():
        wal.unlink()


def _write_store(con, tables: list[str], root: Path) -> None:
    create_store(root)
    cohorts = sorted({r[0] for t in tables for r in con.execute(f'SELECT DISTINCT cohort FROM "{t}"').fetchall()})
    for cohort in cohorts:
        name = partition_name(cohort)
        gen = root / "_gen" / name / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        gen.mkdir(parents=True)
        (gen / ".pin").touch()
        for t in tables:
            (gen / t).mkdir()
            con.execute(f'COPY (SELECT * FROM "{t}" WHERE cohort = {_sql_text(cohort)}) TO {_sql_text(str(gen / t / PART))} '
                        "(FORMAT parquet, COMPRESSION zstd)").fetchall()
        _publish(root, name, gen, tables)


def _write_file(con, tables: list[str], path: Path) -> None:
    lazy = _lazy_tables()
    with Warehouse(path) as dst:
        for t in tables:
            reader = con.sql(f'SELECT * FROM "{t}"').to_arrow_reader()
            dst.con.register("__rows", reader)
            try:
                if t in lazy:
                    dst.con.execute(lazy[t]).fetchall()
                elif not dst._has_table(t):
                    dst.con.register("__shape", reader.schema.empty_table())
                    dst.con.execute(f'CREATE TABLE "{t}" AS SELECT * FROM __shape').fetchall()
                    dst.con.unregister("__shape")
                dst.con.execute(f'INSERT INTO "{t}" BY NAME SELECT * FROM __rows').fetchall()
            finally:
                dst.con.unregister("__rows")
        dst.con.execute("CHECKPOINT").fetchall()
