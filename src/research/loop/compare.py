"""Did the redesign work? Compare the changed items, KCs and pages of two cohorts.

:func:`research.loop.profile.profile_cohort` computes, once per cohort, everything a
comparison needs, with :func:`research.estimates.build_estimates` (the notebooks' steps):
the item table and its Rasch calibration, the KC table per KC model, the completion funnel
by item and by page, DIF, and (optionally) the cohort's recommendations. The demo's
redesigns and change logs are in :mod:`research.loop.demo`. :class:`CohortComparison` links the two Rasch calibrations through the
anchor items (:mod:`research.loop.linking`) and, for every change in the change log,
compares the before and after value of each metric:

==================  =======================  ===================================================
metric              targets                  better is
==================  =======================  ===================================================
``difficulty``      items                    inside the difficulty band (Rasch, linked scale)
``error_rate``      items                    inside the error band (1 - facility band)
``discrimination``  items                    higher (corrected item-rest correlation)
``dropout``         items, pages             lower (share of the learners reaching the target who leave there)
``dif``             items                    inside ETS class A (MH D-DIF between -1 and 1), for the
                                             attribute and groups with the clearest DIF before
``learning_rate``   KCs                      higher (AFM slope per opportunity)
``error_rate``      KCs                      no direction: described only
==================  =======================  ===================================================

The bands come from the recommendation thresholds (``too_easy.facility_min`` and
``too_hard.facility_max``, by default facility 0.30-0.90, so error rate 0.10-0.70 and
difficulty ``-logit(0.90)`` to ``-logit(0.30)`` logits for a learner of the before
cohort's mean ability). "Better" for a band means *closer to the band* (distance 0
inside it): a too-easy item that became moderately hard improved, an item that stayed
inside the band did not change in quality even if it moved.

Uncertainty is Bayesian and vectorised over all rows: proportions get their Jeffreys
posterior ``Beta(k + 1/2, n - k + 1/2)`` in each cohort; ML estimates (Rasch difficulty,
AFM slope) their normal approximation ``N(estimate, se^2)`` (the after difficulty's
variance includes the linking error); correlations a normal posterior on Fisher's z. From
independent draws of before and after come the difference's equal-tailed interval and
the posterior probability that the metric got better (``p_improved``). The verdict:

* ``improved`` when ``p_improved`` >= (1 + ci_level) / 2 (0.975 at the default level),
* ``worse`` when the probability that it got worse reaches that level,
* ``no_detectable_change`` otherwise,
* ``changed`` for a metric without a direction whose interval excludes 0,
* ``not_comparable`` when either side has fewer than ``min_n`` observations, the value is
  missing (item added or removed) or suppressed (fewer than ``min_cell_size`` learners).

Each target then gets one plain ``target_verdict`` from the metrics that matter for the
findings its change answered (:data:`RULE_METRICS`; all metrics when it names none):
improved, worse, mixed, no_detectable_change or not_comparable.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from scipy.special import logit

import research
from research.errors import ConfigError, DataError
from research.loop.changelog import ChangeLog, read_changelog
from research.loop.linking import DRIFT_Z, MIN_ANCHORS, Linking, LinkingWarning, item_covariance, link_difficulties
from research.loop.profile import CohortProfile, cohort_table, comparison_settings, profile_cohort

__all__ = [
    "COMPARISON_COLUMNS", "CohortComparison", "RULE_METRICS", "STATUS_COLUMNS", "TARGET_VERDICTS", "VERDICTS",
    "changelog_from_versions", "compare_cohorts", "compare_metrics", "recommendation_status", "target_verdicts",
]

VERDICTS = ("improved", "no_detectable_change", "worse", "changed", "not_comparable")
TARGET_VERDICTS = ("improved", "no_detectable_change", "worse", "mixed", "not_comparable")

#: Metrics that show whether the finding of a rule was fixed (others: every metric of the target).
RULE_METRICS = {
    "too_easy": ("error_rate", "discrimination", "difficulty"),
    "too_hard": ("error_rate", "difficulty"),
    "negative_discrimination": ("discrimination",),
    "low_discrimination": ("discrimination",),
    "poor_fit": ("discrimination",),
    "strong_distractor": ("discrimination",),
    "heavy_hint_use": ("error_rate",),
    "kc_no_learning": ("learning_rate",),
    "kc_still_high": ("learning_rate",),
    "dropout_hotspot": ("dropout",),
    "dif_class_c": ("dif",),
    "dif_class_b": ("dif",),
}

COMPARISON_COLUMNS = [
    "target_type", "target_id", "kc_model", "change_id", "change_type", "metric", "direction",
    "before", "after", "difference", "ci_low", "ci_high", "p_improved", "n_before", "n_after",
    "verdict", "target_verdict", "method", "n_anchors", "link_shift", "link_se", "too_few_anchors",
    "suppressed_reason",
]
STATUS_COLUMNS = [
    "recommendation_id", "rule", "family", "target_type", "target_id", "kc_model", "status",
    "rank_before", "rank_after", "priority_before", "priority_after", "addressed_by", "change_verdict", "title",
]


# --------------------------------------------------------------------------- the comparison kernel


def _quality(x: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Loss of quality (lower is better) of draws ``x`` (rows x draws)."""
    d = direction[:, None]
    band = np.maximum(np.maximum(lo[:, None] - x, 0.0), x - hi[:, None])
    return np.where(d == "lower_better", x, np.where(d == "higher_better", -x, np.where(d == "toward_band", band, 0.0)))


