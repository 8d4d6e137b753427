"""Recommendation rules on the ``survey_items`` table (ordinal item models of survey questions).

``survey_misfit``
    The question hardly measures its construct: standardised loading between
    ``-loading_min`` and ``loading_min``.
``survey_ceiling``
    Nearly everyone agrees: the share of answers in the top two categories is at least
    ``share_top_min``; the question cannot show change or differences.
``survey_dif``
    The question works differently for a group of learners (ordinal DIF class C at baseline).
``survey_reversed``
    A reverse-coded question behaves as if it were not reversed: after turning its answers
    round its loading is below ``-loading_min`` (respondents did not read the negation).

Confidence comes from each estimate's own standard error (``normal``). Registered in
:data:`research.recommend.rules.RULES` by one line at the end of that module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from research.privacy import not_suppressed
from research.recommend.rule_base import N_, Rule, interval
from research.recommend.rule_base import num as _num
from research.recommend.rule_base import select as _frame
from research.recommend.rule_base import text as _str

__all__ = ["SURVEY_RULES"]

_IDS = {"construct": "string", "item_id": "string", "n_learners": "integer", "suppressed_reason": "string"}


def _conf(x: np.ndarray, t: float, se: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        c = stats.norm.cdf(np.abs(x - t) / se)
    return np.where(np.isfinite(c), c, 0.0)


def _shown(df: pd.DataFrame) -> np.ndarray:
    return not_suppressed(df) & (_num(df, "n_learners") >= 1)


def _misfit(df, cfg, ctx):
    lam, se = _num(df, "loading"), _num(df, "loading_se")
    t = cfg["loading_min"]
    mask = _shown(df) & (np.abs(lam) < t)
    ci_low, ci_high = interval(lam, se, ctx)
    return _frame(mask, target_id=_str(df, "item_id"), detail=_str(df, "construct"), metric="loading", estimate=lam,
                  se=se, ci_low=ci_low, ci_high=ci_high, n=_num(df, "n_learners"),
                  threshold_op="|x|<", threshold=t, metric_2="outfit", estimate_2=_num(df, "outfit"),
                  n_2=_num(df, "n_responses"), threshold_2=np.nan, confidence=_conf(np.abs(lam), t, se),
                  n_affected=_num(df, "n_learners"), method="normal")


def _ceiling(df, cfg, ctx):
    share, se = _num(df, "share_top"), _num(df, "share_top_se")
    t = cfg["share_top_min"]
    mask = _shown(df) & (share >= t)
    ci_low, ci_high = interval(share, se, ctx, bounds=(0, 1))
    return _frame(mask, target_id=_str(df, "item_id"), detail=_str(df, "construct"), metric="share_top",
                  estimate=share, se=se, ci_low=ci_low, ci_high=ci_high,
                  n=_num(df, "n_responses"), threshold_op=">=", threshold=t, metric_2="threshold_high",
                  estimate_2=_num(df, "threshold_high"), n_2=_num(df, "n_learners"), threshold_2=np.nan,
                  confidence=_conf(share, t, se), n_affected=_num(df, "n_learners"), method="normal")


def _dif(df, cfg, ctx):
    cls = _str(df, "dif_group_class")
    lo, se = _num(df, "dif_group_log_odds"), _num(df, "dif_group_log_odds_se")
    mask = _shown(df) & np.array([c == "C" for c in cls], dtype=bool)
    attr, focal = _str(df, "dif_group_attribute"), _str(df, "dif_group_focal")
    detail = np.array([f"{a}={f}" for a, f in zip(attr, focal)], dtype=object) if len(df) else np.array([], dtype=object)
    ci_low, ci_high = interval(lo, se, ctx)
    return _frame(mask, target_id=_str(df, "item_id"), detail=detail, metric="dif_group_log_odds", estimate=lo, se=se,
                  ci_low=ci_low, ci_high=ci_high, n=_num(df, "n_learners"), threshold_op="|x|>", threshold=0.0,
                  metric_2="dif_group_delta_r2", estimate_2=_num(df, "dif_group_delta_r2"), n_2=_num(df, "n_learners"),
                  threshold_2=0.07, confidence=_conf(np.abs(lo), 0.0, se), n_affected=_num(df, "n_learners"),
                  method="normal")


def _reversed(df, cfg, ctx):
    lam, se = _num(df, "loading"), _num(df, "loading_se")
    rev = df["reverse_coded"].astype("boolean").fillna(False).to_numpy(dtype=bool) if "reverse_coded" in df.columns \
        else np.zeros(len(df), dtype=bool)
    t = -cfg["loading_min"]
    mask = _shown(df) & rev & (lam < t)
    ci_low, ci_high = interval(lam, se, ctx)
    return _frame(mask, target_id=_str(df, "item_id"), detail=_str(df, "construct"), metric="loading", estimate=lam,
                  se=se, ci_low=ci_low, ci_high=ci_high, n=_num(df, "n_learners"), threshold_op="<",
                  threshold=t, metric_2="discrimination", estimate_2=_num(df, "discrimination"),
                  n_2=_num(df, "n_responses"), threshold_2=np.nan, confidence=_conf(lam, t, se),
                  n_affected=_num(df, "n_learners"), method="normal")


_COMMON = {**_IDS, "loading": "number", "loading_se": "number", "n_responses": "integer"}

SURVEY_RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule("survey_misfit", "survey_items", "item", ("item_id", "loading"), _misfit,
             N_("Question does not fit the construct"),
             N_("The answers to this question hardly go with the other questions of its construct (standardised "
                "loading below %(loading_min)s): it measures something else."),
             N_("Rewrite the question so that it asks about the construct, or move it out of the construct's score."),
             inputs=tuple({**_COMMON, "outfit": "number"}.items())),
        Rule("survey_ceiling", "survey_items", "item", ("item_id", "share_top"), _ceiling,
             N_("Everyone agrees (ceiling)"),
             N_("At least %(share_top_min)s of the answers are in the top two categories: the question cannot show "
                "change between waves or differences between groups."),
             N_("Make the statement stronger or more specific, so that agreeing with it says something."),
             inputs=tuple({**_IDS, "share_top": "number", "share_top_se": "number", "n_responses": "integer",
                           "threshold_high": "number"}.items())),
        Rule("survey_dif", "survey_items", "item", ("item_id", "dif_group_class"), _dif,
             N_("Question works differently for a group"),
             N_("Learners of one group answer this question differently from others at the same level of the construct "
                "(large ordinal DIF, class C)."),
             N_("Check the wording with members of the group: a word or example may mean something else to them."),
             inputs=tuple({**_IDS, "dif_group_class": "string", "dif_group_attribute": "string",
                           "dif_group_focal": "string", "dif_group_log_odds": "number", "dif_group_log_odds_se": "number",
                           "dif_group_delta_r2": "number"}.items())),
        Rule("survey_reversed", "survey_items", "item", ("item_id", "loading", "reverse_coded"), _reversed,
             N_("Reverse-coded question behaves as if not reversed"),
             N_("This question is scored in reverse, but its answers go with the construct as if it were not "
                "(loading below -%(loading_min)s after reversing): respondents may have missed the negation."),
             N_("Rephrase the question positively, or check that it is really meant to be reversed."),
             inputs=tuple({**_COMMON, "reverse_coded": "boolean", "discrimination": "number"}.items())),
    ]
}
