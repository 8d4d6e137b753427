"""Table Schemas from ``data_schema/`` and vectorised validation against them.

The JSON files in ``data_schema/`` (Frictionless Table Schema) are the single source of
truth for column names, types and constraints. This module reads them and checks a
DataFrame against one in a single DuckDB query: every row that breaks a constraint is
returned as a reject with its file, line, column and a plain reason; the rows that pass
come back cast to the schema's types. A million rows take about a second.

Supported constraints: ``required``, ``enum``, ``minimum``, ``maximum``, ``pattern``,
``minLength``, ``maxLength``, type conversion (``string``, ``integer``, ``number``,
``boolean``, ``date``, ``datetime``), and ``primaryKey`` uniqueness within the frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb
import pandas as pd

from research.errors import SchemaError
from research.paths import schema_dir

__all__ = [
    "Field", "PANDAS_TYPES", "TableSchema", "Validated", "as_schema_dtypes", "blank_text", "canonical_tables", "check_relation",
    "load_schema", "output_schema", "require_columns", "validate",
]

DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "datetime": "TIMESTAMP",
    "any": "VARCHAR",
}
PANDAS_TYPES = {
    "string": "string",
    "integer": "Int64",
    "number": "float64",
    "boolean": "boolean",
    "date": "datetime64[us]",
    "datetime": "datetime64[us]",
    "any": "string",
}
#: Fields whose values identify a person (even pseudonymised): never copied into a reject's ``raw``.
IDENTIFIER_FIELDS = ("learner_id", "session_id")
#: Columns every canonical table may carry besides its schema fields (provenance of the row).
PROVENANCE_COLUMNS = ("source_file", "source_line")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    description: str
    constraints: dict

    @property
    def required(self) -> bool:
        return bool(self.constraints.get("required"))

    @property
    def sql_type(self) -> str:
        return DUCKDB_TYPES[self.type]


@dataclass(frozen=True)
class TableSchema:
    name: str
    title: str
    description: str
    fields: tuple[Field, ...]
    primary_key: tuple[str, ...]
    path: Path

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(f"table {self.name!r} has no column {name!r}; its columns are: {', '.join(self.field_names)}")

    def empty_frame(self) -> pd.DataFrame:
        return pd.DataFrame({f.name: pd.Series(dtype=PANDAS_TYPES[f.type]) for f in self.fields})

    def create_sql(self, table: str | None = None) -> str:
        cols = ", ".join(f'"{f.name}" {f.sql_type}' for f in self.fields)
        return f'CREATE TABLE IF NOT EXISTS "{table or self.name}" ({cols})'


def _parse(path: Path) -> TableSchema:
    doc = json.loads(path.read_text(encoding="utf-8"))
    fields = []
    for spec in doc["fields"]:
        ftype = spec.get("type", "string")
        if ftype not in DUCKDB_TYPES:
            raise SchemaError(f"{path}: field {spec['name']!r} has unsupported type {ftype!r}; supported: {', '.join(DUCKDB_TYPES)}")
        fields.append(Field(spec["name"], ftype, spec.get("description", ""), dict(spec.get("constraints", {}))))
    pk = doc.get("primaryKey", [])
    pk = (pk,) if isinstance(pk, str) else tuple(pk)
    return TableSchema(doc.get("name", path.name.split(".")[0]), doc.get("title", ""), doc.get("description", ""), tuple(fields), pk, path)


@cache
def canonical_tables() -> tuple[str, ...]:
    """Names of the canonical tables, in the order of ``datapackage.json``."""
    package = json.loads((schema_dir() / "datapackage.json").read_text(encoding="utf-8"))
    return tuple(r["name"] for r in package["resources"])


@cache
def load_schema(name: str) -> TableSchema:
    """The schema of a canonical table (``attempts``) or an output table (``outputs/items``)."""
    path = schema_dir() / f"{name}.schema.json"
    if not path.is_file():
        outputs = sorted(p.name.removesuffix(".schema.json") for p in (schema_dir() / "outputs").glob("*.schema.json"))
        raise SchemaError(
            f"no Table Schema named {name!r} in {schema_dir()}; canonical tables: {', '.join(canonical_tables())}; "
            f"output tables: {', '.join('outputs/' + o for o in outputs) or 'none'}"
        )
    return _parse(path)


def output_schema(name: str) -> TableSchema:
    """The schema of an output table written by a notebook (``data_schema/outputs/NAME.schema.json``)."""
    return load_schema(f"outputs/{name}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


#: DuckDB column types that already hold a field type's values (no text conversion needed)
NATIVE_TYPES = {
    "integer": {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT"},
    "number": {"DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "DECIMAL"},
    "boolean": {"BOOLEAN"},
    "datetime": {"TIMESTAMP", "TIMESTAMP_US", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"},
    "date": {"DATE"},
    "string": {"VARCHAR"},
}


def _native(field: Field, source_type: str | None) -> bool:
    """True when the source column's type already is the field's type."""
    return source_type is not None and source_type.split("(")[0] in NATIVE_TYPES.get(field.type, set())


def blank_text(text: str) -> str:
    """SQL that is TRUE when the text expression ``text`` is empty or only white space (what
    ``trim`` removes): ``trim(text) = ''``, but ``trim``, which copies the text, runs only for the
    few values that begin with something other than a printable ASCII character (one that
    ``trim`` never removes). A fifth of the time of checking and inserting a million rows."""
    return f"(CASE WHEN {text} = '' THEN TRUE WHEN ascii({text}) BETWEEN 33 AND 126 THEN FALSE ELSE trim({text}) = '' END)"


def _checks(field: Field, present: bool, source_type: str | None = None) -> list[tuple[str, str]]:
    """(SQL condition that is TRUE when the value is bad, reason expression) pairs for one field.

    A column whose source type is already the field's type is checked without a round trip
    through text (which dominates the cost on millions of rows).
    """
    col = _quote(field.name)
    if not present:
        return [("TRUE", _literal("column is missing"))] if field.required else []
    raw = col if source_type == "VARCHAR" else f"CAST({col} AS VARCHAR)"
    blank = f"({col} IS NULL OR {blank_text(raw)})"
    typed = f"TRY_CAST({col} AS {field.sql_type})"
    if _native(field, source_type) and field.type != "string":
        blank, typed = f"({col} IS NULL)", col
    elif field.type == "boolean":
        typed = f"(CASE lower(trim({raw})) WHEN 'true' THEN TRUE WHEN '1' THEN TRUE WHEN 'yes' THEN TRUE WHEN 'false' THEN FALSE WHEN '0' THEN FALSE WHEN 'no' THEN FALSE END)"
    checks = []
    if field.required:
        checks.append((blank, _literal("value is missing (required)")))
    c = field.constraints
    if not _native(field, source_type):
        checks.append((f"(NOT {blank} AND {typed} IS NULL)", f"'not a valid {field.type}: ' || {raw}"))
    ok = f"(NOT {blank} AND {typed} IS NOT NULL)"
    if "enum" in c:
        allowed = ", ".join(_literal(v) for v in c["enum"])
        checks.append((f"({ok} AND {typed} NOT IN ({allowed}))", f"'value ' || {raw} || ' is not one of: {', '.join(map(str, c['enum']))}'"))
    if "minimum" in c:
        checks.append((f"({ok} AND {typed} < {_literal(c['minimum'])})", f"'value ' || {raw} || ' is below the minimum {c['minimum']}'"))
    if "maximum" in c:
        checks.append((f"({ok} AND {typed} > {_literal(c['maximum'])})", f"'value ' || {raw} || ' is above the maximum {c['maximum']}'"))
    if "pattern" in c:
        checks.append((f"({ok} AND NOT regexp_full_match({raw}, {_literal(c['pattern'])}))", f"'value does not match the pattern {c['pattern']}'"))
    if "minLength" in c:
        checks.append((f"({ok} AND length({raw}) < {int(c['minLength'])})", _literal(f"value is shorter than {c['minLength']} characters")))
    if "maxLength" in c:
        checks.append((f"({ok} AND length({raw}) > {int(c['maxLength'])})", _literal(f"value is longer than {c['maxLength']} characters")))
    return checks


def _typed_expr(field: Field, present: bool, source_type: str | None = None) -> str:
    col = _quote(field.name)
    if not present:
        return f"CAST(NULL AS {field.sql_type}) AS {col}"
    if _native(field, source_type) and field.type != "string":
        return f"CAST({col} AS {field.sql_type}) AS {col}"
    raw = col if source_type == "VARCHAR" else f"CAST({col} AS VARCHAR)"
    if field.type == "boolean":
        return (
            f"(CASE lower(trim({raw})) WHEN 'true' THEN TRUE WHEN '1' THEN TRUE WHEN 'yes' THEN TRUE "
            f"WHEN 'false' THEN FALSE WHEN '0' THEN FALSE WHEN 'no' THEN FALSE END) AS {col}"
        )
    if field.type == "string":
        return f"NULLIF({raw}, '') AS {col}"
    return f"TRY_CAST({col} AS {field.sql_type}) AS {col}"


@dataclass
class Validated:
    """Rows that passed (cast to the schema's types) and rejects (one row per bad source row)."""

    valid: pd.DataFrame
    rejects: pd.DataFrame


def check_relation(
    con: duckdb.DuckDBPyConnection,
    source: str,
    columns: list[str],
    schema: TableSchema,
    *,
    source_file: str | None = None,
    check_primary_key: bool = True,
    ordered: bool = True,
    row_column: str | None = None,
) -> tuple[str, str]:
    """Check the rows of the view or table ``source`` inside ``con``.

    Creates the temporary table ``__checked`` (the rows with a row number and a flag
    that is true when any constraint fails) and returns two SQL queries over it: the
    passing rows cast to the schema (schema columns in order; in source order when
    ``ordered``), and the rejects (columns as in :func:`validate`), whose reasons are
    spelled out only for the failing rows. Used by :func:`validate` and by the
    warehouse, which inserts the passing rows without a round trip through pandas.
    ``row_column`` names a column of ``source`` that already numbers its rows 0, 1, ...
    in source order; ``__checked`` is then a view (nothing is copied) instead of a table
    whose rows are numbered by a window over the whole source.
    """
    present = set(columns)
    types = {d[0]: str(d[1]) for d in con.execute(f"SELECT * FROM {source} LIMIT 0").description}
    conds, bad_exprs, col_exprs = [], [], []
    for field in schema.fields:
        for cond, reason in _checks(field, field.name in present, types.get(field.name)):
            conds.append(cond)
            bad_exprs.append(f"CASE WHEN {cond} THEN {_literal(field.name)} || ': ' || {reason} END")
            col_exprs.append(f"CASE WHEN {cond} THEN {_literal(field.name)} END")
    line = "source_line" if "source_line" in present else "(__row + 2)"
    any_bad = " OR ".join(conds) if conds else "FALSE"
    if row_column is None:  # numbering needs the whole source in order: materialise it once
        con.execute(f"CREATE OR REPLACE TEMP TABLE __checked AS SELECT *, row_number() OVER () - 1 AS __row, "
                    f"({any_bad}) AS __bad FROM {source}").fetchall()
    else:  # a view: the checks run in each query over it, and no copy of the rows is kept
        row = "" if row_column == "__row" else f"{_quote(row_column)} AS __row, "
        con.execute(f"CREATE OR REPLACE TEMP VIEW __checked AS SELECT *, {row}({any_bad}) AS __bad FROM {source}").fetchall()
    relation, dup = "__checked", "FALSE"
    if check_primary_key and schema.primary_key and all(k in present for k in schema.primary_key):
        # duplicates are rare: find repeated keys by a hash aggregate, join back only when there are any.
        # First over one 64-bit hash of the key per row (a small hash table, not one of every
        # key's text), then exactly, over the rows whose hash repeats
        keys = ", ".join(_quote(k) for k in schema.primary_key)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE __dups AS
                WITH repeated AS (SELECT hash({keys}) AS __h FROM __checked GROUP BY __h HAVING count(*) > 1)
                SELECT {keys}, min(__row) AS __first_row, arg_min({line}, __row) AS __first_line
                FROM __checked WHERE hash({keys}) IN (SELECT __h FROM repeated) GROUP BY {keys} HAVING count(*) > 1"""
        ).fetchall()
        if con.execute("SELECT count(*) FROM __dups").fetchall()[0][0]:
            relation = f"__checked LEFT JOIN __dups USING ({keys})"
            dup = "(__first_row IS NOT NULL AND __row > __first_row)"
            bad_exprs.append(
                f"CASE WHEN {dup} THEN 'duplicate of the primary key ({', '.join(schema.primary_key)}) "
                f"of line ' || CAST(__first_line AS VARCHAR) END"
            )
            col_exprs.append(f"CASE WHEN {dup} THEN {_literal(schema.primary_key[-1])} END")
    reason = f"concat_ws('; ', {', '.join(bad_exprs)})" if bad_exprs else "''"
    column = f"coalesce({', '.join(col_exprs)})" if col_exprs else "NULL"
    file_expr = "CAST(source_file AS VARCHAR)" if "source_file" in present else _literal(source_file or "")
    extra = [c for c in PROVENANCE_COLUMNS if c in present and c not in schema.field_names]
    typed_cols = ", ".join([_typed_expr(f, f.name in present, types.get(f.name)) for f in schema.fields] + [_quote(c) for c in extra])
    valid_sql = f"SELECT {typed_cols} FROM {relation} WHERE NOT __bad AND NOT {dup}" + (" ORDER BY __row" if ordered else "")
    # raw keeps the offending value only (never the row; never an identifier's value)
    whens = " ".join(
        f"WHEN {_literal(c)} THEN CAST(json_object({_literal(c)}, CAST({_quote(c)} AS VARCHAR)) AS VARCHAR)"
        for c in columns if c in schema.field_names and c not in IDENTIFIER_FIELDS
    )
    raw_expr = f"(CASE {column} {whens} END)" if whens else "CAST(NULL AS VARCHAR)"
    rejects_sql = f"""SELECT {_literal(schema.name)} AS table_name, {file_expr} AS source_file,
               CAST({line} AS BIGINT) AS source_line, {column} AS "column", {reason} AS reason,
               'rejected' AS kind, {raw_expr} AS raw
        FROM {relation} WHERE __bad OR {dup} ORDER BY __row"""
    return valid_sql, rejects_sql


def validate(
    frame: pd.DataFrame,
    table: str | TableSchema,
    *,
    source_file: str | None = None,
    check_primary_key: bool = True,
) -> Validated:
    """Check ``frame`` against a Table Schema, row by row, in one vectorised pass.

    Parameters
    ----------
    frame
        The rows to check. Columns not in the schema are ignored, except the provenance
        columns ``source_file`` and ``source_line`` which locate each reject.
    table
        A canonical table name (``"attempts"``), an output name (``"outputs/items"``) or a
        :class:`TableSchema`.
    source_file
        File name to report when ``frame`` has no ``source_file`` column.
    check_primary_key
        Reject every row after the first that repeats a primary-key value.

    Returns
    -------
    Validated
        ``valid``: the passing rows with exactly the schema's columns (plus the provenance
        columns when present) in schema order and types. ``rejects``: columns
        ``table_name``, ``source_file``, ``source_line`` (the line in the source file; the
        frame's row number + 2 when it has no ``source_line``, counting a header line),
        ``column`` (the first failing column), ``reason`` (every failure of the row,
        ``; ``-separated), ``kind`` (``rejected``) and ``raw`` (the offending value as JSON, never an identifier).
    """
    schema = table if isinstance(table, TableSchema) else load_schema(table)
    with duckdb.connect() as con:
        con.register("__frame_to_validate", frame.reset_index(drop=True))
        valid_sql, rejects_sql = check_relation(
            con, "__frame_to_validate", list(frame.columns), schema,
            source_file=source_file, check_primary_key=check_primary_key,
        )
        valid = con.execute(valid_sql).df()
        rejects = con.execute(rejects_sql).df()
    return Validated(as_schema_dtypes(valid, schema), rejects.astype({"source_line": "Int64"}))


def as_schema_dtypes(frame: pd.DataFrame, table: str | TableSchema) -> pd.DataFrame:
    """Give the schema's columns of ``frame`` their pandas dtypes (string, Int64, boolean...)."""
    schema = table if isinstance(table, TableSchema) else load_schema(table)
    out = frame.copy()
    for f in schema.fields:
        if f.name not in out.columns:
            continue
        if f.type in {"string", "any"}:
            out[f.name] = out[f.name].astype("string")
        elif f.type == "integer":
            out[f.name] = out[f.name].astype("Int64")
        elif f.type == "boolean":
            out[f.name] = out[f.name].astype("boolean")
        elif f.type == "number":
            out[f.name] = out[f.name].astype("float64")
    return out


def require_columns(frame: pd.DataFrame, table: str | TableSchema, *, what: str = "table") -> None:
    """Raise :class:`SchemaError` naming every required column ``frame`` lacks."""
    schema = table if isinstance(table, TableSchema) else load_schema(table)
    missing = [c for c in schema.required_fields if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{what} lacks required column(s) {', '.join(missing)} of {schema.name!r}; "
            f"required: {', '.join(schema.required_fields)}; present: {', '.join(map(str, frame.columns))}"
        )
