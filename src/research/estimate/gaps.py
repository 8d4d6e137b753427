"""Gaps between groups of learners: facility, learning gain and completion by group.

Every group attribute of the ``learners`` table (gender, age band, role, region,
digital maturity) is broken down into its groups; each group's estimate comes with a
95% interval and its difference from a reference group (default the largest group) with
an interval and a p-value, Benjamini-Hochberg adjusted across all rows of the call.
Groups smaller than the minimum cell size are suppressed: the row is kept with every
number empty and a reason, so a reader sees that the group exists but not its size.

Intervals:

* means (facility, gain): Student t interval of the group mean; the difference from the
  reference by Welch's t (unequal variances).
* proportions (completion): Wilson (1927) score interval; the difference by Newcombe's
  (1998, method 10) hybrid score interval, its p-value by the two-proportion z-test.
  Against a target rate the one-sided exact binomial test of ``rate < target``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from research.errors import ConfigError, DataError
from research.stats import benjamini_hochberg, require_columns, wilson_interval
from research.privacy import protect_group_table

__all__ = ["GAP_COLUMNS", "equity_gaps", "group_gaps", "learner_facility", "learner_gain"]

GAP_COLUMNS = [
    "attribute",
    "group",
    "measure",
    "reference_group",
    "n",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "difference",
    "difference_ci_low",
    "difference_ci_high",
    "difference_p",
    "difference_p_adjusted",
    "target",
    "meets_target",
    "target_p",
    "method",
    "suppressed_reason",
]
_KINDS = ("mean", "proportion")
ALL = "all"


def _summaries(values: pd.DataFrame, kind: str, ci_level: float) -> pd.DataFrame:
    """Per ``key``: n, estimate, se, ci_low, ci_high, var (of the values), k (successes)."""
    g = values.groupby("key", sort=False)["value"]
    out = g.agg(n="size", estimate="mean", var=lambda s: s.var(ddof=1)).reset_index()
    n = out["n"].to_numpy(dtype=float)
    est = out["estimate"].to_numpy(dtype=float)
    if kind == "mean":
        var = out["var"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            se = np.sqrt(var / n)
            t = stats.t.ppf(0.5 + ci_level / 2, np.where(n > 1, n - 1, np.nan))
        out["se"] = se
        out["ci_low"], out["ci_high"] = est - t * se, est + t * se
        out["k"] = np.nan
    else:
        k = np.rint(est * n)
        out["k"] = k
        with np.errstate(invalid="ignore", divide="ignore"):
            out["se"] = np.sqrt(est * (1 - est) / n)
        out["ci_low"], out["ci_high"] = wilson_interval(k, n, ci_level)
    return out


def _learner_values(values: pd.DataFrame, *, value: str, learner: str, kind: str) -> pd.DataFrame:
    """``learner`` and numeric ``value``, one row per learner (missing values dropped), checked for ``kind``."""
    require_columns(values, {"learner": learner, "value": value}, "values")
    v = pd.DataFrame({"learner": values[learner].astype(str).to_numpy(),
                      "value": pd.to_numeric(values[value], errors="coerce").to_numpy(dtype=float, na_value=np.nan)})
    v = v.dropna(subset=["value"])
    if v["learner"].duplicated().any():
        dup = v.loc[v["learner"].duplicated(), "learner"].iloc[0]
        raise DataError(f"values has more than one row for learner {dup!r}; group_gaps needs one value per learner")
    if kind == "proportion" and not v["value"].isin([0.0, 1.0]).all():
        bad = v.loc[~v["value"].isin([0.0, 1.0]), "value"].iloc[0]
        raise DataError(f"values column {value!r} must be 0/1 for kind='proportion'; found {bad!r}")
    return v


def _add_differences(out: pd.DataFrame, kind: str, ci_level: float) -> None:
    """Each group minus the reference group of its attribute (Welch for means, Newcombe for proportions)."""
    ref_rows = out[(out["attribute"] != ALL) & (out["group"] == out["reference_group"])].set_index("attribute")
    r = ref_rows.reindex(out["attribute"])
    ref_ok = (r["suppressed_reason"].fillna("x") == "").to_numpy()
    is_cmp = ((out["attribute"] != ALL) & (out["group"] != out["reference_group"])).to_numpy() & ref_ok
    n1, n0 = out["n"].to_numpy(float), r["n"].to_numpy(float)
    e1, e0 = out["estimate"].to_numpy(float), r["estimate"].to_numpy(float)
    diff = e1 - e0
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "mean":
            v1, v0 = out["var"].to_numpy(float) / n1, r["var"].to_numpy(float) / n0
            se = np.sqrt(v1 + v0)
            df = (v1 + v0) ** 2 / (v1**2 / (n1 - 1) + v0**2 / (n0 - 1))
            t = stats.t.ppf(0.5 + ci_level / 2, df)
            lo, hi = diff - t * se, diff + t * se
            p = 2 * stats.t.sf(np.abs(diff / se), df)
        else:
            l1, u1 = out["ci_low"].to_numpy(float), out["ci_high"].to_numpy(float)
            l0, u0 = r["ci_low"].to_numpy(float), r["ci_high"].to_numpy(float)
            lo = diff - np.sqrt((e1 - l1) ** 2 + (u0 - e0) ** 2)
            hi = diff + np.sqrt((u1 - e1) ** 2 + (e0 - l0) ** 2)
            pooled = (out["k"].to_numpy(float) + r["k"].to_numpy(float)) / (n1 + n0)
            se_pool = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
            p = np.where(se_pool > 0, 2 * stats.norm.sf(np.abs(diff / se_pool)), np.where(diff == 0, 1.0, 0.0))
    out["difference"] = np.where(is_cmp, diff, np.nan)
    out["difference_ci_low"] = np.where(is_cmp, lo, np.nan)
    out["difference_ci_high"] = np.where(is_cmp, hi, np.nan)
    out["difference_p"] = np.where(is_cmp, p, np.nan)


def _add_target(out: pd.DataFrame, target: float | None) -> None:
    """``target``, ``meets_target`` and the one-sided exact binomial ``target_p`` (empty without a target)."""
    if target is not None:
        out["target"] = float(target)
        out["meets_target"] = pd.array(out["estimate"] >= float(target), dtype="boolean")
        out["target_p"] = stats.binom.cdf(out["k"].to_numpy(float), out["n"].to_numpy(float), float(target))
    else:
        out["target"] = np.nan
        out["meets_target"] = pd.array([pd.NA] * len(out), dtype="boolean")
        out["target_p"] = np.nan


def _check_gap_settings(kind: str, target: float | None, min_cell_size: int) -> None:
    """Check :func:`group_gaps`' ``kind``, ``target`` and ``min_cell_size`` (a ConfigError names the bad one)."""
    if kind not in _KINDS:
        raise ConfigError(f"kind={kind!r} is not known; use one of {list(_KINDS)}")
    if target is not None and (kind != "proportion" or not 0 < float(target) < 1):
        raise ConfigError(f"target={target!r} needs kind='proportion' and a rate strictly between 0 and 1")
    if int(min_cell_size) < 1:
        raise ConfigError(f"min_cell_size={min_cell_size!r} must be at least 1")


