"""Survey items and waves: ordinal item models, change over three waves, invariance.

* :func:`clean_surveys` keeps the answers the models can use and says, in plain sentences,
  what it set aside: answers outside the item's scale (file row and column named, never the
  learner), constructs with one item, waves answered by fewer learners than the minimum cell
  size.
* :func:`survey_items` is the ``survey_items`` table: per construct and item the graded
  response (or partial credit) model's discrimination, loading and thresholds on one scale
  over all waves, item fit, the share of answers at the top of the scale, and ordinal DIF
  across waves and across learner groups (:func:`research.estimate.ordinal.ordinal_dif`).
* :func:`survey_waves` is the ``survey_waves`` table: per construct and wave the construct's
  mean on one linked latent scale (baseline 0; a multi-group GRM with common item
  parameters, every answer of every learner kept, so partial responders count), the mean
  score with a t interval, attrition since baseline, the configural/metric/scalar comparison
  across waves and a plain sentence when comparing waves is not safe.
* :class:`BayesianWaves` is the PyMC version of the wave means (learner effects, so the
  same learner's waves are not treated as independent).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from research.errors import ConfigError, DataError, ResearchError
from research.estimate import ordinal
from research.estimate.surveys import PHASES, scored_responses

__all__ = ["BayesianWaves", "clean_surveys", "fit_constructs", "survey_invariance", "survey_items", "survey_waves"]

#: default thresholds of the item checks (the recommendation rules have their own in the YAML)
MIN_INVARIANCE_N = 100  # cases per wave or group before the configural/metric/scalar comparison is run
CEILING_TOP = 2  # "agree" = the top two categories


def clean_surveys(surveys: pd.DataFrame, *, min_cell_size: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """Scored answers the models can use, and a sentence for everything set aside.

    Returns ``(scored, notes)``: ``scored`` as :func:`research.estimate.surveys.scored_responses`
    (plus ``reverse_coded``) without answers outside their scale, constructs with fewer than two
    items and construct x wave cells with fewer than ``min_cell_size`` learners.
    """
    if min_cell_size is None or int(min_cell_size) < 1:
        raise ConfigError(f"min_cell_size must be a whole number of at least 1, got {min_cell_size!r}")
    if surveys is None or len(surveys) == 0:
        raise DataError("the surveys table is empty: there are no answers to model")
    notes: list[str] = []
    s = surveys.reset_index(drop=True)
    r = pd.to_numeric(s["response"], errors="coerce").astype(float).to_numpy()
    lo = pd.to_numeric(s["scale_min"], errors="coerce").astype(float).to_numpy()
    hi = pd.to_numeric(s["scale_max"], errors="coerce").astype(float).to_numpy()
    bad = ~np.isfinite(r) | ~np.isfinite(lo) | ~np.isfinite(hi) | (r < lo) | (r > hi) | (r != np.round(r))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        items = sorted(s.loc[bad, "item_id"].astype(str).unique())
        notes.append(f"{int(bad.sum())} answer(s) outside the item's scale were left out (first at row {first}, "
                     f"column 'response'; item(s) {', '.join(items[:5])})")
        s = s[~bad]
    if s.empty:
        raise DataError("no survey answer lies on its item's scale: there is nothing to model")
    scored = scored_responses(s)
    scored["reverse_coded"] = (s["reverse_coded"].astype("boolean").fillna(False).to_numpy(dtype=bool)
                               if "reverse_coded" in s.columns else False)
    n_items = scored.groupby("construct", observed=True)["item_id"].nunique()
    single = n_items.index[n_items < 2]
    for c in single:
        notes.append(f"construct {c!r} has one question only: an item model needs two or more, so it was left out")
    scored = scored[~scored["construct"].isin(single)]
    n_wave = scored.groupby(["construct", "phase"], observed=True)["learner_id"].nunique()
    small = n_wave[n_wave < int(min_cell_size)]
    for (c, p), _ in small.items():
        notes.append(f"wave {p!r} of construct {c!r} was answered by fewer than {int(min_cell_size)} learners "
                     f"(the minimum cell size): it was left out")
    if len(small):
        drop = pd.MultiIndex.from_tuples(list(small.index))
        key = pd.MultiIndex.from_frame(scored[["construct", "phase"]].astype(str))
        scored = scored[~key.isin(drop)]
    return scored.reset_index(drop=True), notes


def _phases(scored: pd.DataFrame) -> list[str]:
    present = set(scored["phase"].unique())
    return [p for p in PHASES if p in present]


def _constant_items(sub: pd.DataFrame) -> list[str]:
    """Questions everyone answered the same way: no item model can place them."""
    k = sub.groupby("item_id", observed=True)["category"].nunique()
    return sorted(k.index[k < 2].astype(str))


def _fit_construct(sub: pd.DataFrame, model: str, ci_level: float) -> ordinal.OrdinalIRT:
    sub = sub[~sub["item_id"].isin(_constant_items(sub))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ordinal.OrdinalIRT(model, ci_level=ci_level).fit(
            sub, group="phase" if sub["phase"].nunique() > 1 else None, group_order=list(PHASES))


def fit_constructs(surveys: pd.DataFrame, *, model: str = "grm", min_cell_size: int = 10,
                   ci_level: float = 0.95) -> dict:
    """Each construct's item model over all its waves, fitted once for :func:`survey_items` and
    :func:`survey_waves` (give the dict to both as ``models``).

    Returns a dict construct -> fitted :class:`research.estimate.ordinal.OrdinalIRT`, or the
    :class:`ResearchError` that stopped its fit (each table then says so in its notes).
    """
    scored, _ = clean_surveys(surveys, min_cell_size=min_cell_size)
    out: dict = {}
    for c in sorted(scored["construct"].unique()):  # constructs (few)
        try:
            out[c] = _fit_construct(scored[scored["construct"] == c], model, ci_level)
        except ResearchError as exc:
            out[c] = exc
    return out


def _construct_model(models: dict | None, c: str, sub: pd.DataFrame, model: str, ci_level: float):
    """The construct's fitted model from ``models`` when it is the one asked for, else a new fit;
    raises the ResearchError of a fit that failed."""
    m = (models or {}).get(c)
    if isinstance(m, ordinal.OrdinalIRT) and (m.model != model or m.ci_level != ci_level):
        m = None
    if m is None:
        m = _fit_construct(sub, model, ci_level)
    if isinstance(m, ResearchError):
        raise m
    return m


ITEM_COLUMNS = ["construct", "item_id", "reverse_coded", "model", "n_learners", "n_responses", "n_categories",
                "discrimination", "discrimination_se", "loading", "loading_se", "location", "threshold_low",
                "threshold_high", "infit", "outfit", "misfit", "share_top", "share_top_se", "dif_wave_class",
                "dif_wave_delta_r2", "dif_wave_p", "dif_group_attribute", "dif_group_focal", "dif_group_class",
                "dif_group_delta_r2", "dif_group_log_odds", "dif_group_log_odds_se", "dif_group_p", "note",
                "suppressed_reason"]


def _item_table(c: str, sub: pd.DataFrame, summ: pd.DataFrame, const: list, model: str) -> pd.DataFrame:
    """One construct's items: the model's summary (constant items kept without model columns), the
    loading's standard error, counts, the ceiling share, and empty DIF columns."""
    if const:  # kept in the table (its ceiling share is evidence) without model columns
        summ = pd.concat([summ, pd.DataFrame(index=pd.Index(const, name="item_id"))]).astype({"model": "string"})
        summ.loc[const, "model"] = model
        summ.loc[const, "n_categories"] = 1
        summ.loc[const, "note"] = "everyone gave the same answer: left out of the item model"
    a = summ["discrimination"].to_numpy()
    a_se = summ["discrimination_se"].to_numpy()
    ap = a / ordinal.D_PROBIT
    dl = (1 / ordinal.D_PROBIT) / (1 + ap**2) ** 1.5  # d loading / d a
    tab = summ.reset_index()
    tab["loading_se"] = np.abs(dl) * a_se
    tab.insert(0, "construct", c)
    per = sub.groupby("item_id", observed=True)
    top = sub["category"] >= (sub["scale_max"] - sub["scale_min"] + 1 - CEILING_TOP)
    share = top.groupby(sub["item_id"]).mean()
    tab["n_learners"] = tab["item_id"].map(per["learner_id"].nunique()).astype(int)
    tab["n_responses"] = tab["item_id"].map(per.size()).astype(int)
    tab["share_top"] = tab["item_id"].map(share).to_numpy(dtype=float)
    nr = tab["n_responses"].to_numpy(dtype=float)
    p = np.clip(tab["share_top"].to_numpy(), 0.5 / nr, 1 - 0.5 / nr)
    tab["share_top_se"] = np.sqrt(p * (1 - p) / nr)
    tab["reverse_coded"] = tab["item_id"].map(per["reverse_coded"].first()).astype(bool)
    for col in ("dif_wave_class", "dif_group_attribute", "dif_group_focal", "dif_group_class"):
        tab[col] = pd.NA
    for col in ("dif_wave_delta_r2", "dif_wave_p", "dif_group_delta_r2", "dif_group_log_odds",
                "dif_group_log_odds_se", "dif_group_p"):
        tab[col] = np.nan
    return tab


