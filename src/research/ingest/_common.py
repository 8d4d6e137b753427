"""Helpers shared by the ingest adapters: reading delimited exports, timestamps, ids, KCs.

Everything here is vectorised (pyarrow, pandas, DuckDB); the only Python loops run over
columns, distinct values (time zones, KC models) or the few malformed lines of a file.

Encoding policy (all delimited formats): files are read as UTF-8 (a byte-order mark is
allowed and dropped). A file with bytes that are not UTF-8 is refused as a whole with a
:class:`~research.errors.DataError` that names the file, the line and the byte offset of
the first bad byte, and says how to fix it (re-export as UTF-8, or pass the file's real
encoding with ``options={"encoding": "cp1252"}``). We refuse rather than quarantine the
line because one wrong byte nearly always means the whole file was written in another
encoding, so the other lines would be silently mis-decoded too.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from research.errors import ConfigError, DataError, SchemaError
from research.ingest.base import IngestResult, empty_rejects, make_rejects
from research.schema import canonical_tables, load_schema

HEAD_BYTES = 64 * 1024

# --------------------------------------------------------------------------- schema


def _known(table: str) -> None:
    if table not in canonical_tables():
        raise ConfigError(f"unknown canonical table {table!r}; valid tables: {', '.join(canonical_tables())}")


@cache
def schema_fields(table: str) -> tuple[tuple[str, str], ...]:
    """(name, type) of every field of a canonical table, in schema order."""
    _known(table)
    return tuple((f.name, f.type) for f in load_schema(table).fields)


@cache
def schema_spec(table: str) -> dict:
    """The whole Table Schema of a canonical table (fields, constraints, primaryKey)."""
    _known(table)
    return json.loads(load_schema(table).path.read_text(encoding="utf-8"))


def _empty(kind: str, n: int, index=None) -> pd.Series:
    """An all-missing column of ``n`` values (built from arrays, not a list of ``n`` NA)."""
    if kind == "integer":
        return pd.Series(pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)), index=index)
    if kind == "number":
        return pd.Series(np.full(n, np.nan), index=index, dtype="float64")
    if kind == "datetime":
        return pd.Series(pd.NaT, index=index if index is not None else range(n), dtype="datetime64[us]")
    if kind == "boolean":
        return pd.Series(pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool)), index=index)
    return text_constant(None, n, index)


def text_constant(value: str | None, n: int, index=None) -> pd.Series:
    """A text column (pandas ``string``, Arrow-backed) holding ``value`` (missing when None) ``n`` times."""
    arr = pa.nulls(n, pa.large_string()) if value is None else pa.repeat(pa.scalar(str(value), pa.large_string()), n)
    return pd.Series(pd.arrays.ArrowStringArray(arr), index=index)


def attempts_result(path, fmt: str, n_read: int, attempts: pd.DataFrame, attempt_kcs: pd.DataFrame,
                    rejects) -> IngestResult:
    """What a DataShop adapter returns: its attempts and their KC rows, each conformed to its
    canonical table, with the rejected rows its collector kept. The KC rows must be those of
    ``attempts`` only (``kcs_of_own_attempts``): the adapters build them from the rows they keep."""
    return IngestResult(
        source_file=str(path),
        format=fmt,
        n_read=n_read,
        tables={"attempts": conform(attempts, "attempts"), "attempt_kcs": conform(attempt_kcs, "attempt_kcs")},
        rejects=rejects.frame(),
        kcs_of_own_attempts=True,
    )


def conform(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Columns of ``table`` in schema order with the canonical dtypes; missing ones are NA."""
    out = {}
    n = len(df)
    for name, kind in schema_fields(table):
        if name not in df.columns:
            out[name] = _empty(kind, n, df.index)
            continue
        s = df[name]
        if kind == "integer":
            s = s.astype("Int64")
        elif kind == "number":
            s = s.astype("float64")
        elif kind == "datetime":
            if not pd.api.types.is_datetime64_dtype(s.dtype):
                s = pd.to_datetime(s)
            s = s.astype("datetime64[us]")
        elif kind == "boolean":
            s = s.astype("boolean")
        else:
            s = s.astype("string")
        out[name] = s
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


# --------------------------------------------------------------------------- reading


def dedupe_names(names: list[str]) -> list[str]:
    """Make repeated header names unique the way pandas does: X, X.1, X.2."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}.{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def _locate_bad_utf8(path: Path) -> tuple[int, int, int]:
    """(line, byte offset, bad byte) of the first non-UTF-8 byte of ``path``."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, exc.start, data[exc.start]
    return 0, -1, 0


def utf8_error(path: Path, line: int, offset: int, byte: int) -> DataError:
    hint = ""
    if offset in (0, 1) and byte in (0xFF, 0xFE):
        hint = " The file starts with a UTF-16 byte-order mark (Excel 'Unicode text')."
    return DataError(
        f"{path.name}: line {line} is not valid UTF-8 (byte 0x{byte:02X} at byte offset {offset}).{hint} "
        "Re-export the file as UTF-8, or pass its real encoding, e.g. --option encoding=cp1252 (or, in a mapping, options: {encoding: cp1252})."
    )


