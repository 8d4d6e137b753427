"""Which student model predicts best? One learner-grouped cross-validation for all of them.

Models (any subset, by name):

``rasch``
    Learner ability + item easiness (logistic, one-hot).
``afm``
    Additive Factors Model (Cen, Koedinger & Junker 2006): learner intercept + KC
    intercept + KC slope x prior opportunities.
``pfa``
    Performance Factors Analysis (Pavlik, Cen & Koedinger 2009): KC intercept + KC x
    prior successes + KC x prior failures.
``best_lr``
    The strong logistic baseline of Gervet et al. (2020) "Best-LR": item and KC one-hots,
    log(1 + count) of the learner's prior successes and prior attempts on each KC and
    overall.
``bkt``
    Bayesian Knowledge Tracing (:class:`research.estimate.bkt.BKT`), one-step-ahead
    prediction.

All logistic models are fitted by L2-penalised maximum likelihood (penalty ``l2 / 2 *
||w||^2`` on every weight but the global intercept) on sparse designs with SciPy's
L-BFGS; no row loop. A step with several KCs gets the features of each of its KCs
(summed, as AFM and PFA define them); BKT predicts such a step by the mean of its KCs'
predictions.

**Evaluation.** Learners are split into ``n_folds`` groups (the same split for every
model); each model is fitted on the other folds and predicts the held-out learners'
first attempts. Learners in the test fold are new to the model: their learner
parameters (Rasch, AFM) are the population mean 0, as for any new cohort; the history
features of PFA, Best-LR and BKT use the learner's own earlier answers, which is what a
tutor would know at that point. Per fold: AUC, RMSE and log-loss; the table gives their
mean and standard deviation over folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from research.errors import ConfigError, DataError, SchemaError

__all__ = [
    "TABLE_COLUMNS", "auc", "compare_student_models", "cross_validate", "fit_logistic", "learner_folds", "log_loss",
    "predict_logistic", "sample_learners",
]

MODELS = ("rasch", "afm", "pfa", "best_lr", "bkt")
#: columns of the ``student_models`` table (data_schema/outputs/student_models.schema.json)
TABLE_COLUMNS = ["kc_model", "model", "auc", "auc_sd", "rmse", "rmse_sd", "log_loss", "log_loss_sd", "n",
                 "n_learners", "n_folds", "method"]


# ---------------------------------------------------------------------- metrics


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with one class only."""
    y = np.asarray(y, dtype=float)
    n1 = y.sum()
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return np.nan
    r = rankdata(p)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def rmse(y, p) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float)) ** 2)))


