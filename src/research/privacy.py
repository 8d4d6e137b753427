"""Small-cell suppression: no figure about a group smaller than the minimum cell size.

Primary suppression hides every cell whose count is below the minimum cell size ``k``.
Complementary suppression then protects it from subtraction: within a set of cells that
add up to a published total (the groups of one attribute), when any cell is hidden, the
next-smallest cells are hidden too until at least two cells are hidden and the hidden
cells together hold at least ``k`` learners. Then neither a single hidden cell nor a
hidden total below ``k`` can be worked out from the total and the visible cells.

Across tables the same holds for the whole report folder: :func:`protect_table` (called by
``Context.write_table``) hides the counts of a new table that, with the tables already
written, would give a group below ``k`` by subtraction; :func:`audit_publication` and
:func:`require_safe_publication` check a finished folder. See "Privacy of the whole report
folder" in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from research.errors import ConfigError, DataError
from research.names import replace_atomically

__all__ = [
    "Cell", "Fact", "PrivacyError", "SUPPRESSED_CELLS", "SUPPRESSION_COLUMN", "Violation", "audit_publication",
    "check_min_cell_size", "count_declarations", "find_violations", "group_sizes", "not_suppressed",
    "protect_group_table", "protect_table", "published_cells", "read_table", "require_safe_publication",
    "suppress_records", "suppress_small_rows", "suppression_mask",
]

PRIMARY = "primary"
COMPLEMENTARY = "complementary"
NOT_STATED = "(not stated)"


def check_min_cell_size(min_cell_size) -> int:
    if isinstance(min_cell_size, bool) or not isinstance(min_cell_size, (int, np.integer)) or min_cell_size < 1:
        raise ConfigError(f"min_cell_size={min_cell_size!r} must be a positive whole number (default 10)")
    return int(min_cell_size)


def suppression_mask(
    counts: pd.Series | Sequence[float], sets: pd.Series | Sequence | None = None, *, min_cell_size: int = 10
) -> pd.Series:
    """Which cells to hide: ``"primary"``, ``"complementary"`` or ``<NA>`` (shown), per cell.

    ``counts`` are the learners in each cell; ``sets`` labels the cells that add up to one
    published total (None: all cells form one set). Vectorised: one sort and group-wise
    cumulative sums, no loop over rows.
    """
    k = check_min_cell_size(min_cell_size)
    c = pd.Series(counts).reset_index(drop=True)
    if not pd.api.types.is_numeric_dtype(c):
        raise DataError(f"counts must be numbers, got dtype {c.dtype}")
    c = c.astype(float)
    if (c < 0).any():
        raise DataError(f"counts must not be negative, got {c[c < 0].iloc[0]}")
    s = pd.Series(["all"] * len(c) if sets is None else list(sets), dtype="object").fillna("(none)")
    frame = pd.DataFrame({"count": c.fillna(0.0), "set": s, "pos": np.arange(len(c))})
    frame = frame.sort_values(["set", "count", "pos"], kind="mergesort")
    grouped = frame.groupby("set", sort=False)["count"]
    frame["order"] = grouped.cumcount() + 1
    frame["cum_before"] = grouped.cumsum() - frame["count"]
    primary = frame["count"] < k
    frame["n_primary"] = primary.groupby(frame["set"]).transform("sum")
    # the smallest cells first: hide while the hidden ones are fewer than the primary ones,
    # fewer than two, or hold fewer than k learners together
    hide = (frame["n_primary"] > 0) & (
        (frame["order"] <= frame["n_primary"]) | (frame["order"] <= 2) | (frame["cum_before"] < k)
    )
    reason = pd.Series(pd.NA, index=frame.index, dtype="string")
    reason[hide & primary] = PRIMARY
    reason[hide & ~primary] = COMPLEMENTARY
    return reason.sort_index().reset_index(drop=True)


def suppress_small_rows(
    out: pd.DataFrame, n_col: str, ids: list[str], min_cell_size: int, what: str = "learners"
) -> pd.DataFrame:
    """Blank every number of the rows whose ``n_col`` is below min_cell_size and give the reason.

    Columns in ``ids`` stay; numeric columns become nullable so the blanks are ``<NA>``; the reason goes
    into ``suppressed_reason``.
    """
    small = out[n_col].to_numpy(dtype=float) < min_cell_size
    reason = pd.array([None] * len(out), dtype="string")
    reason[small] = f"fewer than {min_cell_size} {what}: suppressed to protect privacy"
    value_cols = [col for col in out.columns if col not in ids and col != "suppressed_reason"]
    out = out.copy()
    for col in value_cols:
        if pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].astype("Float64" if not pd.api.types.is_integer_dtype(out[col]) else "Int64")
        out.loc[small, col] = pd.NA
    out["suppressed_reason"] = reason
    return out


def group_sizes(
    learners: pd.DataFrame,
    attributes: Sequence[str] | None = None,
    *,
    learner: str = "learner_id",
    min_cell_size: int = 10,
    out_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Learners per group of each attribute, with small groups suppressed.

    Missing values form their own group ``"(not stated)"`` so that the groups of an
    attribute always add up to the total. With ``out_dir`` (a report folder) the sizes are
    also checked against the tables already published there (:func:`protect_table`: a
    group size minus, say, the group's pre-test takers in ``gains.csv`` must not give a
    small group) and written as ``group_sizes.csv``, so that the report's group table is
    part of the publication the audit sees.

    Returns
    -------
    DataFrame
        ``attribute``, ``group``, ``n`` (learners; empty when hidden), ``share`` (of all
        learners; empty when hidden), ``suppressed_reason`` (``primary``: below
        ``min_cell_size``; ``complementary``: hidden so that a small group cannot be
        derived by subtraction; empty when shown).
    """
    k = check_min_cell_size(min_cell_size)
    if learner not in learners.columns:
        raise DataError(f"learners has no column {learner!r}; columns: {list(learners.columns)}")
    if attributes is None:
        attributes = [c for c in learners.columns if c not in {learner, "cohort"}]
    missing = [a for a in attributes if a not in learners.columns]
    if missing:
        raise DataError(f"learners has no column(s) {missing}; columns: {list(learners.columns)}")
    per = learners.drop_duplicates(learner)
    total = len(per)
    if not attributes:
        return pd.DataFrame(columns=["attribute", "group", "n", "share", "suppressed_reason"])
    long = per[list(attributes)].astype("object").melt(var_name="attribute", value_name="group")
    long["group"] = long["group"].where(long["group"].notna(), NOT_STATED).astype(str)
    counts = long.groupby(["attribute", "group"], sort=True).size().rename("n").reset_index()
    counts["share"] = counts["n"] / total if total else np.nan
    reason = suppression_mask(counts["n"], counts["attribute"], min_cell_size=k)
    counts["suppressed_reason"] = reason.to_numpy()
    hidden = counts["suppressed_reason"].notna().to_numpy()
    counts["n"] = counts["n"].astype("Float64").mask(hidden)
    counts["share"] = counts["share"].astype("Float64").mask(hidden)
    counts["attribute"] = pd.Categorical(counts["attribute"], categories=list(attributes), ordered=True)
    counts = counts.sort_values(["attribute", "group"]).reset_index(drop=True).astype({"attribute": "string"})
    if out_dir is not None:
        protect_table(counts, "group_sizes", out_dir, min_cell_size=k)
        counts.to_csv(Path(out_dir) / "group_sizes.csv", index=False)
    return counts


