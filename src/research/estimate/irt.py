"""Item response theory: Rasch (1PL) and 2PL by marginal maximum likelihood, or Bayesian (PyMC).

The models take long-format dichotomous responses (one row per observed learner x item
cell; missing cells are simply absent: not every learner meets every item), as built by
:func:`research.estimate.classical.first_attempt_responses` from ``attempts`` or
:func:`research.estimate.classical.assessment_responses` from ``assessments``.

Maximum likelihood (``method="ml"``)
------------------------------------
Marginal maximum likelihood with the ability integrated out over a normal population
distribution by quadrature on a fixed grid (Bock & Aitkin 1981). The log-likelihood of
every learner at every quadrature node is one sparse (learners x items) by dense
(items x nodes) product, so the cost is linear in the number of observed cells. The
optimiser is a Newton-type (BHHH / Gauss-Newton) step that uses the outer product of the
learners' score vectors (Fisher's identity: each learner's score is the posterior mean of
the complete-data score) as information, with step halving on the marginal likelihood.
Standard errors come from the observed information, by central differences of the exact
gradient (``se="hessian"``), or from the cross-product information the optimiser already
has (``se="crossprod"``, the XPD estimator; consistent when the model holds, free, but
noisier in small samples). ``se="auto"`` takes the Hessian unless the data are large.

- Rasch: ``P(correct) = logistic(theta - b_j)``, ``theta ~ N(0, sigma^2)`` with ``sigma``
  estimated; the scale is anchored by the population mean ability 0.
- 2PL: ``P(correct) = logistic(a_j (theta - b_j))``, ``theta ~ N(0, 1)``; fitted in the
  slope-intercept form ``a_j theta + d_j`` and reported as ``b_j = -d_j / a_j`` with
  delta-method standard errors.

Learner abilities are EAP (posterior mean over the quadrature grid) with the posterior SD as
standard error.

Bayesian (``method="bayes"``)
-----------------------------
Hierarchical, non-centred PyMC models (see :mod:`research.estimate.irt_bayes`) sampled by
:func:`research.bayes.sample` (nutpie when installed, PyMC NUTS otherwise); convergence is
reported by :func:`research.bayes.diagnostics`, which warns on R-hat > 1.01, ESS below 100
per chain, or divergences. The summary has the same tidy shape as the ML one.

Item fit (Rasch)
----------------
Infit and outfit mean squares (Wright & Masters 1982) from the standardised residuals of
every observed cell at the learners' weighted likelihood (Warm 1989) abilities (EAP
abilities shrink towards the mean and would pull the mean squares below 1), with their Wilson-Hilferty
standardised forms (``infit_z``, ``outfit_z``). Expected value 1. Default flag thresholds
(:data:`FIT_LOW`, :data:`FIT_HIGH`): mean square outside 0.7-1.3, the "run of the mill"
multiple-choice range of Wright & Linacre (1994, Rasch Measurement Transactions 8:3, 370),
also used by Bond & Fox for samples of a few hundred; above 1.3 is underfit (noisy,
unexpected responses: check the key and wording), below 0.7 overfit (too predictable,
usually harmless). With many learners (over about 500) the z values are significant for
trivial misfit, so flags use the mean squares, not the z values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from scipy.special import expit, log_expit, logsumexp

from research.errors import ConfigError, DataError
from research.provenance import provenance

__all__ = [
    "FIT_HIGH", "FIT_LOW", "ITEM_TABLE_COLUMNS", "Rasch", "TwoPL", "drop_unestimable", "fit_rasch",
    "item_fit_statistics", "item_table", "numeric_info", "quadrature", "safe_inverse",
]

#: Item fit mean-square thresholds (Wright & Linacre 1994, "run of the mill" MCQ range).
FIT_LOW = 0.7
FIT_HIGH = 1.3

METHODS = ("ml", "bayes")
SE_METHODS = ("auto", "hessian", "crossprod")


# --------------------------------------------------------------------------- data


@dataclass
class _Design:
    """Integer-coded long responses and their sparse learner x item matrices."""

    learners: np.ndarray  # learner labels, index = code
    items: np.ndarray  # item labels, index = code
    rows: np.ndarray  # learner code per cell
    cols: np.ndarray  # item code per cell
    y: np.ndarray  # 0/1 float per cell
    Y: sp.csr_matrix  # learners x items, 1 where correct
    N: sp.csr_matrix  # learners x items, 1 where incorrect
    M: sp.csr_matrix  # learners x items, 1 where observed

    @property
    def n_learners(self) -> int:
        return len(self.learners)

    @property
    def n_items(self) -> int:
        return len(self.items)


def _design(responses: pd.DataFrame, learner: str, item: str, correct: str) -> _Design:
    if not isinstance(responses, pd.DataFrame):
        raise DataError(f"responses must be a pandas DataFrame, got {type(responses).__name__}")
    missing = [c for c in (learner, item, correct) if c not in responses.columns]
    if missing:
        raise DataError(
            f"responses lack column(s) {missing}; the columns are {list(responses.columns)}. "
            f"Pass learner=, item=, correct= to name yours."
        )
    df = responses[[learner, item, correct]]
    df = df[df[correct].notna()]
    if df.empty:
        raise DataError("responses have no non-missing rows: nothing to fit")
    y = pd.to_numeric(df[correct], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        first = df[correct].to_numpy()[np.argmax(bad)]
        first = first.item() if hasattr(first, "item") else first
        raise DataError(
            f"column {correct!r} must hold 0/1 (or True/False) responses; found {first!r} "
            f"in {int(bad.sum())} row(s). Dichotomise partial-credit scores first."
        )
    dup = df.duplicated([learner, item])
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(
            f"{int(dup.sum())} duplicate learner x item cell(s), e.g. learner {row[learner]!r} and item "
            f"{row[item]!r}; keep one response per cell (first attempts)."
        )
    rows, learners = pd.factorize(df[learner].astype(str), sort=True)
    cols, items = pd.factorize(df[item].astype(str), sort=True)
    if len(items) < 2:
        raise DataError(f"IRT needs at least 2 items, got {len(items)} ({list(items)})")
    order = np.lexsort((cols, rows))  # cells sorted by learner: learner blocks are contiguous
    rows, cols, y = rows[order], cols[order], y[order]
    shape = (len(learners), len(items))
    Y = sp.csr_matrix((y, (rows, cols)), shape=shape)
    N = sp.csr_matrix((1.0 - y, (rows, cols)), shape=shape)
    M = sp.csr_matrix((np.ones_like(y), (rows, cols)), shape=shape)
    Y.eliminate_zeros()
    N.eliminate_zeros()
    return _Design(np.asarray(learners, dtype=object), np.asarray(items, dtype=object), rows, cols, y, Y, N, M)


def quadrature(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Equally spaced nodes on [-6, 6] (standard-normal units) with normalised normal weights.

    A rectangular grid, as in mirt, rather than Gauss-Hermite nodes: with many items per
    learner the posterior of an ability is much narrower than the population, and a fixed
    Gauss-Hermite rule with few nodes then misses its mass and biases the ability SD
    (at 8,000 x 100 with SD 1.5, 21 Gauss-Hermite nodes gave 1.34, 41 equally spaced
    nodes 1.492, the same as 81).
    """
    x = np.linspace(-6.0, 6.0, n)
    w = np.exp(-0.5 * x**2)
    return x, w / w.sum()


