"""DataShop transaction exports (tab-delimited, one row per transaction) -> attempts + attempt_kcs.

Mapping
-------
=====================  ==========================================================
DataShop column        canonical column
=====================  ==========================================================
Anon Student Id        ``learner_id`` (pseudonymised before anything else)
Transaction Id         ``attempt_id`` (when absent or blank: ``tx_`` + md5 of the
                       row's content, so a re-ingest gives the same id)
Session Id             ``session_id``, pseudonymised (``s_`` + keyed hash)
Time + Time Zone       ``timestamp`` in UTC, timezone-naive. ``Time`` is local time
                       in ``Time Zone`` (IANA names such as ``US/Eastern``, or
                       UTC/GMT/EST/PST...). A blank zone uses option
                       ``default_time_zone`` (default ``"UTC"``); an unknown zone
                       name rejects the row (column ``Time Zone``).
Level (X) ...          ``module`` / ``page``, see *Levels* below
Problem Name           ``item_id``
Step Name              ``step_id`` (blank -> the problem name)
Problem View           ``problem_view``
Attempt At Step        ``attempt`` (blank on a graded row -> counted per learner,
                       problem, step and problem view in time order)
Outcome                ``outcome``, see *Outcomes* below
Input                  ``response``
Duration (sec)         ``duration_s`` (``.`` = missing)
KC (model)             ``attempt_kcs`` rows with ``kc_model`` = model; cells are
                       split on ``~~``; repeated ``KC (model)`` columns (DataShop
                       writes multi-skill steps that way) are unioned.
=====================  ==========================================================

``KC Category (...)``, ``CF (...)`` and the other columns are not mapped.

Levels
    DataShop writes the curriculum hierarchy as ``Level (type)`` columns, outermost
    first; type names may repeat (``Level (Container)`` x3 in Torus-era OLI exports), so the
    header is read by position, never by name. With one level, ``module`` is that level
    and ``page`` is empty. With two or more, ``page`` is the innermost (last) level and
    ``module`` the level that contains it (second-to-last). Option
    ``module_level="path"`` makes ``module`` the whole path above the page joined with
    `` / `` instead (unique when module titles repeat across units), and
    ``module_level="first"`` the outermost level.

Outcomes
    DataShop's Outcome is the tutor's evaluation of the transaction. Mapped
    (case-insensitive): ``CORRECT`` -> correct; ``INCORRECT``, ``ERROR``, ``BUG`` ->
    incorrect; ``HINT``, ``INITIAL_HINT``, ``HINT_LEVEL_CHANGE`` -> hint. A blank outcome or
    ``UNGRADED`` marks an event that is not an attempt (page views, saves, hint requests
    the tutor did not answer): the row becomes a reject of kind ``skipped`` with the
    Student Response Type in the reason. Any other value is rejected with the list of
    known values.

Every attempts row carries ``source_file`` (the file name) and ``source_line`` (the
1-based line; the header is line 1). Rows that cannot be mapped become rejects with the
line, column and reason; two rows with the same Transaction Id keep the first and reject
the others ("duplicate of line N", or "... with different content"). Malformed lines (fewer
or more fields than the header, e.g. a truncated last line) are rejected with their line.
For every file ``n_read == len(attempts) + len(rejects)``.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from research.errors import ConfigError
from research.ingest import _common as C
from research.ingest.base import IngestResult

__all__ = ["MODULE_LEVELS", "NAME", "OPTIONS", "OUTCOMES", "check_options", "read", "sniff"]

NAME = "datashop"
WHAT = "DataShop transaction export"

REQUIRED = ["Anon Student Id", "Problem Name", "Time", "Outcome"]
OPTIONAL = [
    "Row", "Transaction Id", "Session Id", "Time Zone", "Duration (sec)", "Student Response Type",
    "Problem View", "Step Name", "Attempt At Step", "Input", "Selection", "Action",
]

OUTCOMES = {
    "CORRECT": "correct",
    "INCORRECT": "incorrect",
    "ERROR": "incorrect",
    "BUG": "incorrect",
    "HINT": "hint",
    "INITIAL_HINT": "hint",
    "HINT_LEVEL_CHANGE": "hint",
}
NOT_ATTEMPTS = {"UNGRADED"}  # plus a blank outcome

OPTIONS = {"module_level", "default_time_zone", "course_version", "encoding"}
MODULE_LEVELS = ("parent", "path", "first")

_KC = re.compile(r"^KC \((.+)\)$")
_LEVEL = re.compile(r"^Level \((.+)\)$")


def sniff(path: Path, head: str) -> bool:
    first = head.split("\n", 1)[0]
    fields = {f.strip().strip('"') for f in re.split(r"[\t,;]", first)}
    return {"Anon Student Id", "Outcome", "Time"} <= fields and "First Attempt" not in fields


def check_options(options: dict | None, allowed: set[str], fmt: str) -> dict:
    options = dict(options or {})
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(map(repr, unknown))} for format {fmt!r}; valid options: {', '.join(sorted(allowed))}")
    return options


def levels_to_module_page(levels: list[pd.Series], how: str, index) -> tuple[pd.Series, pd.Series]:
    """module and page from the hierarchy levels (outermost first), by the rule in the module docstring."""
    if how not in MODULE_LEVELS:
        raise ConfigError(f"unknown module_level {how!r}; valid values: {', '.join(MODULE_LEVELS)}")
    na = pd.Series(pd.NA, index=index, dtype="string")
    if not levels:
        return na, na
    levels = [C.blank_to_na(s) for s in levels]
    if len(levels) == 1:
        return levels[0], na
    page = levels[-1]
    above = levels[:-1]
    if how == "parent":
        module = above[-1]
    elif how == "first":
        module = above[0]
    else:
        module = above[0].fillna("")
        for s in above[1:]:
            module = module + " / " + s.fillna("")
        module = module.str.strip(" /")
        module = module.mask(module == "")
    return module, page


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None) -> IngestResult:
    path = Path(path)
    options = check_options(options, OPTIONS, NAME)
    encoding = options.get("encoding", "utf-8")
    header, names = C.tab_header(path, encoding, REQUIRED, WHAT)
    level_cols, kc_models = _hierarchy_and_kc_columns(header, names)
    kc_cols = [c for cols in kc_models.values() for c in cols]
    usecols = REQUIRED + [c for c in OPTIONAL if c in names] + level_cols + kc_cols

    d = C.read_delimited(path, delimiter="\t", header=header, usecols=usecols, encoding=encoding)
    f = d.frame
    with ThreadPoolExecutor(1) as pool:
        # the KC cells are split in Arrow (no GIL) while the rest of the rows are checked
        cells = pool.submit(C.kc_cells, {c: C.arrow_strings(f[c]) for c in kc_cols}, model_cols=kc_models)
        att, ok, attempt_id, rejects = _checked_attempts(path, d, cohort, pseudonymiser, options, level_cols, usecols)
        kcs = C.kc_frame(C.arrow_strings(attempt_id), cells.result(), keep=ok.to_numpy())
    kcs.insert(0, "cohort", C.text_constant(cohort, len(kcs), kcs.index))
    return C.attempts_result(path, NAME, d.n_read, att, kcs, rejects)


def _checked_attempts(path: Path, d: C.Delimited, cohort: str, pseudonymiser, options: dict, level_cols: list[str],
                      usecols: list[str]) -> tuple[pd.DataFrame, pd.Series, pd.Series, C.RejectCollector]:
    """The attempts of the rows that pass, which rows those are, every row's attempt id and the rejects."""
    f = d.frame
    # pseudonymise first: nothing below, rejects included, ever sees a raw id
    secret_ids = C.blank_to_na(f["Anon Student Id"])
    f["Anon Student Id"] = pseudonymiser.series(secret_ids)
    line = pd.Series(d.line, index=f.index, dtype="int64")
    rejects = C.RejectCollector(path.name)
    rejects.keep_secret(secret_ids)

    col = C.Columns(f, verbatim=("Input", "Transaction Id", "Session Id"))
    v = _parse_values(f, col, options)
    # a row that is not an attempt is skipped before anything else is checked
    skipped = v["not_attempt"] & f["Anon Student Id"].notna()
    conditions = _reject_conditions(f, col, v, [c for c in usecols if c != "Anon Student Id"])
    rejected, rcol, rreason = C.first_reason([(~skipped & c, name, why) for c, name, why in conditions], f.index)
    if skipped.any():
        _reject_skipped(rejects, f, col, skipped, line)

    # ---- ids and duplicates among the rows that are otherwise fine
    attempt_id = _attempt_ids(f, col, ~skipped & ~rejected, rejected, rcol, rreason, line)
    rejects.add(f[rejected], line=line[rejected], column=rcol[rejected], reason=rreason[rejected])
    ok = ~skipped & ~rejected

    # ---- malformed lines
    bad_rows = C.bad_line_rows(d, learner_col="Anon Student Id", pseudonymiser=pseudonymiser)
    if not bad_rows.empty:
        rejects.add(bad_rows, line=bad_rows["_line"], column=bad_rows["_column"], reason=bad_rows["_reason"])

    att = _attempts(f, col, v, attempt_id, line, ok, level_cols, cohort=cohort, pseudonymiser=pseudonymiser,
                    options=options, source_file=path.name)
    return att, ok, attempt_id, rejects