#: evidence metrics that count learners (a count below k is itself a small group)
COUNT_METRICS = {"drop"}
EVIDENCE_BLOCKS = [
    ("estimate", "se", "ci_low", "ci_high", "n"),
    ("estimate_2", "se_2", "ci_low_2", "ci_high_2", "n_2"),
]


def suppress_records(records: pd.DataFrame, *, min_cell_size: int = 10) -> pd.DataFrame:
    """Hide the evidence of findings about fewer than ``min_cell_size`` learners.

    A finding's evidence figures (estimates, intervals, n) are emptied when its
    ``n_affected``, either ``n`` or a learner count used as evidence (learners who stop on a
    page) is below the minimum cell size; ``suppressed_reason`` says so. The finding
    itself stays in the list (its existence reveals no number).
    """
    k = check_min_cell_size(min_cell_size)
    out = records.copy()
    small = pd.Series(False, index=out.index)
    for col in ("n_affected", "n", "n_2"):
        if col in out.columns:
            small |= pd.to_numeric(out[col], errors="coerce").lt(k).fillna(False)
    for suffix, metric_col in (("", "metric"), ("_2", "metric_2")):
        if metric_col in out.columns:
            is_count = out[metric_col].astype("object").isin(COUNT_METRICS)
            small |= is_count & pd.to_numeric(out[f"estimate{suffix}"], errors="coerce").lt(k).fillna(False)
    if small.any():
        # confidence and reach too: with the priority they would give n_affected back
        cols = [c for block in EVIDENCE_BLOCKS for c in block if c in out.columns] + ["n_affected", "reach", "confidence"]
        for c in cols:
            if c in out.columns:
                out[c] = out[c].mask(small)
        reason = f"fewer than {k} learners (minimum cell size)"
        out["suppressed_reason"] = out.get("suppressed_reason", pd.Series(pd.NA, index=out.index)).astype("object")
        out.loc[small, "suppressed_reason"] = reason
        out["suppressed_reason"] = out["suppressed_reason"].astype("string")
    return out