def read_head(path: Path, encoding: str = "utf-8") -> str:
    """The start of the file, decoded; raises DataError for a missing, empty or undecodable file."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head.strip():
        raise DataError(f"{path.name}: the file is empty (no header and no rows); check that the export finished")
    if encoding.lower().replace("-", "") in ("utf8", "utf8sig"):
        # cut at the last newline so a multi-byte character split by the 64 KiB window is no error
        cut = head.rfind(b"\n")
        chunk = head if cut < 0 or len(head) < HEAD_BYTES else head[: cut + 1]
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise utf8_error(path, chunk.count(b"\n", 0, exc.start) + 1, exc.start, chunk[exc.start]) from None
        return text.removeprefix("\ufeff")
    try:
        return head.decode(encoding, errors="replace")
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r} for {path.name}; use a Python codec name such as 'utf-8', 'cp1252' or 'latin-1'") from None


def header_fields(head: str, delimiter: str) -> list[str]:
    first = head.split("\n", 1)[0].rstrip("\r")
    return [h.strip() for h in first.split(delimiter)]


def check_delimiter(path: Path, head: str, *, expected: str, what: str) -> None:
    """Refuse a file whose header line does not use the expected delimiter."""
    first = head.split("\n", 1)[0]
    if expected in first:
        return
    names = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "pipes"}
    found = [names[d] for d in (",", ";", "\t", "|") if d != expected and d in first]
    found_txt = f"found {' and '.join(found)}" if found else "found no delimiter at all"
    raise DataError(
        f"{path.name}: expected {names.get(expected, repr(expected)).removesuffix('s')}-delimited {what}, "
        f"{found_txt} in the header line. Re-export it from DataShop as tab-delimited text, "
        "or read it with --format csv and a --mapping FILE."
        if expected == "\t"
        else f"{path.name}: expected {what} delimited by {expected!r}, {found_txt} in the header line"
    )


def require_columns(path: Path, header: list[str], required: list[str], what: str) -> None:
    missing = [c for c in required if c not in header]
    if missing and len(missing) == len(required):
        raise SchemaError(no_header_message(path, required, what))
    if missing:
        raise SchemaError(
            f"{path.name}: missing required column(s) {', '.join(repr(m) for m in missing)} for a {what}. "
            f"Required: {', '.join(required)}. The file has: {', '.join(header[:40])}"
            + (" ..." if len(header) > 40 else "")
        )


def tab_header(path: Path, encoding: str, required: list[str], what: str) -> tuple[list[str], list[str]]:
    """The header of a tab-delimited export, checked: (the header's fields, unique column names).

    Refuses a file that is missing, undecodable, not tab-delimited or lacks a required column.
    """
    head = read_head(path, encoding)
    check_delimiter(path, head, expected="\t", what=what)
    header = header_fields(head, "\t")
    require_columns(path, header, required, what)
    return header, dedupe_names(header)


def no_header_message(path: Path, required: list[str], what: str) -> str:
    """The message for a file whose first line names none of the columns we need.

    The first line is then most likely a data row (a headerless export), so its cells
    are never printed: they may hold a raw learner id.
    """
    return (
        f"{path.name}: line 1 is not a header: it names none of the columns needed for a {what} "
        f"({', '.join(required)}). Is the header line missing? Export the file with its header "
        "(the cells of line 1 are not shown, as they may hold personal data)."
    )


#: longest value (characters) accepted in any field we read; longer ones reject the row
MAX_FIELD_CHARS = 65_536


def overlong(frame: pd.DataFrame, columns, limit: int = MAX_FIELD_CHARS) -> tuple[pd.Series, pd.Series]:
    """``(mask, column)``: rows with a value longer than ``limit`` characters, and the first such column."""
    import pyarrow.compute as pc

    mask = pd.Series(False, index=frame.index)
    column = pd.Series(pd.NA, index=frame.index, dtype="string")
    for c in columns:
        if c not in frame.columns:
            continue
        arr = arrow_strings(frame[c], combine=False)
        if (pc.max(pc.binary_length(arr)).as_py() or 0) <= limit:  # no value has that many bytes (offsets only)
            continue
        long_ = pc.fill_null(pc.greater(pc.utf8_length(arr), limit), False).to_numpy(zero_copy_only=False)
        new = long_ & ~mask.to_numpy()
        if new.any():
            column[new] = c
            mask |= long_
    return mask, column


@dataclass
class Delimited:
    """A delimited file read as strings: one row per non-blank well-formed line."""

    frame: pd.DataFrame  # columns named by the deduplicated header, all str, "" for empty
    line: np.ndarray  # 1-based physical line of each row of frame
    bad: list[dict] = field(default_factory=list)  # malformed lines: {"line", "expected", "actual", "text"}
    blank_lines: int = 0
    header: list[str] = field(default_factory=list)  # the header as written (may repeat names)
    names: list[str] = field(default_factory=list)  # deduplicated header

    @property
    def n_read(self) -> int:
        """Data lines that held something: well-formed rows plus malformed lines."""
        return len(self.frame) + len(self.bad)


def _byte_positions(arr: np.ndarray, byte: int, chunk: int = 1 << 25) -> np.ndarray:
    """Offsets of ``byte`` in ``arr``, found a slice at a time (no file-sized temporary)."""
    parts = [np.flatnonzero(arr[i:i + chunk] == byte) + i for i in range(0, len(arr), chunk)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def _scan_lines(data, quote_char: str | bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Physical lines of ``data``: ``(starts, ends, blank, odd_quotes, lone_cr)``, vectorised.

    ``data`` is bytes or a uint8 array (a memory map of the file). ``ends`` are exclusive
    and include the line's newline. A line is blank when it holds only spaces, tabs and
    its line end; ``odd_quotes`` marks lines with an odd number of quote characters (a
    quoted value that spans lines, or an unbalanced quote); ``lone_cr`` a carriage return
    that is not part of the line end (parsers split there).
    """
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    nl = _byte_positions(arr, 10)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    ends = np.concatenate([nl + 1, [len(arr)]]).astype(np.int64)
    if len(arr) == 0 or arr[-1] == 10:  # no line after the final newline
        starts, ends = starts[:-1], ends[:-1]
    n = len(starts)

    def per_line(positions: np.ndarray) -> np.ndarray:
        """How many of ``positions`` (byte offsets, usually few) fall in each line."""
        if not n or not len(positions):
            return np.zeros(n, dtype=np.int64)
        return np.bincount(np.searchsorted(starts, positions, side="right") - 1, minlength=n)[:n]

    ws = np.zeros(256, dtype=bool)
    ws[[9, 10, 13, 32]] = True
    # only a line that starts with white space (or is empty) can be blank: check just those
    blank = np.zeros(n, dtype=bool)
    if n:
        first = np.where(starts < len(arr), arr[np.minimum(starts, max(len(arr) - 1, 0))], 10)
        cand = np.flatnonzero(ws[first])
        if len(cand) > 10_000:  # many lines start blank: one vectorised pass over the bytes instead
            c = np.zeros(len(arr) + 1, dtype=np.int64)
            np.cumsum(~ws[arr], out=c[1:])
            blank = (c[ends] - c[starts]) == 0
        else:
            for i in cand:
                blank[i] = not (~ws[arr[starts[i]:ends[i]]]).any()
    if quote_char:
        odd = per_line(_byte_positions(arr, ord(quote_char))) % 2 == 1
    else:
        odd = np.zeros(n, dtype=bool)
    cr = _byte_positions(arr, 13)
    if len(cr) and n:
        line_of = np.searchsorted(starts, cr, side="right") - 1
        line_end = ends[line_of]
        terminating = ((cr + 1 == line_end - 1) & (arr[np.minimum(cr + 1, len(arr) - 1)] == 10)) | (cr + 1 == len(arr))
        lone = np.zeros(n, dtype=bool)
        lone[line_of[~terminating]] = True
    else:
        lone = np.zeros(n, dtype=bool)
    return starts, ends, blank, odd, lone


def _map_file(path: Path) -> np.ndarray:
    """The file's bytes as a read-only memory map (file-backed pages, not a copy on the heap)."""
    try:
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=np.uint8)
        return np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as exc:
        raise DataError(f"{path.name}: cannot be read: {exc.strerror or exc}") from None


