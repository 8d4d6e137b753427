"""Plain CSV or Parquet files plus a YAML column mapping -> any canonical table.

This is how pre/post test scores, survey responses, learner attributes and item metadata
arrive (and attempts from systems that are neither DataShop nor xAPI). The mapping::

    table: assessments          # canonical table (one of data_schema/*.schema.json)
    columns:                    # canonical column: source column
      learner_id: Student
      instrument: Test
      phase: Phase
      item_id: Question
      score: Points
      max_score: Max points
    values:                     # optional per-canonical-column value maps (source -> canonical)
      phase: {before: pre, after: post}
    constants:                  # optional constant values for canonical columns
      module: null
    kcs:                        # attempts only, optional: KC model -> source column (~~ splits)
      Default: Skill
    attributes:                 # learners only, optional: further learner attributes to compare
      study_programme: Programme  # groups by (name: source column), like gender
    options:                    # optional: delimiter, decimal, encoding, date_format, time_zone
      delimiter: ";"
      decimal: ","

The mapping is ``options={"mapping": path}`` (or a dict), else ``<file stem>.mapping.yaml``
beside the file. ``cohort`` always comes from the ``cohort`` argument. Values not named in a
``values`` map pass through unchanged. Quote YAML keys that look like numbers or booleans
(``"1": pre``), or YAML reads them as such.

Each mapped column is converted to its schema type (text stripped, ``decimal`` honoured for
numbers, ``date_format``/ISO 8601 for datetimes in ``time_zone`` -> UTC, true/false/yes/no/
ja/nej/1/0 for booleans); a value that does not convert, a missing required value, a value
outside the schema's ``enum`` or below its ``minimum`` rejects the row with the source column
and line. Rows repeating the table's primary key are rejected as duplicates of the first.
For ``attempts``, ``attempt_id`` may be left unmapped (``csv_`` + md5 of the row), ``step_id``
defaults to ``item_id`` and ``attempt`` is counted per learner and step in time order.

``source_line`` (attempts) is the file line (header = line 1); for Parquet it is the row
number + 1 so it reads the same way. ``n_read == len(table) + len(rejects)``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from research.errors import ConfigError, DataError, SchemaError
from research.ingest import _common as C
from research.ingest.base import IngestResult
from research.schema import canonical_tables

__all__ = ["FILE_OPTIONS", "MAPPING_KEYS", "NAME", "OPTIONS", "format_for", "load_mapping", "read", "sniff"]

NAMES = ("csv", "parquet")
NAME = "csv"
SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
MAPPING_KEYS = ("table", "columns", "values", "constants", "kcs", "attributes", "options")
ATTRIBUTE_NAME = r"^[a-z][a-z0-9_]{0,39}$"
FILE_OPTIONS = ("delimiter", "decimal", "encoding", "date_format", "time_zone")
OPTIONS = {"mapping", *FILE_OPTIONS}
TRUE = {"true", "t", "yes", "y", "1", "ja", "j", "sant"}
FALSE = {"false", "f", "no", "n", "0", "nej", "falsk"}


def format_for(path: Path) -> str:
    return "parquet" if Path(path).suffix.lower() == ".parquet" else "csv"


def default_mapping_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.mapping.yaml")


def sniff(path: Path, head: str) -> bool:
    path = Path(path)
    return path.suffix.lower() in SUFFIXES and (default_mapping_path(path).is_file() or path.with_name(f"{path.stem}.mapping.yml").is_file())


def _mapping_document(spec, data_path: Path | None) -> tuple[object, str]:
    """The mapping as parsed YAML (``spec`` a path, None for the file beside ``data_path``, or a dict), and its name for messages."""
    where = "mapping"
    if spec is None:
        if data_path is None:
            raise ConfigError("no column mapping given")
        candidates = [default_mapping_path(data_path), data_path.with_name(f"{data_path.stem}.mapping.yml")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ConfigError(
                f"{data_path.name}: no column mapping; write {candidates[0].name} beside it or pass --mapping FILE"
            )
        spec = found[0]
    if isinstance(spec, (str, Path)):
        mpath = Path(spec)
        where = mpath.name
        if not mpath.is_file():
            raise ConfigError(f"mapping file not found: {mpath}")
        try:
            spec = yaml.safe_load(mpath.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not UTF-8 text (byte offset {exc.start}); save the mapping as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{where}: nested too deeply to be a column mapping") from None
    return spec, where


def _check_column_blocks(where: str, table: str, valid: list[str], columns: dict, constants: dict, values: dict) -> None:
    """The ``columns``, ``constants`` and ``values`` blocks name canonical columns of ``table``, each once."""
    for block_name, block in (("columns", columns), ("constants", constants), ("values", values)):
        for canon in block:
            if canon == "cohort":
                raise ConfigError(f"{where}: {block_name}: 'cohort' comes from the cohort argument; remove it from the mapping")
            if canon not in valid:
                raise ConfigError(f"{where}: {block_name}: unknown canonical column {canon!r} for table {table!r}; valid columns: {', '.join(valid)}")
    for canon, src in columns.items():
        if not isinstance(src, str) or not src:
            raise ConfigError(f"{where}: columns: {canon!r} must name a source column (text), got {src!r}")
    both = sorted(set(columns) & set(constants))
    if both:
        raise ConfigError(f"{where}: {', '.join(map(repr, both))} given both as a column and as a constant; keep one")
    for canon, vmap in values.items():
        if not isinstance(vmap, dict):
            raise ConfigError(f"{where}: values: {canon!r} must map source values to canonical values, got {vmap!r}")
        if canon not in columns:
            raise ConfigError(f"{where}: values: {canon!r} has a value map but no source column under 'columns'")


def _checked_attributes(where: str, table: str, fields: list[str], attributes) -> dict:
    """Extra learner attributes (name: source column), for table ``learners`` only, with usable names."""
    if not isinstance(attributes, dict):
        raise ConfigError(f"{where}: 'attributes' must be a mapping of attribute name: source column, got {type(attributes).__name__}")
    if attributes and table != "learners":
        raise ConfigError(f"{where}: 'attributes' is only valid for table 'learners', not {table!r}")
    import re as _re

    for name, src in attributes.items():
        if not isinstance(name, str) or not _re.fullmatch(ATTRIBUTE_NAME, name) or name in fields:
            raise ConfigError(
                f"{where}: attributes: {name!r} is not a usable attribute name: use lower-case letters, digits and _ "
                f"(starting with a letter, at most 40), other than the standard columns {', '.join(fields)}"
            )
        if not isinstance(src, str) or not src:
            raise ConfigError(f"{where}: attributes: {name!r} must name a source column (text), got {src!r}")
    return attributes


def load_mapping(spec, data_path: Path | None = None) -> dict:
    """Read and validate a mapping (a path to YAML, or a dict). ConfigError says what is wrong."""
    spec, where = _mapping_document(spec, data_path)
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a mapping must be a YAML mapping with keys {', '.join(MAPPING_KEYS)}")
    bad_text = _invalid_unicode(spec)
    if bad_text is not None:
        raise ConfigError(f"{where}: {bad_text!r} is not valid Unicode text (a lone surrogate, e.g. from a \\uD800 escape); write the character itself")
    unknown = sorted(set(spec) - set(MAPPING_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(MAPPING_KEYS)}")
    table = spec.get("table")
    if table not in canonical_tables():
        raise ConfigError(f"{where}: unknown table {table!r}; valid tables: {', '.join(canonical_tables())}")
    fields = [name for name, _ in C.schema_fields(table)]
    valid = [f for f in fields if f not in ("cohort", "source_file", "source_line")]
    columns = spec.get("columns") or {}
    constants = spec.get("constants") or {}
    values = spec.get("values") or {}
    kcs = spec.get("kcs") or {}
    opts = spec.get("options") or {}
    if isinstance(constants, dict) and "time_zone" in constants and isinstance(opts, dict):
        # a time zone given as a constant is the zone of the file's local times
        constants = {k: v for k, v in constants.items() if k != "time_zone"}
        opts = {**opts, "time_zone": spec["constants"]["time_zone"]}
    for name, block in (("columns", columns), ("constants", constants), ("values", values), ("kcs", kcs), ("options", opts)):
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: {name!r} must be a mapping, got {type(block).__name__}")
    _check_column_blocks(where, table, valid, columns, constants, values)
    attributes = _checked_attributes(where, table, fields, spec.get("attributes") or {})
    if kcs and table != "attempts":
        raise ConfigError(f"{where}: 'kcs' is only valid for table 'attempts', not {table!r}")
    bad_opts = sorted(set(opts) - set(FILE_OPTIONS))
    if bad_opts:
        raise ConfigError(f"{where}: options: unknown option(s) {', '.join(map(repr, bad_opts))}; valid options: {', '.join(FILE_OPTIONS)}")
    spec_full = C.schema_spec(table)
    required = [f["name"] for f in spec_full["fields"] if f.get("constraints", {}).get("required") and f["name"] != "cohort"]
    derivable = {"attempt_id", "step_id", "attempt"} if table == "attempts" else set()
    missing = [r for r in required if r not in columns and r not in constants and r not in derivable]
    if missing:
        raise ConfigError(f"{where}: table {table!r} needs column(s) {', '.join(map(repr, missing))}; map them under 'columns' (or 'constants')")
    return {
        "table": table,
        "columns": dict(columns),
        "constants": dict(constants),
        "values": {k: {str(a): b for a, b in v.items()} for k, v in values.items()},
        "kcs": {str(k): str(v) for k, v in kcs.items()},
        "attributes": {str(k): str(v) for k, v in attributes.items()},
        "options": dict(opts),
        "name": where,
    }


def _read_csv(path: Path, mapping: dict, opts: dict, pseudonymiser):
    encoding = opts.get("encoding", "utf-8")
    head = C.read_head(path, encoding)
    delimiter = opts.get("delimiter") or ("\t" if path.suffix.lower() == ".tsv" else ",")
    if len(delimiter) != 1:
        raise ConfigError(f"delimiter must be one character, got {delimiter!r}")
    C.check_delimiter(path, head, expected=delimiter, what="CSV file") if _needs_delimiter(mapping) else None
    first = head.split("\n", 1)[0].rstrip("\r")
    header = [h.strip() for h in next(csv.reader(io.StringIO(first), delimiter=delimiter))]
    sources = list(dict.fromkeys([*mapping["columns"].values(), *mapping["kcs"].values(), *mapping["attributes"].values()]))
    _require_sources(path, header, sources)
    d = C.read_delimited(path, delimiter=delimiter, header=header, usecols=sources, encoding=encoding, quote_char='"')
    bad = C.bad_line_rows(d, learner_col=mapping["columns"].get("learner_id"), pseudonymiser=pseudonymiser, delimiter=delimiter)
    return d.frame, pd.Series(d.line, index=d.frame.index, dtype="int64"), bad, d.n_read


def _needs_delimiter(mapping: dict) -> bool:
    return len(set(mapping["columns"].values()) | set(mapping["kcs"].values()) | set(mapping["attributes"].values())) > 1


def _require_sources(path: Path, header: list[str], sources: list[str]) -> None:
    missing = [s for s in sources if s not in header]
    if missing and len(missing) == len(sources):
        raise SchemaError(
            f"{path.name}: line 1 is not a header: it names none of the columns the mapping reads "
            f"({', '.join(map(repr, sources))}). Is the header line missing? (The cells of line 1 are "
            "not shown, as they may hold personal data.)"
        )
    if missing:
        raise SchemaError(
            f"{path.name}: column(s) {', '.join(map(repr, missing))} named in the mapping are not in the file; "
            f"the file's columns are: {', '.join(header)}"
        )


def _read_parquet(path: Path, mapping: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException) as exc:  # pyarrow's types for a broken or unreadable file
        raise DataError(f"{path.name}: not a readable Parquet file: {exc}") from None
    header = list(schema.names)
    sources = list(dict.fromkeys([*mapping["columns"].values(), *mapping["kcs"].values(), *mapping["attributes"].values()]))
    _require_sources(path, header, sources)
    frame = pq.read_table(path, columns=sources).to_pandas()
    for c in frame.columns:  # one conversion path for both formats: text in, typed out
        s = frame[c]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            frame[c] = s.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").astype("string")
        elif pd.api.types.is_float_dtype(s.dtype):
            frame[c] = s.map(lambda v: repr(float(v)) if v == v else None).astype("string")
        else:
            frame[c] = s.astype("string")
    line = pd.Series(np.arange(2, len(frame) + 2), index=frame.index, dtype="int64")
    return frame, line, pd.DataFrame(), len(frame)


def _invalid_unicode(value, depth: int = 0):
    """The first key or text in a YAML document that cannot be written as UTF-8, else None."""
    if depth > 50:
        return "(nested more than 50 levels)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return None
    for item in items:
        found = _invalid_unicode(item, depth + 1)
        if found is not None:
            return found
    return None


def _constant(mapping: dict, name: str, kind: str, cons: dict, opts: dict, index) -> pd.Series:
    """A ``constants:`` value converted like a column value, repeated for every row.

    A bad constant is a mapping error (ConfigError), not a reject of every row. Date-times
    may carry their zone: an offset (``2024-03-01T10:00:00+01:00``, ``Z``) or an IANA name or
    abbreviation after the time (``2024-03-01 10:00 Europe/Stockholm``); without one,
    ``options: time_zone`` (default UTC) applies.
    """
    value = mapping["constants"][name]
    where = f"{mapping['name']}: constants: {name!r}"
    n = len(index)
    if value is None:
        if cons.get("required"):
            raise ConfigError(f"{where} is required and cannot be null")
        return C._empty(kind, n, index)
    text = str(value).strip() if not isinstance(value, bool) else ("true" if value else "false")
    one = pd.Series([text], dtype="string")
    if kind == "integer":
        v, bad = C.parse_integers(one, missing=())
    elif kind == "number":
        v, bad = C.parse_numbers(one, missing=())
    elif kind == "boolean":
        v, bad = _to_bool(one)
    elif kind in ("datetime", "date"):
        zone = opts.get("time_zone", "UTC")
        parts = text.rsplit(" ", 1)
        if len(parts) == 2 and C._tz_for(parts[1]) is not None and not parts[1][:1].isdigit():
            one, zone = pd.Series([parts[0]], dtype="string"), parts[1]
        v = C.parse_timestamps(one, opts.get("date_format"))
        if C._tz_for(zone) is None:
            raise ConfigError(f"{where}: unknown time zone {zone!r}; use an IANA name such as Europe/Stockholm, or UTC")
        v, _ = C.localize_to_utc(v, None, zone)
        bad = v.isna()
    else:
        v, bad = one, pd.Series([False])
    if bool(bad.iloc[0]):
        raise ConfigError(f"{where}: {text!r} is not a valid {kind}")
    if "enum" in cons and v.iloc[0] not in cons["enum"]:
        raise ConfigError(f"{where}: {text!r} is not one of {', '.join(cons['enum'])}")
    if "minimum" in cons and kind in ("integer", "number") and v.iloc[0] < cons["minimum"]:
        raise ConfigError(f"{where}: {text!r} is below the minimum {cons['minimum']}")
    return pd.Series(np.repeat(v.to_numpy(), n), index=index).astype(v.dtype)


def _to_bool(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    low = C.blank_to_na(s).str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[low.isin(list(TRUE)).fillna(False)] = True
    out[low.isin(list(FALSE)).fillna(False)] = False
    bad = low.notna() & out.isna()
    return out, bad.fillna(False).astype(bool)


def _field_value(f: pd.DataFrame, name: str, kind: str, cons: dict, src: str, mapping: dict, opts: dict,
                 table: str) -> tuple[pd.Series, list]:
    """One schema field read from its source column ``src`` (values mapped, parsed by type), and the
    checks of its rows as ``(mask, column, reason)`` conditions for :func:`C.first_reason`."""
    conditions = []
    text = f[src] if name == "learner_id" else C.blank_to_na(f[src])
    if name in mapping["values"]:
        vmap = mapping["values"][name]
        text = text.map(lambda v: vmap.get(v, v) if isinstance(v, str) else v).astype("string")
        text = text.mask(text == "")
    quoted = C.quoted
    if kind == "integer":
        value, bad = C.parse_integers(text, missing=())
        conditions.append((bad, src, lambda m, t=text, s=src: quoted(t[m]) + f" in {s!r} is not a whole number"))
    elif kind == "number":
        value, bad = C.parse_numbers(text, missing=(), decimal=str(opts.get("decimal", ".")))
        conditions.append((bad, src, lambda m, t=text, s=src, d=opts.get("decimal", "."): quoted(t[m]) + f" in {s!r} is not a number (decimal mark {d!r})"))
    elif kind == "datetime":
        value = C.parse_timestamps(text, opts.get("date_format"))
        tz = opts.get("time_zone", "UTC")
        if C._tz_for(tz) is None:
            raise ConfigError(f"{mapping['name']}: unknown time_zone {tz!r}; use an IANA name such as Europe/Stockholm, or UTC")
        value, _ = C.localize_to_utc(value, None, tz)
        bad = text.notna() & value.isna()
        conditions.append((bad, src, lambda m, t=text, s=src: quoted(t[m]) + f" in {s!r} is not a date-time" + (f" in format {opts['date_format']!r}" if opts.get("date_format") else " (ISO 8601 expected, e.g. 2024-03-01 10:00:00)")))
    elif kind == "boolean":
        value, bad = _to_bool(text)
        conditions.append((bad, src, lambda m, t=text, s=src: quoted(t[m]) + f" in {s!r} is not true/false"))
    else:
        value = text
    if cons.get("required") and not (table == "attempts" and name in ("attempt_id", "step_id", "attempt")):
        conditions.append((value.isna() & text.isna(), src, f"missing value in {src!r} (required for {name})"))
    if "enum" in cons:
        allowed = cons["enum"]
        conditions.append((value.notna() & ~value.isin(allowed), src,
                           lambda m, t=text, s=src, a=allowed: quoted(t[m]) + f" in {s!r} is not one of {', '.join(a)} (a 'values' map in the mapping can translate it)"))
    if "minimum" in cons and kind in ("integer", "number"):
        conditions.append(((value < cons["minimum"]).fillna(False), src, lambda m, t=text, s=src, lo=cons["minimum"]: quoted(t[m]) + f" in {s!r} is below the minimum {lo}"))
    return value, conditions


def _reject_duplicate_keys(df: pd.DataFrame, f: pd.DataFrame, line: pd.Series, spec: dict, cols: dict,
                           rejected: pd.Series, rcol: pd.Series, rreason: pd.Series) -> None:
    """Reject the rows whose primary key an earlier row of the file has (``rejected``, ``rcol`` and ``rreason`` in place)."""
    key = [k for k in spec.get("primaryKey", []) if k != "cohort" and k in df.columns]
    ok = ~rejected
    if key and ok.any():
        ids = df.loc[ok, key[0]].astype("string")
        for k in key[1:]:
            ids = ids + "\x1f" + df.loc[ok, k].astype("string").fillna("")
        content_cols = list(f.columns)
        dup, why = C.duplicate_rejects(ids, f[ok], content_cols, line[ok])
        dup_idx = dup[dup].index
        rejected[dup_idx] = True
        rcol[dup_idx] = ", ".join(cols.get(k, k) for k in key)
        rreason[dup_idx] = why[dup_idx].str.replace(r"^id '.*' already used", "key already used", regex=True)


def _learner_attributes(learner_id: pd.Series, f: pd.DataFrame, attributes: dict[str, str]) -> pd.DataFrame:
    """Extra learner attributes, long: one row per learner and attribute with a value."""
    parts = [pd.DataFrame({"learner_id": learner_id, "attribute": name, "value": C.blank_to_na(f[src])})
             for name, src in attributes.items()]
    long = pd.concat(parts, ignore_index=True)
    long = long[long["value"].notna()].reset_index(drop=True)
    return long.astype({"learner_id": "string", "attribute": "string", "value": "string"})


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None, format: str | None = None) -> IngestResult:
    path = Path(path)
    options = dict(options or {})
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for format {format or format_for(path)!r}; valid options: {', '.join(sorted(OPTIONS))}")
    fmt = format or format_for(path)
    mapping = load_mapping(options.get("mapping"), path)
    opts = {**mapping["options"], **{k: v for k, v in options.items() if k in FILE_OPTIONS}}
    table = mapping["table"]
    if fmt == "parquet":
        f, line, bad_rows, n_read = _read_parquet(path, mapping)
    else:
        f, line, bad_rows, n_read = _read_csv(path, mapping, opts, pseudonymiser)

    cols = mapping["columns"]
    learner_src = cols.get("learner_id")
    secret_ids = C.blank_to_na(f[learner_src]) if learner_src is not None else None
    if learner_src is not None:  # pseudonymise first
        f[learner_src] = pseudonymiser.series(secret_ids)
    session_src = cols.get("session_id")
    if session_src is not None and session_src != learner_src:  # session ids can identify too
        f[session_src] = pseudonymiser.sessions(C.blank_to_na(f[session_src]))
    rejects = C.RejectCollector(path.name, table, identifiers=[c for k, c in cols.items() if k in ("learner_id", "session_id")])
    if secret_ids is not None:
        rejects.keep_secret(secret_ids)
    spec = C.schema_spec(table)
    out: dict[str, pd.Series] = {}
    conditions = []
    too_long, too_long_col = C.overlong(f, [c for k, c in cols.items() if k != "learner_id"] + list(mapping["kcs"].values()) + list(mapping["attributes"].values()))
    conditions.append((too_long, too_long_col.fillna(""), lambda m: f"a value of more than {C.MAX_FIELD_CHARS:,} characters in " + C.quoted(too_long_col[m])))
    for field in spec["fields"]:
        name, kind, cons = field["name"], field["type"], field.get("constraints", {})
        if name == "cohort":
            continue
        if name in mapping["constants"]:
            out[name] = _constant(mapping, name, kind, cons, opts, f.index)
            continue
        if name not in cols:
            continue
        value, field_conditions = _field_value(f, name, kind, cons, cols[name], mapping, opts, table)
        conditions.extend(field_conditions)
        out[name] = value
    rejected, rcol, rreason = C.first_reason(conditions, f.index)

    df = pd.DataFrame(out, index=f.index)
    df.insert(0, "cohort", cohort)
    if table == "attempts":
        df = _attempt_defaults(df, f, line, path, rejected)
    _reject_duplicate_keys(df, f, line, spec, cols, rejected, rcol, rreason)  # of the primary key within the file
    rejects.add(f[rejected], line=line[rejected], column=rcol[rejected], reason=rreason[rejected])
    if not bad_rows.empty:
        rejects.add(bad_rows, line=bad_rows["_line"], column=bad_rows["_column"], reason=bad_rows["_reason"])
    ok = ~rejected
    tables = {table: C.conform(df[ok], table)}
    if table == "attempts":
        kcs = C.split_kcs(pd.DataFrame({"attempt_id": df.loc[ok, "attempt_id"]}).join(f.loc[ok, list(dict.fromkeys(mapping["kcs"].values()))]),
                          id_col="attempt_id", model_cols={m: [c] for m, c in mapping["kcs"].items()})
        kcs.insert(0, "cohort", cohort)
        tables["attempt_kcs"] = C.conform(kcs, "attempt_kcs")
    if mapping["attributes"]:  # extra learner attributes, long: one row per learner and attribute with a value
        tables["learner_attributes"] = _learner_attributes(df.loc[ok, "learner_id"], f.loc[ok], mapping["attributes"])
    return IngestResult(source_file=str(path), format=fmt, n_read=n_read, tables=tables, rejects=rejects.frame())


def _attempt_defaults(df: pd.DataFrame, f: pd.DataFrame, line: pd.Series, path: Path, rejected: pd.Series) -> pd.DataFrame:
    """attempts from a plain file: derive attempt_id, step_id and attempt when not mapped."""
    df["source_file"] = path.name
    df["source_line"] = line
    if "step_id" not in df.columns:
        df["step_id"] = df.get("item_id")
    else:
        df["step_id"] = df["step_id"].fillna(df["item_id"])
    if "attempt_id" not in df.columns or df["attempt_id"].isna().any():
        ids = C.content_ids(f, list(f.columns), "csv_")  # learner column already pseudonymised
        df["attempt_id"] = df["attempt_id"].fillna(ids) if "attempt_id" in df.columns else ids
    if "attempt" not in df.columns or df["attempt"].isna().any():
        ok = ~rejected
        sub = df[ok].sort_values(["timestamp", "source_line"], kind="stable")
        counted = sub.groupby([sub["learner_id"], sub["step_id"]], sort=False).cumcount() + 1
        counted = counted.reindex(df.index).astype("Int64")
        df["attempt"] = df["attempt"].fillna(counted) if "attempt" in df.columns else counted
    return df