PRIMARY_REASON = "fewer than {k} learners: suppressed to protect privacy"
COMPLEMENTARY_REASON = "hidden so that a group of fewer than {k} learners cannot be worked out from the total"


def protect_group_table(
    frame: pd.DataFrame,
    *,
    count: str,
    sets: Sequence[str],
    is_total: pd.Series | np.ndarray,
    keep: Sequence[str],
    min_cell_size: int = 10,
    reason: str = "suppressed_reason",
    subcounts: Sequence[str] = (),
) -> pd.DataFrame:
    """Primary and complementary suppression of a table of groups beside their total.

    The rows that are not totals (``is_total`` False) are cells of the sets given by the
    ``sets`` columns (for example module x attribute); each set's cells add up to a
    published total. Cells below ``min_cell_size`` learners (``count``; an already
    emptied count counts as 0) and, by :func:`suppression_mask`, the next-smallest cells
    of the same set are emptied: every column except ``keep`` (ids) and ``reason``
    becomes missing, and ``reason`` says why. ``subcounts`` are counts of parts of a cell
    (for example learners who dropped out): a row where one of them is above 0 and below
    the minimum cell size loses them and every figure derived from them (all columns but ``keep``,
    ``count`` and ``reason``).

    Returns a copy of ``frame``; rows keep their order.
    """
    k = check_min_cell_size(min_cell_size)
    out = frame.copy()
    integer_columns = [c for c in out.columns if pd.api.types.is_integer_dtype(out[c].dtype)]
    total = pd.array(np.asarray(is_total, dtype=object), dtype="boolean").fillna(False).to_numpy(dtype=bool)
    if reason not in out.columns:
        out[reason] = pd.Series(pd.NA, index=out.index, dtype="string")
    out[reason] = out[reason].astype("object")
    values = [c for c in out.columns if c not in set(keep) | {reason}]
    cells = out.loc[~total]
    if len(cells):
        set_key = cells[list(sets)].astype("object").astype(str).agg("\x1f".join, axis=1) if sets else None
        counts = pd.to_numeric(cells[count], errors="coerce").astype("Float64")
        mask = suppression_mask(counts.to_numpy(dtype=float, na_value=np.nan), None if set_key is None else set_key.to_numpy(), min_cell_size=k)
        mask.index = cells.index
        already = (out.loc[cells.index, reason].notna() & counts.isna()).fillna(False)
        primary = cells.index[mask.eq(PRIMARY).fillna(False).to_numpy(dtype=bool) & ~already.to_numpy(dtype=bool)]
        complementary = cells.index[mask.eq(COMPLEMENTARY).fillna(False).to_numpy(dtype=bool)]
        for idx, text in ((primary, PRIMARY_REASON), (complementary, COMPLEMENTARY_REASON)):
            if len(idx):
                out.loc[idx, values] = np.nan
                out.loc[idx, reason] = text.format(k=k)
    if subcounts:
        small = np.zeros(len(out), dtype=bool)
        for col in subcounts:
            part = pd.to_numeric(out[col], errors="coerce")
            small |= (part.lt(k) & part.gt(0)).fillna(False).to_numpy()
        derived = [c for c in values if c != count]
        if small.any():
            out.loc[small, derived] = np.nan
            out.loc[small & out[reason].isna().to_numpy(), reason] = (
                f"parts below {k} learners ({', '.join(subcounts)}): suppressed to protect privacy"
            )
    out[reason] = out[reason].astype("string")
    for c in integer_columns:
        out[c] = out[c].astype("Int64")
    return out


