"""Ordinal item response models: graded response (GRM) and partial credit (PCM), by marginal ML.

Responses are long: one row per observed case x item with a 0-based ``category``
(Likert answers after reverse coding, or partial-credit scores); missing cells are simply
absent. A *case* is a learner in a group: with ``group=`` (a wave or a learner group) the
model is a multi-group model and the same learner in two waves is two cases.

Models
------
- GRM (Samejima 1969): ``P(Y >= k | theta) = logistic(a_j theta + c_jk)``, ``c_j1 > c_j2 >
  ...``; reported as discrimination ``a_j`` and thresholds ``b_jk = -c_jk / a_j`` (delta-method
  standard errors), and as the standardised loading and thresholds of an ordinal (probit)
  factor model, ``lambda = (a/D) / sqrt(1 + (a/D)^2)``, ``tau_k = (b_k a/D) / sqrt(1 + (a/D)^2)``
  with ``D = 1.702`` (what lavaan's ordinal CFA reports).
- PCM (Masters 1982): ``P(Y = k | theta) ~ exp(sum_{h <= k} (theta - delta_jh))``; the step
  difficulties ``delta_jh`` are the thresholds, discrimination 1, population SD estimated.

The first group's ability is N(0, 1) (GRM) or N(0, sigma^2) (PCM); further groups have their
own mean and SD where the model identifies them (see :func:`invariance`).

Estimation reuses the Rasch code's machinery (:mod:`research.estimate.irt`): the same
rectangular quadrature grid, the log-likelihood of every case at every node as one sparse
(cases x item-categories) by dense (item-categories x nodes) product, the exact gradient by
Fisher's identity from the expected category counts at the nodes, and standard errors from the
observed information by central differences of that gradient. The optimiser is L-BFGS on an
order-preserving parametrisation of the GRM intercepts.

Item fit: infit and outfit mean squares of the standardised category residuals, averaged
over each case's posterior on the grid (their expectation is exactly 1 when the model holds;
EAP or WLE point abilities of a few Likert items would bias them). Flags use the Rasch code's
0.7-1.3 range.

Categories an item never received are collapsed (the item's observed categories are
renumbered 0, 1, ...), and said so in ``note``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import optimize, stats
from scipy.special import expit, logsumexp

from research.errors import ConfigError, DataError
from research.estimate.irt import FIT_HIGH, FIT_LOW, numeric_info, quadrature, safe_inverse

__all__ = ["D_PROBIT", "OrdinalIRT", "invariance", "ordinal_dif", "pcm_cml", "polr"]

MODELS = ("grm", "pcm")
D_PROBIT = 1.702
DENSE_CELLS = 2_000_000  # a group's response matrix up to this many cells is held dense


# --------------------------------------------------------------------------- data


@dataclass
class _OrdData:
    items: np.ndarray  # item labels
    groups: np.ndarray  # group labels
    case_learner: np.ndarray  # learner label per case
    case_group: np.ndarray  # group code per case (cases sorted by group)
    n_cat: np.ndarray  # categories per item (after collapsing)
    cat_values: list  # original category values per item
    Y: sp.csr_matrix  # cases x (J * Kmax) one-hot
    rows: np.ndarray
    cols: np.ndarray
    cat: np.ndarray
    #: cases sharing each row of ``Y`` (None: one case per row); see :func:`_patterns`
    weight: np.ndarray | None = None
    _blocks: dict = field(default_factory=dict, repr=False)

    @property
    def n_cases(self) -> int:
        return len(self.case_group) if self.weight is None else int(self.weight.sum())

    def counts(self, rows=slice(None)) -> np.ndarray:
        """Answers per item-category column over ``rows`` (each row counted by its weight)."""
        Y = self.Y[rows]
        if self.weight is None:
            return np.asarray(Y.sum(axis=0)).ravel()
        return np.asarray(Y.T @ self.weight[rows]).ravel()

    @property
    def J(self) -> int:
        return len(self.items)

    @property
    def K(self) -> int:
        return int(self.n_cat.max())

    @property
    def G(self) -> int:
        return len(self.groups)

    def group_rows(self, g: int) -> slice:
        idx = np.flatnonzero(self.case_group == g)
        return slice(int(idx[0]), int(idx[-1]) + 1)

    def block(self, g: int) -> tuple:
        """Group ``g``'s rows: (slice, Y, Y transposed, weights or None), sliced once per data set."""
        if g not in self._blocks:
            rows = self.group_rows(g)
            Y = self.Y[rows]
            YT = Y.T.tocsr()
            if Y.shape[0] * Y.shape[1] <= DENSE_CELLS:  # small (response patterns): dense products cost less
                Y, YT = Y.toarray(), np.ascontiguousarray(Y.T.toarray())
            self._blocks[g] = (rows, Y, YT, None if self.weight is None else self.weight[rows])
        return self._blocks[g]


def _ord_data(responses: pd.DataFrame, learner: str, item: str, category: str, group: str | None,
              group_order: list[str] | None = None) -> _OrdData:
    if not isinstance(responses, pd.DataFrame):
        raise DataError(f"responses must be a pandas DataFrame, got {type(responses).__name__}")
    need = [learner, item, category] + ([group] if group else [])
    missing = [c for c in need if c not in responses.columns]
    if missing:
        raise DataError(f"responses lack column(s) {missing}; the columns are {list(responses.columns)}")
    df = responses[need].copy()
    df = df[df[category].notna()]
    if group:
        df = df[df[group].notna()]
    if df.empty:
        raise DataError("responses have no non-missing rows: nothing to fit")
    y = pd.to_numeric(df[category], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(y) | (y < 0) | (y != np.round(y))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"row {i}, column {category!r}: {df[category].iloc[i]!r} is not a category (a whole number 0 or more)")
    df["_y"] = y.astype(int)
    df["_g"] = df[group].astype(str) if group else "all"
    df["_l"] = df[learner].astype(str)
    df["_i"] = df[item].astype(str)
    dup = df.duplicated(["_l", "_g", "_i"])
    if dup.any():
        r = df[dup].iloc[0]
        raise DataError(f"item {r['_i']!r} has two answers from one learner in group {r['_g']!r}; keep one per learner and item")
    items = np.array(sorted(df["_i"].unique()), dtype=object)
    present = set(df["_g"].unique())
    order = [str(g) for g in (group_order or []) if str(g) in present]
    groups = np.array(order + sorted(present - set(order)), dtype=object)
    cat_values, n_cat = [], []
    ycode = np.empty(len(df), dtype=int)
    icode = pd.Categorical(df["_i"], categories=items).codes
    for j in range(len(items)):  # loop over items (few)
        m = icode == j
        vals = np.unique(df["_y"].to_numpy()[m])
        cat_values.append(vals)
        n_cat.append(len(vals))
        ycode[m] = np.searchsorted(vals, df["_y"].to_numpy()[m])
    n_cat = np.array(n_cat)
    one = items[n_cat < 2]
    if len(one):
        raise DataError(f"item {one[0]!r}: every answer is in the same category; an ordinal model needs two or more")
    gcode = pd.Categorical(df["_g"], categories=groups).codes
    cases = pd.DataFrame({"g": gcode, "l": df["_l"].to_numpy()}).drop_duplicates().sort_values(["g", "l"]).reset_index(drop=True)
    key = pd.MultiIndex.from_frame(cases[["g", "l"]])
    rows = key.get_indexer(pd.MultiIndex.from_arrays([gcode, df["_l"].to_numpy()]))
    K = int(n_cat.max())
    cols = icode * K + ycode
    Y = sp.csr_matrix((np.ones(len(df)), (rows, cols)), shape=(len(cases), len(items) * K))
    return _OrdData(items, groups, cases["l"].to_numpy(dtype=object), cases["g"].to_numpy(), n_cat, cat_values,
                    Y, rows, icode.astype(int), ycode)


