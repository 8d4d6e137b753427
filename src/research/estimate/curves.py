"""Learning curves per knowledge component and DataShop's curve categories, with confidence.

A learning curve plots a measure of the student steps against the opportunity number:
the **error rate** (first attempt incorrect or a hint), the **assistance score**
(incorrects + hints) or the **step duration**. Points with fewer learners than
``min_learners`` (DataShop's student threshold, default 10) are cut, and every point
carries its number of learners ``n`` and ``share_of_start`` (n over n at the curve's
first opportunity). Keep an eye on that drop: under mastery learning the learners who
master a KC leave its curve first, so the later points hold only the weaker learners and
a flat tail can hide real learning.

Standard errors treat learners as clusters (a learner has one step per KC and
opportunity, but several in the overall curve): for a point with per-learner sums
``s_i`` over ``m_i`` steps, ``p = sum s / sum m`` and
``se^2 = n/(n-1) * sum (s_i - p m_i)^2 / (sum m)^2``; for a per-KC error rate this is
``p(1-p)/(n-1)``. Intervals are Wald intervals, clipped to [0, 1] for rates.

Curve categories (:func:`categorize_curves`) follow DataShop's defaults: student
threshold 10, opportunity threshold 3, low error 20%, high error 40%, AFM slope
threshold 0.001. **Rule order.** DataShop's help page and its code
(``LearningCurveDatasetProducer.java``) disagree: the help says a curve is "low and flat"
when a point *ever dips* below the low-error threshold, the code requires *every* point
below it. We follow the code, in the code's order, because that is what DataShop
actually shows its users (so our labels can be compared with theirs) and because "ever
dips" would call a curve that falls from 60% to 15% -- a textbook good curve -- "low and
flat":

1. cut points with fewer learners than the student threshold;
2. fewer remaining points than the opportunity threshold: ``too_little_data``;
3. every remaining point below the low-error threshold: ``low_and_flat``;
4. no evidence of learning from the AFM slope: ``no_learning``;
5. the last remaining point at or above the high-error threshold: ``still_high``;
6. otherwise ``good``.

**No learning.** DataShop tests the point estimate (slope <= 0.001). With slopes
constrained at 0 a KC that truly has no learning gets a positive estimate about half the
time, so by default (``slope_rule="interval"``) we call it "no learning" when the slope
is not reliably above the threshold: the lower end of its one-sided 95% interval
(``slope - 1.645 se``) is at or below 0.001. ``slope_rule="datashop"`` restores the
point rule.

**No learning is not shown by a flat estimate alone.** "No learning" means learning
was not shown; its probability is capped by the probability that the free slope lies
within ``+- no_learning_slope_max`` (default 0.1 logits per opportunity), with the
standard error that includes the item order (see :class:`research.estimate.afm.AFM`,
``free_slopes``). So a learning KC whose slope sits at the zero bound because its later
items are harder (a clearly negative free slope) is never called "no learning" with
confidence.

**Confidence** (our addition). Each category gets the probability that it comes out the
same on replicate data: learners are resampled (Poisson bootstrap weights, the same
weights for all KCs), the curve points recomputed, the AFM slope redrawn from its
sampling distribution N(slope, se) (clipped at 0 when slopes are non-negative), and the
rules applied again. ``category_confidence`` is "confident" when that probability is at
least ``confident_at`` (default 0.8), else "uncertain"; the most frequent other category
and its probability are reported beside it, so a course developer sees "no learning
(confident)" apart from "no learning (could be noise: 40% still high)".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from research.errors import ConfigError, SchemaError

__all__ = ["CATEGORIES", "OVERALL", "all_learning_curves", "categorize_curves", "kc_table", "learning_curves"]

MEASURES = {
    "error_rate": "error rate (first attempt incorrect or a hint)",
    "assistance_score": "assistance score (incorrects + hints)",
    "step_duration": "step duration (seconds)",
}
OVERALL = "(all KCs)"
CATEGORIES = ("too_little_data", "low_and_flat", "no_learning", "still_high", "good")
SLOPE_RULES = ("interval", "datashop")
_Z = 1.959963984540054


def _measure_values(steps: pd.DataFrame, measure: str, columns: dict) -> np.ndarray:
    if measure == "error_rate":
        return 1.0 - pd.to_numeric(steps[columns["success"]], errors="coerce").to_numpy(dtype=float)
    if measure == "assistance_score":
        return pd.to_numeric(steps[columns["assistance"]], errors="coerce").to_numpy(dtype=float)
    return pd.to_numeric(steps[columns["duration"]], errors="coerce").to_numpy(dtype=float)


def _point_table(frame: pd.DataFrame, value: np.ndarray, pred: np.ndarray | None, keys: list[str],
                 learner: str) -> pd.DataFrame:
    """Per point: estimate, cluster se, n learners, n_obs (and predicted mean)."""
    f = frame[keys + [learner]].copy()
    f["_v"] = value
    f["_one"] = 1.0
    if pred is not None:
        f["_p"] = pred
    keep = np.isfinite(value)
    # group on integer codes (in order of appearance, as the groups are): grouping and merging on
    # Arrow strings factorizes them at every step; the values are put back at the end
    uniques = {}
    for c in keys + [learner]:
        if not pd.api.types.is_integer_dtype(f[c].dtype):
            codes, uniques[c] = pd.factorize(f[c], sort=False)
            f[c] = codes
            keep &= codes >= 0  # a missing key is no group (groupby's dropna)
    f = f[keep]
    agg = {"_s": ("_v", "sum"), "_m": ("_one", "sum")}
    if pred is not None:
        agg["_ps"] = ("_p", "sum")
    per_learner = f.groupby(keys + [learner], sort=False, observed=True).agg(**agg).reset_index()
    pts = per_learner.groupby(keys, sort=False, observed=True).agg(
        S=("_s", "sum"), M=("_m", "sum"), n=("_s", "size"), **({"PS": ("_ps", "sum")} if pred is not None else {})
    ).reset_index()
    pts["estimate"] = pts["S"] / pts["M"]
    per_learner = per_learner.merge(pts[keys + ["estimate"]], on=keys)
    per_learner["_r2"] = (per_learner["_s"] - per_learner["estimate"] * per_learner["_m"]) ** 2
    r2 = per_learner.groupby(keys, sort=False, observed=True)["_r2"].sum().rename("R2").reset_index()
    pts = pts.merge(r2, on=keys)
    n = pts["n"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pts["se"] = np.where(n > 1, np.sqrt(n / (n - 1) * pts["R2"].to_numpy()) / pts["M"].to_numpy(), np.nan)
    if pred is not None:
        pts["predicted"] = pts["PS"] / pts["M"]
    pts["n_obs"] = pts["M"].astype("int64")
    for c in keys:
        if c in uniques:
            pts[c] = uniques[c].take(pts[c].to_numpy())
    return pts.drop(columns=["S", "M", "R2"] + (["PS"] if pred is not None else []))


def learning_curves(
    steps: pd.DataFrame,
    *,
    measure: str = "error_rate",
    kc_model: str | list[str] | None = None,
    by_kc: bool = True,
    overall: bool = True,
    min_learners: int = 10,
    max_opportunity: int | None = None,
    predicted: str | None = None,
    learner: str = "learner_id",
    kc: str = "kc",
    opportunity: str = "opportunity",
    success: str = "success",
    assistance: str = "assistance",
    duration: str = "duration_s",
    model_column: str = "kc_model",
) -> pd.DataFrame:
    """Learning curves by opportunity, per KC and overall, for every KC model.

    Parameters
    ----------
    steps
        Student-step KC frame (:func:`research.estimate.opportunities.student_steps`).
    measure
        "error_rate", "assistance_score" or "step_duration".
    kc_model
        One or several KC models; default all in the frame.
    by_kc, overall
        Curves per KC and/or over all KCs of a model (kc = "(all KCs)").
    min_learners
        Points with fewer learners are cut (DataShop's student threshold).
    max_opportunity
        Drop opportunities above this number.
    predicted
        Optional column of ``steps`` with a model's prediction of the same measure (for
        the error rate: AFM's predicted error probability, see
        :meth:`research.estimate.afm.AFM.predict`); its mean per point is returned.

    Returns
    -------
    DataFrame, one row per KC model x KC x opportunity that has at least ``min_learners``:

    kc_model, kc : string
    measure : string
    opportunity : int
    estimate : float — mean of the measure over the point's student steps.
    se, ci_low, ci_high : float — learner-clustered standard error, 95% Wald interval.
    n : int — learners at the point. n_obs : int — student steps at the point.
    share_of_start : float — n over n at the curve's first opportunity.
    predicted : float — mean prediction (only with ``predicted=``).
    method : "mean_cluster_se".
    """
    frame = _curve_frame(steps, measure=measure, kc_model=kc_model, by_kc=by_kc, overall=overall,
                         min_learners=min_learners, max_opportunity=max_opportunity, predicted=predicted,
                         cols={"learner": learner, "kc": kc, "opportunity": opportunity, "model_column": model_column,
                               "success": success, "assistance": assistance, "duration": duration})
    value = _measure_values(frame, measure, {"success": success, "assistance": assistance, "duration": duration})
    pred = None if predicted is None else pd.to_numeric(frame[predicted], errors="coerce").to_numpy(dtype=float)
    parts = []
    if by_kc:
        p = _point_table(frame, value, pred, [model_column, kc, opportunity], learner)
        parts.append(p.rename(columns={model_column: "kc_model", kc: "kc", opportunity: "opportunity"}))
    if overall:
        p = _point_table(frame, value, pred, [model_column, opportunity], learner)
        p = p.rename(columns={model_column: "kc_model", opportunity: "opportunity"})
        p["kc"] = OVERALL
        parts.append(p)
    return _finish_curves(pd.concat(parts, ignore_index=True), measure=measure, min_learners=min_learners,
                          predicted=predicted is not None)


def _curve_frame(steps: pd.DataFrame, *, measure: str, kc_model, by_kc: bool, overall: bool, min_learners: int,
                 max_opportunity: int | None, predicted: str | None, cols: dict) -> pd.DataFrame:
    """The settings of :func:`learning_curves` checked, and the rows its curves are drawn from."""
    if measure not in MEASURES:
        raise ConfigError(f"measure={measure!r} is not known; valid measures are {list(MEASURES)}.")
    if int(min_learners) < 1:
        raise ConfigError(f"min_learners must be at least 1, got {min_learners!r}.")
    if not (by_kc or overall):
        raise ConfigError("by_kc and overall are both False: ask for at least one kind of curve.")
    value_role = {"error_rate": "success", "assistance_score": "assistance", "step_duration": "duration"}[measure]
    need = {k: cols[k] for k in ("learner", "kc", "opportunity", "model_column")}
    need[value_role] = cols[value_role]
    if predicted is not None:
        need["predicted"] = predicted
    missing = [f"{k}={v!r}" for k, v in need.items() if v not in steps.columns]
    if missing:
        raise SchemaError(f"the student-step frame lacks column(s) {', '.join(missing)}; its columns are "
                          f"{list(steps.columns)}.")
    model_column, kc, opportunity = cols["model_column"], cols["kc"], cols["opportunity"]
    frame = steps
    models = [str(m) for m in pd.unique(steps[model_column].dropna())]
    if kc_model is not None:
        wanted = [kc_model] if isinstance(kc_model, str) else list(kc_model)
        unknown = [m for m in wanted if m not in models]
        if unknown:
            raise ConfigError(f"KC model(s) {unknown} are not in the data; valid KC models are {models}.")
        frame = steps[steps[model_column].isin(wanted)]
    frame = frame[frame[kc].notna()]
    if max_opportunity is not None:
        frame = frame[pd.to_numeric(frame[opportunity]) <= max_opportunity]
    return frame


def _finish_curves(out: pd.DataFrame, *, measure: str, min_learners: int, predicted: bool) -> pd.DataFrame:
    """The points of :func:`learning_curves` in order: share of the start, points cut below ``min_learners``,
    95% Wald intervals clipped to the measure's range, and the output columns."""
    out["opportunity"] = out["opportunity"].astype("int64")
    out = out.sort_values(["kc_model", "kc", "opportunity"]).reset_index(drop=True)
    start = out.groupby(["kc_model", "kc"])["n"].transform("first")
    out["share_of_start"] = out["n"] / start
    out = out[out["n"] >= min_learners].copy()
    out["ci_low"] = out["estimate"] - _Z * out["se"]
    out["ci_high"] = out["estimate"] + _Z * out["se"]
    if measure == "error_rate":
        out["ci_low"] = out["ci_low"].clip(lower=0)
        out["ci_high"] = out["ci_high"].clip(upper=1)
    else:
        out["ci_low"] = out["ci_low"].clip(lower=0)
    out["measure"] = measure
    out["method"] = "mean_cluster_se"
    out["n"] = out["n"].astype("int64")
    cols_out = ["kc_model", "kc", "measure", "opportunity", "estimate", "se", "ci_low", "ci_high", "n", "n_obs",
                "share_of_start"] + (["predicted"] if predicted else []) + ["method"]
    out = out[cols_out].reset_index(drop=True)
    for c in ("kc_model", "kc", "measure", "method"):
        out[c] = out[c].astype("string")
    return out


