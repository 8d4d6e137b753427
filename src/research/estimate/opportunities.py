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


def _sort_codes(values: pd.Series) -> np.ndarray:
    """Integer codes that sort like ``values`` (strings in sorted order, missing last)."""
    codes, uniques = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(uniques), codes)


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


def count_opportunities(frame: pd.DataFrame) -> pd.Series:
    """DataShop opportunity numbers for a student-step KC frame.

    ``frame`` needs ``learner_id``, ``kc_model``, ``kc``, ``step_time`` and ``step_row``
    (``step_row`` breaks ties in time and must follow the order of the source). Returns an
    Int64 Series aligned to ``frame``: 1 for a learner's first step with the KC, 2 for the
    second, and so on.
    """
    names = ("learner_id", "kc_model", "kc")
    keys = [_sort_codes(frame[c]) for c in names]
    order = np.lexsort((frame["step_row"].to_numpy(), frame["step_time"].to_numpy(), *keys[::-1]))
    n = len(order)
    new_run = np.ones(n, dtype=bool)
    same = np.ones(max(n - 1, 0), dtype=bool)
    for key in keys:
        sorted_key = key[order]
        same &= sorted_key[1:] == sorted_key[:-1]
    new_run[1:] = ~same
    starts = np.flatnonzero(new_run)
    counts = np.empty(n, dtype="int64")
    counts[order] = np.arange(n) - starts[np.cumsum(new_run) - 1] + 1
    out = pd.array(counts, dtype="Int64")
    # rows with a missing key belong to no (learner, KC) pair, as in a groupby
    out[np.logical_or.reduce([frame[c].isna().to_numpy() for c in names])] = pd.NA
    return pd.Series(out, index=frame.index)


