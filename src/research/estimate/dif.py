"""Differential item functioning (DIF): is an item harder for one group than for another
group of the same ability?

Two classical procedures, run for every item and every group attribute of the
``learners`` table (gender, age band, role, region, digital maturity), each focal group
against a reference group:

* **Mantel-Haenszel** (Holland & Thayer 1988). Learners are stratified on their total
  score *with the studied item included* (which makes the procedure exact under the
  Rasch model; Zwick 2012, sec. 2). Per item the common odds ratio
  ``alpha_MH = sum_k(A_k D_k / T_k) / sum_k(B_k C_k / T_k)`` (A, B = reference correct,
  incorrect; C, D = focal correct, incorrect; T = stratum size) is reported with the
  ETS delta ``MH D-DIF = -2.35 ln(alpha_MH)``. A negative delta means the item is harder
  for the focal group than for reference learners of equal total score. The standard
  error of ``ln(alpha_MH)`` is the Robins-Breslow-Greenland (1986) estimator, the one
  R's ``mantelhaen.test`` uses for its interval; SE(delta) = 2.35 SE(ln alpha).
  Significance is the Mantel-Haenszel chi-square with continuity correction (1 df),
  computed exactly as R's ``mantelhaen.test(correct = TRUE)``.
* **ETS classification** (Zwick 2012, ETS RR-12-08, p. 3; Holland & Thayer 1988):
  ``A`` when ``|delta| < 1`` or the MH chi-square is not significant at ``alpha``;
  ``C`` when ``|delta| >= 1.5`` *and* ``|delta|`` is significantly greater than 1, tested
  one-sided as ``(|delta| - 1) / SE(delta) > z_(1 - alpha)`` (1.645 at alpha = .05);
  ``B`` otherwise. With ``classify_on="p_adjusted"`` (the default) the significance in
  the A rule is the Benjamini-Hochberg adjusted p-value across all items, attributes
  and focal groups of the call, so a course with hundreds of items does not flag
  items by chance; ``classify_on="p_value"`` gives the classic per-item ETS rule.
* **Logistic-regression DIF** (Swaminathan & Rogers 1990; Zumbo 1999): three nested
  logistic models per item, ``correct ~ score``, ``+ group``, ``+ score:group``.
  The likelihood-ratio test of the group term is *uniform* DIF, of the interaction
  *non-uniform* DIF (1 df each). The effect size is the difference of Nagelkerke R^2
  between the full and the score-only model, classed after Jodoin & Gierl (2001):
  A (negligible) below 0.035, B (moderate) below 0.070, C (large) otherwise.
  All items are fitted at once by a batched Newton-Raphson (no loop over items or rows).

Incomplete data (learners who did not answer every item, as in every online course):
the matching score is the learner's number correct prorated to the full test,
``round(correct / answered * n_items)``, over the items the learner answered; with
complete data it is the plain total score.

Groups below the minimum cell size are not analysed: their rows are kept with every
number empty and ``suppressed_reason`` saying why (never the small count itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from research.errors import ConfigError, DataError
from research.stats import benjamini_hochberg, require_columns, wilson_interval

__all__ = [
    "DIF_COLUMNS", "dif_success_curves", "ets_classify", "first_attempt_responses", "flagged_success_curves",
    "group_comparisons", "mantel_haenszel_dif",
]

DELTA_SCALE = 2.35
LEARNER_ATTRIBUTES = ("gender", "age_band", "role", "region", "digital_maturity")
_CLASSIFY_ON = ("p_adjusted", "p_value")

DIF_COLUMNS = [
    "attribute",
    "reference_group",
    "focal_group",
    "n_reference",
    "n_focal",
    "mh_odds_ratio",
    "mh_odds_ratio_ci_low",
    "mh_odds_ratio_ci_high",
    "mh_delta",
    "mh_delta_se",
    "mh_chi2",
    "p_value",
    "p_adjusted",
    "ets_class",
    "favours",
    "lr_uniform_chi2",
    "lr_uniform_p",
    "lr_uniform_p_adjusted",
    "lr_nonuniform_chi2",
    "lr_nonuniform_p",
    "lr_nonuniform_p_adjusted",
    "lr_effect_size",
    "lr_effect_class",
    "n_strata",
    "purified",
    "method",
    "suppressed_reason",
]


# --------------------------------------------------------------------------- helpers


def ets_classify(delta, se, p, *, alpha: float = 0.05) -> np.ndarray:
    """ETS A/B/C class of MH D-DIF values (Zwick 2012, ETS RR-12-08, p. 3).

    ``A``: ``|delta| < 1`` or ``p >= alpha`` (MH chi-square not significant).
    ``C``: ``|delta| >= 1.5`` and ``(|delta| - 1) / se > z_(1 - alpha)`` (one-sided test
    that |delta| exceeds 1; 1.645 at alpha = .05). ``B``: otherwise. Missing inputs give
    an empty string.
    """
    delta = np.asarray(delta, dtype=float)
    se = np.asarray(se, dtype=float)
    p = np.asarray(p, dtype=float)
    z = stats.norm.ppf(1 - alpha)
    ad = np.abs(delta)
    with np.errstate(invalid="ignore", divide="ignore"):
        is_a = (ad < 1) | (p >= alpha)
        is_c = (ad >= 1.5) & ((ad - 1) / se > z)
    out = np.where(is_a, "A", np.where(is_c, "C", "B")).astype(object)
    out[~(np.isfinite(delta) & np.isfinite(p))] = ""
    return out


def _nagelkerke_class(r2: np.ndarray) -> np.ndarray:
    out = np.where(r2 < 0.035, "A", np.where(r2 < 0.070, "B", "C")).astype(object)
    out[~np.isfinite(r2)] = ""
    return out


def first_attempt_responses(
    attempts: pd.DataFrame,
    *,
    learner: str = "learner_id",
    item: str = "item_id",
    attempt: str = "attempt",
    outcome: str = "outcome",
    timestamp: str = "timestamp",
) -> pd.DataFrame:
    """Dichotomous first-attempt responses from the canonical ``attempts`` table.

    The rule of :func:`research.estimate.classical.first_attempt_responses` (the first
    attempt at the first step the learner met, on the first view of the item; a hint
    request counts as incorrect, the DataShop convention), keeping only what DIF needs.

    Returns
    -------
    DataFrame
        ``learner``, ``item``, ``correct`` (int 0/1), one row per learner x item.
    """
    from research.estimate.classical import first_attempt_responses as first_attempts

    first = first_attempts(attempts, learner=learner, item=item, attempt=attempt, outcome=outcome, timestamp=timestamp)
    return first[["learner_id", "item_id", "correct"]].rename(columns={"learner_id": learner, "item_id": item})


# --------------------------------------------------------------------------- preparation


@dataclass
class _Prepared:
    learners: np.ndarray  # learner labels, index = learner code
    items: np.ndarray  # item labels, index = item code
    li: np.ndarray  # learner code per response row
    ij: np.ndarray  # item code per response row
    y: np.ndarray  # 0/1 per response row


def _prepare(responses: pd.DataFrame, learner: str, item: str, correct: str) -> _Prepared:
    require_columns(responses, {"learner": learner, "item": item, "correct": correct}, "responses")
    if len(responses) == 0:
        raise DataError("responses is empty: there are no item responses to analyse for DIF")
    y_raw = responses[correct]
    if y_raw.dtype == bool or str(y_raw.dtype) == "boolean":
        y_raw = y_raw.astype("Int64")
    y = pd.to_numeric(y_raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"responses column {correct!r} must hold 0/1 (or True/False); row {first} has "
            f"{responses[correct].iloc[first]!r}. Score responses dichotomously first "
            "(see first_attempt_responses)."
        )
    li, learners = pd.factorize(responses[learner].astype(str), sort=True)
    ij, items = pd.factorize(responses[item].astype(str), sort=True)
    key = li.astype(np.int64) * len(items) + ij
    sorted_key = np.sort(key)
    if np.any(sorted_key[1:] == sorted_key[:-1]):
        dup = pd.Series(key).duplicated()
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(
            f"responses has more than one row for learner {responses[learner].iloc[row]!r} and item "
            f"{responses[item].iloc[row]!r}; DIF needs one scored response per learner and item "
            "(use first_attempt_responses on attempts)."
        )
    return _Prepared(np.asarray(learners), np.asarray(items), li, ij, y.astype(np.int8))


def _matching_scores(prep: _Prepared, anchor: np.ndarray) -> np.ndarray:
    """Per response row: the learner's (prorated) number correct on the anchor items plus
    the studied item (always included, Holland & Thayer 1988)."""
    n_learners = len(prep.learners)
    is_anchor = anchor[prep.ij]
    s_anchor = np.bincount(prep.li, weights=prep.y * is_anchor, minlength=n_learners)
    m_anchor = np.bincount(prep.li, weights=is_anchor.astype(float), minlength=n_learners)
    own = ~is_anchor  # studied item not in the anchor: add it back
    s = s_anchor[prep.li] + np.where(own, prep.y, 0)
    m = m_anchor[prep.li] + own
    k = anchor.sum() + own
    with np.errstate(invalid="ignore", divide="ignore"):
        prorated = np.rint(np.where(m > 0, s / m * k, 0))
    return np.where(m == k, s, prorated).astype(np.int64)


def group_comparisons(
    learners: pd.DataFrame,
    learner: str,
    attributes: list[str] | None,
    reference: dict | None,
    focal: dict | None,
) -> list[tuple[str, str, str, pd.Series]]:
    """(attribute, reference group, focal group, learner -> group Series) per comparison."""
    require_columns(learners, {"learner": learner}, "learners")
    if attributes is None:
        # default: every standard attribute with values; none at all means nothing to compare
        attributes = [a for a in LEARNER_ATTRIBUTES if a in learners.columns and learners[a].notna().any()]
        # plus extra attributes loaded through a mapping's `attributes:` (e.g. study_programme)
        attributes += [str(a) for a in learners.columns if a not in (*LEARNER_ATTRIBUTES, learner, "cohort", "source_file", "source_line")
                       and learners[a].dtype in ("string", object) and learners[a].notna().any()]
    elif isinstance(attributes, str):
        attributes = [attributes]
    unknown = [a for a in attributes if a not in learners.columns or a == learner]
    if unknown:
        valid = [str(c) for c in learners.columns if c not in (learner, "cohort")]
        raise ConfigError(f"unknown learner attribute(s) {unknown}; valid attributes in learners: {valid}")
    reference = dict(reference or {})
    focal = dict(focal or {})
    for name, cfg in (("reference", reference), ("focal", focal)):
        extra = [k for k in cfg if k not in attributes]
        if extra:
            raise ConfigError(f"{name}= names attribute(s) {extra} that are not analysed; analysed attributes: {attributes}")
    out = []
    ids = learners[learner].astype(str)
    for attr in attributes:
        values = learners[attr].astype("string")
        group = pd.Series(values.to_numpy(), index=ids.to_numpy(), name=attr).dropna()
        group = group[~group.index.duplicated()]
        counts = group.value_counts()
        if counts.empty:
            continue
        observed = sorted(map(str, counts.index))
        ref = reference.get(attr)
        if ref is None:
            ref = str(counts.sort_values(ascending=False, kind="stable").index[0])
        elif str(ref) not in observed:
            raise ConfigError(f"reference group {ref!r} for attribute {attr!r} is not in the data; groups: {observed}")
        foc = focal.get(attr)
        if foc is None:
            focs = [g for g in observed if g != str(ref)]
        else:
            focs = [foc] if isinstance(foc, str) else list(foc)
            bad = [f for f in focs if str(f) not in observed or str(f) == str(ref)]
            if bad:
                raise ConfigError(
                    f"focal group(s) {bad} for attribute {attr!r} are not in the data or equal the reference "
                    f"{ref!r}; groups: {observed}"
                )
        for f in focs:
            out.append((attr, str(ref), str(f), group))
    return out


# --------------------------------------------------------------------------- kernels


def _mh_kernel(ij: np.ndarray, stratum: np.ndarray, is_focal: np.ndarray, y: np.ndarray, n_items: int) -> dict:
    """Mantel-Haenszel statistics for all items at once (arrays of length n_items)."""
    n_strata = int(stratum.max()) + 1 if len(stratum) else 1
    key = ij.astype(np.int64) * n_strata + stratum
    size = n_items * n_strata
    f = is_focal.astype(float)
    r = 1.0 - f
    yy = y.astype(float)

    def cnt(w):
        return np.bincount(key, weights=w, minlength=size).reshape(n_items, n_strata)

    a = cnt(yy * r)
    n_ref = cnt(r)
    c = cnt(yy * f)
    n_foc = cnt(f)
    b = n_ref - a
    d = n_foc - c
    t = n_ref + n_foc
    m1 = a + c
    m0 = t - m1
    use = t >= 2
    ts = np.where(use, t, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        R = np.where(use, a * d / ts, 0.0)
        S = np.where(use, b * c / ts, 0.0)
        P = np.where(use, (a + d) / ts, 0.0)
        Q = np.where(use, (b + c) / ts, 0.0)
        sR, sS = R.sum(1), S.sum(1)
        odds = sR / sS
        var_log = (P * R).sum(1) / (2 * sR**2) + (P * S + Q * R).sum(1) / (2 * sR * sS) + (Q * S).sum(1) / (2 * sS**2)
        ea = np.where(use, n_ref * m1 / ts, 0.0)
        va = np.where(use, n_ref * n_foc * m1 * m0 / (ts**2 * np.where(use, ts - 1, 1.0)), 0.0)
        dev = np.where(use, a, 0.0).sum(1) - ea.sum(1)
        yates = np.where(np.abs(dev) >= 0.5, 0.5, 0.0)  # as R's mantelhaen.test(correct = TRUE)
        sva = va.sum(1)
        chi2 = (np.abs(dev) - yates) ** 2 / sva
    informative = (n_ref > 0) & (n_foc > 0) & use
    return {
        "n_reference": n_ref.sum(1),
        "n_focal": n_foc.sum(1),
        "odds": odds,
        "se_log": np.sqrt(var_log),
        "chi2": chi2,
        "p": stats.chi2.sf(chi2, 1),
        "n_strata": informative.sum(1),
        "estimable": (sR > 0) & (sS > 0) & (sva > 0),
    }


def _batched_logit(group_idx: np.ndarray, X: np.ndarray, k: np.ndarray, n: np.ndarray, n_groups: int,
                   max_iter: int = 50, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood logistic regression fitted separately per group, all at once.

    Rows are binomial cells (``k`` successes of ``n`` trials with covariates ``X``), so
    learners with the same item, score and group share one row; the log-likelihood is
    the Bernoulli one of the underlying responses. Newton-Raphson on per-group p x p
    systems (p = X.shape[1]) assembled with bincount; a tiny ridge keeps separated groups
    solvable (their log-likelihood still converges). Returns (coefficients shaped
    (n_groups, p), log-likelihood per group).
    """
    _, p = X.shape
    beta = np.zeros((n_groups, p))
    pairs = [(i, j) for i in range(p) for j in range(i, p)]
    ll_old = np.full(n_groups, -np.inf)
    for _ in range(max_iter):
        eta = np.einsum("np,np->n", X, beta[group_idx])
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = n * np.clip(mu * (1 - mu), 1e-12, None)
        ll = np.bincount(group_idx, weights=k * eta - n * np.logaddexp(0.0, eta), minlength=n_groups)
        if np.all(np.abs(ll - ll_old) < tol):
            break
        ll_old = ll
        resid = k - n * mu
        grad = np.stack([np.bincount(group_idx, weights=X[:, i] * resid, minlength=n_groups) for i in range(p)], 1)
        H = np.empty((n_groups, p, p))
        for i, j in pairs:
            H[:, i, j] = H[:, j, i] = np.bincount(group_idx, weights=w * X[:, i] * X[:, j], minlength=n_groups)
        H += 1e-8 * np.eye(p)
        step = np.linalg.solve(H, grad[..., None])[..., 0]
        beta = beta + np.clip(step, -5, 5)
    eta = np.einsum("np,np->n", X, beta[group_idx])
    ll = np.bincount(group_idx, weights=k * eta - n * np.logaddexp(0.0, eta), minlength=n_groups)
    return beta, ll


