"""How often are the findings true? Judge recommendations against a simulated cohort's truth.

:func:`cohort_findings` runs a :class:`research.simulate.SimulatedCohort` through the same
library path a cohort run uses (:func:`research.estimates.load_estimates` computing every
estimate table from the canonical tables, then :func:`research.recommend.recommend`),
without papermill. :func:`judge_findings` marks each finding true, false or unjudged
against the simulator's truth, and :func:`accuracy_table` sums precision and recall per
rule, for all findings and for those to fix first.

What counts as true (the simulator's truth, ``sim.truth``):

==========================  ===========================================================
rule                        true when
==========================  ===========================================================
too_easy                    the item is the planted too-easy one
too_hard                    the item's expected facility is below the rule's threshold
negative_discrimination,    the item is the planted mis-keyed one
strong_distractor
low_discrimination          the item's true discrimination is below 1 (planted too-easy
                            or mis-keyed)
poor_fit                    the item's true discrimination is not 1, or it has DIF
unused_distractor           the option's expected share, (1 - expected facility) x its
                            attractiveness share, is below the rule's threshold
kc_no_learning              the KC is the planted no-learning KC (or, in the Coarse
                            model, contains it)
kc_still_high               (Fine KCs) the expected error rate of the KC's last item is at
                            least 40 % (DataShop's high-error threshold)
kc_low_and_flat             (Fine KCs) the expected error rate of every item of the KC is
                            below 20 %
kc_mixed_skills             (Fine KCs) the true ease of the KC's single-KC items, the
                            negative of their difficulty at their mean opportunity, falls
                            with the opportunity (least-squares slope below 0)
dif_class_c, dif_class_b    the item is the planted DIF item and the attribute is right
dropout_hotspot             the page is the planted drop-out page
slow_page                   the page is the planted slow page
others                      unjudged (the simulator plants no such problem)
==========================  ===========================================================

A planted problem is found when a finding of its rules (the table above) names its target.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pandas as pd

from research.recommend.config import RecommendConfig
from research.recommend.core import recommend

__all__ = ["accuracy_table", "cohort_findings", "judge_findings"]

#: planted problem -> the rules whose finding on its target finds it
PLANTED_RULES = {
    "too_easy": ("too_easy",),
    "miskeyed": ("negative_discrimination", "strong_distractor"),
    "no_learning_kc": ("kc_no_learning",),
    "dif": ("dif_class_c", "dif_class_b"),
    "dropout_page": ("dropout_hotspot",),
    "slow_page": ("slow_page",),
}


def cohort_findings(sim, config: RecommendConfig | dict | None = None) -> tuple[pd.DataFrame, dict]:
    """The recommendations of a simulated cohort, computed as a cohort run computes them.

    Returns the recommendations and the estimate tables they came from.
    """
    with TemporaryDirectory() as empty, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from research.estimates import load_estimates

        estimates, _ = load_estimates(Path(empty), data=sim, compute_missing=True)
    recs = recommend(estimates, config, cohort=sim.cohort, n_learners=len(sim.learners))
    return recs, estimates


def _planted_targets(truth) -> dict[str, set]:
    items, kcs, pages = truth.items, truth.kcs, truth.pages
    out = {p: set(items.loc[items["planted"] == p, "item_id"].astype(str)) for p in ("too_easy", "miskeyed", "dif")}
    nl = set(kcs.loc[kcs["planted"] == "no_learning_kc", "kc"].astype(str))
    coarse = kcs[kcs["kc_model"] != "Fine"]
    out["no_learning_kc"] = nl | {
        str(k) for k, fine in zip(coarse["kc"], coarse["fine_kcs"]) if set(str(fine).split("~~")) & nl
    }
    for p in ("dropout_page", "slow_page"):
        out[p] = set(pages.loc[pages["planted"] == p, "page"].astype(str))
    return out


def judge_findings(recs: pd.DataFrame, truth, config: RecommendConfig | dict | None = None) -> pd.DataFrame:
    """``recs`` with ``verdict`` (true, false, unjudged) and ``planted`` (the problem it finds, or empty)."""
    if not isinstance(config, RecommendConfig):
        config = RecommendConfig.load(config)
    planted = _planted_targets(truth)
    items = truth.items.set_index(truth.items["item_id"].astype(str))
    out = recs.copy()
    target = out["target_id"].astype(str).to_numpy()
    rule = out["rule"].astype(str).to_numpy()
    verdict = np.full(len(out), "unjudged", dtype=object)
    found = np.full(len(out), "", dtype=object)

    def item_value(col, default=np.nan):
        return items[col].reindex(target).to_numpy() if col in items.columns else np.full(len(target), default)

    disc = pd.to_numeric(pd.Series(item_value("discrimination")), errors="coerce").to_numpy(dtype=float)
    fac = pd.to_numeric(pd.Series(item_value("expected_facility")), errors="coerce").to_numpy(dtype=float)
    dif_size = pd.to_numeric(pd.Series(item_value("dif_size")), errors="coerce").to_numpy(dtype=float)
    dif_group = pd.Series(item_value("dif_group", "")).fillna("").astype(str).to_numpy()
    # expected first-attempt error of the single-KC items of each Fine KC, in course order
    single = truth.items[~truth.items["kc_fine"].astype(str).str.contains("~~")].sort_values("position")
    kc_error = {str(k): 1 - g["expected_facility"].to_numpy(dtype=float) for k, g in single.groupby("kc_fine")}
    kc_trend = {}
    for k, g in single.groupby("kc_fine"):
        x = g["mean_opportunity"].to_numpy(dtype=float)
        ease = -g["difficulty"].to_numpy(dtype=float)
        if len(g) >= 2 and np.ptp(x) > 0:
            kc_trend[str(k)] = float(np.polyfit(x, ease, 1)[0])
    detail = out["detail"].astype("object").where(out["detail"].notna(), "").astype(str).to_numpy()
    for i, r in enumerate(rule):
        t = target[i]
        if r in ("too_easy",):
            ok = t in planted["too_easy"]
        elif r in ("negative_discrimination", "strong_distractor"):
            ok = t in planted["miskeyed"]
        elif r == "too_hard":
            ok = bool(fac[i] < config.rule("too_hard")["facility_max"])
        elif r == "low_discrimination":
            ok = bool(disc[i] < 1)
        elif r == "poor_fit":
            ok = bool(disc[i] != 1 or (dif_size[i] or 0) != 0)
        elif r == "unused_distractor":
            option = detail[i]
            col = f"attract_{option}"
            if col not in items.columns or t not in items.index:
                continue
            row = items.loc[t]
            attract = pd.to_numeric(row[[c for c in items.columns if c.startswith("attract_")]], errors="coerce")
            share = (1 - float(row["expected_facility"])) * float(row[col]) / float(np.nansum(attract))
            ok = share < config.rule("unused_distractor")["share_max"]
        elif r == "kc_no_learning":
            ok = t in planted["no_learning_kc"]
        elif r == "kc_mixed_skills":
            if t not in kc_trend:
                continue
            ok = kc_trend[t] < 0
        elif r in ("kc_still_high", "kc_low_and_flat"):
            if t not in kc_error:
                continue
            errors = kc_error[t]
            ok = errors[-1] >= 0.4 if r == "kc_still_high" else bool((errors < 0.2).all())
        elif r in ("dif_class_c", "dif_class_b"):
            attr = dif_group[i].split("=")[0] if dif_group[i] else None
            ok = t in planted["dif"] and attr is not None and detail[i].startswith(attr + "=")
        elif r == "dropout_hotspot":
            ok = t in planted["dropout_page"]
        elif r == "slow_page":
            ok = t in planted["slow_page"]
        else:
            continue
        verdict[i] = "true" if ok else "false"
    for problem, rules in PLANTED_RULES.items():
        hit = np.isin(rule, rules) & np.isin(target, list(planted[problem])) & (verdict == "true")
        found[hit] = problem
    out["verdict"] = verdict
    out["planted"] = found
    return out


def accuracy_table(judged: pd.DataFrame, truth) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per rule and overall: findings, true, false, unjudged, precision; the same for "fix first".

    Returns (per rule, per planted problem): the second has ``found`` and
    ``found_fix_first`` (0/1) for each planted problem of the cohort.
    """
    rows = []
    for rule, g in list(judged.groupby("rule", sort=True)) + [("(all)", judged)]:
        row = {"rule": rule}
        for name, part in (("", g), ("fix_first_", g[g["fix_first"].astype(bool)])):
            n_true = int((part["verdict"] == "true").sum())
            n_false = int((part["verdict"] == "false").sum())
            row[f"{name}n"] = len(part)
            row[f"{name}true"] = n_true
            row[f"{name}false"] = n_false
            row[f"{name}unjudged"] = int((part["verdict"] == "unjudged").sum())
        rows.append(row)
    per_rule = pd.DataFrame(rows)
    planted = _planted_targets(truth)
    recall = []
    for problem in PLANTED_RULES:
        if not planted[problem]:
            continue
        hits = judged[judged["planted"] == problem]
        recall.append({"planted": problem, "found": int(len(hits) > 0),
                       "found_fix_first": int(hits["fix_first"].astype(bool).any())})
    return per_rule, pd.DataFrame(recall)
