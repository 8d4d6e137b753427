"""The embedded DuckDB warehouse: canonical tables per cohort, idempotent loads, quarantine.

One DuckDB file (default ``data/warehouse.duckdb`` under the project root, or
``$RESEARCH_WAREHOUSE``) holds the canonical tables of every cohort, created from the
Table Schemas in ``data_schema/``, plus two bookkeeping tables:

``loads``
    one row per ingested file and table: the file's SHA-256, its format, and how many
    rows were read, loaded, rejected, skipped (not attempts) and already present.
``quarantine``
    every row that was not loaded, with its file, line, column, reason, kind
    (``rejected`` for bad rows, ``skipped`` for rows that are not attempts, such as page
    views) and the row itself as JSON. Nothing is dropped without a row here.

Loads are idempotent: a file whose content was already loaded into the cohort is
skipped whole, and rows whose primary key is already in the warehouse are counted as
already present and not inserted again. Each file loads in one transaction.

Corrections: a file is identified by its path (resolved) within a cohort. Ingesting a
path again with changed content replaces what its earlier version loaded: the rows that
version inserted (``load_rows`` keeps their primary keys; a table's first load into a cohort
keeps one row for the whole table, as its rows are those no later load recorded, and its KC
rows as their KC models, as they are those models' rows on its attempts), its quarantine rows and its
``loads`` rows are removed in the same transaction as the new version loads, and the
removal is recorded in ``removals``. So the warehouse holds each observation once, with
the newest value.

Pseudonym key: ``cohort_keys`` stores a fingerprint of the key a cohort was first loaded
with (an HMAC of a fixed text, which reveals nothing about the key); loading the cohort
with another key is refused, as its learners would no longer link across files.

``removals`` is the audit record of everything removed (corrections and ``research
forget``): when, what, which cohort, which table, how many rows; never a learner id.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from collections.abc import Iterable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from research.errors import DataError, ResearchError
from research.names import cohort_name
from research.faults import WarehouseDamaged, WarehouseLocked, check_complete, check_file, warehouse_open_error  # noqa: F401 - re-exported
from research.ingest.base import IngestResult
from research.locks import warehouse_lock
from research.paths import default_warehouse, resolve
from research.schema import as_schema_dtypes, canonical_tables, check_relation, load_schema

__all__ = [
    "FileLoad", "LRS_STATE_SQL", "LoadSummary", "TableLoad", "Warehouse", "WarehouseDamaged",
    "WarehouseLocked", "file_sha256", "key_fingerprint", "warehouse_error"
]

#: the state of `research pull` per cohort and endpoint (created by research.lrs when first needed)
LRS_STATE_SQL = """CREATE TABLE IF NOT EXISTS lrs_state (
    cohort VARCHAR, endpoint VARCHAR, since VARCHAR, pulled_at TIMESTAMP, n_statements BIGINT)"""
LOADS_SQL = """CREATE TABLE IF NOT EXISTS loads (
    load_id VARCHAR, cohort VARCHAR, source_file VARCHAR, file_sha256 VARCHAR, format VARCHAR,
    table_name VARCHAR, n_read BIGINT, n_loaded BIGINT, n_rejected BIGINT, n_skipped BIGINT,
    n_already_present BIGINT, loaded_at TIMESTAMP)"""
QUARANTINE_SQL = """CREATE TABLE IF NOT EXISTS quarantine (
    load_id VARCHAR, cohort VARCHAR, table_name VARCHAR, source_file VARCHAR, source_line BIGINT,
    "column" VARCHAR, reason VARCHAR, kind VARCHAR, raw VARCHAR)"""


LOAD_ROWS_SQL = """CREATE TABLE IF NOT EXISTS load_rows (
    load_id VARCHAR, cohort VARCHAR, table_name VARCHAR, row_key VARCHAR)"""
COHORT_KEYS_SQL = """CREATE TABLE IF NOT EXISTS cohort_keys (
    cohort VARCHAR PRIMARY KEY, key_fingerprint VARCHAR, recorded_at TIMESTAMP)"""
ATTRIBUTES_SQL = """CREATE TABLE IF NOT EXISTS learner_attributes (
    cohort VARCHAR NOT NULL, learner_id VARCHAR NOT NULL, attribute VARCHAR NOT NULL, value VARCHAR,
    PRIMARY KEY (cohort, learner_id, attribute))"""
REMOVALS_SQL = """CREATE TABLE IF NOT EXISTS removals (
    removed_at TIMESTAMP, action VARCHAR, cohort VARCHAR, subject VARCHAR, table_name VARCHAR,
    n_rows BIGINT, detail VARCHAR)"""
#: ``load_rows.table_name`` of a load's KC rows recorded by KC model (``row_key`` is the model):
#: the rows of that model on the attempts the same load inserted
KCS_BY_ATTEMPT = "attempt_kcs of its attempts"
#: bookkeeping tables besides the canonical ones (all carry a ``cohort`` column)
BOOKKEEPING = ("loads", "quarantine", "load_rows", "cohort_keys")


#: One implementation for every command: research.faults tells a locked warehouse from a damaged one.
warehouse_error = warehouse_open_error


def key_fingerprint(pseudonymiser) -> str:
    """A fingerprint of the pseudonymiser's key: HMAC-SHA256 of a fixed text, first 16 hex digits."""
    return pseudonymiser.fingerprint()


def _arrow_types(t: pa.DataType):
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype("pyarrow")
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    return None


