"""Classical item statistics: facility, discrimination, distractors, reliability.

Everything starts from the canonical ``attempts`` table (or ``assessments`` for test
instruments) and returns tidy DataFrames, one row per item (or item x option).

The first-attempt rule
----------------------
An item's response for item analysis is the learner's first attempt at the item: among the
learner's rows of the item with ``attempt == 1`` and ``problem_view == 1`` (a missing
problem_view counts as a first view), the earliest by timestamp, which is the first step the
learner met. ``correct`` is 1 when its outcome is "correct"; a hint request on the first
attempt counts as incorrect (DataShop's convention).

Thresholds (defaults of :class:`ItemThresholds`)
-------------------------------------------------
- ``too_easy``: facility above 0.90; ``too_hard``: facility below 0.20 (below chance for a
  four-option item plus a margin).
- ``low_discrimination``: corrected item-rest correlation below 0.20 (Ebel & Frisbie 1991:
  0.40+ very good, 0.30-0.39 reasonably good, 0.20-0.29 marginal, below 0.20 poor);
  ``negative_discrimination``: below 0 (stronger learners do worse: check the key).
- ``often_skipped``: more than 20 % of the learners who reached the item's page never
  answered it.
- ``underfit`` / ``overfit``: Rasch infit or outfit mean square above 1.3 / below 0.7
  (Wright & Linacre 1994; see :mod:`research.estimate.irt`).
- ``low_n``: fewer than ``min_n`` (default 30) learners answered the item. Statistics of
  such items are still reported, but they carry this flag and no other flag is raised
  from them: they are not reliable enough to act on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from research.errors import ConfigError, DataError
from research.estimate.opportunities import segment_sum
from research.stats import cronbach_alpha_feldt, wilson_interval
from research.stats import require_columns as _require

__all__ = [
    "ItemThresholds", "alpha_if_deleted", "assessment_responses", "cronbach_alpha", "discrimination_statistics",
    "distractor_table", "first_attempt_responses", "flag_items", "item_statistics", "reliability_by_instrument",
    "sort_by_concern", "suppress_small_cells", "wide_to_long",
]

OUTCOMES = ("correct", "incorrect", "hint")


@dataclass(frozen=True)
class ItemThresholds:
    """Flag thresholds for the item table; see the module docstring for their sources."""

    too_easy: float = 0.90
    too_hard: float = 0.20
    low_discrimination: float = 0.20
    often_skipped: float = 0.20
    fit_low: float = 0.7
    fit_high: float = 1.3
    min_n: int = 30

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise ConfigError(f"threshold {f.name}={v!r} must be a finite number")
        if not 0 <= self.too_hard < self.too_easy <= 1:
            raise ConfigError(
                f"need 0 <= too_hard < too_easy <= 1, got too_hard={self.too_hard}, too_easy={self.too_easy}"
            )
        if not 0 < self.fit_low < 1 < self.fit_high:
            raise ConfigError(f"need 0 < fit_low < 1 < fit_high, got {self.fit_low} and {self.fit_high}")
        if self.min_n < 1:
            raise ConfigError(f"min_n must be at least 1, got {self.min_n}")

    @classmethod
    def from_dict(cls, values: dict | None) -> "ItemThresholds":
        values = dict(values or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown threshold(s) {unknown}; valid thresholds are {valid}")
        return cls(**values)


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- responses


def first_attempt_responses(
    attempts: pd.DataFrame,
    *,
    learner: str = "learner_id",
    item: str = "item_id",
    step: str = "step_id",
    attempt: str = "attempt",
    problem_view: str = "problem_view",
    outcome: str = "outcome",
    timestamp: str = "timestamp",
    response: str = "response",
) -> pd.DataFrame:
    """The learner x item first-attempt table (see the module docstring for the rule).

    Returns
    -------
    DataFrame, one row per learner x item met:
        learner_id, item_id, step_id (the step of the first attempt), correct (0/1 int;
        hint = 0), outcome, response (the answer given, where the data has it, else missing).
    """
    _require(attempts, [learner, item, attempt, outcome], "attempts")
    out_vals = attempts[outcome].astype("string")
    bad = ~out_vals.isin(OUTCOMES) & out_vals.notna()
    if bad.any():
        raise DataError(
            f"column {outcome!r} holds {out_vals[bad].iloc[0]!r} in {int(bad.sum())} row(s); valid outcomes are {list(OUTCOMES)}"
        )
    keep = pd.to_numeric(attempts[attempt], errors="coerce").eq(1).fillna(False).to_numpy(bool)
    if problem_view in attempts.columns:
        pv = pd.to_numeric(attempts[problem_view], errors="coerce")
        keep = keep & (pv.isna() | pv.eq(1)).fillna(True).to_numpy(bool)
    cols = [learner, item, outcome]
    cols += [c for c in (step, timestamp, response) if c in attempts.columns and c not in cols]
    first = attempts.loc[keep, cols]
    sort_cols = [c for c in (learner, item, timestamp, step) if c in first.columns]
    first = first.sort_values(sort_cols, kind="stable").drop_duplicates([learner, item], keep="first")
    res = pd.DataFrame(
        {
            "learner_id": first[learner].astype(str).to_numpy(),
            "item_id": first[item].astype(str).to_numpy(),
            "step_id": first[step].astype(str).to_numpy() if step in first.columns else first[item].astype(str).to_numpy(),
            "correct": first[outcome].astype(str).eq("correct").to_numpy().astype(np.int64),
            "outcome": first[outcome].astype(str).to_numpy(),
            "response": first[response].astype("string").to_numpy() if response in first.columns else pd.NA,
        }
    )
    return res.reset_index(drop=True)


def assessment_responses(
    assessments: pd.DataFrame,
    *,
    instrument: str | None = None,
    phase: str | None = None,
    learner: str = "learner_id",
    item: str = "item_id",
    score: str = "score",
    max_score: str = "max_score",
    dichotomous: bool = True,
) -> pd.DataFrame:
    """Item responses of one instrument x phase from the ``assessments`` table.

    Rows with ``item_id == "total"`` are left out. With ``dichotomous=True`` every item must
    have ``max_score == 1`` and scores 0 or 1; otherwise ``correct`` is score / max_score.

    Returns
    -------
    DataFrame: learner_id, item_id, correct (0/1 int, or a proportion when dichotomous=False),
    score, max_score.
    """
    _require(assessments, [learner, item, score, max_score], "assessments")
    df = assessments
    combos_cols = [c for c in ("instrument", "phase") if c in df.columns]
    if instrument is not None:
        if "instrument" not in df.columns:
            raise DataError("assessments have no 'instrument' column to select from")
        valid = sorted(df["instrument"].dropna().astype(str).unique())
        if instrument not in valid:
            raise ConfigError(f"instrument={instrument!r} is not in the data; valid instruments are {valid}")
        df = df[df["instrument"].astype(str) == instrument]
    if phase is not None:
        if "phase" not in df.columns:
            raise DataError("assessments have no 'phase' column to select from")
        valid = sorted(df["phase"].dropna().astype(str).unique())
        if phase not in valid:
            raise ConfigError(f"phase={phase!r} is not in the data; valid phases are {valid}")
        df = df[df["phase"].astype(str) == phase]
    df = df[df[item].astype(str) != "total"]
    if df.empty:
        raise DataError("no item-level assessment rows (only totals, or nothing after the selection)")
    if combos_cols:
        combos = df[combos_cols].drop_duplicates()
        if len(combos) > 1:
            listing = [tuple(r) for r in combos.astype(str).itertuples(index=False)]
            raise ConfigError(
                f"assessments hold several instrument x phase combinations {listing[:8]}; "
                "choose one with instrument= and phase="
            )
    s = pd.to_numeric(df[score], errors="coerce").to_numpy(float)
    m = pd.to_numeric(df[max_score], errors="coerce").to_numpy(float)
    if dichotomous:
        bad = (m != 1) | ~np.isin(s, (0.0, 1.0))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"item {df[item].iloc[i]!r} has score {s[i]} of max_score {m[i]}; dichotomous item analysis needs "
                "max_score 1 and scores 0/1 (pass dichotomous=False for proportions)"
            )
        correct = s.astype(np.int64)
    else:
        if (m <= 0).any():
            raise DataError("max_score must be positive for every item")
        correct = s / m
    return pd.DataFrame(
        {
            "learner_id": df[learner].astype(str).to_numpy(),
            "item_id": df[item].astype(str).to_numpy(),
            "correct": correct,
            "score": s,
            "max_score": m,
        }
    )


def wide_to_long(matrix: pd.DataFrame, *, learner_index: bool = True) -> pd.DataFrame:
    """A learners x items 0/1 matrix (NaN = not answered) to long responses.

    Returns
    -------
    DataFrame: learner_id, item_id, correct (int).
    """
    if not isinstance(matrix, pd.DataFrame):
        raise DataError(f"matrix must be a DataFrame, got {type(matrix).__name__}")
    values = matrix.to_numpy(dtype=float)
    rows, cols = np.nonzero(~np.isnan(values))
    learners = matrix.index.astype(str).to_numpy() if learner_index else np.arange(len(matrix)).astype(str)
    return pd.DataFrame(
        {
            "learner_id": learners[rows],
            "item_id": matrix.columns.astype(str).to_numpy()[cols],
            "correct": values[rows, cols].astype(np.int64),
        }
    )


# --------------------------------------------------------------------------- discrimination


def discrimination_statistics(
    responses: pd.DataFrame,
    *,
    learner: str = "learner_id",
    item: str = "item_id",
    correct: str = "correct",
    group_share: float = 0.27,
) -> pd.DataFrame:
    """Corrected item-rest correlation and the upper-lower index of every item.

    The rest score of a learner for item j is the proportion correct over the *other* items
    the learner answered (a proportion, because not every learner meets every item; with
    complete data it is equivalent to the rest sum). The item-rest correlation is the
    Pearson (point-biserial) correlation of the item with the rest score over the learners
    who answered both. The upper-lower index is the facility in the top ``group_share`` of
    those learners by rest score minus the facility in the bottom ``group_share`` (Kelley's
    27 %).

    Returns
    -------
    DataFrame, one row per item: item_id, discrimination (item-rest r), upper_lower_index,
    n (learners used).
    """
    _require(responses, [learner, item, correct], "responses")
    if not 0 < group_share <= 0.5:
        raise ConfigError(f"group_share must be in (0, 0.5], got {group_share}")
    df = pd.DataFrame(
        {
            "l": responses[learner].astype(str).to_numpy(),
            "i": responses[item].astype(str).to_numpy(),
            "y": pd.to_numeric(responses[correct], errors="coerce").to_numpy(float),
        }
    ).dropna(subset=["y"])
    tot = df.groupby("l")["y"].agg(["sum", "count"])
    s = tot["sum"].reindex(df["l"]).to_numpy()
    c = tot["count"].reindex(df["l"]).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        df["rest"] = np.where(c > 1, (s - df["y"].to_numpy()) / (c - 1), np.nan)
    df = df.dropna(subset=["rest"])
    g = df.groupby("i", sort=True)
    y, r = df["y"], df["rest"]
    df["yr"], df["yy"], df["rr"] = y * r, y * y, r * r
    sums = g[["y", "rest", "yr", "yy", "rr"]].sum()
    n = g.size().astype(float)
    cov = sums["yr"] / n - sums["y"] / n * sums["rest"] / n
    vy = sums["yy"] / n - (sums["y"] / n) ** 2
    vr = sums["rr"] / n - (sums["rest"] / n) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        rcorr = cov / np.sqrt(vy * vr)
    rcorr = rcorr.where((vy > 1e-12) & (vr > 1e-12))
    # rounding in the moment formula can leave |r| a few ulps above 1 (1.0000000000000013 on a
    # real item): a correlation lies in [-1, 1]
    rcorr = rcorr.clip(-1.0, 1.0)
    # upper / lower groups by rest score within each item (ties broken by learner id)
    df = df.sort_values(["i", "rest", "l"], kind="stable")
    pos = df.groupby("i").cumcount().to_numpy()
    size = df.groupby("i")["y"].transform("size").to_numpy()
    k = np.floor(group_share * size).astype(int)
    lower = pos < k
    upper = pos >= size - k
    df["lower"], df["upper"] = lower, upper
    df["yl"], df["yu"] = df["y"] * lower, df["y"] * upper
    gg = df.groupby("i")[["yl", "yu", "lower", "upper"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        ul = gg["yu"] / gg["upper"] - gg["yl"] / gg["lower"]
    out = pd.DataFrame(
        {
            "item_id": sums.index.astype(str),
            "discrimination": rcorr.to_numpy(float),
            "upper_lower_index": ul.reindex(sums.index).to_numpy(float),
            "n": n.to_numpy().astype(np.int64),
        }
    )
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- item statistics


def item_statistics(
    attempts: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    min_n: int = 30,
    ci_level: float = 0.95,
    responses: pd.DataFrame | None = None,
    learner: str = "learner_id",
    item: str = "item_id",
    step: str = "step_id",
    attempt: str = "attempt",
    problem_view: str = "problem_view",
    outcome: str = "outcome",
    timestamp: str = "timestamp",
    duration: str = "duration_s",
    module: str = "module",
    page: str = "page",
) -> pd.DataFrame:
    """Classical statistics of every item, from the canonical ``attempts`` table.

    Parameters
    ----------
    attempts : canonical attempts (long, one row per learner x step x attempt).
    items : optional canonical ``items`` table (module and page fill in where attempts lack them).
    min_n : items answered by fewer learners get ``low_n = True``.
    responses : the first-attempt table of ``attempts`` (:func:`first_attempt_responses` with the
        same column names) when the caller already has it; computed when None.

    Returns
    -------
    DataFrame, one row per item:
        item_id, module, page,
        n_learners (learners with a first attempt at the item),
        facility (share correct on the first attempt), facility_ci_low, facility_ci_high (Wilson),
        eventually_correct (share of learners who ended with every step they tried correct),
        mean_attempts_to_correct (mean over learners who got it right of the attempt number of
        their first correct attempt, averaged over the item's steps),
        hint_rate (share of learners who asked for at least one hint),
        median_duration_s (median over learners of their total seconds on the item),
        reached_not_answered (share of the learners with any attempt on the item's page who
        never gave a correct or incorrect answer to the item; missing without pages),
        discrimination (corrected item-rest correlation), upper_lower_index (27 % groups),
        low_n (fewer than ``min_n`` learners), n (= n_learners), method ("classical").
    """
    _require(attempts, [learner, item, attempt, outcome], "attempts")
    if int(min_n) < 1:
        raise ConfigError(f"min_n must be at least 1, got {min_n}")
    if attempts.empty:
        raise DataError("attempts is empty: no items to describe")
    fa = responses if responses is not None else first_attempt_responses(
        attempts, learner=learner, item=item, step=step, attempt=attempt,
        problem_view=problem_view, outcome=outcome, timestamp=timestamp,
    )
    base = _facility(fa, ci_level)
    a = _attempt_codes(attempts, learner=learner, item=item, step=step, attempt=attempt, outcome=outcome,
                       duration=duration)
    li, per_item = _learner_item_summary(a)
    meta = _item_places(attempts, items, per_item.index, item=item, module=module, page=page)
    reached = _reached_not_answered(attempts, a, li, meta, per_item.index, page=page)
    disc = discrimination_statistics(fa).set_index("item_id")
    return _item_frame(per_item, base, meta, reached, disc, min_n=min_n, module=module, page=page)


def _facility(fa: pd.DataFrame, ci_level: float) -> pd.DataFrame:
    """Per item: learners with a first attempt, how many were correct, the share and its Wilson interval."""
    g = fa.groupby("item_id", sort=True)["correct"]
    base = pd.DataFrame({"n_learners": g.size(), "k": g.sum()})
    lo, hi = wilson_interval(base["k"], base["n_learners"], ci_level)
    base["facility"] = base["k"] / base["n_learners"]
    base["facility_ci_low"], base["facility_ci_high"] = lo, hi
    return base


def _attempt_codes(attempts: pd.DataFrame, *, learner, item, step, attempt, outcome, duration) -> pd.DataFrame:
    """Every attempt as plain columns: learner, item, step, outcome flags, attempt number, seconds."""
    a = pd.DataFrame(
        {
            "l": attempts[learner].astype(str).to_numpy(),
            "i": attempts[item].astype(str).to_numpy(),
            "s": (attempts[step].astype(str) if step in attempts.columns else attempts[item].astype(str)).to_numpy(),
            "o": attempts[outcome].astype(str).to_numpy(),
            "att": pd.to_numeric(attempts[attempt], errors="coerce").to_numpy(float),
            "d": pd.to_numeric(attempts[duration], errors="coerce").to_numpy(float)
            if duration in attempts.columns
            else np.nan,
        }
    )
    a["is_c"] = a["o"] == "correct"
    a["is_h"] = a["o"] == "hint"
    a["is_ans"] = a["o"] != "hint"
    a["att_c"] = np.where(a["is_c"], a["att"], np.nan)
    return a


def _learner_item_summary(a: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(learner x item: hint, answered, seconds, all steps correct, attempts to correct; the per-item means).

    Grouped on integer codes of item, learner and step (codes in the sort order of the ids, so
    every group, its rows and their order are those of grouping on the ids themselves).
    """
    items, item_ids = pd.factorize(a["i"], sort=True)
    learners, learner_ids = pd.factorize(a["l"], sort=True)
    a = pd.DataFrame({"i": items, "l": learners, "s": pd.factorize(a["s"])[0], "is_c": a["is_c"].to_numpy(),
                      "att_c": a["att_c"].to_numpy(), "is_h": a["is_h"].to_numpy(), "is_ans": a["is_ans"].to_numpy(),
                      "d": a["d"].to_numpy(float)})
    per_step = a.groupby(["i", "l", "s"], sort=False).agg(any_c=("is_c", "any"), first_c=("att_c", "min"))
    per_li = per_step.groupby(level=["i", "l"]).agg(all_c=("any_c", "all"), att_to_c=("first_c", "mean"))
    by_li = a.groupby(["i", "l"], sort=False)
    li = by_li.agg(hint=("is_h", "any"), answered=("is_ans", "any"))
    # each learner's seconds on the item (sum, NaN when none is known), without a Python call per group
    gid = by_li.ngroup().to_numpy()
    order = np.argsort(gid, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(gid[order]) != 0])
    li["dur"] = segment_sum(a["d"].to_numpy(float)[order], starts)
    li = li.join(per_li)
    per_item = li.groupby(level="i").agg(
        n_any=("hint", "size"),
        eventually_correct=("all_c", "mean"),
        mean_attempts_to_correct=("att_to_c", "mean"),
        hint_rate=("hint", "mean"),
        median_duration_s=("dur", "median"),
    )
    li.index = pd.MultiIndex.from_arrays([item_ids.take(li.index.get_level_values("i")),
                                          learner_ids.take(li.index.get_level_values("l"))], names=["i", "l"])
    per_item.index = pd.Index(item_ids.take(per_item.index), name="i")
    return li, per_item


