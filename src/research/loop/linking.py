"""Put two cohorts on one scale: mean/mean IRT linking through anchor items.

Each cohort is calibrated on its own (Rasch by marginal ML, :class:`research.estimate.irt.Rasch`),
which fixes each cohort's mean ability at 0. If the later cohort is abler by ``shift``
logits, every unchanged item looks ``shift`` logits easier in its calibration. The
*anchor items* (items the change log does not touch) carry the link::

    shift = weighted mean over anchors of (b_before_j - b_after_j)

with inverse-variance weights ``1 / (se_before_j^2 + se_after_j^2)`` (mean/mean linking
for the Rasch model, Kolen & Brennan 2014, ch. 6; with one slope the mean/sigma and
Stocking-Lord methods reduce to a shift as well). The after cohort's difficulties on the
before cohort's scale are ``b_after_j + shift``; a revised item's change is
``b_after_j + shift - b_before_j``.

Why separate calibration and not a concurrent one: the Rasch code estimates one normal
ability population; a concurrent calibration of two cohorts with different means would
force them into one distribution. Separate calibrations plus a link need no change to
the estimator and show each anchor's displacement, which is how drift is found.

Standard error of the shift: the items of one calibration share its location error (where
the cohort's mean ability sits), so the sampling variance of the weighted anchor mean is
``w' S w`` with ``S`` the full covariance matrix of the item difficulties of each
calibration (:func:`item_covariance`; the diagonal alone when it is not given, which
understates it several-fold), summed over both cohorts; plus the linking error of
item-by-cohort interaction (Monseur & Berezner 2007): the variance of the displacements
beyond their sampling variance, ``tau^2 = max(0, var(d) - mean(se_b^2 + se_a^2))``, times
``sum w^2``. A revised item's linked change is a contrast with the anchor mean in each
calibration, so the shared location error cancels there (:meth:`Linking.contrast_se`).

Drift: an anchor whose displacement is far from the others has probably changed without
an entry in the change log. Its robust z is ``(d_j - median d) / sqrt(se_bj^2 + se_aj^2 +
tau_r^2)`` with the item-by-cohort variance ``tau_r^2 = max(0, (1.4826 MAD)^2 - median
sampling variance)`` (a robust-z screen in the spirit of Huynh & Meyer 2010, scaled by
each item's own sampling error so that extreme, imprecise items are not flagged for their
noise); beyond ``drift_z`` (default 2.7) the item is dropped from the link once
and reported. Too few anchors (fewer than ``min_anchors``) give a :class:`LinkingWarning`
and ``too_few_anchors = True`` in every output row: the shift then rests on a handful of
items and a revised item's change may be confused with a change in the cohort.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from research.errors import ConfigError, DataError

__all__ = [
    "ANCHOR_COLUMNS", "DRIFT_Z", "Linking", "LinkingWarning", "MIN_ANCHORS", "item_covariance", "link_difficulties",
]

#: Default least number of anchor items before a warning.
MIN_ANCHORS = 10
#: Default robust-z cut for anchor drift.
DRIFT_Z = 2.7

ANCHOR_COLUMNS = [
    "item_id", "difficulty_before", "se_before", "difficulty_after", "se_after", "difficulty_after_linked",
    "displacement", "robust_z", "drifted", "used", "n_before", "n_after",
]


class LinkingWarning(UserWarning):
    """The two cohorts share too few anchor items for a trustworthy common scale."""


@dataclass
class Linking:
    """The link between two calibrations.

    Attributes
    ----------
    shift, se, ci_low, ci_high : float
        Mean ability of the after cohort minus that of the before cohort (logits, the
        before cohort's scale) with its standard error and interval. NaN without anchors.
    n_anchors : int
        Anchor items used (after drift screening).
    n_candidates : int
        Items in both calibrations that the change log leaves untouched.
    too_few_anchors : bool
        ``n_anchors < min_anchors``.
    anchors : DataFrame
        One row per candidate anchor; columns :data:`ANCHOR_COLUMNS`.
    method : str
    settings : dict
    """

    shift: float
    se: float
    ci_low: float
    ci_high: float
    n_anchors: int
    n_candidates: int
    too_few_anchors: bool
    anchors: pd.DataFrame
    method: str = "rasch_mean_mean"
    settings: dict = field(default_factory=dict)
    weights: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    cov_before: pd.DataFrame | None = None
    cov_after: pd.DataFrame | None = None
    se_before: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    se_after: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    tau2: float = 0.0

    def contrast_se(self, item_ids, side: str) -> np.ndarray:
        """Standard error of ``difficulty - weighted anchor mean`` in one calibration
        (``side`` "before" or "after"); for the after side the linking error is added.

        The linked change of a revised item is the after contrast minus the before one,
        so its variance is the sum of the squares of both sides' values.
        """
        if side not in ("before", "after"):
            raise ConfigError(f"side must be 'before' or 'after', got {side!r}")
        ids = [str(i) for i in item_ids]
        cov = self.cov_before if side == "before" else self.cov_after
        se = self.se_before if side == "before" else self.se_after
        w = self.weights
        out = np.full(len(ids), np.nan)
        if w.empty:
            return out
        if cov is not None and set(w.index) <= set(cov.index):
            A = cov.loc[w.index, w.index].to_numpy(float)
            wv = w.to_numpy(float)
            base = float(wv @ A @ wv)
            for n_, i in enumerate(ids):
                if i in cov.index:
                    cross = float(cov.loc[i, w.index].to_numpy(float) @ wv)
                    out[n_] = float(cov.loc[i, i]) - 2 * cross + base
        else:
            base = float(np.sum(w.to_numpy(float) ** 2 * se.reindex(w.index).to_numpy(float) ** 2))
            for n_, i in enumerate(ids):
                if i in se.index:
                    own = float(w.get(i, 0.0))
                    out[n_] = float(se[i]) ** 2 * (1 - 2 * own) + base
        if side == "after":
            out = out + self.tau2 * float(np.sum(w.to_numpy(float) ** 2))
        return np.sqrt(np.clip(out, 0, None))

    def summary(self) -> pd.DataFrame:
        """One row: estimate (shift), se, ci_low, ci_high, n (anchors), n_candidates, n_drifted,
        too_few_anchors, method."""
        return pd.DataFrame(
            [
                {
                    "quantity": "ability_shift",
                    "estimate": self.shift,
                    "se": self.se,
                    "ci_low": self.ci_low,
                    "ci_high": self.ci_high,
                    "n": self.n_anchors,
                    "n_candidates": self.n_candidates,
                    "n_drifted": int(self.anchors["drifted"].sum()) if len(self.anchors) else 0,
                    "too_few_anchors": self.too_few_anchors,
                    "method": self.method,
                }
            ]
        )

    def to_before_scale(self, difficulty_after) -> np.ndarray:
        """After-cohort difficulties expressed on the before cohort's scale."""
        return np.asarray(difficulty_after, dtype=float) + self.shift


def item_covariance(model) -> pd.DataFrame | None:
    """The covariance matrix of a fitted Rasch model's item difficulties (item x item),
    or None when the model does not hold one (Bayesian fits, other models)."""
    method = getattr(model, "item_covariance", None)
    return method() if callable(method) else None


def _params(table: pd.DataFrame, name: str, item: str, difficulty: str, se: str, n: str | None) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"{name} must be a DataFrame of item parameters, got {type(table).__name__}")
    missing = [c for c in (item, difficulty, se) if c not in table.columns]
    if missing:
        raise DataError(
            f"{name} lacks column(s) {missing}; its columns are {list(table.columns)}. "
            "Pass Rasch(...).fit(...).item_params_ or name the columns with item=, difficulty=, se=."
        )
    out = pd.DataFrame(
        {
            "item_id": table[item].astype(str).to_numpy(),
            "b": pd.to_numeric(table[difficulty], errors="coerce").to_numpy(float),
            "se": pd.to_numeric(table[se], errors="coerce").to_numpy(float),
            "n": pd.to_numeric(table[n], errors="coerce").to_numpy(float) if n and n in table.columns else np.nan,
        }
    )
    dup = out["item_id"].duplicated()
    if dup.any():
        raise DataError(f"{name} has item(s) {sorted(out.loc[dup, 'item_id'].unique())[:5]} more than once; one row per item")
    return out


