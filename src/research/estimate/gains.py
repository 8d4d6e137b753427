"""Learning gains from pre/post (and optional mid) tests, classical and Bayesian.

The pieces, from the learner up:

* :func:`learner_scores` sums the canonical ``assessments`` table to one score per
  learner x instrument x phase (``item_id == "total"`` rows are totals and win over item
  rows of the same learner, instrument and phase) and spreads the phases into columns.
* :func:`learner_gains` adds each learner's raw gain, Hake's normalized gain
  ``g = (post - pre) / (max - pre)`` and Marx and Cummings' normalized change ``c``.
  A learner at ceiling on the pre-test has no ``g`` (never a division by zero): the
  ``g_status`` column says why; ``c`` is the ceiling-robust alternative.
* :func:`paired_statistics` is the per-cell arithmetic (vectorised over cells): means,
  raw gain with its t interval, Hake's g both ways, c, Cohen's d_z and d_av, Hedges'
  g, the paired t-test and the Wilcoxon signed-rank test.
* :func:`gain_summary` is the report table: one row per module (instrument) and group,
  small groups suppressed, every number resting on a stated n.
* :func:`attrition` counts learners with a pre-test and no post-test and compares them
  with completers on pre-test score and group.
* :func:`ancova` (post on pre plus group, statsmodels OLS) and
  :func:`gain_mixed_model` (statsmodels MixedLM with module and cohort effects).
* :class:`BayesianGainModel` partially pools the gain across modules and groups in PyMC.

All scores are put on the proportion-of-maximum scale (0 to 1) before gains are taken,
so instruments with different maxima can sit in one table; when pre and post have the
same maximum, d_z, d_av, the t-test and the Wilcoxon test are the same as on raw points.

References: Hake (1998), Am. J. Phys. 66, 64-74 (normalized gain, bands low < 0.3 <=
medium < 0.7 <= high, defined on class averages). Marx & Cummings (2007), Am. J. Phys.
75, 87-91 (normalized change). Lakens (2013), Front. Psychol. 4:863 (d_z, d_av,
Hedges' correction). Borenstein et al. (2009), Introduction to Meta-Analysis, eq. 4.28
(variance of d in matched designs). Cumming & Finch (2001) (noncentral-t interval of d_z).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from research.errors import ConfigError, DataError
from research.errors import show_value as _show
from research.privacy import protect_group_table
from research.privacy import suppress_small_rows as _suppress
from research.stats import noncentral_t_interval as _nct_ci
from research.stats import require_columns

__all__ = [
    "BayesianGainModel", "ancova", "ancova_table", "attrition", "gain_mixed_model", "gain_summary",
    "gains_with_groups", "group_columns", "hake_band", "learner_gains", "learner_scores", "normalized_change",
    "normalized_gain", "paired_statistics", "summarise_scores",
]

PHASES = ("pre", "mid", "post")
ALL = "all"


# --------------------------------------------------------------------------- helpers


def _as_list(group: str | Sequence[str] | None) -> list[str]:
    if group is None:
        return []
    if isinstance(group, str):
        return [group]
    return list(group)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must lie strictly between 0 and 1, got {level!r}")


def _require_pre_post(data: pd.DataFrame, pre: str, post: str, what: str, *, by: Sequence[str] = (),
                      group: Sequence[str] = (), module: str | None = None) -> None:
    """The pre- and post-score columns (then ``module``, the ``by`` and ``group`` columns) must be in ``data``."""
    named = {"pre": pre, "post": post, **({"module": module} if module is not None else {})}
    named.update({f"by[{i}]": b for i, b in enumerate(by)})
    named.update({f"group[{i}]": g for i, g in enumerate(group)})
    require_columns(data, named, what)


def _check_min_cell(min_cell_size: int) -> None:
    if min_cell_size is None or int(min_cell_size) < 1:
        raise ConfigError(f"min_cell_size must be a whole number of at least 1, got {min_cell_size!r}")


def hake_band(g) -> np.ndarray:
    """Hake's (1998) band of a class-average normalized gain: 'low' below 0.3, 'medium'
    from 0.3 up to (not including) 0.7, 'high' at 0.7 and above; missing stays missing."""
    g = np.asarray(g, dtype=float)
    out = np.full(g.shape, None, dtype=object)
    out[g < 0.3] = "low"
    out[(g >= 0.3) & (g < 0.7)] = "medium"
    out[g >= 0.7] = "high"
    return out


def normalized_gain(pre, post, max_score=1.0) -> np.ndarray:
    """Hake's g = (post - pre) / (max - pre), NaN (not an error, not inf) where pre == max."""
    pre = np.asarray(pre, dtype=float)
    post = np.asarray(post, dtype=float)
    room = np.asarray(max_score, dtype=float) - pre
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(room > 0, (post - pre) / np.where(room > 0, room, 1.0), np.nan)