def _item_places(attempts: pd.DataFrame, items: pd.DataFrame | None, index: pd.Index, *, item, module, page) -> pd.DataFrame:
    """Module and page of each item: the most frequent in the attempts, else the ``items`` table's."""
    meta = pd.DataFrame(index=index)
    for col in (module, page):
        if col in attempts.columns:
            vals = attempts[[item, col]].dropna()
            if not vals.empty:
                meta[col] = _most_frequent(vals.astype(str), item, col).reindex(meta.index)
    if items is not None:
        _require(items, ["item_id"], "items")
        im = items.drop_duplicates("item_id").set_index(items.drop_duplicates("item_id")["item_id"].astype(str))
        for col in (module, page):
            if col in im.columns:
                fill = im[col].astype("string").reindex(meta.index)
                meta[col] = meta[col].astype("string").fillna(fill) if col in meta.columns else fill
    for col in (module, page):
        if col not in meta.columns:
            meta[col] = pd.NA
    return meta


def _most_frequent(vals: pd.DataFrame, key: str, col: str) -> pd.Series:
    """Per ``key``, the most frequent value of ``col`` (ties: the value met first, as ``value_counts`` orders them)."""
    counts = vals.groupby([key, col], sort=False).size().rename("n").reset_index()
    # value_counts sorts by count (descending, stable), so among equal counts the value met first wins
    counts = counts.sort_values([key, "n"], ascending=[True, False], kind="stable")
    return counts.drop_duplicates(key).set_index(key)[col]


