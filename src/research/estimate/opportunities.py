"""Student steps and knowledge-component opportunities, the way DataShop defines them.

A *student step* is one learner's work on one step of one item in one problem view: all
its attempts (DataShop transactions) rolled into one row. Its outcome for learning
curves and the AFM is the outcome of the **first attempt** (an incorrect answer or a
hint request counts as an error). Its knowledge components (KCs) per KC model follow
DataShop's rule: the KCs of the step's first *correct* transaction, or, when no
transaction of the step was correct, the union of the KCs of its error (incorrect and
hint) transactions. A step with several KCs counts as an opportunity for each of them.

The *opportunity* of a (learner, KC) pair counts that learner's steps with the KC in time
order, starting at 1, exactly like DataShop's ``Opportunity (model)`` column. The AFM
uses ``opportunity - 1`` (the number of *prior* opportunities) as its regressor, so the
KC intercept is the log-odds of success at the first opportunity.

Everything downstream (learning curves, AFM, curve categories) works on one long frame,
the *student-step KC frame*: one row per student step x KC model x KC, with the step's
columns repeated. Build it from canonical ``attempts`` + ``attempt_kcs`` with
:func:`student_steps`, from any ready student-step table with
:func:`student_steps_from_frame`, or from a DataShop student-step export with
:func:`student_steps_from_datashop`.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from research.errors import DataError, SchemaError
from research.stats import require_columns as _require

__all__ = [
    "count_opportunities", "read_datashop_student_step", "segment_sum", "student_steps", "student_steps_from_frame",
]

#: Columns of the student-step KC frame, in order (``source_opportunity`` only when known).
STEP_COLUMNS = [
    "step_row",
    "learner_id",
    "item_id",
    "step_id",
    "problem_view",
    "step_time",
    "first_attempt",
    "success",
    "incorrects",
    "hints",
    "corrects",
    "assistance",
    "duration_s",
    "kc_model",
    "kc",
    "opportunity",
]

_OUTCOMES = ("correct", "incorrect", "hint")


def _check_outcomes(values: pd.Series, column: str, table: str) -> None:
    bad = ~values.isin(_OUTCOMES)
    if bad.any():
        examples = sorted(set(values[bad].astype(str)))[:5]
        raise DataError(
            f"{table} column {column!r} has outcome(s) {examples} in {int(bad.sum())} row(s); "
            f"valid outcomes are {list(_OUTCOMES)}."
        )


def _strings(values) -> pa.Array:
    """``values`` as one pyarrow ``large_string`` array: zero-copy for pandas text, which Arrow keeps
    as ``large_string`` (a cast to ``string`` would copy every offset, and pandas would copy them
    back when the result becomes a column again)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)) and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        arr = values
    else:
        s = values if isinstance(values, pd.Series) else pd.Series(values)
        if not (isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"):
            s = s.astype("string")
        arr = pa.array(s.array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


def _dictionary(values) -> tuple[np.ndarray, pa.Array]:
    """``(codes, uniques)``: integer codes that sort like ``values``, and the distinct strings sorted.

    Missing values take code ``len(uniques)``, so they sort last (as ``sort_values`` puts
    them). Strings order by code point (UTF-8 byte order), as Python orders them.
    """
    encoded = pc.dictionary_encode(_strings(values))
    uniques = encoded.dictionary
    order = pc.array_sort_indices(uniques).to_numpy()
    rank = np.empty(len(uniques) + 1, dtype=np.int64)
    rank[order] = np.arange(len(uniques), dtype=np.int64)
    rank[-1] = len(uniques)
    indices = encoded.indices.fill_null(len(uniques)).to_numpy(zero_copy_only=False).astype(np.int64)
    return rank[indices], uniques.take(pa.array(order))


def _sort_codes(values) -> np.ndarray:
    """Integer codes that sort like ``values`` (strings in sorted order, missing last)."""
    return _dictionary(values)[0]


def _take_strings(uniques: pa.Array, codes: np.ndarray) -> pd.arrays.ArrowStringArray:
    """The strings of ``codes`` as a pandas ``string`` array; code ``len(uniques)`` is missing."""
    return pd.arrays.ArrowStringArray(pa.concat_arrays([uniques, pa.nulls(1, uniques.type)]).take(pa.array(codes)))


def _attempt_rows(ids: pd.Series, kc_ids, column: str) -> np.ndarray:
    """The position in ``ids`` of each of ``kc_ids`` (-1 where absent); a ``DataError`` when an id
    of ``ids`` (the attempts' ``column``) is missing or repeats. A DuckDB hash join (on every
    core) of the KC rows' ids to the attempts' positions, scattered back into the KC rows' order."""
    import duckdb

    kc_ids = _strings(kc_ids)
    with duckdb.connect() as con:
        con.register("a_", pa.table({"id": _strings(ids), "pos": pa.array(np.arange(len(ids), dtype=np.int64))}))
        if not con.execute("SELECT count(DISTINCT id) = count(id) AND count(id) = count(*) FROM a_").fetchall()[0][0]:
            if ids.isna().any():
                raise DataError(f"attempts column {column!r} has missing values; each attempt needs its own id.")
            raise DataError(f"attempts column {column!r} is not unique (e.g. {ids[ids.duplicated()].iloc[0]!r}); "
                            "each attempt needs its own id.")
        con.register("k_", pa.table({"id": kc_ids, "kpos": pa.array(np.arange(len(kc_ids), dtype=np.int64))}))
        found = con.execute("SELECT k_.kpos, a_.pos FROM k_ JOIN a_ USING (id)").fetchnumpy()
    rows = np.full(len(kc_ids), -1, dtype=np.int64)
    rows[np.asarray(found["kpos"], dtype=np.int64)] = np.asarray(found["pos"], dtype=np.int64)
    return rows


def _segment_time(ts: np.ndarray, starts: np.ndarray, ufunc) -> np.ndarray:
    """Per-segment min or max of datetimes, skipping NaT (NaT when a segment has none)."""
    ints = ts.view("int64")
    nat = np.isnat(ts)
    fill = np.iinfo("int64").max if ufunc is np.minimum else np.iinfo("int64").min + 1
    out = ufunc.reduceat(np.where(nat, fill, ints), starts)
    out[np.add.reduceat((~nat).astype("int64"), starts) == 0] = np.iinfo("int64").min
    return out.view(ts.dtype)


def segment_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per-segment ``Series.sum(min_count=1)``: NaN skipped, NaN when a segment has no value.

    ``starts`` are the first positions of contiguous segments of ``values`` (ascending, 0 first).

    Segments of one length are summed as rows of a 2-D array, which runs numpy's own
    summation loop per row, so the sums are bit for bit those of ``Series.sum``.
    """
    missing = np.isnan(values)
    filled = np.where(missing, 0.0, values)
    lengths = np.diff(np.append(starts, len(values)))
    out = np.empty(len(starts))
    for length in np.unique(lengths):
        which = np.flatnonzero(lengths == length)
        out[which] = filled[starts[which, None] + np.arange(length)].sum(axis=1)
    out[np.add.reduceat((~missing).astype("int64"), starts) == 0] = np.nan
    return out


def _packed(keys: list[np.ndarray], sizes: list[int]) -> np.ndarray | None:
    """The integer ``keys`` (each in ``[0, size)``, most significant first) packed into one
    int64 that sorts like them; None when their sizes do not fit in one."""
    sizes = [max(int(s), 1) for s in sizes]
    if int(np.prod(sizes, dtype=object)) >= 2**62 or any(len(k) and k.min() < 0 for k in keys):
        return None
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    for key, size in zip(keys, sizes):
        packed *= size
        packed += key
    return packed


def _sort_order(keys: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Stable order by integer ``keys`` (most significant first; each in ``[0, size)``).

    One argsort of the packed keys where they fit in an int64 (``np.lexsort`` compares
    every key at every step and is several times slower), else ``np.lexsort``.
    """
    packed = _packed(keys, sizes)
    return np.lexsort(keys[::-1]) if packed is None else np.argsort(packed, kind="stable")


def _run_numbers(keys: list[np.ndarray]) -> np.ndarray:
    """1, 2, ... along each run of equal ``keys`` (rows already in order)."""
    n = len(keys[0])
    new_run = np.ones(n, dtype=bool)
    same = np.ones(max(n - 1, 0), dtype=bool)
    for key in keys:
        same &= key[1:] == key[:-1]
    new_run[1:] = ~same
    starts = np.flatnonzero(new_run)
    return np.arange(n) - starts[np.cumsum(new_run) - 1] + 1


def _opportunity_numbers(keys: list[np.ndarray], time: np.ndarray, row: np.ndarray) -> np.ndarray:
    """1, 2, ... per run of equal ``keys`` (sort codes), counted in ``time`` then ``row`` order."""
    order = np.lexsort((row, time, *keys[::-1]))
    counts = np.empty(len(order), dtype="int64")
    counts[order] = _run_numbers([key[order] for key in keys])
    return counts


def count_opportunities(frame: pd.DataFrame) -> pd.Series:
    """DataShop opportunity numbers for a student-step KC frame.

    ``frame`` needs ``learner_id``, ``kc_model``, ``kc``, ``step_time`` and ``step_row``
    (``step_row`` breaks ties in time and must follow the order of the source). Returns an
    Int64 Series aligned to ``frame``: 1 for a learner's first step with the KC, 2 for the
    second, and so on.
    """
    names = ("learner_id", "kc_model", "kc")
    counts = _opportunity_numbers([_sort_codes(frame[c]) for c in names], frame["step_time"].to_numpy(),
                                  frame["step_row"].to_numpy())
    # rows with a missing key belong to no (learner, KC) pair, as in a groupby
    missing = np.logical_or.reduce([frame[c].isna().to_numpy() for c in names])
    return pd.Series(pd.arrays.IntegerArray(counts, missing), index=frame.index)


#: text columns of a step, kept as sort codes until the output is built
_STEP_TEXT = ("learner_id", "item_id", "step_id", "first_attempt")


def _finish(steps: dict, kcs: dict) -> pd.DataFrame:
    """Join step rows to their KC rows, count opportunities, order rows and columns.

    ``steps`` maps column names to arrays, one entry per student step in ``step_row``
    order (0, 1, ...); ``kcs`` has ``step_row``, ``kc_model``, ``kc`` and optionally
    ``source_opportunity``. Text columns are arrays or ``(codes, uniques)`` from
    :func:`_dictionary`. The rows come out ordered by KC model, learner, step time, step
    and KC, as ``sort_values`` on the text would order them (missing text last).
    """
    text = {c: v if isinstance(v, tuple) else _dictionary(v) for c, v in steps.items() if c in _STEP_TEXT}
    n = len(steps["step_time"])
    row = np.asarray(kcs["step_row"], dtype=np.int64)
    inside = (row >= 0) & (row < n)
    row = row[inside]
    kc_text = {}
    for c in ("kc_model", "kc"):
        codes, uniques = kcs[c] if isinstance(kcs[c], tuple) else _dictionary(kcs[c])
        kc_text[c] = (codes[inside], uniques)
    learner = text["learner_id"][0][row]
    model, kc = kc_text["kc_model"][0], kc_text["kc"][0]
    n_models, n_kcs = len(kc_text["kc_model"][1]) + 1, len(kc_text["kc"][1]) + 1
    # Steps are numbered learner by learner, in time order within a learner (both callers
    # number them so), so ordering by (learner, step time, step) is ordering by step.
    by_kc = _sort_order([model, kc, row], [n_models, n_kcs, n])
    opportunity = np.empty(len(row), dtype=np.int64)
    opportunity[by_kc] = _run_numbers([learner[by_kc], model[by_kc], kc[by_kc]])
    missing = (learner == len(text["learner_id"][1])) | (model == n_models - 1) | (kc == n_kcs - 1)
    order = _sort_order([model, row, kc], [n_models, n, n_kcs])
    take = row[order]
    out = {}
    for c in STEP_COLUMNS:
        if c == "step_row":
            out[c] = take
        elif c in text:
            out[c] = _take_strings(text[c][1], text[c][0][take])
        elif c in kc_text:
            out[c] = _take_strings(kc_text[c][1], kc_text[c][0][order])
        elif c == "opportunity":
            out[c] = pd.arrays.IntegerArray(opportunity[order], missing[order])
        else:
            out[c] = np.asarray(steps[c])[take]
    if "source_opportunity" in kcs:
        out["source_opportunity"] = pd.array(kcs["source_opportunity"], dtype="Int64")[np.flatnonzero(inside)[order]]
    if "source_row" in steps:
        out["source_row"] = np.asarray(steps["source_row"])[take]
    return pd.DataFrame(out)


def student_steps(
    attempts: pd.DataFrame,
    attempt_kcs: pd.DataFrame,
    *,
    learner: str = "learner_id",
    item: str = "item_id",
    step: str = "step_id",
    problem_view: str = "problem_view",
    attempt: str = "attempt",
    outcome: str = "outcome",
    timestamp: str = "timestamp",
    duration: str = "duration_s",
    attempt_id: str = "attempt_id",
    kc_model: str = "kc_model",
    kc: str = "kc",
    source_opportunity: str = "opportunity",
) -> pd.DataFrame:
    """Roll canonical attempts up to student steps with DataShop's KC and opportunity rules.

    Parameters
    ----------
    attempts, attempt_kcs
        Canonical tables (see ``data_schema/attempts.schema.json`` and
        ``attempt_kcs.schema.json``), one cohort. Column names can be changed with the
        keyword arguments. ``problem_view`` and ``duration`` are optional columns.

    Returns
    -------
    DataFrame, one row per student step x KC model x KC:

    step_row : int
        Id of the student step (0, 1, ... in time order within learner).
    learner_id, item_id, step_id : string
    problem_view : int
        Problem view of the step (1 when the attempts do not say).
    step_time : datetime
        DataShop's step time: the time of the step's first correct attempt, else of its
        last attempt. Opportunities are counted in this order (as DataShop does; a step
        left unfinished and solved days later counts when it was solved).
    first_attempt : string
        Outcome of the first attempt: correct, incorrect or hint.
    success : int
        1 when the first attempt was correct, else 0 (DataShop's AFM outcome).
    incorrects, hints, corrects : int
        Counts of the step's attempts by outcome.
    assistance : int
        Assistance score: incorrects + hints.
    duration_s : float
        Sum of the step's attempt durations (NaN when unknown).
    kc_model, kc : string
        The step's KC by DataShop's rule (first correct transaction, else the union of
        the error transactions' KCs). Steps without a KC in a model have no row for it.
    opportunity : Int64
        DataShop opportunity number of this learner and KC (1 = first).
    source_opportunity : Int64
        The source's own opportunity number (``attempt_kcs.opportunity`` of the step's
        first attempt with the KC), when ``attempt_kcs`` has that column.
    """
    _require(
        attempts,
        {"learner": learner, "item": item, "step": step, "attempt": attempt, "outcome": outcome,
         "timestamp": timestamp, "attempt_id": attempt_id},
        "attempts",
    )
    _require(attempt_kcs, {"attempt_id": attempt_id, "kc_model": kc_model, "kc": kc}, "attempt_kcs")
    if attempts.empty:
        raise DataError("attempts is empty: there are no attempts to roll up into student steps.")
    _check_outcomes(attempts[outcome], outcome, "attempts")
    rows = _attempt_rows(attempts[attempt_id], attempt_kcs[attempt_id], attempt_id)
    columns = {"learner": learner, "item": item, "step": step, "problem_view": problem_view, "attempt": attempt,
               "outcome": outcome, "timestamp": timestamp, "duration": duration}
    steps, rolled = _roll_up(_attempt_arrays(attempts, columns))
    kcs = _step_kcs(attempt_kcs, rolled, rows, kc_model=kc_model, kc=kc, source_opportunity=source_opportunity)
    return _finish(steps, kcs)


def _attempt_arrays(attempts: pd.DataFrame, columns: dict[str, str]) -> dict:
    """The attempts' columns as arrays: text as sort codes, outcomes as flags, numbers checked."""
    n = len(attempts)
    a = {name: _dictionary(attempts[columns[name]]) for name in ("learner", "item", "step")}
    pv = columns["problem_view"]
    a["problem_view"] = (pd.to_numeric(attempts[pv], errors="coerce").fillna(1).astype("int64").to_numpy()
                         if pv in attempts.columns else np.ones(n, dtype="int64"))
    a["attempt"] = pd.to_numeric(attempts[columns["attempt"]], errors="coerce").to_numpy(dtype=float)
    if np.isnan(a["attempt"]).any():
        raise DataError(f"attempts column {columns['attempt']!r} has missing or non-numeric values; it must be 1, 2, ... per step.")
    outcome = _strings(attempts[columns["outcome"]])  # checked: correct, incorrect or hint
    for o in _OUTCOMES:
        a[o] = pc.equal(outcome, o).to_numpy(zero_copy_only=False)
    a["timestamp"] = pd.to_datetime(attempts[columns["timestamp"]]).to_numpy()
    duration = columns["duration"]
    a["duration_s"] = (pd.to_numeric(attempts[duration], errors="coerce").to_numpy(dtype=float)
                       if duration in attempts.columns else np.full(n, np.nan))
    return a


def _roll_up(a: dict) -> tuple[dict, dict]:
    """Attempts -> one entry per student step, numbered in time order within learner.

    Transactions within a step are ordered by attempt number, then time, then input order:
    the rows are sorted on those keys and each step's contiguous run is reduced with
    numpy (``reduceat``). Returns the steps' columns for :func:`_finish` and, per attempt
    in input order, its ``step_row``, its place in its step (``within``, 0 = first) and
    whether it was correct.
    """
    learner, item, step = a["learner"][0], a["item"][0], a["step"][0]
    n = len(learner)
    pos = np.arange(n, dtype="int64")
    pv = a["problem_view"]
    # (learner, item, step, problem view) packed into one key where it fits; np.lexsort is stable, so
    # input order breaks the remaining ties
    steps_key = [learner, item, step, pv]
    packed = _packed(steps_key, [len(a["learner"][1]) + 1, len(a["item"][1]) + 1, len(a["step"][1]) + 1, int(pv.max()) + 1])
    order = np.lexsort((a["timestamp"], a["attempt"], *([packed] if packed is not None else steps_key[::-1])))
    new_step = np.zeros(n, dtype=bool)
    new_step[0] = True
    for key in (learner, item, step, pv):
        sorted_key = key[order]
        new_step[1:] |= sorted_key[1:] != sorted_key[:-1]
    starts = np.flatnonzero(new_step)
    step_of = np.cumsum(new_step) - 1
    first = order[starts]
    is_cor, is_inc, is_hint = (a[o][order] for o in ("correct", "incorrect", "hint"))
    ts = a["timestamp"][order]
    first_time = _segment_time(ts, starts, np.minimum)
    correct_time = _segment_time(np.where(is_cor, ts, np.datetime64("NaT")), starts, np.minimum)
    step_time = np.where(np.isnat(correct_time), _segment_time(ts, starts, np.maximum), correct_time)
    # step_row: time order within learner, ties broken by first-attempt time and input order
    by_time = np.lexsort((np.minimum.reduceat(order, starts), first_time, step_time, learner[first]))
    step_row = np.empty(len(starts), dtype="int64")
    step_row[by_time] = np.arange(len(starts), dtype="int64")
    first = first[by_time]
    incorrects = np.add.reduceat(is_inc.astype("int64"), starts)[by_time]
    hints = np.add.reduceat(is_hint.astype("int64"), starts)[by_time]
    success = a["correct"][first].astype("int64")
    # first_attempt as sort codes of correct < hint < incorrect
    outcomes = pa.array(sorted(_OUTCOMES), pa.large_string())
    first_code = np.select([a["correct"][first], a["hint"][first]], [0, 1], 2)
    steps = {
        "learner_id": (learner[first], a["learner"][1]),
        "item_id": (item[first], a["item"][1]),
        "step_id": (step[first], a["step"][1]),
        "problem_view": pv[first],
        "step_time": step_time[by_time],
        "first_attempt": (first_code, outcomes),
        "success": success,
        "incorrects": incorrects,
        "hints": hints,
        "corrects": np.add.reduceat(is_cor.astype("int64"), starts)[by_time],
        "assistance": incorrects + hints,
        "duration_s": segment_sum(a["duration_s"][order], starts)[by_time],
    }
    rolled = {"step_row": np.empty(n, dtype="int64"), "within": np.empty(n, dtype="int64"), "correct": a["correct"]}
    rolled["step_row"][order] = step_row[step_of]
    rolled["within"][order] = pos - starts[step_of]
    return steps, rolled


def _step_kcs(attempt_kcs: pd.DataFrame, rolled: dict, row: np.ndarray, *, kc_model: str, kc: str,
              source_opportunity: str) -> dict:
    """The KCs of each student step by DataShop's rule, one entry per step x KC model x KC.

    The KCs of the step's first correct transaction, or, when none was correct, the union
    of its transactions' KCs. KC rows with a blank KC, no KC model or an attempt not in
    ``attempts`` (``row`` -1: each KC row's attempt, in input order) are left out.
    """
    kc_text = _strings(attempt_kcs[kc])
    keep = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(kc_text), ""), False).to_numpy(zero_copy_only=False)
    model_codes, models = _dictionary(attempt_kcs[kc_model])
    keep &= model_codes < len(models)
    keep &= row >= 0
    sel = np.flatnonzero(keep)
    kc_codes, kcs = _dictionary(kc_text)
    row = row[sel]
    step_row, within, correct = rolled["step_row"][row], rolled["within"][row], rolled["correct"][row]
    model, label = model_codes[sel], kc_codes[sel]
    order = _sort_order([step_row, model, label, within],
                        [len(rolled["correct"]) + 1, len(models) + 1, len(kcs) + 1, int(within.max(initial=0)) + 1])
    step_row, within, correct, model, label = step_row[order], within[order], correct[order], model[order], label[order]
    # first correct transaction of each step and KC model (n: none correct)
    n = len(step_row)
    new = np.ones(n, dtype=bool)
    new[1:] = (step_row[1:] != step_row[:-1]) | (model[1:] != model[:-1])
    starts = np.flatnonzero(new)
    never = np.iinfo("int64").max
    first_correct = np.minimum.reduceat(np.where(correct, within, never), starts)[np.cumsum(new) - 1] if n else within
    chosen = np.where(correct, within == first_correct, first_correct == never)
    # one row per step, model and KC (the rows are sorted on them)
    sel = sel[order][chosen]
    step_row, model, label = step_row[chosen], model[chosen], label[chosen]
    new = np.ones(len(step_row), dtype=bool)
    new[1:] = (step_row[1:] != step_row[:-1]) | (model[1:] != model[:-1]) | (label[1:] != label[:-1])
    starts = np.flatnonzero(new)
    out = {"step_row": step_row[starts], "kc_model": (model[starts], models), "kc": (label[starts], kcs)}
    if source_opportunity in attempt_kcs.columns:
        opp = pd.to_numeric(attempt_kcs[source_opportunity], errors="coerce").to_numpy(dtype=float, na_value=np.nan)[sel]
        # smallest of the step's own numbers for the KC (NaN skipped; NaN when none)
        lowest = np.fmin.reduceat(opp, starts) if len(starts) else opp
        out["source_opportunity"] = pd.array(np.round(lowest), dtype="Float64").astype("Int64")
    return out