def _patterns(d: _OrdData) -> _OrdData:
    """The same data with one row per group and distinct response pattern, weighted by its cases.

    A case's marginal likelihood depends only on its group and its answers (missing ones
    included), so the patterns with their counts give exactly the likelihood, gradient and
    information of the cases; a few Likert questions answered by thousands of learners have
    a few hundred distinct patterns. Per-case results (EAP) use the data it came from.
    """
    codes = np.full((len(d.case_group), d.J), -1, dtype=np.int64)
    codes[d.rows, d.cols] = d.cat
    key = np.column_stack([d.case_group, codes])
    base = d.K + 1  # a pattern as one number (group first, so groups stay in blocks) where it fits in 62 bits
    if (d.J + 1) * np.log2(max(base, d.G)) < 62:
        num = np.zeros(len(key), dtype=np.int64)
        for col in range(key.shape[1]):
            num = num * max(base, d.G) + key[:, col] + (col > 0)
        _, first, weight = np.unique(num, return_index=True, return_counts=True)
        uniq = key[first]
    else:
        uniq, weight = np.unique(key, axis=0, return_counts=True)  # sorted: groups stay in blocks
    if len(uniq) == len(key):
        return d
    pr, pj = np.nonzero(uniq[:, 1:] >= 0)
    pc = uniq[pr, 1 + pj]
    Y = sp.csr_matrix((np.ones(len(pr)), (pr, pj * d.K + pc)), shape=(len(uniq), d.Y.shape[1]))
    return _OrdData(d.items, d.groups, np.full(len(uniq), None, dtype=object), uniq[:, 0], d.n_cat, d.cat_values,
                    Y, pr, pj, pc, weight.astype(float))


# --------------------------------------------------------------------------- model algebra


def _grm_probs(a: np.ndarray, c: np.ndarray, theta: np.ndarray, n_cat: np.ndarray):
    """P (J, K, Q) of each category, P* (J, K+1, Q) cumulative, valid mask (J, K)."""
    J, K1 = c.shape
    K = K1 + 1
    valid_c = np.arange(K1)[None, :] < (n_cat - 1)[:, None]
    star = np.zeros((J, K + 1, len(theta)))
    star[:, 0] = 1.0
    eta = a[:, None, None] * theta[None, None, :] + c[:, :, None]
    star[:, 1:K] = np.where(valid_c[:, :, None], expit(eta), 0.0)
    P = star[:, :-1] - star[:, 1:]
    valid = np.arange(K)[None, :] < n_cat[:, None]
    P = np.where(valid[:, :, None], np.clip(P, 1e-300, None), 1.0)
    return P, star, valid


def _pcm_probs(c: np.ndarray, theta: np.ndarray, n_cat: np.ndarray):
    J, K1 = c.shape
    K = K1 + 1
    valid = np.arange(K)[None, :] < n_cat[:, None]
    cc = np.where(valid[:, 1:], c, 0.0)
    psi = np.arange(K)[None, :, None] * theta[None, None, :] + np.concatenate(
        [np.zeros((J, 1)), np.cumsum(cc, axis=1)], axis=1)[:, :, None]
    psi = np.where(valid[:, :, None], psi, -np.inf)
    logP = psi - logsumexp(psi, axis=1, keepdims=True)
    P = np.exp(logP)
    return np.where(valid[:, :, None], P, 1.0), valid