def _reached_not_answered(attempts: pd.DataFrame, a: pd.DataFrame, li: pd.DataFrame, meta: pd.DataFrame,
                          index: pd.Index, *, page) -> pd.Series:
    """Share of the learners who reached each item's page but never answered the item (NaN without pages)."""
    reached = pd.Series(np.nan, index=index)
    if page in attempts.columns and meta[page].notna().any():
        lp = pd.DataFrame({"l": a["l"], "pg": attempts[page].astype("string").to_numpy()}).dropna().drop_duplicates()
        item_page = meta[page].dropna().astype(str).rename("pg").reset_index().rename(columns={"index": "i"})
        item_page.columns = ["i", "pg"]
        reach = item_page.merge(lp, on="pg")  # item x learner who reached its page
        ans = li["answered"].reset_index()
        reach = reach.merge(ans, on=["i", "l"], how="left")
        reach["answered"] = reach["answered"].fillna(False).astype(bool)
        reached = 1.0 - reach.groupby("i")["answered"].mean()
        reached = reached.reindex(index)
    return reached


def _item_frame(per_item, base, meta, reached, disc, *, min_n, module, page) -> pd.DataFrame:
    """The item table's columns, in order, one row per item."""
    out = pd.DataFrame({"item_id": per_item.index.astype(str)})
    idx = per_item.index
    out["module"] = meta[module].reindex(idx).astype("string").to_numpy()
    out["page"] = meta[page].reindex(idx).astype("string").to_numpy()
    out["n_learners"] = base["n_learners"].reindex(idx).fillna(0).to_numpy().astype(np.int64)
    for col in ("facility", "facility_ci_low", "facility_ci_high"):
        out[col] = base[col].reindex(idx).to_numpy(float)
    for col in ("eventually_correct", "mean_attempts_to_correct", "hint_rate", "median_duration_s"):
        out[col] = per_item[col].to_numpy(float)
    out["reached_not_answered"] = np.asarray(reached, dtype=float)
    out["discrimination"] = disc["discrimination"].reindex(idx).to_numpy(float)
    out["upper_lower_index"] = disc["upper_lower_index"].reindex(idx).to_numpy(float)
    out["low_n"] = out["n_learners"] < int(min_n)
    out["n"] = out["n_learners"]
    out["method"] = "classical"
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- distractors