def student_steps_from_frame(
    frame: pd.DataFrame,
    *,
    kc_columns: dict[str, str],
    learner: str = "learner_id",
    item: str = "item_id",
    step: str = "step_id",
    success: str | None = None,
    first_attempt: str | None = "first_attempt",
    time: str = "step_time",
    problem_view: str | None = None,
    incorrects: str | None = None,
    hints: str | None = None,
    corrects: str | None = None,
    duration: str | None = None,
    opportunity_columns: dict[str, str] | None = None,
    separator: str = "~~",
) -> pd.DataFrame:
    """Build the student-step KC frame from a ready student-step table (one row per step).

    Parameters
    ----------
    frame
        One row per learner x step (x problem view), in the source's order.
    kc_columns
        ``{kc_model: column}``; a cell holds one KC or several joined by ``separator``;
        empty cells mean the step has no KC in that model.
    success, first_attempt
        Either a 0/1 ``success`` column or a ``first_attempt`` column with outcomes
        correct/incorrect/hint (case-insensitive). ``success`` wins when both are given.
    opportunity_columns
        ``{kc_model: column}`` with the source's own opportunity numbers (kept as
        ``source_opportunity`` for checking); multi-KC cells joined by ``separator``.

    Returns
    -------
    The student-step KC frame described in :func:`student_steps`, plus ``source_row``
    (0-based position of the step's row in ``frame``).
    """
    if not kc_columns:
        raise SchemaError("kc_columns is empty: give at least one {kc_model: column} pair.")
    needed = {"learner": learner, "item": item, "step": step, "time": time}
    needed.update({f"kc_columns[{m!r}]": c for m, c in kc_columns.items()})
    if success is not None:
        needed["success"] = success
    elif first_attempt is not None:
        needed["first_attempt"] = first_attempt
    else:
        raise SchemaError("give the outcome of each step: success=<0/1 column> or first_attempt=<outcome column>.")
    for name, col in (("problem_view", problem_view), ("incorrects", incorrects), ("hints", hints),
                      ("corrects", corrects), ("duration", duration)):
        if col is not None:
            needed[name] = col
    for m, c in (opportunity_columns or {}).items():
        needed[f"opportunity_columns[{m!r}]"] = c
    _require(frame, needed, "the student-step table")
    if frame.empty:
        raise DataError("the student-step table is empty.")
    succ, first = _frame_outcomes(frame, success, first_attempt)
    steps, row_of_pos = _frame_steps(frame, succ, first, learner=learner, item=item, step=step, time=time,
                                     problem_view=problem_view, incorrects=incorrects, hints=hints, corrects=corrects,
                                     duration=duration)
    kcs = _frame_kcs(frame, row_of_pos, kc_columns, opportunity_columns, separator)
    return _finish({c: steps[c] for c in steps.columns}, {c: kcs[c] for c in kcs.columns})


