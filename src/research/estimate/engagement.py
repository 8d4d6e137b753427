"""Engagement: where learners stop, whether the cohort completes, and how long pages take.

* :func:`course_sequence` orders the course's items (or pages, or modules): by
  ``items.position`` when the items table has it, else by the order in which learners
  meet them (each learner's rank of first contact, averaged over learners).
* :func:`funnel`: the completion funnel. A learner *reached* a position when they have any
  attempt at that position or beyond it. ``drop`` counts learners whose furthest
  position it is (they stopped there); ``hazard`` = drop / reached is the conditional
  probability of stopping at a position given it was reached (discrete-time hazard of
  drop-out; Singer & Willett 2003), with a Wilson interval. ``rank_of_drop`` ranks the
  positions by drop (1 = where most learners give up).
* :func:`learner_completion` and :func:`completion_rate`: completion = reaching the last
  position (or a configured completion item or the last item of a configured module),
  the rate with a Wilson interval, overall and by group, against a target (e.g. 80%).
* :func:`time_on_task`: per item or page, each learner's total time (each event's
  ``duration_s``, or when missing the gap to the learner's next event in the same
  session), every event capped at ``cap_s`` so idle time does not count; median, IQR and
  a distribution-free 95% interval of the median over learners; pages and items whose
  median exceeds ``planned_duration_s`` by ``over_factor`` are flagged.

Cohort-level counts are reported as they are; anything broken down by group, and time
summaries over fewer learners than the minimum cell size, are suppressed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from research.errors import ConfigError, DataError
from research.estimate.gaps import group_gaps
from research.stats import require_columns, wilson_interval

__all__ = [
    "FUNNEL_COLUMNS", "TIME_COLUMNS", "completion_rate", "course_sequence", "event_durations", "funnel",
    "learner_completion", "time_on_task",
]

LEVELS = ("item", "page", "module")

FUNNEL_COLUMNS = [
    "position", "level", "module", "page", "item_id", "reached", "share", "drop", "drop_share",
    "hazard", "hazard_ci_low", "hazard_ci_high", "rank_of_drop", "next_module", "next_page", "next_item_id",
    "n_cohort",
]
TIME_COLUMNS = [
    "level", "module", "page", "item_id", "n", "median_s", "ci_low", "ci_high", "q25_s", "q75_s", "mean_s",
    "planned_duration_s", "ratio_to_planned", "over_planned", "n_events", "n_capped", "method", "suppressed_reason",
]


def _check_level(level: str, allowed=LEVELS) -> None:
    if level not in allowed:
        raise ConfigError(f"level={level!r} is not known; use one of {list(allowed)}")


def course_sequence(
    attempts: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    level: str = "item",
    learner: str = "learner_id",
    item: str = "item_id",
    timestamp: str = "timestamp",
) -> pd.DataFrame:
    """The course's positions in order.

    Returns
    -------
    DataFrame
        ``position`` (1 = first), ``module``, ``page``, ``item_id`` (empty above item
        level), ``order_source`` (``items.position`` or ``appearance``). At item level
        the frame also has ``item_position`` equal to ``position``; at page and module
        level a map of item to position is in ``attrs["item_to_position"]``.
    """

    _check_level(level)
    require_columns(attempts, {"learner": learner, "item": item, "timestamp": timestamp}, "attempts")
    if len(attempts) == 0:
        raise DataError("attempts is empty: there is no course sequence to build")
    icode, ilabels = pd.factorize(attempts[item], sort=False)
    ilabels = np.asarray(pd.Index(ilabels).astype(str))
    meta, key, source = _item_metadata(attempts, items, icode, ilabels, item=item)
    if key.isna().any():
        app = _appearance(attempts, icode, ilabels, learner=learner, timestamp=timestamp).reindex(meta["item_id"])
    else:
        app = pd.DataFrame({"rank": np.nan, "t": 0}, index=meta["item_id"])
    meta["_key"] = key.to_numpy(dtype=float)
    offset = np.nanmax(meta["_key"]) if meta["_key"].notna().any() else 0.0
    # items without a position go after the positioned ones, in appearance order
    meta["_key2"] = np.where(meta["_key"].notna(), 0.0, app["rank"].to_numpy(dtype=float))
    meta["_key"] = meta["_key"].fillna(offset + 1)
    meta["_t"] = app["t"].to_numpy()
    meta = meta.sort_values(["_key", "_key2", "_t", "item_id"], kind="stable", na_position="last").reset_index(drop=True)
    meta["item_position"] = np.arange(1, len(meta) + 1)
    if level == "item":
        out = meta.assign(position=meta["item_position"])[["position", "module", "page", "item_id", "item_position"]]
    else:
        unit_cols = ["module"] if level == "module" else ["module", "page"]
        unit_key = meta[unit_cols].astype("string").fillna("").agg("\x1f".join, axis=1)
        first_pos = meta.groupby(unit_key, sort=False)["item_position"].min().sort_values(kind="stable")
        pos_of_unit = pd.Series(np.arange(1, len(first_pos) + 1), index=first_pos.index)
        meta["position"] = unit_key.map(pos_of_unit).to_numpy()
        out = meta.drop_duplicates("position").sort_values("position")[["position", "module", "page"]].copy()
        if level == "module":
            out["page"] = pd.NA
        out["item_id"] = pd.NA
        out.attrs["item_to_position"] = pd.Series(meta["position"].to_numpy(), index=meta["item_id"].to_numpy())
    out = out.reset_index(drop=True)
    out["order_source"] = source
    if level == "item":
        out.attrs["item_to_position"] = pd.Series(out["position"].to_numpy(), index=out["item_id"].to_numpy())
    for col in ("module", "page", "item_id"):
        out[col] = out[col].astype("string")
    return out


def _unit_times(df: pd.DataFrame, ci_level: float) -> pd.DataFrame:
    """Per unit (``df``: unit, l, sec, cap per event): learners' total times summarised (n, median_s,
    q25_s, q75_s, mean_s, a distribution-free interval of the median) and event counts."""
    per_unit_events = df.groupby("unit").agg(n_events=("sec", "count"), n_capped=("cap", "sum"))
    per_learner = df.dropna(subset=["sec"]).groupby(["unit", "l"], sort=False)["sec"].sum().reset_index()
    per_learner = per_learner.sort_values(["unit", "sec"], kind="stable").reset_index(drop=True)
    g = per_learner.groupby("unit", sort=False)["sec"]
    summ = pd.DataFrame({"n": g.size(), "median_s": g.median(), "q25_s": g.quantile(0.25),
                         "q75_s": g.quantile(0.75), "mean_s": g.mean()})
    # distribution-free CI of the median: order statistics j, k with binomial(n, 1/2) coverage
    n = summ["n"].to_numpy()
    z = stats.norm.ppf(0.5 + ci_level / 2)
    j = np.clip(np.floor(n / 2 - z * np.sqrt(n) / 2), 1, n).astype(int)
    k = np.clip(np.ceil(n / 2 + 1 + z * np.sqrt(n) / 2), 1, n).astype(int)
    start = per_learner.groupby("unit", sort=False).cumcount().to_numpy()
    offsets = pd.Series(np.flatnonzero(start == 0), index=per_learner["unit"].to_numpy()[start == 0]).reindex(summ.index)
    vals = per_learner["sec"].to_numpy()
    summ["ci_low"] = vals[offsets.to_numpy() + j - 1]
    summ["ci_high"] = vals[offsets.to_numpy() + k - 1]
    summ = summ.join(per_unit_events, how="right")
    return summ


def _planned_rows(attempts, items, seq, meta, *, level, learner, item, timestamp) -> tuple[pd.DataFrame, np.ndarray]:
    """The output rows (module, page, item_id) in course order with planned_duration_s (a page's:
    the sum of its items'), and the unit key of each row."""
    # planned durations
    planned = pd.Series(np.nan, index=seq["item_id"].astype(str))
    if items is not None and "planned_duration_s" in items:
        pl = pd.to_numeric(items["planned_duration_s"], errors="coerce")
        planned = pd.Series(pl.to_numpy(float), index=items[item].astype(str).to_numpy()).groupby(level=0).first()
    if level == "item":
        out = seq[["module", "page", "item_id"]].copy()
        keys = seq["item_id"].astype(str).to_numpy()
        out["planned_duration_s"] = planned.reindex(keys).to_numpy(dtype=float)
    else:
        page_seq = course_sequence(attempts, items, level="page", learner=learner, item=item, timestamp=timestamp)
        out = page_seq[["module", "page", "item_id"]].copy()
        keys = (out["module"].fillna("").astype(str) + "\x1f" + out["page"].fillna("").astype(str)).to_numpy()
        item_unit = (meta["module"].fillna("").astype(str) + "\x1f" + meta["page"].fillna("").astype(str))
        pl_items = planned.reindex(meta.index)
        out["planned_duration_s"] = pl_items.groupby(item_unit.to_numpy()).sum(min_count=1).reindex(keys).to_numpy(float)
    return out, keys


def _item_metadata(attempts, items, icode, ilabels, *, item) -> tuple[pd.DataFrame, pd.Series, str]:
    """Module and page per item (items table first, else the attempts' first value), items only in
    the items table included; the order key (items.position, else empty) and its source."""
    # metadata (module, page) per item: items table first, else the attempts' first value
    meta = pd.DataFrame({"item_id": ilabels})
    for col in ("module", "page"):
        if col in attempts:
            first = attempts[col].astype("string").groupby(icode).first()
            meta[col] = first.reindex(np.arange(len(ilabels))).to_numpy()
        else:
            meta[col] = pd.NA
    key = pd.Series(np.nan, index=meta["item_id"])
    source = "appearance"
    if items is not None and len(items):
        require_columns(items, {"item": item}, "items")
        it = items.drop_duplicates(subset=[item])
        it = it.set_index(it[item].astype(str))
        known = set(meta["item_id"])
        extra = pd.DataFrame({"item_id": [i for i in it.index if i not in known]})
        meta = pd.concat([meta, extra], ignore_index=True)
        for col in ("module", "page"):
            if col in it:
                meta[col] = meta["item_id"].map(it[col].astype("string")).fillna(meta[col])
        if "position" in it and it["position"].notna().any():
            key = meta["item_id"].map(pd.to_numeric(it["position"], errors="coerce")).set_axis(meta["item_id"])
            source = "items.position"
    return meta, key, source


def _appearance(attempts, icode, ilabels, *, learner, timestamp) -> pd.DataFrame:
    """Per item: rank (mean over learners of each learner's rank of first contact) and t (first contact)."""
    lcode, _ = pd.factorize(attempts[learner], sort=False)
    t = pd.to_datetime(attempts[timestamp]).to_numpy().astype("datetime64[ns]").astype(np.int64)
    first_ts = pd.DataFrame({"l": lcode, "i": icode, "t": t}).groupby(["l", "i"], sort=False)["t"].min().reset_index()
    first_ts["rank"] = first_ts.groupby("l")["t"].rank(method="first")
    appearance = first_ts.groupby("i").agg(rank=("rank", "mean"), t=("t", "min"))
    appearance.index = ilabels[appearance.index.to_numpy()]
    return appearance


def _furthest(attempts, seq, learner, item, learners=None):
    """Furthest position per learner (0 for learners in ``learners`` with no attempt)."""
    icode, ilabels = pd.factorize(attempts[item], sort=False)
    pos_of_code = seq.attrs["item_to_position"].reindex(pd.Index(ilabels).astype(str)).to_numpy(dtype=float)
    lcode, llabels = pd.factorize(attempts[learner], sort=False)
    f = pd.Series(pos_of_code[icode]).groupby(lcode).max()
    f.index = pd.Index(llabels).astype(str)[f.index.to_numpy()]
    if learners is not None and len(learners):
        ids = pd.Index(learners[learner].astype(str).unique())
        f = f.reindex(f.index.union(ids)).fillna(0)
    return f.astype(int)


def funnel(
    attempts: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    level: str = "item",
    learners: pd.DataFrame | None = None,
    learner: str = "learner_id",
    item: str = "item_id",
    timestamp: str = "timestamp",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """The completion funnel along the course sequence.

    Parameters
    ----------
    level : {"item", "page", "module"}
        Granularity of the positions.
    learners : DataFrame, optional
        The enrolled cohort: learners here with no attempt count in ``n_cohort`` (they
        never started; their number is in ``attrs["not_started"]``).

    Returns
    -------
    DataFrame
        ``position``, ``level``, ``module``, ``page``, ``item_id``, ``reached`` (learners
        with an attempt at this position or beyond), ``share`` (reached / n_cohort),
        ``drop`` (learners whose furthest position this is; 0 at the last position, where
        stopping is completing), ``drop_share`` (drop / n_cohort), ``hazard`` (drop /
        reached) with ``hazard_ci_low``, ``hazard_ci_high`` (Wilson, ``ci_level``), ``rank_of_drop``
        (1 = biggest drop; empty at the last position), ``next_module``, ``next_page``,
        ``next_item_id`` (the following position: attempts only show the last thing a
        learner answered, so a learner who opened the next page and gave up there without
        answering counts as a drop here), ``n_cohort``.
    """
    seq = course_sequence(attempts, items, level=level, learner=learner, item=item, timestamp=timestamp)
    far = _furthest(attempts, seq, learner, item, learners)
    n_pos = len(seq)
    counts = np.bincount(far.to_numpy(), minlength=n_pos + 1)  # counts[p] = learners whose furthest is p
    reached = counts[::-1].cumsum()[::-1][1:]  # reached[p-1] = learners with furthest >= p
    drop = counts[1:].astype(float)
    drop[-1] = 0.0
    n_cohort = len(far)
    out = seq[["position", "module", "page", "item_id"]].copy()
    out.insert(1, "level", level)
    out["reached"] = reached.astype(int)
    out["share"] = reached / n_cohort
    out["drop"] = drop.astype(int)
    out["drop_share"] = drop / n_cohort
    with np.errstate(invalid="ignore", divide="ignore"):
        out["hazard"] = np.where(reached > 0, drop / reached, np.nan)
    lo, hi = wilson_interval(drop, reached, ci_level)
    out["hazard_ci_low"], out["hazard_ci_high"] = lo, hi
    rank = pd.Series(drop[:-1]).rank(ascending=False, method="first").to_numpy()
    out["rank_of_drop"] = pd.array(np.append(rank, np.nan), dtype="Float64").round().astype("Int64")
    for col in ("module", "page", "item_id"):
        out[f"next_{col}"] = out[col].shift(-1)
    out["n_cohort"] = n_cohort
    out.attrs.update(not_started=int(counts[0]), order_source=str(seq["order_source"].iloc[0]), level=level)
    return out[FUNNEL_COLUMNS]


def learner_completion(
    attempts: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    learners: pd.DataFrame | None = None,
    completion_item: str | None = None,
    completion_module: str | None = None,
    learner: str = "learner_id",
    item: str = "item_id",
    timestamp: str = "timestamp",
) -> pd.DataFrame:
    """Whether each learner completed the course.

    Completion is reaching (any attempt at or beyond) the last position of the course, or
    ``completion_item``, or the last item of ``completion_module``.

    Returns
    -------
    DataFrame
        ``learner``, ``completed`` (int 0/1), ``furthest_position``.
    """
    if completion_item is not None and completion_module is not None:
        raise ConfigError("give completion_item or completion_module, not both")
    seq = course_sequence(attempts, items, level="item", learner=learner, item=item, timestamp=timestamp)
    if completion_item is not None:
        known = seq["item_id"].astype(str)
        if str(completion_item) not in set(known):
            raise ConfigError(f"completion_item={completion_item!r} is not in the course; items include {list(known[:8])}")
        goal = int(seq.loc[known == str(completion_item), "position"].iloc[0])
    elif completion_module is not None:
        mods = seq["module"].astype("string")
        if str(completion_module) not in set(mods.dropna()):
            raise ConfigError(f"completion_module={completion_module!r} is not in the course; modules: "
                              f"{sorted(set(mods.dropna()))}")
        goal = int(seq.loc[mods == str(completion_module), "position"].max())
    else:
        goal = len(seq)
    far = _furthest(attempts, seq, learner, item, learners)
    return pd.DataFrame({learner: far.index.astype(str), "completed": (far.to_numpy() >= goal).astype(int),
                         "furthest_position": far.to_numpy()})


def completion_rate(
    attempts: pd.DataFrame,
    learners: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    *,
    target: float | None = 0.8,
    completion_item: str | None = None,
    completion_module: str | None = None,
    attributes: list[str] | str | None = None,
    reference: dict[str, str] | None = None,
    learner: str = "learner_id",
    item: str = "item_id",
    min_cell_size: int = 10,
) -> pd.DataFrame:
    """Completion rate against a target, overall and by group.

    Returns
    -------
    DataFrame
        The columns of :func:`research.estimate.gaps.group_gaps` with ``measure`` =
        ``completion``: Wilson interval, Newcombe difference from the reference group,
        ``target``, ``meets_target`` and ``target_p`` (exact one-sided binomial p-value of
        a rate below the target).
    """
    comp = learner_completion(attempts, items, learners=learners, completion_item=completion_item,
                              completion_module=completion_module, learner=learner, item=item)
    groups = learners if learners is not None else pd.DataFrame({learner: []})
    has_attr = learners is not None and any(
        c not in (learner, "cohort") and learners[c].notna().any() for c in learners.columns)
    return group_gaps(
        comp.rename(columns={"completed": "value"}), groups if has_attr else pd.DataFrame(), value="value",
        measure="completion", kind="proportion", attributes=attributes if has_attr else None, reference=reference,
        learner=learner, min_cell_size=min_cell_size, target=target,
    )


def event_durations(
    attempts: pd.DataFrame,
    *,
    cap_s: float = 600.0,
    session_gap_s: float = 1800.0,
    learner: str = "learner_id",
    timestamp: str = "timestamp",
    duration: str = "duration_s",
    session: str = "session_id",
) -> pd.DataFrame:
    """Seconds spent on each event, capped.

    ``duration_s`` when the source has it; otherwise the gap to the same learner's next
    event in the same session (``session_id`` when present, else a new session begins
    after ``session_gap_s`` of inactivity); the last event of a session without a
    duration has none (NaN). Every duration is capped at ``cap_s``.

    Returns
    -------
    DataFrame
        ``attempts`` in the original order with ``seconds`` (capped; NaN when unknown) and
        ``capped`` (bool) added.
    """

    if not cap_s > 0 or not session_gap_s > 0:
        raise ConfigError(f"cap_s={cap_s!r} and session_gap_s={session_gap_s!r} must be positive numbers of seconds")
    require_columns(attempts, {"learner": learner, "timestamp": timestamp}, "attempts")
    t = pd.to_datetime(attempts[timestamp]).to_numpy().astype("datetime64[ns]").astype(np.int64)
    lcode, _ = pd.factorize(attempts[learner], sort=False)
    scode = pd.factorize(attempts[session], sort=False)[0] if session in attempts else np.full(len(attempts), -1)
    d = pd.to_numeric(attempts[duration], errors="coerce").to_numpy(dtype=float, na_value=np.nan) \
        if duration in attempts else np.full(len(attempts), np.nan)
    order = np.lexsort((np.arange(len(attempts)), t, lcode))  # by learner, time, original row
    lo, to, so = lcode[order], t[order], scode[order]
    gap = np.full(len(order), np.nan)
    same_learner = np.zeros(len(order), dtype=bool)
    same_session = np.zeros(len(order), dtype=bool)
    if len(order) > 1:
        gap[:-1] = (to[1:] - to[:-1]) / 1e9
        same_learner[:-1] = lo[1:] == lo[:-1]
        has_session = (so[:-1] >= 0) & (so[1:] >= 0)
        same_session[:-1] = np.where(has_session, so[1:] == so[:-1], gap[:-1] <= session_gap_s)
    inferred = np.where(same_learner & same_session, gap, np.nan)
    sec_sorted = np.where(np.isfinite(d[order]), d[order], inferred)
    sec = np.empty(len(order))
    sec[order] = sec_sorted
    capped = sec > cap_s
    out = attempts.copy()
    out["seconds"] = np.minimum(sec, cap_s)
    out["capped"] = capped
    return out


def time_on_task(
    attempts: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    level: str = "item",
    cap_s: float = 600.0,
    session_gap_s: float = 1800.0,
    over_factor: float = 2.0,
    min_cell_size: int = 10,
    learner: str = "learner_id",
    item: str = "item_id",
    timestamp: str = "timestamp",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Time on task per item or page, robust to idle time.

    Each learner's time on a unit is the sum of their capped event durations there (see
    :func:`event_durations`); the table summarises it over learners.

    Returns
    -------
    DataFrame
        ``level``, ``module``, ``page``, ``item_id`` (empty at page level), ``n`` (learners
        with a known time), ``median_s`` with ``ci_low``, ``ci_high`` (distribution-free
        ``ci_level`` interval of the median from order statistics), ``q25_s``, ``q75_s``,
        ``mean_s``, ``planned_duration_s`` (from ``items``; summed over a page's items),
        ``ratio_to_planned`` (median / planned), ``over_planned`` (ratio > over_factor),
        ``n_events``, ``n_capped`` (events cut at the cap), ``method``,
        ``suppressed_reason`` (units with fewer learners than ``min_cell_size``).
    """
    _check_level(level, ("item", "page"))
    if not over_factor > 0:
        raise ConfigError(f"over_factor={over_factor!r} must be a positive number")
    ev = event_durations(attempts, cap_s=cap_s, session_gap_s=session_gap_s, learner=learner, timestamp=timestamp)
    seq = course_sequence(attempts, items, level="item", learner=learner, item=item, timestamp=timestamp)
    meta = seq.set_index(seq["item_id"].astype(str))[["module", "page"]]
    it = ev[item].astype(str)
    unit = it if level == "item" else meta["module"].reindex(it).fillna("").astype(str).to_numpy() + "\x1f" + \
        meta["page"].reindex(it).fillna("").astype(str).to_numpy()
    df = pd.DataFrame({"unit": np.asarray(unit), "l": ev[learner].astype(str).to_numpy(),
                       "sec": ev["seconds"].to_numpy(dtype=float), "cap": ev["capped"].to_numpy(dtype=bool)})
    summ = _unit_times(df, ci_level)
    out, keys = _planned_rows(attempts, items, seq, meta, level=level, learner=learner, item=item, timestamp=timestamp)
    s = summ.reindex(keys)
    out.insert(0, "level", level)
    for col in ("n", "median_s", "ci_low", "ci_high", "q25_s", "q75_s", "mean_s", "n_events", "n_capped"):
        out[col] = s[col].to_numpy(dtype=float)
    out[["n", "n_events", "n_capped"]] = out[["n", "n_events", "n_capped"]].fillna(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["ratio_to_planned"] = np.where(out["planned_duration_s"] > 0, out["median_s"] / out["planned_duration_s"], np.nan)
    out["over_planned"] = pd.array(np.where(np.isfinite(out["ratio_to_planned"]), out["ratio_to_planned"] > over_factor,
                                            False), dtype="boolean")
    out.loc[~np.isfinite(out["ratio_to_planned"]), "over_planned"] = pd.NA
    small = out["n"] < min_cell_size
    out["suppressed_reason"] = np.where(small, f"fewer learners than the minimum cell size {min_cell_size} have a "
                                        "known time here: not reported", "")
    out.loc[small, ["n", "median_s", "ci_low", "ci_high", "q25_s", "q75_s", "mean_s", "ratio_to_planned",
                    "n_events", "n_capped"]] = np.nan
    out.loc[small, "over_planned"] = pd.NA
    for col in ("n", "n_events", "n_capped"):
        out[col] = pd.array(out[col].to_numpy(dtype=float), dtype="Float64").round().astype("Int64")
    out["method"] = f"sum of event durations capped at {cap_s:g} s per learner; median over learners"
    out.attrs.update(cap_s=cap_s, session_gap_s=session_gap_s, over_factor=over_factor,
                     events_without_duration=int(ev["seconds"].isna().sum()))
    return out[TIME_COLUMNS].reset_index(drop=True)