def _draws(kind, est, se, k, n, rng, n_draws):
    """Posterior draws (rows x draws) for each row's kind: rate, normal, correlation."""
    R = len(est)
    out = np.full((R, n_draws), np.nan)
    z = rng.standard_normal((R, n_draws))
    rate = (kind == "rate") & np.isfinite(k) & np.isfinite(n) & (n > 0)
    if rate.any():
        a = k[rate] + 0.5
        b = n[rate] - k[rate] + 0.5
        out[rate] = rng.beta(a[:, None], b[:, None], size=(int(rate.sum()), n_draws))
    norm = (kind == "normal") & np.isfinite(est) & np.isfinite(se)
    out[norm] = est[norm, None] + se[norm, None] * z[norm]
    cor = (kind == "correlation") & np.isfinite(est) & np.isfinite(n) & (n > 3)
    if cor.any():
        r = np.clip(est[cor], -0.999999, 0.999999)
        out[cor] = np.tanh(np.arctanh(r)[:, None] + z[cor] / np.sqrt(n[cor] - 3)[:, None])
    return out


def _side(out: pd.DataFrame, side: str, kind: np.ndarray, rng, n_draws: int):
    """One side's (``before``/``after``) estimates (a rate's from k/n), posterior draws,
    observations and learners (observations where learners are not given)."""

    def col(name):
        if name not in out.columns:
            return np.full(len(out), np.nan)
        return pd.to_numeric(out[name], errors="coerce").to_numpy(float)

    est, se, k, n = col(f"est_{side}"), col(f"se_{side}"), col(f"k_{side}"), col(f"n_{side}")
    nl = col(f"n_learners_{side}")
    nl = np.where(np.isfinite(nl), nl, n)
    est = np.where((kind == "rate") & np.isfinite(k) & (n > 0), k / np.where(n > 0, n, 1), est)
    return est, _draws(kind, est, se, k, n, rng, n_draws), n, nl


def _verdicts(directed, p_imp, p_worse, ci_low, ci_high, cut: float) -> np.ndarray:
    """improved / worse (posterior probability at least ``cut``) for metrics with a direction;
    changed (interval excludes 0) for the others; else no_detectable_change."""
    return np.where(
        directed,
        np.where(p_imp >= cut, "improved", np.where(p_worse >= cut, "worse", "no_detectable_change")),
        np.where((ci_low > 0) | (ci_high < 0), "changed", "no_detectable_change"),
    ).astype(object)


def compare_metrics(
    rows: pd.DataFrame,
    *,
    ci_level: float = 0.95,
    n_draws: int = 4000,
    seed: int = 0,
    min_n: int = 20,
    min_cell_size: int = 10,
) -> pd.DataFrame:
    """Before/after comparison of metric rows with intervals and verdicts (vectorised).

    Parameters
    ----------
    rows
        One row per target x metric with: ``kind`` (rate, normal, correlation),
        ``direction`` (lower_better, higher_better, toward_band, none), ``band_low``,
        ``band_high`` (for toward_band), and for each side (``_before``, ``_after``):
        ``est`` (the value), ``se`` (normal), ``k`` (events, rates), ``n`` (the
        denominator: learners, or student steps for KC error rates), ``n_learners``
        (for suppression; defaults to ``n``).

    Returns
    -------
    The input columns plus before, after, difference (after - before), ci_low, ci_high
    (equal-tailed posterior interval of the difference), p_improved (posterior
    probability that the metric got better; empty without a direction), verdict
    (:data:`VERDICTS`), suppressed_reason.
    """
    if not 0 < ci_level < 1:
        raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {ci_level!r}")
    if int(n_draws) < 100:
        raise ConfigError(f"n_draws must be at least 100, got {n_draws!r}")
    out = rows.reset_index(drop=True).copy()
    if out.empty:
        for c in ("before", "after", "difference", "ci_low", "ci_high", "p_improved"):
            out[c] = pd.Series(dtype=float)
        out["verdict"] = pd.Series(dtype="string")
        out["suppressed_reason"] = pd.Series(dtype="string")
        return out
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 909]))
    kind = out["kind"].astype(str).to_numpy()
    direction = out["direction"].astype(str).to_numpy()
    lo = pd.to_numeric(out.get("band_low", np.nan), errors="coerce")
    hi = pd.to_numeric(out.get("band_high", np.nan), errors="coerce")
    lo = np.broadcast_to(np.asarray(lo, float), len(out)).copy()
    hi = np.broadcast_to(np.asarray(hi, float), len(out)).copy()

    eb, db, nb, lb = _side(out, "before", kind, rng, int(n_draws))
    ea, da, na, la = _side(out, "after", kind, rng, int(n_draws))
    diff = da - db
    alpha = 1 - ci_level
    valid = np.isfinite(diff).all(axis=1)
    safe = np.where(valid[:, None], diff, 0.0)
    ci_low = np.where(valid, np.quantile(safe, alpha / 2, axis=1), np.nan)
    ci_high = np.where(valid, np.quantile(safe, 1 - alpha / 2, axis=1), np.nan)
    qb = _quality(np.where(valid[:, None], db, 0.0), direction, lo, hi)
    qa = _quality(np.where(valid[:, None], da, 0.0), direction, lo, hi)
    dq = qa - qb
    p_imp = (dq < 0).mean(axis=1)
    p_worse = (dq > 0).mean(axis=1)
    directed = direction != "none"
    verdict = _verdicts(directed, p_imp, p_worse, ci_low, ci_high, 1 - alpha / 2)
    reason = np.full(len(out), "", dtype=object)
    small = (np.nan_to_num(lb, nan=0) < min_cell_size) | (np.nan_to_num(la, nan=0) < min_cell_size)
    few = (np.nan_to_num(nb, nan=0) < min_n) | (np.nan_to_num(na, nan=0) < min_n)
    missing = ~valid | ~np.isfinite(eb) | ~np.isfinite(ea)
    verdict[missing | few | small] = "not_comparable"
    reason[few & ~missing] = f"fewer than {min_n} observations on one side: too little data to judge"
    reason[small & np.isfinite(lb) & np.isfinite(la)] = f"fewer than {min_cell_size} learners on one side: suppressed"
    out["before"], out["after"] = eb, ea
    out["difference"] = ea - eb
    out["ci_low"], out["ci_high"] = ci_low, ci_high
    out["p_improved"] = np.where(directed & valid, p_imp, np.nan)
    out["verdict"] = pd.array(verdict, dtype="string")
    supp = small & np.isfinite(lb) & np.isfinite(la)
    for c in ("before", "after", "difference", "ci_low", "ci_high", "p_improved"):
        out.loc[supp, c] = np.nan
    out["suppressed_reason"] = pd.array(np.where(reason == "", None, reason), dtype="string")
    return out