@dataclass
class _Lines:
    """What the byte scan found: the text to parse and the physical line of each of its lines."""

    source: object  # the file's path (parse it as it is) or the bytes left after dropping lines
    kept_lines: np.ndarray  # physical line of each line of ``source``, header first
    blank: np.ndarray  # per data line: blank
    bad: list[dict]  # lines refused before parsing (unbalanced quote, lone carriage return)


def _split_lines(path: Path, quote_char: str | bool) -> _Lines:
    """Scan the file's bytes for line ends, blank and malformed lines; the text to parse.

    When no line has to go, the file itself is parsed (streamed in blocks, never held
    whole); else the kept lines are copied out.
    """
    data = _map_file(path)
    bom = len(data) >= 3 and bytes(data[:3]) == b"\xef\xbb\xbf"
    body = data[3:] if bom else data
    starts, ends, blank, odd, lone_cr = _scan_lines(body, quote_char)
    data_lines = np.arange(2, len(starts) + 1, dtype=np.int64)  # physical line numbers after the header
    blank_d, odd_d, cr_d = blank[1:], odd[1:], lone_cr[1:]
    pre_bad = ~blank_d & (odd_d | cr_d)
    bad: list[dict] = []
    for i in np.flatnonzero(pre_bad):  # only malformed lines: few
        why = ("an unbalanced quote (\") in the line: a quoted value may not run over a line break"
               if odd_d[i] else "a carriage return inside the line (a line break in a value?)")
        bad.append({"line": int(data_lines[i]), "expected": None, "actual": None, "text": None, "why": why})
    drop = blank_d | pre_bad
    kept_lines = np.concatenate([[1], data_lines[~drop]]) if len(starts) else np.array([1], dtype=np.int64)
    if not bom and not drop.any() and len(body) and body[-1] == 10:
        source = path
    else:
        if drop.any():
            mask = np.ones(len(body), dtype=bool)
            for i in np.flatnonzero(drop) + 1:
                mask[starts[i]:ends[i]] = False
            text = np.asarray(body)[mask].tobytes()
        else:
            text = bytes(body)
        source = text + b"\n" if text and not text.endswith(b"\n") else text
    del body, data
    return _Lines(source, kept_lines, blank_d, bad)


def _parse_delimited(path: Path, lines: _Lines, *, names: list[str], include: list[str], delimiter: str,
                     encoding: str, quote_char: str | bool) -> tuple[pa.Table, list[dict]]:
    """Parse the kept lines with Arrow, every field as text; malformed rows come back with their line."""
    arrow_bad: list[dict] = []

    def handler(row) -> str:
        arrow_bad.append({"line": row.number, "expected": row.expected_columns, "actual": row.actual_columns, "text": None})
        return "skip"

    def _read(threads: bool) -> pa.Table:
        arrow_bad.clear()
        source = str(lines.source) if isinstance(lines.source, Path) else pa.BufferReader(lines.source)
        return pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                skip_rows=1, column_names=names, use_threads=threads, encoding=encoding, block_size=1 << 24
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char=quote_char, ignore_empty_lines=False, invalid_row_handler=handler
            ),
            convert_options=pacsv.ConvertOptions(
                # large_string: what pandas keeps text in, so the frame takes the parsed columns as they are
                column_types={c: pa.large_string() for c in names},
                include_columns=include,
                strings_can_be_null=False,
                null_values=[],
                quoted_strings_can_be_null=False,
            ),
        )

    try:
        if len(lines.kept_lines) == 1:
            table = pa.table({c: pa.array([], pa.large_string()) for c in include})
        else:
            table = _read(True)
            if arrow_bad and any(b["line"] is None for b in arrow_bad):
                table = _read(False)  # single-threaded parsing knows line numbers
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "utf8" in str(exc).lower():
            raise utf8_error(path, *_locate_bad_utf8(path)) from None
        raise DataError(f"{path.name}: could not be parsed as a {delimiter!r}-delimited file ({type(exc).__name__}); "
                        "check the delimiter and that every line has one field per header column") from None
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r} for {path.name}; use a Python codec name such as 'utf-8', 'cp1252' or 'latin-1'") from None
    for b in arrow_bad:  # arrow numbers the lines of the kept text (header = 1)
        b["line"] = int(lines.kept_lines[b["line"] - 1])
    return table, arrow_bad