def group_gaps(
    values: pd.DataFrame,
    learners: pd.DataFrame,
    *,
    value: str = "value",
    measure: str = "value",
    kind: str = "mean",
    attributes: list[str] | str | None = None,
    reference: dict[str, str] | None = None,
    learner: str = "learner_id",
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    target: float | None = None,
) -> pd.DataFrame:
    """One learner-level measure broken down by every group attribute.

    Parameters
    ----------
    values : DataFrame
        One row per learner: ``learner`` and ``value`` (a number, or 0/1 for
        ``kind="proportion"``). Learners missing from ``learners`` count in the overall row
        only.
    learners : DataFrame
        ``learner`` plus the group attribute columns.
    measure : str
        Name written to the ``measure`` column (``facility``, ``gain``, ``completion``).
    kind : {"mean", "proportion"}
        How intervals and differences are computed (see module docstring).
    attributes, reference
        As in :func:`research.estimate.dif.mantel_haenszel_dif`: default every learner
        attribute with values, and the largest group as reference.
    min_cell_size : int
        Groups (and the whole cohort) with fewer learners are suppressed.
    target : float, optional
        A target rate (proportions only), e.g. 0.8 for an 80% completion target.

    Returns
    -------
    DataFrame
        ``attribute``, ``group`` (``all``/``all`` for the whole cohort), ``measure``,
        ``reference_group``, ``n``, ``estimate``, ``se``, ``ci_low``, ``ci_high``,
        ``difference`` (group minus reference), ``difference_ci_low``,
        ``difference_ci_high``, ``difference_p``, ``difference_p_adjusted``
        (Benjamini-Hochberg over the rows of this call), ``target``, ``meets_target``
        (estimate >= target), ``target_p`` (one-sided exact binomial p of rate < target),
        ``method``, ``suppressed_reason``.
    """
    _check_gap_settings(kind, target, min_cell_size)
    v = _learner_values(values, value=value, learner=learner, kind=kind)
    keyed, refs = _keyed_values(v, learners, learner=learner, attributes=attributes, reference=reference)
    out = _group_rows(keyed, refs, kind=kind, measure=measure, min_cell_size=min_cell_size, ci_level=ci_level)
    _add_differences(out, kind, ci_level)
    _add_target(out, target)
    _empty_suppressed(out)
    out["difference_p_adjusted"] = benjamini_hochberg(out["difference_p"])
    out["method"] = _gap_method(kind, target)
    return _ordered_and_protected(out, list(refs), min_cell_size)