def _lr_kernel(ij: np.ndarray, score: np.ndarray, is_focal: np.ndarray, y: np.ndarray, n_items: int) -> dict:
    """Logistic-regression DIF for all items at once (Swaminathan & Rogers 1990).

    The three models only see (item, score, group), so responses are first collapsed to
    binomial cells: exact, and about as many rows as items x score values x 2.
    """
    s_all = score.astype(float)
    sd = s_all.std()
    mean = s_all.mean()
    n_scores = int(score.max()) + 1 if len(score) else 1
    key = (ij.astype(np.int64) * n_scores + score) * 2 + is_focal.astype(np.int64)
    size = n_items * n_scores * 2
    n_cell = np.bincount(key, minlength=size).astype(float)
    k_cell = np.bincount(key, weights=y.astype(float), minlength=size)
    cells = np.flatnonzero(n_cell)
    n, k = n_cell[cells], k_cell[cells]
    g = (cells % 2).astype(float)
    sc = (cells // 2) % n_scores
    item_idx = cells // 2 // n_scores
    s = (sc - mean) / (sd if sd > 0 else 1.0)
    one = np.ones_like(s)
    n_item = np.bincount(item_idx, weights=n, minlength=n_items)
    k_item = np.bincount(item_idx, weights=k, minlength=n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        pbar = k_item / n_item
        ll_null = np.where((k_item > 0) & (k_item < n_item),
                           k_item * np.log(pbar) + (n_item - k_item) * np.log1p(-pbar), 0.0)
    _, ll0 = _batched_logit(item_idx, np.column_stack([one, s]), k, n, n_items)
    _, ll1 = _batched_logit(item_idx, np.column_stack([one, s, g]), k, n, n_items)
    _, ll2 = _batched_logit(item_idx, np.column_stack([one, s, g, s * g]), k, n, n_items)
    chi_u = np.maximum(2 * (ll1 - ll0), 0.0)
    chi_n = np.maximum(2 * (ll2 - ll1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        denom = 1 - np.exp(2 * ll_null / n_item)

        def nagelkerke(ll):
            return (1 - np.exp(2 * (ll_null - ll) / n_item)) / denom

        r2 = nagelkerke(ll2) - nagelkerke(ll0)
    return {
        "chi_u": chi_u,
        "p_u": stats.chi2.sf(chi_u, 1),
        "chi_n": chi_n,
        "p_n": stats.chi2.sf(chi_n, 1),
        "r2": r2,
    }


# --------------------------------------------------------------------------- public API


def _analyse_comparison(prep, group_codes, purify, alpha, logistic, *, purify_classes=("B", "C"),
                        classify_on="p_adjusted"):
    """MH (and LR) for one reference/focal comparison; group_codes per learner: 0 ref, 1 focal, -1 other.

    With ``purify`` the standard two-stage procedure (Holland & Thayer 1988; Zwick 2012,
    sec. 4): stage 1 classifies every item (ETS A/B/C) on the total score; stage 2 drops
    the items of ``purify_classes`` from the matching score (each studied item stays in
    its own score) and runs MH again: that is the result.
    """
    n_items = len(prep.items)
    rows_g = group_codes[prep.li]
    keep = rows_g >= 0
    ij, y, is_focal = prep.ij[keep], prep.y[keep], rows_g[keep] == 1
    anchor = np.ones(n_items, dtype=bool)
    purified = False
    score = _matching_scores(prep, anchor)[keep]
    mh = _mh_kernel(ij, score, is_focal, y, n_items)
    if purify:
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = -DELTA_SCALE * np.log(mh["odds"])
        p = benjamini_hochberg(mh["p"]) if classify_on == "p_adjusted" else mh["p"]
        cls = ets_classify(delta, DELTA_SCALE * mh["se_log"], p, alpha=alpha)
        stage2 = ~np.isin(cls, list(purify_classes))
        if stage2.sum() >= 2 and not stage2.all():
            score = _matching_scores(prep, stage2)[keep]
            mh = _mh_kernel(ij, score, is_focal, y, n_items)
            purified = True
    lr = _lr_kernel(ij, score, is_focal, y, n_items) if logistic else None
    return mh, lr, purified


def _check_dif_settings(classify_on: str, alpha: float, min_cell_size: int,
                        purify_classes: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """Check :func:`mantel_haenszel_dif`'s settings; returns ``purify_classes`` as a tuple."""
    if classify_on not in _CLASSIFY_ON:
        raise ConfigError(f"classify_on={classify_on!r} is not known; use one of {list(_CLASSIFY_ON)}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha={alpha!r} must lie strictly between 0 and 1")
    if int(min_cell_size) < 1:
        raise ConfigError(f"min_cell_size={min_cell_size!r} must be at least 1")
    if isinstance(purify_classes, str):
        purify_classes = tuple(purify_classes)
    purify_classes = tuple(purify_classes)
    if not purify_classes or not set(purify_classes) <= {"B", "C"}:
        raise ConfigError(f"purify_classes={purify_classes!r}: give the ETS classes to drop from the matching "
                          "score, ('C',) or ('B', 'C')")
    return purify_classes


def _comparison_rows(prep: _Prepared, attr: str, ref: str, foc: str, group: pd.Series, *, item: str, min_cell_size: int,
                     purify: bool, alpha: float, logistic: bool, purify_classes: tuple[str, ...], classify_on: str,
                     ci_level: float) -> pd.DataFrame:
    """The rows of one reference/focal comparison, one per item (a group below the cell size: not analysed)."""
    n_items = len(prep.items)
    g = group.reindex(prep.learners)
    codes = np.where(g.to_numpy(dtype=object) == ref, 0, np.where(g.to_numpy(dtype=object) == foc, 1, -1))
    n_ref_total = int((group == ref).sum())
    n_foc_total = int((group == foc).sum())
    base = pd.DataFrame(
        {item: prep.items, "attribute": attr, "reference_group": ref, "focal_group": foc}
    )
    if min(n_ref_total, n_foc_total) < min_cell_size:
        small = ref if n_ref_total < min_cell_size else foc
        base["suppressed_reason"] = (
            f"group {small!r} of {attr} has fewer learners than the minimum cell size {min_cell_size}: not analysed"
        )
        return base
    mh, lr, purified = _analyse_comparison(prep, codes, purify, alpha, logistic, purify_classes=purify_classes,
                                           classify_on=classify_on)
    z = stats.norm.ppf(0.5 + ci_level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_or = np.log(mh["odds"])
    base["n_reference"] = mh["n_reference"]
    base["n_focal"] = mh["n_focal"]
    base["mh_odds_ratio"] = mh["odds"]
    base["mh_odds_ratio_ci_low"] = np.exp(log_or - z * mh["se_log"])
    base["mh_odds_ratio_ci_high"] = np.exp(log_or + z * mh["se_log"])
    base["mh_delta"] = -DELTA_SCALE * log_or
    base["mh_delta_se"] = DELTA_SCALE * mh["se_log"]
    base["mh_chi2"] = mh["chi2"]
    base["p_value"] = mh["p"]
    if lr is not None:
        base["lr_uniform_chi2"] = lr["chi_u"]
        base["lr_uniform_p"] = lr["p_u"]
        base["lr_nonuniform_chi2"] = lr["chi_n"]
        base["lr_nonuniform_p"] = lr["p_n"]
        base["lr_effect_size"] = lr["r2"]
    base["n_strata"] = mh["n_strata"]
    base["purified"] = purified
    small_item = (mh["n_reference"] < min_cell_size) | (mh["n_focal"] < min_cell_size)
    reason = np.full(n_items, "", dtype=object)
    reason[~mh["estimable"]] = "odds ratio not estimable: no stratum holds both groups with mixed outcomes"
    reason[small_item] = (
        f"fewer learners than the minimum cell size {min_cell_size} in the reference or focal group "
        "answered this item: not analysed"
    )
    base["suppressed_reason"] = reason
    return base


def _dif_table(frames: list[pd.DataFrame], *, item: str, classify_on: str, alpha: float, logistic: bool,
               purify: bool) -> pd.DataFrame:
    """The comparisons in one table: suppressed rows emptied, Benjamini-Hochberg over all rows, ETS and
    Jodoin-Gierl classes, the columns of :data:`DIF_COLUMNS`."""
    if not frames:
        # no learner attributes with values (e.g. a DataShop export): an empty table, not an error
        frames = [pd.DataFrame({item: pd.Series(dtype="string"), "attribute": pd.Series(dtype="string"),
                                "reference_group": pd.Series(dtype="string"), "focal_group": pd.Series(dtype="string"),
                                "suppressed_reason": pd.Series(dtype="string")})]
    out = pd.concat(frames, ignore_index=True)
    for col in DIF_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    numeric = [c for c in DIF_COLUMNS if c not in ("attribute", "reference_group", "focal_group", "ets_class",
                                                   "favours", "lr_effect_class", "method", "suppressed_reason",
                                                   "purified")]
    out["suppressed_reason"] = out["suppressed_reason"].fillna("").astype(str)
    suppressed = out["suppressed_reason"] != ""
    out.loc[suppressed, numeric] = np.nan
    out["p_adjusted"] = benjamini_hochberg(out["p_value"])
    out["lr_uniform_p_adjusted"] = benjamini_hochberg(out["lr_uniform_p"])
    out["lr_nonuniform_p_adjusted"] = benjamini_hochberg(out["lr_nonuniform_p"])
    p_cls = out["p_adjusted"] if classify_on == "p_adjusted" else out["p_value"]
    out["ets_class"] = ets_classify(out["mh_delta"], out["mh_delta_se"], p_cls, alpha=alpha)
    delta = out["mh_delta"].to_numpy(dtype=float)
    out["favours"] = np.where(~np.isfinite(delta), "", np.where(delta < 0, "reference", np.where(delta > 0, "focal", "neither")))
    out["lr_effect_class"] = _nagelkerke_class(out["lr_effect_size"].to_numpy(dtype=float))
    out["purified"] = out["purified"].astype("boolean")
    for col in ("n_reference", "n_focal", "n_strata"):
        out[col] = pd.array(np.rint(out[col].to_numpy(dtype=float)), dtype="Int64") if out[col].notna().any() else pd.array([pd.NA] * len(out), dtype="Int64")
        out.loc[out[col].isna(), col] = pd.NA
    out["method"] = "mantel_haenszel" + ("+logistic" if logistic else "") + ("+purified" if purify else "")
    return out[[item, *DIF_COLUMNS]]


def mantel_haenszel_dif(
    responses: pd.DataFrame, learners: pd.DataFrame, *, attributes: list[str] | str | None = None,
    reference: dict[str, str] | None = None, focal: dict[str, str | list[str]] | None = None,
    learner: str = "learner_id", item: str = "item_id", correct: str = "correct", min_cell_size: int = 10,
    alpha: float = 0.05, classify_on: str = "p_adjusted", purify: bool = False, logistic: bool = True,
    purify_classes: tuple[str, ...] | list[str] | str = ("B", "C"), ci_level: float = 0.95,
) -> pd.DataFrame:
    """DIF of every item for every group attribute: Mantel-Haenszel, ETS class, and
    logistic-regression DIF; Benjamini-Hochberg across all rows.

    Parameters
    ----------
    responses : DataFrame
        Long format, one scored response per learner x item (``correct`` 0/1); build it
        from attempts with :func:`first_attempt_responses`.
    learners : DataFrame
        ``learner`` plus the group attribute columns.
    attributes : list of str, optional
        Attributes to analyse; default every one of gender, age_band, role, region,
        digital_maturity present with values (none present: an empty table).
    reference : dict, optional
        Reference group per attribute (``{"gender": "man"}``); default the largest group.
    focal : dict, optional
        Focal group(s) per attribute; default every other group.
    min_cell_size : int
        A comparison is not analysed for an item when the reference or the focal group has
        fewer learners than this answering it; the row says so in ``suppressed_reason``.
    alpha : float
        Significance level of the ETS rule (and of the one-sided |delta| > 1 test).
    classify_on : {"p_adjusted", "p_value"}
        Which MH p-value the ETS A rule uses: Benjamini-Hochberg adjusted (default) or raw.
    purify : bool
        Purify the matching score by the standard two-stage Mantel-Haenszel procedure
        (Holland & Thayer 1988; Zwick 2012, sec. 4): stage 1 classifies every item on the
        total score (ETS classes, with the significance of ``classify_on``, Benjamini-
        Hochberg adjusted within the comparison by default); stage 2 drops the items of
        ``purify_classes`` from the matching score (each studied item stays in its own
        score) and runs MH again, once. Fewer than two items left: no purification.
    purify_classes : sequence of {"B", "C"} or "C" or "BC"
        The stage-1 classes dropped from the matching score: ``("B", "C")`` (default) or
        ``("C",)``.
    logistic : bool
        Also run logistic-regression DIF (default True).
    ci_level : float
        Level of the odds-ratio interval (default 0.95).

    Returns
    -------
    DataFrame
        One row per item x attribute x focal group:

        - ``item`` (named as the ``item`` argument), ``attribute``, ``reference_group``,
          ``focal_group``: what is compared.
        - ``n_reference``, ``n_focal``: learners of each group answering the item.
        - ``mh_odds_ratio``, ``mh_odds_ratio_ci_low``, ``mh_odds_ratio_ci_high``: common odds
          ratio (reference vs focal odds of a correct answer) with its ``ci_level`` interval
          (Robins-Breslow-Greenland variance).
        - ``mh_delta``, ``mh_delta_se``: ETS MH D-DIF = -2.35 ln(odds ratio) and its SE;
          negative = harder for the focal group.
        - ``mh_chi2``, ``p_value``, ``p_adjusted``: MH chi-square (continuity-corrected),
          its p-value and the Benjamini-Hochberg adjusted p-value over all rows.
        - ``ets_class``: A, B or C (see module docstring); ``favours``: ``reference`` when
          delta < 0 (the item is harder for the focal group), ``focal`` when delta > 0.
        - ``lr_uniform_chi2``, ``lr_uniform_p``, ``lr_uniform_p_adjusted``: LR test of the
          group term; ``lr_nonuniform_chi2``, ``lr_nonuniform_p``,
          ``lr_nonuniform_p_adjusted``: LR test of the score x group interaction.
        - ``lr_effect_size``: Nagelkerke R^2 difference (full minus score-only model);
          ``lr_effect_class``: Jodoin & Gierl (2001) A/B/C.
        - ``n_strata``: score strata with both groups present; ``purified``: whether the
          matching score was purified; ``method``.
        - ``suppressed_reason``: why the numbers of the row are empty, else empty.

    The frame's ``attrs`` hold the settings and the package version (provenance).
    """
    purify_classes = _check_dif_settings(classify_on, alpha, min_cell_size, purify_classes)
    prep = _prepare(responses, learner, item, correct)
    frames = []
    for attr, ref, foc, group in group_comparisons(learners, learner, attributes, reference, focal):
        frames.append(_comparison_rows(prep, attr, ref, foc, group, item=item, min_cell_size=min_cell_size,
                                       purify=purify, alpha=alpha, logistic=logistic, purify_classes=purify_classes,
                                       classify_on=classify_on, ci_level=ci_level))
    out = _dif_table(frames, item=item, classify_on=classify_on, alpha=alpha, logistic=logistic, purify=purify)
    out.attrs.update(_dif_provenance(min_cell_size, alpha, classify_on, purify, purify_classes))
    return out


def _dif_provenance(min_cell_size: int, alpha: float, classify_on: str, purify: bool,
                    purify_classes: tuple[str, ...]) -> dict:
    """The ``attrs`` of :func:`mantel_haenszel_dif`'s table: method, settings and package version."""
    from research import __version__

    return dict(
        method="Mantel-Haenszel DIF (Holland & Thayer 1988), ETS classes (Zwick 2012), logistic-regression DIF "
        "(Swaminathan & Rogers 1990), Benjamini-Hochberg",
        min_cell_size=int(min_cell_size), alpha=alpha, classify_on=classify_on, purify=purify,
        purify_classes=list(purify_classes), version=__version__,
    )


dif = mantel_haenszel_dif


def dif_success_curves(
    responses: pd.DataFrame,
    learners: pd.DataFrame,
    *,
    items: list[str] | None = None,
    attribute: str,
    groups: list[str] | None = None,
    learner: str = "learner_id",
    item: str = "item_id",
    correct: str = "correct",
    n_bands: int = 5,
    min_cell_size: int = 10,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Share correct on each item by group within bands of the matching score.

    The picture behind a DIF flag: at equal total score, does one group succeed less
    often? Learners are banded on their prorated total score (quantile bands over the
    whole cohort); cells with fewer learners than ``min_cell_size`` are suppressed.

    Returns
    -------
    DataFrame
        ``item``, ``attribute``, ``group``, ``band`` (1 = lowest), ``score_low``,
        ``score_high`` (total-score range of the band), ``n``, ``estimate`` (share
        correct), ``ci_low``, ``ci_high`` (95% Wilson), ``method``, ``suppressed_reason``.
    """

    if int(n_bands) < 1:
        raise ConfigError(f"n_bands={n_bands!r} must be at least 1")
    prep = _prepare(responses, learner, item, correct)
    comparisons = group_comparisons(learners, learner, [attribute], None, None)
    if not comparisons:
        raise DataError(f"attribute {attribute!r} has no values in learners")
    group = comparisons[0][3]
    if groups is not None:
        bad = [g for g in groups if g not in set(group.unique())]
        if bad:
            raise ConfigError(f"groups {bad} are not values of {attribute!r}; values: {sorted(group.unique())}")
    if items is not None:
        unknown = sorted(set(map(str, items)) - set(prep.items))
        if unknown:
            raise ConfigError(f"items {unknown[:5]} are not in responses; e.g. valid: {list(prep.items[:5])}")
    score = _matching_scores(prep, np.ones(len(prep.items), dtype=bool))
    learner_score = pd.Series(score).groupby(prep.li).first()
    bands = pd.qcut(learner_score.rank(method="first"), q=int(n_bands), labels=False) + 1
    band_of_learner = np.zeros(len(prep.learners), dtype=int)
    band_of_learner[learner_score.index.to_numpy()] = bands.to_numpy()
    df = pd.DataFrame(
        {
            item: prep.items[prep.ij],
            "group": group.reindex(prep.learners[prep.li]).to_numpy(dtype=object),
            "band": band_of_learner[prep.li],
            "score": score,
            "y": prep.y.astype(float),
        }
    ).dropna(subset=["group"])
    if items is not None:
        df = df[df[item].isin(list(map(str, items)))]
    if groups is not None:
        df = df[df["group"].isin(groups)]
    band_range = pd.DataFrame({"band": bands.to_numpy(), "s": learner_score.to_numpy()}).groupby("band")["s"].agg(
        score_low="min", score_high="max"
    )
    out = df.groupby([item, "group", "band"], observed=True).agg(n=("y", "size"), k=("y", "sum")).reset_index()
    out = out.join(band_range, on="band")
    out.insert(1, "attribute", attribute)
    out["group"] = out["group"].astype(str)
    lo, hi = wilson_interval(out["k"].to_numpy(), out["n"].to_numpy(), ci_level)
    out["estimate"] = out["k"] / out["n"]
    out["ci_low"], out["ci_high"] = lo, hi
    out["method"] = f"share correct by total-score band (Wilson {ci_level:.0%})"
    small = out["n"] < min_cell_size
    out["suppressed_reason"] = np.where(small, f"fewer learners than the minimum cell size {min_cell_size}", "")
    out.loc[small, ["n", "estimate", "ci_low", "ci_high"]] = np.nan
    return out.drop(columns="k")[[item, "attribute", "group", "band", "score_low", "score_high", "n", "estimate",
                                  "ci_low", "ci_high", "method", "suppressed_reason"]]


def flagged_success_curves(
    responses: pd.DataFrame,
    learners: pd.DataFrame,
    dif_table: pd.DataFrame,
    *,
    classes: tuple[str, ...] = ("C", "B"),
    max_items: int = 6,
    learner: str = "learner_id",
    item: str = "item_id",
    correct: str = "correct",
    n_bands: int = 5,
    min_cell_size: int = 10,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Success curves (:func:`dif_success_curves`) of the most clearly flagged items.

    Items of :func:`mantel_haenszel_dif`'s table in ``classes`` are ranked by class
    (C before B) and |delta|; for each of the first ``max_items`` item x attribute pairs
    the curves of the attribute's reference and focal groups are returned, stacked.

    Returns
    -------
    DataFrame
        The columns of :func:`dif_success_curves`; empty when nothing is flagged.
    """
    bad = [c for c in classes if c not in ("A", "B", "C")]
    if bad:
        raise ConfigError(f"classes {bad} are not ETS classes; use 'A', 'B' or 'C'")
    flagged = dif_table[dif_table["ets_class"].isin(list(classes))].copy()
    flagged["_rank"] = flagged["ets_class"].map({"C": 0, "B": 1, "A": 2})
    flagged["_abs"] = -flagged["mh_delta"].abs()
    flagged = flagged.sort_values(["_rank", "_abs"]).drop_duplicates([item, "attribute"]).head(int(max_items))
    frames = []
    for attr, rows in flagged.groupby("attribute", sort=False):
        groups = sorted(set(rows["reference_group"]) | set(rows["focal_group"]))
        frames.append(dif_success_curves(responses, learners, items=rows[item].tolist(), attribute=attr, groups=groups,
                                         learner=learner, item=item, correct=correct, n_bands=n_bands,
                                         min_cell_size=min_cell_size, ci_level=ci_level))
    if not frames:
        return pd.DataFrame(columns=[item, "attribute", "group", "band", "score_low", "score_high", "n", "estimate",
                                     "ci_low", "ci_high", "method", "suppressed_reason"])
    order = {(i, a): k for k, (i, a) in enumerate(zip(flagged[item], flagged["attribute"]))}
    out = pd.concat(frames, ignore_index=True)
    out["_o"] = [order.get((i, a), 0) for i, a in zip(out[item], out["attribute"])]
    return out.sort_values(["_o", "group", "band"], kind="stable").drop(columns="_o").reset_index(drop=True)