def _anchor_candidates(b: pd.DataFrame, a: pd.DataFrame, anchors, exclude) -> pd.DataFrame:
    """Items calibrated in both cohorts that may anchor the link: the ``anchors`` given, else all but ``exclude``."""
    both = b.merge(a, on="item_id", suffixes=("_b", "_a"))
    both = both[np.isfinite(both["b_b"]) & np.isfinite(both["b_a"])]
    if anchors is not None:
        wanted = pd.Index(pd.Series(list(anchors), dtype=str).unique())
        unknown = sorted(set(wanted) - set(both["item_id"]))
        if unknown:
            raise ConfigError(
                f"anchor item(s) {unknown[:10]} are not calibrated in both cohorts; items in both are e.g. "
                f"{sorted(both['item_id'])[:10]}"
            )
        cand = both[both["item_id"].isin(wanted)]
    else:
        cand = both[~both["item_id"].isin({str(x) for x in exclude})]
    return cand.sort_values("item_id").reset_index(drop=True)


def _drift(d: np.ndarray, var: np.ndarray, drift_z: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Robust z of each candidate's displacement and whether it drifts (needs 5 candidates)."""
    k0 = d.size
    drifted = np.zeros(k0, dtype=bool)
    robust = np.full(k0, np.nan)
    if drift_z is not None and k0 >= 5:
        med = np.median(d)
        mad = 1.4826 * np.median(np.abs(d - med))
        v = np.where(np.isfinite(var), var, np.nanmedian(var) if np.isfinite(var).any() else 0.0)
        tau2_r = max(0.0, mad**2 - float(np.median(v)))
        scale = np.sqrt(v + tau2_r)
        if np.all(scale > 0):
            robust = (d - med) / scale
            drifted = np.abs(robust) > float(drift_z)
    return robust, drifted


def _shift(cand: pd.DataFrame, d: np.ndarray, var: np.ndarray, used: np.ndarray, cov_before, cov_after):
    """The precision-weighted mean displacement of the anchors used, its standard error (with the
    calibrations' covariances when given, and the between-anchor variance tau^2), the weights and tau^2."""
    k = int(used.sum())
    weights = pd.Series(dtype=float)
    tau2 = 0.0
    se_b = pd.Series(cand["se_b"].to_numpy(float), index=cand["item_id"].astype(str))
    se_a = pd.Series(cand["se_a"].to_numpy(float), index=cand["item_id"].astype(str))
    if k == 0:
        shift = se_shift = np.nan
    else:
        w = 1.0 / np.where(np.isnan(var[used]), np.nanmean(var) if np.isfinite(var).any() else 1.0, var[used])
        w = w / w.sum()
        weights = pd.Series(w, index=cand["item_id"].astype(str).to_numpy()[used])
        shift = float(np.sum(w * d[used]))
        if k >= 2:
            tau2 = max(0.0, float(np.var(d[used], ddof=1) - np.nanmean(var[used])))
        sampling = 0.0
        for cov, se_side in ((cov_before, se_b), (cov_after, se_a)):
            if cov is not None and set(weights.index) <= set(cov.index.astype(str)):
                cov = cov.copy()
                cov.index, cov.columns = cov.index.astype(str), cov.columns.astype(str)
                A = cov.loc[weights.index, weights.index].to_numpy(float)
                sampling += float(w @ A @ w)
            else:
                sampling += float(np.sum(w**2 * se_side.reindex(weights.index).to_numpy(float) ** 2))
        se_shift = float(np.sqrt(sampling + tau2 * np.sum(w**2)))
    return shift, se_shift, weights, tau2


def _anchor_table(cand: pd.DataFrame, shift: float, d: np.ndarray, robust: np.ndarray, drifted: np.ndarray,
                  used: np.ndarray) -> pd.DataFrame:
    """The anchor candidates with their linked difficulty, displacement and drift (ANCHOR_COLUMNS)."""
    return pd.DataFrame(
        {
            "item_id": cand["item_id"].astype(str),
            "difficulty_before": cand["b_b"],
            "se_before": cand["se_b"],
            "difficulty_after": cand["b_a"],
            "se_after": cand["se_a"],
            "difficulty_after_linked": cand["b_a"] + (shift if np.isfinite(shift) else np.nan),
            "displacement": d,
            "robust_z": robust,
            "drifted": drifted,
            "used": used,
            "n_before": cand["n_b"],
            "n_after": cand["n_a"],
        }
    )[ANCHOR_COLUMNS]


def _link_settings(min_anchors, drift_z, ci_level, *, explicit_anchors: bool, covariance: bool) -> dict:
    """:func:`link_difficulties`' settings checked, as recorded in :attr:`Linking.settings`."""
    if int(min_anchors) < 1:
        raise ConfigError(f"min_anchors must be at least 1, got {min_anchors!r}")
    if drift_z is not None and not float(drift_z) > 0:
        raise ConfigError(f"drift_z must be a positive number or None, got {drift_z!r}")
    if not 0 < ci_level < 1:
        raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {ci_level!r}")
    return {"min_anchors": int(min_anchors), "drift_z": drift_z, "ci_level": ci_level,
            "explicit_anchors": explicit_anchors, "covariance": covariance}


def _displacements(cand: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's displacement ``b_before - b_after`` and its sampling variance (NaN unless finite and > 0)."""
    d = (cand["b_b"] - cand["b_a"]).to_numpy(float)
    var = (cand["se_b"] ** 2 + cand["se_a"] ** 2).to_numpy(float)
    return d, np.where(np.isfinite(var) & (var > 0), var, np.nan)


def _too_few_message(k: int, drifted: np.ndarray, min_anchors: int) -> str:
    """The :class:`LinkingWarning` text for ``k`` anchors where ``min_anchors`` are needed."""
    drift_note = f" ({int(drifted.sum())} more dropped for drift)" if drifted.any() else ""
    return (
        f"only {k} anchor item(s) link the two cohorts{drift_note}; at least {min_anchors} are needed for a "
        "trustworthy common scale. Changes in revised items may be confused with a change in the cohort's "
        "ability; treat the difficulty comparisons as tentative (too_few_anchors is set in the outputs)."
    )


def _interval(shift: float, se_shift: float, k: int, ci_level: float) -> tuple[float, float]:
    """The ``ci_level`` normal interval of the shift (NaN without anchors)."""
    z = stats.norm.ppf(0.5 + ci_level / 2)
    return (shift - z * se_shift if k else np.nan, shift + z * se_shift if k else np.nan)


def link_difficulties(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    exclude=(),
    anchors=None,
    min_anchors: int = MIN_ANCHORS,
    drift_z: float | None = DRIFT_Z,
    ci_level: float = 0.95,
    item: str = "item_id",
    difficulty: str = "difficulty",
    se: str = "difficulty_se",
    n: str | None = "n",
    cov_before: pd.DataFrame | None = None,
    cov_after: pd.DataFrame | None = None,
    warn: bool = True,
) -> Linking:
    """Link the after cohort's Rasch difficulties to the before cohort's scale.

    Parameters
    ----------
    before, after
        Item parameters of each cohort's own calibration (``Rasch.item_params_``: item_id,
        difficulty, difficulty_se, n).
    exclude
        Items that are not anchors (revised, on revised pages, practising revised KCs).
    anchors
        Use exactly these items as anchors (they must be in both tables); default all
        items in both except ``exclude``.
    min_anchors
        Fewer anchors than this give a :class:`LinkingWarning` and ``too_few_anchors``.
    drift_z
        Robust-z cut for drifting anchors (None: no screening). Screening needs at least
        5 candidates.
    cov_before, cov_after
        Covariance matrices of each calibration's difficulties (:func:`item_covariance`);
        without them the errors of one calibration's items count as independent, which
        understates the shift's standard error.

    Returns
    -------
    Linking
    """
    settings = _link_settings(min_anchors, drift_z, ci_level, explicit_anchors=anchors is not None,
                              covariance=cov_before is not None and cov_after is not None)
    b = _params(before, "before", item, difficulty, se, n)
    a = _params(after, "after", item, difficulty, se, n)
    cand = _anchor_candidates(b, a, anchors, exclude)
    d, var = _displacements(cand)
    robust, drifted = _drift(d, var, drift_z)
    used = ~drifted
    k = int(used.sum())
    shift, se_shift, weights, tau2 = _shift(cand, d, var, used, cov_before, cov_after)
    too_few = k < int(min_anchors)
    if too_few and warn:
        warnings.warn(_too_few_message(k, drifted, int(min_anchors)), LinkingWarning, stacklevel=2)
    ci_low, ci_high = _interval(shift, se_shift, k, ci_level)
    return Linking(
        shift=shift, se=se_shift, ci_low=ci_low, ci_high=ci_high, n_anchors=k, n_candidates=len(cand),
        too_few_anchors=bool(too_few), anchors=_anchor_table(cand, shift, d, robust, drifted, used), settings=settings,
        weights=weights, cov_before=_labelled(cov_before), cov_after=_labelled(cov_after),
        se_before=pd.Series(b["se"].to_numpy(float), index=b["item_id"]),
        se_after=pd.Series(a["se"].to_numpy(float), index=a["item_id"]), tau2=tau2,
    )


def _labelled(cov):
    if cov is None:
        return None
    cov = cov.copy()
    cov.index, cov.columns = cov.index.astype(str), cov.columns.astype(str)
    return cov