def target_verdicts(comparison: pd.DataFrame, changelog: ChangeLog | None = None,
                    recommendations: pd.DataFrame | None = None) -> pd.Series:
    """One plain verdict per row's target from the metrics that matter for its change.

    A change that answers recommendations is judged on the metrics of their rules
    (:data:`RULE_METRICS`); otherwise on every metric with a direction. improved: at
    least one improved and none worse; worse: the reverse; mixed: both;
    no_detectable_change: neither; not_comparable: no judgeable metric.
    """
    c = comparison
    relevant = pd.Series(True, index=c.index)
    relevant &= c["direction"].astype(str) != "none"
    if changelog is not None and recommendations is not None and len(recommendations):
        rule_of = dict(zip(recommendations["recommendation_id"].astype(str), recommendations["rule"].astype(str)))
        wanted: dict[str, set] = {}
        for row in changelog.changes.itertuples():
            metrics = set()
            for rec in row.recommendations:
                metrics |= set(RULE_METRICS.get(rule_of.get(rec, ""), ()))
            wanted[str(row.change_id)] = metrics
        ok = np.array([
            (not wanted.get(str(cid).split(";")[0])) or (m in wanted[str(cid).split(";")[0]])
            for cid, m in zip(c["change_id"], c["metric"])
        ], dtype=bool) if len(c) else np.zeros(0, bool)
        relevant &= ok
    key = (c["target_type"].astype("string").fillna("") + "|" + c["target_id"].astype("string").fillna("") + "|"
           + c["kc_model"].astype("string").fillna("")).astype(str)
    v = c["verdict"].astype(str)
    judged = relevant & v.isin(["improved", "worse", "no_detectable_change"])
    g = pd.DataFrame({"key": key, "imp": judged & (v == "improved"), "wor": judged & (v == "worse"),
                      "any": judged}).groupby("key").agg(imp=("imp", "any"), wor=("wor", "any"), any=("any", "any"))
    res = np.where(~g["any"], "not_comparable", np.where(g["imp"] & g["wor"], "mixed",
                   np.where(g["imp"], "improved", np.where(g["wor"], "worse", "no_detectable_change"))))
    return pd.Series(pd.Series(res, index=g.index).reindex(key).to_numpy(), index=c.index, dtype="string")


# --------------------------------------------------------------------------- metric rows


def _bands(config) -> dict:
    from research.recommend import load_config

    cfg = config if hasattr(config, "rule") else load_config(config)
    f_hi = float(cfg.rule("too_easy")["facility_min"])
    f_lo = float(cfg.rule("too_hard")["facility_max"])
    return {
        "error_rate": (1 - f_hi, 1 - f_lo),
        "difficulty": (float(-logit(f_hi)), float(-logit(f_lo))),
        "facility": (f_lo, f_hi),
    }


def _dropout_counts(funnel: pd.DataFrame, key: str) -> pd.DataFrame:
    """Learners lost at each position: those whose last answer is at the position before it
    (they opened it and left without answering; for the first position: never started) or
    at it, over the learners who reached the position before it (the cohort for the first).

    Attempts show only the last thing a learner answered, so a learner who gives up on a
    page they opened counts as a drop of the page before it in the funnel
    (:func:`research.estimate.engagement.funnel`); both halves belong to the page's
    drop-out.
    """
    f = funnel.sort_values("position")
    reached = pd.to_numeric(f["reached"], errors="coerce").to_numpy(float)
    drop = pd.to_numeric(f["drop"], errors="coerce").to_numpy(float)
    n_cohort = float(pd.to_numeric(f["n_cohort"], errors="coerce").max()) if len(f) else np.nan
    prev_reached = np.concatenate([[n_cohort], reached[:-1]])
    prev_drop = np.concatenate([[n_cohort - reached[0] if len(reached) else 0.0], drop[:-1]])
    out = pd.DataFrame({"drop_k": prev_drop + drop, "drop_n": prev_reached}, index=f[key].astype(str).to_numpy())
    return out[~out.index.duplicated()]


