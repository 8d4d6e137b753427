"""Wide files (one row per learner, one column per item: a 0/1 matrix or a column per test) -> long.

A wide file loads through the ordinary CSV mapping (:mod:`research.ingest.tabular`) with one
more block, ``wide``, that says which columns hold the item cells and which canonical column
each cell fills::

    table: assessments
    columns:                        # the per-row columns, as in any mapping
      learner_id: id
    wide:
      columns: '^Item (?P<item_id>\\d+)$'   # a regular expression over the file's column names;
                                           # its named groups fill canonical columns (here item_id)
      value: score                         # the canonical column each cell fills
    constants: {instrument: HCI, phase: post, max_score: 1}

``wide.columns`` may also be a list of column names (each name becomes the ``item_id``), or
a map from column name to the canonical values that column stands for::

    wide:
      columns:
        Pretest: {phase: pre, max_score: 20}
        Final Exam: {phase: post, max_score: 40}
      value: score

``wide.row_id: learner_id`` numbers the rows as learners when the file has no learner column
(each row is one learner: ``<file stem>:<line>``, pseudonymised like any learner id).
``values`` maps apply to the cells and to the values taken from column names (``phase:
{"6": pre, "9": post}``). Blank cells are items the learner did not answer and are not loaded.

Each long row keeps the line of its wide row, so a rejected cell is reported with the file,
its line and the item column, exactly like a row of a long file.
"""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from research.errors import ConfigError, DataError, SchemaError
from research.ingest import tabular

__all__ = ["is_wide", "read"]

WIDE_KEYS = ("columns", "value", "row_id")


def _spec(mapping, path: Path) -> dict | None:
    """The mapping as a dict when it is a wide one, else None."""
    if mapping is None:
        for candidate in (path.with_name(f"{path.stem}.mapping.yaml"), path.with_name(f"{path.stem}.mapping.yml")):
            if candidate.is_file():
                mapping = candidate
                break
        else:
            return None
    if isinstance(mapping, (str, Path)):
        mpath = Path(mapping)
        if not mpath.is_file():
            return None  # tabular says the mapping file is missing
        try:
            spec = yaml.safe_load(mpath.read_bytes().decode("utf-8"))
        except (yaml.YAMLError, RecursionError, UnicodeError, ValueError, OSError):
            return None  # tabular reports the unreadable mapping with its own message
        name = mpath.name
    else:
        spec, name = mapping, "mapping"
    if not isinstance(spec, dict) or "wide" not in spec:
        return None
    return {**spec, "_name": name}


def is_wide(mapping, path) -> bool:
    """Whether ``mapping`` (a path, a dict or None for the file's default mapping) has a ``wide`` block."""
    return _spec(mapping, Path(path)) is not None