def _hierarchy_and_kc_columns(header: list[str], names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The ``Level (...)`` columns (outermost first) and ``{kc_model: [KC columns]}``, by position in the header."""
    level_cols = [n for n, h in zip(names, header) if _LEVEL.match(h)]
    kc_models: dict[str, list[str]] = {}
    for n, h in zip(names, header):
        m = _KC.match(h)
        if m:
            kc_models.setdefault(m.group(1).strip(), []).append(n)
    return level_cols, kc_models


def _parse_values(f: pd.DataFrame, col: C.Columns, options: dict) -> dict[str, pd.Series]:
    """The mapped values of every row, with a flag per value that could not be read."""
    v = {"raw_outcome": col("Outcome")}
    v["outcome"], v["not_attempt"] = _outcomes(v["raw_outcome"])
    v["unknown_outcome"] = ~v["not_attempt"] & v["outcome"].isna()
    v["local"] = C.parse_timestamps(col("Time"))
    zones = col("Time Zone") if "Time Zone" in f.columns else None
    v["timestamp"], v["bad_zone"] = C.localize_to_utc(v["local"], zones, options.get("default_time_zone", "UTC"))
    v["problem_view"], v["bad_pv"] = C.parse_integers(col("Problem View"))
    v["attempt"], v["bad_attempt"] = C.parse_integers(col("Attempt At Step"))
    v["duration"], v["bad_duration"] = C.parse_numbers(col("Duration (sec)"))
    v["item"] = col("Problem Name")
    v["step"] = col("Step Name").fillna(v["item"])
    return v


def _outcomes(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(outcome, not_attempt)``: the canonical outcome of each Outcome (case-insensitive; NA when
    unknown or not an attempt), and whether it marks an event that is not an attempt. In Arrow: a
    lookup in the few known values, no Python call per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = pc.utf8_upper(C.arrow_strings(raw))
    known = list(OUTCOMES)
    outcome = pc.take(pa.array([OUTCOMES[k] for k in known], pa.large_string()),
                      pc.index_in(key, value_set=pa.array(known, key.type)))
    not_attempt = pc.or_kleene(pc.is_null(key), pc.is_in(key, value_set=pa.array(sorted(NOT_ATTEMPTS), key.type)))
    return (pd.Series(pd.arrays.ArrowStringArray(outcome), index=raw.index),
            pd.Series(not_attempt.to_numpy(zero_copy_only=False), index=raw.index))


def _reject_conditions(f: pd.DataFrame, col: C.Columns, v: dict, checked: list[str]) -> list:
    """``(mask, column, reason)`` of every way a row can be rejected, in priority order."""
    too_long, too_long_col = C.overlong(f, checked)
    known = ", ".join(sorted(OUTCOMES)) + " (and blank or UNGRADED for events that are not attempts)"
    quoted = C.quoted
    raw_outcome = v["raw_outcome"]
    return [
        (f["Anon Student Id"].isna(), "Anon Student Id", "missing learner id"),
        (v["unknown_outcome"], "Outcome", lambda m: "unknown outcome " + quoted(raw_outcome[m]) + "; known values: " + known),
        (v["item"].isna(), "Problem Name", "missing problem name"),
        (col("Time").isna(), "Time", "missing timestamp"),
        (v["local"].isna(), "Time", lambda m: "cannot parse timestamp " + quoted(col("Time")[m]) + "; expected e.g. 2024-02-16 05:34:51"),
        (v["bad_zone"], "Time Zone", lambda m: "unknown time zone " + quoted(col("Time Zone")[m]) + "; use an IANA name such as Europe/Stockholm or US/Eastern, or UTC"),
        (v["bad_pv"] | (v["problem_view"] < 1).fillna(False), "Problem View", lambda m: "Problem View " + quoted(col("Problem View")[m]) + " is not a whole number >= 1"),
        (v["bad_attempt"] | (v["attempt"] < 1).fillna(False), "Attempt At Step", lambda m: "Attempt At Step " + quoted(col("Attempt At Step")[m]) + " is not a whole number >= 1"),
        (v["bad_duration"] | (v["duration"] < 0).fillna(False), "Duration (sec)", lambda m: "Duration (sec) " + quoted(col("Duration (sec)")[m]) + " is not a number >= 0 ('.' means missing)"),
        (too_long, too_long_col.fillna(""), lambda m: "a value of more than " + f"{C.MAX_FIELD_CHARS:,}" + " characters in " + quoted(too_long_col[m])),
    ]


def _reject_skipped(rejects: C.RejectCollector, f: pd.DataFrame, col: C.Columns, skipped: pd.Series, line: pd.Series) -> None:
    """Events that are not attempts go to quarantine as ``skipped``, with the Student Response Type in the reason."""
    srt = col("Student Response Type")[skipped].fillna("not given")
    ro = col("Outcome")[skipped]
    why = "not an attempt: Outcome is " + ro.isna().map({True: "blank", False: ""}).astype("string").where(ro.isna(), C.quoted(ro))
    # the quarantine keeps the offending value only: take that column, not the whole rows
    rejects.add(f.loc[skipped, ["Outcome"]], line=line[skipped], column="Outcome", reason=why + " (Student Response Type " + srt + ")", kind="skipped")


def _attempt_ids(f: pd.DataFrame, col: C.Columns, ok: pd.Series, rejected: pd.Series, rcol: pd.Series, rreason: pd.Series,
                 line: pd.Series) -> pd.Series:
    """Transaction Id, or a hash of the row's content where it is blank; a repeated id rejects
    the later rows (``rejected``, ``rcol`` and ``rreason`` are updated in place)."""
    content_cols = [c for c in f.columns if c != "Row"]
    attempt_id = col("Transaction Id").copy()
    need_hash = ok & attempt_id.isna()
    if need_hash.any():
        attempt_id[need_hash] = C.content_ids(f[need_hash], content_cols, "tx_")
    dup, dup_reason = C.duplicate_rejects(attempt_id[ok], f, content_cols, line[ok])  # f whole: no copy of the rows
    dup_idx = dup[dup].index
    rejected[dup_idx] = True
    rcol[dup_idx] = "Transaction Id" if "Transaction Id" in f.columns else pd.NA
    rreason[dup_idx] = dup_reason[dup_idx]
    return attempt_id


def _attempts(f: pd.DataFrame, col: C.Columns, v: dict, attempt_id: pd.Series, line: pd.Series, ok: pd.Series,
              level_cols: list[str], *, cohort: str, pseudonymiser, options: dict, source_file: str) -> pd.DataFrame:
    """The attempts table of the rows that passed."""
    module, page = levels_to_module_page([f[c] for c in level_cols], options.get("module_level", "parent"), f.index)
    n = len(f)
    att = pd.DataFrame(
        {
            "cohort": C.text_constant(cohort, n, f.index),
            "attempt_id": attempt_id,
            "learner_id": f["Anon Student Id"],
            "course_version": C.text_constant(options.get("course_version"), n, f.index),
            "session_id": pseudonymiser.sessions(col("Session Id")),
            "module": module,
            "page": page,
            "item_id": v["item"],
            "step_id": v["step"],
            "problem_view": v["problem_view"],
            "attempt": v["attempt"],
            "outcome": v["outcome"],
            "response": col("Input"),
            "timestamp": v["timestamp"],
            "duration_s": v["duration"],
            "source_file": C.text_constant(source_file, n, f.index),
            "source_line": line,
        },
        index=f.index,
    )
    if not ok.all():
        att = att[ok]
    return _fill_missing_attempts(att)


def _fill_missing_attempts(att: pd.DataFrame) -> pd.DataFrame:
    """Number attempts the source left blank: count per learner, problem, step and view in time order."""
    missing = att["attempt"].isna()
    if not missing.any():
        return att
    order = att.sort_values(["timestamp", "source_line"], kind="stable")
    keys = [order["learner_id"], order["item_id"], order["step_id"], order["problem_view"].astype("string").fillna("")]
    counted = order.groupby(keys, sort=False, dropna=False).cumcount() + 1
    att = att.copy()
    att.loc[missing, "attempt"] = counted.reindex(att.index)[missing].astype("Int64")
    return att