def _item_rows(before: CohortProfile, after: CohortProfile, items: pd.DataFrame, link: Linking | None, bands) -> pd.DataFrame:
    """Metric rows for the items in ``items`` (columns item_id, change_id, change_type)."""
    if items.empty:
        return pd.DataFrame()
    ib = before.items.set_index("item_id")
    ia = after.items.set_index("item_id")
    fb = _dropout_counts(before.item_funnel.dropna(subset=["item_id"]), "item_id")
    fa_ = _dropout_counts(after.item_funnel.dropna(subset=["item_id"]), "item_id")
    ids = items["item_id"].astype(str)

    def get(frame, col):
        if col not in frame.columns:
            return np.full(len(ids), np.nan)
        return pd.to_numeric(frame[col].reindex(ids), errors="coerce").to_numpy(float)

    base = pd.DataFrame({"target_type": "item", "target_id": ids.to_numpy(), "kc_model": None,
                         "change_id": items["change_id"].to_numpy(), "change_type": items["change_type"].to_numpy()})
    shift = link.shift if link is not None and np.isfinite(link.shift) else np.nan
    # each side's difficulty as a contrast with the anchor mean of its calibration: the
    # location error the items of one calibration share cancels in the linked change
    if link is not None and np.isfinite(link.shift):
        se_b_contrast = link.contrast_se(ids, "before")
        se_a_contrast = link.contrast_se(ids, "after")
    else:
        se_b_contrast = se_a_contrast = np.full(len(ids), np.nan)
    parts = []
    nb, na = get(ib, "n_learners"), get(ia, "n_learners")
    # difficulty (Rasch, after cohort linked to the before scale)
    parts.append(base.assign(
        metric="difficulty", kind="normal", direction="toward_band",
        band_low=bands["difficulty"][0], band_high=bands["difficulty"][1],
        est_before=get(ib, "difficulty"), se_before=se_b_contrast,
        est_after=get(ia, "difficulty") + shift, se_after=se_a_contrast,
        n_before=nb, n_after=na,
        method="rasch_mml difficulty, after cohort mean/mean linked through anchor items; normal posterior",
    ))
    parts.append(base.assign(
        metric="error_rate", kind="rate", direction="toward_band",
        band_low=bands["error_rate"][0], band_high=bands["error_rate"][1],
        k_before=nb - get(ib, "k_correct"), k_after=na - get(ia, "k_correct"), n_before=nb, n_after=na,
        method="first-attempt error rate; Beta(k+1/2, n-k+1/2) (Jeffreys) posterior",
    ))
    parts.append(base.assign(
        metric="discrimination", kind="correlation", direction="higher_better",
        est_before=get(ib, "discrimination"), est_after=get(ia, "discrimination"), n_before=nb, n_after=na,
        method="corrected item-rest correlation; normal posterior on Fisher's z",
    ))
    parts.append(base.assign(
        metric="dropout", kind="rate", direction="lower_better",
        k_before=get(fb, "drop_k"), n_before=get(fb, "drop_n"), k_after=get(fa_, "drop_k"), n_after=get(fa_, "drop_n"),
        method="drop-out at the item (learners lost between the previous item and this one / learners reaching the previous one); Jeffreys posterior",
    ))
    dif_rows = _dif_rows(before, after, ids)
    if dif_rows is not None:
        parts.append(base.assign(
            metric="dif", kind="normal", direction="toward_band", band_low=-1.0, band_high=1.0,
            est_before=dif_rows["delta_b"], se_before=dif_rows["se_b"], est_after=dif_rows["delta_a"],
            se_after=dif_rows["se_a"], n_before=dif_rows["n_b"], n_after=dif_rows["n_a"],
            n_learners_before=dif_rows["nf_b"], n_learners_after=dif_rows["nf_a"],
            method="Mantel-Haenszel D-DIF (ETS delta) for the attribute and groups with the clearest DIF before; "
                   "better = closer to class A (-1 to 1); normal posterior",
        ))
    return pd.concat(parts, ignore_index=True)