def distractor_table(
    attempts: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    ability: pd.DataFrame | None = None,
    max_options: int = 12,
    responses: pd.DataFrame | None = None,
    learner: str = "learner_id",
    item: str = "item_id",
    response: str = "response",
    **first_attempt_columns,
) -> pd.DataFrame:
    """Share of learners choosing each option of multiple-choice items, on first attempts.

    Items count as multiple choice when ``items`` says ``item_type == "multiple_choice"``;
    without an items table, every item whose first-attempt responses take at most
    ``max_options`` distinct values. The key is ``items.answer_key`` where given, else the
    response that first attempts marked correct most often.

    ``ability`` is an optional frame (learner_id, theta) such as Rasch abilities; by default
    a learner's ability is their proportion correct over all their first attempts.
    ``responses`` is the first-attempt table of ``attempts`` (:func:`first_attempt_responses`
    with the same column names) when the caller already has it; computed when None.

    Returns
    -------
    DataFrame, one row per item x option: item_id, option, is_key, n (learners choosing it),
    share (of the item's learners with a response), mean_ability (mean ability of those
    learners), sd_ability (their standard deviation, for the uncertainty of the mean),
    method ("first_attempt").
    """
    _require(attempts, [learner, item], "attempts")
    cols = ["item_id", "option", "is_key", "n", "share", "mean_ability", "sd_ability", "method"]
    if response not in attempts.columns:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    fa = responses if responses is not None else first_attempt_responses(
        attempts, learner=learner, item=item, response=response, **first_attempt_columns)
    if ability is None:
        ab = fa.groupby("learner_id")["correct"].mean().rename("ability")
    else:
        _require(ability, ["learner_id", "theta"], "ability")
        ab = ability.assign(learner_id=ability["learner_id"].astype(str)).set_index("learner_id")["theta"].rename("ability")
    fa = fa[fa["response"].notna()]
    fa = fa.assign(option=fa["response"].astype(str))
    key = fa[fa["correct"] == 1].groupby("item_id")["option"].agg(lambda x: x.value_counts().index[0])
    if items is not None and "item_type" in items.columns:
        mc = items.loc[items["item_type"].astype("string") == "multiple_choice", "item_id"].astype(str)
        fa = fa[fa["item_id"].isin(set(mc))]
        if "answer_key" in items.columns:
            given = items.dropna(subset=["answer_key"]).drop_duplicates("item_id")
            key = pd.Series(given["answer_key"].astype(str).to_numpy(), index=given["item_id"].astype(str)).combine_first(key)
    else:
        n_opt = fa.groupby("item_id")["option"].nunique()
        fa = fa[fa["item_id"].isin(set(n_opt.index[n_opt <= max_options]))]
    if fa.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    fa = fa.assign(ability=ab.reindex(fa["learner_id"]).to_numpy(float))
    g = fa.groupby(["item_id", "option"], sort=True)
    out = g.agg(n=("learner_id", "size"), mean_ability=("ability", "mean"), sd_ability=("ability", "std")).reset_index()
    out["share"] = out["n"] / out.groupby("item_id")["n"].transform("sum")
    out["is_key"] = out["option"].to_numpy() == key.reindex(out["item_id"]).astype("string").fillna("").to_numpy()
    out["n"] = out["n"].astype(np.int64)
    out["method"] = "first_attempt"
    return out[cols]


