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
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from research.errors import DataError, ResearchError
from research.ingest.base import IngestResult
from research.paths import default_warehouse, resolve
from research.schema import as_schema_dtypes, canonical_tables, check_relation, load_schema

LOADS_SQL = """CREATE TABLE IF NOT EXISTS loads (
    load_id VARCHAR, cohort VARCHAR, source_file VARCHAR, file_sha256 VARCHAR, format VARCHAR,
    table_name VARCHAR, n_read BIGINT, n_loaded BIGINT, n_rejected BIGINT, n_skipped BIGINT,
    n_already_present BIGINT, loaded_at TIMESTAMP)"""
QUARANTINE_SQL = """CREATE TABLE IF NOT EXISTS quarantine (
    load_id VARCHAR, cohort VARCHAR, table_name VARCHAR, source_file VARCHAR, source_line BIGINT,
    "column" VARCHAR, reason VARCHAR, kind VARCHAR, raw VARCHAR)"""


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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

    @property
    def n_rejected(self) -> int:
        return sum(t.n_rejected for t in self.tables.values())

    def lines(self) -> list[str]:
        if self.status != "loaded":
            return [f"{self.source_file}: {self.status} into cohort {self.cohort!r} before; nothing added"]
        out = [f"{self.source_file} ({self.format}) -> cohort {self.cohort!r}"]
        for t in self.tables.values():
            out.append(
                f"  {t.table_name}: read {t.n_read:,}, loaded {t.n_loaded:,}, rejected {t.n_rejected:,}, "
                f"skipped {t.n_skipped:,}, already present {t.n_already_present:,}"
            )
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
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise ResearchError(
                f"cannot open warehouse {self.path}: {exc}. Another process may be writing to it; "
                "wait for it to finish and try again."
            ) from None
        if not read_only:
            self._create_tables()

    def _create_tables(self) -> None:
        for name in canonical_tables():
            schema = load_schema(name)
            self.con.execute(schema.create_sql()).fetchall()
            # a warehouse made by an earlier version gains the optional columns added since
            for f in schema.fields:
                self.con.execute(f'ALTER TABLE "{name}" ADD COLUMN IF NOT EXISTS "{f.name}" {f.sql_type}').fetchall()
        self.con.execute(LOADS_SQL).fetchall()
        self.con.execute(QUARANTINE_SQL).fetchall()

    # -- context manager -------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        pseudonymiser = pseudonymiser or Pseudonymiser()
        summary = LoadSummary()
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            digest = file_sha256(path)
            done = self.con.execute(
                "SELECT count(*) FROM loads WHERE cohort = ? AND file_sha256 = ?", [cohort, digest]
            ).fetchall()[0][0]
            if done:
                summary.files.append(FileLoad(path.name, format or "", cohort, "already loaded"))
                continue
            result = read_file(path, cohort=cohort, pseudonymiser=pseudonymiser, format=format, options=options)
            summary.files.append(self.load(result, cohort=cohort, file_sha256=digest))
        return summary

    def load(self, result: IngestResult, *, cohort: str, file_sha256: str | None = None) -> FileLoad:
        """Validate the tables of one adapter result against their schemas and insert them.

        Runs in one transaction: either the whole file is loaded (with its rejects in
        quarantine) or nothing is.
        """
        if self.read_only:
            raise ResearchError(f"warehouse {self.path} is open read-only; open it without read_only to load data")
        load_id = uuid.uuid4().hex
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        summary = FileLoad(result.name, result.format, cohort, "loaded")
        quarantined = [result.rejects.assign(cohort=cohort)] if len(result.rejects) else []
        con = self.con
        con.execute("BEGIN TRANSACTION").fetchall()
        try:
            for name in [t for t in canonical_tables() if t in result.tables]:
                frame = result.tables[name]
                schema = load_schema(name)
                adapter_rejects = result.rejects[result.rejects["table_name"] == name] if len(result.rejects) else result.rejects
                stats = TableLoad(
                    name,
                    n_read=len(frame) + len(adapter_rejects),
                    n_rejected=int((adapter_rejects["kind"] == "rejected").sum()) if len(adapter_rejects) else 0,
                    n_skipped=int((adapter_rejects["kind"] == "skipped").sum()) if len(adapter_rejects) else 0,
                )
                # Arrow tables scan without a per-value copy; the cohort column is set here
                con.register("__frame", pa.Table.from_pandas(frame.drop(columns=["cohort"], errors="ignore"), preserve_index=False))
                columns = ["cohort", *[c for c in frame.columns if c != "cohort"]]
                cohort_sql = "'" + cohort.replace("'", "''") + "'"
                con.execute(f"CREATE OR REPLACE TEMP VIEW __incoming AS SELECT CAST({cohort_sql} AS VARCHAR) AS cohort, * FROM __frame").fetchall()
                source = "__incoming"
                if name == "attempt_kcs" and "attempts" in result.tables:
                    orphans = self._orphan_kcs(cohort, columns, result.name)
                    if len(orphans):
                        quarantined.append(orphans)
                        stats.n_rejected += len(orphans)
                        source = "__kcs_with_attempt"
                valid_sql, rejects_sql = check_relation(con, source, columns, schema, source_file=result.name, ordered=False)
                rejects = con.execute(rejects_sql).df()
                stats.n_rejected += len(rejects)
                if len(rejects):
                    quarantined.append(rejects.assign(cohort=cohort))
                key = " AND ".join(f'v."{k}" = t."{k}"' for k in schema.primary_key)
                cols = ", ".join(f'v."{c}"' for c in schema.field_names)
                n_valid = int(con.execute(f"SELECT count(*) FROM ({valid_sql})").fetchall()[0][0])
                inserted = con.execute(
                    f'INSERT INTO "{name}" SELECT {cols} FROM ({valid_sql}) v WHERE NOT EXISTS (SELECT 1 FROM "{name}" t WHERE {key})'
                ).fetchall()[0][0]
                stats.n_loaded = int(inserted)
                stats.n_already_present = n_valid - stats.n_loaded
                for obj in ("VIEW __kcs_with_attempt", "VIEW __incoming", "TABLE __checked", "TABLE __dups"):
                    con.execute(f"DROP {obj.split()[0]} IF EXISTS {obj.split()[1]}").fetchall()
                con.unregister("__frame")
                summary.tables[name] = stats
                con.execute(
                    "INSERT INTO loads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [load_id, cohort, result.name, file_sha256 or "", result.format, name, stats.n_read,
                     stats.n_loaded, stats.n_rejected, stats.n_skipped, stats.n_already_present, now],
                ).fetchall()
            if quarantined:
                q = pd.concat(quarantined, ignore_index=True).assign(load_id=load_id)
                q = q[["load_id", "cohort", "table_name", "source_file", "source_line", "column", "reason", "kind", "raw"]]
                con.register("__quarantine", q)
                con.execute("INSERT INTO quarantine SELECT * FROM __quarantine").fetchall()
                con.unregister("__quarantine")
                summary.reasons = (
                    q.assign(column=q["column"].fillna(""))
                    .groupby(["kind", "table_name", "column", "reason"], dropna=False)
                    .size()
                    .rename("n")
                    .reset_index()
                    .sort_values("n", ascending=False, ignore_index=True)
                    .head(20)
                )
            con.execute("COMMIT").fetchall()
        except BaseException:
            con.execute("ROLLBACK").fetchall()
            raise
        return summary

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
        cols = ", ".join(f'"{c}"' for c in columns)
        return con.execute(
            f"""SELECT 'attempt_kcs' AS table_name, {file_expr} AS source_file, {line} AS source_line,
                       'attempt_id' AS "column",
                       'its attempt was not loaded (see the attempts rejects of the same line)' AS reason,
                       'rejected' AS kind, CAST(to_json(struct_pack({cols})) AS VARCHAR) AS raw, cohort
                FROM __incoming i WHERE NOT {exists}"""
        ).df()

    # -- reading ---------------------------------------------------------------------
    def table(self, name: str, cohort: str | None = None) -> pd.DataFrame:
        """A canonical table (or ``loads``/``quarantine``) as a DataFrame, optionally for one cohort."""
        valid = list(canonical_tables()) + ["loads", "quarantine"]
        if name not in valid:
            raise ResearchError(f"unknown table {name!r}; valid tables: {', '.join(valid)}")
        where, args = ("WHERE cohort = ?", [cohort]) if cohort is not None else ("", [])
        frame = self.con.execute(f'SELECT * FROM "{name}" {where}', args).df()
        return as_schema_dtypes(frame, name) if name in canonical_tables() else frame

    def cohorts(self) -> pd.DataFrame:
        """One row per cohort: learners, attempts, items, first and last attempt, files, rows in quarantine."""
        return self.con.execute(
            """
            WITH c AS (SELECT DISTINCT cohort FROM loads),
            a AS (SELECT cohort, count(DISTINCT learner_id) AS n_learners, count(*) AS n_attempts,
                         count(DISTINCT item_id) AS n_items, min("timestamp") AS first_attempt,
                         max("timestamp") AS last_attempt FROM attempts GROUP BY cohort),
            l AS (SELECT cohort, count(DISTINCT file_sha256) AS n_files, max(loaded_at) AS last_load FROM loads GROUP BY cohort),
            q AS (SELECT cohort, count(*) FILTER (WHERE kind = 'rejected') AS n_rejected,
                         count(*) FILTER (WHERE kind = 'skipped') AS n_skipped FROM quarantine GROUP BY cohort)
            SELECT c.cohort, coalesce(a.n_learners, 0) AS n_learners, coalesce(a.n_attempts, 0) AS n_attempts,
                   coalesce(a.n_items, 0) AS n_items, a.first_attempt, a.last_attempt,
                   l.n_files, l.last_load, coalesce(q.n_rejected, 0) AS n_rejected, coalesce(q.n_skipped, 0) AS n_skipped
            FROM c LEFT JOIN a USING (cohort) LEFT JOIN l USING (cohort) LEFT JOIN q USING (cohort)
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