def _frame_outcomes(frame: pd.DataFrame, success: str | None, first_attempt: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``(success, first_attempt)`` per row: from a 0/1 column, or from an outcome column."""
    if success is not None:
        s = pd.to_numeric(frame[success], errors="coerce")
        bad = ~s.isin([0, 1])
        if bad.any():
            raise DataError(
                f"column {success!r} must hold 0 or 1; row {int(np.flatnonzero(bad.to_numpy())[0])} has "
                f"{frame[success].iloc[int(np.flatnonzero(bad.to_numpy())[0])]!r}."
            )
        succ = s.to_numpy(dtype="int64")
        first = np.where(succ == 1, "correct", "incorrect")
    else:
        fa = frame[first_attempt].astype("string").str.strip().str.lower()
        _check_outcomes(fa, first_attempt, "the student-step table")
        first = fa.to_numpy(dtype=object)
        succ = (fa == "correct").to_numpy(dtype="int64")
    return succ, first


def _frame_steps(frame: pd.DataFrame, succ: np.ndarray, first: np.ndarray, *, learner: str, item: str, step: str, time: str,
                 problem_view: str | None, incorrects: str | None, hints: str | None, corrects: str | None,
                 duration: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The steps in time order within learner (``step_row``), and the step row of each row of ``frame``."""
    n = len(frame)

    def _num(col, default):
        if col is None:
            return np.full(n, default, dtype=float)
        return pd.to_numeric(frame[col].replace({".": np.nan}), errors="coerce").to_numpy(dtype=float)

    inc = np.nan_to_num(_num(incorrects, np.nan), nan=0).astype("int64") if incorrects else (first == "incorrect").astype("int64")
    hnt = np.nan_to_num(_num(hints, np.nan), nan=0).astype("int64") if hints else (first == "hint").astype("int64")
    cor = np.nan_to_num(_num(corrects, np.nan), nan=0).astype("int64") if corrects else succ.copy()
    step_time = pd.to_datetime(frame[time], errors="coerce")
    if step_time.isna().any():
        i = int(np.flatnonzero(step_time.isna().to_numpy())[0])
        raise DataError(f"column {time!r} row {i} has {frame[time].iloc[i]!r}, which is not a date-time.")
    pv = _num(problem_view, 1)
    steps = pd.DataFrame(
        {
            "learner_id": frame[learner].astype("string").to_numpy(),
            "item_id": frame[item].astype("string").to_numpy(),
            "step_id": frame[step].astype("string").to_numpy(),
            "problem_view": np.nan_to_num(pv, nan=1).astype("int64"),
            "step_time": step_time.to_numpy(),
            "first_attempt": first,
            "success": succ,
            "incorrects": inc,
            "hints": hnt,
            "corrects": cor,
            "assistance": inc + hnt,
            "duration_s": _num(duration, np.nan),
            "_pos": np.arange(n),
        }
    )
    steps = steps.sort_values(["learner_id", "step_time", "_pos"], kind="stable")
    steps["step_row"] = np.arange(n, dtype="int64")
    row_of_pos = np.empty(n, dtype="int64")
    row_of_pos[steps["_pos"].to_numpy()] = steps["step_row"].to_numpy()
    return steps.rename(columns={"_pos": "source_row"}).reset_index(drop=True), row_of_pos


def _frame_kcs(frame: pd.DataFrame, row_of_pos: np.ndarray, kc_columns: dict[str, str],
               opportunity_columns: dict[str, str] | None, separator: str) -> pd.DataFrame:
    """One row per step row x KC model x KC from the KC cells (several KCs joined by ``separator``)."""
    parts = []
    for model, col in kc_columns.items():
        cells = frame[col].astype("string").str.strip()
        cells = cells.where(~cells.isin(["", "."]))
        kc_lists = cells.str.split(re.escape(separator), regex=True)
        part = pd.DataFrame({"step_row": row_of_pos, "kc": kc_lists.to_numpy(dtype=object)})
        if opportunity_columns and model in opportunity_columns:
            ops = frame[opportunity_columns[model]].astype("string").str.strip().str.split(re.escape(separator), regex=True)
            part["source_opportunity"] = ops.to_numpy(dtype=object)
            part = part[part["kc"].notna()]
            lens_k = part["kc"].map(len).to_numpy()
            lens_o = part["source_opportunity"].map(lambda v: len(v) if isinstance(v, list) else 0).to_numpy()
            part.loc[lens_k != lens_o, "source_opportunity"] = pd.Series(
                [[None] * k for k in lens_k[lens_k != lens_o]], index=part.index[lens_k != lens_o], dtype=object
            )
            part = part.explode(["kc", "source_opportunity"])
            part["source_opportunity"] = pd.to_numeric(part["source_opportunity"], errors="coerce").round().astype("Int64")
        else:
            part = part[part["kc"].notna()].explode("kc")
        part["kc"] = part["kc"].astype("string").str.strip()
        part = part[part["kc"].notna() & (part["kc"] != "")]
        part["kc_model"] = model
        parts.append(part)
    return pd.concat(parts, ignore_index=True).drop_duplicates(["step_row", "kc_model", "kc"])




def datashop_kc_models(columns) -> list[str]:
    """KC model names in a DataShop student-step export's header (``KC (name)`` columns)."""
    out = []
    for c in columns:
        m = re.fullmatch(r"KC \((.+)\)", str(c))
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def student_steps_from_datashop(export: pd.DataFrame, *, kc_models: list[str] | None = None) -> pd.DataFrame:
    """The student-step KC frame from a DataShop student-step export read as text.

    ``export`` is the tab-separated export read with ``dtype=str`` (for example
    ``pd.read_csv(path, sep="\\t", dtype=str, keep_default_na=False)``). Steps are keyed by
    ``Problem Hierarchy`` + ``Problem Name`` + ``Step Name`` (DataShop's step), ordered by
    ``Correct Transaction Time``, else ``Step End Time`` when the step was never correct
    (the order DataShop's own opportunity column follows; checked on ds96 and ds76). DataShop's own ``Opportunity (model)`` is kept
    as ``source_opportunity``. ``kc_models`` picks models; default all in the header.

    Returns
    -------
    The student-step KC frame described in :func:`student_steps`.
    """
    available = datashop_kc_models(export.columns)
    if not available:
        raise SchemaError(
            "this does not look like a DataShop student-step export: it has no 'KC (model)' columns; "
            f"its columns start {list(export.columns)[:8]}."
        )
    models = kc_models or available
    unknown = [m for m in models if m not in available]
    if unknown:
        raise SchemaError(f"KC model(s) {unknown} are not in the export; it has {available}.")
    frame = export.copy()
    # DataShop orders a learner's steps by the time of the step's correct transaction, or
    # its last transaction (Step End Time) when it was never correct.
    time = "_step_time"
    fallbacks = [c for c in ("Correct Transaction Time", "Step End Time", "First Transaction Time", "Step Start Time")
                 if c in frame.columns]
    if not fallbacks:
        raise SchemaError("the DataShop export has no time column (Correct Transaction Time, Step End Time, ...).")
    frame[time] = pd.Series(pd.NA, index=frame.index, dtype="string")
    for c in fallbacks:
        blank = frame[time].isna()
        value = frame[c].astype("string").str.strip()
        frame[time] = frame[time].where(~blank, value.where(~value.isin(["", "."])))
    item = "Problem Name"
    if "Problem Hierarchy" in frame.columns:
        frame["_item"] = frame["Problem Hierarchy"].astype("string") + " / " + frame["Problem Name"].astype("string")
        item = "_item"
    opp = {m: f"Opportunity ({m})" for m in models if f"Opportunity ({m})" in frame.columns}
    return student_steps_from_frame(
        frame,
        kc_columns={m: f"KC ({m})" for m in models},
        learner="Anon Student Id",
        item=item,
        step="Step Name",
        first_attempt="First Attempt",
        time=time,
        problem_view="Problem View" if "Problem View" in frame.columns else None,
        incorrects="Incorrects" if "Incorrects" in frame.columns else None,
        hints="Hints" if "Hints" in frame.columns else None,
        corrects="Corrects" if "Corrects" in frame.columns else None,
        duration="Step Duration (sec)" if "Step Duration (sec)" in frame.columns else None,
        opportunity_columns=opp,
    )


def read_datashop_student_step(path, *, kc_models: list[str] | None = None) -> pd.DataFrame:
    """Read a DataShop student-step export file and return the student-step KC frame."""
    try:
        export = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read it as a tab-separated DataShop export ({exc}).") from exc
    return student_steps_from_datashop(export, kc_models=kc_models)