# --------------------------------------------------------------------------- reliability


def _wide(responses, learner, item, score) -> pd.DataFrame:
    _require(responses, [learner, item, score], "responses")
    df = responses[[learner, item, score]]
    dup = df.duplicated([learner, item])
    if dup.any():
        raise DataError(f"{int(dup.sum())} duplicate learner x item row(s); keep one score per learner and item")
    wide = df.pivot(index=learner, columns=item, values=score).astype(float)
    complete = wide.dropna()
    if wide.shape[1] < 2:
        raise DataError(f"Cronbach's alpha needs at least 2 items, got {wide.shape[1]}")
    if len(complete) < 3:
        raise DataError(
            f"only {len(complete)} learner(s) answered every item; alpha needs at least 3 complete response patterns"
        )
    return complete


def cronbach_alpha(
    responses: pd.DataFrame,
    *,
    learner: str = "learner_id",
    item: str = "item_id",
    score: str = "correct",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Cronbach's alpha of an instrument with Feldt's confidence interval.

    Learners with a missing item are left out (listwise). The interval is Feldt's F-based one
    (Feldt, Woodruff & Salih 1987), the one ``psych::alpha`` prints as "Feldt".

    Returns
    -------
    DataFrame, one row: estimate, ci_low, ci_high, n (complete learners), n_items, method
    ("cronbach_feldt").
    """
    if not 0 < ci_level < 1:
        raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {ci_level}")
    X = _wide(responses, learner, item, score).to_numpy()
    n, k = X.shape
    if X.sum(axis=1).var(ddof=1) <= 0:
        raise DataError("total scores do not vary: alpha is undefined")
    alpha, ci_low, ci_high = cronbach_alpha_feldt(X, ci_level)
    return pd.DataFrame(
        {"estimate": [alpha], "ci_low": [ci_low], "ci_high": [ci_high], "n": [n], "n_items": [k], "method": ["cronbach_feldt"]}
    )


def alpha_if_deleted(
    responses: pd.DataFrame,
    *,
    learner: str = "learner_id",
    item: str = "item_id",
    score: str = "correct",
) -> pd.DataFrame:
    """Alpha of the instrument without each item, and the item's corrected item-rest r.

    Computed from the covariance matrix at once (no loop over items); learners with a
    missing item are left out, as in :func:`cronbach_alpha`.

    Returns
    -------
    DataFrame, one row per item: item_id, alpha_if_deleted, r_drop (item-rest correlation,
    psych's ``r.drop``), n, method ("cronbach").
    """
    wide = _wide(responses, learner, item, score)
    X = wide.to_numpy()
    n, k = X.shape
    if k < 3:
        raise DataError(f"alpha if item deleted needs at least 3 items, got {k}")
    C = np.cov(X, rowvar=False)
    v = np.diag(C)
    total = C.sum()
    row = C.sum(axis=1)
    var_rest = total - 2 * row + v  # variance of the total without item j
    alpha_del = (k - 1) / (k - 2) * (1 - (v.sum() - v) / var_rest)
    cov_rest = row - v
    with np.errstate(invalid="ignore", divide="ignore"):
        r_drop = cov_rest / np.sqrt(v * var_rest)
    return pd.DataFrame(
        {
            "item_id": wide.columns.astype(str),
            "alpha_if_deleted": alpha_del,
            "r_drop": r_drop,
            "n": np.full(k, n, dtype=np.int64),
            "method": "cronbach",
        }
    )


# --------------------------------------------------------------------------- flags

#: Flag labels in order of concern (first = most urgent), with their weight in concern.
FLAG_WEIGHTS = {
    "negative_discrimination": 8,
    "underfit": 5,
    "low_discrimination": 4,
    "too_hard": 3,
    "often_skipped": 3,
    "too_easy": 2,
    "overfit": 1,
}


def flag_items(table: pd.DataFrame, thresholds: ItemThresholds | None = None) -> pd.DataFrame:
    """Add ``flags`` (semicolon-separated labels) and ``concern`` (a sum of flag weights).

    Uses whichever of facility, discrimination, reached_not_answered, infit_mnsq and
    outfit_mnsq the table has. Items with ``low_n`` get only the flag "low_n" (and concern 0).

    Returns
    -------
    The table with two more columns: flags (string, "" when none), concern (int).
    """
    th = thresholds or ItemThresholds()
    n = len(table)
    get = lambda c: table[c].to_numpy(float) if c in table.columns else np.full(n, np.nan)  # noqa: E731
    fac, disc, skip = get("facility"), get("discrimination"), get("reached_not_answered")
    infit, outfit = get("infit_mnsq"), get("outfit_mnsq")
    fit_max, fit_min = np.fmax(infit, outfit), np.fmin(infit, outfit)
    with np.errstate(invalid="ignore"):
        conds = {
            "negative_discrimination": disc < 0,
            "underfit": fit_max > th.fit_high,
            "low_discrimination": (disc >= 0) & (disc < th.low_discrimination),
            "too_hard": fac < th.too_hard,
            "often_skipped": skip > th.often_skipped,
            "too_easy": fac > th.too_easy,
            "overfit": (fit_min < th.fit_low) & ~(fit_max > th.fit_high),
        }
    if "low_n" in table.columns:
        low_n = table["low_n"].fillna(True).to_numpy(bool)
    else:
        nl = get("n_learners")
        low_n = ~(nl >= th.min_n)
    labels = np.full(n, "", dtype=object)
    concern = np.zeros(n, dtype=np.int64)
    for name, cond in conds.items():  # loop over the handful of flags, not over rows
        hit = np.asarray(cond, bool) & ~low_n
        labels = np.where(hit, np.where(labels == "", name, labels + ";" + name), labels)
        concern += hit * FLAG_WEIGHTS[name]
    labels = np.where(low_n, "low_n", labels)
    out = table.copy()
    out["flags"] = labels.astype(str)
    out["concern"] = concern
    return out


def sort_by_concern(table: pd.DataFrame) -> pd.DataFrame:
    """Items with the most serious flags first; then by facility distance from 0.5 (largest first)."""
    t = table.copy()
    key = -(t["facility"] - 0.5).abs() if "facility" in t.columns else 0
    t["_k"] = key
    t = t.sort_values(["concern", "_k", "item_id"], ascending=[False, True, True], kind="stable")
    return t.drop(columns="_k").reset_index(drop=True)


def suppress_small_cells(distractors: pd.DataFrame, min_cell_size: int) -> pd.DataFrame:
    """Blank n, share and mean_ability of options chosen by fewer than ``min_cell_size`` learners.

    A mean ability over one or two learners would describe individuals. The reason goes in
    a ``suppressed_reason`` column ("" where shown).

    Returns
    -------
    The distractor table with n (nullable Int64), share, mean_ability blanked where small,
    plus suppressed_reason.
    """
    if int(min_cell_size) < 1:
        raise ConfigError(f"min_cell_size must be at least 1, got {min_cell_size}")
    _require(distractors, ["n", "share", "mean_ability"], "distractors")
    out = distractors.copy()
    small = out["n"].to_numpy(float) < int(min_cell_size)
    out["n"] = pd.array(np.where(small, np.nan, out["n"].to_numpy(float)), dtype="Float64").astype("Int64")
    out["share"] = np.where(small, np.nan, out["share"].to_numpy(float))
    out["mean_ability"] = np.where(small, np.nan, out["mean_ability"].to_numpy(float))
    if "sd_ability" in out.columns:
        out["sd_ability"] = np.where(small, np.nan, out["sd_ability"].to_numpy(float))
    out["suppressed_reason"] = np.where(small, f"fewer than {int(min_cell_size)} learners", "")
    return out


def reliability_by_instrument(
    assessments: pd.DataFrame,
    *,
    ci_level: float = 0.95,
    min_n: int = 30,
    learner: str = "learner_id",
    item: str = "item_id",
    score: str = "score",
    max_score: str = "max_score",
) -> pd.DataFrame:
    """Cronbach's alpha (Feldt interval) of every instrument x phase in ``assessments``.

    Scores are taken as score / max_score; rows with ``item_id == "total"`` are left out.
    Instruments with fewer than 2 items or 3 complete learners get missing estimates.

    Returns
    -------
    DataFrame, one row per instrument x phase: instrument, phase, estimate, ci_low, ci_high,
    n (complete learners), n_items, low_n (n < ``min_n``), method ("cronbach_feldt").
    """
    _require(assessments, ["instrument", "phase", learner, item, score, max_score], "assessments")
    df = assessments[assessments[item].astype(str) != "total"]
    df = df.assign(_p=pd.to_numeric(df[score], errors="coerce") / pd.to_numeric(df[max_score], errors="coerce"))
    rows = []
    for (inst, ph), g in df.groupby(["instrument", "phase"], sort=True):  # a handful of instruments
        try:
            a = cronbach_alpha(g, learner=learner, item=item, score="_p", ci_level=ci_level).iloc[0]
            rows.append({"instrument": inst, "phase": ph, **{k: a[k] for k in ("estimate", "ci_low", "ci_high", "n", "n_items")}})
        except DataError:
            rows.append({"instrument": inst, "phase": ph, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                         "n": 0, "n_items": int(g[item].nunique())})
    out = pd.DataFrame(rows, columns=["instrument", "phase", "estimate", "ci_low", "ci_high", "n", "n_items"])
    out["n"] = out["n"].astype(np.int64)
    out["n_items"] = out["n_items"].astype(np.int64)
    out["low_n"] = out["n"] < int(min_n)
    out["method"] = "cronbach_feldt"
    return out
