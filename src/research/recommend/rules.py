"""The rules: each turns one estimate table into findings (vectorised, no loop over rows).

A rule belongs to a family named after the estimate table it reads (``items``,
``distractors``, ``kcs``, ``dif``, ``funnel``, ``time_on_task``). A rule runs only when
its table is given and holds the columns it needs; :func:`research.recommend.recommend`
adds ids, severity, priority and rank to what the rules return.

Every rule returns one row per finding with the target, up to two pieces of evidence
(metric, estimate, se, ci_low, ci_high, n, the threshold and its comparison), a
``confidence`` in [0, 1] and ``n_affected`` (learners of the group the finding concerns:
those who met the item, KC or page; for DIF the group the item is harder for; for a
wrong option the learners who chose it; for a drop-out point the learners who left).

**A finding's confidence is its evidence**: the probability, from the estimate's own
standard error or interval, that the true value lies beyond the rule's threshold; never a
count of learners. A finding whose table gives no uncertainty has no confidence (empty,
``method`` ``no_interval``): it is listed, never rated High and never among the findings
to fix first. How the confidence is computed is named in ``method``:

``normal``
    Phi(|x - t| / se): the normal probability that the true value lies beyond the
    threshold t, for an estimate x with standard error se (from the table, from its
    interval at ``estimates_ci_level``, or the binomial se of a proportion).
``fisher_z``
    the same for a correlation on Fisher's z scale, se = 1 / sqrt(n - 3).
``fit_z``
    Phi(z - z_min) for a standardised fit statistic z.
``category``
    the learning-curve classifier's ``category_probability`` (bootstrap replicates that
    give the same category; for "no learning" capped by the probability that the free
    AFM slope is near zero, see :mod:`research.estimate.curves`).
``mean_diff``
    Phi(|d - t| / se) for a difference of two means d with se from their SDs and ns.
The confidence of a rule with two conditions is the product of the two.

**Column contract.** Each rule declares in ``inputs`` every column it reads with its
Table Schema type (``number``, ``integer``, ``string``, ``boolean``) and in ``table`` the
output table (``data_schema/outputs/TABLE.schema.json``) those columns come from; a test
checks every declaration against the schemas, and :func:`research.recommend.recommend`
hands a rule only its declared columns and refuses a numeric column that holds text.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats

from research.privacy import not_suppressed
from research.recommend.rule_base import N_, Rule
from research.recommend.rule_base import inputs_of as _inputs
from research.recommend.rule_base import interval
from research.recommend.rule_base import num as _num
from research.recommend.rule_base import select
from research.recommend.rule_base import text as _str

__all__ = ["FAMILIES", "RULES"]


#: the output table (data_schema/outputs/NAME.schema.json) each rule family reads
_ITEM_IDS = {"item_id": "string", "module": "string", "page": "string"}


def _phi_beyond(x: np.ndarray, t: np.ndarray | float, se: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return stats.norm.cdf(np.abs(x - t) / se)


def _se_from(df: pd.DataFrame, est: np.ndarray, n: np.ndarray, prefix: str, ctx: dict, *, proportion: bool) -> np.ndarray:
    """se of an estimate: the table's ``<prefix>_se``, else from its interval (``estimates_ci_level``), else binomial."""
    se = _num(df, f"{prefix}_se")
    lo, hi = _num(df, f"{prefix}_ci_low"), _num(df, f"{prefix}_ci_high")
    se = np.where(np.isnan(se), (hi - lo) / (2 * ctx["estimates_z"]), se)
    if proportion:
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.clip(est, 0.5 / np.maximum(n, 1), 1 - 0.5 / np.maximum(n, 1))
            binom = np.sqrt(p * (1 - p) / n)
        se = np.where(np.isnan(se), binom, se)
    return se


def _confidence_normal(x, t, se) -> tuple[np.ndarray, np.ndarray]:
    """Phi(|x - t| / se), or empty (method ``no_interval``) where there is no standard error."""
    with np.errstate(invalid="ignore"):
        conf = _phi_beyond(x, t, se)
        ok = np.isfinite(conf) & (se > 0)
    return np.where(ok, conf, np.nan), np.where(ok, "normal", "no_interval")