def log_loss(y, p) -> float:
    p = np.clip(np.asarray(p, float), 1e-15, 1 - 1e-15)
    y = np.asarray(y, float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ---------------------------------------------------------------------- logistic regression


#: designs with at most this many columns (besides a one-hot block) are fitted by Newton's method, wider ones by L-BFGS
NEWTON_MAX_COLUMNS = 500


def fit_logistic(X: sp.spmatrix, y: np.ndarray, *, l2: float = 1.0, max_iter: int = 500,
                 theta0: np.ndarray | None = None, one_hot: int = 0) -> np.ndarray:
    """L2-penalised logistic regression on a sparse design; returns ``[intercept, w...]``.

    Minimises ``sum(log(1 + exp(-s * (b + X w)))) + l2 / 2 * ||w||^2`` (s = 2y - 1), the
    objective of scikit-learn's ``LogisticRegression(C=1/l2)``. ``theta0`` starts the
    optimiser there (a warm start, e.g. the fit of the previous fold); the optimum is the same.

    ``one_hot`` says that the first that many columns are a one-hot block (at most one of them
    non-zero per row: a column per learner in Rasch and AFM). Designs with at most
    :data:`NEWTON_MAX_COLUMNS` other columns are fitted by Newton's method with the exact
    Hessian, the one-hot block's part of it diagonal and eliminated (a Schur complement), in a
    handful of steps where L-BFGS takes hundreds; wider designs by L-BFGS.
    """
    X = sp.csr_matrix(X, dtype=float)
    y = np.asarray(y, dtype=float)
    Xt = X.T.tocsr()
    n, k = X.shape
    sign = 2 * y - 1

    def fun(theta):
        b, w = theta[0], theta[1:]
        z = sign * (b + X @ w)
        # log(1 + exp(-z)) and the residual p - y from one exp, stably for either sign of z
        e = np.exp(-np.abs(z))
        nll = np.sum(np.log1p(e) + np.maximum(-z, 0)) + 0.5 * l2 * (w @ w)
        r = -sign * np.where(z >= 0, e, 1.0) / (1 + e)
        grad = np.concatenate([[r.sum()], Xt @ r + l2 * w])
        return nll, grad

    if theta0 is None:
        p0 = np.clip(y.mean(), 1e-3, 1 - 1e-3)
        theta0 = np.concatenate([[np.log(p0 / (1 - p0))], np.zeros(k)])
    elif len(theta0) != k + 1:
        raise ConfigError(f"theta0 has {len(theta0)} values; the design needs {k + 1} (intercept + {k} columns)")
    theta0 = np.asarray(theta0, dtype=float)
    one_hot = int(one_hot)
    if one_hot and (X[:, :one_hot].getnnz(axis=1) > 1).any():
        raise ConfigError(f"the first {one_hot} columns are not a one-hot block: some row has two of them")
    # one BLAS thread: the small dense steps only lose time to thread start-up
    with threadpool_limits(1):
        if k - one_hot <= NEWTON_MAX_COLUMNS and l2 > 0:
            return _newton(fun, X, theta0, l2=l2, max_iter=max_iter, one_hot=one_hot)
        res = minimize(fun, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-6})
    return res.x


def _newton(fun, X: sp.csr_matrix, theta: np.ndarray, *, l2: float, max_iter: int, one_hot: int = 0,
            tol: float = 1e-12) -> np.ndarray:
    """Damped Newton's method for :func:`fit_logistic`'s objective (strictly convex with ``l2 > 0``).

    The first ``one_hot`` columns' block of the Hessian is diagonal; it is eliminated and the
    rest (intercept and other columns) solved densely. Stops when half the Newton decrement
    ``g' H^-1 g / 2`` (how far the objective is from its minimum, to second order) is below
    ``tol`` times the number of rows.
    """
    n, k = X.shape
    Z = sp.hstack([sp.csr_matrix(np.ones((n, 1))), X[:, one_hot:]]).tocsr()
    Zt = Z.T.tocsr()
    z_row = np.repeat(np.arange(n), np.diff(Z.indptr))
    Lt = X[:, :one_hot].T.tocsr()
    L2t = Lt.multiply(Lt).tocsr()
    zi = np.r_[0, 1 + one_hot + np.arange(k - one_hot)]        # positions of Z's columns in theta
    li = 1 + np.arange(one_hot)
    pen_z = np.full(len(zi), float(l2))
    pen_z[0] = 0.0
    f, g = fun(theta)
    for _ in range(max_iter):
        eta = theta[0] + X @ theta[1:]
        p = 1 / (1 + np.exp(-eta))
        d = p * (1 - p)
        Dz = sp.csr_matrix((Z.data * d[z_row], Z.indices, Z.indptr), shape=Z.shape)   # rows weighted by d
        C = (Zt @ Dz).toarray()
        C[np.diag_indices_from(C)] += pen_z + 1e-12
        gz, gl = g[zi], g[li]
        if one_hot:
            a = L2t @ d + l2                     # the diagonal block
            B = (Lt @ Dz).toarray()              # (one_hot, columns of Z)
            S = C - B.T @ (B / a[:, None])
            xz = np.linalg.solve(S, gz - B.T @ (gl / a))
            xl = (gl - B @ xz) / a
        else:
            xz, xl = np.linalg.solve(C, gz), np.zeros(0)
        step = np.empty_like(theta)
        step[zi], step[li] = xz, xl
        decrement = float(g @ step)
        if decrement / 2 < tol * n:
            break
        t = 1.0
        while True:  # backtracking: the full step nearly always holds
            f_new, g_new = fun(theta - t * step)
            if f_new <= f - 1e-4 * t * decrement or t < 1e-8:
                break
            t /= 2
        theta, f, g = theta - t * step, f_new, g_new
    return theta


