"""The Additive Factors Model (AFM): do learners get better with practice on each KC?

``logit P(success_j) = theta_learner(j) + sum over the KCs k of step j of (beta_k + gamma_k * T_jk)``

where ``T_jk`` is the number of *prior* opportunities the learner had at KC k
(DataShop's ``Opportunity - 1``), so ``beta_k`` is the log-odds of a correct first
attempt at the first opportunity for an average learner and ``gamma_k`` the learning
rate per opportunity. As in DataShop and pyAFM, the learner intercepts are penalised
(an L2 penalty ``learner_penalty / 2 * sum(theta^2)``, i.e. a N(0, 1/learner_penalty)
prior, default N(0, 1)), the slopes are constrained to be non-negative by default, and
multi-KC steps add up the intercepts and slopes of all their KCs.

The fit works on a sparse design matrix and never loops over rows. Two optimisers:

``"newton"`` (default)
    a projected Newton method whose Hessian is solved by a Schur complement: the learner
    block of the Hessian is diagonal (every step has one learner), so each iteration costs
    one pass over the data plus a dense solve of size 2 x n_kcs. Converges in a handful of
    iterations; 800,000 rows fit in about a second.
``"lbfgs"``
    the quasi-Newton L-BFGS-B of SciPy on the same sparse design with the slope bounds
    (what pyAFM does); slower, kept as an independent check.

Both minimise the same penalised negative log-likelihood and agree to optimiser
tolerance (tested). Standard errors come from the inverse penalised Hessian at the
optimum (the KC block of the inverse is the inverse of the Schur complement).

Model fit statistics follow DataShop: the log-likelihood is that of the data at the
estimates (without the penalty), the number of parameters is n_learners + 2 n_kcs,
``AIC = 2p - 2LL``, ``BIC = p log(N) - 2LL``, and cross-validated RMSE of the predicted
success probability comes in three 3-fold flavours: learner-stratified (whole learners
held out; their intercept is the prior mean 0), item-stratified (whole steps held out)
and unstratified (random student steps).
"""

from __future__ import annotations

import time as _time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import norm as _norm

__all__ = [
    "AFM", "AFMConvergenceWarning", "add_predictions", "build_design", "compare_kc_models", "fit_kc_models",
    "logistic_nll", "predict_afm",
]

_norm_sf = _norm.sf

from research.errors import ConfigError, DataError, SchemaError

OPTIMIZERS = ("newton", "lbfgs")
CV_KINDS = ("learner", "item", "unstratified")