def normalized_change(pre, post, max_score=1.0) -> np.ndarray:
    """Marx & Cummings' (2007) normalized change c.

    ``(post - pre) / (max - pre)`` when post > pre, ``(post - pre) / pre`` when
    post < pre, 0 when post == pre; NaN where pre == post == max or pre == post == 0
    (they drop those learners).
    """
    pre = np.asarray(pre, dtype=float)
    post = np.asarray(post, dtype=float)
    mx = np.broadcast_to(np.asarray(max_score, dtype=float), pre.shape)
    up = post > pre
    down = post < pre
    same = post == pre
    out = np.full(pre.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(up, (post - pre) / np.where(up, mx - pre, 1.0), out)
        out = np.where(down, (post - pre) / np.where(down, pre, 1.0), out)
    at_bound = same & ((pre == mx) | (pre == 0))
    out = np.where(same & ~at_bound, 0.0, out)
    return out


def hedges_j(df) -> np.ndarray:
    """Exact small-sample correction J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2))."""
    df = np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        out = np.exp(special.gammaln(df / 2) - 0.5 * np.log(df / 2) - special.gammaln((df - 1) / 2))
    return np.where(df > 1, out, np.nan)


# --------------------------------------------------------------------------- scores


def _checked_scores(df: pd.DataFrame, *, learner: str, instrument: str, phase: str, score: str,
                    max_score: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Phases, scores and maximum scores of an assessments table, checked (a ``DataError`` names the row)."""
    ph = df[phase].astype("string")
    bad_phase = sorted(set(ph.dropna().unique()) - set(PHASES))
    if bad_phase or ph.isna().any():
        shown = bad_phase or ["<missing>"]
        raise DataError(f"column {phase!r} holds phase value(s) {shown[:5]}; valid phases are {list(PHASES)}")
    sc = pd.to_numeric(df[score], errors="coerce").astype(float)
    mx = pd.to_numeric(df[max_score], errors="coerce").astype(float)
    for name, values in ((score, sc), (max_score, mx)):
        bad = values.isna() | (values < 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"column {name!r}, row {row}: value {_show(df[name].iloc[row])} is not a number of at least 0; "
                "scores and maximum scores must be non-negative numbers"
            )
    over = (sc > mx + 1e-9).to_numpy()
    if over.any():
        row = int(np.flatnonzero(over)[0])
        raise DataError(
            f"row {row}: score {float(sc.iloc[row])!r} is above its max_score {float(mx.iloc[row])!r} "
            f"(learner {df[learner].iloc[row]!r}, instrument {df[instrument].iloc[row]!r}); a score must lie in 0..max_score"
        )
    return ph, sc, mx


def _instrument_modules(df: pd.DataFrame, instrument: str, module: str) -> pd.Series | None:
    """instrument -> its one module (the instrument itself where the module is missing); None without a module column."""
    if module not in df.columns:
        return None
    mod = pd.DataFrame({"i": df[instrument].astype("string"), "m": df[module].astype("string")})
    mod["m"] = mod["m"].fillna(mod["i"])
    per = mod.drop_duplicates().groupby("i", observed=True)["m"]
    n_mod = per.nunique()
    if (n_mod > 1).any():
        inst = n_mod.index[n_mod > 1][0]
        raise DataError(
            f"instrument {inst!r} is tagged with several modules {sorted(per.get_group(inst).unique())}; "
            "each instrument must measure one module (or none)"
        )
    return per.first()


def learner_scores(
    assessments: pd.DataFrame,
    *,
    learner: str = "learner_id",
    instrument: str = "instrument",
    module: str = "module",
    phase: str = "phase",
    item: str = "item_id",
    score: str = "score",
    max_score: str = "max_score",
    cohort: str | None = "cohort",
) -> pd.DataFrame:
    """One row per learner x instrument with the score of each phase.

    Item scores are summed per learner x instrument x phase; where a ``total`` row exists
    for that learner, instrument and phase it is the score, and the item rows beside it
    are not added (their count is in ``attrs["item_rows_beside_total"]``).

    Returns
    -------
    DataFrame with columns
        cohort (when the input has one), learner_id, instrument, module (the instrument
        when the module is missing), and for each phase present among pre, mid, post:
        ``<phase>`` (points), ``<phase>_max`` (points possible), ``<phase>_pct``
        (points / points possible, 0 to 1). A phase the learner did not take is missing.
    """
    cols = {"learner": learner, "instrument": instrument, "phase": phase, "item": item,
            "score": score, "max_score": max_score}
    require_columns(assessments, cols, "assessments")
    if len(assessments) == 0:
        raise DataError("the assessments table is empty: there are no test scores to compute gains from")
    df = assessments
    ph, sc, mx = _checked_scores(df, learner=learner, instrument=instrument, phase=phase, score=score, max_score=max_score)

    has_cohort = cohort is not None and cohort in df.columns
    key_cols = ([cohort] if has_cohort else []) + [learner, instrument]
    work = pd.DataFrame({c: df[c].astype("string") for c in key_cols})
    work["_phase"] = ph
    is_total = (df[item].astype("string").str.lower() == "total").fillna(False).to_numpy()
    work["_tot_s"] = np.where(is_total, sc, 0.0)
    work["_tot_m"] = np.where(is_total, mx, 0.0)
    work["_tot_n"] = is_total.astype(int)
    work["_it_s"] = np.where(is_total, 0.0, sc)
    work["_it_m"] = np.where(is_total, 0.0, mx)
    work["_it_n"] = (~is_total).astype(int)
    agg = work.groupby(key_cols + ["_phase"], sort=False, observed=True).sum()
    use_total = agg["_tot_n"] > 0
    agg["_s"] = np.where(use_total, agg["_tot_s"], agg["_it_s"])
    agg["_m"] = np.where(use_total, agg["_tot_m"], agg["_it_m"])
    beside = int(agg.loc[use_total, "_it_n"].sum())

    mod_map = _instrument_modules(df, instrument, module)  # module of each instrument (None: no module column)
    wide = agg[["_s", "_m"]].unstack("_phase")
    phases = [p for p in PHASES if p in wide.columns.get_level_values(1)]
    out = wide.index.to_frame(index=False)
    out.columns = (["cohort"] if has_cohort else []) + ["learner_id", "instrument"]
    for p in phases:
        s = wide[("_s", p)].to_numpy(dtype=float)
        m = wide[("_m", p)].to_numpy(dtype=float)
        out[p] = s
        out[f"{p}_max"] = m
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"{p}_pct"] = np.where(m > 0, s / np.where(m > 0, m, 1.0), np.nan)
        zero_max = np.isfinite(m) & (m <= 0)
        if zero_max.any():
            r = int(np.flatnonzero(zero_max)[0])
            raise DataError(
                f"learner {out['learner_id'].iloc[r]!r}, instrument {out['instrument'].iloc[r]!r}, phase {p!r}: "
                "the maximum possible score is 0, so no proportion can be formed; give max_score > 0"
            )
    out.insert(len(key_cols), "module", out["instrument"].map(mod_map) if mod_map is not None else out["instrument"])
    out["module"] = out["module"].astype("string").fillna(out["instrument"])
    out = out.sort_values(list(out.columns[: len(key_cols)])).reset_index(drop=True)
    out.attrs["item_rows_beside_total"] = beside
    return out


def learner_gains(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-learner gains from :func:`learner_scores` output (learners with pre and post).

    Returns
    -------
    DataFrame: the id columns of ``scores``, then pre_pct, post_pct, (mid_pct),
        gain (post_pct - pre_pct, proportion of maximum), gain_points (post - pre in
        points, missing when pre and post have different maxima), g (Hake, missing at
        pre-test ceiling), g_status ('ok' or 'pre_at_ceiling'), c (Marx and Cummings),
        c_status ('ok' or 'equal_at_bound': pre == post == 0 or max, which they drop).
        ``attrs`` count the learners left out for lack of a pre or post score.
    """
    for col in ("pre_pct", "post_pct"):
        if col not in scores.columns:
            raise DataError(
                f"no {col.split('_')[0]!r} phase in the scores (columns {list(scores.columns)}); "
                "gains need both a 'pre' and a 'post' test"
            )
    both = scores["pre_pct"].notna() & scores["post_pct"].notna()
    ids = [c for c in ("cohort", "learner_id", "instrument", "module") if c in scores.columns]
    out = scores.loc[both, ids].reset_index(drop=True)
    pre = scores.loc[both, "pre_pct"].to_numpy(dtype=float)
    post = scores.loc[both, "post_pct"].to_numpy(dtype=float)
    out["pre_pct"] = pre
    if "mid_pct" in scores.columns:
        out["mid_pct"] = scores.loc[both, "mid_pct"].to_numpy(dtype=float)
    out["post_pct"] = post
    out["gain"] = post - pre
    same_max = (scores.loc[both, "pre_max"].to_numpy(dtype=float) == scores.loc[both, "post_max"].to_numpy(dtype=float))
    out["gain_points"] = np.where(
        same_max, scores.loc[both, "post"].to_numpy(dtype=float) - scores.loc[both, "pre"].to_numpy(dtype=float), np.nan
    )
    ceiling = pre >= 1.0
    out["g"] = normalized_gain(pre, post, 1.0)
    out["g_status"] = pd.array(np.where(ceiling, "pre_at_ceiling", "ok"), dtype="string")
    out["c"] = normalized_change(pre, post, 1.0)
    out["c_status"] = pd.array(np.where(np.isnan(out["c"].to_numpy()), "equal_at_bound", "ok"), dtype="string")
    out.attrs.update(
        n_paired=int(both.sum()),
        n_pre_only=int((scores["pre_pct"].notna() & scores["post_pct"].isna()).sum()),
        n_post_only=int((scores["pre_pct"].isna() & scores["post_pct"].notna()).sum()),
        n_pre_at_ceiling=int(ceiling.sum()),
    )
    return out


# --------------------------------------------------------------------------- per-cell statistics


def paired_statistics(
    data: pd.DataFrame,
    *,
    by: Sequence[str] = (),
    pre: str = "pre_pct",
    post: str = "post_pct",
    g: str | None = "g",
    c: str | None = "c",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Paired pre/post statistics per cell of ``by`` (one row per cell; vectorised).

    ``data`` holds one row per learner (per cell) with ``pre`` and ``post`` scores;
    ``g`` and ``c`` name per-learner normalized gain and change columns (as made by
    :func:`learner_gains`); pass None to compute them here from ``pre`` and ``post``
    on the 0..1 scale.

    Returns
    -------
    DataFrame with the ``by`` columns, then
        n (learners with pre and post), pre_mean, pre_sd, post_mean, post_sd, r_pre_post,
        gain, gain_se, gain_ci_low, gain_ci_high (mean paired difference, t interval),
        g_avg (mean of individual g), g_avg_ci_low, g_avg_ci_high, n_g (learners with a g,
        i.e. not at pre-test ceiling), n_pre_at_ceiling,
        g_class (Hake's g of the class averages), g_class_ci_low, g_class_ci_high (delta
        method), hake_band (of g_class),
        c_avg, c_avg_ci_low, c_avg_ci_high, n_c,
        d_z, d_z_ci_low, d_z_ci_high (noncentral-t interval), d_av, d_av_ci_low, d_av_ci_high,
        hedges_g (J x d_av), hedges_g_ci_low, hedges_g_ci_high,
        t, df, p_t (paired t-test, two-sided), wilcoxon_v (sum of positive ranks),
        p_wilcoxon (two-sided; exact when under 50 nonzero differences without ties or
        zeros, else normal approximation with tie and continuity correction, as R's
        wilcox.test).
    """
    _check_level(ci_level)
    by = list(by)
    _require_pre_post(data, pre, post, "gains", by=by)
    d, diff = _paired_terms(data, by, pre, post, g, c)
    if by:
        s = d.groupby(by, sort=True, observed=True, dropna=False).sum(numeric_only=True)
        out = s.index.to_frame(index=False)
    else:
        s = d.drop(columns=[]).sum(numeric_only=True).to_frame().T
        out = pd.DataFrame(index=range(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        m = _paired_moments(s, ci_level)
        _score_and_gain_columns(out, s, m, ci_level)
        _effect_size_columns(out, m, ci_level)
    v, pw = _wilcoxon_by(d, by, diff)
    out["wilcoxon_v"], out["p_wilcoxon"] = v, pw
    return out


def _paired_terms(data: pd.DataFrame, by: list[str], pre: str, post: str, g: str | None,
                  c: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per learner with pre and post: the ``by`` columns and the terms whose sums give every
    statistic (counts, sums, squares, cross products); and the paired differences."""
    d = pd.DataFrame({b: data[b].to_numpy() for b in by}, index=pd.RangeIndex(len(data)))
    x = data[pre].to_numpy(dtype=float)
    y = data[post].to_numpy(dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    d = d.loc[keep].reset_index(drop=True)
    x, y = x[keep], y[keep]
    gi = data[g].to_numpy(dtype=float)[keep] if g else normalized_gain(x, y, 1.0)
    ci = data[c].to_numpy(dtype=float)[keep] if c else normalized_change(x, y, 1.0)
    diff = y - x
    d["_one"] = 1.0
    d["_x"], d["_y"], d["_xx"], d["_yy"], d["_xy"] = x, y, x * x, y * y, x * y
    d["_d"], d["_dd"] = diff, diff * diff
    gok = np.isfinite(gi)
    cok = np.isfinite(ci)
    d["_gn"], d["_g"], d["_gg"] = gok.astype(float), np.where(gok, gi, 0.0), np.where(gok, gi * gi, 0.0)
    d["_cn"], d["_c"], d["_cc"] = cok.astype(float), np.where(cok, ci, 0.0), np.where(cok, ci * ci, 0.0)
    d["_ceil"] = (x >= 1.0).astype(float)
    return d, diff


def _paired_moments(s: pd.DataFrame, ci_level: float) -> dict[str, np.ndarray]:
    """Means, variances, covariance and correlation of pre and post, and the paired difference, per cell."""
    n = s["_one"].to_numpy()
    mx, my = s["_x"].to_numpy() / n, s["_y"].to_numpy() / n
    vx = (s["_xx"].to_numpy() - n * mx**2) / (n - 1)
    vy = (s["_yy"].to_numpy() - n * my**2) / (n - 1)
    cxy = (s["_xy"].to_numpy() - n * mx * my) / (n - 1)
    vx, vy = np.maximum(vx, 0), np.maximum(vy, 0)
    md = s["_d"].to_numpy() / n
    vd = np.maximum((s["_dd"].to_numpy() - n * md**2) / (n - 1), 0)
    return {"n": n, "mx": mx, "my": my, "vx": vx, "vy": vy, "cxy": cxy, "md": md, "sd_d": np.sqrt(vd),
            "r": cxy / np.sqrt(vx * vy), "df": n - 1, "zq": stats.norm.ppf(1 - (1 - ci_level) / 2)}


def _mean_ci(sn, s1, s2, ci_level: float):
    """Mean and t interval from a count, a sum and a sum of squares."""
    m = s1 / sn
    v = np.maximum((s2 - sn * m**2) / (sn - 1), 0)
    se = np.sqrt(v / sn)
    q = stats.t.ppf(1 - (1 - ci_level) / 2, np.where(sn >= 2, sn - 1, np.nan))
    m = np.where(sn >= 1, m, np.nan)
    return m, m - q * se, m + q * se


def _score_and_gain_columns(out: pd.DataFrame, s: pd.DataFrame, m: dict, ci_level: float) -> None:
    """n, pre and post means, the mean gain, g_avg, g_class (delta method) and c_avg with their intervals."""
    n, mx, my, vx, vy, cxy, zq = m["n"], m["mx"], m["my"], m["vx"], m["vy"], m["cxy"], m["zq"]
    tq = stats.t.ppf(1 - (1 - ci_level) / 2, np.where(m["df"] >= 1, m["df"], np.nan))
    se_d = m["sd_d"] / np.sqrt(n)
    out["n"] = n.astype(int)
    out["pre_mean"], out["pre_sd"] = mx, np.sqrt(vx)
    out["post_mean"], out["post_sd"] = my, np.sqrt(vy)
    out["r_pre_post"] = m["r"]
    out["gain"], out["gain_se"] = m["md"], se_d
    out["gain_ci_low"], out["gain_ci_high"] = m["md"] - tq * se_d, m["md"] + tq * se_d
    gn = s["_gn"].to_numpy()
    out["g_avg"], out["g_avg_ci_low"], out["g_avg_ci_high"] = _mean_ci(gn, s["_g"].to_numpy(), s["_gg"].to_numpy(), ci_level)
    out["n_g"] = gn.astype(int)
    out["n_pre_at_ceiling"] = s["_ceil"].to_numpy().astype(int)
    room = 1.0 - mx
    g_class = np.where(room > 0, (my - mx) / np.where(room > 0, room, 1.0), np.nan)
    dq = 1.0 / room
    dp = (my - 1.0) / room**2
    var_g = (dq**2 * vy + dp**2 * vx + 2 * dq * dp * cxy) / n
    se_gc = np.sqrt(np.maximum(var_g, 0))
    out["g_class"] = g_class
    out["g_class_ci_low"] = np.where(room > 0, g_class - zq * se_gc, np.nan)
    out["g_class_ci_high"] = np.where(room > 0, g_class + zq * se_gc, np.nan)
    out["hake_band"] = pd.array(hake_band(g_class), dtype="string")
    cn = s["_cn"].to_numpy()
    out["c_avg"], out["c_avg_ci_low"], out["c_avg_ci_high"] = _mean_ci(cn, s["_c"].to_numpy(), s["_cc"].to_numpy(), ci_level)
    out["n_c"] = cn.astype(int)


def _effect_size_columns(out: pd.DataFrame, m: dict, ci_level: float) -> None:
    """d_z (noncentral-t interval), d_av and Hedges' g, and the paired t-test."""
    n, md, df, zq = m["n"], m["md"], m["df"], m["zq"]
    dz = md / m["sd_d"]
    dz = np.where(np.isfinite(dz), dz, np.nan)
    t = dz * np.sqrt(n)
    lo, hi = _nct_ci(t, df, ci_level)
    out["d_z"], out["d_z_ci_low"], out["d_z_ci_high"] = dz, lo / np.sqrt(n), hi / np.sqrt(n)
    s_av = (np.sqrt(m["vx"]) + np.sqrt(m["vy"])) / 2
    dav = md / s_av
    dav = np.where(np.isfinite(dav), dav, np.nan)
    r_use = np.where(np.isfinite(m["r"]), m["r"], 0.0)
    se_dav = np.sqrt((1 / n + dav**2 / (2 * n)) * 2 * (1 - r_use))
    out["d_av"], out["d_av_ci_low"], out["d_av_ci_high"] = dav, dav - zq * se_dav, dav + zq * se_dav
    J = hedges_j(df)
    out["hedges_g"] = J * dav
    out["hedges_g_ci_low"], out["hedges_g_ci_high"] = J * (dav - zq * se_dav), J * (dav + zq * se_dav)
    out["t"] = t
    out["df"] = df
    out["p_t"] = np.where(np.isfinite(t), 2 * stats.t.sf(np.abs(t), np.where(df >= 1, df, np.nan)), np.nan)


def _wilcoxon_by(d: pd.DataFrame, by: list[str], diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon signed-rank per cell, R's rules: zeros dropped; exact below 50 nonzero
    differences when there are no ties and no zeros, else normal with corrections."""
    work = pd.DataFrame({b: d[b].to_numpy() for b in by}, index=pd.RangeIndex(len(d)))
    # round away floating noise so equal differences count as ties (scores are sums of item scores)
    dd = np.round(diff, 10)
    work["_d"] = dd
    work["_nz"] = dd != 0
    work["_abs"] = np.abs(dd)
    if by:
        keys = work.groupby(by, sort=True, observed=True, dropna=False)
        cell = keys.ngroup().to_numpy()
        n_cells = keys.ngroups
    else:
        cell = np.zeros(len(work), dtype=int)
        n_cells = 1
    work["_cell"] = cell
    nz = work.loc[work["_nz"]].copy()
    nz["_rank"] = nz.groupby("_cell")["_abs"].rank(method="average")
    n_nz = np.bincount(nz["_cell"], minlength=n_cells).astype(float)
    n_zero = np.bincount(cell[~work["_nz"].to_numpy()], minlength=n_cells)
    vplus = np.bincount(nz["_cell"], weights=np.where(nz["_d"] > 0, nz["_rank"], 0.0), minlength=n_cells)
    # tie correction: sum over tie groups of (t^3 - t)
    ties = nz.groupby(["_cell", "_abs"]).size()
    tie_term = (ties.to_numpy(dtype=float) ** 3 - ties.to_numpy(dtype=float))
    tie_sum = np.bincount(ties.index.get_level_values("_cell").to_numpy(), weights=tie_term, minlength=n_cells)
    has_ties = tie_sum > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = n_nz * (n_nz + 1) / 4
        sigma = np.sqrt(n_nz * (n_nz + 1) * (2 * n_nz + 1) / 24 - tie_sum / 48)
        z = vplus - mu
        corr = 0.5 * np.sign(z)
        zstat = (z - corr) / sigma
        p = np.minimum(1.0, 2 * stats.norm.sf(np.abs(zstat)))
    exact = (n_nz < 50) & ~has_ties & (n_zero == 0) & (n_nz >= 1)
    for k in np.flatnonzero(exact):  # loop over cells (few), not rows
        dk = nz.loc[nz["_cell"] == k, "_d"].to_numpy()
        p[k] = stats.wilcoxon(dk, method="exact").pvalue
    p = np.where(n_nz >= 1, p, np.nan)
    vplus = np.where(n_nz >= 1, vplus, np.nan)
    return vplus, p


# --------------------------------------------------------------------------- groups and summary


def _with_groups(
    gains: pd.DataFrame, learners: pd.DataFrame | None, group: list[str], learner: str, missing_label: str = "missing"
) -> pd.DataFrame:
    """Stack per-learner rows once for 'all' and once per group variable (long format)."""
    base = gains.copy()
    base["group_variable"] = ALL
    base["group"] = ALL
    if not group:
        return base
    if learners is None:
        raise ConfigError(f"group={group!r} needs the learners table (with those columns); pass learners=...")
    require_columns(learners, {f"group[{i}]": g for i, g in enumerate(group)} | {"learner": learner}, "learners")
    lk = ["cohort", learner] if ("cohort" in learners.columns and "cohort" in gains.columns) else [learner]
    attrs = learners[lk + group].drop_duplicates(subset=lk)
    attrs = attrs.rename(columns={learner: "learner_id"})
    lk = ["learner_id" if k == learner else k for k in lk]
    merged = gains.merge(attrs.astype({k: "string" for k in lk}), on=lk, how="left")
    parts = [base]
    for gv in group:
        part = merged[list(gains.columns)].copy()
        part["group_variable"] = gv
        part["group"] = merged[gv].astype("string").fillna(missing_label)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def gain_summary(
    assessments: pd.DataFrame,
    learners: pd.DataFrame | None = None,
    *,
    group: str | Sequence[str] | None = None,
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    learner: str = "learner_id",
    posterior: pd.DataFrame | None = None,
    **columns,
) -> pd.DataFrame:
    """Gains per module (instrument) and group, with intervals, suppressing small groups.

    Parameters
    ----------
    assessments : canonical assessments table (long: one row per learner x instrument x phase x item).
    learners : canonical learners table, needed when ``group`` is given.
    group : learner attribute column(s) to break the gains down by; each gets its rows
        beside the ``all`` rows (``group_variable == "all"``).
    min_cell_size : rows resting on fewer learners are suppressed: every number empty and
        ``suppressed_reason`` says why.
    posterior : optional :meth:`BayesianGainModel.summary` output; its ``estimate``,
        ``ci_low``, ``ci_high`` and ``prob_positive`` are joined on module/group.
    **columns : column names of the assessments table (``instrument=``, ``phase=``, ...)
        passed to :func:`learner_scores`.

    Returns
    -------
    DataFrame, one row per instrument x group_variable x group with
        instrument, module, group_variable, group, n (learners with pre and post),
        n_pre (learners with a pre-test), n_post, n_pre_only (pre-test but no post-test:
        attrition), n_post_only, mid_mean (when a mid test exists), and the columns of
        :func:`paired_statistics` (all scores as proportions of the maximum, 0 to 1),
        then posterior_gain, posterior_ci_low, posterior_ci_high, prob_positive (empty
        unless ``posterior`` is given), method, suppressed_reason.
        ``g_avg`` is the average of individual learners' normalized gains (learners at
        ceiling on the pre-test left out and counted in ``n_pre_at_ceiling``);
        ``g_class`` is the normalized gain of the class averages (Hake's <g>); they
        differ in general.
    """
    _check_level(ci_level)
    _check_min_cell(min_cell_size)
    group = _as_list(group)
    scores = learner_scores(assessments, learner=learner, **columns)
    return summarise_scores(scores, learners, group=group, min_cell_size=min_cell_size, ci_level=ci_level,
                            learner=learner, posterior=posterior)


def summarise_scores(
    scores: pd.DataFrame,
    learners: pd.DataFrame | None = None,
    *,
    group: str | Sequence[str] | None = None,
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    learner: str = "learner_id",
    posterior: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`gain_summary` from :func:`learner_scores` output (same Returns)."""
    _check_level(ci_level)
    _check_min_cell(min_cell_size)
    group = _as_list(group)
    gains = learner_gains(scores)
    ids = ["instrument", "module", "group_variable", "group"]
    long = _with_groups(gains, learners, group, learner)
    stats_ = paired_statistics(long, by=ids, ci_level=ci_level)
    # phase counts (including learners without a pair) per cell
    cols = ["cohort", "learner_id", "instrument", "module"] if "cohort" in scores.columns else ["learner_id", "instrument", "module"]
    sc = scores[[c for c in cols if c in scores.columns]].copy()
    for p in PHASES:
        if f"{p}_pct" in scores.columns:
            sc[f"_has_{p}"] = scores[f"{p}_pct"].notna().astype(int)
            sc[f"_{p}"] = scores[f"{p}_pct"].fillna(0.0)
        else:
            sc[f"_has_{p}"] = 0
            sc[f"_{p}"] = 0.0
    sc["_pre_only"] = ((sc["_has_pre"] == 1) & (sc["_has_post"] == 0)).astype(int)
    sc["_post_only"] = ((sc["_has_pre"] == 0) & (sc["_has_post"] == 1)).astype(int)
    sc_long = _with_groups(sc, learners, group, learner)
    counts = sc_long.groupby(ids, sort=True, observed=True, dropna=False)[
        ["_has_pre", "_has_mid", "_has_post", "_pre_only", "_post_only", "_mid"]].sum().reset_index()
    counts = counts.rename(columns={"_has_pre": "n_pre", "_has_mid": "n_mid", "_has_post": "n_post",
                                    "_pre_only": "n_pre_only", "_post_only": "n_post_only"})
    with np.errstate(divide="ignore", invalid="ignore"):
        counts["mid_mean"] = np.where(counts["n_mid"] > 0, counts["_mid"] / counts["n_mid"], np.nan)
    counts = counts.drop(columns=["_mid"])
    out = counts.merge(stats_, on=ids, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    for col in ("posterior_gain", "posterior_ci_low", "posterior_ci_high", "prob_positive"):
        out[col] = np.nan
    method = "classical"
    if posterior is not None:
        post = pd.DataFrame(posterior)
        post.attrs = {}
        post = post.rename(columns={"estimate": "posterior_gain", "ci_low": "posterior_ci_low",
                                         "ci_high": "posterior_ci_high"})
        keys = [k for k in ("module", "group_variable", "group") if k in post.columns]
        post = post[keys + ["posterior_gain", "posterior_ci_low", "posterior_ci_high", "prob_positive"]]
        out = out.drop(columns=["posterior_gain", "posterior_ci_low", "posterior_ci_high", "prob_positive"])
        out = out.merge(post.astype({k: "string" for k in keys}), on=keys, how="left")
        method = "classical+bayesian"
    out["method"] = method
    order = ids + ["n", "n_pre", "n_post", "n_mid", "n_pre_only", "n_post_only", "pre_mean", "pre_sd", "mid_mean",
                   "post_mean", "post_sd"]
    rest = [c for c in out.columns if c not in order]
    out = out[order + rest]
    # suppression: rows resting on fewer learners than min_cell_size (on the paired n or on
    # the number who took the pre-test, whichever is smaller, so no count below k is shown)
    out["_n_supp"] = np.minimum(out["n"].to_numpy(), out["n_pre"].to_numpy())
    out.loc[out["n"] == 0, "_n_supp"] = 0
    out = _suppress(out, "_n_supp", ids + ["method"], int(min_cell_size)).drop(columns=["_n_supp"])
    # complementary suppression: a hidden group must not be the "all" row minus the others
    out = protect_group_table(out, count="n", sets=["instrument", "module", "group_variable"],
                              is_total=(out["group_variable"] == ALL).to_numpy(), keep=ids + ["method"],
                              min_cell_size=int(min_cell_size))
    out = out.sort_values(["instrument", "group_variable", "group"], key=lambda s: s.map(lambda v: (v != ALL, v)) if s.name == "group_variable" else s).reset_index(drop=True)
    for col in ids + ["method"]:
        out[col] = out[col].astype("string")
    out.attrs.update(ci_level=ci_level, min_cell_size=int(min_cell_size), n_learners=int(scores["learner_id"].nunique()))
    return out


# --------------------------------------------------------------------------- attrition


def _composition_test(out: pd.DataFrame) -> pd.DataFrame:
    """Chi-square of completion x group level, per instrument and group variable (``composition_*`` columns)."""
    out["composition_chi2"] = np.nan
    out["composition_df"] = np.nan
    out["composition_p"] = np.nan
    sub = out.loc[out["group_variable"] != ALL, ["instrument", "group_variable", "n_completed", "n_dropped"]]
    if len(sub):
        tot = sub.groupby(["instrument", "group_variable"], observed=True)[["n_completed", "n_dropped"]].transform("sum")
        n_all = tot["n_completed"] + tot["n_dropped"]
        rowsum = sub["n_completed"] + sub["n_dropped"]
        with np.errstate(divide="ignore", invalid="ignore"):
            e_c = rowsum * tot["n_completed"] / n_all
            e_d = rowsum * tot["n_dropped"] / n_all
            contrib = np.where(e_c > 0, (sub["n_completed"] - e_c) ** 2 / e_c, 0.0) + np.where(
                e_d > 0, (sub["n_dropped"] - e_d) ** 2 / e_d, 0.0)
        sub = sub.assign(_contrib=contrib, _lvl=(rowsum > 0).astype(int),
                         _both=((tot["n_completed"] > 0) & (tot["n_dropped"] > 0)).astype(int))
        agg = sub.groupby(["instrument", "group_variable"], observed=True).agg(
            chi2=("_contrib", "sum"), levels=("_lvl", "sum"), both=("_both", "max")).reset_index()
        agg["df"] = (agg["levels"] - 1).astype(float)
        valid = (agg["df"] >= 1) & (agg["both"] > 0)
        agg["p"] = np.where(valid, stats.chi2.sf(agg["chi2"], agg["df"].clip(lower=1)), np.nan)
        agg.loc[~valid, ["chi2", "df"]] = np.nan
        out = out.merge(agg[["instrument", "group_variable", "chi2", "df", "p"]], on=["instrument", "group_variable"], how="left")
        out["composition_chi2"], out["composition_df"], out["composition_p"] = out.pop("chi2"), out.pop("df"), out.pop("p")
    return out


def attrition(
    scores: pd.DataFrame,
    learners: pd.DataFrame | None = None,
    *,
    group: str | Sequence[str] | None = None,
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    learner: str = "learner_id",
) -> pd.DataFrame:
    """Who took the pre-test but not the post-test, and do they differ from completers?

    ``scores`` is :func:`learner_scores` output. Per instrument and group the table
    counts learners with a pre-test (n_pre), completers (pre and post), dropouts (pre,
    no post) and learners with a post-test only, and compares the pre-test scores of
    dropouts and completers (Welch t interval). Per group variable a chi-square test
    asks whether completion depends on group (``composition_p``, the same on each row of
    that variable).

    Returns
    -------
    DataFrame with instrument, module, group_variable, group, n_pre, n_completed,
        n_dropped, n_post_only, attrition_rate (n_dropped / n_pre), pre_mean_completed,
        pre_mean_dropped, pre_diff (dropped minus completed, proportion of maximum),
        pre_diff_ci_low, pre_diff_ci_high, p_welch, composition_chi2, composition_df,
        composition_p, suppressed_reason. Rows with fewer than ``min_cell_size`` learners
        with a pre-test are suppressed; the score comparison is left empty (with a note in
        ``suppressed_reason``) when fewer than ``min_cell_size`` dropped or completed.
    """
    _check_level(ci_level)
    _check_min_cell(min_cell_size)
    group = _as_list(group)
    if "pre_pct" not in scores.columns:
        raise DataError("no 'pre' phase in the scores: attrition is counted from learners with a pre-test")
    ids = ["instrument", "module", "group_variable", "group"]
    s = _attrition_sums(scores, learners, group, learner, ids)
    out = _attrition_counts(s, ci_level)
    out = _composition_test(out)
    out = _attrition_privacy(out, ids, int(min_cell_size))
    for col in ids:
        out[col] = out[col].astype("string")
    out.attrs.update(ci_level=ci_level, min_cell_size=int(min_cell_size))
    return out.reset_index(drop=True)


def _attrition_sums(scores: pd.DataFrame, learners: pd.DataFrame | None, group: list[str], learner: str,
                    ids: list[str]) -> pd.DataFrame:
    """Per instrument and group: learners with a pre-test, completers and drop-outs with the sums
    and sums of squares of their pre-test scores, and learners with a post-test only."""
    cols = [c for c in ("cohort", "learner_id", "instrument", "module") if c in scores.columns]
    sc = scores[cols].copy()
    has_pre = scores["pre_pct"].notna().to_numpy()
    has_post = scores["post_pct"].notna().to_numpy() if "post_pct" in scores.columns else np.zeros(len(scores), bool)
    pre = scores["pre_pct"].fillna(0.0).to_numpy(dtype=float)
    comp = has_pre & has_post
    drop = has_pre & ~has_post
    sc["_pre_n"] = has_pre.astype(float)
    sc["_c"], sc["_cs"], sc["_css"] = comp.astype(float), np.where(comp, pre, 0.0), np.where(comp, pre**2, 0.0)
    sc["_d"], sc["_ds"], sc["_dss"] = drop.astype(float), np.where(drop, pre, 0.0), np.where(drop, pre**2, 0.0)
    sc["_po"] = (~has_pre & has_post).astype(float)
    long = _with_groups(sc, learners, group, learner)
    return long.groupby(ids, sort=True, observed=True, dropna=False)[
        ["_pre_n", "_c", "_cs", "_css", "_d", "_ds", "_dss", "_po"]].sum()


def _attrition_counts(s: pd.DataFrame, ci_level: float) -> pd.DataFrame:
    """The counts, the attrition rate and the Welch comparison of drop-outs' and completers'
    pre-test scores from the sums of :func:`_attrition_sums`."""
    out = s.index.to_frame(index=False)
    nc, nd = s["_c"].to_numpy(), s["_d"].to_numpy()
    out["n_pre"] = s["_pre_n"].to_numpy().astype(int)
    out["n_completed"] = nc.astype(int)
    out["n_dropped"] = nd.astype(int)
    out["n_post_only"] = s["_po"].to_numpy().astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["attrition_rate"] = np.where(out["n_pre"] > 0, nd / out["n_pre"].to_numpy(), np.nan)
        mc, md = s["_cs"].to_numpy() / nc, s["_ds"].to_numpy() / nd
        vc = np.maximum((s["_css"].to_numpy() - nc * mc**2) / (nc - 1), 0)
        vd = np.maximum((s["_dss"].to_numpy() - nd * md**2) / (nd - 1), 0)
        se = np.sqrt(vc / nc + vd / nd)
        dfw = (vc / nc + vd / nd) ** 2 / ((vc / nc) ** 2 / (nc - 1) + (vd / nd) ** 2 / (nd - 1))
        diff = md - mc
        q = stats.t.ppf(1 - (1 - ci_level) / 2, dfw)
        tw = diff / se
        pw = 2 * stats.t.sf(np.abs(tw), dfw)
    out["pre_mean_completed"] = np.where(nc > 0, mc, np.nan)
    out["pre_mean_dropped"] = np.where(nd > 0, md, np.nan)
    ok = (nc >= 2) & (nd >= 2)
    out["pre_diff"] = np.where(nc * nd > 0, diff, np.nan)
    out["pre_diff_ci_low"] = np.where(ok, diff - q * se, np.nan)
    out["pre_diff_ci_high"] = np.where(ok, diff + q * se, np.nan)
    out["p_welch"] = np.where(ok, pw, np.nan)
    return out


def _attrition_privacy(out: pd.DataFrame, ids: list[str], min_cell_size: int) -> pd.DataFrame:
    """Whole rows when too few learners took the pre-test; the comparison when too few in a part;
    then complementary suppression across the groups of an attribute, and no count of fewer
    than min_cell_size completers or drop-outs (a zero reveals no one and stays)."""
    out = _suppress(out, "n_pre", ids, min_cell_size, "learners with a pre-test")
    small_part = (out["suppressed_reason"].isna() & (
        (out["n_completed"].astype(float) < min_cell_size) | (out["n_dropped"].astype(float) < min_cell_size))).to_numpy()
    for col in ("pre_mean_completed", "pre_mean_dropped", "pre_diff", "pre_diff_ci_low", "pre_diff_ci_high", "p_welch"):
        out.loc[small_part, col] = pd.NA
    out.loc[small_part, "suppressed_reason"] = (
        f"pre-test comparison suppressed: fewer than {min_cell_size} completers or dropouts")
    return protect_group_table(out, count="n_pre", sets=["instrument", "module", "group_variable"],
                               is_total=(out["group_variable"] == ALL).to_numpy(), keep=ids,
                               min_cell_size=min_cell_size, subcounts=["n_completed", "n_dropped"])


# --------------------------------------------------------------------------- regression


def ancova(
    data: pd.DataFrame,
    *,
    pre: str = "pre_pct",
    post: str = "post_pct",
    group: str | Sequence[str] | None = None,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """ANCOVA: ordinary least squares of post on pre plus group (statsmodels).

    ``data`` has one row per learner (for example :func:`learner_gains` output merged
    with the learners table). Rows without pre or post are left out and counted in
    ``attrs["n_dropped_missing"]``; the fitted model is in ``attrs["model"]``.

    Returns
    -------
    DataFrame, one row per model term: term, estimate, se, ci_low, ci_high, t, p, n, method.
    """
    import statsmodels.formula.api as smf

    _check_level(ci_level)
    group = _as_list(group)
    _require_pre_post(data, pre, post, "ancova data", group=group)
    frame = pd.DataFrame({"post": pd.to_numeric(data[post], errors="coerce").astype(float),
                          "pre": pd.to_numeric(data[pre], errors="coerce").astype(float)})
    for i, g in enumerate(group):
        frame[f"g{i}"] = data[g].astype(object).where(data[g].notna(), None)
    n_all = len(frame)
    frame = frame.dropna()
    if len(frame) < 3 + len(group):
        raise DataError(f"ANCOVA needs more learners with both scores than parameters; only {len(frame)} have them")
    terms = ["pre"] + [f"C(g{i})" for i in range(len(group))]
    for i, g in enumerate(group):
        if frame[f"g{i}"].nunique() < 2:
            raise DataError(f"group column {g!r} has only one level {frame[f'g{i}'].unique().tolist()}; ANCOVA needs two or more")
    if all(isinstance(v, str) for i in range(len(group)) for v in frame[f"g{i}"].unique()):
        res = _ols_treatment(frame, group)  # the formula's model without building it (patsy costs most of the time)
    else:
        res = smf.ols("post ~ " + " + ".join(terms), data=frame).fit()
    ci = res.conf_int(alpha=1 - ci_level)
    names = list(res.params.index)
    for i, g in enumerate(group):
        names = [nm.replace(f"C(g{i})[T.", f"{g}[T.") for nm in names]
    out = pd.DataFrame({
        "term": pd.array(names, dtype="string"),
        "estimate": res.params.to_numpy(), "se": res.bse.to_numpy(),
        "ci_low": ci.iloc[:, 0].to_numpy(), "ci_high": ci.iloc[:, 1].to_numpy(),
        "t": res.tvalues.to_numpy(), "p": res.pvalues.to_numpy(),
    })
    out["n"] = int(res.nobs)
    out["method"] = "ancova_ols"
    out.attrs.update(n_dropped_missing=n_all - int(res.nobs), r_squared=float(res.rsquared))
    return out


def _ols_treatment(frame: pd.DataFrame, group: list[str]):
    """``ols("post ~ pre + C(g0) + ...")`` with the design built directly: intercept, a 0/1 column
    per level after the first in sorted order, then pre (patsy's treatment coding, order and names)."""
    from statsmodels.regression.linear_model import OLS  # not statsmodels.api, which imports everything

    cols = {"Intercept": np.ones(len(frame))}
    for i in range(len(group)):
        g = frame[f"g{i}"].to_numpy(dtype=object)
        for level in sorted(set(g))[1:]:
            cols[f"C(g{i})[T.{level}]"] = (g == level).astype(float)
    cols["pre"] = frame["pre"].to_numpy(dtype=float)  # patsy puts the numeric term after the categorical ones
    return OLS(frame["post"].to_numpy(dtype=float), pd.DataFrame(cols, index=frame.index)).fit()


ANCOVA_COLUMNS = ["instrument", "module", "group_variable", "term", "estimate", "se", "ci_low", "ci_high", "t", "p",
                  "n", "r_squared", "method", "suppressed_reason"]


def ancova_table(
    learner_table: pd.DataFrame,
    *,
    group: str | Sequence[str] | None = None,
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    pre: str = "pre_pct",
    post: str = "post_pct",
) -> pd.DataFrame:
    """The ANCOVA of every test and group attribute as one tidy table (``ancova.csv``).

    For each instrument (module) of ``learner_table`` (:func:`gains_with_groups` output)
    and each attribute of ``group``, :func:`ancova` fits ``post ~ pre + attribute``, so
    each group's term is its difference in post-test score from the reference (first)
    level at equal pre-test score; ``group_variable = "all"`` is the model with the
    pre-test only. Learners whose level is ``missing`` are left out of that attribute's
    model, and so are levels with fewer than ``min_cell_size`` learners (never shown, not
    even their count); a model that is left with fewer than ``min_cell_size`` learners or
    one level gets one row with every number empty and ``suppressed_reason`` saying why.

    Returns
    -------
    DataFrame with the columns of ``data_schema/outputs/ancova.schema.json``: instrument,
    module, group_variable, term (``Intercept``, ``pre``, ``ATTRIBUTE[T.level]``),
    estimate, se, ci_low, ci_high, t, p, n (learners in the model), r_squared, method
    ("ancova_ols"), suppressed_reason.
    """
    _check_level(ci_level)
    _check_min_cell(min_cell_size)
    group = _as_list(group)
    _require_pre_post(learner_table, pre, post, "ANCOVA learner table", group=group)
    keys = [c for c in ("instrument", "module") if c in learner_table.columns]
    parts = []
    blocks = learner_table.groupby(keys, sort=True, dropna=False) if keys else [((), learner_table)]
    for key, block in blocks:
        key = key if isinstance(key, tuple) else (key,)
        ids = dict(zip(keys, key))
        instrument = str(ids.get("instrument", ids.get("module", "")))
        module = str(ids.get("module", instrument))
        for variable in ["all", *group]:
            frame = block
            reason = None
            if variable != "all":
                levels = frame[variable].astype("string")
                counts = levels[levels.ne("missing") & levels.notna()].value_counts()
                keep = counts.index[counts >= min_cell_size]
                frame = frame[levels.isin(keep).to_numpy()]
                if len(keep) < 2:
                    reason = (f"fewer than two groups of {variable!r} with at least the minimum cell size "
                              f"{min_cell_size}")
            both = pd.to_numeric(frame[pre], errors="coerce").notna() & pd.to_numeric(frame[post], errors="coerce").notna()
            if reason is None and int(both.sum()) < max(min_cell_size, 4):
                reason = f"fewer learners with both tests than the minimum cell size {min_cell_size}"
            if reason is None:
                try:
                    fit = ancova(frame, pre=pre, post=post, group=None if variable == "all" else variable, ci_level=ci_level)
                except DataError as exc:
                    reason = str(exc)
            if reason is not None:
                row = {c: np.nan for c in ANCOVA_COLUMNS}
                row.update(term="(not fitted)", method="ancova_ols", suppressed_reason=reason, n=pd.NA)
                fit = pd.DataFrame([row])
            else:
                fit["r_squared"] = fit.attrs["r_squared"]
                fit["suppressed_reason"] = None
            fit["instrument"], fit["module"], fit["group_variable"] = instrument, module, variable
            parts.append(fit[ANCOVA_COLUMNS])
    if not parts:
        out = pd.DataFrame({c: pd.Series(dtype="float64") for c in ANCOVA_COLUMNS})
    else:
        out = pd.concat(parts, ignore_index=True)
    for c in ("instrument", "module", "group_variable", "term", "method", "suppressed_reason"):
        out[c] = out[c].astype("object").where(out[c].notna(), None).astype("string")
    out["n"] = pd.to_numeric(out["n"], errors="coerce").astype("Int64")
    for c in ("estimate", "se", "ci_low", "ci_high", "t", "p", "r_squared"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out.reset_index(drop=True)


def gain_mixed_model(
    data: pd.DataFrame,
    *,
    pre: str = "pre_pct",
    post: str = "post_pct",
    group: str | Sequence[str] | None = None,
    module: str = "module",
    cohort: str = "cohort",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Post on pre plus group with random module (and cohort) effects (statsmodels MixedLM).

    * several modules: ``post ~ pre + group + (1 | module)``; with several cohorts too,
      cohort enters as a fixed effect and each module x cohort gets its own random
      deviation inside its module (``vc_formula``), so the module effect is what modules
      share across cohorts;
    * one module, several cohorts: ``post ~ pre + group + (1 | cohort)``;
    * one module, one cohort: the ANCOVA (:func:`ancova`); ``method`` says so.

    A learner who took several modules contributes one row per module; the model treats
    those rows as independent given the module effect (it has no learner intercept, which
    would need a crossed design statsmodels cannot fit at 8,000 learners).

    Returns
    -------
    DataFrame, one row per fixed-effect term and per variance component: term,
        estimate, se, ci_low, ci_high, p (Wald; missing for variances), n, method.
    """
    import statsmodels.formula.api as smf

    _check_level(ci_level)
    group = _as_list(group)
    frame, n_all = _mixed_frame(data, pre=pre, post=post, group=group, module=module, cohort=cohort)
    n_mod, n_coh = frame["module"].nunique(), frame["cohort"].nunique()
    if n_mod <= 1 and n_coh <= 1:
        out = ancova(frame, pre="pre", post="post", group=[f"g{i}" for i in range(len(group))], ci_level=ci_level)
        out["term"] = out["term"].str.replace(r"^g(\d+)\[", lambda m: f"{group[int(m.group(1))]}[", regex=True)
        out = out.drop(columns=["t"])
        out["method"] = "ancova_ols (one module, one cohort)"
        out.attrs["n_dropped_missing"] = n_all - int(out["n"].iloc[0])
        return out
    rhs = ["pre"] + [f"C(g{i})" for i in range(len(group))]
    vc = None
    if n_mod > 1:
        groups, vc_names = "module", ["module"]
        if n_coh > 1:
            rhs.append("C(cohort)")
            vc = {"module_x_cohort": "0 + C(cohort)"}
            vc_names.append("module_x_cohort")
    else:
        groups, vc_names = "cohort", ["cohort"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smf.mixedlm("post ~ " + " + ".join(rhs), frame, groups=groups, re_formula="1", vc_formula=vc)
        res = model.fit(reml=True)
    out = _mixed_terms(res, group, vc_names, vc is not None, ci_level)
    out.attrs.update(random_effects=vc_names, converged=bool(res.converged),
                     n_dropped_missing=n_all - int(res.nobs))
    return out


def _mixed_frame(data: pd.DataFrame, *, pre: str, post: str, group: list[str], module: str,
                 cohort: str) -> tuple[pd.DataFrame, int]:
    """The model frame (post, pre, module, cohort, g0, g1, ...) without rows missing any of them,
    and the number of rows before."""
    _require_pre_post(data, pre, post, "mixed-model data", group=group, module=module)
    frame = pd.DataFrame({"post": pd.to_numeric(data[post], errors="coerce").astype(float),
                          "pre": pd.to_numeric(data[pre], errors="coerce").astype(float),
                          "module": data[module].astype(object)})
    frame["cohort"] = data[cohort].astype(object) if cohort in data.columns else "one"
    for i, g in enumerate(group):
        frame[f"g{i}"] = data[g].astype(object)
    n_all = len(frame)
    return frame.dropna().reset_index(drop=True), n_all


def _mixed_terms(res, group: list[str], vc_names: list[str], has_vc: bool, ci_level: float) -> pd.DataFrame:
    """A fitted MixedLM as rows: fixed effects with Wald intervals and p, then the variances."""
    fe = res.fe_params
    bse = res.bse_fe
    z = stats.norm.ppf(1 - (1 - ci_level) / 2)
    names = list(fe.index)
    for i, g in enumerate(group):
        names = [nm.replace(f"C(g{i})[T.", f"{g}[T.") for nm in names]
    names = [nm.replace("C(cohort)[T.", "cohort[T.") for nm in names]
    out = pd.DataFrame({"term": names, "estimate": fe.to_numpy(), "se": bse.to_numpy(),
                        "ci_low": fe.to_numpy() - z * bse.to_numpy(), "ci_high": fe.to_numpy() + z * bse.to_numpy()})
    out["p"] = 2 * stats.norm.sf(np.abs(out["estimate"] / out["se"]))
    var = [float(res.cov_re.iloc[0, 0])] + (list(np.asarray(res.vcomp, dtype=float)) if has_vc else [])
    extra = pd.DataFrame({"term": [f"var({v})" for v in vc_names] + ["var(residual)"],
                          "estimate": var + [float(res.scale)]})
    out = pd.concat([out, extra], ignore_index=True)
    out["term"] = out["term"].astype("string")
    out["n"] = int(res.nobs)
    out["method"] = "mixedlm_reml"
    return out


# --------------------------------------------------------------------------- Bayesian


def _gain_cells(gains: pd.DataFrame, *, module: str, group: str | None, gain: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Learners with a gain (module, group, y) and per module x group cell its size, mean and variance."""
    cols = {"module": module, "gain": gain} | ({"group": group} if group else {})
    require_columns(gains, cols, "gains")
    y = pd.to_numeric(gains[gain], errors="coerce").astype(float)
    frame = pd.DataFrame({"module": gains[module].astype("string"),
                          "group": gains[group].astype("string").fillna("missing") if group else ALL,
                          "y": y}).dropna(subset=["y"])
    if len(frame) < 2:
        raise DataError(f"the Bayesian gain model needs learners with a gain; found {len(frame)}")
    cells = frame.groupby(["module", "group"], observed=True, sort=True)["y"].agg(["size", "mean", "var"]).reset_index()
    cells["var"] = cells["var"].fillna(0.0)
    return frame, cells


class _CellDesign:
    """The cells' sufficient statistics (n, mean, within sum of squares) and which cells share a
    module (``Km``) or a group (``Kg``)."""

    def __init__(self, cells: pd.DataFrame):
        self.modules = pd.Index(sorted(cells["module"].unique()))
        self.groups = pd.Index(sorted(cells["group"].unique()))
        self.mi = self.modules.get_indexer(cells["module"])
        gi = self.groups.get_indexer(cells["group"])
        self.n = cells["size"].to_numpy(dtype=float)
        self.ybar = cells["mean"].to_numpy(dtype=float)
        self.ss = cells["var"].to_numpy(dtype=float) * (self.n - 1)
        self.C = len(cells)
        Zm = (self.mi[:, None] == np.arange(len(self.modules))[None, :]).astype(float)
        Zg = (gi[:, None] == np.arange(len(self.groups))[None, :]).astype(float)
        self.Km = Zm @ Zm.T  # 1 where two cells share a module
        self.Kg = Zg @ Zg.T  # 1 where two cells share a group
        self.has_module, self.has_group = len(self.modules) > 1, len(self.groups) > 1


@dataclass
class BayesianGainModel:
    """Hierarchical model of learners' gains with partial pooling across modules and groups.

    Each learner's gain (post minus pre, proportion of maximum) in module m and group k is
    ``Normal(theta[m, k], sigma[m])`` with
    ``theta[m, k] = mu + a[m] + b[k] + ab[m, k]``, ``mu ~ Normal(0, prior_scale)``,
    ``a ~ Normal(0, tau_module)``, ``b ~ Normal(0, tau_group)``, ``ab ~ Normal(0,
    tau_cell)`` (group terms only with more than one group), half-normal priors on the
    scales. The normal likelihood is written exactly through each cell's n, mean and sum
    of squares, so the model grows with the number of cells, not of learners. All mean
    effects are Gaussian given the scales, so they are integrated out analytically: NUTS
    samples only the scales (no funnels whether effects are large or near zero), and each
    draw of theta comes from its exact conditional Gaussian posterior afterwards.

    ``summary()`` reports the posterior of each cell's mean gain, of each module's gain
    (the learner-weighted average of its cells) and each group's, with the probability
    that it is positive. The default sampler settings use ``target_accept=0.95``: the
    scales of few modules or groups are weakly identified and a smaller step avoids
    divergent transitions.
    """

    sampler: object = None  # research.bayes.SamplerSettings: the one way sampler settings are passed
    prior_scale: float = 0.5
    ci_level: float = 0.95
    fitted_: bool = field(default=False, init=False)

    def __post_init__(self):
        from research.bayes import SamplerSettings

        if self.sampler is None:
            self.sampler = SamplerSettings(target_accept=0.95)
        if not isinstance(self.sampler, SamplerSettings):
            raise ConfigError(f"sampler must be a research.bayes.SamplerSettings, got {type(self.sampler).__name__}")
        _check_level(self.ci_level)
        if not self.prior_scale > 0:
            raise ConfigError(f"prior_scale must be positive, got {self.prior_scale!r}")

    def fit(self, gains: pd.DataFrame, *, module: str = "module", group: str | None = None,
            gain: str = "gain") -> "BayesianGainModel":
        """Fit to per-learner gains (:func:`learner_gains`, merged with a group column)."""
        from research.bayes import diagnostics, sample
        from research.provenance import provenance

        frame, cells = _gain_cells(gains, module=module, group=group, gain=gain)
        design = _CellDesign(cells)
        sd_all = float(frame["y"].std()) if len(frame) > 1 else 0.2
        idata = sample(self._model(design, sd_all), self.sampler)
        var_names = (["sigma"] + (["tau_module"] if design.has_module else [])
                     + (["tau_group", "tau_cell"] if design.has_group else []))
        self.diagnostics_ = diagnostics(idata, var_names=var_names)
        self.idata_ = idata
        self.cells_ = cells.rename(columns={"size": "n", "mean": "gain_mean", "var": "gain_var"})
        self.theta_draws_ = self._theta_draws(idata, design)
        self.module_col_, self.group_col_ = module, group
        self.provenance_ = provenance("GainModel", sampler=self.sampler, idata=idata,
                                      settings={"prior_scale": self.prior_scale, "ci_level": self.ci_level},
                                      n_learner_gains=int(len(frame)))
        self.fitted_ = True
        return self

    def _model(self, d: "_CellDesign", sd_all: float):
        """The PyMC model of the cells' sufficient statistics; only the scales are parameters."""
        import pymc as pm
        import pytensor.tensor as pt

        coords = {"module": list(d.modules), "group": list(d.groups), "cell": np.arange(d.C)}
        with pm.Model(coords=coords) as model:
            tau_m = pm.HalfNormal("tau_module", 0.2) if d.has_module else pt.as_tensor(0.0)
            tau_g = pm.HalfNormal("tau_group", 0.2) if d.has_group else pt.as_tensor(0.0)
            tau_c = pm.HalfNormal("tau_cell", 0.05) if d.has_group else pt.as_tensor(0.0)
            sigma = pm.HalfNormal("sigma", max(2 * sd_all, 0.05), dims="module")
            s_c = sigma[d.mi]
            # prior covariance of the cells' true mean gains: common mean + module + group + cell
            K = (self.prior_scale**2 + tau_m**2 * d.Km + tau_g**2 * d.Kg + tau_c**2 * np.eye(d.C))
            # exact normal likelihood from sufficient statistics: the within-cell sum of
            # squares informs sigma; the cell means, with every mean effect integrated out,
            # are multivariate normal. Only scales are sampled: no funnels.
            pm.Potential("within", pt.sum(-(d.n - 1) * pt.log(s_c) - d.ss / (2 * s_c**2)))
            pm.MvNormal("cell_mean", mu=np.zeros(d.C), cov=K + pt.diag(s_c**2 / d.n), observed=d.ybar)
        return model

    def _theta_draws(self, idata, d: "_CellDesign") -> np.ndarray:
        """One draw of the cells' true means per draw of the scales, from its exact Gaussian
        conditional posterior: mean K (K + D)^-1 ybar, covariance K - K (K + D)^-1 K."""
        from research.bayes import stacked

        sig = stacked(idata, "sigma")[:, d.mi]
        S, C = sig.shape[0], d.C
        tm = stacked(idata, "tau_module") if d.has_module else np.zeros(S)
        tg = stacked(idata, "tau_group") if d.has_group else np.zeros(S)
        tc = stacked(idata, "tau_cell") if d.has_group else np.zeros(S)
        Kd = (self.prior_scale**2 + tm[:, None, None] ** 2 * d.Km + tg[:, None, None] ** 2 * d.Kg
              + tc[:, None, None] ** 2 * np.eye(C))
        Dd = sig**2 / d.n[None, :]
        A = Kd + Dd[:, :, None] * np.eye(C)
        KA = np.linalg.solve(A, Kd).transpose(0, 2, 1)  # K A^-1 (A, K symmetric)
        mean = KA @ d.ybar
        cov = Kd - KA @ Kd
        cov = (cov + cov.transpose(0, 2, 1)) / 2 + 1e-12 * np.eye(C)
        L = np.linalg.cholesky(cov)
        rng = np.random.default_rng(self.sampler.seed)
        return mean + (L @ rng.standard_normal((S, C, 1)))[:, :, 0]

    def summary(self) -> pd.DataFrame:
        """Posterior per module (all groups), per group (all modules) and per cell.

        Returns
        -------
        DataFrame with module, group_variable, group, estimate (posterior mean gain,
            proportion of maximum), se (posterior sd), ci_low, ci_high (equal-tailed),
            prob_positive (posterior probability that the gain is above 0), n (learners),
            method ('bayes_hierarchical'). ``attrs`` hold converged, divergences, max_r_hat,
            min_ess_bulk; the full table is ``self.diagnostics_``.
        """
        from research.bayes import summarise_draws

        if not self.fitted_:
            raise ConfigError("call fit() before summary()")
        cells = self.cells_
        th = self.theta_draws_
        n = cells["n"].to_numpy(dtype=float)
        mod = cells["module"].to_numpy()
        grp = cells["group"].to_numpy()
        blocks = []
        gv = self.group_col_ or ALL
        # per module: learner-weighted average over its cells
        mods = pd.Index(sorted(set(mod)))
        W = (mods.get_indexer(mod)[None, :] == np.arange(len(mods))[:, None]) * n[None, :]
        Wm = W / W.sum(axis=1, keepdims=True)
        blocks.append((pd.DataFrame({"module": mods, "group_variable": ALL, "group": ALL}), th @ Wm.T, W.sum(axis=1)))
        if self.group_col_:
            grps = pd.Index(sorted(set(grp)))
            Wg = (grps.get_indexer(grp)[None, :] == np.arange(len(grps))[:, None]) * n[None, :]
            blocks.append((pd.DataFrame({"module": ALL, "group_variable": gv, "group": grps}),
                           th @ (Wg / Wg.sum(axis=1, keepdims=True)).T, Wg.sum(axis=1)))
            blocks.append((pd.DataFrame({"module": mod, "group_variable": gv, "group": grp}), th, n))
        tot = (n / n.sum())
        blocks.append((pd.DataFrame({"module": [ALL], "group_variable": [ALL], "group": [ALL]}),
                       (th @ tot)[:, None], np.array([n.sum()])))
        parts = []
        for ids, draws, nn in blocks:
            s = summarise_draws(draws, ci_level=self.ci_level)
            part = ids.copy()
            for k in ("estimate", "se", "ci_low", "ci_high"):
                part[k] = s[k]
            part["prob_positive"] = (draws > 0).mean(axis=0)
            part["n"] = nn.astype(int)
            parts.append(part)
        out = pd.concat(parts, ignore_index=True)
        for col in ("module", "group_variable", "group"):
            out[col] = out[col].astype("string")
        out["method"] = "bayes_hierarchical"
        d = self.diagnostics_
        out.attrs.update(converged=bool(d.attrs["ok"]), divergences=int(d.attrs["divergences"]),
                         max_r_hat=float(d["r_hat"].max()), min_ess_bulk=float(d["ess_bulk"].min()),
                         sampler_backend=str(self.provenance_["sampler_backend"]))
        return out


# --------------------------------------------------------------------------- notebook helpers

GROUP_ATTRIBUTES = ("gender", "age_band", "role", "region", "digital_maturity")


def group_columns(learners: pd.DataFrame | None, candidates: Sequence[str] = GROUP_ATTRIBUTES) -> list[str]:
    """The learner attributes among ``candidates`` that the learners table has and fills."""
    if learners is None or len(learners) == 0:
        return []
    return [c for c in candidates if c in learners.columns and learners[c].notna().any()]


def gains_with_groups(scores: pd.DataFrame, learners: pd.DataFrame | None,
                      group: str | Sequence[str] | None = None, *, learner: str = "learner_id") -> pd.DataFrame:
    """:func:`learner_gains` with the learners' group columns joined (missing -> 'missing')."""
    gains = learner_gains(scores)
    group = _as_list(group)
    if not group:
        return gains
    if learners is None:
        raise ConfigError(f"group={group!r} needs the learners table (with those columns); pass learners=...")
    require_columns(learners, {f"group[{i}]": g for i, g in enumerate(group)} | {"learner": learner}, "learners")
    keys = ["cohort", learner] if ("cohort" in learners.columns and "cohort" in gains.columns) else [learner]
    attrs = learners[keys + group].drop_duplicates(subset=keys).rename(columns={learner: "learner_id"})
    keys = ["learner_id" if k == learner else k for k in keys]
    out = gains.merge(attrs.astype({k: "string" for k in keys}), on=keys, how="left")
    for g in group:
        out[g] = out[g].astype("string").fillna("missing")
    return out
