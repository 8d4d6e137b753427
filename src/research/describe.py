"""Descriptive counts of a cohort's canonical tables (what notebook 01 reports)."""

from __future__ import annotations

import duckdb
import pandas as pd

from research.cohort import CohortData

__all__ = ["attempts_per_day", "ingest_summary", "quarantine_summary"]


def ingest_summary(data: CohortData) -> pd.DataFrame:
    """Counts per cohort, module, page, item and KC model, one tidy row each.

    Returns
    -------
    DataFrame
        ``level`` (cohort, module, page, item, kc_model), ``key`` (the module, page, item
        or KC model; the cohort id for the cohort row), ``n_learners``, ``n_attempts``,
        ``n_steps`` (distinct steps), ``n_first_attempts`` (learner x step first
        attempts), ``first_attempt_correct`` (share of first attempts that were correct),
        ``n_kcs`` (distinct KCs, KC-model rows only).
    """
    con = duckdb.connect()
    try:
        con.register("attempts", data.attempts)
        con.register("attempt_kcs", data.attempt_kcs)
        base = """count(DISTINCT learner_id) AS n_learners, count(*) AS n_attempts,
                  count(DISTINCT item_id || '\x1f' || step_id) AS n_steps,
                  count(*) FILTER (WHERE attempt = 1) AS n_first_attempts,
                  avg(CASE WHEN outcome = 'correct' THEN 1.0 ELSE 0.0 END) FILTER (WHERE attempt = 1) AS first_attempt_correct,
                  CAST(NULL AS BIGINT) AS n_kcs"""
        parts = [
            f"SELECT 'cohort' AS level, CAST($cohort AS VARCHAR) AS key, {base} FROM attempts",  # a name is a bound value, never SQL
            f"SELECT 'module' AS level, coalesce(module, '(none)') AS key, {base} FROM attempts GROUP BY 2",
            f"SELECT 'page' AS level, coalesce(page, '(none)') AS key, {base} FROM attempts GROUP BY 2",
            f"SELECT 'item' AS level, item_id AS key, {base} FROM attempts GROUP BY 2",
            f"""SELECT 'kc_model' AS level, m.kc_model AS key, {base.replace("CAST(NULL AS BIGINT) AS n_kcs", "any_value(m.n_kcs) AS n_kcs")}
               FROM (SELECT DISTINCT kc_model, attempt_id FROM attempt_kcs) k
               JOIN attempts a USING (attempt_id)
               JOIN (SELECT kc_model, count(DISTINCT kc) AS n_kcs FROM attempt_kcs GROUP BY 1) m USING (kc_model)
               GROUP BY 2""",
        ]
        order = "CASE level WHEN 'cohort' THEN 0 WHEN 'module' THEN 1 WHEN 'page' THEN 2 WHEN 'item' THEN 3 ELSE 4 END, key"
        out = con.execute(" UNION ALL ".join(f"({p})" for p in parts) + f" ORDER BY {order}", {"cohort": data.cohort}).df()
    finally:
        con.close()
    return out.astype({"level": "string", "key": "string", "n_kcs": "Int64"})


def quarantine_summary(data: CohortData) -> pd.DataFrame:
    """Rows that were not loaded, counted by file, table, column, kind and reason.

    Returns
    -------
    DataFrame
        ``source_file``, ``table_name``, ``column``, ``kind`` (rejected or skipped),
        ``reason``, ``n``, ``first_line`` (the first source line with this reason).
    """
    q = data.quarantine
    cols = ["source_file", "table_name", "column", "kind", "reason", "n", "first_line"]
    if q is None or q.empty:
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c in {"n", "first_line"} else "string") for c in cols})
    out = (
        q.assign(column=q["column"].fillna(""))
        .groupby(["source_file", "table_name", "column", "kind", "reason"], dropna=False)
        .agg(n=("reason", "size"), first_line=("source_line", "min"))
        .reset_index()
        .sort_values("n", ascending=False, ignore_index=True)
    )
    return out[cols]


def attempts_per_day(data: CohortData) -> pd.DataFrame:
    """Attempts and active learners per calendar day (``day``, ``n_attempts``, ``n_learners``)."""
    a = data.attempts
    day = a["timestamp"].dt.floor("D")
    return (
        a.assign(day=day).groupby("day").agg(n_attempts=("attempt_id", "size"), n_learners=("learner_id", "nunique")).reset_index()
    )