def _wave_dif(tab: pd.DataFrame, sub: pd.DataFrame, c: str, notes: list, *, alpha: float, min_cell_size: int) -> None:
    """Ordinal DIF across waves into the ``dif_wave_*`` columns (a note where it cannot be tested)."""
    try:
        dw = ordinal.ordinal_dif(sub, group="phase", alpha=alpha, min_cell_size=min_cell_size).set_index("item_id")
        tab["dif_wave_class"] = tab["item_id"].map(dw["dif_class"])
        tab["dif_wave_delta_r2"] = tab["item_id"].map(dw["delta_r2"])
        tab["dif_wave_p"] = tab["item_id"].map(dw["p_adjusted"])
    except ResearchError as exc:
        notes.append(f"construct {c!r}: no DIF test across waves ({exc})")


def _group_dif(tab: pd.DataFrame, sub: pd.DataFrame, learners: pd.DataFrame, groups, c: str, notes: list, *,
               alpha: float, min_cell_size: int) -> None:
    """Ordinal DIF by each learner attribute at the first wave; the ``dif_group_*`` columns keep the
    attribute with the largest DIF (delta R^2) per item."""
    base = sub[sub["phase"] == _phases(sub)[0]]
    for attr in groups:
        if attr not in learners.columns:
            continue
        lk = learners[["learner_id", attr]].dropna().astype({"learner_id": "string"})
        joined = base.merge(lk, on="learner_id", how="inner")
        if joined[attr].nunique() < 2:
            continue
        try:
            dg = ordinal.ordinal_dif(joined, group=attr, alpha=alpha, min_cell_size=min_cell_size)
        except ResearchError as exc:
            notes.append(f"construct {c!r}: no DIF test by {attr} ({exc})")
            continue
        dg = dg.set_index("item_id")
        better = tab["item_id"].map(dg["delta_r2"]).to_numpy(dtype=float)
        now = tab["dif_group_delta_r2"].to_numpy(dtype=float)
        take = np.isfinite(better) & ~(better <= now)
        for col, src in (("dif_group_focal", "focal_group"), ("dif_group_class", "dif_class"),
                         ("dif_group_delta_r2", "delta_r2"), ("dif_group_log_odds", "log_odds"),
                         ("dif_group_log_odds_se", "log_odds_se"), ("dif_group_p", "p_adjusted")):
            vals = tab["item_id"].map(dg[src])
            tab[col] = tab[col].where(~take, vals)
        tab["dif_group_attribute"] = tab["dif_group_attribute"].where(~take, attr)