def _keyed_values(v: pd.DataFrame, learners: pd.DataFrame, *, learner: str, attributes,
                  reference) -> tuple[pd.DataFrame, dict[str, str]]:
    """One long frame of (key, value), key ``attribute\x1fgroup``: the whole cohort plus each
    attribute's groups; and each attribute's reference group."""
    from research.estimate.dif import group_comparisons

    parts = [v.assign(key=f"{ALL}\x1f{ALL}")[["key", "value"]]]
    refs: dict[str, str] = {}
    comps = group_comparisons(learners, learner, attributes, reference, None) if len(learners) else []
    seen = set()
    for attr, ref, _foc, group in comps:
        refs[attr] = ref
        if attr in seen:
            continue
        seen.add(attr)
        g = group.reindex(v["learner"].to_numpy())
        ok = g.notna().to_numpy()
        parts.append(pd.DataFrame({"key": attr + "\x1f" + g[ok].astype(str).to_numpy(), "value": v["value"].to_numpy()[ok]}))
    return pd.concat(parts, ignore_index=True), refs


def _group_rows(keyed: pd.DataFrame, refs: dict[str, str], *, kind: str, measure: str, min_cell_size: int,
                ci_level: float) -> pd.DataFrame:
    """One row per key of ``keyed`` (:func:`_keyed_values`): its summary (:func:`_summaries`) with
    ``attribute``, ``group``, ``reference_group``, ``measure`` and the ``suppressed_reason`` of a
    cell below ``min_cell_size``."""
    out = _summaries(keyed, kind, ci_level)
    out[["attribute", "group"]] = out["key"].str.split("\x1f", n=1, expand=True)
    out["reference_group"] = out["attribute"].map(pd.Series(refs, dtype="string")).astype("string").fillna("")
    out["measure"] = measure
    out["suppressed_reason"] = np.where(
        out["n"] < min_cell_size,
        np.where(out["attribute"] == ALL, f"the cohort has fewer learners than the minimum cell size {min_cell_size}",
                 f"group has fewer learners than the minimum cell size {min_cell_size}: not reported"),
        "",
    )
    return out


def _empty_suppressed(out: pd.DataFrame) -> None:
    """Every number of a suppressed row emptied (``meets_target`` too), and ``n`` as Int64."""
    suppressed = out["suppressed_reason"] != ""
    numeric = ["n", "estimate", "se", "ci_low", "ci_high", "difference", "difference_ci_low", "difference_ci_high",
               "difference_p", "target_p"]
    out.loc[suppressed, numeric] = np.nan
    out.loc[suppressed, "meets_target"] = pd.NA
    out["n"] = pd.array(out["n"].to_numpy(float), dtype="Float64").round().astype("Int64")


def _gap_method(kind: str, target: float | None) -> str:
    """The ``method`` of the gap rows: the interval and difference of ``kind`` (and the target test)."""
    if kind == "mean":
        return "mean with t interval; Welch difference"
    return "proportion with Wilson interval; Newcombe difference" + (
        "; exact binomial test against target" if target is not None else "")


def _ordered_and_protected(out: pd.DataFrame, attributes: list[str], min_cell_size: int) -> pd.DataFrame:
    """The gap rows in report order (whole cohort first, then ``attributes`` in the order
    analysed, reference group first), with complementary suppression."""
    order = {a: i for i, a in enumerate([ALL, *attributes])}
    out["_a"] = out["attribute"].map(order)
    out["_r"] = (out["group"] != out["reference_group"]).astype(int)
    out = out.sort_values(["_a", "_r", "group"], kind="stable").reset_index(drop=True)
    # complementary suppression: the groups of an attribute add up to the whole cohort's n,
    # so one hidden group would otherwise be the total minus the others
    out = protect_group_table(
        out[GAP_COLUMNS], count="n", sets=["measure", "attribute"], is_total=(out["attribute"] == ALL).to_numpy(),
        keep=["attribute", "group", "measure", "reference_group", "target", "method"], min_cell_size=min_cell_size,
    )
    out["suppressed_reason"] = out["suppressed_reason"].fillna("")
    return out[GAP_COLUMNS]


def learner_facility(responses: pd.DataFrame, *, learner: str = "learner_id", correct: str = "correct") -> pd.DataFrame:
    """Each learner's facility: share of first-attempt responses that are correct.

    Returns
    -------
    DataFrame
        ``learner``, ``value`` (share correct), ``n_items``.
    """

    require_columns(responses, {"learner": learner, "correct": correct}, "responses")
    y = pd.to_numeric(responses[correct], errors="coerce").astype(float)
    g = y.groupby(responses[learner].astype(str).to_numpy())
    out = pd.DataFrame({"value": g.mean(), "n_items": g.count()}).rename_axis(learner).reset_index()
    return out