#: The one suppression column of every output table: why a row's figures are empty, "" (or empty) where shown.
SUPPRESSION_COLUMN = "suppressed_reason"


def not_suppressed(df: pd.DataFrame) -> np.ndarray:
    """Rows an estimate module did not suppress: :data:`SUPPRESSION_COLUMN` empty (or no such column)."""
    if SUPPRESSION_COLUMN not in df.columns:
        return np.ones(len(df), dtype=bool)
    reason = df[SUPPRESSION_COLUMN].astype("object")
    return ~(reason.notna() & (reason.astype(str).str.len() > 0)).to_numpy(dtype=bool)


# ----------------------------------------------------------------------------------------
# Privacy of the whole publication: no small count by subtraction across tables
#
# Every learner count an output table publishes is declared in its Table Schema
# (``data_schema/outputs/NAME.schema.json``) with a field property ``learner_count``:
#
#     "learner_count": {
#       "where": [{"dim": "item:{item_id}", "value": "yes"},
#                 {"dim": "{attribute}", "value": "{focal_group}"},
#                 {"dim": "progress", "at_least": "{position}"},
#                 {"dim": "{group_variable}", "value": "{group}", "unless": {"group_variable": "all"}}],
#       "hide_with": ["share"]
#     }
#
# The learner set a cell counts is the conjunction of its ``where`` literals, formatted
# with the row's values: ``value`` literals are categories (two different values of one
# dimension are disjoint sets), ``at_least``/``exactly`` literals are positions on an
# ordered dimension (learners who got at least that far / exactly that far). The empty
# conjunction is the whole cohort. ``hide_with`` names columns that give the count back
# (a share of a published total, a rate): they are emptied with it.
#
# From these sets follow the differences anyone can work out from a report folder:
#
# - a published count itself (primary suppression);
# - a nested pair, A contains B: A - B (funnel steps, pre-only = pre - both, cohort - item);
# - a split of a published total T along one dimension into disjoint published parts:
#   T - sum(parts) (the groups of an attribute, the options of an item, a funnel position
#   and the rest of the funnel after it).
#
# None of these may lie in (0, min_cell_size). ``protect_table`` enforces it when a table is
# written, against every table already in the folder; ``audit_publication`` checks a whole
# folder afterwards.

SUPPRESSED_CELLS = "suppressed_cells.csv"
_CELL_COLUMNS = ["table", "row", "key", "column", "reason"]
_FIELD = re.compile(r"\{([^{}]+)\}")
_INF = float("inf")


class PrivacyError(DataError):
    """A report folder publishes counts from which a small group can be worked out."""


@dataclass(frozen=True)
class Cell:
    """One published learner count: where it is, its value and the learner set it counts."""

    table: str
    row: int  # position of the row in the table (0-based)
    column: str
    key: str  # the row's identifying values, for messages
    value: float
    lits: frozenset  # of (dim, ("c", value)) or (dim, ("r", low, high))

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column}[{self.key}]"


@lru_cache(maxsize=None)
def _schema_json(name: str) -> dict | None:
    from research.paths import schema_dir

    path = schema_dir() / "outputs" / f"{name}.schema.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def count_declarations(name: str) -> dict[str, dict]:
    """The learner counts a table publishes: column -> its ``learner_count`` declaration."""
    schema = _schema_json(name)
    if not schema:
        return {}
    return {f["name"]: f["learner_count"] for f in schema["fields"] if "learner_count" in f}


def _row_key(name: str, row: dict) -> str:
    schema = _schema_json(name) or {}
    keys = schema.get("primaryKey") or [f["name"] for f in schema.get("fields", [])[:2]]
    keys = [keys] if isinstance(keys, str) else keys
    return ", ".join(f"{k}={_canon(row.get(k))}" for k in keys if k in row)


