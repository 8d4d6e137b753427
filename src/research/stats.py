"""Statistics helpers shared by the estimators, each defined once.

* :func:`require_columns` - the one missing-column check; it raises
  :class:`~research.errors.MissingColumnError` (a :class:`~research.errors.SchemaError`).
* :func:`wilson_interval` - Wilson (1927) score interval of a proportion (vectorised; faster than
  ``statsmodels.stats.proportion.proportion_confint(method="wilson")``, which the tests use as the oracle).
* :func:`benjamini_hochberg` - Benjamini-Hochberg (1995) adjusted p-values (``scipy.stats.false_discovery_control``
  on the non-missing values; equal to R's ``p.adjust(p, "BH")``).
* :func:`cronbach_alpha_feldt` - Cronbach's alpha of a complete learners x items matrix with Feldt's F interval.
* :func:`noncentral_t_interval` - interval of a noncentrality parameter given an observed t (Cumming & Finch 2001),
  behind the intervals of Cohen's d_z in gains and surveys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from research.errors import MissingColumnError

__all__ = ["benjamini_hochberg", "cronbach_alpha_feldt", "noncentral_t_interval", "require_columns", "wilson_interval"]


def require_columns(df: pd.DataFrame, columns: Mapping[str, str] | Sequence[str], table: str) -> None:
    """Raise :class:`MissingColumnError` naming each missing column of ``df``.

    ``columns`` maps an argument name to the column it names (``{"learner": "learner_id"}``; the message
    then says ``learner='learner_id'`` so the caller knows which keyword to pass), or is a plain list of
    column names.
    """
    if not isinstance(df, pd.DataFrame):
        raise MissingColumnError(f"{table} must be a pandas DataFrame, got {type(df).__name__}")
    pairs = columns.items() if isinstance(columns, Mapping) else [(None, c) for c in columns]
    missing = [f"{arg}={col!r}" if arg else repr(col) for arg, col in pairs if col not in df.columns]
    if missing:
        raise MissingColumnError(
            f"{table} lacks column(s) {', '.join(missing)}; its columns are {list(map(str, df.columns))}. "
            "Pass the right column names as keyword arguments."
        )


def wilson_interval(k, n, ci_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of the proportion ``k / n`` (vectorised; n = 0 gives NaN).

    The limits are exactly 0 at k = 0 and 1 at k = n, and clipped to [0, 1] otherwise.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z = stats.norm.ppf(0.5 + ci_level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    lo = np.where(k == 0, 0.0, np.clip(centre - half, 0, 1))
    hi = np.where(k == n, 1.0, np.clip(centre + half, 0, 1))
    bad = ~(n > 0)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def benjamini_hochberg(p: np.ndarray | pd.Series) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values; missing p-values stay missing.

    Equal to R's ``p.adjust(p, "BH")`` on the non-missing values.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def cronbach_alpha_feldt(x: np.ndarray, ci_level: float = 0.95) -> tuple[float, float, float]:
    """Cronbach's alpha of a complete learners x items matrix and Feldt's F interval (estimate, low, high).

    Feldt, Woodruff & Salih (1987), the interval ``psych::alpha`` prints as "Feldt". Alpha is NaN when
    the total scores do not vary.
    """
    x = np.asarray(x, dtype=float)
    n, k = x.shape
    total_var = x.sum(axis=1).var(ddof=1)
    alpha = k / (k - 1) * (1 - x.var(axis=0, ddof=1).sum() / total_var) if total_var > 0 else np.nan
    df1, df2 = n - 1, (n - 1) * (k - 1)
    tail = (1 - ci_level) / 2
    lo = 1 - (1 - alpha) * stats.f.ppf(1 - tail, df1, df2)
    hi = 1 - (1 - alpha) * stats.f.ppf(tail, df1, df2)
    return float(alpha), float(lo), float(hi)


def noncentral_t_interval(t_obs, df, ci_level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Interval for the noncentrality parameter given observed t (vectorised bisection).

    Finds ncp with P(T <= t_obs | ncp) = 1 - alpha/2 (lower end) and alpha/2 (upper end), alpha = 1 - ci_level;
    NaN where t is not finite or df < 1.
    """
    alpha = 1 - ci_level
    t_obs = np.asarray(t_obs, dtype=float)
    df = np.asarray(df, dtype=float)
    ok = np.isfinite(t_obs) & (df >= 1)
    t = np.where(ok, t_obs, 0.0)
    d = np.where(ok, df, 1.0)
    ends = []
    for target in (1 - alpha / 2, alpha / 2):
        lo = t - 10.0 - 2 * np.abs(t)
        hi = t + 10.0 + 2 * np.abs(t)
        for _ in range(80):
            mid = (lo + hi) / 2
            cdf = stats.nct.cdf(t, d, mid)
            # cdf decreases in ncp: too high a cdf means ncp must grow
            grow = cdf > target
            lo = np.where(grow, mid, lo)
            hi = np.where(grow, hi, mid)
        ends.append(np.where(ok, (lo + hi) / 2, np.nan))
    return ends[0], ends[1]