def _frame(df: pd.DataFrame, mask: np.ndarray, **cols) -> pd.DataFrame:
    """The findings of ``mask``: scalars are broadcast, arrays are filtered by the mask."""
    return select(np.asarray(mask, dtype=bool), **cols)


def _table_ci(df: pd.DataFrame, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The estimate table's own interval ``<prefix>_ci_low``, ``<prefix>_ci_high``."""
    return _num(df, f"{prefix}_ci_low"), _num(df, f"{prefix}_ci_high")


def _ci(bounds: tuple[np.ndarray, np.ndarray], suffix: str = "") -> dict:
    """``ci_low``/``ci_high`` (or ``ci_low_2``/``ci_high_2``) columns of a finding frame."""
    return {f"ci_low{suffix}": bounds[0], f"ci_high{suffix}": bounds[1]}


def _item_context(df: pd.DataFrame) -> dict:
    return {"target_id": _str(df, "item_id"), "module": _str(df, "module"), "page": _str(df, "page")}


# ---------------------------------------------------------------- items


def _too_easy(df, cfg, ctx):
    n = _num(df, "n_learners")
    fac, disc = _num(df, "facility"), _num(df, "discrimination")
    mask = (fac > cfg["facility_min"]) & (disc < cfg["discrimination_max"]) & (n >= cfg["min_n"])
    se_f = _se_from(df, fac, n, "facility", ctx, proportion=True)
    c1, m1 = _confidence_normal(fac, cfg["facility_min"], se_f)
    c2 = _fisher_confidence(disc, cfg["discrimination_max"], n)
    return _frame(
        df, mask, **_item_context(df),
        metric="facility", estimate=fac, se=se_f,
        **_ci(interval(fac, se_f, ctx, table=_table_ci(df, "facility"), bounds=(0, 1))),
        n=n, threshold_op=">", threshold=cfg["facility_min"],
        metric_2="discrimination", estimate_2=disc, se_2=_fisher_se(disc, n), n_2=n,
        threshold_op_2="<", threshold_2=cfg["discrimination_max"],
        confidence=c1 * c2, n_affected=n, method=np.where(m1 == "normal", "normal*fisher_z", "no_interval"),
    )


def _too_hard(df, cfg, ctx):
    n = _num(df, "n_learners")
    fac = _num(df, "facility")
    mask = (fac < cfg["facility_max"]) & (n >= cfg["min_n"])
    se_f = _se_from(df, fac, n, "facility", ctx, proportion=True)
    conf, method = _confidence_normal(fac, cfg["facility_max"], se_f)
    return _frame(
        df, mask, **_item_context(df),
        metric="facility", estimate=fac, se=se_f,
        **_ci(interval(fac, se_f, ctx, table=_table_ci(df, "facility"), bounds=(0, 1))),
        n=n, threshold_op="<", threshold=cfg["facility_max"],
        confidence=conf, n_affected=n, method=method,
    )


def _fisher_se(r: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Delta-method se of a correlation: (1 - r^2) / sqrt(n - 3)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (1 - r**2) / np.sqrt(np.maximum(n - 3, 1))


def _fisher_confidence(r: np.ndarray, t: float, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.arctanh(np.clip(r, -0.999, 0.999))
        zt = np.arctanh(np.clip(t, -0.999, 0.999))
        conf = stats.norm.cdf(np.abs(z - zt) * np.sqrt(np.maximum(n - 3, 1)))
    return np.where(n > 3, conf, np.nan)


def _discrimination_frame(df, mask, cfg, n, disc, threshold, ctx):
    z = ctx["z"]
    ci_lo, ci_hi = (np.tanh(np.arctanh(np.clip(disc, -0.999, 0.999)) + s * z / np.sqrt(np.maximum(n - 3, 1))) for s in (-1, 1))
    return _frame(
        df, mask, **_item_context(df),
        metric="discrimination", estimate=disc, se=_fisher_se(disc, n), ci_low=ci_lo, ci_high=ci_hi, n=n,
        threshold_op="<", threshold=threshold,
        confidence=_fisher_confidence(disc, threshold, n), n_affected=n, method="fisher_z",
    )


def _negative_discrimination(df, cfg, ctx):
    n, disc = _num(df, "n_learners"), _num(df, "discrimination")
    mask = (disc < cfg["discrimination_max"]) & (n >= cfg["min_n"])
    return _discrimination_frame(df, mask, cfg, n, disc, cfg["discrimination_max"], ctx)


def _low_discrimination(df, cfg, ctx):
    n, disc, fac = _num(df, "n_learners"), _num(df, "discrimination"), _num(df, "facility")
    neg = ctx["rules"]["negative_discrimination"]
    easy = ctx["rules"]["too_easy"]
    # not already reported as negatively discriminating or as too easy
    already = (neg["enabled"] & (disc < neg["discrimination_max"])) | (
        easy["enabled"] & (fac > easy["facility_min"]) & (disc < easy["discrimination_max"])
    )
    mask = (disc < cfg["discrimination_max"]) & (n >= cfg["min_n"]) & ~already
    return _discrimination_frame(df, mask, cfg, n, disc, cfg["discrimination_max"], ctx)


def _heavy_hint_use(df, cfg, ctx):
    n, rate = _num(df, "n_learners"), _num(df, "hint_rate")
    mask = (rate > cfg["hint_rate_min"]) & (n >= cfg["min_n"])
    se = _se_from(df, rate, n, "hint_rate", ctx, proportion=True)
    conf, method = _confidence_normal(rate, cfg["hint_rate_min"], se)
    return _frame(
        df, mask, **_item_context(df),
        metric="hint_rate", estimate=rate, se=se, **_ci(interval(rate, se, ctx)), n=n,
        threshold_op=">", threshold=cfg["hint_rate_min"], confidence=conf, n_affected=n, method=method,
    )


def _poor_fit(df, cfg, ctx):
    n = _num(df, "n_learners")
    out_m, out_z = _num(df, "outfit_mnsq"), _num(df, "outfit_z")
    in_m, in_z = _num(df, "infit_mnsq"), _num(df, "infit_z")
    out_fires = (out_m > cfg["mnsq_max"]) & (out_z > cfg["z_min"])
    in_fires = (in_m > cfg["mnsq_max"]) & (in_z > cfg["z_min"])
    use_out = out_fires | ~in_fires
    mnsq, z = np.where(use_out, out_m, in_m), np.where(use_out, out_z, in_z)
    mask = (out_fires | in_fires) & (n >= cfg["min_n"])
    conf = np.nan_to_num(stats.norm.cdf(z - cfg["z_min"]), nan=0.0)
    return _frame(
        df, mask, **_item_context(df),
        metric=np.where(use_out, "outfit_mnsq", "infit_mnsq"), estimate=mnsq, n=n,
        threshold_op=">", threshold=cfg["mnsq_max"],
        metric_2=np.where(use_out, "outfit_z", "infit_z"), estimate_2=z, n_2=n,
        threshold_op_2=">", threshold_2=cfg["z_min"],
        confidence=conf, n_affected=n, method="fit_z",
    )


# ---------------------------------------------------------------- distractors


def _distractor_base(df: pd.DataFrame):
    """Per option: item totals, the key's mean ability, and the option's gap to it (vectorised)."""
    is_key = df["is_key"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    n_opt = _num(df, "n")
    item = df["item_id"].astype("object")
    n_item = pd.Series(n_opt).groupby(item.to_numpy()).transform("sum").to_numpy(dtype=float)
    ability = _num(df, "mean_ability")
    key_ability = (
        pd.Series(np.where(is_key, ability, np.nan)).groupby(item.to_numpy()).transform("max").to_numpy(dtype=float)
    )
    share = _num(df, "share")
    share = np.where(np.isnan(share), n_opt / n_item, share)
    return is_key, n_opt, n_item, ability, key_ability, share


def _unused_distractor(df, cfg, ctx):
    is_key, n_opt, n_item, _, _, share = _distractor_base(df)
    mask = ~is_key & (share < cfg["share_max"]) & (n_item >= cfg["min_n"]) & not_suppressed(df)
    se = _se_from(df, share, n_item, "share", ctx, proportion=True)
    conf, method = _confidence_normal(share, cfg["share_max"], se)
    return _frame(
        df, mask, target_id=_str(df, "item_id"), detail=_str(df, "option"),
        metric="share", estimate=share, se=se, n=n_item, threshold_op="<", threshold=cfg["share_max"],
        confidence=conf, n_affected=n_item, method=method,
    )


def _strong_distractor(df, cfg, ctx):
    is_key, n_opt, n_item, ability, key_ability, share = _distractor_base(df)
    gap = ability - key_ability
    mask = (
        ~is_key & (gap > cfg["ability_margin"]) & (share >= cfg["share_min"]) & (n_item >= cfg["min_n"])
        & not_suppressed(df)
    )
    se_s = _se_from(df, share, n_item, "share", ctx, proportion=True)
    c_share, _ = _confidence_normal(share, cfg["share_min"], se_s)
    # the gap of two group means: se from the options' ability SDs and counts
    sd = _num(df, "sd_ability")
    item = df["item_id"].astype("object").to_numpy()
    key_var = pd.Series(np.where(is_key, sd**2 / n_opt, np.nan)).groupby(item).transform("max").to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        se_gap = np.sqrt(sd**2 / n_opt + key_var)
    c_gap, m_gap = _confidence_normal(gap, cfg["ability_margin"], se_gap)
    return _frame(
        df, mask, target_id=_str(df, "item_id"), detail=_str(df, "option"),
        metric="ability_gap", estimate=gap, se=se_gap, **_ci(interval(gap, se_gap, ctx)), n=n_opt,
        threshold_op=">", threshold=cfg["ability_margin"],
        metric_2="share", estimate_2=share, se_2=se_s, n_2=n_item, threshold_op_2=">=", threshold_2=cfg["share_min"],
        confidence=c_gap * c_share, n_affected=n_opt,
        method=np.where(m_gap == "normal", "mean_diff*normal", "no_interval"),
    )


# ---------------------------------------------------------------- kcs


def _kc_rule(category: str):
    def rule(df, cfg, ctx):
        cat = df["category"].astype("object").to_numpy()
        n_learners = _num(df, "n_learners")
        # the classifier's probability of its category (a number; category_confidence is its label)
        conf = _num(df, "category_probability")
        method = np.where(np.isnan(conf), "no_interval", "category")
        mask = (cat == category) & ~(conf < cfg["confidence_min"])
        slope, se = _num(df, "slope"), _num(df, "slope_se")
        return _frame(
            df, mask, target_id=_str(df, "kc"), kc_model=_str(df, "kc_model"),
            metric="slope", estimate=slope, se=se, **_ci(interval(slope, se, ctx, table=_table_ci(df, "slope"))),
            n=_num(df, "n_obs"), threshold_op="category", threshold=np.nan,
            metric_2="category_probability", estimate_2=conf, n_2=n_learners, threshold_op_2=">=",
            threshold_2=cfg["confidence_min"], confidence=conf, n_affected=n_learners, method=method,
        )

    return rule


def _kc_mixed_skills(df, cfg, ctx):
    """A clearly negative free AFM slope: the KC's later items are harder than practice makes up for."""
    slope = _num(df, "slope_free")
    se_total, se_order = _num(df, "slope_free_se"), _num(df, "slope_order_se")
    # the claim is about the observed trend over the KC's items, so its evidence is the
    # sampling error alone (the item-order error is what the claim is about)
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.clip(se_total**2 - np.nan_to_num(se_order) ** 2, 0, None))
    conf, method = _confidence_normal(slope, cfg["slope_max"], se)
    mask = (slope < cfg["slope_max"]) & (conf >= cfg["confidence_min"])
    return _frame(
        df, mask, target_id=_str(df, "kc"), kc_model=_str(df, "kc_model"),
        metric="slope", estimate=slope, se=se, **_ci(interval(slope, se, ctx)), n=_num(df, "n_obs"),
        threshold_op="<", threshold=cfg["slope_max"], confidence=conf, n_affected=_num(df, "n_learners"), method=method,
    )


# ---------------------------------------------------------------- dif


def _dif_rule(ets_class: str):
    def rule(df, cfg, ctx):
        cls = df["ets_class"].astype("object").to_numpy()
        suppressed = ~not_suppressed(df)
        delta, se = _num(df, "mh_delta"), _num(df, "mh_delta_se")
        p = _num(df, "p_adjusted")
        p = np.where(np.isnan(p), _num(df, "p_value"), p)
        mask = (cls == ets_class) & ~suppressed & ~(p >= cfg["alpha"])
        bound = 1.5 if ets_class == "C" else 1.0
        n_focal, n_ref = _num(df, "n_focal"), _num(df, "n_reference")
        conf, method = _confidence_normal(np.abs(delta), bound, se)
        # name the group the item is harder for: the focal group when delta < 0 (the item
        # favours the reference group), else the reference group
        attr = _str(df, "attribute")
        focal_harder = np.nan_to_num(delta, nan=0.0) < 0
        harder_for = np.where(focal_harder, _str(df, "focal_group"), _str(df, "reference_group"))
        easier_for = np.where(focal_harder, _str(df, "reference_group"), _str(df, "focal_group"))
        detail = (
            np.array([f"{a}={h}/{e}" for a, h, e in zip(attr, harder_for, easier_for)], dtype=object)
            if len(df) else np.array([], dtype=object)
        )
        return _frame(
            df, mask, target_id=_str(df, "item_id"), detail=detail,
            metric="mh_delta", estimate=delta, se=se, **_ci(interval(delta, se, ctx)),
            n=n_focal + n_ref, threshold_op="|x|>=", threshold=bound,
            metric_2="p_adjusted", estimate_2=p, n_2=n_focal, threshold_op_2="<", threshold_2=cfg["alpha"],
            # learners affected: the group the item is harder for
            confidence=conf, n_affected=np.where(focal_harder, n_focal, n_ref), method=method,
        )

    return rule


# ---------------------------------------------------------------- funnel and time


def _page_target(df: pd.DataFrame) -> tuple[str, dict]:
    """Funnel and time tables are per module, page or item (``level``): pick the target."""
    levels = set(df["level"].dropna().astype(str)) if "level" in df.columns else set()
    level = levels.pop() if len(levels) == 1 else None
    if level == "module":
        return "module", {"target_id": _str(df, "module"), "module": _str(df, "module")}
    if level == "page" or (
        level is None and "page" in df.columns and df["page"].notna().all() and not df["page"].duplicated().any()
    ):
        return "page", {"target_id": _str(df, "page"), "module": _str(df, "module"), "page": _str(df, "page")}
    return "item", _item_context(df)


def _dropout_hotspot(df, cfg, ctx):
    hazard = _num(df, "hazard")
    reached = _num(df, "reached")
    drop = _num(df, "drop")
    if np.isnan(hazard).all() and not np.isnan(drop).all():
        with np.errstate(divide="ignore", invalid="ignore"):
            hazard = drop / reached
    # the typical point: the median hazard over every point, hidden ones included. The funnel
    # gives a hazard at every point learners reached and hides it where few learners left
    # (or where that would give such a count back), so a missing hazard counts as 0 here:
    # the median of the shown hazards alone would be that of the biggest drops only.
    typical = np.where(np.isnan(hazard), 0.0, hazard)
    median = np.nanmedian(typical) if np.isfinite(typical).any() else np.nan
    threshold = max(cfg["hazard_min"], cfg["hazard_ratio_min"] * median) if np.isfinite(median) else cfg["hazard_min"]
    mask = (hazard > threshold) & (drop >= cfg["min_drop"])
    target_type, target = _page_target(df)
    # attempts only show the last thing a learner answered: learners counted as leaving at
    # unit U answered U and nothing after it, so they left at the start of the next unit
    # (where a course, and the simulator, place the cause). The finding names that unit;
    # without a next unit, U itself. (The evidence, hazard and n, is that of U's row.)
    next_col = {"page": "next_page", "module": "next_module", "item": "next_item_id"}[target_type]
    nxt = _str(df, next_col)
    has_next = np.array([v is not None and v == v and v != "" for v in nxt], dtype=bool)
    here = target["target_id"]
    target["target_id"] = np.where(has_next, nxt, here)
    next_module = _str(df, "next_module")
    if "module" in target and "next_module" in df.columns:
        target["module"] = np.where(has_next, next_module, target["module"])
    if target_type == "page":
        target["page"] = target["target_id"]
    elif target_type == "item":
        target["page"] = np.where(has_next, None, target["page"])
    se = _se_from(df, hazard, reached, "hazard", ctx, proportion=True)
    conf, method = _confidence_normal(hazard, threshold, se)
    out = _frame(
        df, mask, **target,
        metric="hazard", estimate=hazard, se=se, **_ci(interval(hazard, se, ctx, bounds=(0, 1))),
        n=reached, threshold_op=">", threshold=threshold,
        metric_2="drop", estimate_2=drop, n_2=reached, threshold_op_2=">=", threshold_2=cfg["min_drop"],
        # learners affected: those who left here
        confidence=conf, n_affected=drop, method=method,
    )
    out["target_type"] = target_type
    return out


def _slow_page(df, cfg, ctx):
    planned = _num(df, "planned_duration_s")
    ratio = _num(df, "ratio_to_planned")
    if np.isnan(ratio).all():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = _num(df, "median_s") / planned
    n = _num(df, "n")
    mask = (ratio > cfg["ratio_min"]) & (n >= cfg["min_n"]) & not_suppressed(df)
    target_type, target = _page_target(df)
    # the table's interval of the median time, divided by the planned time, gives the ratio's
    med_lo, med_hi = _num(df, "ci_low"), _num(df, "ci_high")
    with np.errstate(divide="ignore", invalid="ignore"):
        r_lo, r_hi = med_lo / planned, med_hi / planned
    se = (r_hi - r_lo) / (2 * ctx["estimates_z"])
    se_median = (med_hi - med_lo) / (2 * ctx["estimates_z"])
    conf, method = _confidence_normal(ratio, cfg["ratio_min"], se)
    out = _frame(
        df, mask, **target,
        metric="time_ratio", estimate=ratio, se=se, **_ci(interval(ratio, se, ctx, table=(r_lo, r_hi))), n=n,
        threshold_op=">", threshold=cfg["ratio_min"],
        metric_2="median_s", estimate_2=_num(df, "median_s"),
        **_ci(interval(_num(df, "median_s"), se_median, ctx, table=(med_lo, med_hi)), "_2"), n_2=n,
        threshold_op_2="planned", threshold_2=planned,
        confidence=conf, n_affected=n, method=method,
    )
    out["target_type"] = target_type
    return out


# ---------------------------------------------------------------- the registry

_KC_INPUTS = _inputs({"kc_model": "string", "kc": "string", "category": "string", "category_probability": "number",
                      "n_learners": "integer", "n_obs": "integer", "slope": "number", "slope_se": "number",
                      "slope_ci_low": "number", "slope_ci_high": "number"})


def _kc_category_rule(category: str, title: str, explanation: str, action: str) -> Rule:
    """The rule ``kc_CATEGORY``: flags the KCs the learning-curve classifier put in ``category``."""
    return Rule(f"kc_{category}", "kcs", "kc", ("kc", "category"), _kc_rule(category), title, explanation, action,
                inputs=_KC_INPUTS)


_DIF_INPUTS = _inputs({"item_id": "string", "attribute": "string", "reference_group": "string", "focal_group": "string",
                       "ets_class": "string", "mh_delta": "number", "mh_delta_se": "number", "p_value": "number",
                       "p_adjusted": "number", "n_focal": "integer", "n_reference": "integer",
                       "suppressed_reason": "string"})

RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule(
            "too_easy", "items", "item", ("item_id", "facility", "discrimination", "n_learners"), _too_easy,
            N_("Too easy"),
            N_("More than %(facility_min)s of learners answer correctly at the first attempt, and the item hardly "
               "separates learners who know the topic from those who do not (item-rest correlation below "
               "%(discrimination_max)s)."),
            N_("Make the item more demanding (for example with better distractors), or drop it if it teaches nothing."),
            inputs=_inputs(_ITEM_IDS, {"n_learners": "integer", "facility": "number", "facility_ci_low": "number",
                                       "facility_ci_high": "number", "discrimination": "number"})
        ),
        Rule(
            "too_hard", "items", "item", ("item_id", "facility", "n_learners"), _too_hard,
            N_("Too hard"),
            N_("Fewer than %(facility_max)s of learners answer correctly at the first attempt."),
            N_("Check that the page before the item teaches what it asks; simplify the wording or add an example."),
            inputs=_inputs(_ITEM_IDS, {"n_learners": "integer", "facility": "number", "facility_ci_low": "number",
                                       "facility_ci_high": "number"})
        ),
        Rule(
            "negative_discrimination", "items", "item", ("item_id", "discrimination", "n_learners"),
            _negative_discrimination,
            N_("Strong learners do worse"),
            N_("Learners who do well on the rest of the course do worse on this item than weaker learners "
               "(item-rest correlation below %(discrimination_max)s). This is the typical sign of a wrong answer key."),
            N_("Check the answer key first, then the wording: is more than one option defensible?"),
            inputs=_inputs(_ITEM_IDS, {"n_learners": "integer", "discrimination": "number"})
        ),
        Rule(
            "low_discrimination", "items", "item", ("item_id", "discrimination", "n_learners"), _low_discrimination,
            N_("Does not discriminate"),
            N_("The item hardly separates learners who know the topic from those who do not (item-rest "
               "correlation below %(discrimination_max)s)."),
            N_("Check the wording and the answer options: is the item ambiguous, or does it test something else?"),
            inputs=_inputs(_ITEM_IDS, {"n_learners": "integer", "discrimination": "number", "facility": "number"})
        ),
        Rule(
            "heavy_hint_use", "items", "item", ("item_id", "hint_rate", "n_learners"), _heavy_hint_use,
            N_("Heavy hint use"),
            N_("Learners ask for a hint on more than %(hint_rate_min)s of their attempts."),
            N_("Explain the topic better on the page before the item, or make the question clearer."),
            inputs=_inputs(_ITEM_IDS, {"n_learners": "integer", "hint_rate": "number"})
        ),
        Rule(
            "poor_fit", "items", "item", ("item_id", "outfit_mnsq", "outfit_z", "n_learners"), _poor_fit,
            N_("Unexpected answers"),
            N_("Answers to this item follow the overall ability of learners less than expected (Rasch fit "
               "mean square above %(mnsq_max)s, z above %(z_min)s): guessing, careless errors or an unclear item."),
            N_("Read the item with a colleague: is it unclear, tricky, or about something outside the course?"),
            inputs=_inputs(_ITEM_IDS, {"n_learners": "integer", "outfit_mnsq": "number", "outfit_z": "number",
                                       "infit_mnsq": "number", "infit_z": "number"})
        ),
        Rule(
            "unused_distractor", "distractors", "item", ("item_id", "option", "is_key", "n"), _unused_distractor,
            N_("Unused answer option"),
            N_("An answer option is chosen by fewer than %(share_max)s of learners, so it does no work."),
            N_("Replace the option with a plausible mistake that learners really make."),
            inputs=_inputs({"item_id": "string", "option": "string", "is_key": "boolean", "n": "integer",
                            "share": "number", "suppressed_reason": "string"})
        ),
        Rule(
            "strong_distractor", "distractors", "item", ("item_id", "option", "is_key", "n", "mean_ability"),
            _strong_distractor,
            N_("Strong learners pick a wrong option"),
            N_("A wrong answer option is chosen by at least %(share_min)s of learners, and those who choose it "
               "do better on the rest of the course than those who choose the key."),
            N_("Check the answer key and whether this option can also be defended as correct."),
            inputs=_inputs({"item_id": "string", "option": "string", "is_key": "boolean", "n": "integer",
                            "share": "number", "mean_ability": "number", "sd_ability": "number",
                            "suppressed_reason": "string"})
        ),
        _kc_category_rule(
            "no_learning",
            N_("No learning"),
            N_("The error rate on this knowledge component does not fall with practice. The component may "
               "hide several different skills, or the instruction does not help."),
            N_("Split the knowledge component into the skills the items really need, or revise the instruction.")
        ),
        _kc_category_rule(
            "still_high",
            N_("Still hard after practice"),
            N_("Learners improve with practice on this knowledge component, but are still often wrong at the end."),
            N_("Add practice opportunities or instruction for this knowledge component.")
        ),
        _kc_category_rule(
            "low_and_flat",
            N_("Already mastered"),
            N_("Learners make few errors from the first opportunity on, and the error rate stays low."),
            N_("Cut some of the practice for this knowledge component; learners already master it.")
        ),
        _kc_category_rule(
            "too_little_data",
            N_("Too little data"),
            N_("There are too few practice opportunities on this knowledge component to judge its learning curve."),
            N_("Add items for this knowledge component or merge it with a related one.")
        ),
        Rule(
            "kc_mixed_skills", "kcs", "kc", ("kc", "slope_free", "slope_free_se"), _kc_mixed_skills,
            N_("Later items are harder"),
            N_("The error rate on this knowledge component rises with practice: its later items are harder than "
               "its earlier ones by more than learners gain (free learning rate below %(slope_max)s). The "
               "component probably mixes skills of different difficulty."),
            N_("Split the knowledge component into the skills its items really need, and check the order of its items."),
            inputs=_inputs({"kc_model": "string", "kc": "string", "slope_free": "number", "slope_free_se": "number",
                            "slope_order_se": "number", "n_obs": "integer", "n_learners": "integer"})
        ),
        Rule(
            "dif_class_c", "dif", "item", ("item_id", "ets_class", "mh_delta"), _dif_rule("C"),
            N_("Works differently for a group"),
            N_("Learners of one group with the same overall ability as others answer this item differently "
               "(large differential item functioning, ETS class C, adjusted p below %(alpha)s)."),
            N_("Review the wording and the examples for the group named: do they assume knowledge the group may not share?"),
            inputs=_DIF_INPUTS
        ),
        Rule(
            "dif_class_b", "dif", "item", ("item_id", "ets_class", "mh_delta"), _dif_rule("B"),
            N_("Works somewhat differently for a group"),
            N_("Moderate differential item functioning (ETS class B, adjusted p below %(alpha)s)."),
            N_("Keep an eye on this item in the next cohort."),
            inputs=_DIF_INPUTS
        ),
        Rule(
            "dropout_hotspot", "funnel", "page", ("hazard", "drop", "reached"), _dropout_hotspot,
            N_("Learners leave here"),
            N_("More than %(hazard_min)s of the learners who reach this point stop here, at least "
               "%(hazard_ratio_min)s times as many as at a typical point, and at least %(min_drop)s learners in all."),
            N_("Look at the page where learners stop: is it too long, too hard, or does something not work?"),
            inputs=_inputs({"level": "string", "module": "string", "page": "string", "item_id": "string",
                            "hazard": "number", "reached": "integer", "drop": "integer", "next_module": "string",
                            "next_page": "string", "next_item_id": "string"})
        ),
        Rule(
            "slow_page", "time_on_task", "page", ("median_s", "planned_duration_s"), _slow_page,
            N_("Takes far longer than planned"),
            N_("Learners spend more than %(ratio_min)s times the planned time here (median time)."),
            N_("Shorten the page or split it, or revise the planned time in the course description."),
            inputs=_inputs({"level": "string", "module": "string", "page": "string", "item_id": "string",
                            "n": "integer", "median_s": "number", "ci_low": "number", "ci_high": "number",
                            "planned_duration_s": "number", "ratio_to_planned": "number",
                            "suppressed_reason": "string"})
        ),
    ]
}

from research.recommend.mastery_rules import MASTERY_RULES  # noqa: E402  (rules on the mastery table)
RULES.update(MASTERY_RULES)
from research.recommend.survey_rules import SURVEY_RULES  # noqa: E402  (rules on the survey_items table)
RULES.update(SURVEY_RULES)
FAMILIES = tuple(dict.fromkeys(r.family for r in RULES.values()))