def _canon(value) -> str | None:
    """A value as it reads in a CSV cell: integral numbers without '.0', missing as None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and text.strip().lstrip("+-").replace(".", "", 1).isdigit() else text


def _format(template: str, row: dict, *, blank_ok: bool = False) -> str | None:
    """``template`` with ``{column}`` replaced by the row's values; None when one is missing
    (unless ``blank_ok``: dimension names such as ``time:{page}:{item_id}`` at page level)."""
    missing = False

    def sub(match):
        nonlocal missing
        value = _canon(row.get(match.group(1)))
        if value is None:
            missing = True
            return ""
        return value

    out = _FIELD.sub(sub, template)
    return None if missing and not blank_ok else out


def _literals(spec: dict, row: dict) -> frozenset | None:
    """The learner set of one cell, or None when the row does not say (a missing key)."""
    lits = {}
    for lit in spec.get("where", []):
        unless = lit.get("unless", {})
        if any(_canon(row.get(col)) == str(val) for col, val in unless.items()):
            continue
        dim = _format(lit["dim"], row, blank_ok=True)
        if "value" in lit:
            value = _format(lit["value"], row)
            if value is None:
                return None
            lits[dim] = ("c", value)
        else:
            raw = _format(lit.get("at_least", lit.get("exactly", "")), row)
            if raw is None:
                return None
            low = float(raw)
            lits[dim] = ("r", low, _INF if "at_least" in lit else low)
    return frozenset(lits.items())


def table_cells(frame: pd.DataFrame, name: str) -> list[Cell]:
    """The learner counts ``frame`` (table ``name``) publishes: its non-empty declared cells."""
    decl = count_declarations(name)
    if not decl or frame is None or not len(frame):
        return []
    cols = [c for c in decl if c in frame.columns]
    numbers = {c: pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy() for c in cols}
    records = frame.to_dict("records")
    cells = []
    for i, row in enumerate(records):
        key = None
        for col in cols:
            value = numbers[col][i]
            if np.isnan(value):
                continue
            lits = _literals(decl[col], row)
            if lits is None:
                continue
            key = key if key is not None else _row_key(name, row)
            cells.append(Cell(name, i, col, key, float(value), lits))
    return cells


def read_table(path: Path) -> pd.DataFrame:
    """A published CSV as the reader sees it (text cells, empty = missing)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


#: The cells of each CSV read so far, by path and a hash of its bytes: every table a notebook
#: writes is checked against the folder, so a process parses each unchanged table once.
_CELLS: dict[Path, tuple[bytes, list[Cell]]] = {}
_CELLS_MAX = 256


def _file_cells(path: Path, name: str) -> list[Cell]:
    try:
        data = path.read_bytes()
    except OSError:
        return []
    digest = hashlib.blake2b(data, digest_size=16).digest()
    known = _CELLS.get(path)
    if known is not None and known[0] == digest:
        return known[1]
    try:
        cells = table_cells(pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""]), name)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        cells = []
    if len(_CELLS) >= _CELLS_MAX:
        _CELLS.clear()
    _CELLS[path] = (digest, cells)
    return cells


def published_cells(folder: str | Path, *, exclude: Sequence[str] = ()) -> list[Cell]:
    """Every declared learner count in the CSV tables of a report folder."""
    cells: list[Cell] = []
    for path in sorted(Path(folder).glob("*.csv")):
        name = path.stem
        if name in exclude or not count_declarations(name):
            continue
        cells += _file_cells(path.resolve(), name)
    return cells


# -- finding the derivable differences ------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A published number about one learner set (the same set and value in several cells is one fact)."""

    lits: frozenset
    value: float


@dataclass
class Violation:
    kind: str  # "count", "pair", "split"
    facts: tuple  # of Fact: the total first, then the parts
    difference: float


def _contains(outer: tuple, inner: tuple) -> bool:
    """Literal constraint ``outer`` holds for every learner that ``inner`` holds for."""
    if outer[0] == "c":
        return inner == outer
    return inner[0] == "r" and outer[1] <= inner[1] and inner[2] <= outer[2]