def _arrow_frame(con, sql: str, params: list) -> pd.DataFrame | None:
    """A query's rows through Arrow (several times faster than ``.df()`` for text columns), typed
    as :func:`research.schema.as_schema_dtypes` types them; None when a column has a type this
    path does not map the way ``.df()`` does (dates, zoned timestamps, nested values)."""
    table = con.sql(sql, params=params).to_arrow_table()
    plain = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_boolean, pa.types.is_floating)
    for field in table.schema:
        t = field.type
        if not (any(check(t) for check in plain) or (pa.types.is_timestamp(t) and t.tz is None)):
            return None
    return table.to_pandas(types_mapper=_arrow_types)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _table_stats(result: IngestResult, name: str) -> TableLoad:
    """The counts of one table of an adapter result before DuckDB sees it: rows read, and the rows
    the adapter rejected or skipped."""
    rejects = result.rejects[result.rejects["table_name"] == name] if len(result.rejects) else result.rejects
    return TableLoad(
        name,
        n_read=len(result.tables[name]) + len(rejects),
        n_rejected=int((rejects["kind"] == "rejected").sum()) if len(rejects) else 0,
        n_skipped=int((rejects["kind"] == "skipped").sum()) if len(rejects) else 0,
    )


@dataclass(frozen=True)
class _Load:
    """One file's load: its id, time, cohort, content hash and resolved path."""

    load_id: str
    now: datetime
    cohort: str
    file_sha256: str
    source_path: str | None


@dataclass
class TableLoad:
    table_name: str
    n_read: int = 0
    n_loaded: int = 0
    n_rejected: int = 0
    n_skipped: int = 0
    n_already_present: int = 0


@dataclass
class FileLoad:
    """What happened to one file: per-table counts and the reasons rows were not loaded."""

    source_file: str
    format: str
    cohort: str
    status: str  # "loaded" or "already loaded"
    tables: dict[str, TableLoad] = field(default_factory=dict)
    reasons: pd.DataFrame = field(default_factory=pd.DataFrame)
    replaced: dict[str, int] | None = None  # rows of an earlier version of the file removed, per table
    notes: list = field(default_factory=list)  # adapter lines for the summary (xAPI profile, rules, voids)

    @property
    def n_rejected(self) -> int:
        return sum(t.n_rejected for t in self.tables.values())

    def lines(self) -> list[str]:
        if self.status != "loaded":
            return [f"{self.source_file}: {self.status} into cohort {self.cohort!r} before; nothing added"]
        out = [f"{self.source_file} ({self.format}) -> cohort {self.cohort!r}"]
        if self.replaced is not None:
            removed = ", ".join(f"{n:,} {t}" for t, n in self.replaced.items()) or "no rows"
            out.append(f"  replaces the earlier version of this file: removed {removed}")
        for t in self.tables.values():
            out.append(
                f"  {t.table_name}: read {t.n_read:,}, loaded {t.n_loaded:,}, rejected {t.n_rejected:,}, "
                f"skipped {t.n_skipped:,}, already present {t.n_already_present:,}"
            )
        out.extend(self.notes)
        if not self.reasons.empty:
            out.append("  not loaded, by reason:")
            for r in self.reasons.itertuples(index=False):
                out.append(f"    {r.n:>8,}  {r.kind:<8} {r.table_name}.{r.column}: {r.reason}")
        return out


@dataclass
class LoadSummary:
    files: list[FileLoad] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return sum(f.n_rejected for f in self.files)

    def __str__(self) -> str:
        return "\n".join(line for f in self.files for line in f.lines())

    def to_frame(self) -> pd.DataFrame:
        rows = [
            {"source_file": f.source_file, "format": f.format, "cohort": f.cohort, "status": f.status, **t.__dict__}
            for f in self.files
            for t in (f.tables.values() or [TableLoad("")])
        ]
        return pd.DataFrame(rows)


