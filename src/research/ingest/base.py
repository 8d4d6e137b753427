"""What every ingest adapter returns, and the shape of a rejected row.

An adapter module (``datashop_tx``, ``datashop_step``, ``xapi``, ``tabular``) exposes

``NAME``
    the format name used with ``--format``;
``sniff(path, head) -> bool``
    True when the file is unambiguously in this format (``head`` is the first
    64 KiB of the file decoded as UTF-8 with errors replaced);
``read(path, *, cohort, pseudonymiser, options) -> IngestResult``
    parse the whole file into canonical tables.

Adapters pseudonymise learner ids before anything else touches them, so neither the
canonical tables nor the ``raw`` column of a rejected row ever hold a raw id. Rows an
adapter cannot map (an unknown outcome, a bad timestamp) become rejects with the file,
line, column and reason; rows that are not attempts at all (a page view with a blank
outcome) become rejects of kind ``skipped``. Nothing is dropped without a row here.
Schema validation of the mapped tables happens later, in :mod:`research.warehouse`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["IngestResult", "empty_rejects", "make_rejects"]

REJECT_COLUMNS = ["table_name", "source_file", "source_line", "column", "reason", "kind", "raw"]


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "table_name": pd.Series(dtype="string"),
            "source_file": pd.Series(dtype="string"),
            "source_line": pd.Series(dtype="Int64"),
            "column": pd.Series(dtype="string"),
            "reason": pd.Series(dtype="string"),
            "kind": pd.Series(dtype="string"),
            "raw": pd.Series(dtype="string"),
        }
    )


def make_rejects(
    rows: pd.DataFrame,
    *,
    table_name: str,
    source_file: str,
    line: pd.Series | str,
    column: str | pd.Series | None,
    reason: str | pd.Series,
    kind: str = "rejected",
    raw: list | None = None,
) -> pd.DataFrame:
    """Build reject records for ``rows`` (vectorised).

    ``rows`` are the offending source rows (learner ids already pseudonymised); they are
    kept whole, as JSON, in the ``raw`` column, unless ``raw`` gives that column's text
    (one entry per row). ``line`` is the name of the column of ``rows`` that holds the
    source line number, or a Series of line numbers.
    """
    if len(rows) == 0:
        return empty_rejects()
    lines = rows[line] if isinstance(line, str) else line
    if raw is None:
        raw = [json.dumps(r, ensure_ascii=False, default=str) for r in rows.astype(object).where(rows.notna(), None).to_dict("records")]
    out = pd.DataFrame(
        {
            "table_name": table_name,
            "source_file": source_file,
            "source_line": pd.array(lines, dtype="Int64"),
            "column": column if column is not None else pd.NA,
            "reason": reason,
            "kind": kind,
            "raw": raw,
        },
        index=rows.index,
    )
    return out.reset_index(drop=True).astype({"table_name": "string", "source_file": "string", "column": "string", "reason": "string", "kind": "string", "raw": "string"})


@dataclass
class IngestResult:
    """Canonical tables read from one file, plus the rows that could not be used."""

    source_file: str
    format: str
    n_read: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    rejects: pd.DataFrame = field(default_factory=empty_rejects)
    #: xAPI: statements voided by voiding statements of this file (statement_id, voided_by, source_line)
    voids: pd.DataFrame | None = None
    #: xAPI: rows of this file removed because a statement of the same file voids them
    voided_rows: pd.DataFrame | None = None
    #: adapter-specific counts (xAPI: profile and statements per rule)
    counts: dict = field(default_factory=dict)
    #: extra lines for the ingest summary
    notes: list = field(default_factory=list)
    #: True when every ``attempt_kcs`` row belongs to an ``attempts`` row of this result (the
    #: adapter builds KC rows only from the attempts it keeps): the warehouse then records the
    #: KC rows of a first load by their attempts and KC models, not row by row
    kcs_of_own_attempts: bool = False

    @property
    def name(self) -> str:
        return Path(self.source_file).name