def _dif_rows(before: CohortProfile, after: CohortProfile, ids: pd.Series) -> pd.DataFrame | None:
    """Per item: the before cohort's clearest DIF comparison (smallest p value, then largest
    |D-DIF|) and the same comparison (attribute, reference and focal group) after."""
    if before.dif is None or after.dif is None or before.dif.empty:
        return None
    key = ["item_id", "attribute", "reference_group", "focal_group"]

    def usable(d):
        d = d[d["suppressed_reason"].isna() | (d["suppressed_reason"].astype("string").fillna("") == "")]
        d = d[np.isfinite(pd.to_numeric(d["mh_delta"], errors="coerce"))]
        return d.assign(item_id=d["item_id"].astype(str), attribute=d["attribute"].astype(str),
                        reference_group=d["reference_group"].astype(str), focal_group=d["focal_group"].astype(str))

    b, a = usable(before.dif), usable(after.dif)
    if b.empty:
        return None
    p = pd.to_numeric(b["p_value"], errors="coerce").fillna(1.0)
    b = (b.assign(_p=p.to_numpy(), _abs=-pd.to_numeric(b["mh_delta"]).abs())
         .sort_values(["_p", "_abs"]).drop_duplicates("item_id"))
    m = b[key + ["mh_delta", "mh_delta_se", "n_focal", "n_reference"]].merge(
        a[key + ["mh_delta", "mh_delta_se", "n_focal", "n_reference"]], on=key, how="left", suffixes=("_b", "_a"))
    m = m.set_index("item_id").reindex(ids.to_numpy())
    num = lambda c: pd.to_numeric(m[c], errors="coerce").to_numpy(float)  # noqa: E731
    return pd.DataFrame({
        "delta_b": num("mh_delta_b"), "se_b": num("mh_delta_se_b"), "delta_a": num("mh_delta_a"),
        "se_a": num("mh_delta_se_a"), "n_b": num("n_focal_b") + num("n_reference_b"),
        "n_a": num("n_focal_a") + num("n_reference_a"), "nf_b": num("n_focal_b"), "nf_a": num("n_focal_a"),
    })


def _page_rows(before: CohortProfile, after: CohortProfile, pages: pd.DataFrame) -> pd.DataFrame:
    if pages.empty:
        return pd.DataFrame()
    pb = _dropout_counts(before.page_funnel.dropna(subset=["page"]), "page")
    pa = _dropout_counts(after.page_funnel.dropna(subset=["page"]), "page")
    ids = pages["target_id"].astype(str)

    def get(frame, col):
        return pd.to_numeric(frame[col].reindex(ids), errors="coerce").to_numpy(float)

    return pd.DataFrame({
        "target_type": "page", "target_id": ids.to_numpy(), "kc_model": None,
        "change_id": pages["change_id"].to_numpy(), "change_type": pages["change_type"].to_numpy(),
        "metric": "dropout", "kind": "rate", "direction": "lower_better",
        "k_before": get(pb, "drop_k"), "n_before": get(pb, "drop_n"),
        "k_after": get(pa, "drop_k"), "n_after": get(pa, "drop_n"),
        "method": "drop-out at the page (learners lost between the previous page and the end of this one / learners reaching the previous one); Jeffreys posterior",
    })