def _categorise(low_flat, slope_ok, still_high, too_little):
    """Vectorised DataShop rule order (arrays broadcast); returns category codes 0..4."""
    return np.where(too_little, 0, np.where(low_flat, 1, np.where(~slope_ok, 2, np.where(still_high, 3, 4))))


def _check_category_settings(kcs: pd.DataFrame, *, slope_rule: str, low_error: float, high_error: float,
                             opportunity_threshold: int, student_threshold: int, confident_at: float) -> None:
    if slope_rule not in SLOPE_RULES:
        raise ConfigError(f"slope_rule={slope_rule!r} is not known; valid rules are {list(SLOPE_RULES)}.")
    if not 0 <= low_error <= high_error <= 1:
        raise ConfigError(f"need 0 <= low_error <= high_error <= 1, got low_error={low_error!r}, "
                          f"high_error={high_error!r}.")
    if int(opportunity_threshold) < 1 or int(student_threshold) < 1:
        raise ConfigError("opportunity_threshold and student_threshold must be at least 1, got "
                          f"{opportunity_threshold!r} and {student_threshold!r}.")
    if not 0 < confident_at <= 1:
        raise ConfigError(f"confident_at must lie in (0, 1], got {confident_at!r}.")
    need = [c for c in ("kc_model", "kc", "slope", "slope_se") if c not in kcs.columns]
    if need:
        raise SchemaError(f"kcs lacks column(s) {need}; pass the AFM summary (AFM.summary()).")