class _Spec:
    """Which parameters are free, and the packing of the free ones into one vector."""

    def __init__(self, model: str, d: _OrdData, share_a: bool, share_c: bool, free_mu: bool, free_sd: bool):
        self.model, self.d = model, d
        self.share_a, self.share_c = share_a, share_c
        G, J, K = d.G, d.J, d.K
        self.Ga = 1 if share_a else G
        self.Gc = 1 if share_c else G
        self.valid_c = np.broadcast_to(np.arange(K - 1)[None, :] < (d.n_cat - 1)[:, None], (self.Gc, J, K - 1))
        self.free = {
            "a": np.full((self.Ga, J), model == "grm"),
            "c": self.valid_c.copy(),
            "mu": np.r_[False, np.full(G - 1, free_mu)],
            "lsd": np.r_[model == "pcm", np.full(G - 1, free_sd)],
        }
        self.shapes = {"a": (self.Ga, J), "c": (self.Gc, J, K - 1), "mu": (G,), "lsd": (G,)}

    def start(self) -> dict:
        d, K = self.d, self.d.K
        c = np.zeros(self.shapes["c"])
        for gi in range(self.Gc):  # groups x items (few)
            rows = slice(None) if self.share_c else d.group_rows(gi)
            counts = d.counts(rows).reshape(d.J, K) + 0.5
            for j in range(d.J):
                n = counts[j, : d.n_cat[j]]
                if self.model == "grm":
                    ge = np.cumsum(n[::-1])[::-1] / n.sum()
                    c[gi, j, : d.n_cat[j] - 1] = np.log(ge[1:] / (1 - ge[1:]))
                else:
                    c[gi, j, : d.n_cat[j] - 1] = np.log(n[1:] / n[:-1])
        return {"a": np.ones(self.shapes["a"]), "c": c, "mu": np.zeros(d.G), "lsd": np.zeros(d.G)}

    def pack(self, p: dict) -> np.ndarray:
        return np.concatenate([p[k][self.free[k]] for k in ("a", "c", "mu", "lsd")])

    def unpack(self, v: np.ndarray, base: dict) -> dict:
        out, i = {}, 0
        for k in ("a", "c", "mu", "lsd"):
            arr = base[k].copy()
            n = int(self.free[k].sum())
            arr[self.free[k]] = v[i: i + n]
            i += n
            out[k] = arr
        return out

    # GRM intercepts are optimised as c_1, log(c_1 - c_2), ... so they stay ordered
    def to_u(self, p: dict) -> dict:
        if self.model != "grm":
            return p
        c = p["c"]
        u = c.copy()
        gaps = np.where(self.valid_c[..., 1:], c[..., :-1] - c[..., 1:], 1.0)
        u[..., 1:] = np.log(np.clip(gaps, 1e-6, None))
        return {**p, "c": u}

    def from_u(self, u: dict) -> dict:
        if self.model != "grm":
            return u
        uc = u["c"]
        steps = np.where(self.valid_c[..., 1:], np.exp(uc[..., 1:]), 0.0)
        c = uc[..., :1] - np.concatenate([np.zeros(uc.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)
        return {**u, "c": c}

    def grad_u(self, u: dict, grad: dict) -> dict:
        if self.model != "grm":
            return grad
        gc = grad["c"]
        tail = np.cumsum(gc[..., ::-1], axis=-1)[..., ::-1]  # sum_{k >= m} grad c_k
        out = gc.copy()
        out[..., 0] = tail[..., 0]
        out[..., 1:] = -np.where(self.valid_c[..., 1:], np.exp(u["c"][..., 1:]), 0.0) * tail[..., 1:]
        return {**grad, "c": out}


def _evaluate(spec: _Spec, p: dict, x: np.ndarray, log_w: np.ndarray, *, need_grad=True, keep=False):
    """Marginal log-likelihood and its gradient (dict like p) by Fisher's identity."""
    d, K = spec.d, spec.d.K
    total = 0.0
    grad = {k: np.zeros(s) for k, s in spec.shapes.items()}
    kept = []
    for g in range(d.G):  # groups (waves or learner groups: few)
        rows, Yg, YgT, wg = d.block(g)
        ga, gc = (0 if spec.share_a else g), (0 if spec.share_c else g)
        sd = np.exp(p["lsd"][g])
        theta = p["mu"][g] + sd * x
        c = p["c"][gc]
        if spec.model == "grm":
            a = p["a"][ga]
            P, star, valid = _grm_probs(a, c, theta, d.n_cat)
        else:
            a = np.ones(d.J)
            P, valid = _pcm_probs(c, theta, d.n_cat)
        logP = np.where(valid[:, :, None], np.log(P), 0.0)
        e = np.asarray(Yg @ logP.reshape(d.J * K, -1))
        e += log_w[None, :]
        # log-sum-exp over the nodes by hand, in place: scipy's logsumexp costs more in checks than in sums here
        top = e.max(axis=1)
        top = np.where(np.isfinite(top), top, 0.0)
        e -= top[:, None]
        np.exp(e, out=e)
        s = e.sum(axis=1)
        lmarg = top + np.log(s)
        W = e
        W /= s[:, None] if wg is None else (s / wg)[:, None]  # posterior over the nodes, times the cases it stands for
        total += float(lmarg.sum() if wg is None else wg @ lmarg)
        r = np.asarray(YgT @ W).reshape(d.J, K, -1)  # expected category counts at the nodes
        if keep and wg is not None:
            W = W / wg[:, None]
        if keep:
            kept.append((g, theta, P, valid, r, W))
        if not need_grad:
            continue
        if spec.model == "grm":
            w = star * (1 - star)  # (J, K+1, Q); zero at k = 0 and k = K_j
            rp = np.where(valid[:, :, None], r / P, 0.0)
            # grad c_m = sum_q w_m (r_m / P_m - r_{m-1} / P_{m-1}), m = 1..K-1
            gcm = (w[:, 1:K] * (rp[:, 1:K] - rp[:, 0: K - 1])).sum(axis=2)
            grad["c"][gc] += np.where(spec.valid_c[gc], gcm, 0.0)
            Dk = (w[:, :-1] - w[:, 1:])  # (J, K, Q)
            S = (rp * Dk).sum(axis=1)  # (J, Q)
            grad["a"][ga] += (S * theta[None, :]).sum(axis=1)
            dth = (a[:, None] * S).sum(axis=0)  # d/d theta_q
        else:
            ks = np.arange(K)[None, :, None]
            n = r.sum(axis=1)  # (J, Q)
            E = (ks * P * valid[:, :, None]).sum(axis=1)
            ge = np.cumsum(r[:, ::-1], axis=1)[:, ::-1]  # R_{>= h}
            Sge = np.cumsum((P * valid[:, :, None])[:, ::-1], axis=1)[:, ::-1]
            gch = (ge[:, 1:] - n[:, None, :] * Sge[:, 1:]).sum(axis=2)
            grad["c"][gc] += np.where(spec.valid_c[gc], gch, 0.0)
            dth = ((ks * r).sum(axis=1) - n * E).sum(axis=0)
        grad["mu"][g] += dth.sum()
        grad["lsd"][g] += (dth * sd * x).sum()
    if keep:
        return total, grad, kept
    return total, grad


@dataclass
class _Fit:
    spec: _Spec
    params: dict
    loglik: float
    n_params: int
    cov: np.ndarray | None
    converged: bool
    iterations: int
    x: np.ndarray
    log_w: np.ndarray


def _fit(d: _OrdData, model: str, **kw) -> _Fit:
    """Fit with one BLAS thread: the products are thin (cases x item-categories x nodes), and many
    threads on a shared, loaded machine were five times slower (as in the Rasch code)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _fit_one_thread(d, model, **kw)


def _fit_one_thread(d: _OrdData, model: str, *, share_a=True, share_c=True, free_mu=True, free_sd=True, n_quad=41,
                    max_iter=2000, se=True, start: dict | None = None) -> _Fit:
    spec = _Spec(model, _patterns(d), share_a, share_c, free_mu, free_sd)
    x, w = quadrature(n_quad)
    log_w = np.log(w)
    base = spec.start() if start is None else start
    n_cases = d.n_cases
    u0 = spec.to_u(base)

    def f(v):
        u = spec.unpack(v, u0)
        p = spec.from_u(u)
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            ll, g = _evaluate(spec, p, x, log_w)
        if not np.isfinite(ll):
            return 1e10, np.zeros_like(v)
        gu = spec.grad_u(u, g)
        return -ll / n_cases, -spec.pack(gu) / n_cases

    res = optimize.minimize(f, spec.pack(u0), jac=True, method="L-BFGS-B",
                            options={"maxiter": max_iter, "gtol": 1e-7, "ftol": 1e-13, "maxcor": 30})
    p = spec.from_u(spec.unpack(res.x, u0))
    ll = -res.fun * n_cases
    k = int(sum(spec.free[key].sum() for key in spec.free))
    cov = None
    if se:
        def grad_nat(v):
            with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
                return spec.pack(_evaluate(spec, spec.unpack(v, p), x, log_w)[1])

        info = numeric_info(grad_nat, spec.pack(p))
        cov = safe_inverse(info)
    return _Fit(spec, p, ll, k, cov, bool(res.success), int(res.nit), x, log_w)


def _se_dict(fit: _Fit) -> dict:
    """Standard errors laid out like the parameters (NaN where fixed)."""
    out = {k: np.full(s, np.nan) for k, s in fit.spec.shapes.items()}
    if fit.cov is None:
        return out
    se = np.sqrt(np.clip(np.diag(fit.cov), 0, None))
    i = 0
    for k in ("a", "c", "mu", "lsd"):
        n = int(fit.spec.free[k].sum())
        out[k][fit.spec.free[k]] = se[i: i + n]
        i += n
    return out


def _cov_index(fit: _Fit) -> dict:
    """Position in the covariance matrix of each free parameter: dict key -> int array like the block (-1 fixed)."""
    out, i = {}, 0
    for k in ("a", "c", "mu", "lsd"):
        idx = np.full(fit.spec.shapes[k], -1)
        n = int(fit.spec.free[k].sum())
        idx[fit.spec.free[k]] = np.arange(i, i + n)
        i += n
        out[k] = idx
    return out


# --------------------------------------------------------------------------- public model


class OrdinalIRT:
    """Graded response or partial credit model by marginal maximum likelihood.

    ``OrdinalIRT("grm").fit(responses)`` with long responses (learner, item, category
    0-based); ``group=`` fits one model over groups (waves, learner groups) with common item
    parameters and a mean and SD per group (the scalar-invariant model: the groups are on one
    linked scale). ``summary()``, ``thresholds()``, ``group_means()``, ``item_fit()``,
    ``category_curves()``, ``information()`` return tidy frames.
    """

    def __init__(self, model: str = "grm", *, n_quad: int = 41, ci_level: float = 0.95, max_iter: int = 2000):
        if model not in MODELS:
            raise ConfigError(f"model={model!r} is not an ordinal model; valid: {list(MODELS)}")
        if not 0 < ci_level < 1:
            raise ConfigError(f"ci_level must lie between 0 and 1, got {ci_level!r}")
        self.model, self.n_quad, self.ci_level, self.max_iter = model, int(n_quad), float(ci_level), int(max_iter)
        self.fitted_ = False

    def fit(self, responses: pd.DataFrame, *, learner: str = "learner_id", item: str = "item_id",
            category: str = "category", group: str | None = None, group_order: list[str] | None = None,
            se: bool = True):
        self.data_ = _ord_data(responses, learner, item, category, group, group_order)
        self.fit_ = _fit(self.data_, self.model, n_quad=self.n_quad, max_iter=self.max_iter, se=se)
        self.se_ = _se_dict(self.fit_)
        self.converged_ = self.fit_.converged
        self.loglik_ = self.fit_.loglik
        self.fitted_ = True
        return self

    def _check(self):
        if not self.fitted_:
            raise ConfigError("call fit() before asking for results")

    @property
    def z_(self) -> float:
        return float(stats.norm.ppf(0.5 + self.ci_level / 2))

    def _notes(self) -> list[str]:
        d = self.data_
        notes = []
        for j in range(d.J):
            vals = d.cat_values[j]
            if len(vals) < vals.max() - vals.min() + 1 or vals.min() > 0:
                notes.append(f"categories {', '.join(str(int(v)) for v in vals)} observed; the others are collapsed")
            else:
                notes.append("")
        return notes

    def thresholds(self) -> pd.DataFrame:
        """One row per item x step: item_id, step (1..), category (the original category the step
        leads to), estimate (GRM: b = -c/a; PCM: delta), se, ci_low, ci_high, method."""
        self._check()
        d, p, se = self.data_, self.fit_.params, self.se_
        cov, idx = self.fit_.cov, _cov_index(self.fit_)
        rows = []
        for j in range(d.J):  # items x steps (few)
            for k in range(d.n_cat[j] - 1):
                c, c_se = p["c"][0, j, k], se["c"][0, j, k]
                if self.model == "grm":
                    a = p["a"][0, j]
                    est = -c / a
                    s = np.nan
                    if cov is not None:
                        ia, ic = idx["a"][0, j], idx["c"][0, j, k]
                        g = np.array([c / a**2, -1 / a])
                        V = cov[np.ix_([ia, ic], [ia, ic])]
                        s = float(np.sqrt(max(g @ V @ g, 0)))
                else:
                    est, s = -c, c_se
                rows.append((d.items[j], k + 1, int(d.cat_values[j][k + 1]), est, s))
        out = pd.DataFrame(rows, columns=["item_id", "step", "category", "estimate", "se"])
        out["ci_low"] = out["estimate"] - self.z_ * out["se"]
        out["ci_high"] = out["estimate"] + self.z_ * out["se"]
        out["method"] = f"{self.model}_mml"
        return out.astype({"item_id": "string", "method": "string"})

    def summary(self) -> pd.DataFrame:
        """One row per item: item_id, model, n (cases who answered), n_categories,
        discrimination, discrimination_se, loading (probit factor loading; GRM only), location (mean
        threshold), threshold_low, threshold_high (first and last), infit, outfit, misfit
        (mean square outside 0.7-1.3), note."""
        self._check()
        d = self.data_
        th = self.thresholds()
        loc = th.groupby("item_id", observed=True)["estimate"].agg(["mean", "first", "last"])
        a = self.fit_.params["a"][0] if self.model == "grm" else np.full(d.J, np.exp(self.fit_.params["lsd"][0]))
        a_se = self.se_["a"][0] if self.model == "grm" else np.full(d.J, np.nan)
        ap = a / D_PROBIT
        fit = self.item_fit()
        out = pd.DataFrame({
            "item_id": d.items, "model": self.model,
            "n": np.bincount(d.cols, minlength=d.J),
            "n_categories": d.n_cat,
            "discrimination": a if self.model == "grm" else np.ones(d.J),
            "discrimination_se": a_se,
            "loading": ap / np.sqrt(1 + ap**2) if self.model == "grm" else np.full(d.J, np.nan),
            "location": loc.loc[d.items, "mean"].to_numpy(),
            "threshold_low": loc.loc[d.items, "first"].to_numpy(),
            "threshold_high": loc.loc[d.items, "last"].to_numpy(),
            "infit": fit["infit"].to_numpy(), "outfit": fit["outfit"].to_numpy(),
            "misfit": fit["misfit"].to_numpy(),
            "note": self._notes(),
        })
        return out.astype({"item_id": "string", "model": "string", "note": "string"})

    def group_means(self) -> pd.DataFrame:
        """One row per group: group, mean, mean_se, ci_low, ci_high, sd, sd_se, n (cases), method.
        The first group is the origin (mean 0) of the linked scale."""
        self._check()
        d, p, se = self.data_, self.fit_.params, self.se_
        sd = np.exp(p["lsd"])
        out = pd.DataFrame({"group": d.groups, "mean": p["mu"], "mean_se": np.nan_to_num(se["mu"], nan=0.0),
                            "sd": sd, "sd_se": np.nan_to_num(se["lsd"], nan=0.0) * sd,
                            "n": np.bincount(d.case_group, minlength=d.G)})
        out["ci_low"] = out["mean"] - self.z_ * out["mean_se"]
        out["ci_high"] = out["mean"] + self.z_ * out["mean_se"]
        out["method"] = f"{self.model}_mml_multigroup"
        return out[["group", "mean", "mean_se", "ci_low", "ci_high", "sd", "sd_se", "n", "method"]].astype(
            {"group": "string", "method": "string"})

    def covariance(self) -> np.ndarray | None:
        return self.fit_.cov

    def _curves(self, theta: np.ndarray):
        d, p = self.data_, self.fit_.params
        if self.model == "grm":
            P, star, valid = _grm_probs(p["a"][0], p["c"][0], theta, d.n_cat)
        else:
            P, valid = _pcm_probs(p["c"][0], theta, d.n_cat)
            star = None
        return P, star, valid

    def category_curves(self, theta: np.ndarray | None = None) -> pd.DataFrame:
        """Long: item_id, category (original value), theta, probability."""
        self._check()
        theta = np.linspace(-4, 4, 81) if theta is None else np.asarray(theta, float)
        d = self.data_
        P, _, valid = self._curves(theta)
        rows = []
        for j in range(d.J):
            for k in range(d.n_cat[j]):
                rows.append(pd.DataFrame({"item_id": d.items[j], "category": int(d.cat_values[j][k]),
                                          "theta": theta, "probability": P[j, k]}))
        return pd.concat(rows, ignore_index=True).astype({"item_id": "string"})

    def information(self, theta: np.ndarray | None = None) -> pd.DataFrame:
        """Long: item_id, theta, information (Fisher information of the item about theta)."""
        self._check()
        theta = np.linspace(-4, 4, 81) if theta is None else np.asarray(theta, float)
        d = self.data_
        P, star, valid = self._curves(theta)
        if self.model == "grm":
            w = star * (1 - star)
            a = self.fit_.params["a"][0]
            info = a[:, None] ** 2 * np.where(valid[:, :, None], (w[:, :-1] - w[:, 1:]) ** 2 / P, 0.0).sum(axis=1)
        else:
            ks = np.arange(d.K)[None, :, None]
            Pv = P * valid[:, :, None]
            E = (ks * Pv).sum(axis=1)
            info = (ks**2 * Pv).sum(axis=1) - E**2
        return pd.DataFrame({"item_id": np.repeat(d.items, len(theta)), "theta": np.tile(theta, d.J),
                             "information": info.ravel()}).astype({"item_id": "string"})

    def item_fit(self, *, low: float = FIT_LOW, high: float = FIT_HIGH) -> pd.DataFrame:
        """Posterior-averaged infit and outfit mean squares per item: item_id, n, infit, outfit, misfit."""
        self._check()
        d, spec = self.data_, self.fit_.spec
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            _, _, kept = _evaluate(spec, self.fit_.params, self.fit_.x, self.fit_.log_w, need_grad=False, keep=True)
        ks = np.arange(d.K)[None, :, None]
        num_out = np.zeros(d.J)
        num_in = np.zeros(d.J)
        den_in = np.zeros(d.J)
        for _, _, P, valid, r, _ in kept:
            Pv = P * valid[:, :, None]
            E = (ks * Pv).sum(axis=1, keepdims=True)
            V = np.clip(((ks - E) ** 2 * Pv).sum(axis=1, keepdims=True), 1e-12, None)
            sq = (ks - E) ** 2
            num_out += (r * sq / V).sum(axis=(1, 2))
            num_in += (r * sq).sum(axis=(1, 2))
            den_in += (r.sum(axis=1) * V[:, 0]).sum(axis=1)
        n = np.bincount(d.cols, minlength=d.J)
        infit, outfit = num_in / den_in, num_out / n
        misfit = (infit > high) | (outfit > high) | (infit < low) | (outfit < low)
        return pd.DataFrame({"item_id": d.items, "n": n, "infit": infit, "outfit": outfit,
                             "misfit": misfit}).astype({"item_id": "string"})

    def eap(self) -> pd.DataFrame:
        """Posterior mean ability (EAP) and SD per case: learner_id, group, theta, se."""
        self._check()
        d = self.data_
        spec = copy.copy(self.fit_.spec)
        spec.d = d  # every case, not the response patterns the fit ran on
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            _, _, kept = _evaluate(spec, self.fit_.params, self.fit_.x, self.fit_.log_w, need_grad=False, keep=True)
        parts = []
        for g, theta, _, _, _, W in kept:
            m = W @ theta
            s = np.sqrt(np.clip(W @ theta**2 - m**2, 0, None))
            rows = d.group_rows(g)
            parts.append(pd.DataFrame({"learner_id": d.case_learner[rows], "group": d.groups[g], "theta": m, "se": s}))
        return pd.concat(parts, ignore_index=True).astype({"learner_id": "string", "group": "string"})


def fit_grm(responses: pd.DataFrame, **kwargs) -> OrdinalIRT:
    return OrdinalIRT("grm", **{k: kwargs.pop(k) for k in ("n_quad", "ci_level") if k in kwargs}).fit(responses, **kwargs)


def fit_pcm(responses: pd.DataFrame, **kwargs) -> OrdinalIRT:
    return OrdinalIRT("pcm", **{k: kwargs.pop(k) for k in ("n_quad", "ci_level") if k in kwargs}).fit(responses, **kwargs)


# --------------------------------------------------------------------------- invariance


def _group_data(d: _OrdData, g: int) -> _OrdData:
    """Group ``g``'s cases as data of one group (the items and their categories as in ``d``)."""
    rows = d.group_rows(g)
    m = (d.rows >= rows.start) & (d.rows < rows.stop)
    return _OrdData(d.items, d.groups[g: g + 1], d.case_learner[rows], np.zeros(rows.stop - rows.start, dtype=int),
                    d.n_cat, d.cat_values, d.Y[rows], d.rows[m] - rows.start, d.cols[m], d.cat[m],
                    None if d.weight is None else d.weight[rows])


@dataclass
class _Separate:
    """The configural model fitted group by group: its log-likelihood and free parameters."""

    loglik: float
    n_params: int
    fits: list


def _configural(d: _OrdData, model: str, *, n_quad: int, start: dict | None, share_a: bool, share_c: bool,
                free_mu: bool, free_sd: bool) -> _Separate:
    """The configural model (every group its own item parameters, ability N(0, 1), PCM: N(0, sd_g^2))
    shares no parameter across groups, so its likelihood is the product of the groups' own: each
    group is fitted alone (fewer parameters, fewer iterations), starting where ``start`` puts it."""
    fits = []
    for g in range(d.G):  # groups (few)
        gs = None if start is None else {"a": start["a"][g: g + 1], "c": start["c"][g: g + 1],
                                         "mu": np.zeros(1), "lsd": start["lsd"][g: g + 1]}
        fits.append(_fit(_group_data(d, g), model, n_quad=n_quad, se=False, start=gs, share_a=True, share_c=True,
                         free_mu=False, free_sd=False))
    return _Separate(float(sum(f.loglik for f in fits)), int(sum(f.n_params for f in fits)), fits)


def _freer_start(fit: _Fit, model: str) -> dict:
    """A fitted invariance level in the parameters of the next freer one, with the same likelihood.

    scalar -> metric: group means move into the group's intercepts (``c_g = c + a mu_g``; PCM:
    every step ``+ mu_g``), means 0. metric -> configural (GRM): group SDs move into the
    group's discriminations (``a_g = a sd_g``), SDs 1.
    """
    if isinstance(fit, _Separate):  # the freest level: nothing follows
        return {}
    p, spec = fit.params, fit.spec
    G = spec.d.G
    a = np.broadcast_to(p["a"], (G, p["a"].shape[1])).copy()
    c = np.broadcast_to(p["c"], (G,) + p["c"].shape[1:]).copy()
    mu, lsd = p["mu"].copy(), p["lsd"].copy()
    if spec.share_c:  # scalar: means into intercepts
        shift = (a * mu[:, None]) if model == "grm" else np.broadcast_to(mu[:, None], a.shape)
        c = np.where(spec.valid_c[0][None], c + shift[:, :, None], 0.0)
        return {"a": a[:1].copy() if model == "grm" else a, "c": c, "mu": np.zeros(G), "lsd": lsd}
    if model == "grm":  # metric: SDs into discriminations
        return {"a": a * np.exp(lsd)[:, None], "c": c, "mu": np.zeros(G), "lsd": np.zeros(G)}
    return {"a": a, "c": c, "mu": mu, "lsd": lsd}


def invariance(responses: pd.DataFrame, *, group: str, model: str = "grm", learner: str = "learner_id",
               item: str = "item_id", category: str = "category", n_quad: int = 31, alpha: float = 0.05,
               group_order: list[str] | None = None) -> pd.DataFrame:
    """Configural, metric and scalar multi-group models compared by likelihood-ratio tests.

    - configural: every group its own discriminations and thresholds (ability N(0, 1) in each);
    - metric: discriminations equal across groups, thresholds free (group SDs free, means 0);
    - scalar: discriminations and thresholds equal (group means and SDs free): only then are
      the groups' means comparable.

    For the PCM (no discriminations) the metric step is the configural one and is left out.

    Returns
    -------
    DataFrame with one row per level: level, loglik, n_params, aic, bic, lr (against the level
    before), df, p, holds (p at or above ``alpha``), n (cases), n_groups, method.
    """
    d = _ord_data(responses, learner, item, category, group, group_order)
    if d.G < 2:
        raise DataError(f"column {group!r} holds one group only: there is nothing to compare")
    levels = [("configural", dict(share_a=False, share_c=False, free_mu=False, free_sd=model == "pcm"))]
    if model == "grm":
        levels.append(("metric", dict(share_a=True, share_c=False, free_mu=False, free_sd=True)))
    levels.append(("scalar", dict(share_a=True, share_c=True, free_mu=True, free_sd=True)))
    n = len(d.case_group)
    # the most constrained model first; its optimum, written in the next model's parameters, is
    # where that model starts (the same likelihood, so the freer fit only has to improve on it)
    fits, start = {}, None
    for name, kw in reversed(levels):
        if name == "configural":  # nothing shared: one fit per group, whose log-likelihoods add up
            fits[name] = _configural(d, model, n_quad=n_quad, start=start, **kw)
        else:
            fits[name] = _fit(d, model, n_quad=n_quad, se=False, start=start, **kw)
        start = _freer_start(fits[name], model)
    rows, prev = [], None
    for name, _ in levels:
        f = fits[name]
        row = {"level": name, "loglik": f.loglik, "n_params": f.n_params, "aic": 2 * f.n_params - 2 * f.loglik,
               "bic": np.log(n) * f.n_params - 2 * f.loglik, "lr": np.nan, "df": np.nan, "p": np.nan}
        if prev is not None:
            lr = max(2 * (prev.loglik - f.loglik), 0.0)
            df = prev.n_params - f.n_params
            row.update(lr=lr, df=df, p=float(stats.chi2.sf(lr, df)) if df > 0 else np.nan)
        rows.append(row)
        prev = f
    out = pd.DataFrame(rows)
    out["holds"] = out["p"].isna() | (out["p"] >= alpha)
    out["n"], out["n_groups"], out["method"] = n, d.G, f"{model}_mml_lr"
    return out.astype({"level": "string", "method": "string"})


# --------------------------------------------------------------------------- ordinal DIF

#: Jodoin & Gierl (2001) bounds on Nagelkerke's Delta R^2 for logistic-regression DIF
DIF_R2_B = 0.035
DIF_R2_C = 0.070


def polr(y: np.ndarray, X: np.ndarray, *, weights: np.ndarray | None = None,
         start_beta: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Proportional-odds logistic regression ``logit P(Y <= k) = tau_k - X beta`` by L-BFGS with the
    exact gradient (the same model as statsmodels' ``OrderedModel`` / R's ``MASS::polr``).

    ``y`` holds category codes 0..K-1 (every one observed). ``weights`` are frequency weights:
    a row with weight w counts as w identical rows, so a table of counts per distinct (y, X)
    gives the estimates, log-likelihood and standard errors of the rows it counts. Returns
    (log-likelihood, beta, se of beta) with standard errors from the observed information
    (central differences of the exact gradient).
    """
    y = np.asarray(y, dtype=int)
    X = np.asarray(X, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    K = int(y.max()) + 1
    n, p = float(w.sum()), X.shape[1]
    cum = np.cumsum(np.bincount(y, weights=w, minlength=K))[:-1] / n
    tau0 = np.log(cum / (1 - cum))

    def nat(v):
        tau = v[p] + np.r_[0.0, np.cumsum(np.exp(v[p + 1:]))]
        return v[:p], tau

    def ll_grad(beta, tau):
        eta = X @ beta
        t = np.r_[-np.inf, tau, np.inf]
        u, low = t[y + 1] - eta, t[y] - eta
        Fu, Fl = expit(u), expit(low)
        P = np.clip(Fu - Fl, 1e-300, None)
        fu, fl = Fu * (1 - Fu), Fl * (1 - Fl)
        g_eta = -w * (fu - fl) / P
        g_tau = np.bincount(y, w * fu / P, minlength=K)[:K - 1] - np.bincount(y, w * fl / P, minlength=K)[1:]
        return float(w @ np.log(P)), X.T @ g_eta, g_tau

    def f(v):
        beta, tau = nat(v)
        ll, gb, gt = ll_grad(beta, tau)
        # chain rule to (tau_0, log increments): d tau_k / d tau_0 = 1, d tau_k / d w_m = exp(w_m) for k >= m
        tail = np.cumsum(gt[::-1])[::-1]
        gw = np.exp(v[p + 1:]) * tail[1:]
        return -ll / n, -np.r_[gb, tail[0], gw] / n

    v0 = np.r_[np.zeros(p) if start_beta is None else start_beta, tau0[0], np.log(np.clip(np.diff(tau0), 1e-6, None))]
    res = optimize.minimize(f, v0, jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-14})
    beta, tau = nat(res.x)

    def g_nat(v):
        _, gb, gt = ll_grad(v[:p], v[p:])
        return np.r_[gb, gt]

    cov = safe_inverse(numeric_info(g_nat, np.r_[beta, tau], h=1e-5))
    return -res.fun * n, beta, np.sqrt(np.clip(np.diag(cov)[:p], 0, None))


def _nagelkerke(ll: float, ll0: float, n: int) -> float:
    r2 = 1 - np.exp(2 * (ll0 - ll) / n)
    return float(r2 / (1 - np.exp(2 * ll0 / n)))


def ordinal_dif(responses: pd.DataFrame, *, group: str, learner: str = "learner_id", item: str = "item_id",
                category: str = "category", alpha: float = 0.05, min_cell_size: int = 10) -> pd.DataFrame:
    """Ordinal logistic-regression DIF per item (Zumbo 1999), with the rest score as the matching.

    For each item, three proportional-odds models (:func:`polr`, the model of statsmodels'
    ``OrderedModel``, fitted with its exact gradient):
    M1 ``rest``, M2 ``rest + group``, M3 ``rest + group + rest x group``, where ``rest`` is the
    case's sum of the construct's other items (cases who answered every item). Uniform DIF is
    M2 vs M1, non-uniform M3 vs M2, both M3 vs M1 (the 2-df test that classifies). Effect size:
    Nagelkerke's Delta R^2 between M3 and M1, classified after Jodoin & Gierl (2001): A
    negligible (Delta R^2 below 0.035 or Benjamini-Hochberg adjusted p at or above ``alpha``),
    B moderate (0.035-0.070), C large (0.070 or more). ``log_odds`` is M2's group coefficient
    (focal against reference: positive = the focal group answers higher at the same rest score).
    With more than two groups the first (sorted) is the reference and each coefficient is
    reported for the group furthest from it.

    Returns
    -------
    DataFrame with item_id, reference_group, focal_group, n, n_reference, n_focal, log_odds,
        log_odds_se, lr_uniform, p_uniform, lr_nonuniform, p_nonuniform, lr, df, p, p_adjusted,
        delta_r2, dif_class (A/B/C), method. Groups smaller than ``min_cell_size`` are dropped first.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _ordinal_dif(responses, group=group, learner=learner, item=item, category=category, alpha=alpha,
                            min_cell_size=min_cell_size)


def _ordinal_dif(responses: pd.DataFrame, *, group: str, learner: str, item: str, category: str, alpha: float,
                 min_cell_size: int) -> pd.DataFrame:
    need = [learner, item, category, group]
    miss = [c for c in need if c not in responses.columns]
    if miss:
        raise DataError(f"responses lack column(s) {miss}; the columns are {list(responses.columns)}")
    df = responses[need].dropna().copy()
    df[group] = df[group].astype(str)
    # one column per item (the first answer where a learner has two), complete cases only; unstack
    # gives pivot_table's sorted rows and columns without its per-group aggregation
    first = df.drop_duplicates([group, learner, item]).set_index([group, learner, item])[category]
    wide = first.astype(float).unstack(item).dropna()
    sizes = wide.groupby(level=0).size()
    keep = sizes.index[sizes >= min_cell_size]
    wide = wide[wide.index.get_level_values(0).isin(keep)]
    groups = sorted(wide.index.get_level_values(0).unique())
    if len(groups) < 2:
        raise DataError(f"fewer than two groups of column {group!r} have {min_cell_size} or more complete answers: no DIF test")
    if wide.shape[1] < 2:
        raise DataError("DIF with the rest score needs two or more items")
    g = wide.index.get_level_values(0).to_numpy()
    G = pd.get_dummies(pd.Categorical(g, categories=groups), drop_first=True, dtype=float).to_numpy()
    total = wide.sum(axis=1).to_numpy()
    n_by = pd.Series(g).value_counts()
    rows = []
    for it in wide.columns:  # items (few)
        y = wide[it].to_numpy()
        rest = total - y
        rest = (rest - rest.mean()) / (rest.std() or 1.0)
        cats = np.unique(y)
        if len(cats) < 2:
            continue
        X1 = rest[:, None]
        X2 = np.column_stack([rest, G])
        X3 = np.column_stack([rest, G, G * rest[:, None]])
        yk = np.searchsorted(cats, y)
        # the rest score takes few values: fit on the distinct (answer, rest, group) rows with their counts
        uniq, cnt = np.unique(np.column_stack([yk, X3]), axis=0, return_counts=True)
        yu, Xu = uniq[:, 0].astype(int), uniq[:, 1:]
        k1, k2 = X1.shape[1], X2.shape[1]
        ll1, _, _ = polr(yu, Xu[:, :k1], weights=cnt)
        ll2, b2, se2 = polr(yu, Xu[:, :k2], weights=cnt)
        ll3, _, _ = polr(yu, Xu, weights=cnt, start_beta=np.r_[b2, np.zeros(X3.shape[1] - k2)])
        # null model: thresholds only (the marginal distribution)
        counts = np.bincount(np.searchsorted(cats, y), minlength=len(cats))
        ll0 = float((counts * np.log(np.clip(counts / counts.sum(), 1e-300, None))).sum())
        q = G.shape[1]
        b, bse = b2[1: 1 + q], se2[1: 1 + q]
        far = int(np.argmax(np.abs(b)))
        lr_u, lr_n = max(2 * (ll2 - ll1), 0), max(2 * (ll3 - ll2), 0)
        lr = lr_u + lr_n
        rows.append({"item_id": str(it), "reference_group": groups[0], "focal_group": groups[far + 1], "n": len(y),
                     "n_reference": int(n_by[groups[0]]), "n_focal": int(n_by[groups[far + 1]]),
                     "log_odds": float(b[far]), "log_odds_se": float(bse[far]),
                     "lr_uniform": lr_u, "p_uniform": float(stats.chi2.sf(lr_u, q)),
                     "lr_nonuniform": lr_n, "p_nonuniform": float(stats.chi2.sf(lr_n, q)),
                     "lr": lr, "df": 2 * q, "p": float(stats.chi2.sf(lr, 2 * q)),
                     "delta_r2": _nagelkerke(ll3, ll0, len(y)) - _nagelkerke(ll1, ll0, len(y))})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    from statsmodels.stats.multitest import multipletests

    out["p_adjusted"] = multipletests(out["p"].to_numpy(), method="fdr_bh")[1]
    sig = out["p_adjusted"] < alpha
    out["dif_class"] = np.where(sig & (out["delta_r2"] >= DIF_R2_C), "C",
                                np.where(sig & (out["delta_r2"] >= DIF_R2_B), "B", "A"))
    out["method"] = "ordinal_logistic_rest_score"
    return out.astype({"item_id": "string", "reference_group": "string", "focal_group": "string",
                       "dif_class": "string", "method": "string"})


# --------------------------------------------------------------------------- PCM by conditional ML


def _esf(eps: list[np.ndarray]) -> np.ndarray:
    """Elementary symmetric functions of polytomous items: coefficients of prod_j sum_k eps_jk t^k."""
    g = np.array([1.0])
    for e in eps:
        g = np.convolve(g, e)
    return g


def pcm_cml(responses: pd.DataFrame, *, learner: str = "learner_id", item: str = "item_id",
            category: str = "category", ci_level: float = 0.95) -> pd.DataFrame:
    """Partial credit model by conditional maximum likelihood (as R's ``eRm::PCM``).

    The likelihood conditions on each learner's raw score, so no population distribution is
    assumed; learners who answered every item enter (complete cases). The thresholds (step
    difficulties ``delta_jh``) are centred to mean 0; standard errors from the inverse
    information of the model with the first threshold fixed, carried to the centred ones.

    Returns
    -------
    DataFrame with item_id, step, category, estimate, se, ci_low, ci_high, n (complete
        learners), method ('pcm_cml').
    """
    d = _ord_data(responses, learner, item, category, None)
    counts = np.bincount(d.rows, minlength=len(d.case_group))
    complete = counts == d.J
    if complete.sum() < 2:
        raise DataError("the conditional PCM needs two or more learners who answered every item")
    Y = d.Y[complete].toarray().reshape(-1, d.J, d.K)
    y = Y.argmax(axis=2)  # (n, J) categories
    r = y.sum(axis=1)
    n_r = np.bincount(r, minlength=int((d.n_cat - 1).sum()) + 1)
    ge = np.stack([(y[:, j][:, None] >= np.arange(1, d.K)[None, :]).sum(axis=0) for j in range(d.J)])  # (J, K-1)
    valid = np.arange(d.K - 1)[None, :] < (d.n_cat - 1)[:, None]
    free = valid.copy()
    free[0, 0] = False  # identification: first threshold fixed during the fit

    def unpack(v):
        c = np.zeros((d.J, d.K - 1))
        c[free] = v
        return c

    def negll(v):
        c = unpack(v)
        eps = [np.exp(np.r_[0.0, np.cumsum(c[j, : d.n_cat[j] - 1])]) for j in range(d.J)]
        gam = _esf(eps)
        ll = float((ge * c)[valid].sum() - (n_r * np.log(gam)).sum())
        # gradient: observed counts at or above each step minus their conditional expectations
        grad = ge.astype(float).copy()
        for j in range(d.J):  # items (few)
            rest = _esf(eps[:j] + eps[j + 1:])
            Pk = np.zeros((len(gam), d.n_cat[j]))
            for k in range(d.n_cat[j]):
                Pk[k: k + len(rest), k] = eps[j][k] * rest
            Pk /= gam[:, None]
            Sge = np.cumsum(Pk[:, ::-1], axis=1)[:, ::-1]
            grad[j, : d.n_cat[j] - 1] -= (n_r[:, None] * Sge[:, 1:]).sum(axis=0)
        return -ll, -grad[free]

    with np.errstate(over="raise"):
        try:
            res = optimize.minimize(negll, np.zeros(int(free.sum())), jac=True, method="BFGS",
                                    options={"gtol": 1e-8, "maxiter": 2000})
        except FloatingPointError as exc:
            raise DataError("the conditional PCM overflowed: too many items or categories for exact score sums") from exc
    v = res.x
    info = numeric_info(lambda w: -negll(w)[1], v)
    cov_free = safe_inverse(info)
    c = unpack(v)
    delta = -c[valid]
    m = len(delta)
    # map free parameters -> centred thresholds: delta = -(A v) with A placing v, then centring
    A = np.zeros((m, len(v)))
    pos = np.flatnonzero(free[valid])
    A[pos, np.arange(len(v))] = -1.0
    C = np.eye(m) - 1.0 / m
    T = C @ A
    cov = T @ cov_free @ T.T
    est = C @ delta
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    z = stats.norm.ppf(0.5 + ci_level / 2)
    jj, kk = np.nonzero(valid)
    out = pd.DataFrame({"item_id": d.items[jj], "step": kk + 1,
                        "category": [int(d.cat_values[j][k + 1]) for j, k in zip(jj, kk)],
                        "estimate": est, "se": se, "ci_low": est - z * se, "ci_high": est + z * se,
                        "n": int(complete.sum()), "method": "pcm_cml"})
    out.attrs.update(converged=bool(res.success or np.abs(negll(v)[1]).max() < 1e-3), loglik=float(-res.fun))
    return out.astype({"item_id": "string", "method": "string"})