def _kc_rows(before: CohortProfile, after: CohortProfile, kc_changes: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for ch in kc_changes.itertuples():
        for kb in ch.before:
            for ka in ch.after:
                target = kb if kb == ka else f"{kb} -> {ka}"
                rows.append({"target_id": target, "kc_model": str(ch.kc_model), "kc_before": kb, "kc_after": ka,
                             "change_id": str(ch.change_id), "change_type": str(ch.type)})
    if not rows:
        return pd.DataFrame()
    pairs = pd.DataFrame(rows)
    kb_ = before.kcs.assign(kc_model=before.kcs["kc_model"].astype(str), kc=before.kcs["kc"].astype(str)).set_index(["kc_model", "kc"])
    ka_ = after.kcs.assign(kc_model=after.kcs["kc_model"].astype(str), kc=after.kcs["kc"].astype(str)).set_index(["kc_model", "kc"])
    ib = pd.MultiIndex.from_arrays([pairs["kc_model"], pairs["kc_before"]])
    ia = pd.MultiIndex.from_arrays([pairs["kc_model"], pairs["kc_after"]])

    def get(frame, idx, col):
        return pd.to_numeric(frame[col].reindex(idx), errors="coerce").to_numpy(float)

    base = pairs.drop(columns=["kc_before", "kc_after"]).assign(target_type="kc")
    lr = base.assign(
        metric="learning_rate", kind="normal", direction="higher_better",
        est_before=get(kb_, ib, "slope"), se_before=get(kb_, ib, "slope_se"),
        est_after=get(ka_, ia, "slope"), se_after=get(ka_, ia, "slope_se"),
        n_before=get(kb_, ib, "n_learners"), n_after=get(ka_, ia, "n_learners"),
        method="AFM slope (log-odds gain per opportunity, penalised ML, slopes >= 0); normal posterior",
    )
    er = base.assign(
        metric="error_rate", kind="rate", direction="none",
        k_before=get(kb_, ib, "n_errors"), n_before=get(kb_, ib, "n_steps_obs"),
        k_after=get(ka_, ia, "n_errors"), n_after=get(ka_, ia, "n_steps_obs"),
        n_learners_before=get(kb_, ib, "n_learners"), n_learners_after=get(ka_, ia, "n_learners"),
        method="first-attempt error rate over all student steps of the KC; Jeffreys posterior",
    )
    return pd.concat([lr, er], ignore_index=True)


# --------------------------------------------------------------------------- recommendation status


def recommendation_status(before: pd.DataFrame | None, after: pd.DataFrame | None,
                          changelog: ChangeLog | None = None) -> pd.DataFrame:
    """Status of every finding across two cohorts, matched by stable recommendation id.

    Returns
    -------
    DataFrame, one row per finding in either cohort: recommendation_id, rule, family,
    target_type, target_id, kc_model, status (new: only after; persisting: both; resolved:
    only before), rank_before, rank_after, priority_before, priority_after, addressed_by
    (change ids of the log that name the finding, ``;``-joined), change_verdict (the
    comparison's verdict on those changes; filled by :class:`CohortComparison`), title.
    Ordered by status (persisting, new, resolved) and rank.
    """
    cols = ["recommendation_id", "rule", "family", "target_type", "target_id", "kc_model", "rank", "priority", "title"]
    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in cols})

    def prep(df):
        if df is None or len(df) == 0:
            return empty.copy()
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"recommendations lack column(s) {missing}; pass the output of research.recommend.recommend")
        return df[cols].astype({"recommendation_id": str})

    b, a = prep(before), prep(after)
    m = b.merge(a, on="recommendation_id", how="outer", suffixes=("_before", "_after"), indicator=True)
    out = pd.DataFrame({"recommendation_id": m["recommendation_id"].astype(str)})
    for c in ("rule", "family", "target_type", "target_id", "kc_model", "title"):
        out[c] = m[f"{c}_after"].where(m[f"{c}_after"].notna(), m[f"{c}_before"])
    out["status"] = m["_merge"].map({"both": "persisting", "left_only": "resolved", "right_only": "new"}).astype(str)
    out["rank_before"] = pd.array(pd.to_numeric(m["rank_before"], errors="coerce"), dtype="Int64")
    out["rank_after"] = pd.array(pd.to_numeric(m["rank_after"], errors="coerce"), dtype="Int64")
    out["priority_before"] = pd.to_numeric(m["priority_before"], errors="coerce").astype(float)
    out["priority_after"] = pd.to_numeric(m["priority_after"], errors="coerce").astype(float)
    addressed = pd.Series(dtype=str)
    if changelog is not None and len(changelog):
        ad = changelog.addressed()
        if len(ad):
            addressed = ad.groupby("recommendation_id")["change_id"].agg(lambda s: ";".join(sorted(set(s))))
    out["addressed_by"] = out["recommendation_id"].map(addressed)
    out["change_verdict"] = None
    order = {"persisting": 0, "new": 1, "resolved": 2}
    out = out.assign(_o=out["status"].map(order), _r=out["rank_after"].fillna(out["rank_before"]).astype(float))
    out = out.sort_values(["_o", "_r", "recommendation_id"], kind="mergesort").drop(columns=["_o", "_r"])
    for c in ("recommendation_id", "rule", "family", "target_type", "target_id", "kc_model", "status", "addressed_by",
              "change_verdict", "title"):
        out[c] = out[c].astype("string")
    return out[STATUS_COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------- the model class


def _resolve_changelog(changelog, before, after, b: CohortProfile, a: CohortProfile) -> ChangeLog:
    """The change log checked against both profiles; None: the items whose version differs."""
    if changelog is None:
        changelog = changelog_from_versions(cohort_table(before, "items") if not isinstance(before, CohortProfile) else None,
                                            cohort_table(after, "items") if not isinstance(after, CohortProfile) else None)
    if not isinstance(changelog, ChangeLog):
        changelog = read_changelog(
            changelog, items_before=b.item_ids, items_after=a.item_ids,
            kcs_before=b.kcs[["kc_model", "kc"]], kcs_after=a.kcs[["kc_model", "kc"]],
            pages_before=b.page_ids, pages_after=a.page_ids,
        )
    return changelog


def _moved_items(changelog: ChangeLog, b: CohortProfile, a: CohortProfile, *, kc_items: bool) -> set[str]:
    """The items the changes may have moved, never anchors: the changed items and, with
    ``kc_items``, the items of changed KCs and on changed pages."""
    exclude = set(changelog.items())
    if kc_items:
        for ch in changelog.kc_changes().itertuples():
            ik = b.item_kcs
            exclude |= set(ik.loc[(ik["kc_model"] == ch.kc_model) & ik["kc"].isin(ch.before), "item_id"].astype(str))
            ik = a.item_kcs
            exclude |= set(ik.loc[(ik["kc_model"] == ch.kc_model) & ik["kc"].isin(ch.after), "item_id"].astype(str))
        pages = set(changelog.pages())
        for prof in (b, a):
            it = prof.items
            exclude |= set(it.loc[it["page"].astype(str).isin(pages), "item_id"].astype(str))
    return exclude


def _changes_of(changes: pd.DataFrame, target_type: str) -> pd.DataFrame:
    """One row per changed target of ``target_type``: target_id, its change ids and change types (``;``-joined)."""
    return changes[changes["target_type"] == target_type].groupby("target_id", sort=False).agg(
        change_id=("change_id", lambda s: ";".join(s.astype(str))),
        change_type=("type", lambda s: ";".join(dict.fromkeys(s.astype(str))))).reset_index()


def _comparison_table(comp: pd.DataFrame, linking: Linking | None) -> pd.DataFrame:
    """The comparison rows with the linking's columns, in COMPARISON_COLUMNS order and types."""
    comp["n_anchors"] = 0 if linking is None else linking.n_anchors
    comp["link_shift"] = np.nan if linking is None else linking.shift
    comp["link_se"] = np.nan if linking is None else linking.se
    comp["too_few_anchors"] = True if linking is None else linking.too_few_anchors
    for c in COMPARISON_COLUMNS:
        if c not in comp.columns:
            comp[c] = None
    comp = comp[COMPARISON_COLUMNS]
    for c in ("target_type", "target_id", "kc_model", "change_id", "change_type", "metric", "direction",
              "verdict", "target_verdict", "method", "suppressed_reason"):
        comp[c] = comp[c].astype("string")
    for c in ("n_before", "n_after"):
        comp[c] = pd.array(pd.to_numeric(comp[c], errors="coerce").round(), dtype="Int64")
    comp["n_anchors"] = comp["n_anchors"].astype("int64")
    comp["too_few_anchors"] = comp["too_few_anchors"].astype(bool)
    return comp


def _with_change_verdicts(status: pd.DataFrame, comp: pd.DataFrame) -> pd.DataFrame:
    """The recommendation status with ``change_verdict``: the target verdicts of the changes that addressed each."""
    if len(comp):
        by_change = comp.drop_duplicates("change_id").set_index(comp.drop_duplicates("change_id")["change_id"].astype(str))["target_verdict"]
        verdicts = status["addressed_by"].astype("string").fillna("").str.split(";").map(
            lambda ids: ";".join(dict.fromkeys(str(by_change[i]) for i in ids if i in by_change.index)))
        status["change_verdict"] = pd.array(verdicts.where(verdicts != "", None), dtype="string")
    return status


class CohortComparison:
    """Compare a cohort with its predecessor across a course redesign.

    Parameters
    ----------
    min_anchors : anchors needed before a :class:`~research.loop.linking.LinkingWarning` (default 10).
    drift_z : robust-z cut for drifting anchors (None: no screening).
    exclude_kc_items : items that practise a changed KC, or sit on a revised page, are
        not anchors (their difficulty may move with the change). Default True.
    ci_level, n_draws, seed : intervals, posterior draws and their seed.
    min_n : least observations on each side for a verdict.
    min_cell_size : rows with fewer learners on either side are suppressed.
    recommend_config : overrides of the recommendation rules (bands and the cohorts' findings).
    settings : the :class:`~research.estimates.EstimateSettings` both cohorts are profiled
        with (default :func:`~research.loop.profile.comparison_settings` at ``min_cell_size``).

    Fitted attributes: ``before_``, ``after_`` (:class:`CohortProfile`), ``changelog_``,
    ``linking_`` (:class:`~research.loop.linking.Linking`), ``comparison_``,
    ``recommendation_status_``, ``provenance_``.
    """

    def __init__(self, *, min_anchors: int = MIN_ANCHORS, drift_z: float | None = DRIFT_Z,
                 exclude_kc_items: bool = True, ci_level: float = 0.95, n_draws: int = 4000, seed: int = 0,
                 min_n: int = 20, min_cell_size: int = 10, recommend_config=None, settings=None):
        if int(min_anchors) < 1:
            raise ConfigError(f"min_anchors must be at least 1, got {min_anchors!r}")
        if not 0 < ci_level < 1:
            raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {ci_level!r}")
        if int(min_cell_size) < 1:
            raise ConfigError(f"min_cell_size must be at least 1, got {min_cell_size!r}")
        self.min_anchors = int(min_anchors)
        self.drift_z = drift_z
        self.exclude_kc_items = bool(exclude_kc_items)
        self.ci_level = float(ci_level)
        self.n_draws = int(n_draws)
        self.seed = int(seed)
        self.min_n = int(min_n)
        self.min_cell_size = int(min_cell_size)
        self.recommend_config = recommend_config
        self.settings = settings if settings is not None else comparison_settings(self.min_cell_size)

    def _profile(self, data) -> CohortProfile:
        if isinstance(data, CohortProfile):
            return data
        return profile_cohort(data, recommend_config=self.recommend_config, min_cell_size=self.min_cell_size,
                              settings=self.settings)

    def fit(self, before, after, changelog=None, *, anchors=None) -> "CohortComparison":
        """Profile both cohorts (unless profiles are given), validate the change log against
        them, link the scales and compare every changed item, KC and page; returns ``self``.

        ``changelog``: a path, a dict, a :class:`ChangeLog`, or None (then items whose
        ``version`` differs between the cohorts count as revised, see
        :func:`changelog_from_versions`). ``anchors``: use exactly these anchor items.
        """
        t0 = time.perf_counter()
        b, a = self._profile(before), self._profile(after)
        self.before_, self.after_ = b, a
        changelog = _resolve_changelog(changelog, before, after, b, a)
        self.changelog_ = changelog
        changes = changelog.changes
        exclude = _moved_items(changelog, b, a, kc_items=self.exclude_kc_items)
        if b.rasch is not None and a.rasch is not None:
            self.linking_ = link_difficulties(b.rasch.item_params_, a.rasch.item_params_, exclude=exclude,
                                              anchors=anchors, min_anchors=self.min_anchors, drift_z=self.drift_z,
                                              ci_level=self.ci_level, cov_before=item_covariance(b.rasch),
                                              cov_after=item_covariance(a.rasch))
        else:
            self.linking_ = None
            warnings.warn("a Rasch calibration is missing in one cohort: difficulties cannot be linked",
                          LinkingWarning, stacklevel=2)
        bands = _bands(self.recommend_config)
        items = _changes_of(changes, "item").rename(columns={"target_id": "item_id"})
        pages = _changes_of(changes, "page")
        rows = [
            _item_rows(b, a, items, self.linking_, bands),
            _page_rows(b, a, pages),
            _kc_rows(b, a, changelog.kc_changes()),
        ]
        rows = [r for r in rows if len(r)]
        spec = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
            columns=["target_type", "target_id", "kc_model", "change_id", "change_type", "metric", "kind", "direction", "method"])
        comp = compare_metrics(spec, ci_level=self.ci_level, n_draws=self.n_draws, seed=self.seed,
                               min_n=self.min_n, min_cell_size=self.min_cell_size)
        if len(comp) and (self.linking_ is None or self.linking_.n_anchors == 0):
            unlinked = comp["metric"].eq("difficulty")
            comp.loc[unlinked, "verdict"] = "not_comparable"
            comp.loc[unlinked, "suppressed_reason"] = "no anchor items: the two difficulty scales cannot be linked"
        recs_b = b.recommendations
        comp["target_verdict"] = target_verdicts(comp, changelog, recs_b) if len(comp) else pd.Series(dtype="string")
        comp = _comparison_table(comp, self.linking_)
        self.comparison_ = comp.reset_index(drop=True)
        self.recommendation_status_ = _with_change_verdicts(recommendation_status(recs_b, a.recommendations, changelog),
                                                            comp)
        self.fit_seconds_ = time.perf_counter() - t0
        self.provenance_ = {
            "package": "course-research", "version": research.__version__,
            "before": b.cohort, "after": a.cohort, "changelog": changelog.source,
            "settings": {"min_anchors": self.min_anchors, "drift_z": self.drift_z,
                         "exclude_kc_items": self.exclude_kc_items, "ci_level": self.ci_level,
                         "n_draws": self.n_draws, "min_n": self.min_n, "min_cell_size": self.min_cell_size},
            "seed": self.seed, "bands": bands,
        }
        return self

    def _check_fitted(self):
        if not hasattr(self, "comparison_"):
            raise ConfigError("this CohortComparison is not fitted yet; call .fit(before, after, changelog) first")

    def summary(self) -> pd.DataFrame:
        """The comparison table (see :data:`COMPARISON_COLUMNS` and ``data_schema/outputs/comparison.schema.json``)."""
        self._check_fitted()
        return self.comparison_.copy()

    def targets(self) -> pd.DataFrame:
        """One row per changed target: target_type, target_id, kc_model, change_id, change_type, target_verdict,
        metrics (``metric: verdict`` pairs)."""
        self._check_fitted()
        c = self.comparison_
        if c.empty:
            return pd.DataFrame(columns=["target_type", "target_id", "kc_model", "change_id", "change_type",
                                         "target_verdict", "metrics"])
        g = c.assign(_m=c["metric"].astype(str) + ": " + c["verdict"].astype(str), kc_model=c["kc_model"].fillna(""))
        out = g.groupby(["target_type", "target_id", "kc_model"], sort=False).agg(
            change_id=("change_id", "first"), change_type=("change_type", "first"),
            target_verdict=("target_verdict", "first"), metrics=("_m", "; ".join)).reset_index()
        out["kc_model"] = out["kc_model"].replace("", None)
        return out

    def anchors(self) -> pd.DataFrame:
        """Candidate anchor items with their displacement and drift flag (see :mod:`research.loop.linking`)."""
        self._check_fitted()
        if self.linking_ is None:
            from research.loop.linking import ANCHOR_COLUMNS

            return pd.DataFrame(columns=ANCHOR_COLUMNS)
        return self.linking_.anchors.copy()

    def not_analysed(self) -> pd.DataFrame:
        """What could not be estimated for either cohort (``cohort``, ``analysis``, ``status``,
        ``message``): the comparison of those measures is missing, and this says why."""
        self._check_fitted()
        frames = [p.not_analysed().assign(cohort=p.cohort) for p in (self.before_, self.after_)]
        out = pd.concat(frames, ignore_index=True)
        return out[["cohort", "analysis", "status", "message"]]