# --------------------------------------------------------------------------- ML core


def _posterior(design: _Design, eta: np.ndarray, log_w: np.ndarray):
    """Posterior weights over nodes. ``eta`` is items x nodes (logit of P(correct))."""
    ll = design.Y @ log_expit(eta) + design.N @ log_expit(-eta) + log_w[None, :]
    lmarg = logsumexp(ll, axis=1)
    W = np.exp(ll - lmarg[:, None])
    return W, float(lmarg.sum())


def _loglik(design: _Design, eta: np.ndarray, log_w: np.ndarray) -> float:
    ll = design.Y @ log_expit(eta) + design.N @ log_expit(-eta) + log_w[None, :]
    return float(logsumexp(ll, axis=1).sum())


def _blocks(design: _Design, width: int, budget: int = 4_000_000):
    """Learner blocks (start, stop, cell_lo, cell_hi) whose dense block x width fits ``budget``."""
    chunk = max(1, budget // max(width, 1))
    starts = np.arange(0, design.n_learners, chunk)
    bounds = np.searchsorted(design.rows, np.append(starts, design.n_learners))
    bounds[-1] = len(design.rows)
    return [(int(s0), int(min(s0 + chunk, design.n_learners)), int(bounds[k]), int(bounds[k + 1])) for k, s0 in enumerate(starts)]


def _cell_means(design: _Design, W: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Posterior mean of F[item, node] for every observed cell: sum_q W[p, q] F[j, q]."""
    out = np.empty(len(design.rows))
    for start, stop, lo, hi in _blocks(design, design.n_items):  # blocks of learners, not rows
        block = W[start:stop] @ F.T  # dense learners x items
        out[lo:hi] = block[design.rows[lo:hi] - start, design.cols[lo:hi]]
    return out


def _cross_info(design: _Design, cell_scores: list[np.ndarray], learner_scores: list[np.ndarray]):
    """Gradient and cross-product (BHHH) information from per-learner scores.

    ``cell_scores`` are per-cell scores of item parameters (one array per parameter block;
    each cell feeds its own item's parameter); ``learner_scores`` are dense per-learner
    scores of global parameters. Each learner's score vector is the sum of its cells; the
    information is the sum over learners of score x score', accumulated block by block of
    learners in dense BLAS products.
    """
    J = design.n_items
    k = len(cell_scores)
    width = k * J + len(learner_scores)
    info = np.zeros((width, width))
    grad = np.zeros(width)
    L = np.column_stack(learner_scores) if learner_scores else None
    for start, stop, lo, hi in _blocks(design, width):
        G = np.zeros((stop - start, width))
        r = design.rows[lo:hi] - start
        c = design.cols[lo:hi]
        for b, s in enumerate(cell_scores):  # one pass per parameter block (1 or 2)
            G[r, b * J + c] = s[lo:hi]  # one cell per learner x item, so no accumulation needed
        if L is not None:
            G[:, k * J :] = L[start:stop]
        info += G.T @ G
        grad += G.sum(axis=0)
    return grad, info


def _newton(loglik, step_parts, theta0, *, max_iter, tol):
    """Maximise with BHHH steps and step halving. ``step_parts(params) -> (ll, grad, info)``."""
    params = theta0.copy()
    ll, grad, info = step_parts(params)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        ridge = 1e-8 * np.maximum(np.diag(info), 1.0)
        try:
            delta = np.linalg.solve(info + np.diag(ridge), grad)
        except np.linalg.LinAlgError:
            delta = np.linalg.lstsq(info + np.diag(ridge), grad, rcond=None)[0]
        decrement = float(grad @ delta)  # predicted gain in log-likelihood x 2
        if decrement < tol:
            converged = True
            break
        big = np.max(np.abs(delta))
        if big > 2.0:  # keep early steps on a leash
            delta *= 2.0 / big
        # try the full step with the full evaluation (it is accepted almost always), then halve
        new = params + delta
        new_ll, new_grad, new_info = step_parts(new)
        step, halved = 1.0, False
        while not (np.isfinite(new_ll) and new_ll >= ll - 1e-10):
            step /= 2.0
            halved = True
            if step < 1e-9:
                break
            new = params + step * delta
            new_ll = loglik(new)
        if step < 1e-9:
            break
        if halved:
            new_ll, new_grad, new_info = step_parts(new)
        params, ll, grad, info = new, new_ll, new_grad, new_info
    return params, ll, grad, info, it, converged


def _grad_only(design: _Design, cell_scores, learner_scores) -> np.ndarray:
    J = design.n_items
    parts = [np.bincount(design.cols, sc, minlength=J) for sc in cell_scores]
    parts += [np.array([ls.sum()]) for ls in learner_scores]
    return np.concatenate(parts)


#: Above this many (parameters x observed cells) ``se="auto"`` uses the cross-product information.
OAKES_MAX_WORK = 3e7


def _use_oakes(se: str, design: _Design, n_params: int) -> bool:
    if se == "hessian":
        return True
    if se == "crossprod":
        return False
    return n_params * len(design.y) <= OAKES_MAX_WORK


def numeric_info(grad_fn, params: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Observed information: central differences of the exact (Fisher-identity) gradient."""
    k = len(params)
    H = np.empty((k, k))
    for i in range(k):  # one gradient pair per parameter (not per row)
        e = np.zeros(k)
        e[i] = h
        H[:, i] = (grad_fn(params + e) - grad_fn(params - e)) / (2 * h)
    return -(H + H.T) / 2


def safe_inverse(info: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(info)


def _complete(design: _Design) -> bool:
    """True when every learner answered every item (no cell missing)."""
    return len(design.y) == design.n_learners * design.n_items


class _SumScores:
    """Rasch on complete data through the raw score, its sufficient statistic.

    With every cell observed, a learner's log-likelihood at node q is
    ``sum_j log Q_jq + r * sigma * x_q - sum_j y_j b_j``: the posterior over the nodes
    depends on the raw score ``r`` alone. The E-step runs once per score (at most J + 1)
    instead of once per learner, and the cross-product information of the learners' scores
    is assembled from per-score totals: sum_p (E_r - y_p)(E_r - y_p)' =
    sum_r [n_r E_r E_r' - E_r T_r' - T_r E_r'] + Y'Y, with T_r the item totals of the
    learners with score r. The same likelihood, gradient and information as the general
    path, in O(J^2 * nodes) per iteration whatever the number of learners.
    """

    def __init__(self, design: _Design):
        J = design.n_items
        self.r = np.bincount(design.rows, design.y, minlength=design.n_learners).round().astype(np.int64)
        self.n_s = np.bincount(self.r, minlength=J + 1).astype(float)  # learners per score 0..J
        self.T = np.zeros((J + 1, J))  # item totals per score group
        np.add.at(self.T, (self.r[design.rows], design.cols), design.y)
        dense = design.Y.toarray()
        self.YtY = dense.T @ dense
        self.c = dense.sum(axis=0)  # correct answers per item
        self.s = np.arange(J + 1, dtype=float)

    def posterior(self, eta: np.ndarray, sigma: float, x: np.ndarray, b: np.ndarray, log_w: np.ndarray):
        """Per-score posterior weights (scores x nodes) and the marginal log-likelihood."""
        ll = log_expit(-eta).sum(axis=0)[None, :] + self.s[:, None] * (sigma * x)[None, :] + log_w[None, :]
        lmarg = logsumexp(ll, axis=1)
        W = np.exp(ll - lmarg[:, None])
        return W, float(self.n_s @ lmarg - self.c @ b)

    def parts(self, W: np.ndarray, Pm: np.ndarray, sigma: float, x: np.ndarray, with_info: bool):
        E = W @ Pm.T  # scores x items: posterior mean of P(correct)
        S = Pm.sum(axis=0)  # expected raw score at each node
        g_s = sigma * ((W * x[None, :]) * (self.s[:, None] - S[None, :])).sum(axis=1)  # per score
        grad = np.concatenate([self.n_s @ E - self.c, [self.n_s @ g_s]])
        if not with_info:
            return grad, None
        J = E.shape[1]
        info = np.empty((J + 1, J + 1))
        cross = E.T @ self.T
        info[:J, :J] = (E.T * self.n_s) @ E - cross - cross.T + self.YtY
        info[:J, J] = info[J, :J] = (self.n_s * g_s) @ E - g_s @ self.T
        info[J, J] = self.n_s @ g_s**2
        return grad, info


def _fit_rasch_ml(design: _Design, n_quad: int, max_iter: int, tol: float, se: str = "auto"):
    x, w = quadrature(n_quad)
    log_w = np.log(w)
    J = design.n_items
    n_j = np.asarray(design.M.sum(axis=0)).ravel()
    p_j = np.clip(np.asarray(design.Y.sum(axis=0)).ravel() / n_j, 0.01, 0.99)
    start = np.concatenate([-np.log(p_j / (1 - p_j)) * 1.1, [0.0]])  # b, log sigma

    def eta_of(params):
        b, sigma = params[:J], np.exp(params[J])
        return sigma * x[None, :] - b[:, None]

    if _complete(design):
        return _fit_rasch_sum_scores(design, x, log_w, start, eta_of, max_iter, tol, se)

    def loglik(params):
        return _loglik(design, eta_of(params), log_w)

    def parts(params, with_info=True):
        sigma = np.exp(params[J])
        eta = eta_of(params)
        W, ll = _posterior(design, eta, log_w)
        Pm = expit(eta)
        ep = _cell_means(design, W, Pm)
        g_b = ep - design.y  # d loglik / d b_j per cell
        # d/d log sigma: sigma * sum_q W_pq x_q (r_p - sum_j m_pj P_jq)
        r = np.asarray(design.Y.sum(axis=1)).ravel()
        S = design.M @ Pm  # learners x nodes
        g_s = sigma * ((W * x[None, :]) * (r[:, None] - S)).sum(axis=1)
        if not with_info:
            return ll, _grad_only(design, [g_b], [g_s]), None
        grad, info = _cross_info(design, [g_b], [g_s])
        return ll, grad, info

    return _solve_rasch(design, x, start, loglik, parts, lambda p_: _posterior(design, eta_of(p_), log_w)[0],
                        max_iter=max_iter, tol=tol, se=se)


def _solve_rasch(design: _Design, x, start, loglik, parts, weights, *, max_iter: int, tol: float, se: str):
    """Newton to the Rasch ML estimates, their standard errors, and the learners' posterior
    weights over the nodes (``weights(params)``) for the EAP abilities."""
    J = design.n_items
    params, ll, grad, info, n_iter, converged = _newton(loglik, parts, start, max_iter=max_iter, tol=tol)
    if _use_oakes(se, design, len(params)):
        info = numeric_info(lambda p_: parts(p_, False)[1], params)
    cov = safe_inverse(info)
    se_ = np.sqrt(np.clip(np.diag(cov), 0, None))
    sigma = float(np.exp(params[J]))
    return dict(
        b=params[:J], b_se=se_[:J], sigma=sigma, sigma_se=sigma * se_[J], a=np.ones(J), a_se=np.zeros(J),
        cov=cov, loglik=ll, n_iter=n_iter, converged=converged, W=weights(params), nodes=sigma * x,
    )


def _fit_rasch_sum_scores(design: _Design, x, log_w, start, eta_of, max_iter: int, tol: float, se: str):
    """:func:`_fit_rasch_ml` on complete data, through :class:`_SumScores` (same estimates)."""
    J = design.n_items
    sums = _SumScores(design)

    def posterior(params):
        return sums.posterior(eta_of(params), float(np.exp(params[J])), x, params[:J], log_w)

    def loglik(params):
        return posterior(params)[1]

    def parts(params, with_info=True):
        W, ll = posterior(params)
        grad, info = sums.parts(W, expit(eta_of(params)), float(np.exp(params[J])), x, with_info)
        return ll, grad, info

    return _solve_rasch(design, x, start, loglik, parts, lambda p_: posterior(p_)[0][sums.r],
                        max_iter=max_iter, tol=tol, se=se)


def _fit_2pl_ml(design: _Design, n_quad: int, max_iter: int, tol: float, se: str = "auto"):
    x, w = quadrature(n_quad)
    log_w = np.log(w)
    J = design.n_items
    # start at the Rasch solution: sigma * z - b_j  ->  a_j = sigma, d_j = -b_j
    rasch = _fit_rasch_ml(design, n_quad, max_iter, tol, se="crossprod")
    start = np.concatenate([-rasch["b"], np.full(J, rasch["sigma"])])  # d, a

    def eta_of(params):
        d, a = params[:J], params[J:]
        return a[:, None] * x[None, :] + d[:, None]

    def loglik(params):
        return _loglik(design, eta_of(params), log_w)

    def parts(params, with_info=True):
        eta = eta_of(params)
        W, ll = _posterior(design, eta, log_w)
        Pm = expit(eta)
        ep = _cell_means(design, W, Pm)
        etheta = W @ x
        ethp = _cell_means(design, W, Pm * x[None, :])
        g_d = design.y - ep
        g_a = design.y * etheta[design.rows] - ethp
        if not with_info:
            return ll, _grad_only(design, [g_d, g_a], []), None
        grad, info = _cross_info(design, [g_d, g_a], [])
        return ll, grad, info

    params, ll, grad, info, n_iter, converged = _newton(loglik, parts, start, max_iter=max_iter, tol=tol)
    if _use_oakes(se, design, len(params)):
        info = numeric_info(lambda p_: parts(p_, False)[1], params)
    cov = safe_inverse(info)
    d, a = params[:J], params[J:]
    var_d = np.diag(cov)[:J]
    var_a = np.diag(cov)[J:]
    cov_da = cov[np.arange(J), J + np.arange(J)]
    b = -d / a
    var_b = var_d / a**2 + d**2 * var_a / a**4 - 2 * d * cov_da / a**3
    W, _ = _posterior(design, eta_of(params), log_w)
    return dict(
        b=b, b_se=np.sqrt(np.clip(var_b, 0, None)), a=a, a_se=np.sqrt(np.clip(var_a, 0, None)),
        d=d, sigma=1.0, sigma_se=0.0, cov=cov, loglik=ll, n_iter=n_iter, converged=converged, W=W, nodes=x,
    )


# --------------------------------------------------------------------------- item fit


def _wle(design: _Design, b: np.ndarray, a: np.ndarray, max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Warm's weighted likelihood estimates of ability (finite for all-correct/all-wrong learners).

    Solves sum_j a_j (y - P_j) + J / (2 I) = 0 with I = sum a^2 P Q and J = sum a^3 P Q (1 - 2P)
    by Fisher scoring, all learners at once. Returns theta and its SE 1 / sqrt(I).
    """
    P_ = design.n_learners
    if _complete(design) and np.all(a == 1.0):
        return _wle_sum_scores(design, b, max_iter)
    theta = np.zeros(P_)
    ac, bc, r = a[design.cols], b[design.cols], design.rows
    for _ in range(max_iter):
        p = expit(ac * (theta[r] - bc))
        pq = p * (1 - p)
        info = np.bincount(r, ac**2 * pq, minlength=P_)
        jj = np.bincount(r, ac**3 * pq * (1 - 2 * p), minlength=P_)
        score = np.bincount(r, ac * (design.y - p), minlength=P_) + jj / (2 * info)
        step = np.clip(score / info, -1.0, 1.0)
        theta = np.clip(theta + step, -10, 10)
        if np.max(np.abs(step)) < 1e-6:
            break
    p = expit(ac * (theta[r] - bc))
    info = np.bincount(r, ac**2 * p * (1 - p), minlength=P_)
    return theta, 1 / np.sqrt(info)


def _wle_sum_scores(design: _Design, b: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_wle` for Rasch on complete data: the estimate depends on the raw score alone,
    so it is solved once per score (the same Fisher scoring, the same stopping rule)."""
    r = np.bincount(design.rows, design.y, minlength=design.n_learners)
    scores, of_learner = np.unique(r, return_inverse=True)
    theta = np.zeros(len(scores))
    for _ in range(max_iter):
        p = expit(theta[:, None] - b[None, :])
        pq = p * (1 - p)
        info = pq.sum(axis=1)
        score = scores - p.sum(axis=1) + (pq * (1 - 2 * p)).sum(axis=1) / (2 * info)
        step = np.clip(score / info, -1.0, 1.0)
        theta = np.clip(theta + step, -10, 10)
        if np.max(np.abs(step)) < 1e-6:
            break
    p = expit(theta[:, None] - b[None, :])
    info = (p * (1 - p)).sum(axis=1)
    return theta[of_learner], (1 / np.sqrt(info))[of_learner]


def item_fit_statistics(
    responses: pd.DataFrame,
    difficulties: pd.DataFrame,
    abilities: pd.DataFrame,
    *,
    learner: str = "learner_id",
    item: str = "item_id",
    correct: str = "correct",
    low: float = FIT_LOW,
    high: float = FIT_HIGH,
) -> pd.DataFrame:
    """Infit and outfit mean squares and their standardised (Wilson-Hilferty) forms.

    Parameters
    ----------
    responses : long 0/1 responses (``learner``, ``item``, ``correct``).
    difficulties : ``item_id``, ``difficulty`` and optionally ``discrimination`` (2PL; 1 if absent).
    abilities : ``learner_id``, ``theta`` (use WLE or ML abilities, not EAP: see the module doc).
    low, high : mean-square flag thresholds (default 0.7 and 1.3, Wright & Linacre 1994).

    Returns
    -------
    DataFrame, one row per item:
        item_id, infit_mnsq, outfit_mnsq, infit_z, outfit_z, n (responses used),
        fit_flag ("underfit" when either mean square > high, "overfit" when either < low and
        none above high, else "").
    """
    design = _design(responses, learner, item, correct)
    diff = difficulties.set_index("item_id")
    b = diff["difficulty"].reindex(design.items).to_numpy(dtype=float)
    a = (
        diff["discrimination"].reindex(design.items).to_numpy(dtype=float)
        if "discrimination" in diff.columns
        else np.ones(design.n_items)
    )
    th = abilities.set_index("learner_id")["theta"].reindex(design.learners).to_numpy(dtype=float)
    if np.isnan(b).any():
        raise DataError(f"no difficulty for item(s) {list(design.items[np.isnan(b)][:5])}")
    if np.isnan(th).any():
        raise DataError(f"no ability for learner(s) {list(design.learners[np.isnan(th)][:5])}")
    return _item_fit_arrays(design, th, b, a, low, high)


def _item_fit_arrays(design: _Design, theta, b, a, low=FIT_LOW, high=FIT_HIGH) -> pd.DataFrame:
    J = design.n_items
    p = expit(a[design.cols] * (theta[design.rows] - b[design.cols]))
    var = np.clip(p * (1 - p), 1e-12, None)
    resid2 = (design.y - p) ** 2
    kurt = var * ((1 - p) ** 3 + p**3)  # E[(y - p)^4]
    n = np.bincount(design.cols, minlength=J).astype(float)
    outfit = np.bincount(design.cols, resid2 / var, minlength=J) / n
    sum_var = np.bincount(design.cols, var, minlength=J)
    infit = np.bincount(design.cols, resid2, minlength=J) / sum_var
    q_out = np.sqrt(np.clip(np.bincount(design.cols, kurt / var**2, minlength=J) / n**2 - 1 / n, 1e-12, None))
    q_in = np.sqrt(np.clip(np.bincount(design.cols, kurt - var**2, minlength=J) / sum_var**2, 1e-12, None))
    outfit_z = (np.cbrt(outfit) - 1) * (3 / q_out) + q_out / 3
    infit_z = (np.cbrt(infit) - 1) * (3 / q_in) + q_in / 3
    over = np.maximum(infit, outfit) > high
    under = np.minimum(infit, outfit) < low
    flag = np.where(over, "underfit", np.where(under, "overfit", ""))
    return pd.DataFrame(
        {
            "item_id": design.items.astype(str),
            "infit_mnsq": infit,
            "outfit_mnsq": outfit,
            "infit_z": infit_z,
            "outfit_z": outfit_z,
            "n": n.astype(np.int64),
            "fit_flag": flag,
        }
    )


# --------------------------------------------------------------------------- models


class _IRTModel:
    """Shared machinery of :class:`Rasch` and :class:`TwoPL`."""

    model_name = "irt"
    _twopl = False

    def __init__(
        self,
        *,
        method: str = "ml",
        n_quadrature: int = 41,
        max_iter: int = 200,
        tol: float = 1e-6,
        sampler=None,
        learner: str = "learner_id",
        item: str = "item_id",
        correct: str = "correct",
        ci_level: float = 0.95,
        se: str = "auto",
        blas_threads: int | None = 1,
    ):
        if method not in METHODS:
            raise ConfigError(f"method={method!r} is not known; use one of {list(METHODS)}")
        if se not in SE_METHODS:
            raise ConfigError(f"se={se!r} is not known; use one of {list(SE_METHODS)}")
        if int(n_quadrature) < 5:
            raise ConfigError(f"n_quadrature must be at least 5, got {n_quadrature}")
        if int(max_iter) < 1:
            raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
        if not 0 < ci_level < 1:
            raise ConfigError(f"ci_level must lie strictly between 0 and 1, got {ci_level}")
        from research.bayes import SamplerSettings

        if sampler is not None and not isinstance(sampler, SamplerSettings):
            raise ConfigError(
                f"sampler must be a research.bayes.SamplerSettings, got {type(sampler).__name__}"
            )
        self.method = method
        self.n_quadrature = int(n_quadrature)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.sampler = sampler
        self.learner = learner
        self.item = item
        self.correct = correct
        self.ci_level = float(ci_level)
        self.se = se
        if blas_threads is not None and int(blas_threads) < 1:
            raise ConfigError(f"blas_threads must be at least 1 or None, got {blas_threads}")
        self.blas_threads = blas_threads

    # -- fitting
    def fit(self, responses: pd.DataFrame):
        """Fit the model to long 0/1 responses; returns ``self``."""
        design = _design(responses, self.learner, self.item, self.correct)
        self._design = design
        n_j = np.asarray(design.M.sum(axis=0)).ravel().astype(np.int64)
        n_correct = np.asarray(design.Y.sum(axis=0)).ravel()
        extreme = (n_correct == 0) | (n_correct == n_j)
        if extreme.any():
            raise DataError(
                f"item(s) {list(design.items[extreme][:10])} were answered all correct or all incorrect: "
                "their difficulty is not estimable by ML; drop them before fitting (the classical "
                "statistics still describe them)."
            )
        started = time.perf_counter()
        if self.method == "ml":
            from threadpoolctl import threadpool_limits

            # the products are thin (learners x nodes x items): one BLAS thread is faster than
            # many, and far faster on a shared, loaded machine
            if self.blas_threads is None:
                res = self._fit_ml(design)
            else:
                with threadpool_limits(limits=int(self.blas_threads), user_api="blas"):
                    res = self._fit_ml(design)
            self.idata_ = None
            self.diagnostics_ = None
        else:
            from research.estimate import irt_bayes

            res = irt_bayes.fit(design, twopl=self._twopl, settings=self.sampler, ci_level=self.ci_level)
            self.idata_ = res["idata"]
            self.diagnostics_ = res["diagnostics"]
        self.fit_seconds_ = time.perf_counter() - started
        self._res = res
        self.converged_ = bool(res["converged"])
        self.n_iter_ = int(res.get("n_iter", 0))
        self.loglik_ = float(res.get("loglik", np.nan))
        self.sigma_ = float(res["sigma"])
        self.sigma_se_ = float(res["sigma_se"])
        z = stats.norm.ppf(0.5 + self.ci_level / 2)
        items = pd.DataFrame(
            {
                "item_id": design.items.astype(str),
                "difficulty": res["b"],
                "difficulty_se": res["b_se"],
                "difficulty_ci_low": res.get("b_lo", res["b"] - z * res["b_se"]),
                "difficulty_ci_high": res.get("b_hi", res["b"] + z * res["b_se"]),
            }
        )
        if self._twopl:
            items["discrimination"] = res["a"]
            items["discrimination_se"] = res["a_se"]
            items["discrimination_ci_low"] = res.get("a_lo", res["a"] - z * res["a_se"])
            items["discrimination_ci_high"] = res.get("a_hi", res["a"] + z * res["a_se"])
        items["n"] = n_j
        self.item_params_ = items
        wle, wle_se = _wle(design, np.asarray(res["b"], float), np.asarray(res["a"], float))
        self.abilities_ = pd.DataFrame(
            {
                "learner_id": design.learners.astype(str),
                "theta": res["theta"],
                "theta_se": res["theta_se"],
                "theta_wle": wle,
                "theta_wle_se": wle_se,
                "n_items": np.bincount(design.rows, minlength=design.n_learners).astype(np.int64),
            }
        )
        self.provenance_ = provenance(
            self.model_name, sampler=self.sampler, idata=self.idata_,
            settings={"method": self.method, "n_quadrature": self.n_quadrature, "max_iter": self.max_iter,
                      "tol": self.tol, "se": self.se, "blas_threads": self.blas_threads},
            method=self.method, n_learners=design.n_learners, n_items=design.n_items, n_responses=len(design.y),
        )
        return self

    def _fit_ml(self, design):
        raise NotImplementedError

    def _eap(self, res):
        W, nodes = res["W"], res["nodes"]
        theta = W @ nodes
        theta_se = np.sqrt(np.clip(W @ nodes**2 - theta**2, 0, None))
        return theta, theta_se

    def _check_fitted(self):
        if not hasattr(self, "item_params_"):
            raise ConfigError(f"this {type(self).__name__} is not fitted yet; call .fit(responses) first")

    # -- results
    @property
    def method_label(self) -> str:
        base = "rasch" if not self._twopl else "2pl"
        return f"{base}_mml" if self.method == "ml" else f"{base}_bayes"

    def summary(self) -> pd.DataFrame:
        """Tidy item parameters.

        Returns
        -------
        DataFrame, one row per item x parameter:
            item_id, parameter ("difficulty", and "discrimination" for the 2PL; "sigma" the
            ability SD for Rasch with item_id "(population)"), estimate, se, ci_low, ci_high,
            n (learners who answered the item), method ("rasch_mml", "rasch_bayes", "2pl_mml",
            "2pl_bayes").
        """
        self._check_fitted()
        ip = self.item_params_
        params = ["difficulty"] + (["discrimination"] if self._twopl else [])
        frames = [
            pd.DataFrame(
                {
                    "item_id": ip["item_id"],
                    "parameter": p,
                    "estimate": ip[p],
                    "se": ip[f"{p}_se"],
                    "ci_low": ip[f"{p}_ci_low"],
                    "ci_high": ip[f"{p}_ci_high"],
                    "n": ip["n"],
                }
            )
            for p in params
        ]
        if not self._twopl:
            z = stats.norm.ppf(0.5 + self.ci_level / 2)
            lo = self._res.get("sigma_lo", self.sigma_ - z * self.sigma_se_)
            hi = self._res.get("sigma_hi", self.sigma_ + z * self.sigma_se_)
            frames.append(
                pd.DataFrame(
                    {
                        "item_id": ["(population)"],
                        "parameter": ["sigma"],
                        "estimate": [self.sigma_],
                        "se": [self.sigma_se_],
                        "ci_low": [lo],
                        "ci_high": [hi],
                        "n": [self._design.n_learners],
                    }
                )
            )
        out = pd.concat(frames, ignore_index=True)
        out["n"] = out["n"].astype(np.int64)
        out["method"] = self.method_label
        return out

    def item_covariance(self) -> pd.DataFrame | None:
        """Covariance matrix of the item difficulties (item x item) of a maximum-likelihood fit.

        None for a Bayesian fit (use the posterior draws in ``idata_``) or when the fit has
        no covariance. Used to link two cohorts on their common items.
        """
        self._check_fitted()
        res = getattr(self, "_res", None)
        if not isinstance(res, dict) or res.get("cov") is None:
            return None
        cov = np.asarray(res["cov"], dtype=float)
        n_items = len(self._design.items)
        if cov.shape[0] < n_items:
            return None
        labels = pd.Index(np.asarray(self._design.items).astype(str), name="item_id")
        return pd.DataFrame(cov[:n_items, :n_items], index=labels, columns=labels)

    def abilities(self) -> pd.DataFrame:
        """Learner abilities (EAP for ML, posterior mean for Bayes).

        Returns
        -------
        DataFrame: learner_id, theta (EAP for ML, posterior mean for Bayes), theta_se,
        theta_wle and theta_wle_se (Warm's weighted likelihood estimate at the item
        parameters, used for item fit), n_items (items the learner answered).
        """
        self._check_fitted()
        return self.abilities_.copy()

    def item_fit(self, *, low: float = FIT_LOW, high: float = FIT_HIGH) -> pd.DataFrame:
        """Infit/outfit mean squares and z values per item at the fitted abilities.

        See :func:`item_fit_statistics` for the columns and thresholds.
        """
        self._check_fitted()
        ip = self.item_params_
        a = ip["discrimination"].to_numpy(float) if self._twopl else np.ones(len(ip))
        return _item_fit_arrays(
            self._design, self.abilities_["theta_wle"].to_numpy(float), ip["difficulty"].to_numpy(float), a, low, high
        )

    def icc(self, theta: np.ndarray | None = None, items: list[str] | None = None) -> pd.DataFrame:
        """Item characteristic curves: P(correct) on a grid of abilities.

        Returns
        -------
        DataFrame: item_id, theta, p_correct (long, one row per item x grid point).
        """
        self._check_fitted()
        theta = np.linspace(-4, 4, 81) if theta is None else np.asarray(theta, dtype=float)
        ip = self.item_params_
        if items is not None:
            unknown = sorted(set(items) - set(ip["item_id"]))
            if unknown:
                raise ConfigError(f"unknown item(s) {unknown[:5]}; fitted items are e.g. {list(ip['item_id'][:5])}")
            ip = ip[ip["item_id"].isin(items)]
        a = ip["discrimination"].to_numpy(float) if self._twopl else np.ones(len(ip))
        b = ip["difficulty"].to_numpy(float)
        p = expit(a[:, None] * (theta[None, :] - b[:, None]))
        return pd.DataFrame(
            {
                "item_id": np.repeat(ip["item_id"].to_numpy(), len(theta)),
                "theta": np.tile(theta, len(ip)),
                "p_correct": p.ravel(),
            }
        )


class Rasch(_IRTModel):
    """Rasch (1PL) model: ``P(correct) = logistic(theta_i - b_j)``.

    Parameters
    ----------
    method : "ml" (marginal ML by quadrature) or "bayes" (PyMC, hierarchical,
        non-centred; needs ``sampler``, a :class:`research.bayes.SamplerSettings`).
    n_quadrature : quadrature nodes for ML (default 41, equally spaced over +-6 SD).
    max_iter, tol : optimiser limits for ML: it stops when the Newton decrement (twice the
        predicted gain in log-likelihood) falls below ``tol`` (default 1e-6).
    learner, item, correct : column names of the long responses.
    ci_level : level of the intervals (default 0.95).
    se : standard errors for ML: "hessian" (observed information by central differences of
        the exact gradient; 2 gradient evaluations per parameter), "crossprod" (outer product
        of the learners' scores, free at the optimum, noisier in small samples) or "auto"
        (hessian unless parameters x cells exceeds :data:`OAKES_MAX_WORK`).
    blas_threads : BLAS threads during the ML fit (default 1: the products are thin, and
        threads only contend; None leaves the library default).

    Fitted attributes: ``item_params_`` (wide: item_id, difficulty, difficulty_se,
    difficulty_ci_low, difficulty_ci_high, n), ``abilities_``, ``sigma_`` (ability SD),
    ``loglik_``, ``n_iter_``, ``converged_``, ``fit_seconds_``, ``provenance_``; for Bayes
    also ``idata_`` and ``diagnostics_``.
    """

    model_name = "rasch"
    _twopl = False

    def _fit_ml(self, design):
        res = _fit_rasch_ml(design, self.n_quadrature, self.max_iter, self.tol, self.se)
        res["theta"], res["theta_se"] = self._eap(res)
        return res


class TwoPL(_IRTModel):
    """Two-parameter logistic model: ``P(correct) = logistic(a_j (theta_i - b_j))``, theta ~ N(0, 1).

    Same parameters and attributes as :class:`Rasch`; ``item_params_`` adds discrimination,
    discrimination_se, discrimination_ci_low, discrimination_ci_high.
    """

    model_name = "2pl"
    _twopl = True

    def _fit_ml(self, design):
        res = _fit_2pl_ml(design, self.n_quadrature, self.max_iter, self.tol, self.se)
        res["theta"], res["theta_se"] = self._eap(res)
        return res


def fit_rasch(responses: pd.DataFrame, **kwargs) -> Rasch:
    """Shortcut: ``Rasch(**kwargs).fit(responses)``."""
    return Rasch(**kwargs).fit(responses)


def fit_2pl(responses: pd.DataFrame, **kwargs) -> TwoPL:
    """Shortcut: ``TwoPL(**kwargs).fit(responses)``."""
    return TwoPL(**kwargs).fit(responses)


# --------------------------------------------------------------------------- item table


def drop_unestimable(
    responses: pd.DataFrame,
    *,
    min_n: int = 1,
    item: str = "item_id",
    correct: str = "correct",
) -> pd.DataFrame:
    """Responses without the items IRT cannot estimate: all correct, all incorrect, or fewer
    than ``min_n`` learners. The dropped items are listed in ``attrs["dropped_items"]``.
    """
    if item not in responses.columns or correct not in responses.columns:
        raise DataError(f"responses need columns {item!r} and {correct!r}; they have {list(responses.columns)}")
    y = pd.to_numeric(responses[correct], errors="coerce")
    g = y.groupby(responses[item].astype(str))
    stats_ = pd.DataFrame({"n": g.count(), "k": g.sum()})
    bad = (stats_["k"] == 0) | (stats_["k"] == stats_["n"]) | (stats_["n"] < int(min_n))
    dropped = sorted(stats_.index[bad])
    out = responses[~responses[item].astype(str).isin(set(dropped)) & y.notna()].reset_index(drop=True)
    out.attrs["dropped_items"] = dropped
    return out


#: Columns of the items table, in order (data_schema/outputs/items.schema.json).
ITEM_TABLE_COLUMNS = [
    "item_id", "module", "page", "n_learners", "facility", "facility_ci_low", "facility_ci_high",
    "eventually_correct", "mean_attempts_to_correct", "hint_rate", "median_duration_s",
    "reached_not_answered", "discrimination", "upper_lower_index",
    "difficulty", "difficulty_se", "difficulty_ci_low", "difficulty_ci_high",
    "difficulty_2pl", "difficulty_2pl_se", "discrimination_2pl", "discrimination_2pl_se",
    "infit_mnsq", "outfit_mnsq", "infit_z", "outfit_z", "low_n", "flags", "concern", "irt_method",
]


def item_table(
    classical: pd.DataFrame,
    *,
    rasch: Rasch | None = None,
    twopl: TwoPL | None = None,
    thresholds=None,
) -> pd.DataFrame:
    """One row per item: classical statistics, Rasch and 2PL parameters, Rasch fit, flags.

    Parameters
    ----------
    classical : the output of :func:`research.estimate.classical.item_statistics`.
    rasch, twopl : fitted models (either may be None; items they did not fit get missing values).
    thresholds : :class:`research.estimate.classical.ItemThresholds` for the flags.

    Returns
    -------
    DataFrame with the columns of :data:`ITEM_TABLE_COLUMNS`: the classical columns, then
    difficulty (Rasch, logit, population mean ability 0), difficulty_se, difficulty_ci_low,
    difficulty_ci_high, difficulty_2pl, difficulty_2pl_se, discrimination_2pl,
    discrimination_2pl_se, infit_mnsq, outfit_mnsq, infit_z, outfit_z (Rasch fit), low_n,
    flags (semicolon-separated labels), concern (sum of flag weights; higher = look first),
    irt_method (e.g. "rasch_mml" or "rasch_bayes+2pl_mml"), sorted by concern.
    """
    from research.estimate.classical import ItemThresholds, flag_items, sort_by_concern

    th = thresholds or ItemThresholds()
    t = classical.copy()
    t["item_id"] = t["item_id"].astype(str)
    if "low_n" not in t.columns:
        t["low_n"] = t["n_learners"] < th.min_n
    else:
        t["low_n"] = t["low_n"].astype(bool) | (t["n_learners"] < th.min_n)
    methods = []
    if rasch is not None:
        rasch._check_fitted()
        rp = rasch.item_params_[["item_id", "difficulty", "difficulty_se", "difficulty_ci_low", "difficulty_ci_high"]]
        fit = rasch.item_fit(low=th.fit_low, high=th.fit_high)[["item_id", "infit_mnsq", "outfit_mnsq", "infit_z", "outfit_z"]]
        t = t.merge(rp, on="item_id", how="left").merge(fit, on="item_id", how="left")
        methods.append(rasch.method_label)
    if twopl is not None:
        twopl._check_fitted()
        tp = twopl.item_params_.rename(
            columns={
                "difficulty": "difficulty_2pl",
                "difficulty_se": "difficulty_2pl_se",
                "discrimination": "discrimination_2pl",
                "discrimination_se": "discrimination_2pl_se",
            }
        )[["item_id", "difficulty_2pl", "difficulty_2pl_se", "discrimination_2pl", "discrimination_2pl_se"]]
        t = t.merge(tp, on="item_id", how="left")
        methods.append(twopl.method_label)
    for col in ITEM_TABLE_COLUMNS:
        if col not in t.columns and col not in ("flags", "concern", "irt_method"):
            t[col] = np.nan
    t = flag_items(t, th)
    t["irt_method"] = "+".join(methods)
    t = sort_by_concern(t)
    return t[ITEM_TABLE_COLUMNS]