def _index_key(lits) -> tuple:
    cat = tuple(sorted((d, c) for d, c in lits if c[0] == "c"))
    ordered = tuple(sorted(d for d, c in lits if c[0] == "r"))
    return cat, ordered


def find_violations(facts: Sequence[Fact], min_cell_size: int) -> list[Violation]:
    """Every published count, nested pair and one-dimension split whose difference is in (0, k)."""
    k = check_min_cell_size(min_cell_size)
    out: list[Violation] = []
    small = lambda d: 0 < d < k - 1e-9  # noqa: E731
    for f in facts:
        if small(f.value):
            out.append(Violation("count", (f,), f.value))
    # nested pairs: for B, every A whose literals are a subset of B's (ranges widened)
    index: dict[tuple, list[Fact]] = {}
    for f in facts:
        index.setdefault(_index_key(f.lits), []).append(f)
    lows: dict[tuple, list[float]] = {}
    for key, group in index.items():
        if len(key[1]) == 1:  # one ordered dimension: sort by its lower end, look up by bisection
            group.sort(key=lambda f: dict(f.lits)[key[1][0]][1])
            lows[key] = [dict(f.lits)[key[1][0]][1] for f in group]
    seen = set()
    for b in facts:
        blits = dict(b.lits)
        names = sorted(blits)  # never the frozenset's (hash-seeded) order: the same cells are hidden on every run
        for size in range(len(names) + 1):
            for subset in combinations(names, size):
                sub = [(d, blits[d]) for d in subset]
                cat = tuple(sorted((d, c) for d, c in sub if c[0] == "c"))
                ordered = tuple(sorted(d for d, c in sub if c[0] == "r"))
                group = index.get((cat, ordered), ())
                if (cat, ordered) in lows:
                    group = group[: bisect_right(lows[(cat, ordered)], blits[ordered[0]][1])]
                for a in group:
                    if a is b:
                        continue
                    alits = dict(a.lits)
                    if not all(_contains(alits[d], blits[d]) for d in ordered):
                        continue
                    if a.lits == b.lits:
                        pair = frozenset((a, b))
                        if pair in seen:
                            continue
                        seen.add(pair)
                        hi, lo = (a, b) if a.value >= b.value else (b, a)
                        if small(hi.value - lo.value):
                            out.append(Violation("pair", (hi, lo), hi.value - lo.value))
                    elif small(a.value - b.value):
                        out.append(Violation("pair", (a, b), a.value - b.value))
    # splits: T and its parts that differ from it in one dimension only
    parts_of: dict[tuple, list[Fact]] = {}
    dims_of: dict[frozenset, set] = {}
    for p in facts:
        for d, c in p.lits:
            base = p.lits - {(d, c)}
            parts_of.setdefault((base, d), []).append(p)
            dims_of.setdefault(base, set()).add(d)
    for t in facts:
        tlits = dict(t.lits)
        splits = [(t.lits, d) for d in sorted(dims_of.get(t.lits, ())) if d not in tlits]
        splits += [(t.lits - {(d, c)}, d) for d, c in sorted(t.lits, key=repr) if c[0] == "r"]
        for base, d in splits:
            parts = [p for p in parts_of.get((base, d), ()) if p.lits != t.lits]
            if d in tlits:
                parts = [p for p in parts if _contains(tlits[d], dict(p.lits)[d])]
            if len(parts) < 2:
                continue
            for family, rest in _split_rests(t.value, parts, d, dict(parts[0].lits)[d][0]):
                if small(rest):
                    out.append(Violation("split", (t, *family()), rest))
    return out