def _z(ci_level: float) -> float:
    """The two-sided normal quantile of a ``ci_level`` interval (1.96 for 0.95)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + ci_level / 2))

class AFMConvergenceWarning(UserWarning):
    """The AFM optimiser stopped before it converged."""


@dataclass
class _Design:
    y: np.ndarray  # (n,) 0/1 success per student step
    lid: np.ndarray  # (n,) learner code
    X: sp.csr_matrix  # (n, 2K): beta columns 0..K-1, gamma columns K..2K-1
    learners: pd.Index
    kcs: pd.Index
    step_rows: np.ndarray  # (n,) step_row of each observation
    item_codes: np.ndarray  # (n,) code of the step (item x step) for item-stratified CV
    long_obs: np.ndarray  # (m,) observation index of each long row
    long_kc: np.ndarray  # (m,) KC code of each long row


def logistic_nll(eta: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta))


def build_design(long: pd.DataFrame, *, learner: str, kc: str, opportunity: str, success: str,
                  step_row: str, item: str | None) -> _Design:
    obs_codes, obs_uniques = pd.factorize(long[step_row], sort=False)
    n = len(obs_uniques)
    lcodes_long, learners = pd.factorize(long[learner], sort=True)
    kcodes, kcs = pd.factorize(long[kc], sort=True)
    K = len(kcs)
    T = pd.to_numeric(long[opportunity], errors="coerce").to_numpy(dtype=float) - 1.0
    if np.isnan(T).any() or (T < 0).any():
        bad = long[opportunity][np.isnan(T) | (T < 0)].iloc[0]
        raise DataError(f"column {opportunity!r} must hold opportunity numbers 1, 2, ...; found {bad!r}.")
    yl = pd.to_numeric(long[success], errors="coerce").to_numpy(dtype=float)
    if not np.isin(yl, (0.0, 1.0)).all():
        bad = long[success][~np.isin(yl, (0.0, 1.0))].iloc[0]
        raise DataError(f"column {success!r} must hold 0 or 1 (first attempt correct); found {bad!r}.")
    y = np.zeros(n)
    y[obs_codes] = yl
    lid = np.zeros(n, dtype=np.int64)
    lid[obs_codes] = lcodes_long
    rows = np.concatenate([obs_codes, obs_codes])
    cols = np.concatenate([kcodes, kcodes + K])
    vals = np.concatenate([np.ones(len(T)), T])
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, 2 * K))
    X.sum_duplicates()
    if item is not None and item in long.columns:
        ic_long, _ = pd.factorize(long[item], sort=False)
        item_codes = np.zeros(n, dtype=np.int64)
        item_codes[obs_codes] = ic_long
    else:
        item_codes = np.arange(n)
    return _Design(y=y, lid=lid, X=X, learners=pd.Index(learners), kcs=pd.Index(kcs),
                   step_rows=np.asarray(obs_uniques), item_codes=item_codes,
                   long_obs=obs_codes, long_kc=kcodes)


class _Problem:
    """Penalised negative log-likelihood of AFM on a sparse design (the numeric kernel).

    Rows of the KC design ``X`` repeat a few *patterns* (a KC set with its opportunity
    counts): KC-side products go through the distinct patterns only, so an iteration costs
    a few passes of bincount over the rows instead of sparse matrix products.
    """

    DENSE_B_MAX = 30_000_000  # learner x KC-parameter cross block kept dense up to this size

    def __init__(self, y, lid, X, n_learners, lam, kc_penalty, lower):
        self.y, self.lid = y, lid
        self.nL = n_learners
        self.lam = lam
        self.kc_pen = kc_penalty
        self.lower = lower  # (2K,) lower bounds of KC parameters (-inf or 0)
        self.K2 = X.shape[1]
        X = X.tocsr()
        h = X @ np.random.default_rng(12345).standard_normal(self.K2) if self.K2 else np.zeros(X.shape[0])
        self.pat, first = _factorize_first(h)
        self.P = X[first].tocsr()  # (n_patterns, 2K)
        self.PT = self.P.T.tocsr()
        self.n_pat = self.P.shape[0]
        coo = self.P.tocoo()
        self._pr, self._pc, self._pv = coo.row, coo.col, coo.data
        self.dense_B = self.nL * self.K2 <= self.DENSE_B_MAX
        # structure of the learner x KC-parameter block: (learner, pattern) pairs, each
        # expanded to its pattern's nonzeros
        self._lp_codes, first = _factorize_first(self.lid.astype(np.int64) * self.n_pat + self.pat)
        self._n_lp = len(first)
        p_of = self.pat[first]
        counts = np.diff(self.P.indptr)[p_of]
        rep = np.repeat(np.arange(len(first)), counts)
        nz = self.P.indptr[p_of][rep] + (np.arange(len(rep)) - np.repeat(np.cumsum(counts) - counts, counts))
        self._b_rep = rep
        self._b_val = self.P.data[nz]
        self._b_rows = self.lid[first][rep]
        self._b_cols = self.P.indices[nz]
        if self.dense_B:
            self._b_index = self._b_rows.astype(np.int64) * self.K2 + self._b_cols

    def eta(self, theta, kcp):
        return theta[self.lid] + (self.P @ kcp)[self.pat]

    def value(self, theta, kcp, eta=None):
        eta = self.eta(theta, kcp) if eta is None else eta
        return (logistic_nll(eta, self.y) + 0.5 * self.lam * float(theta @ theta)
                + 0.5 * self.kc_pen * float(kcp @ kcp))

    def grad(self, theta, kcp, eta):
        r = self.y - expit(eta)
        g_t = -np.bincount(self.lid, weights=r, minlength=self.nL) + self.lam * theta
        g_k = -(self.PT @ np.bincount(self.pat, weights=r, minlength=self.n_pat)) + self.kc_pen * kcp
        return g_t, g_k

    def hessian_blocks(self, eta):
        p = expit(eta)
        w = p * (1 - p)
        D = np.bincount(self.lid, weights=w, minlength=self.nL) + self.lam
        wp = np.bincount(self.pat, weights=w, minlength=self.n_pat)
        C = (self.PT @ sp.diags(wp) @ self.P).toarray()
        C[np.diag_indices_from(C)] += self.kc_pen
        # B[l, c] = sum over the learner's rows of w * X[row, c]: w summed by (learner, pattern) first
        wlp = np.bincount(self._lp_codes, weights=w, minlength=self._n_lp)
        vals = wlp[self._b_rep] * self._b_val
        if self.dense_B:
            B = np.bincount(self._b_index, weights=vals, minlength=self.nL * self.K2).reshape(self.nL, self.K2)
        else:
            B = sp.csr_matrix((vals, (self._b_rows, self._b_cols)), shape=(self.nL, self.K2))
        return D, B, C

    @staticmethod
    def schur(D, B, C):
        if sp.issparse(B):
            Bd = sp.diags(1.0 / D) @ B
            S = C - (B.T @ Bd).toarray()
        else:
            Bd = B / D[:, None]
            # einsum, not BLAS: on a loaded machine a threaded GEMM of this thin shape can be
            # 20x slower than a plain loop
            S = C - np.einsum("li,lj->ij", B, Bd)
        return S, Bd


def _matvec(B, x):
    return B @ x if sp.issparse(B) else np.einsum("li,i->l", B, x)


def _rmatvec(B, x):
    return B.T @ x if sp.issparse(B) else np.einsum("li,l->i", B, x)


def _factorize_first(values):
    """Codes 0..m-1 of ``values`` in order of first appearance, and the first index of each."""
    codes, uniques = pd.factorize(values, sort=False)
    first = np.full(len(uniques), len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes)))
    return codes.astype(np.int64), first


def _solve_psd(S, rhs):
    """Solve S x = rhs for a symmetric positive (semi-)definite S; jitter if singular."""
    if S.size == 0:
        return np.zeros_like(rhs)
    scale = max(float(np.max(np.abs(np.diag(S)))), 1e-12)
    for jitter in (0.0, 1e-10, 1e-8, 1e-6):
        try:
            c = sla.cho_factor(S + jitter * scale * np.eye(len(S)), check_finite=False)
            return sla.cho_solve(c, rhs, check_finite=False)
        except np.linalg.LinAlgError:
            continue
    return np.linalg.lstsq(S, rhs, rcond=None)[0]


def _covariance(S: np.ndarray) -> np.ndarray:
    """The inverse of an information matrix (a Schur complement); its pseudo-inverse where the inverse
    fails or has a non-finite entry or a negative variance."""
    try:
        cov = np.linalg.inv(S)
        if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(S)
    return cov


def _fit_newton(prob: _Problem, theta, kcp, *, tol, max_iter):
    f = prob.value(theta, kcp)
    lower = prob.lower
    bounded = np.isfinite(lower)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        eta = prob.eta(theta, kcp)
        g_t, g_k = prob.grad(theta, kcp, eta)
        D, B, C = prob.hessian_blocks(eta)
        S, Bd = prob.schur(D, B, C)
        active = bounded & (kcp <= lower + 1e-12) & (g_k > 0)
        free = ~active
        rhs = -g_k + _rmatvec(Bd, g_t)
        d_k = np.zeros_like(kcp)
        d_k[free] = _solve_psd(S[np.ix_(free, free)], rhs[free])
        d_t = -(g_t + _matvec(B, d_k)) / D
        # projected gradient norm for the stopping rule
        pg_k = np.where(active, 0.0, g_k)
        decrement = -(g_t @ d_t + pg_k @ d_k)
        if decrement < 0:  # not a descent direction (numerical trouble): steepest descent
            d_t, d_k = -g_t / D, -pg_k / np.maximum(np.diag(C), 1e-12)
            decrement = -(g_t @ d_t + pg_k @ d_k)
        if decrement / 2 <= tol * max(1.0, abs(f)) and np.max(np.abs(pg_k), initial=0) < 1e-4 \
                and np.max(np.abs(g_t), initial=0) < 1e-4:
            converged = True
            break
        step = 1.0
        while True:
            t_new = theta + step * d_t
            k_new = np.maximum(kcp + step * d_k, lower)
            f_new = prob.value(t_new, k_new)
            gain = g_t @ (t_new - theta) + g_k @ (k_new - kcp)
            if f_new <= f + 1e-4 * min(gain, 0.0) or step < 1e-10:
                break
            step *= 0.5
        if step < 1e-10 and f_new > f:
            break
        theta, kcp = t_new, k_new
        if abs(f - f_new) <= 1e-14 * max(1.0, abs(f)):
            f = f_new
            converged = True
            break
        f = f_new
    return theta, kcp, converged, it


def _fit_lbfgs(prob: _Problem, theta, kcp, *, tol, max_iter):
    nL = prob.nL

    def fun(x):
        th, kp = x[:nL], x[nL:]
        eta = prob.eta(th, kp)
        g_t, g_k = prob.grad(th, kp, eta)
        return prob.value(th, kp, eta), np.concatenate([g_t, g_k])

    bounds = [(None, None)] * nL + [(None if not np.isfinite(lo) else lo, None) for lo in prob.lower]
    res = minimize(fun, np.concatenate([theta, kcp]), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": max_iter * 50, "maxfun": max_iter * 100, "ftol": tol * 1e-2,
                            "gtol": 1e-6, "maxcor": 20})
    return res.x[:nL], res.x[nL:], bool(res.success), int(res.nit)


class AFM:
    """Additive Factors Model fitted by penalised maximum likelihood.

    Parameters
    ----------
    learner_penalty : float
        L2 penalty on the learner intercepts (the precision of their N(0, 1/penalty)
        prior). DataShop's PMLE is close to 1 (checked on ds96). 0 gives plain maximum
        likelihood (then one learner intercept is not identified apart from the KC
        intercepts; a tiny ridge keeps the solve stable).
    nonnegative_slopes : bool
        Constrain every slope gamma >= ``slope_lower_bound`` (0 by default), as DataShop
        and pyAFM do. False leaves the slopes free.
    slope_lower_bound : float or None
        The bound of the constrained slopes (default 0.0); None leaves them free, like
        ``nonnegative_slopes=False``.
    free_slopes : bool
        Also report the free (unbounded) slope of every KC beside the bounded one (a refit
        without the bound, started at the bounded optimum): ``slope_free`` with its
        standard error, interval and the two-sided test of zero. Its standard error adds
        to the sampling error the part of the items' own difficulties that opportunity
        cannot be told apart from (``slope_order_se``): when every learner meets a KC's
        items in the same fixed order, an easier item late in the sequence looks like
        learning and a harder one like forgetting, however many learners there are. A
        clearly negative free slope (interval below 0) is itself a finding: the KC label
        probably mixes skills of different difficulty.
    kc_penalty : float
        Optional L2 penalty on KC intercepts and slopes (0 = none, as in DataShop).
    optimizer : {"newton", "lbfgs"}
    tol : float
        Relative tolerance on the objective (Newton decrement).
    max_iter : int
    cv_folds : int
        Folds of the cross-validation (DataShop uses 3).
    seed : int
        Seed of the cross-validation fold assignment.
    ci_level : float
        Level of the confidence intervals of the KC parameters (default 0.95).

    Attributes (after ``fit``)
    --------------------------
    kcs_ : DataFrame — see :meth:`summary`.
    learners_ : DataFrame — learner_id, intercept, intercept_se, n_obs.
    stats_ : dict — log-likelihood, parameters, AIC, BIC, CV RMSEs, convergence.
    cv_ : DataFrame or None — RMSE per CV kind.
    provenance_ : dict — package version, settings, seed, time of fit, optimiser iterations.
    """

    def __init__(self, *, learner_penalty: float = 1.0, nonnegative_slopes: bool = True, kc_penalty: float = 0.0,
                 optimizer: str = "newton", tol: float = 1e-10, max_iter: int = 100, cv_folds: int = 3,
                 seed: int = 0, slope_lower_bound: float | None = 0.0, free_slopes: bool = True,
                 ci_level: float = 0.95):
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={optimizer!r} is not known; valid optimizers are {list(OPTIMIZERS)}.")
        if not np.isfinite(learner_penalty) or learner_penalty < 0:
            raise ConfigError(f"learner_penalty must be a finite number >= 0, got {learner_penalty!r}.")
        if not np.isfinite(kc_penalty) or kc_penalty < 0:
            raise ConfigError(f"kc_penalty must be a finite number >= 0, got {kc_penalty!r}.")
        if int(cv_folds) < 2:
            raise ConfigError(f"cv_folds must be at least 2, got {cv_folds!r}.")
        if not 0 < float(ci_level) < 1:
            raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {ci_level!r}.")
        if int(max_iter) < 1:
            raise ConfigError(f"max_iter must be at least 1, got {max_iter!r}.")
        if slope_lower_bound is not None and not np.isfinite(slope_lower_bound):
            raise ConfigError(f"slope_lower_bound must be a finite number or None (free slopes), got {slope_lower_bound!r}.")
        self.learner_penalty = float(learner_penalty)
        self.nonnegative_slopes = bool(nonnegative_slopes) and slope_lower_bound is not None
        self.slope_lower_bound = float(slope_lower_bound) if self.nonnegative_slopes else None
        self.free_slopes = bool(free_slopes)
        self.kc_penalty = float(kc_penalty)
        self.optimizer = optimizer
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.cv_folds = int(cv_folds)
        self.seed = int(seed)
        self.ci_level = float(ci_level)

    # ------------------------------------------------------------------ fitting
    def _problem(self, y, lid, X, nL, *, bounded: bool = True):
        K2 = X.shape[1]
        lower = np.full(K2, -np.inf)
        if self.nonnegative_slopes and bounded:
            lower[K2 // 2:] = self.slope_lower_bound
        lam = self.learner_penalty if self.learner_penalty > 0 else 1e-8
        return _Problem(y, lid, X, nL, lam, self.kc_penalty, lower)

    def _optimise(self, prob, theta0=None, kcp0=None):
        theta = np.zeros(prob.nL) if theta0 is None else theta0.copy()
        kcp = np.zeros(prob.K2) if kcp0 is None else kcp0.copy()
        if kcp0 is None and prob.K2:
            # start the intercepts at the log-odds of each KC's success rate
            K = prob.K2 // 2
            Pb = prob.PT[:K]
            n_k = Pb @ np.bincount(prob.pat, minlength=prob.n_pat).astype(float)
            s_k = Pb @ np.bincount(prob.pat, weights=prob.y, minlength=prob.n_pat)
            rate = (s_k + 0.5) / (n_k + 1.0)
            kcs_per_row = max(float(n_k.sum()) / max(len(prob.y), 1), 1.0)
            kcp[:K] = np.log(rate / (1 - rate)) / kcs_per_row
        kcp = np.maximum(kcp, prob.lower)
        fit = _fit_newton if self.optimizer == "newton" else _fit_lbfgs
        return fit(prob, theta, kcp, tol=self.tol, max_iter=self.max_iter)

    def fit(self, steps: pd.DataFrame, *, kc_model: str | None = None, learner: str = "learner_id", kc: str = "kc",
            opportunity: str = "opportunity", success: str = "success", step_row: str = "step_row",
            item: str | None = "item_id", model_column: str = "kc_model", cv: bool = False) -> "AFM":
        """Fit AFM to a student-step KC frame (one row per student step x KC).

        ``kc_model`` picks one KC model when the frame has a ``kc_model`` column with
        several (required then). ``cv=True`` also runs the three cross-validations.
        """
        t0 = _time.perf_counter()
        long = self._select(steps, kc_model=kc_model, columns=dict(learner=learner, kc=kc, opportunity=opportunity,
                                                                     success=success, step_row=step_row),
                            model_column=model_column)
        self.columns_ = dict(learner=learner, kc=kc, opportunity=opportunity, success=success, step_row=step_row,
                             item=item)
        d = build_design(long, learner=learner, kc=kc, opportunity=opportunity, success=success,
                          step_row=step_row, item=item)
        self.design_ = d
        prob = self._problem(d.y, d.lid, d.X, len(d.learners))
        theta, kcp, converged, n_iter = self._optimise(prob)
        if not converged:
            warnings.warn(
                f"AFM ({self.optimizer}) did not converge in {n_iter} iterations for KC model {self.kc_model_!r}; "
                "raise max_iter or try optimizer='newton'.", AFMConvergenceWarning, stacklevel=2)
        self.theta_, self.kc_params_ = theta, kcp
        self.converged_, self.n_iter_ = converged, n_iter
        self._finish_fit(prob, d, long)
        self._add_free_slopes(prob, d)
        self.fit_seconds_ = _time.perf_counter() - t0
        self.cv_ = None
        if cv:
            self.cross_validate()
        from research.provenance import provenance

        self.provenance_ = provenance(
            "AFM", seed=self.seed,
            settings={"learner_penalty": self.learner_penalty, "nonnegative_slopes": self.nonnegative_slopes,
                      "slope_lower_bound": self.slope_lower_bound, "free_slopes": self.free_slopes,
                      "kc_penalty": self.kc_penalty, "optimizer": self.optimizer, "tol": self.tol,
                      "max_iter": self.max_iter, "cv_folds": self.cv_folds, "ci_level": self.ci_level},
            kc_model=self.kc_model_, n_iter=n_iter, converged=converged, fit_seconds=self.fit_seconds_,
        )
        return self

    def _select(self, steps, *, kc_model, columns, model_column):
        if not isinstance(steps, pd.DataFrame):
            raise DataError(f"steps must be a pandas DataFrame, got {type(steps).__name__}.")
        missing = [f"{role}={col!r}" for role, col in columns.items() if col not in steps.columns]
        if missing:
            raise SchemaError(
                f"the student-step frame lacks column(s) {', '.join(missing)}; its columns are {list(steps.columns)}. "
                "Build it with research.estimate.opportunities.student_steps() or pass the column names.")
        long = steps
        if model_column in steps.columns:
            models = pd.unique(steps[model_column].dropna())
            if kc_model is None:
                if len(models) != 1:
                    raise ConfigError(f"the frame holds {len(models)} KC models {sorted(map(str, models))}; "
                                      "pick one with kc_model=... (or use fit_kc_models for all).")
                kc_model = str(models[0])
            elif kc_model not in set(map(str, models)):
                raise ConfigError(f"kc_model={kc_model!r} is not in the data; valid KC models are "
                                  f"{sorted(map(str, models))}.")
            long = steps[steps[model_column] == kc_model]
        self.kc_model_ = kc_model if kc_model is not None else "KC model"
        long = long[long[columns["kc"]].notna()]
        if long.empty:
            raise DataError(f"no student steps with a KC for KC model {self.kc_model_!r}.")
        return long

    def _finish_fit(self, prob, d, long):
        K = len(d.kcs)
        eta = prob.eta(self.theta_, self.kc_params_)
        ll = -logistic_nll(eta, d.y)
        D, B, C = prob.hessian_blocks(eta)
        S, Bd = prob.schur(D, B, C)
        cov_k = _covariance(S)
        self.cov_kc_ = cov_k
        se_k = np.sqrt(np.clip(np.diag(cov_k), 0, None))
        # learner intercept variances: 1/D + (B D^-1)_i S^-1 (B D^-1)_i^T
        BdS = Bd @ cov_k if sp.issparse(Bd) else np.einsum("li,ij->lj", Bd, cov_k)
        prod = Bd.multiply(BdS) if sp.issparse(Bd) else Bd * BdS
        var_t = 1.0 / D + np.asarray(prod.sum(axis=1)).ravel()
        beta, gamma = self.kc_params_[:K], self.kc_params_[K:]
        se_b, se_g = se_k[:K], se_k[K:]
        z = _z(self.ci_level)
        # counts per KC
        n_obs = np.bincount(d.long_kc, minlength=K)
        kc64 = d.long_kc.astype(np.int64)
        pairs_l = pd.unique(kc64 * (len(d.learners) + 1) + d.lid[d.long_obs])
        n_learners = np.bincount(pairs_l // (len(d.learners) + 1), minlength=K)
        n_item_codes = int(d.item_codes.max()) + 2 if len(d.item_codes) else 1
        pairs_i = pd.unique(kc64 * n_item_codes + d.item_codes[d.long_obs])
        n_items = np.bincount(pairs_i // n_item_codes, minlength=K)
        slope_lo = gamma - z * se_g
        if self.nonnegative_slopes:
            slope_lo = np.maximum(slope_lo, self.slope_lower_bound)
        self.kcs_ = pd.DataFrame({
            "kc_model": pd.array([self.kc_model_] * K, dtype="string"),
            "kc": pd.array(d.kcs.astype(str), dtype="string"),
            "intercept": beta,
            "intercept_se": se_b,
            "intercept_ci_low": beta - z * se_b,
            "intercept_ci_high": beta + z * se_b,
            "intercept_prob": expit(beta),
            "slope": gamma,
            "slope_se": se_g,
            "slope_ci_low": slope_lo,
            "slope_ci_high": gamma + z * se_g,
            "slope_at_bound": (gamma <= (self.slope_lower_bound or 0.0) + 1e-9) & self.nonnegative_slopes,
            "n_obs": n_obs.astype("int64"),
            "n_learners": n_learners.astype("int64"),
            "n_steps": n_items.astype("int64"),
            "method": "afm_pmle",
        })
        self.learners_ = pd.DataFrame({
            "learner_id": pd.array(d.learners.astype(str), dtype="string"),
            "intercept": self.theta_,
            "intercept_se": np.sqrt(np.clip(var_t, 0, None)),
            "n_obs": np.bincount(d.lid, minlength=len(d.learners)).astype("int64"),
        })
        n = len(d.y)
        p = len(d.learners) + 2 * K
        self.stats_ = {
            "kc_model": self.kc_model_,
            "loglik": ll,
            "n_params": int(p),
            "n_obs": int(n),
            "n_learners": int(len(d.learners)),
            "n_kcs": int(K),
            "aic": 2 * p - 2 * ll,
            "bic": p * np.log(n) - 2 * ll,
            "rmse": float(np.sqrt(np.mean((d.y - expit(eta)) ** 2))),
            "converged": bool(self.converged_),
            "n_iter": int(self.n_iter_),
        }

    def _add_free_slopes(self, prob, d):
        """Refit without the slope bound and add the free slope, its test and its item-order error."""
        K = len(d.kcs)
        gamma, se_g = self.kc_params_[K:], self.kcs_["slope_se"].to_numpy(dtype=float)
        if self.free_slopes and self.nonnegative_slopes and K:
            free = self._problem(d.y, d.lid, d.X, len(d.learners), bounded=False)
            theta_f, kcp_f, _, _ = self._optimise(free, self.theta_, self.kc_params_)
            eta = free.eta(theta_f, kcp_f)
            D, B, C = free.hessian_blocks(eta)
            S, _ = free.schur(D, B, C)
            cov = _covariance(S)
            g_free = kcp_f[K:]
            se_free = np.sqrt(np.clip(np.diag(cov)[K:], 0, None))
        else:
            g_free, se_free = gamma.copy(), se_g.copy()
            eta = prob.eta(self.theta_, self.kc_params_)
        order_se = self._item_order_se(d, eta)
        total = np.sqrt(se_free**2 + order_se**2)
        z = _z(self.ci_level)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = 2 * _norm_sf(np.abs(g_free) / total)
        k = self.kcs_
        at = list(k.columns).index("slope_at_bound") + 1
        for offset, (name, values) in enumerate((
            ("slope_free", g_free), ("slope_free_se", total), ("slope_free_ci_low", g_free - z * total),
            ("slope_free_ci_high", g_free + z * total), ("slope_free_p", np.where(total > 0, p, np.nan)),
            ("slope_order_se", order_se),
        )):
            k.insert(at + offset, name, values)

    def _item_order_se(self, d, eta) -> np.ndarray:
        """Standard error a KC's slope gets from the difficulties of its items.

        The AFM slope of a KC is the trend of success over opportunities; items differ in
        difficulty beyond their KC (a spread ``sigma`` in logits, estimated from the items'
        residual log-odds), and when the items of a KC come at different mean opportunities
        (a fixed order) that spread moves the trend: with ``n_j`` observations of item j at
        mean opportunity ``T_j``, the item part of the slope's variance is
        ``sigma^2 sum_j n_j^2 (T_j - T)^2 / S^2`` (``S`` = sum of squared deviations of the
        opportunities), ``sigma^2 / sum_j (T_j - T)^2`` for a fixed order and about 0 when
        the order is random. 0 without an item column.
        """
        K = len(d.kcs)
        if K == 0 or self.columns_.get("item") is None or len(np.unique(d.item_codes)) == len(d.item_codes):
            return np.zeros(K)
        p = expit(eta)
        w = p * (1 - p)
        items = d.item_codes
        n_items = int(items.max()) + 1
        W = np.bincount(items, weights=w, minlength=n_items)
        R = np.bincount(items, weights=d.y - p, minlength=n_items)
        ok = W > 1e-9
        dev = R[ok] / W[ok]
        sigma2 = max(0.0, float(np.mean(dev**2 - 1.0 / W[ok]))) if ok.any() else 0.0
        if sigma2 == 0.0:
            return np.zeros(K)
        X = d.X.tocsr()
        T = np.asarray(X[d.long_obs, K + d.long_kc]).ravel()
        kc = d.long_kc.astype(np.int64)
        it = items[d.long_obs].astype(np.int64)
        n_k = np.bincount(kc, minlength=K).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            t_bar = np.bincount(kc, weights=T, minlength=K) / n_k
            S = np.bincount(kc, weights=(T - t_bar[kc]) ** 2, minlength=K)
            codes, first = np.unique(kc * n_items + it, return_inverse=True)
            n_kj = np.bincount(first).astype(float)
            t_kj = np.bincount(first, weights=T) / n_kj
            kc_of = codes // n_items
            num = np.bincount(kc_of, weights=n_kj**2 * (t_kj - t_bar[kc_of]) ** 2, minlength=K)
            var = sigma2 * num / S**2
        return np.sqrt(np.where(np.isfinite(var), var, 0.0))

    # --------------------------------------------------------------- prediction
    def _check_fitted(self):
        if not hasattr(self, "kcs_"):
            raise ConfigError("this AFM is not fitted yet; call fit(steps) first.")

    def predict(self, steps: pd.DataFrame | None = None) -> pd.DataFrame:
        """Predicted probability of a correct first attempt per student step.

        With ``steps=None`` the training steps. New learners get the prior mean intercept
        0; KCs the model has not seen contribute nothing (and are counted in
        ``n_unknown_kcs``).

        Returns
        -------
        DataFrame: step_row, p_correct, p_error, n_unknown_kcs.
        """
        self._check_fitted()
        c = self.columns_
        if steps is None:
            d = self.design_
            eta = self.theta_[d.lid] + d.X @ self.kc_params_
            return pd.DataFrame({"step_row": d.step_rows, "p_correct": expit(eta), "p_error": 1 - expit(eta),
                                 "n_unknown_kcs": 0})
        return predict_afm(steps, self.kcs_, self.learners_, kc_model=self.kc_model_, learner=c["learner"],
                           kc=c["kc"], opportunity=c["opportunity"], step_row=c["step_row"])

    # ---------------------------------------------------------- cross-validation
    def cross_validate(self, kinds=CV_KINDS) -> pd.DataFrame:
        """3-fold (``cv_folds``) cross-validated RMSE of P(correct), as DataShop reports it.

        Returns
        -------
        DataFrame: kc_model, cv_kind (learner, item, unstratified), rmse, n_obs, folds.
        Also stored in ``cv_`` and in ``stats_`` as ``cv_rmse_<kind>``.
        """
        self._check_fitted()
        unknown = [k for k in kinds if k not in CV_KINDS]
        if unknown:
            raise ConfigError(f"unknown CV kind(s) {unknown}; valid kinds are {list(CV_KINDS)}.")
        d = self.design_
        rng = np.random.default_rng(self.seed)
        n, nL, F = len(d.y), len(d.learners), self.cv_folds
        rows = []
        for kind in kinds:
            if kind == "learner":
                fold = rng.permutation(np.arange(nL) % F)[d.lid]
            elif kind == "item":
                n_items = int(d.item_codes.max()) + 1
                fold = rng.permutation(np.arange(n_items) % F)[d.item_codes]
            else:
                fold = rng.permutation(np.arange(n) % F)
            sq = np.zeros(n)
            for f in range(F):
                test = fold == f
                train = ~test
                if not train.any() or not test.any():
                    continue
                lcodes, lid_tr = np.unique(d.lid[train], return_inverse=True)
                prob = self._problem(d.y[train], lid_tr, d.X[train], len(lcodes))
                theta, kcp, _, _ = self._optimise(prob, self.theta_[lcodes], self.kc_params_)
                th_all = np.zeros(nL)
                th_all[lcodes] = theta
                # KCs absent from the training fold contribute nothing
                seen = np.asarray((d.X[train] != 0).sum(axis=0)).ravel() > 0
                kcp = np.where(seen, kcp, 0.0)
                eta = th_all[d.lid[test]] + d.X[test] @ kcp
                sq[test] = (d.y[test] - expit(eta)) ** 2
            rmse = float(np.sqrt(sq.mean()))
            rows.append({"kc_model": self.kc_model_, "cv_kind": kind, "rmse": rmse, "n_obs": n, "folds": F})
            self.stats_[f"cv_rmse_{kind}"] = rmse
        self.cv_ = pd.DataFrame(rows)
        return self.cv_

    # ----------------------------------------------------------------- summaries
    def summary(self) -> pd.DataFrame:
        """One row per KC.

        Returns
        -------
        DataFrame with columns

        kc_model, kc : string
        intercept, intercept_se, intercept_ci_low, intercept_ci_high : float
            beta, the log-odds of a correct first attempt at the first opportunity for a
            learner with intercept 0, with its standard error and 95% Wald interval.
        intercept_prob : float
            The intercept on the probability scale, logistic(beta).
        slope, slope_se, slope_ci_low, slope_ci_high : float
            gamma, the log-odds gain per opportunity; the interval is cut at 0 when slopes
            are constrained non-negative.
        slope_at_bound : bool
            The constraint gamma >= slope_lower_bound is active (the data would prefer a
            lower slope).
        slope_free, slope_free_se, slope_free_ci_low, slope_free_ci_high, slope_free_p : float
            The free (unbounded) slope with its standard error (sampling plus item order),
            95% interval and the two-sided p value of the test that it is 0; equal to
            slope when the slopes are not bounded (see ``free_slopes``).
        slope_order_se : float
            The part of the free slope's standard error due to item difficulties that go
            with the opportunity number (fixed item order).
        n_obs : int
            Student steps with the KC. n_learners : int. n_steps : int (distinct steps).
        method : "afm_pmle".
        """
        self._check_fitted()
        return self.kcs_.copy()

    def coefficients(self) -> pd.DataFrame:
        """The KC parameters in long tidy form: kc_model, kc, parameter (intercept|slope),
        estimate, se, ci_low, ci_high, n, method."""
        self._check_fitted()
        k = self.kcs_
        parts = []
        for name in ("intercept", "slope"):
            parts.append(pd.DataFrame({"kc_model": k["kc_model"], "kc": k["kc"], "parameter": name,
                                       "estimate": k[name], "se": k[f"{name}_se"], "ci_low": k[f"{name}_ci_low"],
                                       "ci_high": k[f"{name}_ci_high"], "n": k["n_obs"], "method": k["method"]}))
        return pd.concat(parts, ignore_index=True)

    def model_stats(self) -> pd.DataFrame:
        """One row: kc_model, loglik, n_params, n_obs, n_learners, n_kcs, aic, bic, rmse
        (training), cv_rmse_learner, cv_rmse_item, cv_rmse_unstratified (NaN until
        cross-validated), converged, n_iter, method."""
        self._check_fitted()
        s = dict(self.stats_)
        for kind in CV_KINDS:
            s.setdefault(f"cv_rmse_{kind}", np.nan)
        cols = ["kc_model", "loglik", "n_params", "n_obs", "n_learners", "n_kcs", "aic", "bic", "rmse",
                "cv_rmse_learner", "cv_rmse_item", "cv_rmse_unstratified", "converged", "n_iter"]
        out = pd.DataFrame([{c: s[c] for c in cols}])
        out["kc_model"] = out["kc_model"].astype("string")
        out["method"] = "afm_pmle"
        return out


def kc_models_in(steps: pd.DataFrame, model_column: str = "kc_model") -> list[str]:
    """The KC models present in a student-step KC frame, in order of appearance."""
    if model_column not in steps.columns:
        raise SchemaError(f"the frame has no {model_column!r} column; its columns are {list(steps.columns)}.")
    return [str(m) for m in pd.unique(steps[model_column].dropna())]


def fit_kc_models(steps: pd.DataFrame, *, kc_models: list[str] | None = None, cv: bool = True,
                  **afm_settings) -> dict[str, AFM]:
    """Fit one :class:`AFM` per KC model present (or those named); returns ``{kc_model: AFM}``."""
    available = kc_models_in(steps)
    models = kc_models or available
    unknown = [m for m in models if m not in available]
    if unknown:
        raise ConfigError(f"KC model(s) {unknown} are not in the data; valid KC models are {available}.")
    return {m: AFM(**afm_settings).fit(steps, kc_model=m, cv=cv) for m in models}


def compare_kc_models(fitted: dict[str, AFM] | pd.DataFrame, **fit_kwargs) -> pd.DataFrame:
    """Rank KC models by BIC, AIC and cross-validated RMSE, in one table.

    ``fitted`` is the dict of :func:`fit_kc_models` or a student-step KC frame (then
    every KC model in it is fitted with ``fit_kwargs``).

    Returns
    -------
    DataFrame, one row per KC model sorted by BIC (best first): the columns of
    :meth:`AFM.model_stats` plus ``rank_bic``, ``rank_aic``, ``rank_cv_learner``,
    ``rank_cv_item``, ``rank_cv_unstratified`` (1 = best; lower AIC/BIC/RMSE is better)
    and ``delta_bic`` (BIC minus the best BIC).
    """
    if isinstance(fitted, pd.DataFrame):
        fitted = fit_kc_models(fitted, **fit_kwargs)
    if not fitted:
        raise DataError("no fitted KC models to compare.")
    table = pd.concat([m.model_stats() for m in fitted.values()], ignore_index=True)
    table["rank_bic"] = table["bic"].rank(method="min").astype("int64")
    table["rank_aic"] = table["aic"].rank(method="min").astype("int64")
    for kind in CV_KINDS:
        table[f"rank_cv_{kind}"] = table[f"cv_rmse_{kind}"].rank(method="min").astype("Int64")
    table["delta_bic"] = table["bic"] - table["bic"].min()
    return table.sort_values(["rank_bic", "kc_model"]).reset_index(drop=True)


def predict_afm(steps: pd.DataFrame, kcs: pd.DataFrame, learners: pd.DataFrame | None = None, *,
                kc_model: str | None = None, learner: str = "learner_id", kc: str = "kc",
                opportunity: str = "opportunity", step_row: str = "step_row",
                model_column: str = "kc_model") -> pd.DataFrame:
    """AFM predictions from given parameters (ours, or DataShop's exported model values).

    ``kcs`` has columns kc, intercept, slope; ``learners`` has learner_id, intercept
    (learners not listed, or ``learners=None``, get 0). ``logit P(correct) = theta +
    sum over the step's KCs of (intercept + slope * (opportunity - 1))``.

    Returns
    -------
    DataFrame: step_row, p_correct, p_error, n_unknown_kcs (KCs of the step missing from
    ``kcs``, which contribute nothing).
    """
    need = [c for c in (learner, kc, opportunity, step_row) if c not in steps.columns]
    if need:
        raise SchemaError(f"steps lacks column(s) {need} needed to predict; its columns are {list(steps.columns)}.")
    miss_k = [c for c in ("kc", "intercept", "slope") if c not in kcs.columns]
    if miss_k:
        raise SchemaError(f"kcs lacks column(s) {miss_k}; it needs kc, intercept and slope.")
    long = steps
    if kc_model is not None and model_column in steps.columns:
        long = steps[steps[model_column] == kc_model]
    long = long[long[kc].notna()]
    kc_index = pd.Index(kcs["kc"].astype(str))
    if kc_index.has_duplicates:
        raise DataError(f"kcs lists KC {kc_index[kc_index.duplicated()][0]!r} twice; give one row per KC.")
    kidx = kc_index.get_indexer(long[kc].astype(str))
    b = kcs["intercept"].to_numpy(dtype=float)
    g = kcs["slope"].to_numpy(dtype=float)
    T = pd.to_numeric(long[opportunity], errors="coerce").to_numpy(dtype=float) - 1
    known = kidx >= 0
    ki = np.maximum(kidx, 0)
    contrib = np.where(known, b[ki] + g[ki] * T, 0.0)
    obs, rows = pd.factorize(long[step_row], sort=True)
    eta = np.bincount(obs, weights=contrib, minlength=len(rows))
    first = np.zeros(len(rows), dtype=np.int64)
    first[obs[::-1]] = np.arange(len(obs))[::-1]
    if learners is not None and len(learners):
        l_index = pd.Index(learners["learner_id"].astype(str))
        lidx = l_index.get_indexer(long[learner].astype(str).to_numpy()[first])
        th = learners["intercept"].to_numpy(dtype=float)
        eta = eta + np.where(lidx >= 0, th[np.maximum(lidx, 0)], 0.0)
    unknown = np.bincount(obs, weights=(~known).astype(float), minlength=len(rows)).astype("int64")
    p = expit(eta)
    return pd.DataFrame({"step_row": np.asarray(rows), "p_correct": p, "p_error": 1 - p, "n_unknown_kcs": unknown})


def add_predictions(steps: pd.DataFrame, models: dict[str, AFM], *, column: str = "p_error",
                    model_column: str = "kc_model") -> pd.DataFrame:
    """A copy of the student-step KC frame with each row's AFM predicted error probability.

    ``models`` is ``{kc_model: fitted AFM}``; rows of KC models without a fitted model get
    NaN. The prediction is per student step (all of its KCs together), as DataShop's
    ``Predicted Error Rate`` for single-KC steps.
    """
    out = steps.copy()
    out[column] = np.nan
    for name, model in models.items():
        rows = out[model_column] == name
        if not rows.any():
            continue
        pred = model.predict(out[rows]).set_index("step_row")["p_error"]
        out.loc[rows, column] = pred.reindex(out.loc[rows, model.columns_["step_row"]].to_numpy()).to_numpy()
    return out