def survey_items(
    surveys: pd.DataFrame,
    learners: pd.DataFrame | None = None,
    *,
    model: str = "grm",
    groups: tuple[str, ...] = ("gender", "role"),
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    alpha: float = 0.05,
    models: dict | None = None,
) -> pd.DataFrame:
    """One row per construct x item: the ordinal item model, fit, ceiling share and DIF.

    ``models`` (from :func:`fit_constructs`) saves fitting the constructs' models again.

    Returns
    -------
    DataFrame with construct, item_id, reverse_coded, model, n_learners (learners who
        answered the item in any wave), n_responses, n_categories, discrimination (GRM a, on
        the reverse-coded scale: negative when the item runs against the construct),
        discrimination_se, loading (standardised probit loading), loading_se, location (mean
        threshold), threshold_low, threshold_high, infit, outfit, misfit, share_top (share of
        answers in the top two categories), share_top_se, dif_wave_class / _delta_r2 / _p
        (ordinal DIF across waves), dif_group_attribute, dif_group_focal, dif_group_class,
        dif_group_delta_r2, dif_group_log_odds, dif_group_log_odds_se, dif_group_p (the
        learner attribute with the largest DIF at baseline), note, suppressed_reason.
        ``attrs["notes"]`` lists what was left out and why.
    """
    scored, notes = clean_surveys(surveys, min_cell_size=min_cell_size)
    rows = []
    for c in sorted(scored["construct"].unique()):  # constructs (few)
        sub = scored[scored["construct"] == c]
        try:
            m = _construct_model(models, c, sub, model, ci_level)
        except ResearchError as exc:
            notes.append(f"construct {c!r}: the item model could not be fitted ({exc})")
            continue
        const = _constant_items(sub)
        for it in const:
            notes.append(f"construct {c!r}: everyone gave question {it!r} the same answer; it was left out of the item model")
        tab = _item_table(c, sub, m.summary().set_index("item_id"), const, model)
        if sub["phase"].nunique() > 1:  # DIF across waves (cases = learner x wave)
            _wave_dif(tab, sub, c, notes, alpha=alpha, min_cell_size=min_cell_size)
        if learners is not None and len(learners):  # DIF across learner groups, at the first wave
            _group_dif(tab, sub, learners, groups, c, notes, alpha=alpha, min_cell_size=min_cell_size)
        rows.append(tab)
    if not rows:
        out = pd.DataFrame(columns=ITEM_COLUMNS)
    else:
        out = pd.concat(rows, ignore_index=True)
        out["suppressed_reason"] = pd.NA
    small = out["n_learners"].astype(float) < int(min_cell_size)
    values = [c for c in ITEM_COLUMNS if c not in ("construct", "item_id", "reverse_coded", "model", "suppressed_reason")]
    if small.any():
        out.loc[small, values] = np.nan
        out.loc[small, "suppressed_reason"] = f"fewer than {int(min_cell_size)} learners answered this question"
    out = out[ITEM_COLUMNS].astype({
        "construct": "string", "item_id": "string", "reverse_coded": "boolean", "model": "string",
        "n_learners": "Int64", "n_responses": "Int64", "n_categories": "Int64", "misfit": "boolean",
        "dif_wave_class": "string", "dif_group_attribute": "string", "dif_group_focal": "string",
        "dif_group_class": "string", "note": "string", "suppressed_reason": "string"})
    num = [c for c in ITEM_COLUMNS if c in ("discrimination", "discrimination_se", "loading", "loading_se", "location",
                                            "threshold_low", "threshold_high", "infit", "outfit", "share_top",
                                            "share_top_se", "dif_wave_delta_r2", "dif_wave_p", "dif_group_delta_r2",
                                            "dif_group_log_odds", "dif_group_log_odds_se", "dif_group_p")]
    out[num] = out[num].astype(float)
    out.attrs["notes"] = notes
    return out.reset_index(drop=True)