def _split_rests(total: float, parts: list[Fact], d: str, kind: str):
    """(family, total - sum(family)) for every maximal collection of pairwise disjoint parts.

    Categories: all values together. Ordered: all single positions, and each range with
    the single positions outside it (prefix sums: no quadratic loop over long funnels).
    ``family`` is a function that builds the list, called only for a violation.
    """
    values: dict = {}
    for p in parts:
        values.setdefault(dict(p.lits)[d], p)  # one fact per set; differing values of one set are pairs
    if kind == "c":
        family = list(values.values())
        if len(family) >= 2:
            yield (lambda: family), total - sum(p.value for p in family)
        return
    singles = sorted(((c[1], p) for c, p in values.items() if c[1] == c[2]), key=lambda x: x[0])
    positions = [x for x, _ in singles]
    prefix = np.concatenate([[0.0], np.cumsum([p.value for _, p in singles])]) if singles else np.zeros(1)
    if len(singles) >= 2:
        yield (lambda: [p for _, p in singles]), total - prefix[-1]
    for c, p in values.items():
        if c[1] == c[2]:
            continue
        lo, hi = bisect_left(positions, c[1]), bisect_right(positions, c[2])
        if len(singles) - (hi - lo) < 1:
            continue
        outside = prefix[-1] - (prefix[hi] - prefix[lo])
        yield (lambda p=p, lo=lo, hi=hi: [p] + [s for _, s in singles[:lo]] + [s for _, s in singles[hi:]]), total - p.value - outside


# -- suppression when a table is written ----------------------------------------------------

_ORDER = {"count": 0, "pair": 1, "split": 2}


def _facts(cells: Sequence[Cell]) -> dict[Fact, list[Cell]]:
    facts: dict[Fact, list[Cell]] = {}
    for c in cells:
        facts.setdefault(Fact(c.lits, c.value), []).append(c)
    return facts


def choose_hidden(
    published: Sequence[Cell], new: Sequence[Cell], *, min_cell_size: int = 10
) -> tuple[dict[Cell, str], list[Violation]]:
    """Which of the ``new`` cells to hide so that, with ``published`` fixed, nothing small is derivable.

    Greedy: while a published count, nested pair or split gives a difference in (0, k),
    hide one new cell of it: the one whose declaration has the lowest ``keep`` (how much
    readers need it; default 0), then the most specific (most literals: a total outlives
    its parts), then the one in most such relations, then the smaller.
    Hiding every new cell always succeeds, so this ends with no violation among the
    new cells. Returns the hidden cells with their reasons, and violations that involve
    published cells only (those the folder already had; an audit reports them).
    """
    k = check_min_cell_size(min_cell_size)
    facts = _facts(list(published) + list(new))
    new_ids = {id(c) for c in new}
    hideable = {f for f, cells in facts.items() if all(id(c) in new_ids for c in cells)}
    keep = {f: max(count_declarations(c.table).get(c.column, {}).get("keep", 0) for c in cells) for f, cells in facts.items()}
    labels = {f: cells[0].label for f, cells in facts.items()}
    visible = dict.fromkeys(facts)  # ordered as the cells are: ties are broken the same way on every run
    hidden: dict[Fact, str] = {}
    stuck: list[Violation] = []
    for _ in range(10_000):
        violations = find_violations(list(visible), k)
        if not violations:
            break
        score: dict[Fact, int] = {}
        for v in violations:
            for f in v.facts:
                score[f] = score.get(f, 0) + 1
        done: set[Fact] = set()
        stuck = []
        for v in sorted(violations, key=lambda v: _ORDER[v.kind]):
            if any(f in done for f in v.facts):
                continue
            options = [f for f in v.facts if f in hideable]
            if not options:
                stuck.append(v)
                continue
            pick = options[0] if v.kind == "count" else max(options, key=lambda f: (-keep[f], len(f.lits), score[f], -f.value))
            visible.pop(pick, None)
            done.add(pick)
            shown = [labels[f] for f in v.facts[:4]]
            relation = " - ".join(shown) + (f" - {len(v.facts) - 4} more" if len(v.facts) > 4 else "")
            hidden[pick] = (
                f"fewer than {k} learners: suppressed to protect privacy" if v.kind == "count" else
                f"hidden so that fewer than {k} learners cannot be worked out by subtraction ({relation})"
            )
        if not done:
            break
    out = {}
    for f, reason in hidden.items():
        for c in facts[f]:
            out[c] = reason
    return out, stuck


