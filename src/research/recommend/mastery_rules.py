"""Recommendation rules on the ``mastery`` table (knowledge tracing per KC).

``mastery_cut_practice``
    Many practice opportunities come after learners have mastered the KC (share above
    ``over_practice_min``): cut practice. The second piece of evidence is the hours the
    cohort spent after mastery, the time cutting would have saved.
``mastery_add_practice``
    Many learners leave the KC below mastery (share above ``under_practice_min``): add
    practice.

Both need ``min_n`` learners and skip KCs whose BKT fit is degenerate or was skipped.
Confidence is the normal probability that the true share lies beyond the threshold
(binomial standard error; opportunities for over-practice, learners for under-practice).
Registered in :data:`research.recommend.rules.RULES` by one line at the end of that module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from research.recommend.rule_base import N_, Rule, interval
from research.recommend.rule_base import num as _num
from research.recommend.rule_base import select as _frame
from research.recommend.rule_base import text as _str

__all__ = ["MASTERY_RULES"]


def _usable(df: pd.DataFrame, cfg: dict) -> np.ndarray:
    status = _str(df, "status")
    degenerate = df["degenerate"].astype("boolean").fillna(False).to_numpy(dtype=bool) if "degenerate" in df.columns \
        else np.zeros(len(df), dtype=bool)
    fitted = np.array([s in (None, "fit") for s in status], dtype=bool)
    return fitted & ~degenerate & (_num(df, "n_learners") >= cfg["min_n"])


def _share_evidence(share: np.ndarray, n: np.ndarray, threshold: float, ctx: dict):
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.clip(share, 0.5 / np.maximum(n, 1), 1 - 0.5 / np.maximum(n, 1))
        se = np.sqrt(p * (1 - p) / n)
        conf = stats.norm.cdf(np.abs(share - threshold) / se)
    conf = np.where(np.isfinite(conf), conf, 0.0)
    return se, *interval(share, se, ctx, bounds=(0, 1)), conf


_USABLE = {"kc_model": "string", "kc": "string", "status": "string", "degenerate": "boolean", "n_learners": "integer"}


def _share_above(df, cfg, ctx, *, share: str, n: str, threshold: str, n_affected: str, **second):
    """The usable KCs whose ``share`` column exceeds ``cfg[threshold]``, with the share's normal
    evidence (binomial over the ``n`` column) and the rule's second piece of evidence (``second``)."""
    value, n_obs = _num(df, share), _num(df, n)
    t = cfg[threshold]
    mask = _usable(df, cfg) & (value > t)
    se, lo, hi, conf = _share_evidence(value, n_obs, t, ctx)
    return _frame(
        mask, target_id=_str(df, "kc"), kc_model=_str(df, "kc_model"),
        metric=share, estimate=value, se=se, ci_low=lo, ci_high=hi, n=n_obs,
        threshold_op=">", threshold=t,
        **second,
        threshold_2=np.nan,
        confidence=conf, n_affected=_num(df, n_affected), method="normal",
    )


def _cut_practice(df, cfg, ctx):
    return _share_above(
        df, cfg, ctx, share="over_practice_share", n="n_obs", threshold="over_practice_min", n_affected="n_learners",
        metric_2="hours_after_mastery", estimate_2=_num(df, "hours_after_mastery"), n_2=_num(df, "n_after_mastery"),
    )


def _add_practice(df, cfg, ctx):
    return _share_above(
        df, cfg, ctx, share="under_practice_share", n="n_learners", threshold="under_practice_min", n_affected="n_under",
        metric_2="opportunities_median", estimate_2=_num(df, "opportunities_median"),
        ci_low_2=_num(df, "opportunities_low"), ci_high_2=_num(df, "opportunities_high"), n_2=_num(df, "n_mastered"),
    )


MASTERY_RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule(
            "mastery_cut_practice", "mastery", "kc",
            ("kc", "over_practice_share", "n_learners"), _cut_practice,
            N_("Cut practice for this knowledge component"),
            N_("More than %(over_practice_min)s of the practice on this knowledge component comes after learners "
               "have already mastered it (knowledge tracing: p(known) at least 0.95). The hours shown are the "
               "time the cohort spent after mastery."),
            N_("Cut the practice for this knowledge component to about the number of opportunities most learners "
               "need, or let learners move on once they have mastered it."),
            inputs=tuple({**_USABLE, "over_practice_share": "number", "n_obs": "integer", "hours_after_mastery": "number",
                          "n_after_mastery": "integer"}.items()),
        ),
        Rule(
            "mastery_add_practice", "mastery", "kc",
            ("kc", "under_practice_share", "n_learners"), _add_practice,
            N_("Add practice for this knowledge component"),
            N_("More than %(under_practice_min)s of the learners leave this knowledge component before they have "
               "mastered it (knowledge tracing: p(known) below 0.95 after their last opportunity)."),
            N_("Add practice opportunities for this knowledge component, or keep learners on it until they "
               "have mastered it."),
            inputs=tuple({**_USABLE, "under_practice_share": "number", "n_under": "integer", "opportunities_median": "number",
                          "opportunities_low": "number", "opportunities_high": "number", "n_mastered": "integer"}.items()),
        ),
    ]
}