WAVE_COLUMNS = ["construct", "phase", "n", "n_attrition", "mean_score", "score_ci_low", "score_ci_high", "estimate",
                "se", "ci_low", "ci_high", "sd", "bayes_estimate", "bayes_ci_low", "bayes_ci_high", "invariance",
                "comparable", "note", "method", "suppressed_reason"]


def survey_waves(
    surveys: pd.DataFrame,
    *,
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    alpha: float = 0.05,
    min_invariance_n: int = MIN_INVARIANCE_N,
    bayes: dict[str, pd.DataFrame] | None = None,
    items: pd.DataFrame | None = None,
    invariance: pd.DataFrame | None = None,
    models: dict | None = None,
) -> pd.DataFrame:
    """One row per construct x wave: the construct on one linked scale, with attrition.

    ``estimate`` is the wave's mean on the latent scale of a multi-group GRM whose item
    parameters are common to all waves (baseline mean 0, SD 1), with a Wald interval; every
    answer is used, so learners who answered only some waves are kept. The same learner's
    waves are treated as independent cases, which makes the intervals of a change wider than
    they need be (the Bayesian model, ``bayes``, adds learner effects). ``invariance`` is
    the highest level (configural, metric, scalar) the likelihood-ratio tests across waves
    keep, tested when every wave has ``min_invariance_n`` answers; ``comparable`` is false when
    scalar invariance is rejected or a question shows large (class C) DIF across waves
    (``items``: the ``survey_items`` table), and ``note`` says so in plain words. Give the
    :func:`survey_invariance` table as ``invariance`` to reuse its wave comparisons, and the
    dict of :func:`fit_constructs` as ``models`` to reuse the constructs' fits.

    Returns
    -------
    DataFrame with construct, phase, n, n_attrition (baseline learners who did not answer this
        wave), mean_score, score_ci_low, score_ci_high (t interval of the construct score),
        estimate, se, ci_low, ci_high, sd (linked latent scale), bayes_estimate, bayes_ci_low,
        bayes_ci_high, invariance, comparable, note, method, suppressed_reason.
        ``attrs["notes"]`` lists what was left out and why.
    """
    scored, notes = clean_surveys(surveys, min_cell_size=min_cell_size)
    rows = []
    for c in sorted(scored["construct"].unique()):  # constructs (few)
        sub = scored[scored["construct"] == c]
        try:
            gm = _construct_model(models, c, sub, "grm", ci_level).group_means().set_index("group")
        except ResearchError as exc:
            notes.append(f"construct {c!r}: the wave model could not be fitted ({exc})")
            gm = None
        level, safe, note = "not tested", True, ""
        if len(_phases(sub)) > 1:
            level, safe, note = _wave_invariance(surveys, c, invariance, items, min_cell_size=min_cell_size,
                                                 min_invariance_n=min_invariance_n, alpha=alpha)
        rows += _wave_rows(c, sub, gm, level, safe, note, ci_level)
    out = pd.DataFrame(rows, columns=[c for c in WAVE_COLUMNS if c not in ("bayes_estimate", "bayes_ci_low",
                                                                           "bayes_ci_high", "suppressed_reason")])
    out = _with_bayes(out, bayes)
    out["suppressed_reason"] = pd.NA
    att = (out["n_attrition"] > 0) & (out["n_attrition"] < int(min_cell_size))
    if att.any():  # a handful who left would stand out
        out["n_attrition"] = out["n_attrition"].astype("Int64")
        out.loc[att, "n_attrition"] = pd.NA
    out = out[WAVE_COLUMNS].astype({"construct": "string", "phase": "string", "n": "Int64", "n_attrition": "Int64",
                                    "invariance": "string", "comparable": "boolean", "note": "string",
                                    "method": "string", "suppressed_reason": "string"})
    out.attrs["notes"] = notes
    return out.reset_index(drop=True)