class _CurveRules:
    """DataShop's category rules over the kept curve points of every KC, for the point estimates
    and for bootstrap replicates alike (arrays broadcast over replicates)."""

    def __init__(self, kept: pd.DataFrame, curves: pd.DataFrame, *, opportunity_threshold: int, low_error: float,
                 high_error: float, slope_threshold: float, slope_rule: str):
        self.C = C = len(curves)
        cid = curves.set_index(["kc_model", "kc"]).index
        self.kept_c = cid.get_indexer(pd.MultiIndex.from_frame(kept[["kc_model", "kc"]])) if len(kept) else np.array([], int)
        self.n_points = np.bincount(self.kept_c, minlength=C)
        self.too_little = self.n_points < opportunity_threshold
        self.first_idx = np.full(C, -1)
        self.last_idx = np.full(C, -1)
        if len(kept):
            order = np.arange(len(kept))
            self.first_idx[self.kept_c[::-1]] = order[::-1]
            self.last_idx[self.kept_c] = order
        self.slope = curves["slope"].to_numpy(dtype=float)
        self.se = np.nan_to_num(curves["slope_se"].to_numpy(dtype=float), nan=0.0)
        self.has_slope = np.isfinite(self.slope)
        self.n_kept = len(kept)
        self.low_error, self.high_error = low_error, high_error
        self.slope_threshold, self.slope_rule = slope_threshold, slope_rule

    def slope_ok(self, g: np.ndarray) -> np.ndarray:
        # a KC without an AFM slope cannot be judged on learning: the slope rule is skipped
        if self.slope_rule == "interval":
            ok = (g - 1.6448536269514722 * self.se) > self.slope_threshold
        else:
            ok = g > self.slope_threshold
        return ok | ~self.has_slope

    def rates(self, rate_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rate_points: (R, P) error rates of the kept points -> (R, C) low-and-flat and still-high."""
        R = rate_points.shape[0]
        maxrate = np.full((R, self.C), -np.inf)
        if self.n_kept:
            np.maximum.at(maxrate.T, self.kept_c, rate_points.T)
        low_flat = maxrate < self.low_error
        last = np.full((R, self.C), np.nan)  # no kept point of a KC (of any KC, in a small cohort): no last rate
        has_last = self.last_idx >= 0
        last[:, has_last] = rate_points[:, self.last_idx[has_last]]
        with np.errstate(invalid="ignore"):
            return low_flat, last >= self.high_error

    def categorise(self, rate_points: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Category codes (R, C) of error rates (R, P) and slopes (R, C) or (C,)."""
        lf, sh = self.rates(rate_points)
        with np.errstate(invalid="ignore"):
            return _categorise(lf, self.slope_ok(np.nan_to_num(g, nan=0.0)), sh, self.too_little)


def _bootstrap_shares(rules: _CurveRules, frame: pd.DataFrame, err: np.ndarray, kept: pd.DataFrame, rate: np.ndarray, *,
                      n_boot: int, nonnegative_slopes: bool, seed: int, learner: str, kc: str, opportunity: str,
                      model_column: str) -> np.ndarray | None:
    """Share of bootstrap replicates (learners resampled by Poisson weights, slopes drawn from
    their sampling distribution) in each category: (C, categories); None without replicates
    (``n_boot`` 0 or no kept point)."""
    if not (n_boot and len(kept)):
        return None
    C = rules.C
    rng = np.random.default_rng(seed)
    lcodes, learners = pd.factorize(frame[learner], sort=True)
    f = pd.DataFrame({"kc_model": frame[model_column].astype(str).to_numpy(), "kc": frame[kc].astype(str).to_numpy(),
                      "opportunity": pd.to_numeric(frame[opportunity]).to_numpy(), "l": lcodes, "e": err})
    pidx = pd.MultiIndex.from_frame(kept[["kc_model", "kc", "opportunity"]].astype(
        {"opportunity": f["opportunity"].dtype}))
    col = pidx.get_indexer(pd.MultiIndex.from_frame(f[["kc_model", "kc", "opportunity"]]))
    use = (col >= 0) & np.isfinite(f["e"].to_numpy())
    nL, P = len(learners), len(kept)
    E = sp.csr_matrix((f["e"].to_numpy()[use], (f["l"].to_numpy()[use], col[use])), shape=(nL, P))
    Mx = sp.csr_matrix((np.ones(use.sum()), (f["l"].to_numpy()[use], col[use])), shape=(nL, P))
    counts = np.zeros((C, len(CATEGORIES)))
    chunk = max(1, min(n_boot, int(2e7 // max(nL, 1))))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        W = rng.poisson(1.0, size=(b, nL)).astype(float)
        num = (E.T @ W.T).T
        den = (Mx.T @ W.T).T
        with np.errstate(invalid="ignore", divide="ignore"):
            rb = np.where(den > 0, num / np.where(den > 0, den, 1), rate)
        g = rules.slope[None, :] + rules.se[None, :] * rng.standard_normal((b, C))
        if nonnegative_slopes:
            g = np.maximum(g, 0.0)
        cb = rules.categorise(rb, g)
        for j in range(len(CATEGORIES)):
            counts[:, j] += (cb == j).sum(axis=0)
        done += b
    return counts / n_boot


def _slope_small(kcs: pd.DataFrame, curves: pd.DataFrame, no_learning_slope_max: float) -> np.ndarray:
    """Probability that the (free) slope lies within +- ``no_learning_slope_max`` per curve."""
    if "slope_free" in kcs.columns and "slope_free_se" in kcs.columns:
        kf = kcs[["kc_model", "kc", "slope_free", "slope_free_se"]].astype({"kc_model": str, "kc": str})
        kf = curves[["kc_model", "kc"]].merge(kf, on=["kc_model", "kc"], how="left")
        g_free, se_free = kf["slope_free"].to_numpy(dtype=float), kf["slope_free_se"].to_numpy(dtype=float)
    else:
        g_free, se_free = curves["slope"].to_numpy(dtype=float), curves["slope_se"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        small = (stats.norm.cdf((no_learning_slope_max - g_free) / se_free)
                 - stats.norm.cdf((-no_learning_slope_max - g_free) / se_free))
    return np.where(np.isfinite(small), small, np.where(np.abs(g_free) <= no_learning_slope_max, 1.0, 0.0))


def _category_frame(curves: pd.DataFrame, kept: pd.DataFrame, rules: _CurveRules, cat: np.ndarray, prob: np.ndarray,
                    label: np.ndarray, alt: np.ndarray, alt_p: np.ndarray, slope_rule: str) -> pd.DataFrame:
    first_idx, last_idx = rules.first_idx, rules.last_idx
    kr = kept["estimate"].to_numpy(dtype=float)
    kn = kept["n"].to_numpy()
    ko = kept["opportunity"].to_numpy()
    out = pd.DataFrame({
        "kc_model": curves["kc_model"].to_numpy(),
        "kc": curves["kc"].to_numpy(),
        "category": np.array(CATEGORIES, dtype=object)[cat],
        "category_probability": prob,
        "category_confidence": label,
        "category_alternative": alt,
        "alternative_probability": alt_p,
        "n_points": rules.n_points.astype("int64"),
        "first_error_rate": np.where(first_idx >= 0, kr[np.maximum(first_idx, 0)] if len(kr) else np.nan, np.nan),
        "last_error_rate": np.where(last_idx >= 0, kr[np.maximum(last_idx, 0)] if len(kr) else np.nan, np.nan),
        "last_opportunity": pd.array(np.where(last_idx >= 0, ko[np.maximum(last_idx, 0)] if len(ko) else 0, 0),
                                     dtype="Int64"),
        "n_learners_first": pd.array(np.where(first_idx >= 0, kn[np.maximum(first_idx, 0)] if len(kn) else 0, 0),
                                     dtype="Int64"),
        "n_learners_last": pd.array(np.where(last_idx >= 0, kn[np.maximum(last_idx, 0)] if len(kn) else 0, 0),
                                    dtype="Int64"),
        "slope": rules.slope,
        "slope_se": curves["slope_se"].to_numpy(dtype=float),
        "method": f"datashop_rules+bootstrap(slope_rule={slope_rule})",
    })
    out.loc[last_idx < 0, ["last_opportunity", "n_learners_first", "n_learners_last"]] = pd.NA
    for c in ("kc_model", "kc", "category", "category_confidence", "category_alternative", "method"):
        out[c] = out[c].astype("string")
    return out


def categorize_curves(
    steps: pd.DataFrame, kcs: pd.DataFrame, *, kc_model: str | list[str] | None = None, student_threshold: int = 10,
    opportunity_threshold: int = 3, low_error: float = 0.20, high_error: float = 0.40, slope_threshold: float = 0.001,
    slope_rule: str = "interval", nonnegative_slopes: bool = True, n_boot: int = 400, confident_at: float = 0.8,
    no_learning_slope_max: float = 0.1, seed: int = 0, learner: str = "learner_id", kc: str = "kc",
    opportunity: str = "opportunity", success: str = "success", model_column: str = "kc_model",
) -> pd.DataFrame:
    """DataShop's learning-curve category of every KC, with a bootstrap confidence.

    Parameters
    ----------
    steps
        Student-step KC frame.
    kcs
        AFM estimates per KC with columns kc_model, kc, slope, slope_se (the
        :meth:`research.estimate.afm.AFM.summary` of each model, concatenated).
    student_threshold, opportunity_threshold, low_error, high_error, slope_threshold
        DataShop's thresholds (defaults are DataShop's).
    slope_rule
        "interval" (default: no learning unless slope - 1.645 se > threshold) or
        "datashop" (no learning when the slope estimate <= threshold).
    n_boot
        Bootstrap replicates for the confidence (0 skips it).
    confident_at
        Probability at which a category counts as "confident".
    no_learning_slope_max
        A learning rate (logits per opportunity) too small to matter. "No learning" only
        says that learning was not shown; it counts as confident only when the slope is
        shown to be small both ways: its probability is at most the probability that the
        free slope lies within +- this value (``slope_free`` and ``slope_free_se`` of
        ``kcs`` when given, which include the error that a fixed item order adds; else
        ``slope`` and ``slope_se``). A learning KC whose later items are harder has a
        clearly negative free slope and so never a confident "no learning".

    Returns
    -------
    DataFrame, one row per KC model x KC:

    kc_model, kc : string
    category : string — too_little_data, low_and_flat, no_learning, still_high, good.
    category_probability : float — share of bootstrap replicates with the same category.
    category_confidence : string — "confident" or "uncertain".
    category_alternative : string — the most frequent other category in the replicates (or empty).
    alternative_probability : float
    n_points : int — curve points with at least ``student_threshold`` learners.
    first_error_rate, last_error_rate : float — at the first and last remaining point.
    last_opportunity : int — opportunity of the last remaining point.
    n_learners_first, n_learners_last : int — learners at those points.
    slope, slope_se : float — the AFM slope used.
    method : string — "datashop_rules+bootstrap" and the slope rule.
    """
    _check_category_settings(kcs, slope_rule=slope_rule, low_error=low_error, high_error=high_error,
                             opportunity_threshold=opportunity_threshold, student_threshold=student_threshold,
                             confident_at=confident_at)
    frame, err, kept, curves = _category_points(steps, kcs, kc_model=kc_model, student_threshold=student_threshold,
                                                learner=learner, kc=kc, opportunity=opportunity, success=success,
                                                model_column=model_column)
    rules = _CurveRules(kept, curves, opportunity_threshold=opportunity_threshold, low_error=low_error,
                        high_error=high_error, slope_threshold=slope_threshold, slope_rule=slope_rule)
    rate = kept["estimate"].to_numpy(dtype=float)[None, :]
    cat = rules.categorise(rate, rules.slope)[0]
    share = _bootstrap_shares(rules, frame, err, kept, rate, n_boot=n_boot, nonnegative_slopes=nonnegative_slopes,
                              seed=seed, learner=learner, kc=kc, opportunity=opportunity, model_column=model_column)
    prob, label, alt, alt_p = _confidence(rules, cat, share, _slope_small(kcs, curves, no_learning_slope_max),
                                          confident_at=confident_at)
    return _category_frame(curves, kept, rules, cat, prob, label, alt, alt_p, slope_rule)


def _category_points(steps: pd.DataFrame, kcs: pd.DataFrame, *, kc_model, student_threshold: int, learner: str,
                     kc: str, opportunity: str, success: str, model_column: str):
    """The error-rate points behind :func:`categorize_curves`: ``(frame, err, kept, curves)``.

    ``frame`` the rows used, ``err`` their error (1 - success), ``kept`` the points with at
    least ``student_threshold`` learners (ordered by KC model, KC, opportunity), ``curves`` one
    row per KC model x KC with its AFM slope and standard error from ``kcs``.
    """
    frame = steps
    if kc_model is not None:
        wanted = [kc_model] if isinstance(kc_model, str) else list(kc_model)
        frame = steps[steps[model_column].isin(wanted)]
    frame = frame[frame[kc].notna()]
    err = 1.0 - pd.to_numeric(frame[success], errors="coerce").to_numpy(dtype=float)
    keys = [model_column, kc, opportunity]
    pts = _point_table(frame, err, None, keys, learner).rename(
        columns={model_column: "kc_model", kc: "kc", opportunity: "opportunity"})
    pts["kc_model"] = pts["kc_model"].astype(str)
    pts["kc"] = pts["kc"].astype(str)
    curves = pts[["kc_model", "kc"]].drop_duplicates()
    kept = pts[pts["n"] >= student_threshold].sort_values(["kc_model", "kc", "opportunity"]).reset_index(drop=True)
    k = kcs[["kc_model", "kc", "slope", "slope_se"]].copy()
    k["kc_model"] = k["kc_model"].astype(str)
    k["kc"] = k["kc"].astype(str)
    curves = curves.merge(k, on=["kc_model", "kc"], how="left").sort_values(["kc_model", "kc"]).reset_index(drop=True)
    return frame, err, kept, curves


def _confidence(rules: "_CurveRules", cat: np.ndarray, share: np.ndarray | None, small: np.ndarray, *,
                confident_at: float):
    """Each curve's category probability, confidence label and most likely other category.

    ``share`` is the bootstrap share of each category per curve (None without a bootstrap);
    ``small`` the probability that the slope is small both ways (:func:`_slope_small`).
    Returns ``(prob, label, alt, alt_p)``.
    """
    C = rules.C
    prob = np.full(C, np.nan)
    alt = np.array([""] * C, dtype=object)
    alt_p = np.full(C, np.nan)
    if share is not None:
        prob = share[np.arange(C), cat]
        other = share.copy()
        other[np.arange(C), cat] = -1
        j = other.argmax(axis=1)
        alt_p = other[np.arange(C), j]
        alt = np.where(alt_p > 0, np.array(CATEGORIES, dtype=object)[j], "")
        alt_p = np.where(alt_p > 0, alt_p, 0.0)
    prob = np.where(rules.too_little, 1.0, prob)
    # "no learning" is confident only when the slope is shown to be small both ways
    is_nl = cat == CATEGORIES.index("no_learning")
    prob = np.where(is_nl & rules.has_slope, np.fmin(np.nan_to_num(prob, nan=1.0), small), prob)
    label = np.where(np.isnan(prob), "unknown", np.where(prob >= confident_at, "confident", "uncertain"))
    return prob, label, alt, alt_p


def kc_table(models: dict, steps: pd.DataFrame, **category_settings) -> pd.DataFrame:
    """The KC table of a cohort: AFM estimates of every fitted KC model with curve categories.

    ``models`` is ``{kc_model: fitted AFM}`` (see :func:`research.estimate.afm.fit_kc_models`).

    Returns
    -------
    DataFrame, one row per KC model x KC: the columns of ``AFM.summary()`` followed by
    category, category_probability, category_confidence, category_alternative,
    alternative_probability, n_points, first_error_rate, last_error_rate,
    last_opportunity, n_learners_first, n_learners_last.
    """
    if not models:
        raise ConfigError("models is empty: fit at least one KC model first (fit_kc_models).")
    summ = pd.concat([m.summary() for m in models.values()], ignore_index=True)
    settings = dict(category_settings)
    nonneg = {bool(m.nonnegative_slopes) for m in models.values()}
    settings.setdefault("nonnegative_slopes", nonneg == {True})
    cats = categorize_curves(steps, summ, kc_model=list(models), **settings)
    cats = cats.drop(columns=["slope", "slope_se", "method"])
    out = summ.merge(cats, on=["kc_model", "kc"], how="left")
    return out


def all_learning_curves(steps: pd.DataFrame, *, predicted: str | None = None, min_learners: int = 10,
                        **kwargs) -> pd.DataFrame:
    """Error-rate, assistance-score and step-duration curves in one tidy frame.

    ``predicted`` (a column of predicted error probabilities, see
    :func:`research.estimate.afm.add_predictions`) is averaged for the error-rate curves
    only; the other measures get NaN there. Other keyword arguments go to
    :func:`learning_curves`. Returns the columns of :func:`learning_curves` with ``predicted``.
    """
    parts = []
    for measure in MEASURES:
        if measure == "step_duration" and not pd.to_numeric(steps.get("duration_s"), errors="coerce").notna().any():
            continue
        p = learning_curves(steps, measure=measure, min_learners=min_learners,
                            predicted=predicted if measure == "error_rate" else None, **kwargs)
        if "predicted" not in p.columns:
            p.insert(len(p.columns) - 1, "predicted", np.nan)
        parts.append(p)
    return pd.concat(parts, ignore_index=True)
