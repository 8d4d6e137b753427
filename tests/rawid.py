"""Raw-id scan: a reusable test helper that proves no raw learner id got out.

Use it in the test of every ingest format::

    from tests.rawid import assert_no_raw_ids
    assert_no_raw_ids(raw_ids, warehouse=path_to_duckdb, texts=[out, err], paths=[reports_dir, log_file])

It looks in three places, because each can miss what another finds:

- the warehouse through SQL: every text column of every table (DuckDB compresses strings
  on disk, so a byte scan alone could miss a stored id);
- the bytes of the warehouse file and of every file under ``paths`` (reports, logs, CSV,
  HTML, JSON), so nothing written outside the tables escapes either;
- ``texts``: captured stdout, stderr and messages.

Ids shorter than 4 characters are refused as scan targets (they would match anywhere).
"""

from __future__ import annotations

import os
from pathlib import Path


def _targets(raw_ids) -> list[str]:
    ids = sorted({str(r) for r in raw_ids if r is not None and str(r) != ""})
    short = [r for r in ids if len(r) < 4]
    if short:
        raise ValueError(f"raw ids too short to scan for reliably: {short[:5]}")
    return ids


def raw_id_hits(raw_ids, *, warehouse: str | os.PathLike | None = None, texts=(), paths=()) -> list[str]:
    """Where raw ids were found: a list of ``"place: id"`` strings (empty when clean)."""
    ids = _targets(raw_ids)
    hits: list[str] = []
    if not ids:
        return hits
    encoded = [(r, r.encode("utf-8")) for r in ids]
    files: list[Path] = []
    if warehouse is not None and Path(warehouse).exists():
        import duckdb

        files.append(Path(warehouse))
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            cols = con.execute(
                "SELECT table_name, column_name FROM duckdb_columns() WHERE data_type = 'VARCHAR' AND NOT internal"
            ).fetchall()
            con.register("__ids", __import__("pandas").DataFrame({"id": ids}))
            for table, column in cols:
                found = con.execute(
                    f'SELECT DISTINCT i.id FROM "{table}" t JOIN __ids i ON contains(t."{column}", i.id)'
                ).fetchall()
                hits += [f"warehouse {table}.{column}: {f[0]}" for f in found]
        finally:
            con.close()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += [f for f in sorted(p.rglob("*")) if f.is_file()]
        elif p.is_file():
            files.append(p)
    for f in files:
        data = f.read_bytes()
        hits += [f"file {f}: {r}" for r, b in encoded if b in data]
    for i, text in enumerate(texts):
        if text is None:
            continue
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        hits += [f"text #{i}: {r}" for r in ids if r in text]
    return hits


def assert_no_raw_ids(raw_ids, **where) -> None:
    """Fail, naming each place, when any raw id appears in the warehouse, files or texts."""
    hits = raw_id_hits(raw_ids, **where)
    assert not hits, "raw learner ids found:\n  " + "\n  ".join(hits[:20])