def _wave_invariance(surveys: pd.DataFrame, c: str, invariance: pd.DataFrame | None, items: pd.DataFrame | None, *,
                     min_cell_size: int, min_invariance_n: int, alpha: float) -> tuple[str, bool, str]:
    """(level, comparable, note) of construct ``c``'s comparison across waves: the row of the
    ``invariance`` table when given, else tested here."""
    if invariance is not None and len(invariance):
        inv_row = invariance[(invariance["construct"].astype(str) == c) & (invariance["comparison"] == "wave")]
    else:
        inv_row = survey_invariance(sub_surveys(surveys, c), groups=(), min_cell_size=min_cell_size,
                                    min_invariance_n=min_invariance_n, alpha=alpha, items=items)
    if not len(inv_row):
        return "not tested", True, ""
    note = inv_row["note"].iloc[0]
    return str(inv_row["level"].iloc[0]), bool(inv_row["comparable"].iloc[0]), str(note) if pd.notna(note) else ""


def _wave_rows(c: str, sub: pd.DataFrame, gm: pd.DataFrame | None, level: str, safe: bool, note: str,
               ci_level: float) -> list[dict]:
    """One construct's rows: per wave the score mean with its t interval, attrition since the
    first wave, and the linked-scale mean of the group means ``gm`` (when the model was fitted)."""
    z = stats.norm.ppf(0.5 + ci_level / 2)
    phases = _phases(sub)
    score = sub.groupby(["phase", "learner_id"], observed=True)["score"].mean()
    base = set(sub.loc[sub["phase"] == phases[0], "learner_id"])
    rows = []
    for p in phases:
        sc = score.loc[p]
        n = len(sc)
        mean = float(sc.mean())
        half = float(stats.t.ppf(0.5 + ci_level / 2, n - 1) * sc.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        row = {"construct": c, "phase": p, "n": n, "n_attrition": len(base - set(sc.index)), "mean_score": mean,
               "score_ci_low": mean - half, "score_ci_high": mean + half, "estimate": np.nan, "se": np.nan,
               "ci_low": np.nan, "ci_high": np.nan, "sd": np.nan, "invariance": level,
               "comparable": bool(safe), "note": note, "method": "grm_mml_multigroup"}
        if gm is not None and p in gm.index:
            e, se = float(gm.loc[p, "mean"]), float(gm.loc[p, "mean_se"])
            row.update(estimate=e, se=se, ci_low=e - z * se, ci_high=e + z * se, sd=float(gm.loc[p, "sd"]))
        rows.append(row)
    return rows


def _with_bayes(out: pd.DataFrame, bayes: dict[str, pd.DataFrame] | None) -> pd.DataFrame:
    """The ``bayes_*`` columns: from the :class:`BayesianWaves` summaries when given, else empty."""
    out["bayes_estimate"] = np.nan
    out["bayes_ci_low"] = np.nan
    out["bayes_ci_high"] = np.nan
    if bayes:
        bf = pd.concat(list(bayes.values()), ignore_index=True)
        key = out.set_index(["construct", "phase"]).index
        bk = bf.set_index(["construct", "phase"])
        for col, src in (("bayes_estimate", "estimate"), ("bayes_ci_low", "ci_low"), ("bayes_ci_high", "ci_high")):
            out[col] = bk[src].reindex(key).to_numpy(dtype=float)
        out["method"] = "grm_mml_multigroup+bayes_ordinal_waves"
    return out


def sub_surveys(surveys: pd.DataFrame, construct: str) -> pd.DataFrame:
    return surveys[surveys["construct"].astype(str) == construct]


INVARIANCE_COLUMNS = ["construct", "comparison", "groups", "n_groups", "level", "p_metric", "p_scalar", "comparable",
                      "dif_items", "note", "method"]


def _unsafe(c: str, what: str, level: str, bad: list[str]) -> str:
    which = f" (question(s) {', '.join(bad)} changed meaning)" if bad else ""
    return (f"Comparing {what} on {c!r} is not safe: the questions do not work the same way for each{which}; "
            f"the invariance test stops at the {level} level.")


def survey_invariance(
    surveys: pd.DataFrame,
    learners: pd.DataFrame | None = None,
    *,
    groups: tuple[str, ...] = ("gender", "role"),
    min_cell_size: int = 10,
    min_invariance_n: int = MIN_INVARIANCE_N,
    alpha: float = 0.05,
    items: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Measurement invariance of each construct across waves and across learner groups.

    For waves (all answers) and for each attribute in ``groups`` (answers of the first
    wave), the configural, metric and scalar multi-group GRMs are compared
    (:func:`research.estimate.ordinal.invariance`) over the waves or groups that have
    ``min_invariance_n`` or more answers, each test at ``alpha`` divided by the number of
    comparisons in the table (Bonferroni). ``comparable`` is false when scalar invariance is
    rejected or a question shows large (class C) DIF for that comparison (``items``: the
    ``survey_items`` table); ``note`` then says in plain words that the comparison is not safe.

    Returns
    -------
    DataFrame with construct, comparison ('wave' or the attribute), groups (the compared
        waves or groups, ' | '-separated), n_groups, level (configural, metric, scalar, or
        'not tested'), p_metric, p_scalar (likelihood-ratio tests), comparable, dif_items
        (questions with class C DIF), note, method.
    """
    scored, _ = clean_surveys(surveys, min_cell_size=min_cell_size)
    rows = []
    for c in sorted(scored["construct"].unique()):  # constructs (few)
        for comp, data, what in _invariance_cases(scored[scored["construct"] == c], learners, groups):
            row = _invariance_row(c, comp, data, what, items, min_invariance_n=min_invariance_n, alpha=alpha)
            if row is not None:
                rows.append(row)
    _decide_levels(rows, alpha)
    out = pd.DataFrame(rows, columns=INVARIANCE_COLUMNS)
    return out.astype({"construct": "string", "comparison": "string", "groups": "string", "n_groups": "Int64",
                       "level": "string", "comparable": "boolean", "dif_items": "string", "note": "string",
                       "method": "string"}).reset_index(drop=True)


def _invariance_cases(sub: pd.DataFrame, learners: pd.DataFrame | None, groups) -> list[tuple]:
    """One construct's comparisons: (name, answers with their group in ``_grp``, words for the
    note): the waves (all answers), then each learner attribute (answers of the first wave)."""
    cases = [("wave", sub.assign(_grp=sub["phase"]), "the waves")]
    if learners is not None and len(learners):
        base = sub[sub["phase"] == _phases(sub)[0]]
        for attr in groups:
            if attr in learners.columns:
                lk = learners[["learner_id", attr]].dropna().astype({"learner_id": "string"})
                j = base.merge(lk, on="learner_id", how="inner")
                cases.append((attr, j.assign(_grp=j[attr].astype(str)), f"{attr} groups"))
    return cases


def _class_c_items(items: pd.DataFrame | None, c: str, comp: str) -> list[str]:
    """Questions of construct ``c`` with large (class C) DIF for comparison ``comp`` in ``items``."""
    if items is None or not len(items):
        return []
    col = "dif_wave_class" if comp == "wave" else "dif_group_class"
    sel = (items["construct"].astype(str) == c) & (items[col].astype(str) == "C")
    if comp != "wave":
        sel &= items["dif_group_attribute"].astype(str) == comp
    return sorted(items.loc[sel, "item_id"].astype(str))


def _invariance_row(c: str, comp: str, data: pd.DataFrame, what: str, items: pd.DataFrame | None, *,
                    min_invariance_n: int, alpha: float) -> dict | None:
    """One comparison's row with its likelihood-ratio p values (level 'tested'; decided by
    :func:`_decide_levels`), or None when there is one group only."""
    counts = data.groupby("_grp", observed=True)["learner_id"].nunique()
    if len(counts) < 2:
        return None
    big = sorted(counts.index[counts >= min_invariance_n], key=lambda g: (PHASES.index(g) if g in PHASES else 9, g))
    bad = _class_c_items(items, c, comp)
    row = {"construct": c, "comparison": comp, "groups": " | ".join(map(str, big)), "n_groups": len(big),
           "level": "not tested", "p_metric": np.nan, "p_scalar": np.nan, "comparable": True,
           "dif_items": " | ".join(bad), "note": "", "method": "grm_mml_lr", "_what": what, "_bad": bad}
    if len(big) < 2:
        row["note"] = f"not tested: fewer than two {what.replace('the ', '')} have {min_invariance_n} answers"
        return row
    try:
        inv = ordinal.invariance(data[data["_grp"].isin(big)], group="_grp", alpha=alpha, group_order=big)
        iv = inv.set_index("level")
        row.update(level="tested", p_metric=float(iv["p"].get("metric", np.nan)), p_scalar=float(iv.loc["scalar", "p"]))
    except ResearchError as exc:
        row["note"] = f"no invariance test ({exc})"
    return row


def _decide_levels(rows: list[dict], alpha: float) -> None:
    """One decision per comparison, Bonferroni over the comparisons of the table (many are
    tested at once); a comparison that is not safe gets its plain sentence in ``note``."""
    n_tests = max(sum(r["level"] == "tested" for r in rows), 1)
    cut = alpha / n_tests
    for row in rows:
        if row["level"] == "tested":
            level = "configural"
            if not (row["p_metric"] < cut):  # NaN (PCM: no metric step) counts as kept
                level = "metric"
                if not (row["p_scalar"] < cut):
                    level = "scalar"
            row["level"] = level
        safe = (row["level"] in ("scalar", "not tested")) and not row["_bad"]
        row["comparable"] = bool(safe)
        if not safe:
            row["note"] = _unsafe(row["construct"], row["_what"], row["level"], row["_bad"])


@dataclass
class BayesianWaves:
    """Bayesian wave means of one construct, with learner effects (PyMC).

    ``Y ~ OrderedLogistic(a_j * (mu[wave] + u[learner]), cutpoints_j)`` with ``mu[baseline] =
    0``, ``mu[other] ~ Normal(0, 1.5)``, ``u ~ Normal(0, sigma_u)`` (non-centred), ``a_j ~
    LogNormal(0, 0.5)``, ordered cutpoints ``Normal(0, 3)`` per item. Every answer of every
    learner enters, so learners who skipped a wave are kept, and their other waves inform
    their learner effect. ``summary()`` gives one row per wave.
    """

    settings: object = None
    ci_level: float = 0.95
    fitted_: bool = field(default=False, init=False)

    def __post_init__(self):
        from research.bayes import SamplerSettings

        if self.settings is None:
            self.settings = SamplerSettings()
        if not isinstance(self.settings, SamplerSettings):
            raise ConfigError(f"settings must be a research.bayes.SamplerSettings, got {type(self.settings).__name__}")

    def fit(self, surveys: pd.DataFrame, *, construct: str, min_cell_size: int = 10) -> "BayesianWaves":
        import pymc as pm

        from research.bayes import diagnostics, sample, stacked

        scored, _ = clean_surveys(surveys, min_cell_size=min_cell_size)
        s = scored[scored["construct"] == construct]
        if s.empty:
            raise DataError(f"construct {construct!r} has no usable answers")
        phases = _phases(s)
        learners = pd.Index(sorted(s["learner_id"].unique()))
        items = pd.Index(sorted(s["item_id"].unique()))
        li, ii = learners.get_indexer(s["learner_id"]), items.get_indexer(s["item_id"])
        wi = pd.Index(phases).get_indexer(s["phase"])
        K = int(s["scale_max"].iloc[0] - s["scale_min"].iloc[0] + 1)
        coords = {"learner": list(learners), "item": list(items), "wave": phases, "cut": np.arange(K - 1)}
        with pm.Model(coords=coords) as model:
            shift = pm.Normal("shift", 0.0, 1.5, shape=len(phases) - 1) if len(phases) > 1 else None
            mu = pm.Deterministic("mu", pm.math.concatenate([np.zeros(1), shift]) if shift is not None
                                  else pm.math.zeros(1), dims="wave")
            sigma_u = pm.HalfNormal("sigma_u", 1.5)
            u = sigma_u * pm.Normal("z_u", 0.0, 1.0, dims="learner")
            a = pm.LogNormal("a", 0.0, 0.5, dims="item")
            cut = pm.Normal("cutpoints", 0.0, 3.0, dims=("item", "cut"),
                            transform=pm.distributions.transforms.ordered,
                            initval=np.tile(np.linspace(-2, 2, K - 1), (len(items), 1)))
            pm.OrderedLogistic("y", eta=a[ii] * (mu[wi] + u[li]), cutpoints=cut[ii], observed=s["category"].to_numpy())
        idata = sample(model, self.settings)
        self.diagnostics_ = diagnostics(idata, var_names=["mu", "sigma_u", "a"])
        self.mu_draws_ = stacked(idata, "mu")
        self.idata_ = idata
        self.construct_, self.phases_ = construct, phases
        self.n_ = s.groupby("phase", observed=True)["learner_id"].nunique().reindex(phases).to_numpy()
        self.fitted_ = True
        return self

    def summary(self) -> pd.DataFrame:
        """One row per wave: construct, phase, estimate (posterior mean of mu), se, ci_low, ci_high,
        prob_above_baseline, n, method ('bayes_ordinal_waves')."""
        if not self.fitted_:
            raise ConfigError("call fit() before summary()")
        d = self.mu_draws_
        a = 1 - self.ci_level
        out = pd.DataFrame({"construct": self.construct_, "phase": self.phases_, "estimate": d.mean(axis=0),
                            "se": d.std(axis=0, ddof=1), "ci_low": np.quantile(d, a / 2, axis=0),
                            "ci_high": np.quantile(d, 1 - a / 2, axis=0), "prob_above_baseline": (d > 0).mean(axis=0),
                            "n": self.n_, "method": "bayes_ordinal_waves"})
        out.attrs.update(converged=bool(self.diagnostics_.attrs["ok"]))
        return out.astype({"construct": "string", "phase": "string", "method": "string"})
