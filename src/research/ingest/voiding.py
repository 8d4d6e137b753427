"""xAPI voiding in the warehouse: a ``voided`` statement removes the statement it points to.

Two warehouse tables (created on first use, additive to the canonical ones):

``xapi_voids``
    every voiding seen per cohort: ``statement_id`` (the target), ``voided_by`` (the
    voiding statement's id), ``source_file``, ``source_line``, ``seen_at``. A void whose
    target is not loaded yet stays here and is applied when the target arrives (a later
    file or pull), so the order of files does not matter.
``voided``
    the audit table: each removed row with ``cohort``, ``statement_id``, ``voided_by``,
    ``table_name``, ``row_id`` (the removed row's attempt id), ``source_file``, ``source_line``, ``row`` (the removed row as JSON:
    pseudonymised learner id, never a raw id) and ``voided_at``.

:func:`apply` runs inside the load's transaction after the file's rows are inserted; it
is idempotent: a re-ingest or a re-pull of a voided statement adds it back only for the
same transaction to remove it again, and the audit table keeps one row per removed row.
A Torus answer's hint rows (``<id>#hint<n>``) go with their answer.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["AUDIT_SQL", "VOIDS_SQL", "apply"]

VOIDS_SQL = """CREATE TABLE IF NOT EXISTS xapi_voids (
    cohort VARCHAR, statement_id VARCHAR, voided_by VARCHAR, source_file VARCHAR, source_line BIGINT, seen_at TIMESTAMP)"""
AUDIT_SQL = """CREATE TABLE IF NOT EXISTS voided (
    cohort VARCHAR, statement_id VARCHAR, voided_by VARCHAR, table_name VARCHAR, row_id VARCHAR, source_file VARCHAR,
    source_line BIGINT, "row" VARCHAR, voided_at TIMESTAMP)"""


def apply(con, result, *, cohort: str) -> dict:
    """Record the voids of ``result`` and apply every pending void of the cohort.

    Returns ``{"removed": n, "pending": m}``: rows removed now, voids whose target is
    still unknown.
    """
    voids = getattr(result, "voids", None)
    here = getattr(result, "voided_rows", None)
    if voids is None and here is None and not _exists(con, "xapi_voids"):
        return {"removed": 0, "pending": 0}
    con.execute(VOIDS_SQL).fetchall()
    con.execute(AUDIT_SQL).fetchall()
    name = result.name
    if voids is not None and len(voids):
        frame = voids.assign(cohort=cohort, source_file=name)[["cohort", "statement_id", "voided_by", "source_file", "source_line"]]
        con.register("__voids", frame.astype({"source_line": "int64"}))
        con.execute("""INSERT INTO xapi_voids SELECT v.cohort, v.statement_id, v.voided_by, v.source_file, v.source_line, now()
                       FROM __voids v WHERE NOT EXISTS (SELECT 1 FROM xapi_voids x WHERE x.cohort = v.cohort
                       AND x.statement_id = v.statement_id AND x.voided_by = v.voided_by)""").fetchall()
        con.unregister("__voids")
    if here is not None and len(here):
        frame = here.assign(cohort=cohort, source_file=name, row_id=here["statement_id"])[["cohort", "statement_id", "voided_by", "table_name", "row_id", "source_file", "source_line", "row"]]
        con.register("__here", frame.astype({"source_line": "int64"}))
        con.execute("""INSERT INTO voided SELECT h.*, now() FROM __here h WHERE NOT EXISTS (SELECT 1 FROM voided v
                       WHERE v.cohort = h.cohort AND v.row_id = h.row_id AND v.table_name = h.table_name)""").fetchall()
        con.unregister("__here")
    if not con.execute("SELECT count(*) FROM xapi_voids WHERE cohort = ?", [cohort]).fetchall()[0][0]:
        return {"removed": 0, "pending": 0}
    # every void of the cohort against the attempts now in the warehouse (an equality join:
    # a hint row <id>#hint<n> goes with its answer <id>)
    con.execute("""CREATE OR REPLACE TEMP TABLE __hit AS
        SELECT a.cohort, a.attempt_id, FIRST(v.statement_id) AS statement_id, FIRST(v.voided_by) AS voided_by
        FROM attempts a JOIN xapi_voids v ON a.cohort = v.cohort AND split_part(a.attempt_id, '#hint', 1) = v.statement_id
        WHERE a.cohort = ? GROUP BY a.cohort, a.attempt_id""", [cohort]).fetchall()
    removed = int(con.execute("SELECT count(*) FROM __hit").fetchall()[0][0])
    if removed:
        con.execute("""INSERT INTO voided
            SELECT a.cohort, h.statement_id, h.voided_by, 'attempts', a.attempt_id, a.source_file, a.source_line,
                   CAST(to_json(struct_pack(attempt_id := a.attempt_id, learner_id := a.learner_id, item_id := a.item_id,
                        step_id := a.step_id, outcome := a.outcome, "timestamp" := a."timestamp")) AS VARCHAR), now()
            FROM attempts a JOIN __hit h USING (cohort, attempt_id)
            WHERE NOT EXISTS (SELECT 1 FROM voided x WHERE x.cohort = a.cohort AND x.table_name = 'attempts'
                              AND x.row_id = a.attempt_id)""").fetchall()
        con.execute("DELETE FROM attempt_kcs WHERE (cohort, attempt_id) IN (SELECT cohort, attempt_id FROM __hit)").fetchall()
        con.execute("DELETE FROM attempts WHERE (cohort, attempt_id) IN (SELECT cohort, attempt_id FROM __hit)").fetchall()
    con.execute("DROP TABLE IF EXISTS __hit").fetchall()
    pending = int(con.execute(
        """SELECT count(*) FROM xapi_voids v WHERE v.cohort = ? AND NOT EXISTS
           (SELECT 1 FROM voided a WHERE a.cohort = v.cohort AND a.statement_id = v.statement_id)""", [cohort]).fetchall()[0][0])
    return {"removed": removed, "pending": pending}


def _exists(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0])


def audit(con, cohort: str | None = None) -> pd.DataFrame:
    """The audit table of voided rows (empty frame when nothing was ever voided)."""
    if not _exists(con, "voided"):
        return pd.DataFrame(columns=["cohort", "statement_id", "voided_by", "table_name", "source_file", "source_line", "row", "voided_at"])
    if cohort is None:
        return con.execute("SELECT * FROM voided ORDER BY cohort, statement_id").df()
    return con.execute("SELECT * FROM voided WHERE cohort = ? ORDER BY statement_id", [cohort]).df()
