"""Likert surveys (for example self-efficacy): construct scores, reliability, change.

* :func:`scored_responses` reverse-codes items (``scale_min + scale_max - response``).
* :func:`construct_scores` averages a learner's items per construct and phase.
* :func:`cronbach_alpha` with Feldt's (1965) F interval; :func:`mcdonald_omega` is
  McDonald's omega total from a one-factor minimum-residual (minres) fit of the item
  correlation matrix, ``1 - sum(1 - h2) / sum(R)`` as in R's ``psych::omega``, with a
  percentile bootstrap interval; :func:`reliability` applies both per construct.
* :func:`ordinal_change` fits a cumulative-logit model of item responses on phase (post
  vs pre) with item thresholds shifted per item (the model of statsmodels' ``OrderedModel``
  and R's ``ordinal::clm(response ~ phase + item)``, fitted on the counts per item, phase
  and answer with the exact gradient).
* :class:`BayesianOrdinalChange` is the PyMC ordered-logistic model with learner
  effects (the change conditional on the learner).
* :func:`survey_summary` is the report table (``surveys.csv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from research.errors import ConfigError, DataError, show_value
from research.privacy import suppress_small_rows
from research.stats import cronbach_alpha_feldt, noncentral_t_interval, require_columns

__all__ = [
    "BayesianOrdinalChange", "PHASES", "construct_scores", "cronbach_alpha", "mcdonald_omega", "ordinal_change",
    "reliability", "scored_responses", "survey_summary",
]

PHASES = ("pre", "mid", "post")


def _columns(**kw) -> dict[str, str]:
    return kw


def scored_responses(
    surveys: pd.DataFrame,
    *,
    learner: str = "learner_id",
    phase: str = "phase",
    construct: str = "construct",
    item: str = "item_id",
    response: str = "response",
    scale_min: str = "scale_min",
    scale_max: str = "scale_max",
    reverse_coded: str = "reverse_coded",
) -> pd.DataFrame:
    """Validated responses with reverse-coded items turned round.

    Returns
    -------
    DataFrame with learner_id, phase, construct, item_id, score (the response, reversed
        as ``scale_min + scale_max - response`` where reverse_coded is true), scale_min,
        scale_max, category (0-based: score - scale_min).
    """
    cols = _columns(learner=learner, phase=phase, construct=construct, item=item, response=response,
                    scale_min=scale_min, scale_max=scale_max)
    require_columns(surveys, cols, "surveys")
    if len(surveys) == 0:
        raise DataError("the surveys table is empty: there are no responses to score")
    ph = surveys[phase].astype("string")
    bad = sorted(set(ph.dropna().unique()) - set(PHASES))
    if bad or ph.isna().any():
        raise DataError(f"column {phase!r} holds phase value(s) {(bad or ['<missing>'])[:5]}; valid phases are {list(PHASES)}")
    r = pd.to_numeric(surveys[response], errors="coerce").astype(float).to_numpy()
    lo = pd.to_numeric(surveys[scale_min], errors="coerce").astype(float).to_numpy()
    hi = pd.to_numeric(surveys[scale_max], errors="coerce").astype(float).to_numpy()
    bad_scale = ~(np.isfinite(lo) & np.isfinite(hi) & (hi > lo))
    if bad_scale.any():
        i = int(np.flatnonzero(bad_scale)[0])
        raise DataError(f"row {i}: scale {lo[i]!r}..{hi[i]!r} is not a valid Likert scale; scale_max must exceed scale_min")
    out_of = ~np.isfinite(r) | (r < lo) | (r > hi) | (r != np.round(r))
    if out_of.any():
        i = int(np.flatnonzero(out_of)[0])
        raise DataError(
            f"row {i}, column {response!r}: response {show_value(surveys[response].iloc[i])} is not a whole number on the "
            f"scale {int(lo[i])}..{int(hi[i])} of item {surveys[item].iloc[i]!r}")
    rev = (surveys[reverse_coded].astype("boolean").fillna(False).to_numpy(dtype=bool)
           if reverse_coded in surveys.columns else np.zeros(len(surveys), bool))
    score = np.where(rev, lo + hi - r, r)
    out = pd.DataFrame({
        "learner_id": surveys[learner].astype("string").to_numpy(),
        "phase": ph.to_numpy(),
        "construct": surveys[construct].astype("string").to_numpy(),
        "item_id": surveys[item].astype("string").to_numpy(),
        "score": score, "scale_min": lo, "scale_max": hi,
    })
    out["category"] = (out["score"] - out["scale_min"]).astype(int)
    scale = out.groupby("construct", observed=True)[["scale_min", "scale_max"]].nunique()
    mixed = scale.index[(scale > 1).any(axis=1)]
    if len(mixed):
        raise DataError(f"construct {mixed[0]!r} mixes items on different scales; put one scale per construct")
    return out


def construct_scores(surveys: pd.DataFrame, **columns) -> pd.DataFrame:
    """Mean (reverse-coded) item score per learner x phase x construct.

    Returns
    -------
    DataFrame with learner_id, phase, construct, score (mean of answered items), n_items
        (items answered), scale_min, scale_max.
    """
    return _construct_scores(scored_responses(surveys, **columns))


def _construct_scores(s: pd.DataFrame) -> pd.DataFrame:
    return s.groupby(["learner_id", "phase", "construct"], observed=True, sort=True).agg(
        score=("score", "mean"), n_items=("score", "size"), scale_min=("scale_min", "first"),
        scale_max=("scale_max", "first")).reset_index()


# --------------------------------------------------------------------------- reliability


def cronbach_alpha(items: pd.DataFrame | np.ndarray, *, ci_level: float = 0.95) -> dict[str, float]:
    """Cronbach's alpha of a complete learners x items matrix with Feldt's F interval.

    Returns a dict with estimate, ci_low, ci_high, n, n_items.
    """
    x = np.asarray(items, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 3:
        raise DataError(f"alpha needs at least 3 learners and 2 items with complete answers; got shape {x.shape}")
    n, k = x.shape
    alpha, lo, hi = cronbach_alpha_feldt(x, ci_level)
    return {"estimate": alpha, "ci_low": lo, "ci_high": hi, "n": n, "n_items": k}


def _corr_batch(x: np.ndarray) -> np.ndarray:
    """Correlation matrices of a batch of data sets shaped (B, n, k)."""
    xc = x - x.mean(axis=1, keepdims=True)
    cov = np.einsum("bni,bnj->bij", xc, xc)
    sd = np.sqrt(np.einsum("bii->bi", cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        return cov / (sd[:, :, None] * sd[:, None, :])


def _minres_one_factor(R: np.ndarray, iters: int = 500, tol: float = 1e-10) -> np.ndarray:
    """One-factor loadings minimising squared off-diagonal residuals (iterated principal
    axes, which converge to the minres/ULS solution); R shaped (B, k, k)."""
    k = R.shape[-1]
    Rinv = np.linalg.pinv(R)
    h2 = np.clip(1 - 1 / np.einsum("bii->bi", Rinv), 0.005, 0.995)  # squared multiple correlations
    eye = np.eye(k, dtype=bool)
    for _ in range(iters):
        Rs = np.where(eye, h2[:, :, None] * eye, R)
        w, v = np.linalg.eigh(Rs)
        lam = v[:, :, -1] * np.sqrt(np.clip(w[:, -1], 0, None))[:, None]
        new = np.clip(lam**2, 0.0, 0.995)
        if np.nanmax(np.abs(new - h2)) < tol:
            h2 = new
            break
        h2 = new
    sign = np.where(lam.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    return lam * sign


def _omega_from_R(R: np.ndarray) -> np.ndarray:
    lam = _minres_one_factor(R)
    return 1 - (1 - lam**2).sum(axis=1) / R.sum(axis=(1, 2))


def _bootstrap_omega(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Omega of ``n_boot`` resamples of the rows of ``x``.

    A resample's correlation matrix depends only on how often it drew each distinct answer
    pattern (a few hundred for a handful of Likert items, whatever the number of learners), so
    each resample is counted per pattern and its moments are one product of those counts
    with the patterns' cross-products; the draws are those of resampling the rows.
    """
    n, k = x.shape
    pat, inv = np.unique(x - x.mean(axis=0), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    m = len(pat)
    cross = (pat[:, :, None] * pat[:, None, :]).reshape(m, k * k)
    vals = []
    for start in range(0, n_boot, 200):  # chunks keep memory flat; each chunk is vectorised
        b = min(200, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        cnt = np.bincount((inv[idx] + (np.arange(b) * m)[:, None]).ravel(), minlength=b * m).reshape(b, m) / n
        mean = cnt @ pat
        cov = (cnt @ cross).reshape(b, k, k) - mean[:, :, None] * mean[:, None, :]
        sd = np.sqrt(np.clip(np.einsum("bii->bi", cov), 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            Rb = cov / (sd[:, :, None] * sd[:, None, :])
        ok = np.isfinite(Rb).all(axis=(1, 2)) & (sd > 1e-12 * (1 + np.abs(pat).max())).all(axis=1)
        vals.append(_omega_from_R(Rb[ok]))
    return np.concatenate(vals)


def mcdonald_omega(items: pd.DataFrame | np.ndarray, *, ci_level: float = 0.95, n_boot: int = 1000,
                   seed: int | None = 0) -> dict[str, float]:
    """McDonald's omega total from a one-factor minres fit, with a bootstrap interval.

    ``omega = 1 - sum(1 - h2) / sum(R)`` where R is the item correlation matrix and
    h2 the communalities (as ``psych::omega(x, nfactors = 1)``'s ``omega.tot``). The
    interval is the percentile interval of ``n_boot`` resamples of learners (vectorised).

    Returns a dict with estimate, ci_low, ci_high, n, n_items, loadings (array).
    """
    x = np.asarray(items, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 3:
        raise DataError(f"omega needs at least 3 learners and 2 items with complete answers; got shape {x.shape}")
    if n_boot < 0:
        raise ConfigError(f"n_boot must be 0 or more, got {n_boot}")
    n, k = x.shape
    R = _corr_batch(x[None])
    if not np.isfinite(R).all():
        raise DataError("an item has no variance (everyone gave the same answer): omega cannot be computed")
    lam = _minres_one_factor(R)[0]
    est = float(_omega_from_R(R)[0])
    lo = hi = np.nan
    if n_boot:
        vals = _bootstrap_omega(x, n_boot, np.random.default_rng(seed))
        a = 1 - ci_level
        lo, hi = np.quantile(vals, [a / 2, 1 - a / 2])
    return {"estimate": est, "ci_low": float(lo), "ci_high": float(hi), "n": n, "n_items": k, "loadings": lam}


def _wide(scored: pd.DataFrame, construct: str, phase: str) -> pd.DataFrame:
    sub = scored[(scored["construct"] == construct) & (scored["phase"] == phase)]
    return sub.pivot_table(index="learner_id", columns="item_id", values="score", aggfunc="first")


def reliability(
    surveys: pd.DataFrame,
    *,
    phase: str | Sequence[str] | None = None,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
    **columns,
) -> pd.DataFrame:
    """Cronbach's alpha and McDonald's omega per construct and phase.

    Learners who skipped an item of the construct in that phase are left out of that
    construct's reliability (complete cases) and counted in ``n_incomplete``.

    Returns
    -------
    DataFrame with construct, phase, n (complete learners), n_incomplete, n_items, alpha,
        alpha_ci_low, alpha_ci_high (Feldt), omega, omega_ci_low, omega_ci_high
        (bootstrap percentile), method.
    """
    return _reliability(scored_responses(surveys, **columns), phase=phase, ci_level=ci_level, n_boot=n_boot, seed=seed)


def _reliability(s: pd.DataFrame, *, phase, ci_level: float, n_boot: int, seed: int | None) -> pd.DataFrame:
    """:func:`reliability` of responses already scored by :func:`scored_responses`."""
    phases = [phase] if isinstance(phase, str) else (list(phase) if phase is not None else
                                                      [p for p in PHASES if p in set(s["phase"])])
    rows = []
    for c in sorted(s["construct"].unique()):  # loop over constructs x phases (few), not rows
        for p in phases:
            w = _wide(s, c, p)
            if w.empty:
                continue
            complete = w.dropna()
            row = {"construct": c, "phase": p, "n": len(complete), "n_incomplete": len(w) - len(complete),
                   "n_items": w.shape[1]}
            if len(complete) >= 3 and w.shape[1] >= 2:
                al = cronbach_alpha(complete, ci_level=ci_level)
                try:
                    om = mcdonald_omega(complete, ci_level=ci_level, n_boot=n_boot, seed=seed)
                except DataError:
                    om = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}
                row.update(alpha=al["estimate"], alpha_ci_low=al["ci_low"], alpha_ci_high=al["ci_high"],
                           omega=om["estimate"], omega_ci_low=om["ci_low"], omega_ci_high=om["ci_high"])
            rows.append(row)
    out = pd.DataFrame(rows, columns=["construct", "phase", "n", "n_incomplete", "n_items", "alpha", "alpha_ci_low",
                                      "alpha_ci_high", "omega", "omega_ci_low", "omega_ci_high"])
    out["method"] = "alpha_feldt+omega_minres_bootstrap"
    return out.astype({"construct": "string", "phase": "string", "method": "string"})


# --------------------------------------------------------------------------- change


def _change_frame(scored: pd.DataFrame, construct: str, pre: str, post: str) -> pd.DataFrame:
    sub = scored[(scored["construct"] == construct) & scored["phase"].isin([pre, post])]
    if sub.empty:
        raise DataError(f"construct {construct!r} has no responses in phases {pre!r} or {post!r}")
    if sub["phase"].nunique() < 2:
        raise DataError(f"construct {construct!r} has responses only in phase {sub['phase'].iloc[0]!r}; "
                        f"a change needs both {pre!r} and {post!r}")
    return sub


def ordinal_change(
    surveys: pd.DataFrame,
    *,
    construct: str,
    pre: str = "pre",
    post: str = "post",
    ci_level: float = 0.95,
    **columns,
) -> pd.DataFrame:
    """Cumulative-logit (proportional odds) change of item responses from pre to post.

    ``logit P(Y <= j) = theta_j - (beta * post + d_item)`` (statsmodels' ``OrderedModel``, R's
    ``ordinal::clm``), fitted by :func:`research.estimate.ordinal.polr` with its exact gradient
    on the counts per item, phase and answer, which are sufficient for it; ``beta`` is the
    log odds of answering higher after than before.
    Pre and post answers of the same learner are treated as independent here (the
    Bayesian model adds learner effects).

    Returns
    -------
    DataFrame with one row: construct, estimate (beta, log odds), se, ci_low, ci_high,
        odds_ratio, p, n (learners), n_responses, method ('ordered_logit').
    """
    return _ordinal_change(scored_responses(surveys, **columns), construct=construct, pre=pre, post=post,
                           ci_level=ci_level)


def _ordinal_change(scored: pd.DataFrame, *, construct: str, pre: str, post: str, ci_level: float) -> pd.DataFrame:
    """:func:`ordinal_change` of responses already scored by :func:`scored_responses`."""
    from research.estimate.ordinal import polr

    s = _change_frame(scored, construct, pre, post)
    cats = np.sort(s["category"].unique())
    if len(cats) < 2:
        raise DataError(f"construct {construct!r}: every answer is in the same category; no ordinal model can be fitted")
    # phase and item are the only predictors: the counts per item x phase x category are sufficient,
    # and the model fitted on them with frequency weights is the model of the answers
    items = sorted(s["item_id"].unique())
    table = pd.DataFrame({"item": pd.Categorical(s["item_id"].to_numpy(), categories=items).codes,
                          "post": (s["phase"] == post).to_numpy(dtype=int),
                          "y": np.searchsorted(cats, s["category"].to_numpy())}).value_counts().sort_index().reset_index()
    X = np.column_stack([table["post"].to_numpy(dtype=float)]
                        + [(table["item"].to_numpy() == j).astype(float) for j in range(1, len(items))])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        _, beta, bse = polr(table["y"].to_numpy(), X, weights=table["count"].to_numpy(dtype=float))
    b, se = float(beta[0]), float(bse[0])
    z = stats.norm.ppf(1 - (1 - ci_level) / 2)
    out = pd.DataFrame({"construct": [construct], "estimate": [b], "se": [se], "ci_low": [b - z * se],
                        "ci_high": [b + z * se], "odds_ratio": [np.exp(b)],
                        "p": [2 * stats.norm.sf(abs(b / se))], "n": [s["learner_id"].nunique()],
                        "n_responses": [len(s)], "method": ["ordered_logit"]})
    out.attrs.update(converged=bool(np.isfinite(se)))
    return out.astype({"construct": "string", "method": "string"})


@dataclass
class BayesianOrdinalChange:
    """Bayesian ordered-logistic model of one construct's change, with learner effects.

    ``Y ~ OrderedLogistic(eta, cutpoints)`` with ``eta = beta * post + u[learner] +
    d[item]``, ``u ~ Normal(0, sigma_u)`` (non-centred), ``d`` sum-to-zero,
    ``beta ~ Normal(0, 1.5)``, ordered cutpoints ``Normal(0, 3)``. ``beta`` is the log
    odds of a higher answer after than before for the same learner.
    """

    sampler: object = None  # research.bayes.SamplerSettings: the one way sampler settings are passed
    ci_level: float = 0.95
    fitted_: bool = field(default=False, init=False)

    def __post_init__(self):
        from research.bayes import SamplerSettings

        if self.sampler is None:
            self.sampler = SamplerSettings()
        if not isinstance(self.sampler, SamplerSettings):
            raise ConfigError(f"sampler must be a research.bayes.SamplerSettings, got {type(self.sampler).__name__}")

    def fit(self, surveys: pd.DataFrame, *, construct: str, pre: str = "pre", post: str = "post",
            **columns) -> "BayesianOrdinalChange":
        import pymc as pm

        from research.bayes import diagnostics, sample, stacked

        s = _change_frame(scored_responses(surveys, **columns), construct, pre, post)
        learners = pd.Index(sorted(s["learner_id"].unique()))
        items = pd.Index(sorted(s["item_id"].unique()))
        li = learners.get_indexer(s["learner_id"])
        ii = items.get_indexer(s["item_id"])
        x = (s["phase"] == post).to_numpy(dtype=float)
        y = s["category"].to_numpy()
        K = int(s["scale_max"].iloc[0] - s["scale_min"].iloc[0] + 1)
        coords = {"learner": list(learners), "item": list(items), "cut": np.arange(K - 1)}
        with pm.Model(coords=coords) as model:
            beta = pm.Normal("beta", 0.0, 1.5)
            sigma_u = pm.HalfNormal("sigma_u", 1.5)
            u = sigma_u * pm.Normal("z_u", 0.0, 1.0, dims="learner")
            d = pm.ZeroSumNormal("d_item", sigma=1.5, dims="item") if len(items) > 1 else 0.0
            cut = pm.Normal("cutpoints", 0.0, 3.0, dims="cut",
                            transform=pm.distributions.transforms.ordered,
                            initval=np.linspace(-2, 2, K - 1))
            eta = beta * x + u[li] + (d[ii] if len(items) > 1 else 0.0)
            pm.OrderedLogistic("y", eta=eta, cutpoints=cut, observed=y)
        idata = sample(model, self.sampler)
        self.diagnostics_ = diagnostics(idata, var_names=["beta", "sigma_u", "cutpoints"])
        self.idata_ = idata
        self.beta_draws_ = stacked(idata, "beta")
        self.construct_ = construct
        self.n_ = len(learners)
        self.n_responses_ = len(s)
        from research.provenance import provenance

        self.provenance_ = provenance("BayesianOrdinalChange", sampler=self.sampler, idata=idata)
        self.fitted_ = True
        return self

    def summary(self) -> pd.DataFrame:
        """One row: construct, estimate (posterior mean of beta), se, ci_low, ci_high,
        prob_positive, n, n_responses, method ('bayes_ordered_logit')."""
        if not self.fitted_:
            raise ConfigError("call fit() before summary()")
        b = self.beta_draws_
        a = 1 - self.ci_level
        out = pd.DataFrame({"construct": [self.construct_], "estimate": [b.mean()], "se": [b.std(ddof=1)],
                            "ci_low": [np.quantile(b, a / 2)], "ci_high": [np.quantile(b, 1 - a / 2)],
                            "prob_positive": [(b > 0).mean()], "n": [self.n_], "n_responses": [self.n_responses_],
                            "method": ["bayes_ordered_logit"]})
        d = self.diagnostics_
        out.attrs.update(converged=bool(d.attrs["ok"]), divergences=int(d.attrs["divergences"]),
                         max_r_hat=float(d["r_hat"].max()))
        return out.astype({"construct": "string", "method": "string"})


def survey_summary(
    surveys: pd.DataFrame,
    *,
    pre: str = "pre",
    post: str = "post",
    min_cell_size: int = 10,
    ci_level: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
    bayes: dict[str, pd.DataFrame] | pd.DataFrame | None = None,
    **columns,
) -> pd.DataFrame:
    """Per construct: reliability, change of the construct score, ordinal change.

    ``bayes`` may hold :meth:`BayesianOrdinalChange.summary` rows (one frame, or a dict
    by construct); they fill the ``bayes_*`` columns, which are otherwise empty.

    Returns
    -------
    DataFrame, one row per construct: construct, n (learners with pre and post scores),
        n_pre, n_post, n_items, reliability_phase (the pre phase when present), alpha,
        alpha_ci_low, alpha_ci_high, omega, omega_ci_low, omega_ci_high, pre_mean,
        post_mean, change (mean paired change of the construct score, scale points),
        change_ci_low, change_ci_high (t interval), d_z, d_z_ci_low, d_z_ci_high,
        ordinal_log_odds, ordinal_ci_low, ordinal_ci_high, ordinal_p, bayes_log_odds,
        bayes_ci_low, bayes_ci_high, prob_positive, scale_min, scale_max, method,
        suppressed_reason (constructs resting on fewer than ``min_cell_size`` learners are
        emptied).
    """
    if min_cell_size is None or int(min_cell_size) < 1:
        raise ConfigError(f"min_cell_size must be a whole number of at least 1, got {min_cell_size!r}")
    scored = scored_responses(surveys, **columns)  # once, for every part of the table
    scores = _construct_scores(scored)
    present = set(scores["phase"].unique())
    rel_phase = pre if pre in present else sorted(present)[0]
    rel = _reliability(scored, phase=rel_phase, ci_level=ci_level, n_boot=n_boot, seed=seed)
    out = _score_change(scores, pre, post, ci_level)
    rel_cols = rel.rename(columns={"phase": "reliability_phase"})[
        ["construct", "reliability_phase", "n_items", "alpha", "alpha_ci_low", "alpha_ci_high", "omega",
         "omega_ci_low", "omega_ci_high"]]
    out = out.merge(rel_cols, on="construct", how="left")
    out = out.merge(_ordinal_columns(scored, out, pre, post, ci_level), on="construct", how="left")
    out, method = _bayes_columns(out, bayes)
    sc = scores.groupby("construct", observed=True)[["scale_min", "scale_max"]].first().reset_index()
    out = out.merge(sc.astype({"construct": "string"}), on="construct", how="left")
    out["method"] = method
    out["_n_supp"] = np.minimum(out["n"], out["n_pre"])
    out.loc[out["n"] == 0, "_n_supp"] = 0
    ids = ["construct", "reliability_phase", "method", "scale_min", "scale_max"]
    out = suppress_small_rows(out, "_n_supp", ids, int(min_cell_size)).drop(columns=["_n_supp"])
    out = out[SUMMARY_COLUMNS]
    out = out.astype({"construct": "string", "method": "string", "scale_min": "Int64", "scale_max": "Int64"})
    return out.reset_index(drop=True)


SUMMARY_COLUMNS = ["construct", "n", "n_pre", "n_post", "n_items", "reliability_phase", "alpha", "alpha_ci_low",
                   "alpha_ci_high", "omega", "omega_ci_low", "omega_ci_high", "pre_mean", "post_mean", "change",
                   "change_ci_low", "change_ci_high", "d_z", "d_z_ci_low", "d_z_ci_high", "ordinal_log_odds",
                   "ordinal_ci_low", "ordinal_ci_high", "ordinal_p", "bayes_log_odds", "bayes_ci_low", "bayes_ci_high",
                   "prob_positive", "scale_min", "scale_max", "method", "suppressed_reason"]


def _score_change(scores: pd.DataFrame, pre: str, post: str, ci_level: float) -> pd.DataFrame:
    """Per construct: n_pre, n_post, and for learners with both scores n, the means, the mean
    paired change with its t interval and d_z with its noncentral-t interval."""
    wide = scores.pivot_table(index=["construct", "learner_id"], columns="phase", values="score",
                              aggfunc="first").reset_index()
    for p in (pre, post):
        if p not in wide.columns:
            wide[p] = np.nan
    counts = wide.groupby("construct", observed=True).agg(n_pre=(pre, "count"), n_post=(post, "count")).reset_index()
    both = wide.dropna(subset=[pre, post]).copy()
    both["d"] = both[post] - both[pre]
    agg = both.groupby("construct", observed=True).agg(n=("d", "size"), pre_mean=(pre, "mean"),
                                                      post_mean=(post, "mean"), change=("d", "mean"),
                                                      sd=("d", "std")).reset_index()
    n = agg["n"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = agg["sd"].to_numpy() / np.sqrt(n)
        q = stats.t.ppf(1 - (1 - ci_level) / 2, np.where(n > 1, n - 1, np.nan))
        agg["change_ci_low"] = agg["change"] - q * se
        agg["change_ci_high"] = agg["change"] + q * se
        dz = agg["change"].to_numpy() / agg["sd"].to_numpy()
        dz = np.where(np.isfinite(dz), dz, np.nan)
    lo, hi = noncentral_t_interval(dz * np.sqrt(n), n - 1, ci_level)
    agg["d_z"], agg["d_z_ci_low"], agg["d_z_ci_high"] = dz, lo / np.sqrt(n), hi / np.sqrt(n)
    agg = agg.drop(columns=["sd"])
    out = counts.merge(agg, on="construct", how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    return out


def _ordinal_columns(scored: pd.DataFrame, out: pd.DataFrame, pre: str, post: str, ci_level: float) -> pd.DataFrame:
    """The ``ordinal_*`` columns: :func:`ordinal_change` of each construct with two or more
    learners with both scores (left empty where it cannot be fitted)."""
    ords = []
    for c in out["construct"]:  # loop over constructs (few)
        if out.loc[out["construct"] == c, "n"].iloc[0] >= 2:
            try:
                o = _ordinal_change(scored, construct=c, pre=pre, post=post, ci_level=ci_level)
                ords.append({"construct": c, "ordinal_log_odds": o["estimate"].iloc[0],
                             "ordinal_ci_low": o["ci_low"].iloc[0], "ordinal_ci_high": o["ci_high"].iloc[0],
                             "ordinal_p": o["p"].iloc[0]})
            except DataError:
                pass
    ordf = pd.DataFrame(ords, columns=["construct", "ordinal_log_odds", "ordinal_ci_low", "ordinal_ci_high", "ordinal_p"])
    return ordf.astype({"construct": "string"})


def _bayes_columns(out: pd.DataFrame, bayes) -> tuple[pd.DataFrame, str]:
    """The ``bayes_*`` columns and ``prob_positive`` from :meth:`BayesianOrdinalChange.summary`
    rows (empty without them), and the table's method."""
    for col in ("bayes_log_odds", "bayes_ci_low", "bayes_ci_high", "prob_positive"):
        out[col] = np.nan
    if bayes is None:
        return out, "classical"
    bf = pd.concat(list(bayes.values())) if isinstance(bayes, dict) else pd.DataFrame(bayes)
    bf.attrs = {}
    bf = bf.rename(columns={"estimate": "bayes_log_odds", "ci_low": "bayes_ci_low", "ci_high": "bayes_ci_high"})
    out = out.drop(columns=["bayes_log_odds", "bayes_ci_low", "bayes_ci_high", "prob_positive"]).merge(
        bf[["construct", "bayes_log_odds", "bayes_ci_low", "bayes_ci_high", "prob_positive"]].astype(
            {"construct": "string"}), on="construct", how="left")
    return out, "classical+bayesian"