def _finish(steps: pd.DataFrame, kcs: pd.DataFrame) -> pd.DataFrame:
    """Join step rows to their KC rows, count opportunities, order columns."""
    # steps.step_row is 0, 1, ... in row order, so the join is a take.
    if not np.array_equal(steps["step_row"].to_numpy(), np.arange(len(steps))):
        raise AssertionError("steps must be numbered 0, 1, ... in row order")
    kcs = kcs[kcs["step_row"].isin(steps["step_row"])].reset_index(drop=True)
    joined = steps.drop(columns="step_row").iloc[kcs["step_row"].to_numpy()].reset_index(drop=True)
    out = pd.concat([kcs, joined], axis=1)
    out["opportunity"] = count_opportunities(out)
    cols = STEP_COLUMNS + [c for c in ("source_opportunity", "source_row") if c in out.columns]
    out = out[cols].sort_values(["kc_model", "learner_id", "step_time", "step_row", "kc"], kind="stable")
    for c in ("learner_id", "item_id", "step_id", "kc_model", "kc", "first_attempt"):
        out[c] = out[c].astype("string")
    return out.reset_index(drop=True)


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
    if attempts[attempt_id].duplicated().any():
        dup = attempts.loc[attempts[attempt_id].duplicated(), attempt_id].iloc[0]
        raise DataError(f"attempts column {attempt_id!r} is not unique (e.g. {dup!r}); each attempt needs its own id.")

    a = pd.DataFrame(
        {
            "attempt_id": attempts[attempt_id].astype("string").array,
            "learner_id": attempts[learner].astype("string").array,
            "item_id": attempts[item].astype("string").array,
            "step_id": attempts[step].astype("string").array,
            "problem_view": (
                pd.to_numeric(attempts[problem_view], errors="coerce").fillna(1).astype("int64").to_numpy()
                if problem_view in attempts.columns
                else np.ones(len(attempts), dtype="int64")
            ),
            "attempt": pd.to_numeric(attempts[attempt], errors="coerce").to_numpy(dtype=float),
            "outcome": attempts[outcome].astype("string").array,
            "timestamp": pd.to_datetime(attempts[timestamp]).to_numpy(),
            "duration_s": (
                pd.to_numeric(attempts[duration], errors="coerce").to_numpy(dtype=float)
                if duration in attempts.columns
                else np.full(len(attempts), np.nan)
            ),
        }
    )
    if np.isnan(a["attempt"]).any():
        raise DataError(f"attempts column {attempt!r} has missing or non-numeric values; it must be 1, 2, ... per step.")
    # Order of transactions within a step: attempt number, then time, then input order.
    # Vectorised: sort on factorised keys (codes follow the strings' sorted order, missing
    # last, as sort_values puts them), then aggregate each step's contiguous run of rows.
    n = len(a)
    pos = np.arange(n, dtype="int64")
    codes = [_sort_codes(a[c]) for c in ("learner_id", "item_id", "step_id")]
    pv = a["problem_view"].to_numpy()
    order = np.lexsort((pos, a["timestamp"].to_numpy(), a["attempt"].to_numpy(), pv, codes[2], codes[1], codes[0]))
    a = a.iloc[order].reset_index(drop=True)
    a["_pos"] = order
    keys = [c[order] for c in codes] + [pv[order]]
    new_step = np.zeros(n, dtype=bool)
    new_step[0] = True
    for key in keys:
        new_step[1:] |= key[1:] != key[:-1]
    starts = np.flatnonzero(new_step)
    step_of = np.cumsum(new_step) - 1
    a["_order"] = pos - starts[step_of]
    # outcomes take three values (checked above): compare their codes, not the strings
    codes, uniques = pd.factorize(a["outcome"])
    position = {str(u): i for i, u in enumerate(uniques)}
    is_cor, is_inc, is_hint = (codes == position.get(o, -2) for o in ("correct", "incorrect", "hint"))
    ts = a["timestamp"].to_numpy()
    steps = a.iloc[starts][["learner_id", "item_id", "step_id", "problem_view"]].reset_index(drop=True)
    steps["_first_time"] = _segment_time(ts, starts, np.minimum)
    steps["_last_time"] = _segment_time(ts, starts, np.maximum)
    steps["_correct_time"] = _segment_time(np.where(is_cor, ts, np.datetime64("NaT")), starts, np.minimum)
    steps["first_attempt"] = a["outcome"].iloc[starts].to_numpy(dtype=object)
    steps["incorrects"] = np.add.reduceat(is_inc.astype("int64"), starts)
    steps["hints"] = np.add.reduceat(is_hint.astype("int64"), starts)
    steps["corrects"] = np.add.reduceat(is_cor.astype("int64"), starts)
    steps["duration_s"] = segment_sum(a["duration_s"].to_numpy(), starts)
    steps["_pos"] = np.minimum.reduceat(order, starts)
    steps["step_time"] = steps["_correct_time"].fillna(steps["_last_time"])
    # step_row: time order within learner, ties broken by first-attempt time and input order.
    by_time = np.lexsort((steps["_pos"].to_numpy(), steps["_first_time"].to_numpy(), steps["step_time"].to_numpy(),
                          keys[0][starts]))
    step_row = np.empty(len(steps), dtype="int64")
    step_row[by_time] = np.arange(len(steps), dtype="int64")
    a["step_row"] = step_row[step_of]
    steps = steps.iloc[by_time].reset_index(drop=True)
    steps["step_row"] = np.arange(len(steps), dtype="int64")
    steps["success"] = (steps["first_attempt"] == "correct").astype("int64")
    steps["assistance"] = steps["incorrects"] + steps["hints"]
    steps = steps.drop(columns=["_pos", "_first_time", "_last_time", "_correct_time"])

    k = pd.DataFrame(
        {
            "attempt_id": attempt_kcs[attempt_id].astype("string").array,
            "kc_model": attempt_kcs[kc_model].astype("string").array,
            "kc": attempt_kcs[kc].astype("string").array,
        }
    )
    if source_opportunity in attempt_kcs.columns:
        k["source_opportunity"] = pd.to_numeric(attempt_kcs[source_opportunity], errors="coerce").astype("Float64").to_numpy()
    k = k[k["kc"].notna() & (k["kc"].str.strip() != "")]
    row = pd.Index(a["attempt_id"]).get_indexer(k["attempt_id"])
    k = k[row >= 0].reset_index(drop=True)
    row = row[row >= 0]
    k["step_row"] = a["step_row"].to_numpy()[row]
    k["_order"] = a["_order"].to_numpy()[row]
    # DataShop's rule: KCs of the first correct transaction, else the union of error transactions' KCs.
    correct = pd.Series(is_cor[row], index=k.index)
    k["_first_correct"] = k["_order"].where(correct).groupby([k["step_row"], k["kc_model"]], sort=False).transform("min")
    keep = (correct & (k["_order"] == k["_first_correct"])) | (k["_first_correct"].isna() & ~correct)
    k = k[keep].sort_values(["step_row", "kc_model", "kc", "_order"], kind="stable")
    agg = {"source_opportunity": ("source_opportunity", "min")} if "source_opportunity" in k.columns else {}
    kcs = k.groupby(["step_row", "kc_model", "kc"], sort=False, as_index=False).agg(**agg) if agg else (
        k.drop_duplicates(["step_row", "kc_model", "kc"])[["step_row", "kc_model", "kc"]]
    )
    if "source_opportunity" in kcs.columns:
        kcs["source_opportunity"] = kcs["source_opportunity"].round().astype("Int64")
    return _finish(steps, kcs)


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
    n = len(frame)

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
    steps = steps.rename(columns={"_pos": "source_row"}).reset_index(drop=True)

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
    kcs = pd.concat(parts, ignore_index=True).drop_duplicates(["step_row", "kc_model", "kc"])
    return _finish(steps, kcs)


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