def _item_columns(block, header: list[str], where: str) -> dict[str, dict[str, str]]:
    """File column -> the canonical values it stands for."""
    cols = block.get("columns")
    if isinstance(cols, str):
        try:
            pattern = re.compile(cols)
        except re.error as exc:
            raise ConfigError(f"{where}: wide: columns {cols!r} is not a valid regular expression: {exc}") from None
        out = {}
        for h in header:
            m = pattern.fullmatch(h)
            if m:
                out[h] = {k: v for k, v in m.groupdict().items() if v is not None}
                if not pattern.groupindex:
                    out[h] = {"item_id": h}
        if not out:
            raise SchemaError(f"{where}: wide: no column of the file matches {cols!r}; the file's columns are: {', '.join(header)}")
        return out
    if isinstance(cols, list):
        missing = [c for c in cols if c not in header]
        if missing:
            raise SchemaError(f"{where}: wide: column(s) {', '.join(map(repr, missing))} are not in the file; "
                              f"the file's columns are: {', '.join(header)}")
        return {str(c): {"item_id": str(c)} for c in cols}
    if isinstance(cols, dict):
        missing = [c for c in cols if c not in header]
        if missing:
            raise SchemaError(f"{where}: wide: column(s) {', '.join(map(repr, missing))} are not in the file; "
                              f"the file's columns are: {', '.join(header)}")
        out = {}
        for c, vals in cols.items():
            if vals is None:
                vals = {"item_id": str(c)}
            if not isinstance(vals, dict):
                raise ConfigError(f"{where}: wide: columns: {c!r} must map canonical columns to values, got {vals!r}")
            out[str(c)] = {str(k): str(v) for k, v in vals.items()}
        return out
    raise ConfigError(f"{where}: wide: 'columns' must be a regular expression, a list of column names or a map "
                      f"from column name to canonical values; got {cols!r}")


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None, format: str | None = None):
    """Read a wide file through its mapping's ``wide`` block; returns tabular's :class:`IngestResult`."""
    path = Path(path)
    options = dict(options or {})
    spec = _spec(options.get("mapping"), path)
    where = spec.pop("_name")
    block = spec.pop("wide")
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: 'wide' must be a mapping with keys {', '.join(WIDE_KEYS)}")
    unknown = sorted(set(block) - set(WIDE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: wide: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(WIDE_KEYS)}")
    value = block.get("value")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: wide: 'value' must name the canonical column each cell fills (score, outcome, response)")
    if (format or tabular.format_for(path)) == "parquet":
        raise ConfigError(f"{where}: wide files are read from CSV; convert {path.name} to CSV or give a long table")
    opts = {**(spec.get("options") or {}), **{k: v for k, v in options.items() if k in tabular.FILE_OPTIONS}}
    delimiter = opts.get("delimiter") or ("\t" if path.suffix.lower() == ".tsv" else ",")
    encoding = opts.get("encoding", "utf-8")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, encoding=encoding, quotechar='"')
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path.name}: not a readable {delimiter!r}-delimited file in {encoding}: {exc}") from None
    header = [str(c).strip() for c in frame.columns]
    frame.columns = header
    items = _item_columns(block, header, where)
    columns = dict(spec.get("columns") or {})
    row_id = block.get("row_id")
    if row_id is not None and row_id != "learner_id":
        raise ConfigError(f"{where}: wide: row_id can only be learner_id (number the rows as learners), got {row_id!r}")
    if row_id and "learner_id" in columns:
        raise ConfigError(f"{where}: wide: row_id numbers the rows as learners, but columns also maps learner_id; keep one")
    ids = [c for c in dict.fromkeys(columns.values()) if c in header]
    missing = [c for c in columns.values() if c not in header]
    if missing:
        raise SchemaError(f"{path.name}: column(s) {', '.join(map(repr, missing))} named in the mapping are not in the file; "
                          f"the file's columns are: {', '.join(header)}")
    frame["_line"] = range(2, len(frame) + 2)
    if row_id:
        frame["_row"] = path.stem + ":" + frame["_line"].astype(str)
        columns["learner_id"] = "_row"
        ids.append("_row")
    long = frame.melt(id_vars=[*ids, "_line"], value_vars=list(items), var_name="_column", value_name="_wide_value")
    long = long[long["_wide_value"].str.strip() != ""]
    derived = sorted({k for vals in items.values() for k in vals})
    for canon in derived:
        long[f"_wide_{canon}"] = long["_column"].map({c: vals.get(canon, "") for c, vals in items.items()})
    clash = sorted((set(derived) | {value}) & set(columns))
    if clash:
        raise ConfigError(f"{where}: {', '.join(map(repr, clash))} come(s) both from 'columns' and from 'wide'; keep one")
    long["_order"] = long["_column"].map({c: i for i, c in enumerate(items)})
    long = long.sort_values(["_line", "_order"], kind="stable").drop(columns="_order")
    mapping = {k: v for k, v in spec.items() if k in tabular.MAPPING_KEYS}
    mapping["columns"] = {**columns, **{c: f"_wide_{c}" for c in derived}, value: "_wide_value"}
    mapping["options"] = {k: v for k, v in (spec.get("options") or {}).items() if k not in ("delimiter", "encoding")}
    lines = long["_line"].to_numpy()
    cells = long["_column"].to_numpy()
    with tempfile.TemporaryDirectory(prefix="research-wide-") as tmp:
        long_path = Path(tmp) / path.name
        long.drop(columns=["_line", "_column"]).to_csv(long_path, index=False, quoting=csv.QUOTE_MINIMAL, encoding="utf-8")
        result = tabular.read(long_path, cohort=cohort, pseudonymiser=pseudonymiser, options={"mapping": mapping}, format="csv")
    return _restore_lines(result, path, lines, cells)


def _restore_lines(result, path: Path, lines, cells):
    """Point file, line and column back at the wide file (long line k is cell cells[k-2] of line lines[k-2])."""
    def wide_line(s: pd.Series, what=lines) -> pd.Series:
        idx = pd.to_numeric(s, errors="coerce") - 2
        ok = idx.between(0, len(lines) - 1)
        out = s.astype(object) if what is cells else s.copy()
        out[ok] = what[idx[ok].astype(int).to_numpy()]
        return out

    for name, table in result.tables.items():
        if "source_line" in table.columns and len(table):
            table["source_line"] = wide_line(table["source_line"]).astype(table["source_line"].dtype)
        if "source_file" in table.columns:
            table["source_file"] = path.name
    rej = result.rejects
    if rej is not None and len(rej):
        if "column" in rej.columns and "source_line" in rej.columns:
            cell = wide_line(rej["source_line"], cells).astype("string")
            from_cell = rej["column"].astype("string").str.startswith("_wide_").fillna(False)
            for i in rej.index[from_cell]:
                rej.loc[i, "reason"] = str(rej.loc[i, "reason"]).replace(repr(str(rej.loc[i, "column"])), repr(str(cell[i])))
            rej.loc[from_cell, "column"] = cell[from_cell]
        if "source_line" in rej.columns:
            rej["source_line"] = wide_line(rej["source_line"])
        if "source_file" in rej.columns:
            rej["source_file"] = path.name
    result.source_file = str(path)
    return result