def _drop_delimiter_rows(frame: pd.DataFrame, lines: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Leave out rows of only delimiters and white space (no data either): ``(frame, lines, n_dropped)``."""
    import pyarrow.compute as pc

    if not len(frame):
        return frame, lines, 0
    cand = np.flatnonzero(pc.equal(pc.utf8_trim_whitespace(arrow_strings(frame.iloc[:, 0], combine=False)), "").to_numpy(zero_copy_only=False))
    empty = np.zeros(len(frame), dtype=bool)
    if len(cand):
        sub = frame.iloc[cand]
        ok = np.ones(len(cand), dtype=bool)
        for c in sub.columns:
            ok &= (sub[c].str.strip() == "").to_numpy()
        empty[cand[ok]] = True
    if not empty.any():
        return frame, lines, 0
    return frame.loc[~empty].reset_index(drop=True), lines[~empty], int(empty.sum())


def read_delimited(
    path: Path,
    *,
    delimiter: str,
    header: list[str],
    usecols: list[str] | None = None,
    encoding: str = "utf-8",
    quote_char: str | bool = False,
) -> Delimited:
    """Read a delimited text file strictly, every field as text; every physical line accounted for.

    DataShop writes no quoting (``quote_char=False``); plain CSV uses ``"``. Parsing is
    strict: one physical line is one row. A line with an unbalanced quote (which would
    merge the following lines into one value) or a carriage return inside it, and a line
    with fewer or more fields than the header, comes back in ``bad`` with its line number
    and reason; the other lines are parsed. Blank lines (only spaces, tabs or delimiters)
    are counted and left out. Afterwards ``rows + bad + blank`` must equal the file's data
    lines, or the file is refused (nothing is ever silently merged or lost). Repeated
    header names are kept apart (``X``, ``X.1``).
    """
    names = dedupe_names(header)
    # the first and last columns are always read, so a blank line is told apart from a row
    # whose data sits only in columns we do not map
    keep = None if usecols is None else set(usecols) | {names[0], names[-1]}
    include = names if keep is None else [c for c in names if c in keep]
    lines = _split_lines(path, quote_char)
    for b in lines.bad:
        b["expected"] = len(header)
    table, arrow_bad = _parse_delimited(path, lines, names=names, include=include, delimiter=delimiter,
                                        encoding=encoding, quote_char=quote_char)
    n_kept, n_rows = len(lines.kept_lines) - 1, table.num_rows
    if n_rows + len(arrow_bad) != n_kept:
        raise DataError(
            f"{path.name}: the row count does not add up: {n_kept:,} data lines, but {n_rows:,} rows and "
            f"{len(arrow_bad):,} malformed lines were parsed; the file is refused as a whole (check its quoting and line ends)"
        )
    frame = table.to_pandas(types_mapper={pa.large_string(): pd.StringDtype("pyarrow", na_value=np.nan)}.get)
    del table
    bad_lines = {b["line"] for b in arrow_bad}
    kept = lines.kept_lines[1:].astype(np.int64)
    row_lines = np.array([x for x in kept if x not in bad_lines], dtype=np.int64) if bad_lines else kept
    frame, row_lines, n_empty = _drop_delimiter_rows(frame, row_lines)
    bad = sorted(lines.bad + arrow_bad, key=lambda b: b["line"])
    return Delimited(frame=frame, line=row_lines, bad=bad, blank_lines=int(lines.blank.sum()) + n_empty, header=header, names=names)


def bad_line_rows(d: Delimited, *, learner_col: str | None = None, pseudonymiser=None, delimiter: str = "\t") -> pd.DataFrame:
    """The malformed lines as reject rows: ``_line``, ``_column`` and ``_reason`` only.

    The text of a malformed line is never kept: its fields do not line up with the header,
    so a raw learner id or an unmapped column could sit in any of them.
    """
    if not d.bad:
        return pd.DataFrame()

    def column(b) -> str:
        if b.get("why"):
            return "(whole line)"
        return d.header[b["actual"]] if b["actual"] < b["expected"] else f"(after {d.header[-1]})"

    def reason(b) -> str:
        if b.get("why"):
            return "malformed line: " + b["why"]
        return (f"malformed line: {b['actual']} fields where the header has {b['expected']}"
                + (" (truncated line?)" if b["actual"] < b["expected"] else " (a stray delimiter in a value?)"))

    return pd.DataFrame({"_line": [b["line"] for b in d.bad], "_column": [column(b) for b in d.bad], "_reason": [reason(b) for b in d.bad]})


# --------------------------------------------------------------------------- values


def blank_to_na(s: pd.Series, strip: bool = True) -> pd.Series:
    """Strip text (unless ``strip=False``) and make empty cells NA (pandas ``string`` dtype, Arrow-backed)."""
    import pyarrow.compute as pc

    arr = arrow_strings(s, combine=False)
    # a clean column (the usual case) is passed on as it is, not copied
    if strip:
        trimmed = pc.utf8_trim_whitespace(arr)
        if pc.sum(pc.binary_length(trimmed)) != pc.sum(pc.binary_length(arr)):
            arr = trimmed
        del trimmed
    empty = pc.equal(arr, "")
    if pc.any(empty).as_py():
        arr = pc.if_else(empty, pa.scalar(None, arr.type), arr)
    return pd.Series(pd.arrays.ArrowStringArray(arr), index=s.index)


_TIME_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%Y/%m/%d %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M")


def parse_timestamps(s: pd.Series, date_format: str | None = None) -> pd.Series:
    """Parse text timestamps; NaT where the text is empty or cannot be parsed.

    Tries ISO 8601 first (DataShop and xAPI), then ``date_format`` when given, then the
    US style DataShop uses in some student-step exports (``2/1/1996 0:00``). Values with
    an offset or ``Z`` are converted to UTC and made timezone-naive.
    """
    text = blank_to_na(s)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us]")
    todo = text.notna()
    formats = ([date_format] if date_format else []) + ["ISO8601", *_TIME_FORMATS]
    for fmt in formats:
        if not todo.any():
            break
        sub = text[todo]
        try:
            parsed = pd.to_datetime(sub, format=fmt, errors="coerce", utc=True)
        except (ValueError, TypeError):
            continue
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
        ok = parsed.notna()
        out.loc[ok[ok].index] = parsed[ok]
        todo = todo & out.isna()
    return out


_ABBREVIATIONS = {
    "UTC": "UTC", "GMT": "UTC", "Z": "UTC", "UT": "UTC",
    "EST": "-05:00", "EDT": "-04:00", "CST": "-06:00", "CDT": "-05:00",
    "MST": "-07:00", "MDT": "-06:00", "PST": "-08:00", "PDT": "-07:00",
    "CEST": "+02:00", "EEST": "+03:00", "WEST": "+01:00", "BST": "+01:00",  # summer abbreviations zoneinfo lacks
}


def _tz_for(name: str):
    """A tz usable by pandas for a zone name, or None when unknown."""
    target = _ABBREVIATIONS.get(name.upper(), name)
    if re.fullmatch(r"[+-]\d{2}:\d{2}", target):
        sign = 1 if target[0] == "+" else -1
        hours, minutes = int(target[1:3]), int(target[4:6])
        from datetime import timedelta, timezone

        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return zoneinfo.ZoneInfo(target)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def localize_to_utc(ts: pd.Series, zones: pd.Series | None, default_zone: str = "UTC") -> tuple[pd.Series, pd.Series]:
    """Convert naive local times to naive UTC, one distinct zone at a time.

    Returns ``(utc, bad_zone)``: ``bad_zone`` is True where the zone name is not a known
    IANA zone or abbreviation (those rows keep NaT). Blank zones use ``default_zone``.
    Ambiguous local times (the repeated hour when clocks go back) are read as standard
    time; times that do not exist (the hour skipped when clocks go forward) are moved
    forward to the first valid time.
    """
    out = ts.astype("datetime64[us]").copy()
    bad = pd.Series(False, index=ts.index)
    if zones is None:
        zones = pd.Series(default_zone, index=ts.index, dtype="string")
    zones = blank_to_na(zones).fillna(default_zone)
    for zone in pd.unique(zones.to_numpy()):
        mask = (zones == zone).to_numpy()
        tz = _tz_for(str(zone))
        if tz is None:
            bad.iloc[np.flatnonzero(mask)] = True
            out.iloc[np.flatnonzero(mask)] = pd.NaT
            continue
        if str(tz) == "UTC":
            continue
        sub = pd.DatetimeIndex(out.iloc[np.flatnonzero(mask)])
        local = sub.tz_localize(tz, ambiguous=np.zeros(len(sub), dtype=bool), nonexistent="shift_forward")
        out.iloc[np.flatnonzero(mask)] = local.tz_convert("UTC").tz_localize(None).astype("datetime64[us]")
    return out, bad


_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def parse_numbers(s: pd.Series, missing: tuple[str, ...] = (".",), decimal: str = ".") -> tuple[pd.Series, pd.Series]:
    """Text -> float; returns (values, bad) where bad marks non-empty cells that are not numbers.

    Vectorised in Arrow: cells matching a number pattern are cast, the rest are NaN.
    """
    import pyarrow.compute as pc

    arr = pc.utf8_trim_whitespace(arrow_strings(s, combine=False))
    drop = pc.equal(arr, "")
    if missing:
        drop = pc.or_(drop, pc.is_in(arr, value_set=pa.array(list(missing), arr.type)))
    arr = pc.if_else(drop, pa.scalar(None, arr.type), arr)
    if decimal != ".":
        arr = pc.replace_substring(arr, decimal, ".")
    try:  # fast path: every cell is a number (or empty)
        values = pc.cast(arr, pa.float64())
        valid = pc.is_valid(values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        valid = pc.fill_null(pc.match_substring_regex(arr, _NUMBER), False)
        values = pc.cast(pc.if_else(valid, arr, pa.scalar(None, arr.type)), pa.float64())
    out = pd.Series(values.to_numpy(zero_copy_only=False), index=s.index, dtype="float64")
    bad = pc.is_valid(arr).to_numpy(zero_copy_only=False) & ~valid.to_numpy(zero_copy_only=False)
    infinite = np.isinf(out.to_numpy())  # 1e999, inf: not a usable number
    if infinite.any():
        bad = bad | infinite
        out[infinite] = np.nan
    return out, pd.Series(bad, index=s.index)


def _is_arrow(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow" or isinstance(s.dtype, pd.ArrowDtype)


#: largest whole number an integer column accepts (2**53: exact in a float, far below 2**63)
MAX_INTEGER = 2**53


def parse_integers(s: pd.Series, missing: tuple[str, ...] = (".",)) -> tuple[pd.Series, pd.Series]:
    """Text -> Int64; bad marks non-empty cells that are not whole numbers."""
    values, bad = parse_numbers(s, missing)
    frac = values.notna() & (values != np.floor(values.fillna(0)))
    # beyond 2**53 a float no longer holds every whole number, and 2**63 overflows Int64
    huge = (values.abs() > MAX_INTEGER).fillna(False)
    bad = bad | frac | huge
    return values.where(~frac & ~huge).round().astype("Int64"), bad


def content_ids(df: pd.DataFrame, columns: list[str], prefix: str) -> pd.Series:
    """Stable ids from row content: ``prefix`` + the first 24 hex digits of md5 over the columns.

    Computed in DuckDB (vectorised); the same content gives the same id in every run,
    so re-ingesting a file is idempotent.
    """
    import duckdb

    if df.empty:
        return pd.Series([], dtype="string", index=df.index)
    sub = pd.DataFrame({f"c{i}": df[c].astype("string").fillna("\x00") for i, c in enumerate(columns)})
    expr = "concat_ws('\x1f', " + ", ".join(f'"c{i}"' for i in range(len(columns))) + ")"
    con = duckdb.connect()
    try:
        con.register("rows_", sub)
        ids = con.execute(f"SELECT '{prefix}' || substr(md5({expr}), 1, 24) AS id FROM rows_").fetchnumpy()["id"]
    finally:
        con.close()
    return pd.Series(np.asarray(ids, dtype=object), index=df.index, dtype="string")


def arrow_strings(s: pd.Series, combine: bool = True) -> pa.Array:
    """The column as a pyarrow text array (zero-copy for Arrow-backed text; one chunk when ``combine``).

    The type is the column's own (pandas keeps text as ``large_string``): not cast, as a cast
    copies the offsets of every value; code that makes a text scalar takes ``arr.type``.
    """
    if not _is_arrow(s):
        s = s.astype("string")
    arr = pa.array(s.array) if _is_arrow(s) else pa.array(s.astype(object).where(s.notna(), None), type=pa.string())
    if combine and isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr


def split_kcs(frame: pd.DataFrame, *, id_col: str, model_cols: dict[str, list[str]], opp_cols: dict[str, str] | None = None) -> pd.DataFrame:
    """attempt_kcs rows from KC cells (``~~`` separates several KCs in one cell).

    ``model_cols`` maps a KC model name to its source column(s); repeated columns of one
    model are unioned. ``opp_cols`` maps a model to a column of opportunity counts split in
    parallel with the KC cell (``1~~3``); where the two cells split into different numbers
    of parts the opportunity is left empty. Vectorised with Arrow list kernels:
    :func:`kc_cells` splits the cells, :func:`kc_frame` names the rows' ids.
    """
    needed = {c for cols in model_cols.values() for c in cols} | set((opp_cols or {}).values())
    cells = kc_cells({c: arrow_strings(frame[c]) for c in needed}, model_cols=model_cols, opp_cols=opp_cols)
    return kc_frame(arrow_strings(frame[id_col]), cells)


def kc_cells(columns: dict[str, pa.Array], *, model_cols: dict[str, list[str]],
             opp_cols: dict[str, str] | None = None) -> list[tuple[str, pa.Table]]:
    """The KCs in the cells of ``columns`` (text arrays of one length), per KC model:
    ``[(model, table of row, kc, opportunity)]``, ``row`` the position of the cell's row.

    Arrow kernels only (they release the GIL), so an adapter can split the KC cells in a
    thread while it checks the rest of the rows; :func:`kc_frame` keeps the rows it loads.
    """
    import pyarrow.compute as pc

    opp_cols = opp_cols or {}
    out = []
    for model, cols in model_cols.items():  # loop over KC models (columns), not rows
        model_parts = []
        needs_dedup = len(cols) > 1
        for c in cols:
            cell = columns[c]
            multi = bool(pc.any(pc.match_substring(cell, "~~")).as_py())
            if multi or model in opp_cols:
                lists = pc.split_pattern(cell, "~~")
                needs_dedup = needs_dedup or multi
                parent = pc.list_parent_indices(lists)
                kc = pc.utf8_trim_whitespace(pc.list_flatten(lists))
            else:  # fast path: one KC per cell
                parent = pa.array(np.flatnonzero(pc.is_valid(cell).to_numpy(zero_copy_only=False)), pa.int64())
                kc = pc.utf8_trim_whitespace(pc.drop_null(cell))
            if model in opp_cols:
                olists = pc.split_pattern(pc.utf8_trim_whitespace(columns[opp_cols[model]]), "~~")
                same = pc.equal(pc.list_value_length(olists), pc.list_value_length(lists))
                same = pc.fill_null(same, False)
                olists = pc.if_else(same, olists, lists)  # same shape as the KC lists; nulled below
                opp_text = pc.list_flatten(olists)
                opp_ok = pc.take(same, parent)
                opp_text = pc.if_else(opp_ok, opp_text, pa.scalar(None, opp_text.type)).cast(pa.large_string())
            else:
                opp_text = pa.nulls(len(kc), pa.large_string())
            kc = kc.cast(pa.large_string())  # one type whatever the source columns are (a no-op for pandas text)
            keep = pc.fill_null(pc.not_equal(kc, ""), False)
            model_parts.append(pa.table({"row": pc.filter(parent, keep).cast(pa.int64()), "kc": pc.filter(kc, keep),
                                         "opportunity": pc.filter(opp_text, keep)}))
        if not model_parts:
            continue
        tab = pa.concat_tables(model_parts)
        if needs_dedup:  # union of repeated columns / repeated KCs in a cell: dedupe on integer keys
            codes = pc.dictionary_encode(tab["kc"]).combine_chunks().indices.to_numpy(zero_copy_only=False).astype(np.int64)
            rows = tab["row"].to_numpy().astype(np.int64)
            key = rows * (int(codes.max()) + 1 if len(codes) else 1) + codes
            _, first = np.unique(key, return_index=True)
            if len(first) < len(key):
                tab = tab.take(pa.array(np.sort(first)))
        out.append((model, tab))
    return out


def kc_frame(ids: pa.Array, cells: list[tuple[str, pa.Table]], keep: np.ndarray | None = None) -> pd.DataFrame:
    """attempt_kcs rows (attempt_id, kc_model, kc, opportunity) of :func:`kc_cells`' output:
    each row's id taken from ``ids`` by its position, only the rows where ``keep`` is true."""
    import pyarrow.compute as pc

    parts = []
    for model, tab in cells:
        if keep is not None and not keep.all():
            tab = tab.filter(pa.array(keep[tab["row"].to_numpy()]))
        part = pa.table({"attempt_id": pc.take(ids, tab["row"]), "kc": tab["kc"], "opportunity": tab["opportunity"]}).to_pandas(
            types_mapper={pa.string(): pd.StringDtype("pyarrow"), pa.large_string(): pd.StringDtype("pyarrow")}.get
        )
        part.insert(1, "kc_model", model)
        parts.append(part)
    if not parts:
        return pd.DataFrame({"attempt_id": pd.Series(dtype="string"), "kc_model": pd.Series(dtype="string"),
                             "kc": pd.Series(dtype="string"), "opportunity": pd.Series(dtype="Int64")})
    out = pd.concat(parts, ignore_index=True)
    if out["opportunity"].notna().any():
        opp, _ = parse_integers(out["opportunity"], missing=())
        out["opportunity"] = opp.where(opp >= 1)
    else:  # no opportunity counts (the usual case): an all-missing column without a per-value NA object
        out["opportunity"] = pd.arrays.IntegerArray(np.zeros(len(out), dtype=np.int64), np.ones(len(out), dtype=bool))
    return out[["attempt_id", "kc_model", "kc", "opportunity"]]


def duplicate_rejects(ids: pd.Series, rows: pd.DataFrame, content_cols: list[str], lines: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Rows whose id repeats an earlier row of the same file.

    ``rows`` holds the content of at least the rows of ``ids`` (by index label); it may be
    the whole frame. Returns ``(is_dup, reason)``: the second and later rows of an id are duplicates; the
    reason says "duplicate of line N" when the row's content (``content_cols``) is the
    same as line N's, else that the id is already used on line N with different content.
    Content is compared only for rows whose id repeats.
    """
    reason = pd.Series(pd.NA, index=ids.index, dtype="string")
    if all_distinct(arrow_strings(ids)):  # fast path: no id repeats
        return pd.Series(False, index=ids.index), reason
    dup = ids.duplicated(keep="first") & ids.notna()
    if dup.any():
        involved = ids.isin(ids[dup].unique())
        sub_ids = ids[involved]
        # by label: ``rows`` may be the whole frame the ids were taken from (no filtered copy)
        content = pd.Series(pd.util.hash_pandas_object(rows.loc[sub_ids.index, content_cols].astype("string"), index=False).to_numpy(), index=sub_ids.index)
        first_line = lines[involved].groupby(sub_ids, sort=False).transform("first")
        first_content = content.groupby(sub_ids, sort=False).transform("first")
        same = content == first_content
        d = dup[involved]
        fl = first_line.astype("Int64").astype("string")
        sub_reason = pd.Series(pd.NA, index=sub_ids.index, dtype="string")
        sub_reason = sub_reason.mask(d & same, "duplicate of line " + fl)
        sub_reason = sub_reason.mask(d & ~same, "id " + quoted(sub_ids) + " already used on line " + fl + " with different content")
        reason.loc[sub_reason.index] = sub_reason
    return dup, reason


def all_distinct(values: pa.Array) -> bool:
    """Whether no value (nulls aside) repeats: DuckDB's parallel hash aggregate, several times
    faster than Arrow's single-threaded unique on a million ids."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("ids_", pa.table({"v": values}))
        return bool(con.execute("SELECT count(DISTINCT v) = count(v) FROM ids_").fetchall()[0][0])
    finally:
        con.close()


def quoted(s: pd.Series) -> pd.Series:
    """'value' for each cell (empty for NA), for reason texts."""
    return "'" + s.astype("string").fillna("") + "'"


class Columns:
    """Cached access to stripped, blank-as-NA source columns (NA when the file lacks the column)."""

    def __init__(self, frame: pd.DataFrame, verbatim: tuple[str, ...] = ()):
        self.frame = frame
        self.verbatim = set(verbatim)  # columns kept as written (learner answers), only "" -> NA
        self._cache: dict[str, pd.Series] = {}

    def __call__(self, name: str) -> pd.Series:
        if name not in self._cache:
            if name in self.frame.columns:
                self._cache[name] = blank_to_na(self.frame[name], strip=name not in self.verbatim)
            else:
                self._cache[name] = pd.Series(pd.NA, index=self.frame.index, dtype="string")
        return self._cache[name]


#: source columns that hold personal identifiers: their values never reach the quarantine
IDENTIFIER_COLUMNS = frozenset({"Anon Student Id", "Session Id", "learner_id", "session_id", "actor", "authority"})


def offending_values(rows: pd.DataFrame, column, identifiers=IDENTIFIER_COLUMNS) -> list:
    """The ``raw`` text of each reject: ``{"column": value}`` of the offending column only.

    Never the whole row: the row may hold a raw learner id in a repeated id column, a
    session id or unmapped columns (a full name). ``None`` when the column is an
    identifier (including repeated ``X.1`` copies of one), is not a column of ``rows``, or
    the value is empty.
    """
    n = len(rows)
    cols = column if isinstance(column, pd.Series) else pd.Series([column] * n, index=rows.index, dtype=object)
    cols = pd.Series(np.asarray(cols, dtype=object), index=rows.index)
    out = pd.Series([None] * n, index=rows.index, dtype=object)
    for c in pd.unique(cols.dropna().to_numpy()):  # a few distinct columns
        base = re.sub(r"\.\d+$", "", str(c))
        if c not in rows.columns or c in identifiers or base in identifiers:
            continue
        mask = (cols == c).to_numpy()
        vals = rows.loc[mask, c]
        out[mask] = _per_distinct(vals.astype(object).where(vals.notna(), None),
                                  lambda v: json.dumps({str(c): v}, ensure_ascii=False) if isinstance(v, str) and v != "" else None)
    return out.tolist()


def _per_distinct(values: pd.Series, fn) -> list:
    """``[fn(v) for v in values]``, calling ``fn`` once per distinct value (rejects of a kind
    repeat a handful of values: a skipped event's blank outcome, one reason text)."""
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=True)
    done = np.array([fn(v) for v in uniques] + [fn(None)], dtype=object)
    return done[codes].tolist()  # code -1 (missing) takes the last entry, fn(None)


class RejectCollector:
    """Accumulates reject frames for one file.

    ``raw`` keeps only the offending value (see :func:`offending_values`); values of
    ``identifiers`` (source column names) are never kept.
    """

    def __init__(self, source_file: str, table_name: str = "attempts", identifiers=()):
        self.source_file = source_file
        self.table_name = table_name
        self.identifiers = IDENTIFIER_COLUMNS | frozenset(identifiers)
        self.parts: list[pd.DataFrame] = []
        #: the file's raw learner ids: a reject whose offending value is one (a shifted column) never shows it
        self.secrets: set[str] = set()

    def keep_secret(self, raw_ids: pd.Series) -> None:
        """Remember the raw learner ids of the file (call before pseudonymising them)."""
        import pyarrow.compute as pc

        # distinct values in Arrow first: a Python string per row of a large file would cost more than the column
        self.secrets |= {str(v).strip() for v in pc.unique(arrow_strings(raw_ids)).drop_null().to_pylist()}

    def add(self, rows: pd.DataFrame, *, line, column, reason, kind: str = "rejected", table_name: str | None = None) -> None:
        if rows is None or rows.empty:
            return
        raw = offending_values(rows, column, self.identifiers)
        if isinstance(line, str):
            line = rows[line]
        out = make_rejects(pd.DataFrame(index=rows.index), table_name=table_name or self.table_name, source_file=self.source_file,
                           line=line, column=column, reason=reason, kind=kind, raw=raw)
        self.parts.append(out)

    def frame(self) -> pd.DataFrame:
        parts = [p for p in self.parts if not p.empty]
        if not parts:
            return empty_rejects()
        out = pd.concat(parts, ignore_index=True)
        if self.secrets:
            out["reason"] = pd.array(_per_distinct(out["reason"], self._scrub), dtype="string")
            raw_bad = np.array(_per_distinct(out["raw"], lambda t: isinstance(t, str) and any(
                str(v).strip() in self.secrets for v in json.loads(t).values())), dtype=bool)
            out.loc[raw_bad, "raw"] = pd.NA
        return out.sort_values("source_line", kind="stable").reset_index(drop=True)

    def _scrub(self, text):
        """Replace a quoted raw learner id in a reason text."""
        if not isinstance(text, str):
            return text
        for value in set(re.findall(r"'([^']*)'", text)):
            if value.strip() in self.secrets:
                text = text.replace(f"'{value}'", "'(a learner id)'")
        return text


def first_reason(conditions: list, index) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Combine reject conditions in priority order: (rejected, column, reason) per row.

    Each condition is ``(mask, column, reason)``; ``reason`` is a string, or a function of
    the rows' boolean mask that returns the reasons for those rows only (so reason text is
    built for the few rejected rows, not for every row of a large file).
    """
    rejected = pd.Series(False, index=index)
    column = pd.Series(pd.NA, index=index, dtype="string")
    reason = pd.Series(pd.NA, index=index, dtype="string")
    for cond, col, why in conditions:
        cond = cond.fillna(False).astype(bool) & ~rejected
        if not cond.any():
            continue
        column = column.mask(cond, col)
        if callable(why):
            why = why(cond)  # reasons for the rows of cond only
            reason.loc[why.index] = why.astype("string")
        elif isinstance(why, str):
            reason = reason.mask(cond, why)
        else:
            reason = reason.mask(cond, why.astype("string"))
        rejected |= cond
    return rejected, column, reason