def predict_logistic(theta: np.ndarray, X: sp.spmatrix) -> np.ndarray:
    return 1 / (1 + np.exp(-(theta[0] + sp.csr_matrix(X) @ theta[1:])))


# ---------------------------------------------------------------------- designs


def _history(kcf: pd.DataFrame) -> pd.DataFrame:
    """Prior successes and failures per learner x KC and per learner overall (opportunity order)."""
    k = kcf.sort_values(["learner_id", "kc", "opportunity", "step_row"], kind="stable")
    g = k.groupby(["learner_id", "kc"], sort=False, observed=True)["success"]
    k["kc_succ"] = g.cumsum() - k["success"]
    k["kc_att"] = g.cumcount()
    k["kc_fail"] = k["kc_att"] - k["kc_succ"]
    return k


def _step_frame(steps: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per student step (the outcome), and the KC rows with their history."""
    need = ["step_row", "learner_id", "item_id", "kc", "opportunity", "success"]
    missing = [c for c in need if c not in steps.columns]
    if missing:
        raise SchemaError(f"the student-step frame lacks column(s) {missing}; build it with "
                          "research.estimate.opportunities.student_steps.")
    kcf = steps[need + (["step_time"] if "step_time" in steps.columns else [])].copy()
    kcf["success"] = pd.to_numeric(kcf["success"]).astype(int)
    kcf["learner_id"] = kcf["learner_id"].astype(str)
    kcf["kc"] = kcf["kc"].astype(str)
    kcf["item_id"] = kcf["item_id"].astype(str)
    kcf = _history(kcf)
    st = kcf.drop_duplicates("step_row").sort_values("step_row")[["step_row", "learner_id", "item_id", "success"]]
    st = st.reset_index(drop=True)
    # overall history of the learner: earlier steps in time order (step_row is time order within learner)
    gl = st.groupby("learner_id", sort=False)["success"]
    st["all_succ"] = gl.cumsum() - st["success"]
    st["all_att"] = gl.cumcount()
    st["row"] = np.arange(len(st))
    kcf = kcf.merge(st[["step_row", "row"]], on="step_row", how="left")
    return st, kcf


def _onehot(rows: np.ndarray, codes: np.ndarray, n: int, values=None, n_rows: int | None = None) -> sp.csr_matrix:
    v = np.ones(len(rows)) if values is None else np.asarray(values, dtype=float)
    return sp.csr_matrix((v, (rows, codes)), shape=(n_rows, n))


def designs(st: pd.DataFrame, kcf: pd.DataFrame, models) -> dict[str, sp.csr_matrix]:
    """Sparse design matrices (rows = student steps) of the logistic models."""
    N = len(st)
    learner, n_l = pd.factorize(st["learner_id"])[0], st["learner_id"].nunique()
    item, n_i = pd.factorize(st["item_id"])[0], st["item_id"].nunique()
    kcode, kuniq = pd.factorize(kcf["kc"])
    n_k = len(kuniq)
    r = kcf["row"].to_numpy()
    L = _onehot(np.arange(N), learner, n_l, n_rows=N)
    Iw = _onehot(np.arange(N), item, n_i, n_rows=N)
    K = _onehot(r, kcode, n_k, n_rows=N)

    def per_kc(values):
        return _onehot(r, kcode, n_k, values=values, n_rows=N)

    out = {}
    if "rasch" in models:
        out["rasch"] = sp.hstack([L, Iw]).tocsr()
    if "afm" in models:
        out["afm"] = sp.hstack([L, K, per_kc(kcf["opportunity"].to_numpy(float) - 1)]).tocsr()
    if "pfa" in models:
        out["pfa"] = sp.hstack([K, per_kc(kcf["kc_succ"]), per_kc(kcf["kc_fail"])]).tocsr()
    if "best_lr" in models:
        tot = sp.csr_matrix(np.column_stack([np.log1p(st["all_succ"]), np.log1p(st["all_att"])]))
        out["best_lr"] = sp.hstack([Iw, K, per_kc(np.log1p(kcf["kc_succ"])), per_kc(np.log1p(kcf["kc_att"])),
                                    tot]).tocsr()
    return out


def learner_folds(learners: pd.Series, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold (0..n_folds-1) of each row: learners shuffled and dealt round-robin, the same for every model."""
    uniq = np.array(sorted(pd.unique(learners.astype(str))))
    if len(uniq) < n_folds:
        raise DataError(f"{len(uniq)} learner(s) cannot be split into {n_folds} folds; use n_folds <= {len(uniq)}.")
    rng = np.random.default_rng(seed)
    fold_of = pd.Series(np.arange(len(uniq)) % n_folds, index=uniq[rng.permutation(len(uniq))])
    return fold_of.reindex(learners.astype(str).to_numpy()).to_numpy()


# ---------------------------------------------------------------------- the comparison


def sample_learners(steps: pd.DataFrame, max_learners: int | None, seed: int = 0) -> pd.DataFrame:
    """The rows of a random ``max_learners`` learners (all rows when there are no more than that).

    The draw is seeded (``seed``) and independent of the fold split. ``None`` keeps every learner.
    """
    if max_learners is None:
        return steps
    if int(max_learners) < 2:
        raise ConfigError(f"max_learners must be at least 2 (or None for every learner), got {max_learners!r}")
    learners = steps["learner_id"].astype(str)
    uniq = np.array(sorted(pd.unique(learners)))
    if len(uniq) <= max_learners:
        return steps
    keep = np.random.default_rng([seed, 1]).choice(uniq, size=int(max_learners), replace=False)
    return steps[learners.isin(keep).to_numpy()]


def cross_validate(steps: pd.DataFrame, *, models=MODELS, n_folds: int = 5, seed: int = 0, l2: float = 1.0,
                   bkt_settings: dict | None = None, kc_model: str | None = None,
                   max_learners: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Learner-grouped K-fold predictions of every model; returns (per-fold metrics, predictions).

    ``steps`` is the student-step KC frame of one KC model (pick it with ``kc_model`` when
    the frame holds several). ``max_learners`` caps the learners compared: above it a
    seeded random sample of that many learners is cross-validated (None: all). Each
    logistic model's fit of a fold starts from its fit of the previous fold (columns
    without training rows at 0), which reaches the same optimum in fewer iterations.
    """
    models = tuple(models)
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        raise ConfigError(f"unknown student model(s) {unknown or '(none given)'}; valid: {list(MODELS)}")
    if n_folds < 2:
        raise ConfigError(f"n_folds must be at least 2, got {n_folds}")
    if "kc_model" in steps.columns:
        present = sorted(steps["kc_model"].dropna().astype(str).unique())
        if kc_model is None and len(present) > 1:
            raise ConfigError(f"the frame holds several KC models {present}; choose one with kc_model=...")
        if kc_model is not None:
            if kc_model not in present:
                raise ConfigError(f"kc_model={kc_model!r} is not in the frame; valid: {present}")
            steps = steps[steps["kc_model"].astype(str) == kc_model]
    if steps.empty:
        raise DataError("there are no student steps to compare student models on.")
    n_all = steps["learner_id"].nunique()
    steps = sample_learners(steps, max_learners, seed)
    st, kcf = _step_frame(steps)
    y = st["success"].to_numpy(float)
    fold = learner_folds(st["learner_id"], n_folds, seed)
    X = designs(st, kcf, models)
    n_learners = st["learner_id"].nunique()  # Rasch and AFM start with a column per learner
    preds = pd.DataFrame({"row": st["row"], "learner_id": st["learner_id"], "fold": fold, "success": y})
    preds.attrs["n_learners_all"] = n_all
    for name in models:
        p = np.full(len(st), np.nan)
        theta = None
        for f in range(n_folds):
            train, test = fold != f, fold == f
            if name == "bkt":
                p[test] = _bkt_predict(steps, kcf, st, train, test, bkt_settings or {})
            else:
                Xtr = X[name][train]
                if theta is not None:  # warm start; weights of columns with no training row are 0 at the optimum
                    theta = theta.copy()
                    theta[1:][Xtr.getnnz(axis=0) == 0] = 0.0
                theta = fit_logistic(Xtr, y[train], l2=l2, theta0=theta, one_hot=n_learners if name in ("rasch", "afm") else 0)
                p[test] = predict_logistic(theta, X[name][test])
        preds[name] = p
    rows = []
    for f in range(n_folds):
        t = fold == f
        for name in models:
            rows.append({"model": name, "fold": f, "n": int(t.sum()), "auc": auc(y[t], preds.loc[t, name]),
                         "rmse": rmse(y[t], preds.loc[t, name]), "log_loss": log_loss(y[t], preds.loc[t, name])})
    return pd.DataFrame(rows), preds


def _bkt_predict(steps, kcf, st, train, test, settings) -> np.ndarray:
    from research.estimate.bkt import BKT

    # a KC row is a training row when its step is (folds are by learner, so the same learners)
    k = kcf.assign(_train=train[kcf["row"].to_numpy()])
    frame = k[["learner_id", "kc", "opportunity", "success", "item_id", "row"]]
    base = float(st.loc[train, "success"].mean())
    model = BKT(**{"n_starts": 3, **settings}).fit(frame[k["_train"].to_numpy()], time=None)
    test_rows = frame[~k["_train"].to_numpy()].reset_index(drop=True)
    tr = model.trace(test_rows)
    p_kc = pd.Series(np.nan, index=test_rows.index)
    if len(tr):
        p_kc.iloc[tr["row"].to_numpy()] = tr["p_correct"].to_numpy()
    per_step = p_kc.groupby(test_rows["row"].to_numpy()).mean()
    out = per_step.reindex(st.loc[test, "row"].to_numpy()).to_numpy()
    return np.where(np.isnan(out), base, out)


def compare_student_models(steps: pd.DataFrame, *, models=MODELS, n_folds: int = 5, seed: int = 0,
                           l2: float = 1.0, bkt_settings: dict | None = None,
                           kc_model: str | None = None, max_learners: int | None = None) -> pd.DataFrame:
    """The ``student_models`` table: one row per model, mean and fold spread of AUC, RMSE, log-loss.

    Returns
    -------
    DataFrame with ``kc_model``, ``model``, ``auc``, ``auc_sd``, ``rmse``, ``rmse_sd``,
    ``log_loss``, ``log_loss_sd`` (means and standard deviations over folds), ``n``
    (predicted first attempts), ``n_learners`` (learners compared), ``n_folds``, ``method``;
    ordered by AUC, best first. With ``max_learners`` below the learners of the frame the
    comparison runs on a seeded random sample of that many, and ``method`` says so.
    """
    folds, preds = cross_validate(steps, models=models, n_folds=n_folds, seed=seed, l2=l2,
                                  bkt_settings=bkt_settings, kc_model=kc_model, max_learners=max_learners)
    g = folds.groupby("model", sort=False)
    out = g.agg(auc=("auc", "mean"), auc_sd=("auc", "std"), rmse=("rmse", "mean"), rmse_sd=("rmse", "std"),
                log_loss=("log_loss", "mean"), log_loss_sd=("log_loss", "std"), n=("n", "sum")).reset_index()
    out.insert(0, "kc_model", kc_model if kc_model is not None else (
        str(steps["kc_model"].dropna().iloc[0]) if "kc_model" in steps.columns and steps["kc_model"].notna().any() else None))
    out["n_learners"] = preds["learner_id"].nunique()
    out["n_folds"] = n_folds
    out["method"] = f"learner-grouped {n_folds}-fold cross-validation; logistic models L2={l2:g}"
    n_all = preds.attrs["n_learners_all"]
    if n_all > out["n_learners"].iloc[0]:
        out["method"] += f"; a random {out['n_learners'].iloc[0]:,} of {n_all:,} learners (max_learners)"
    out = out.sort_values("auc", ascending=False, kind="stable").reset_index(drop=True)
    out["n"] = out["n"].astype("Int64")
    out["n_learners"] = out["n_learners"].astype("Int64")
    out["n_folds"] = out["n_folds"].astype("Int64")
    return out