def _neutral(text: str) -> str:
    """A CSV cell that a spreadsheet does not run as a formula (OWASP: prefix with ')."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def protect_table(frame: pd.DataFrame, name: str, out_dir: str | Path, *, min_cell_size: int = 10) -> pd.DataFrame:
    """Hide the learner counts of ``frame`` that would, with the tables already in ``out_dir``,
    let anyone work out a group of fewer than ``min_cell_size`` learners.

    The hook of :meth:`research.notebook.Context.write_table`: call it before the table is
    written. Tables already in the folder are published (their notebook's HTML shows
    them) and are never changed; only cells of the new table are emptied, together with
    the columns its schema lists under ``hide_with``. ``frame`` is changed in place (so
    the notebook shows and plots the published figures) and returned. Every emptied
    cell is recorded in ``suppressed_cells.csv`` with its reason; a table written again
    replaces its earlier rows there.
    """
    k = check_min_cell_size(min_cell_size)
    folder = Path(out_dir)
    decl = count_declarations(name)
    record = folder / SUPPRESSED_CELLS
    rows = []
    new = table_cells(frame, name)
    if new:
        hidden, _ = choose_hidden(published_cells(folder, exclude=[name]), new, min_cell_size=k)
        by_column: dict[str, list[int]] = {}
        for cell, reason in sorted(hidden.items(), key=lambda item: (item[0].row, item[0].column)):
            for col in [cell.column, *decl[cell.column].get("hide_with", [])]:
                if col in frame.columns:
                    by_column.setdefault(col, []).append(cell.row)
            rows.append({"table": name, "row": cell.row + 1, "key": _neutral(cell.key), "column": cell.column, "reason": reason})
        for col, positions in by_column.items():
            mask = np.zeros(len(frame), dtype=bool)
            mask[positions] = True
            series = frame[col]
            if pd.api.types.is_integer_dtype(series.dtype):
                series = series.astype("Int64")
            elif pd.api.types.is_bool_dtype(series.dtype):
                series = series.astype("boolean")
            elif not pd.api.types.is_float_dtype(series.dtype):
                series = series.astype("object")
            frame[col] = series.mask(mask)
    if record.is_file() or rows:
        before = pd.read_csv(record, dtype=str, keep_default_na=False) if record.is_file() else pd.DataFrame(columns=_CELL_COLUMNS)
        before = before[before["table"] != name]
        after = pd.concat([before, pd.DataFrame(rows, columns=_CELL_COLUMNS).astype(str)], ignore_index=True)
        # by table, each table's cells in the order they were chosen: the same file in whatever order the tables came
        after = after.sort_values("table", kind="stable", ignore_index=True)
        folder.mkdir(parents=True, exist_ok=True)
        replace_atomically(record, lambda tmp: after.to_csv(tmp, index=False))
    return frame


# -- checking a whole folder ------------------------------------------------------------------


def audit_publication(folder: str | Path, *, min_cell_size: int = 10) -> pd.DataFrame:
    """Every difference in (0, min_cell_size) that the CSV tables of ``folder`` let anyone work out.

    Returns one row per finding: ``kind`` (``count``, ``pair`` or ``split``),
    ``difference`` and ``relation`` (the cells subtracted, ``table.column[key]``). Empty
    when the publication is safe. For developers and tests; never publish it.
    """
    k = check_min_cell_size(min_cell_size)
    facts = _facts(published_cells(folder))
    labels = {f: cells[0].label for f, cells in facts.items()}
    rows = [
        {"kind": v.kind, "difference": v.difference, "relation": " - ".join(labels[f] for f in v.facts)}
        for v in find_violations(list(facts), k)
    ]
    return pd.DataFrame(rows, columns=["kind", "difference", "relation"])


def require_safe_publication(folder: str | Path, *, min_cell_size: int = 10) -> None:
    """Raise :class:`PrivacyError` when ``folder`` lets anyone work out a group below the minimum cell size.

    The pipeline calls this on a run's folder before it replaces the last report: a
    table written without :meth:`~research.notebook.Context.write_table` (and so
    without :func:`protect_table`) stops the run instead of being published.
    """
    found = audit_publication(folder, min_cell_size=min_cell_size)
    if len(found):
        first = "; ".join(found["relation"].head(5))
        raise PrivacyError(
            f"{folder}: {len(found)} group(s) of fewer than {min_cell_size} learners can be worked out by subtracting "
            f"published counts (first: {first}); the report is not published. Every table must be written with "
            f"Context.write_table so that research.privacy.protect_table can hide them."
        )