class Warehouse:
    """The DuckDB store of canonical tables.

    Parameters
    ----------
    path
        The DuckDB file; relative paths resolve against the project root. Default
        ``$RESEARCH_WAREHOUSE`` or ``data/warehouse.duckdb``.
    read_only
        Open without write access (several readers may share the file).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False):
        self.path = resolve(path) if path is not None else default_warehouse()
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise ResearchError(
                f"warehouse {self.path} does not exist; create it with `research ingest PATH --cohort NAME` "
                "or `research demo`"
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = ExitStack()
        try:  # readers share the file, a writer has it alone; each waits its turn (research.locks)
            self._lock.enter_context(warehouse_lock(self.path, shared=read_only))
        except OSError:
            pass  # no lock file where the warehouse lies (a read-only folder): DuckDB's own lock still guards it
        try:
            self._open(read_only)
        except BaseException:
            self._lock.close()
            raise

    def _open(self, read_only: bool) -> None:
        try:
            check_file(self.path)
            self.con = duckdb.connect(str(self.path), read_only=read_only)
            check_complete(self.con, self.path)
        except duckdb.Error as exc:
            raise warehouse_open_error(self.path, exc) from None
        try:
            try:  # no progress bars in command output; inside a Jupyter kernel DuckDB refuses the setting without ipywidgets
                self.con.execute("SET enable_progress_bar = false").fetchall()
            except duckdb.InvalidInputException:
                pass
            if not read_only:
                self._create_tables()
            else:
                self.con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
        except duckdb.Error as exc:
            self.con.close()
            raise warehouse_open_error(self.path, exc) from None

    def _create_tables(self) -> None:
        for name in canonical_tables():
            schema = load_schema(name)
            self.con.execute(schema.create_sql()).fetchall()
            # a warehouse made by an earlier version gains the optional columns added since
            for f in schema.fields:
                self.con.execute(f'ALTER TABLE "{name}" ADD COLUMN IF NOT EXISTS "{f.name}" {f.sql_type}').fetchall()
        self.con.execute(LOADS_SQL).fetchall()
        self.con.execute("ALTER TABLE loads ADD COLUMN IF NOT EXISTS source_path VARCHAR").fetchall()
        self.con.execute(QUARANTINE_SQL).fetchall()
        self.con.execute(LOAD_ROWS_SQL).fetchall()
        self.con.execute(COHORT_KEYS_SQL).fetchall()
        self.con.execute(REMOVALS_SQL).fetchall()
        self.con.execute(ATTRIBUTES_SQL).fetchall()

    def _has_table(self, name: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])

    # -- context manager -------------------------------------------------------------
    def close(self) -> None:
        try:
            self.con.close()
        finally:
            self._lock.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def session(self, cohort: str, *, changes: bool = True):
        """A block that writes one cohort through ``con``: nothing to do for a file (a store checks the cohort out)."""
        return nullcontext(self)

    # -- loading ---------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        cohort: str,
        format: str | None = None,
        options: dict | None = None,
        pseudonymiser=None,
    ) -> LoadSummary:
        """Read each file with its adapter (format sniffed unless given) and load it."""
        from research.ingest import read_file
        from research.pseudonym import Pseudonymiser

        if not cohort or not str(cohort).strip():
            raise ResearchError("a cohort name is required (for example --cohort 2026-spring)")
        cohort = cohort_name(cohort, what="--cohort")  # names are data: never a path, markup or a formula
        pseudonymiser = pseudonymiser or Pseudonymiser()
        self.check_key(cohort, pseudonymiser)
        summary = LoadSummary()
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            fmt = format
            if fmt is None and (options or {}).get("mapping"):  # a mapping only fits csv or parquet
                fmt = "parquet" if path.suffix.lower() == ".parquet" else "csv"
            digest, result = self._read_unless_loaded(path, cohort, lambda p=path, f=fmt: read_file(
                p, cohort=cohort, pseudonymiser=pseudonymiser, format=f, options=options))
            if result is None:
                summary.files.append(FileLoad(path.name, format or "", cohort, "already loaded"))
                continue
            # Arrow's allocator keeps what the adapter freed (about half the file's size again);
            # hand it back before DuckDB, which allocates on its own, checks and inserts the rows
            pa.default_memory_pool().release_unused()
            summary.files.append(self.load(result, cohort=cohort, file_sha256=digest, source_path=str(path.resolve())))
            self.record_key(cohort, pseudonymiser)
        return summary

    def _read_unless_loaded(self, path: Path, cohort: str, read) -> tuple[str, IngestResult | None]:
        """``(sha256, read())``, or ``(sha256, None)`` when the cohort has a file of that content already.

        A path the cohort loaded before (a scheduled re-run) is hashed first, so an unchanged file is
        never read. A path it has not seen is most likely new content: it is read while a thread
        hashes it (hashlib works outside the GIL), and only a copy of a loaded file under another
        name is read for nothing.
        """
        def loaded(digest: str) -> bool:
            return bool(self.con.execute("SELECT count(*) FROM loads WHERE cohort = ? AND file_sha256 = ?",
                                         [cohort, digest]).fetchall()[0][0])

        seen = self.con.execute("SELECT count(*) FROM loads WHERE cohort = ? AND source_path = ?",
                                [cohort, str(path.resolve())]).fetchall()[0][0]
        if seen:
            digest = file_sha256(path)
            return digest, None if loaded(digest) else read()
        with ThreadPoolExecutor(1) as pool:
            hashing = pool.submit(file_sha256, path)
            try:
                result = read()
            except ResearchError:
                if loaded(hashing.result()):  # its content is in the cohort already: nothing to read
                    return hashing.result(), None
                raise
        digest = hashing.result()
        return digest, None if loaded(digest) else result

    # -- pseudonym key -----------------------------------------------------------------
    def check_key(self, cohort: str, pseudonymiser) -> None:
        """Refuse to load ``cohort`` with a key other than the one it was loaded with."""
        if self.read_only:
            return
        row = self.con.execute("SELECT key_fingerprint FROM cohort_keys WHERE cohort = ?", [cohort]).fetchall()
        mine = key_fingerprint(pseudonymiser)
        if row and row[0][0] != mine:
            raise DataError(
                f"cohort {cohort!r} was loaded with another pseudonym key (key fingerprint {row[0][0]}; the key in use "
                f"now has fingerprint {mine}). Its learners would not link across files, so nothing was loaded. "
                "Use the key the cohort was loaded with (RESEARCH_PSEUDONYM_KEY or RESEARCH_PSEUDONYM_KEY_FILE), or "
                f"remove the cohort with `research forget --cohort {cohort}` and load all its files again with this key."
            )

    def record_key(self, cohort: str, pseudonymiser) -> None:
        """Store the key fingerprint of ``cohort`` when it has none yet."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self.con.execute(
            "INSERT INTO cohort_keys SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM cohort_keys WHERE cohort = ?)",
            [cohort, key_fingerprint(pseudonymiser), now, cohort],
        ).fetchall()

    # -- corrections and removals --------------------------------------------------------
    def _key_expr(self, name: str, alias: str = "") -> str:
        schema = load_schema(name) if name in canonical_tables() else None
        keys = [k for k in (schema.primary_key if schema else ("learner_id", "attribute")) if k != "cohort"]
        prefix = f"{alias}." if alias else ""
        return "concat_ws(chr(31), " + ", ".join(f'CAST({prefix}"{k}" AS VARCHAR)' for k in keys) + ")"

    def _record_removal(self, action: str, cohort: str, subject: str | None, counts: dict[str, int], detail: str = "") -> None:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        for table, n in counts.items():
            self.con.execute("INSERT INTO removals VALUES (?, ?, ?, ?, ?, ?, ?)", [now, action, cohort, subject, table, int(n), detail]).fetchall()

    def _remove_loads(self, cohort: str, load_ids: list[str]) -> dict[str, int]:
        """Delete what the given loads inserted (rows by key, quarantine, load records). Inside a transaction.

        The keys to delete are gathered first, per load and table, in ``__gone``: the keys a
        load recorded, and for a load that recorded a table as a whole (``row_key`` NULL: the
        table's first load into the cohort) the cohort's rows of that table that no other load
        recorded. KC rows recorded by KC model go with those models' rows on the load's attempts.
        """
        con = self.con
        counts: dict[str, int] = {}
        tables = [*canonical_tables(), *(["learner_attributes"] if self._has_table("learner_attributes") else [])]
        con.register("__old_loads", pd.DataFrame({"load_id": load_ids}))
        try:
            con.execute("""CREATE OR REPLACE TEMP TABLE __gone AS SELECT load_id, table_name, row_key FROM load_rows
                           WHERE cohort = ? AND row_key IS NOT NULL AND load_id IN (SELECT load_id FROM __old_loads)""",
                        [cohort]).fetchall()
            whole = con.execute("""SELECT load_id, table_name FROM load_rows WHERE cohort = ? AND row_key IS NULL
                                   AND load_id IN (SELECT load_id FROM __old_loads)""", [cohort]).fetchall()
            for load_id, name in [(i, t) for i, t in whole if t in tables]:
                key = self._key_expr(name, "x")
                con.execute(
                    f"""INSERT INTO __gone SELECT ?, ?, {key} FROM "{name}" x WHERE x.cohort = ? AND {key} NOT IN (
                          SELECT row_key FROM load_rows WHERE cohort = ? AND table_name = ? AND row_key IS NOT NULL
                          AND load_id <> ?)""",
                    [load_id, name, cohort, cohort, name, load_id]).fetchall()
            n = con.execute(
                f"""DELETE FROM attempt_kcs k WHERE k.cohort = ? AND EXISTS (
                      SELECT 1 FROM load_rows m JOIN __gone a ON a.load_id = m.load_id
                      WHERE m.cohort = ? AND m.table_name = '{KCS_BY_ATTEMPT}' AND m.row_key = k.kc_model
                      AND a.table_name = 'attempts' AND a.row_key = {self._key_expr("attempts", "k")})""",
                [cohort, cohort],
            ).fetchall()[0][0]
            if n:
                counts["attempt_kcs"] = int(n)
            for name in tables:
                n = con.execute(
                    f"""DELETE FROM "{name}" WHERE cohort = ? AND {self._key_expr(name)} IN (
                          SELECT row_key FROM __gone WHERE table_name = ?)""", [cohort, name]).fetchall()[0][0]
                if n:
                    counts[name] = counts.get(name, 0) + int(n)
            n = con.execute("DELETE FROM quarantine WHERE cohort = ? AND load_id IN (SELECT load_id FROM __old_loads)", [cohort]).fetchall()[0][0]
            if n:
                counts["quarantine"] = int(n)
            con.execute("DELETE FROM load_rows WHERE cohort = ? AND load_id IN (SELECT load_id FROM __old_loads)", [cohort]).fetchall()
            con.execute("DELETE FROM loads WHERE cohort = ? AND load_id IN (SELECT load_id FROM __old_loads)", [cohort]).fetchall()
        finally:
            con.unregister("__old_loads")
            self._drop_temporaries("__gone")
        return counts

    @contextmanager
    def _removal(self, dry_run: bool):
        """One transaction for a removal: yields the connection; commits at the end (rolls back
        for ``dry_run``) and rolls back on any error. A read-only warehouse refuses."""
        if self.read_only:
            raise ResearchError(f"warehouse {self.path} is open read-only")
        con = self.con
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            yield con
            con.execute("ROLLBACK" if dry_run else "COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise

    def forget_cohort(self, cohort: str, *, dry_run: bool = False) -> dict[str, int]:
        """Remove every row of ``cohort`` from every table (canonical and bookkeeping); returns counts per table.

        The removal is recorded in ``removals`` (the one table that keeps the cohort's name).
        ``dry_run`` counts what would go and changes nothing.
        """
        counts: dict[str, int] = {}
        with self._removal(dry_run) as con:
            extra = [t for t in ("learner_attributes", "kc_model_files") if self._has_table(t)]
            for name in [*canonical_tables(), *extra, *BOOKKEEPING]:
                n = con.execute(f'DELETE FROM "{name}" WHERE cohort = ?', [cohort]).fetchall()[0][0]
                counts[name] = int(n)
            self._record_removal("forget cohort", cohort, cohort, counts, "research forget --cohort")
        return counts

    def forget_learner(self, cohort: str, learner_id: str, *, dry_run: bool = False) -> dict[str, int]:
        """Remove every row of one learner (by pseudonym) from ``cohort``; returns counts per table.

        The attempts' KC rows go with them, and so do the row keys the loads recorded.
        ``removals`` records the counts, never the pseudonym.
        """
        counts: dict[str, int] = {}
        with self._removal(dry_run) as con:
            n = con.execute(
                """DELETE FROM attempt_kcs WHERE cohort = ? AND attempt_id IN
                   (SELECT attempt_id FROM attempts WHERE cohort = ? AND learner_id = ?)""", [cohort, cohort, learner_id]
            ).fetchall()[0][0]
            counts["attempt_kcs"] = int(n)
            extra = ["learner_attributes"] if self._has_table("learner_attributes") else []
            for name in [t for t in canonical_tables() if t != "attempt_kcs"] + extra:
                cols = [d[0] for d in con.execute(f'SELECT * FROM "{name}" LIMIT 0').description]
                if "learner_id" not in cols:
                    continue
                con.execute(
                    f"""DELETE FROM load_rows WHERE cohort = ? AND table_name = ? AND row_key IN
                        (SELECT {self._key_expr(name)} FROM "{name}" WHERE cohort = ? AND learner_id = ?)""",
                    [cohort, name, cohort, learner_id],
                ).fetchall()
                n = con.execute(f'DELETE FROM "{name}" WHERE cohort = ? AND learner_id = ?', [cohort, learner_id]).fetchall()[0][0]
                counts[name] = int(n)
            # older warehouses kept whole rows (with pseudonyms) in quarantine
            n = con.execute("DELETE FROM quarantine WHERE cohort = ? AND contains(raw, ?)", [cohort, learner_id]).fetchall()[0][0]
            counts["quarantine"] = int(n)
            self._record_removal("forget learner", cohort, None, counts, "research forget --learner (erasure request)")
        return counts

    def removals(self, cohort: str | None = None) -> pd.DataFrame:
        """The audit record of removals (corrections and forget), newest first."""
        where, args = ("WHERE cohort = ?", [cohort]) if cohort is not None else ("", [])
        return self.con.execute(f"SELECT * FROM removals {where} ORDER BY removed_at DESC", args).df()

    def load(self, result: IngestResult, *, cohort: str, file_sha256: str | None = None, source_path: str | None = None) -> FileLoad:
        """Validate the tables of one adapter result against their schemas and insert them.

        Runs in one transaction: either the whole file is loaded (with its rejects in
        quarantine) or nothing is. With ``source_path``, an earlier load of the same path
        into the cohort (other content) is replaced: its rows are removed first.
        """
        if self.read_only:
            raise ResearchError(f"warehouse {self.path} is open read-only; open it without read_only to load data")
        load = _Load(uuid.uuid4().hex, datetime.now(timezone.utc).replace(tzinfo=None), cohort, file_sha256 or "", source_path)
        summary = FileLoad(result.name, result.format, cohort, "loaded")
        quarantined = [result.rejects.assign(cohort=cohort)] if len(result.rejects) else []
        con = self.con
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            if source_path:
                self._replace_earlier_version(result, load, summary)
            for name in [t for t in canonical_tables() if t in result.tables]:
                summary.tables[name] = self._load_table(result, name, load, quarantined, summary.tables.get("attempts"))
            self._load_extras(result, load, summary)
            if quarantined:
                summary.reasons = self._insert_quarantine(pd.concat(quarantined, ignore_index=True).assign(load_id=load.load_id))
            if summary.replaced and "attempts" in summary.replaced:
                self._remove_kcs_of_replaced_attempts(cohort, result.name)
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
        return summary

    def _replace_earlier_version(self, result: IngestResult, load: _Load, summary: FileLoad) -> None:
        """Remove what an earlier version of the same path (other content) loaded into the cohort."""
        old_ids = [r[0] for r in self.con.execute(
            "SELECT DISTINCT load_id FROM loads WHERE cohort = ? AND source_path = ? AND file_sha256 IS DISTINCT FROM ?",
            [load.cohort, load.source_path, load.file_sha256]).fetchall()]
        if old_ids:
            summary.replaced = self._remove_loads(load.cohort, old_ids)
            self._record_removal("correction", load.cohort, result.name, summary.replaced or {"(nothing)": 0},
                                 "an earlier version of the file, replaced by the version loaded now")

    def _load_table(self, result: IngestResult, name: str, load: _Load, quarantined: list,
                    attempts: TableLoad | None = None) -> TableLoad:
        """Check one canonical table of ``result`` in DuckDB and insert its valid rows that are new.

        The rows travel as an Arrow table (no per-value copy) with their position as
        ``__row`` (so the check needs no window over the whole file); rejects go to
        ``quarantined``; the new rows' keys go to ``load_rows``. ``attempts`` is what the
        same file's attempts table did, when it has one: KC rows of attempts that all went in
        need no orphan check, and those of a first load are recorded by their KC models
        (see :meth:`_kcs_owned_by_attempts`).
        """
        cohort, frame, schema = load.cohort, result.tables[name], load_schema(name)
        stats = _table_stats(result, name)
        columns = self._register_incoming(frame, cohort)
        source, row_column, n_source = "__incoming", "__row", len(frame)
        own_attempts = name == "attempt_kcs" and result.kcs_of_own_attempts and attempts is not None
        n_attempts = len(result.tables["attempts"]) if own_attempts else -1
        if name == "attempt_kcs" and "attempts" in result.tables and not (
                own_attempts and attempts.n_loaded + attempts.n_already_present == n_attempts):
            # a KC row whose attempt was rejected is quarantined; with every attempt of the
            # file in the warehouse (and KC rows of the file's attempts only) there is none
            orphans = self._orphan_kcs(cohort, columns, result.name)
            n_source -= len(orphans)
            if len(orphans):
                quarantined.append(orphans)
                stats.n_rejected += len(orphans)
                source, row_column = "__kcs_with_attempt", None  # rows numbered anew, as before the orphans left
        valid_sql, rejects_sql = check_relation(self.con, source, columns, schema, source_file=result.name, ordered=False,
                                                row_column=row_column)
        new_rows = "SELECT " + ", ".join(f'v."{c}"' for c in schema.field_names) + f" FROM ({valid_sql}) v"
        if self.con.execute(f'SELECT EXISTS (SELECT 1 FROM "{name}" WHERE cohort = ?)', [cohort]).fetchall()[0][0]:
            self._insert_new(name, new_rows, rejects_sql, load, stats, quarantined, n_source)
        else:
            self._insert_first(name, new_rows, rejects_sql, load, stats, quarantined, n_source)
            if own_attempts and attempts.n_loaded == n_attempts:
                self._kcs_owned_by_attempts(load)
            elif name != "attempt_kcs" and not self._recorded_whole(cohort, name):
                # every row of the table in the cohort is this load's, and rows other loads add are
                # recorded by key: one row records them all (KC rows excepted: a KC-model import
                # adds rows without a load)
                self.con.execute("INSERT INTO load_rows VALUES (?, ?, ?, NULL)", [load.load_id, cohort, name]).fetchall()
            else:
                self.con.execute(f'INSERT INTO load_rows SELECT ?, ?, ?, {self._key_expr(name, "v")} FROM "{name}" v '
                                 "WHERE v.cohort = ?", [load.load_id, cohort, name, cohort]).fetchall()
        self._record_load(result, load, name, stats)
        return stats

    def _register_incoming(self, frame: pd.DataFrame, cohort: str) -> list[str]:
        """Register ``frame`` (with its row positions as ``__row``) and the view ``__incoming`` of it
        with the cohort as a column; returns the view's columns, cohort first."""
        arrow = pa.Table.from_pandas(frame.drop(columns=["cohort"], errors="ignore"), preserve_index=False)
        self.con.register("__frame", arrow.append_column("__row", pa.array(np.arange(len(frame), dtype=np.int64))))
        cohort_sql = "'" + cohort.replace("'", "''") + "'"
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW __incoming AS SELECT CAST({cohort_sql} AS VARCHAR) AS cohort, * "
                         "FROM __frame").fetchall()
        return ["cohort", *[c for c in frame.columns if c != "cohort"]]

    def _release_incoming(self) -> None:
        self._drop_temporaries("__kcs_with_attempt", "__incoming", "__checked", "__dups")
        self.con.unregister("__frame")

    def _insert_first(self, name: str, new_rows: str, rejects_sql: str, load: _Load, stats: TableLoad,
                      quarantined: list, n_source: int) -> None:
        """Insert the valid rows into a table with no rows of the cohort (yet, or no more after a
        correction removed them): every valid row is new. One pass checks, types and inserts them;
        rows that fail the checks are looked for only when fewer rows went in than came (every row
        is either valid or rejected, the checks are never NULL)."""
        stats.n_loaded = int(self.con.execute(f'INSERT INTO "{name}" {new_rows}').fetchall()[0][0])
        if stats.n_loaded < n_source:
            self._add_rejects(rejects_sql, load.cohort, stats, quarantined)
        self._release_incoming()

    def _insert_new(self, name: str, new_rows: str, rejects_sql: str, load: _Load, stats: TableLoad,
                    quarantined: list, n_source: int) -> None:
        """Insert the valid rows not yet in the warehouse, checked and typed once: their keys go to
        ``load_rows`` (so a corrected version of the file can replace them), the rows to the table."""
        con = self.con
        # every row is either valid or rejected (the checks are never NULL)
        n_valid = n_source - self._add_rejects(rejects_sql, load.cohort, stats, quarantined)
        key = " AND ".join(f'v."{k}" = t."{k}"' for k in load_schema(name).primary_key)
        con.execute(f'CREATE OR REPLACE TEMP TABLE __new AS {new_rows} WHERE NOT EXISTS (SELECT 1 FROM "{name}" t WHERE {key})').fetchall()
        self._release_incoming()
        con.execute(f"INSERT INTO load_rows SELECT ?, ?, ?, {self._key_expr(name, 'v')} FROM __new v",
                    [load.load_id, load.cohort, name]).fetchall()
        stats.n_loaded = int(con.execute(f'INSERT INTO "{name}" SELECT * FROM __new').fetchall()[0][0])
        stats.n_already_present = n_valid - stats.n_loaded
        self._drop_temporaries("__new")

    def _recorded_whole(self, cohort: str, name: str) -> bool:
        """Whether a load recorded the cohort's ``name`` rows as a whole (at most one may: see
        :meth:`_remove_loads`); its rows may all be gone since (``research forget --learner``)."""
        return bool(self.con.execute("SELECT EXISTS (SELECT 1 FROM load_rows WHERE cohort = ? AND table_name = ? AND row_key IS NULL)",
                                     [cohort, name]).fetchall()[0][0])

    def _kcs_owned_by_attempts(self, load: _Load) -> None:
        """Record the KC rows a first load inserted by their KC models, not row by row.

        Called when the cohort had no KC rows and every attempt of the file was inserted by
        this load: the KC rows it inserted are then exactly those of its KC models on its
        attempts (which ``load_rows`` records by key or as the whole table), and
        :meth:`_remove_loads` deletes them by that rule. One row per KC model instead of one per KC row (2 million for a
        1-million-row DataShop export).
        """
        self.con.execute(
            f"""INSERT INTO load_rows SELECT DISTINCT ?, cohort, '{KCS_BY_ATTEMPT}', kc_model FROM attempt_kcs
               WHERE cohort = ?""", [load.load_id, load.cohort]).fetchall()

    def _add_rejects(self, rejects_sql: str, cohort: str, stats: TableLoad, quarantined: list) -> int:
        """Run the query of the rows that failed the schema's checks; add them to ``quarantined``."""
        rejects = self.con.execute(rejects_sql).df()
        stats.n_rejected += len(rejects)
        if len(rejects):
            quarantined.append(rejects.assign(cohort=cohort))
        return len(rejects)

    def _drop_temporaries(self, *names: str) -> None:
        """Drop the temporary views and tables of these names that exist."""
        found = self.con.execute(
            """SELECT 'VIEW', view_name FROM duckdb_views() WHERE temporary AND list_contains(?, view_name)
               UNION ALL SELECT 'TABLE', table_name FROM duckdb_tables() WHERE temporary AND list_contains(?, table_name)""",
            [list(names), list(names)],
        ).fetchall()
        for kind, name in found:
            self.con.execute(f"DROP {kind} IF EXISTS {name}").fetchall()

    def _record_load(self, result: IngestResult, load: _Load, name: str, stats: TableLoad) -> None:
        self.con.execute(
            """INSERT INTO loads (load_id, cohort, source_file, file_sha256, format, table_name, n_read, n_loaded,
               n_rejected, n_skipped, n_already_present, loaded_at, source_path)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [load.load_id, load.cohort, result.name, load.file_sha256, result.format, name, stats.n_read,
             stats.n_loaded, stats.n_rejected, stats.n_skipped, stats.n_already_present, load.now, load.source_path],
        ).fetchall()

    def _load_extras(self, result: IngestResult, load: _Load, summary: FileLoad) -> None:
        """What some adapters carry besides canonical tables: xAPI voids, DataShop custom fields, learner attributes."""
        con, cohort = self.con, load.cohort
        summary.notes = list(getattr(result, "notes", None) or [])
        if result.format == "xapi":
            from research.ingest import voiding

            v = voiding.apply(con, result, cohort=cohort)
            if v["removed"] or v["pending"] or (result.voids is not None and len(result.voids)):
                summary.notes.append(f"  voiding: {v['removed']:,} rows removed now (kept in table voided), "
                                     f"{v['pending']:,} voids waiting for a statement not loaded yet")
        if getattr(result, "custom_fields", None) is not None:
            from research.ingest import datashop_xml

            datashop_xml.store_custom_fields(con, result, cohort=cohort)
        if "learner_attributes" in result.tables:
            summary.tables["learner_attributes"] = self._load_attributes(result, cohort, load.load_id, load.now,
                                                                         load.file_sha256, load.source_path)

    def _insert_quarantine(self, q: pd.DataFrame) -> pd.DataFrame:
        """Insert the rows not loaded into ``quarantine``; returns the 20 commonest reasons with counts."""
        q = q[["load_id", "cohort", "table_name", "source_file", "source_line", "column", "reason", "kind", "raw"]]
        self.con.register("__quarantine", pa.Table.from_pandas(q, preserve_index=False))  # Arrow: no per-value copy
        try:
            self.con.execute("INSERT INTO quarantine SELECT * FROM __quarantine").fetchall()
        finally:
            self.con.unregister("__quarantine")
        return (
            q.assign(column=q["column"].fillna(""))
            .groupby(["kind", "table_name", "column", "reason"], dropna=False)
            .size()
            .rename("n")
            .reset_index()
            .sort_values("n", ascending=False, ignore_index=True)
            .head(20)
        )

    def _remove_kcs_of_replaced_attempts(self, cohort: str, source_file: str) -> None:
        """KC rows no load recorded (a KC model imported from a KC-model file) of attempts the corrected file lacks."""
        n = self.con.execute(
            """DELETE FROM attempt_kcs k WHERE k.cohort = ? AND NOT EXISTS
               (SELECT 1 FROM attempts a WHERE a.cohort = k.cohort AND a.attempt_id = k.attempt_id)""", [cohort]
        ).fetchall()[0][0]
        if n:
            self._record_removal("correction", cohort, source_file, {"attempt_kcs": int(n)},
                                 "KC rows of an imported KC model whose attempts the corrected file no longer has")

    def _load_attributes(self, result: IngestResult, cohort: str, load_id: str, now, file_sha256, source_path) -> TableLoad:
        """Extra learner attributes (long: learner_id, attribute, value) of learners that are in the warehouse."""
        con = self.con
        frame = result.tables["learner_attributes"][["learner_id", "attribute", "value"]]
        con.register("__attrs", pa.Table.from_pandas(frame, preserve_index=False))
        try:
            new_rows = """SELECT ? AS cohort, a.learner_id, a.attribute, a.value FROM __attrs a
                WHERE EXISTS (SELECT 1 FROM learners l WHERE l.cohort = ? AND l.learner_id = a.learner_id)
                AND NOT EXISTS (SELECT 1 FROM learner_attributes t WHERE t.cohort = ? AND t.learner_id = a.learner_id AND t.attribute = a.attribute)"""
            con.execute(f"INSERT INTO load_rows SELECT ?, ?, 'learner_attributes', {self._key_expr('learner_attributes', 'v')} FROM ({new_rows}) v",
                        [load_id, cohort, cohort, cohort, cohort]).fetchall()
            inserted = int(con.execute(f"INSERT INTO learner_attributes {new_rows}", [cohort, cohort, cohort]).fetchall()[0][0])
        finally:
            con.unregister("__attrs")
        stats = TableLoad("learner_attributes", n_read=len(frame), n_loaded=inserted, n_already_present=len(frame) - inserted)
        con.execute(
            """INSERT INTO loads (load_id, cohort, source_file, file_sha256, format, table_name, n_read, n_loaded,
               n_rejected, n_skipped, n_already_present, loaded_at, source_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [load_id, cohort, result.name, file_sha256 or "", result.format, "learner_attributes", stats.n_read, stats.n_loaded,
             0, 0, stats.n_already_present, now, source_path],
        ).fetchall()
        return stats

    def learner_attributes(self, cohort: str) -> pd.DataFrame:
        """Extra learner attributes of ``cohort``, wide: learner_id plus one text column per attribute."""
        long = self.con.execute("SELECT learner_id, attribute, value FROM learner_attributes WHERE cohort = ?", [cohort]).df() \
            if self._has_table("learner_attributes") else pd.DataFrame(columns=["learner_id", "attribute", "value"])
        if long.empty:
            return pd.DataFrame({"learner_id": pd.Series(dtype="string")})
        wide = long.pivot(index="learner_id", columns="attribute", values="value").reset_index()
        wide.columns.name = None
        return wide.astype("string")

    def _orphan_kcs(self, cohort: str, columns: list[str], source_file: str) -> pd.DataFrame:
        """Quarantine records for KC rows of ``__incoming`` whose attempt is not in the warehouse.

        Runs after the file's attempts were inserted, so "not in the warehouse" means the
        attempt was rejected. Leaves the view ``__kcs_with_attempt`` of the other rows.
        """
        con = self.con
        exists = "EXISTS (SELECT 1 FROM attempts a WHERE a.cohort = i.cohort AND a.attempt_id = i.attempt_id)"
        con.execute(f"CREATE OR REPLACE TEMP VIEW __kcs_with_attempt AS SELECT * FROM __incoming i WHERE {exists}").fetchall()
        line = "CAST(source_line AS BIGINT)" if "source_line" in columns else "NULL"
        file_expr = "CAST(source_file AS VARCHAR)" if "source_file" in columns else "'" + source_file.replace("'", "''") + "'"
        return con.execute(
            f"""SELECT 'attempt_kcs' AS table_name, {file_expr} AS source_file, {line} AS source_line,
                       'attempt_id' AS "column",
                       'its attempt was not loaded (see the attempts rejects of the same line)' AS reason,
                       'rejected' AS kind, CAST(json_object('attempt_id', attempt_id) AS VARCHAR) AS raw, cohort
                FROM __incoming i WHERE NOT {exists}"""
        ).df()

    # -- reading ---------------------------------------------------------------------
    def table(self, name: str, cohort: str | None = None) -> pd.DataFrame:
        """A canonical table (or ``loads``/``quarantine``) as a DataFrame, optionally for one cohort."""
        valid = list(canonical_tables()) + ["loads", "quarantine", "learner_attributes", "removals", "load_rows", "cohort_keys"]
        if name not in valid:
            raise ResearchError(f"unknown table {name!r}; valid tables: {', '.join(valid)}")
        where, args = ("WHERE cohort = ?", [cohort]) if cohort is not None else ("", [])
        if name in canonical_tables():
            frame = _arrow_frame(self.con, f'SELECT * FROM "{name}" {where.replace("?", "$1")}', args)
            if frame is not None:
                return as_schema_dtypes(frame, name)
        frame = self.con.execute(f'SELECT * FROM "{name}" {where}', args).df()
        return as_schema_dtypes(frame, name) if name in canonical_tables() else frame

    def cohorts(self) -> pd.DataFrame:
        """One row per cohort: learners, attempts, items, first and last attempt, files, rows in quarantine.

        ``n_learners`` counts distinct learners over every table that has learners
        (attempts, assessments, surveys, learners), so a cohort of tests or surveys only
        has learners too; ``n_assessments`` and ``n_survey_responses`` count those rows.
        """
        people = " UNION ".join(f'SELECT cohort, learner_id FROM "{t}"' for t in ("attempts", "assessments", "surveys", "learners"))
        return self.con.execute(
            f"""
            WITH c AS (SELECT DISTINCT cohort FROM loads),
            p AS (SELECT cohort, count(DISTINCT learner_id) AS n_learners FROM ({people}) GROUP BY cohort),
            s AS (SELECT cohort, count(*) AS n_assessments FROM assessments GROUP BY cohort),
            v AS (SELECT cohort, count(*) AS n_survey_responses FROM surveys GROUP BY cohort),
            a AS (SELECT cohort, count(DISTINCT learner_id) AS n_learners, count(*) AS n_attempts,
                         count(DISTINCT item_id) AS n_items, min("timestamp") AS first_attempt,
                         max("timestamp") AS last_attempt FROM attempts GROUP BY cohort),
            l AS (SELECT cohort, count(DISTINCT file_sha256) AS n_files, max(loaded_at) AS last_load FROM loads GROUP BY cohort),
            q AS (SELECT cohort, count(*) FILTER (WHERE kind = 'rejected') AS n_rejected,
                         count(*) FILTER (WHERE kind = 'skipped') AS n_skipped FROM quarantine GROUP BY cohort)
            SELECT c.cohort, coalesce(p.n_learners, 0) AS n_learners, coalesce(a.n_attempts, 0) AS n_attempts,
                   coalesce(a.n_items, 0) AS n_items, coalesce(s.n_assessments, 0) AS n_assessments,
                   coalesce(v.n_survey_responses, 0) AS n_survey_responses, a.first_attempt, a.last_attempt,
                   l.n_files, l.last_load, coalesce(q.n_rejected, 0) AS n_rejected, coalesce(q.n_skipped, 0) AS n_skipped
            FROM c LEFT JOIN p USING (cohort) LEFT JOIN a USING (cohort) LEFT JOIN s USING (cohort)
                 LEFT JOIN v USING (cohort) LEFT JOIN l USING (cohort) LEFT JOIN q USING (cohort)
            ORDER BY c.cohort
            """
        ).df()

    def has_cohort(self, cohort: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM loads WHERE cohort = ?", [cohort]).fetchall()[0][0])

    def counts(self, cohort: str) -> dict[str, int]:
        """Row counts of every canonical table for one cohort (for run manifests)."""
        return {
            name: int(self.con.execute(f'SELECT count(*) FROM "{name}" WHERE cohort = ?', [cohort]).fetchall()[0][0])
            for name in canonical_tables()
        }

    def quarantine_summary(self, cohort: str) -> pd.DataFrame:
        """Rows not loaded for a cohort, counted by file, table, column, reason and kind."""
        return self.con.execute(
            """SELECT source_file, table_name, "column", kind, reason, count(*) AS n
               FROM quarantine WHERE cohort = ? GROUP BY ALL ORDER BY n DESC""",
            [cohort],
        ).df()

