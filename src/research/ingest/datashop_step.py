"""DataShop student-step exports (one row per learner x step x problem view) -> attempts + attempt_kcs.

A student-step row is a rollup: it says what the first attempt was (``First Attempt``)
and how many incorrect attempts, hints and correct attempts the step took in all
(``Incorrects``, ``Hints``, ``Corrects``; these totals include the first attempt). It does
**not** record the order of the later attempts, so each row is expanded into attempts in
this documented canonical order:

1. attempt 1: the First Attempt outcome (correct / incorrect / hint);
2. then the remaining incorrect attempts;
3. then the remaining hints;
4. then the remaining correct attempts (normally the one final correct answer).

Timestamps: attempt 1 is at ``First Transaction Time`` (``Step Start Time`` when that is
blank); the last attempt is at ``Correct Transaction Time`` (else ``Step End Time``, else
the first time); attempts in between are spaced evenly between the two. Student-step
exports carry no time zone; times are taken as UTC unless option ``time_zone`` names the
zone they were written in. ``Step Duration (sec)`` is divided evenly over the step's
attempts (so per-learner time on task sums to DataShop's). Option ``date_format`` gives a
strptime format when the times are in neither ISO form nor DataShop's US form
(``2/1/1996 0:00``).

Other columns: ``Anon Student Id`` -> ``learner_id`` (pseudonymised first); ``Problem
Hierarchy`` (``Unit u2, Section nc``) -> ``module`` / ``page`` by the rule of
:mod:`research.ingest.datashop_tx` (innermost level = page, the one above = module; the
level type word - ``Unit``, ``Section`` - is dropped); ``Problem Name`` -> ``item_id``;
``Step Name`` -> ``step_id``; ``Problem View`` -> ``problem_view``. ``attempt_id`` is
``ss_`` + md5 of (learner, hierarchy, problem, view, step) + ``_`` + the attempt number,
stable across re-ingests.

KCs: every ``KC (m)`` column gives ``attempt_kcs`` rows for model ``m`` on **every**
attempt of the step; multi-KC cells are split on ``~~`` and ``Opportunity (m)`` is split in
parallel into the ``opportunity`` column (DataShop counts opportunities per student-step,
so all attempts of a step share it; where the two cells have different numbers of parts
the opportunity is left empty). ``Predicted Error Rate (m)`` is not mapped.

Rejects: a row that cannot be mapped is rejected whole (line, column, reason), e.g. a
First Attempt that is not correct/incorrect/hint, counts that are not whole numbers >= 0,
a First Attempt its count contradicts, a missing learner/problem/time. A repeated
student-step (same learner, hierarchy, problem, view and step) is rejected as a duplicate
of the first line. Here ``n_read`` counts student-step rows: ``n_read == number of
student-steps expanded + len(rejects)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from research.errors import ConfigError
from research.ingest import _common as C
from research.ingest.base import IngestResult
from research.ingest.datashop_tx import MODULE_LEVELS, check_options

__all__ = ["NAME", "OPTIONS", "read", "sniff"]

NAME = "datashop-step"
WHAT = "DataShop student-step export"
REQUIRED = ["Anon Student Id", "Problem Name", "Step Name", "First Attempt", "Incorrects", "Hints", "Corrects", "First Transaction Time"]
OPTIONAL = ["Row", "Problem Hierarchy", "Problem View", "Step Start Time", "Correct Transaction Time", "Step End Time", "Step Duration (sec)"]
FIRST_ATTEMPTS = ("correct", "incorrect", "hint")
OPTIONS = {"module_level", "time_zone", "course_version", "encoding", "date_format"}

#: most attempts of one kind (Incorrects, Hints or Corrects) one student-step may count:
#: every attempt becomes a row, so 300,000,000 would allocate gigabytes
MAX_ATTEMPTS_PER_STEP = 10_000
#: most attempts one file may expand to (about 2 GB of attempts rows)
MAX_ATTEMPTS_PER_FILE = 20_000_000

_KC = re.compile(r"^KC \((.+)\)$")


def sniff(path: Path, head: str) -> bool:
    first = head.split("\n", 1)[0]
    fields = {f.strip().strip('"') for f in re.split(r"[\t,;]", first)}
    return {"Anon Student Id", "First Attempt", "Step Name"} <= fields


def hierarchy_to_module_page(h: pd.Series, how: str) -> tuple[pd.Series, pd.Series]:
    """``Unit u2, Section nc`` -> module ``u2``, page ``nc`` (see the module docstring)."""
    if how not in MODULE_LEVELS:
        raise ConfigError(f"unknown module_level {how!r}; valid values: {', '.join(MODULE_LEVELS)}")
    parts = h.astype(object).where(h.notna(), None).str.split(", ")
    names = parts.map(lambda ps: [p.split(" ", 1)[1] if " " in p else p for p in ps] if isinstance(ps, list) else None)
    n = names.str.len()
    last = names.str[-1]
    single = n == 1
    if how == "parent":
        above = names.str[-2]
    elif how == "first":
        above = names.str[0]
    else:
        above = names.str[:-1].str.join(" / ")
    module = above.where(~single, last)
    page = last.where(~single, None)
    to_s = lambda s: C.blank_to_na(pd.Series(s, index=h.index).astype("string"))  # noqa: E731
    return to_s(module), to_s(page)


def _kc_columns(header: list[str], names: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """KC model -> its ``KC (model)`` columns, and model -> its ``Opportunity (model)`` column."""
    kc_models: dict[str, list[str]] = {}
    opp_cols: dict[str, str] = {}
    for n, h in zip(names, header):
        m = _KC.match(h)
        if m:
            model = m.group(1).strip()
            kc_models.setdefault(model, []).append(n)
            if f"Opportunity ({model})" in names:
                opp_cols[model] = f"Opportunity ({model})"
    return kc_models, opp_cols


def _step_counts(col: C.Columns, index: pd.Index):
    """First Attempt (lower case), the Incorrects/Hints/Corrects counts (0 where bad or implausible), and the
    masks of bad counts, implausibly many attempts and a First Attempt its own count contradicts."""
    first = col("First Attempt").str.lower()
    counts = {}
    bad_counts = pd.Series(False, index=index)
    too_many = pd.Series(False, index=index)
    for name in ("Incorrects", "Hints", "Corrects"):
        v, bad = C.parse_integers(col(name))
        bad = bad | (v < 0).fillna(False) | v.isna()
        huge = ~bad & (v > MAX_ATTEMPTS_PER_STEP).fillna(False)
        counts[name] = v.fillna(0).astype("int64").where(~bad & ~huge, 0)
        bad_counts |= bad
        too_many |= huge
    own = {"incorrect": "Incorrects", "hint": "Hints", "correct": "Corrects"}
    contradicts = pd.Series(False, index=index)
    for outcome, name in own.items():
        contradicts |= (first == outcome).fillna(False) & (counts[name] < 1)
    return first, counts, bad_counts, too_many, contradicts


def _step_times(col: C.Columns, options: dict) -> tuple[pd.Series, pd.Series]:
    """Each step's first and last transaction time in UTC (the step's start and end where they are missing)."""
    t_first = C.parse_timestamps(col("First Transaction Time"), options.get("date_format"))
    t_start = C.parse_timestamps(col("Step Start Time"), options.get("date_format"))
    t0 = t_first.fillna(t_start)
    t_end = C.parse_timestamps(col("Correct Transaction Time"), options.get("date_format"))
    t_end = t_end.fillna(C.parse_timestamps(col("Step End Time"), options.get("date_format"))).fillna(t0)
    t_end = t_end.where(t_end >= t0, t0)
    tz = options.get("time_zone", "UTC")
    if C._tz_for(tz) is None:
        raise ConfigError(f"unknown time_zone {tz!r}; use an IANA name such as Europe/Stockholm, or UTC")
    t0, _ = C.localize_to_utc(t0, None, tz)
    t_end, _ = C.localize_to_utc(t_end, None, tz)
    return t0, t_end


def _expand_attempts(ok: pd.Series, counts: dict, first: pd.Series, t0: pd.Series, t_end: pd.Series, step_key: pd.Series,
                     f: pd.DataFrame, col: C.Columns, line: pd.Series, problem_view: pd.Series, duration: pd.Series, *,
                     path: Path, cohort: str, options: dict) -> tuple[pd.DataFrame, pd.Series]:
    """Each kept student-step as its attempts (vectorised with np.repeat): first the First Attempt, then the
    rest of the incorrects, hints and the corrects, spread evenly between the step's first and last time.
    Returns the attempts and each attempt's step key."""
    idx = np.flatnonzero(ok.to_numpy())
    inc = counts["Incorrects"].to_numpy()[idx]
    hin = counts["Hints"].to_numpy()[idx]
    cor = counts["Corrects"].to_numpy()[idx]
    fa = first.to_numpy(dtype=object, na_value=None)[idx]
    n = inc + hin + cor
    if int(n.sum()) > MAX_ATTEMPTS_PER_FILE:
        from research.errors import DataError

        raise DataError(
            f"{path.name}: its counts (Incorrects + Hints + Corrects) add up to {int(n.sum()):,} attempts, more than the "
            f"{MAX_ATTEMPTS_PER_FILE:,} one student-step file may expand to; check the counts, or split the file"
        )
    rem_inc = inc - (fa == "incorrect")
    rem_hint = hin - (fa == "hint")
    rows = np.repeat(idx, n)
    starts = np.repeat(np.cumsum(n) - n, n)
    k = np.arange(len(rows)) - starts  # 0-based position within the step
    r_inc = np.repeat(rem_inc, n)
    r_hint = np.repeat(rem_hint, n)
    n_rep = np.repeat(n, n)
    outcome = np.where(k <= r_inc, "incorrect", np.where(k <= r_inc + r_hint, "hint", "correct")).astype(object)
    outcome[k == 0] = np.repeat(fa, n)[k == 0]
    t0v = t0.to_numpy()[rows]
    t1v = t_end.to_numpy()[rows]
    frac = np.where(n_rep > 1, k / np.maximum(n_rep - 1, 1), 0.0)
    ts = t0v + ((t1v - t0v).astype("timedelta64[us]").astype(np.int64) * frac).astype("timedelta64[us]")
    module, page = hierarchy_to_module_page(col("Problem Hierarchy"), options.get("module_level", "parent"))
    take = lambda s: s.iloc[rows].reset_index(drop=True)  # noqa: E731
    keys = take(step_key)
    attempt_no = pd.Series(k + 1, dtype="Int64")
    att = pd.DataFrame(
        {
            "cohort": cohort,
            "attempt_id": keys + "_" + attempt_no.astype("string"),
            "learner_id": take(f["Anon Student Id"]),
            "course_version": options.get("course_version"),
            "module": take(module),
            "page": take(page),
            "item_id": take(col("Problem Name")),
            "step_id": take(col("Step Name")),
            "problem_view": take(problem_view),
            "attempt": attempt_no,
            "outcome": pd.Series(outcome, dtype="string"),
            "timestamp": pd.Series(ts, dtype="datetime64[us]"),
            "duration_s": take(duration).to_numpy() / np.maximum(n_rep, 1),
            "source_file": path.name,
            "source_line": take(line).astype("Int64"),
        }
    )
    return att, keys


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None) -> IngestResult:
    path = Path(path)
    options = check_options(options, OPTIONS, NAME)
    encoding = options.get("encoding", "utf-8")
    header, names = C.tab_header(path, encoding, REQUIRED, WHAT)
    kc_models, opp_cols = _kc_columns(header, names)
    usecols = REQUIRED + [c for c in OPTIONAL if c in names] + [c for cs in kc_models.values() for c in cs] + list(opp_cols.values())

    d = C.read_delimited(path, delimiter="\t", header=header, usecols=usecols, encoding=encoding)
    f = d.frame
    secret_ids = C.blank_to_na(f["Anon Student Id"])
    f["Anon Student Id"] = pseudonymiser.series(secret_ids)
    line = pd.Series(d.line, index=f.index, dtype="int64")
    col = C.Columns(f)
    rejects = C.RejectCollector(path.name)
    rejects.keep_secret(secret_ids)
    quoted = C.quoted

    first, counts, bad_counts, too_many, contradicts = _step_counts(col, f.index)
    too_long, too_long_col = C.overlong(f, [c for c in usecols if c != "Anon Student Id"])
    t0, t_end = _step_times(col, options)
    problem_view, bad_pv = C.parse_integers(col("Problem View"))
    duration, bad_duration = C.parse_numbers(col("Step Duration (sec)"))

    conditions = [
        (f["Anon Student Id"].isna(), "Anon Student Id", "missing learner id"),
        (col("Problem Name").isna(), "Problem Name", "missing problem name"),
        (~first.isin(list(FIRST_ATTEMPTS)).fillna(False), "First Attempt",
         lambda m: "unknown First Attempt " + quoted(col("First Attempt")[m]) + "; known values: correct, incorrect, hint"),
        (bad_counts, "Incorrects", lambda m: "Incorrects/Hints/Corrects " + quoted(col("Incorrects")[m]) + "/" + quoted(col("Hints")[m]) + "/" + quoted(col("Corrects")[m]) + " are not whole numbers >= 0"),
        (too_many, "Incorrects", lambda m: "Incorrects/Hints/Corrects " + quoted(col("Incorrects")[m]) + "/" + quoted(col("Hints")[m]) + "/" + quoted(col("Corrects")[m])
         + f" count more than {MAX_ATTEMPTS_PER_STEP:,} attempts at one step; each attempt becomes a row, so such a count is refused as implausible"),
        (too_long, too_long_col.fillna(""), lambda m: "a value of more than " + f"{C.MAX_FIELD_CHARS:,}" + " characters in " + quoted(too_long_col[m])),
        (contradicts, "First Attempt", lambda m: "First Attempt " + quoted(first[m]) + " but its count (Incorrects/Hints/Corrects) is 0"),
        (t0.isna() & col("First Transaction Time").isna() & col("Step Start Time").isna(), "First Transaction Time", "missing timestamp (First Transaction Time and Step Start Time are blank)"),
        (t0.isna(), "First Transaction Time", lambda m: "cannot parse timestamp " + quoted(col("First Transaction Time")[m].fillna(col("Step Start Time")[m])) + "; expected e.g. 2007-05-18 20:21:07 or 2/1/1996 0:00"),
        (bad_pv | (problem_view < 1).fillna(False), "Problem View", lambda m: "Problem View " + quoted(col("Problem View")[m]) + " is not a whole number >= 1"),
        (bad_duration | (duration < 0).fillna(False), "Step Duration (sec)", lambda m: "Step Duration (sec) " + quoted(col("Step Duration (sec)")[m]) + " is not a number >= 0"),
    ]
    rejected, rcol, rreason = C.first_reason(conditions, f.index)

    key_cols = ["Anon Student Id", "Problem Hierarchy", "Problem Name", "Problem View", "Step Name"]
    key_frame = pd.DataFrame({c: col(c) for c in key_cols})
    step_key = pd.Series(pd.NA, index=f.index, dtype="string")
    ok = ~rejected
    if ok.any():
        step_key[ok] = C.content_ids(key_frame[ok], key_cols, "ss_")
    dup, dup_reason = C.duplicate_rejects(step_key[ok], f[ok], [c for c in f.columns if c != "Row"], line[ok])
    dup_idx = dup[dup].index
    rejected[dup_idx] = True
    rcol[dup_idx] = "Step Name"
    rreason[dup_idx] = dup_reason[dup_idx]
    rejects.add(f[rejected], line=line[rejected], column=rcol[rejected], reason=rreason[rejected])
    bad_rows = C.bad_line_rows(d, learner_col="Anon Student Id", pseudonymiser=pseudonymiser)
    if not bad_rows.empty:
        rejects.add(bad_rows, line=bad_rows["_line"], column=bad_rows["_column"], reason=bad_rows["_reason"])
    ok = ~rejected

    att, keys = _expand_attempts(ok, counts, first, t0, t_end, step_key, f, col, line, problem_view, duration,
                                 path=path, cohort=cohort, options=options)
    # ---- KCs per step, then onto every attempt of the step
    kc_read = [c for cs in kc_models.values() for c in cs] + list(opp_cols.values())
    step_kcs = C.split_kcs(pd.DataFrame({"step_key": step_key[ok]}).join(f.loc[ok, kc_read]), id_col="step_key", model_cols=kc_models, opp_cols=opp_cols)
    step_kcs = step_kcs.rename(columns={"attempt_id": "step_key"})
    kcs = pd.DataFrame({"step_key": keys, "attempt_id": att["attempt_id"]}).merge(step_kcs, on="step_key", how="inner", sort=False)
    kcs = kcs.drop(columns="step_key")
    kcs.insert(0, "cohort", cohort)
    return C.attempts_result(path, NAME, d.n_read, att, kcs, rejects)