def compare_cohorts(before, after, changelog=None, **settings) -> CohortComparison:
    """Shortcut: ``CohortComparison(**settings).fit(before, after, changelog)``."""
    anchors = settings.pop("anchors", None)
    return CohortComparison(**settings).fit(before, after, changelog, anchors=anchors)


# --------------------------------------------------------------------------- change logs from data


def changelog_from_versions(items_before: pd.DataFrame | None, items_after: pd.DataFrame | None) -> ChangeLog:
    """A change log read off the items tables: items whose ``version`` differs are revised,
    items only in one cohort added or removed (dated today; no recommendation ids)."""
    import datetime as dt

    if items_before is None or items_after is None or items_before.empty or items_after.empty:
        return read_changelog({"changes": []})
    today = dt.date.today().isoformat()
    vb = items_before.drop_duplicates("item_id").set_index(items_before.drop_duplicates("item_id")["item_id"].astype(str))["version"]
    va = items_after.drop_duplicates("item_id").set_index(items_after.drop_duplicates("item_id")["item_id"].astype(str))["version"]
    changes = []
    for item in sorted(set(vb.index) & set(va.index)):
        if str(vb[item]) != str(va[item]):
            changes.append({"date": today, "type": "item_revised", "item": item,
                            "description": f"version {vb[item]} -> {va[item]} (from the items tables)"})
    changes += [{"date": today, "type": "item_added", "item": i} for i in sorted(set(va.index) - set(vb.index))]
    changes += [{"date": today, "type": "item_removed", "item": i} for i in sorted(set(vb.index) - set(va.index))]
    return read_changelog({"changes": changes})