def learner_gain(
    assessments: pd.DataFrame,
    *,
    learner: str = "learner_id",
    phase: str = "phase",
    score: str = "score",
    max_score: str = "max_score",
    pre: str = "pre",
    post: str = "post",
    instrument: str | None = None,
    instrument_col: str = "instrument",
) -> pd.DataFrame:
    """Each learner's raw gain: post-test minus pre-test share of the maximum score.

    Only instruments a learner took in both phases count, so a learner who skipped a
    post-test on one module is not given a loss. ``instrument`` restricts to one.

    Returns
    -------
    DataFrame
        ``learner``, ``value`` (gain in share of the maximum, -1..1), ``pre``, ``post``.
    """

    require_columns(assessments, {"learner": learner, "phase": phase, "score": score, "max_score": max_score,
                                   "instrument_col": instrument_col}, "assessments")
    a = assessments
    if instrument is not None:
        known = sorted(map(str, a[instrument_col].dropna().unique()))
        if str(instrument) not in known:
            raise ConfigError(f"instrument {instrument!r} is not in assessments; instruments: {known}")
        a = a[a[instrument_col].astype(str) == str(instrument)]
    a = a[a[phase].astype(str).isin([pre, post])]
    if a.empty:
        raise DataError(f"assessments has no rows in phases {pre!r} and {post!r}; phases found: "
                        f"{sorted(map(str, assessments[phase].dropna().unique()))}")
    tot = (
        pd.DataFrame({"learner": a[learner].astype(str).to_numpy(), "instr": a[instrument_col].astype(str).to_numpy(),
                      "phase": a[phase].astype(str).to_numpy(), "s": pd.to_numeric(a[score]).to_numpy(float),
                      "m": pd.to_numeric(a[max_score]).to_numpy(float)})
        .groupby(["learner", "instr", "phase"])[["s", "m"]].sum()
        .unstack("phase")
    )
    both = tot[[("s", pre), ("s", post)]].notna().all(axis=1)
    tot = tot[both]
    per = tot.groupby(level="learner").sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        pre_share = per[("s", pre)] / per[("m", pre)]
        post_share = per[("s", post)] / per[("m", post)]
    out = pd.DataFrame({"value": post_share - pre_share, "pre": pre_share, "post": post_share})
    return out.rename_axis(learner).reset_index().dropna(subset=["value"])


def equity_gaps(
    responses: pd.DataFrame | None,
    learners: pd.DataFrame,
    *,
    assessments: pd.DataFrame | None = None,
    completion: pd.DataFrame | None = None,
    completion_target: float | None = 0.8,
    attributes: list[str] | str | None = None,
    reference: dict[str, str] | None = None,
    learner: str = "learner_id",
    min_cell_size: int = 10,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Facility, learning gain and completion by group in one tidy table (``gaps.csv``).

    Parameters
    ----------
    responses : DataFrame or None
        First-attempt responses (learner, correct), e.g. from
        :func:`research.estimate.dif.first_attempt_responses`; facility is skipped if None.
    assessments : DataFrame, optional
        Canonical assessments; the gain (post minus pre share) is added when both phases exist.
    completion : DataFrame, optional
        One row per learner with a 0/1 ``completed`` column, e.g. from
        :func:`research.estimate.engagement.learner_completion`.
    completion_target : float or None
        Target completion rate (e.g. 0.8).

    Returns
    -------
    DataFrame
        The columns of :func:`group_gaps`, rows for each measure; ``difference_p_adjusted``
        is Benjamini-Hochberg over all measures together.
    """

    common = dict(attributes=attributes, reference=reference, learner=learner, min_cell_size=min_cell_size, ci_level=ci_level)
    frames = []
    if responses is not None:
        frames.append(group_gaps(learner_facility(responses, learner=learner), learners, measure="facility", **common))
    if assessments is not None and len(assessments):
        phases = set(map(str, assessments["phase"].dropna().unique())) if "phase" in assessments else set()
        if {"pre", "post"} <= phases:
            gains = learner_gain(assessments, learner=learner)
            if len(gains):
                frames.append(group_gaps(gains, learners, measure="gain", **common))
    if completion is not None:
        comp = completion.rename(columns={"completed": "value"})
        comp = comp.assign(value=comp["value"].astype(float))
        frames.append(group_gaps(comp, learners, measure="completion", kind="proportion",
                                 target=completion_target, **common))
    if not frames:
        raise DataError("equity_gaps was given nothing to compare: pass responses, assessments or completion")
    out = pd.concat(frames, ignore_index=True)
    out["difference_p_adjusted"] = benjamini_hochberg(out["difference_p"])
    return out
