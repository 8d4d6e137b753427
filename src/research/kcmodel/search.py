"""Learning Factors Analysis (LFA): a search for a better KC model, scored by AFM.

Starting from one KC model of a cohort, the search tries, at each step, every candidate
change of the current model:

``split``
    a KC by a factor of its steps: page, module, problem (item), an item feature from the
    items table (any column, e.g. ``item_type``), a custom per-step field, or a step-name
    pattern (a regular expression: matching vs other steps). Each value of the factor
    becomes its own KC (``M1-C1 | page=M1.P2``).
``split_items``
    a KC into two groups of its problems, found from the data: every two-group partition
    of the KC's problems when it has at most ``max_exhaustive_items`` of them, else a
    hill climb of single-problem moves. This is the split a course developer asks for
    ("which of these problems belong together?") when no factor is coded.
``merge``
    two KCs into one (the ``merge_candidates`` most similar pairs by AFM parameters).
``add``
    a new KC on every step of one value of a factor (a multi-KC step gets it beside its
    own KCs).

Every candidate is first scored by a *restricted* AFM fit: the new KCs' intercepts and
slopes are fitted by Newton's method with every other parameter (learner intercepts and
the other KCs) held at the current model's estimates, which needs only the rows of the
changed KCs and so runs in microseconds to milliseconds per candidate, all candidates of
one kind in one vectorised pass. The ``refit`` best candidates by the restricted BIC are
then fitted in full (the exact penalised AFM of :mod:`research.estimate.afm`, Newton
started from the current solution: a warm start) and the best of them is taken when its
BIC is lower than the current model's. The search is best-first (greedy, beam of one) and
stops when no candidate lowers the BIC, at the step budget or the time budget, or on
Ctrl-C (``KeyboardInterrupt``), returning the best path found so far.

Each accepted model is checked by learner-stratified cross-validation (whole learners held
out, their intercept at the training learners' mean; seeded folds): the result's best model is the last
one of the path before the first change that does not lower the CV log-loss (the start
itself when the first change does not), so every change it proposes is supported by CV. The student-step design (rows, learners,
outcomes, per-KC rows and opportunity counts) is built once; a change recomputes
opportunities only for the KCs it touches.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import expit

from research.analyses import N_
from research.errors import ConfigError, DataError
from research.estimate.afm import AFM, logistic_nll

__all__ = ["Candidate", "EXPLANATIONS", "SearchResult", "explain", "search", "search_cohort", "split_recovery"]

OPERATORS = ("split", "split_items", "merge", "add")
DEFAULT_FACTORS = ("page", "module")


#: explanation templates per operator (gettext message ids; fields filled per KC)
EXPLANATIONS = {
    "split": N_("{kc} behaves as {n} skills: its steps differ by {factor} ({groups}); they start at different "
                "difficulty and are learned separately."),
    "split_items": N_("{kc} behaves as two skills: the problems {harder} are harder at first than {easier}, "
                      "and the two groups are learned separately."),
    "merge": N_("{kc} and {other} behave as one skill: practice on either helps the other, and they are "
                "equally hard."),
    "add": N_("The steps with {factor} {value} need a skill of their own beside their KCs: they are harder "
              "than the KCs alone predict and improve with practice."),
}


# --------------------------------------------------------------------------- numeric kernels


def _cumcount(lid: np.ndarray) -> np.ndarray:
    """Position of each row within its learner's block (rows sorted by learner)."""
    n = len(lid)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.r_[True, lid[1:] != lid[:-1]]
    idx = np.arange(n)
    first = np.maximum.accumulate(np.where(start, idx, 0))
    return idx - first


def _group_cumcount(lid: np.ndarray, grp: np.ndarray) -> np.ndarray:
    """Prior rows of the same learner and group (rows sorted by learner, then time)."""
    order = np.lexsort((np.arange(len(lid)), grp, lid))
    key = lid[order].astype(np.int64) * (int(grp.max(initial=0)) + 1) + grp[order]
    out = np.empty(len(lid), dtype=np.int64)
    out[order] = _cumcount(key)
    return out


def _group_newton(o, y, T, grp, n_grp, beta0=None, gamma0=None, iters=25, lower=0.0):
    """Fit (beta_g, gamma_g >= lower) per group with the offset ``o``: logit p = o + beta_g + gamma_g T.

    Returns beta, gamma and the log-likelihood of each group. Vectorised over groups
    (2 x 2 Newton systems solved in closed form, with a small ridge for empty groups).
    """
    beta = np.zeros(n_grp) if beta0 is None else np.asarray(beta0, float).copy()
    gamma = np.full(n_grp, 0.05) if gamma0 is None else np.maximum(np.asarray(gamma0, float).copy(), lower)
    T = T.astype(float)
    bc = lambda w: np.bincount(grp, weights=w, minlength=n_grp)  # noqa: E731
    for _ in range(iters):
        eta = o + beta[grp] + gamma[grp] * T
        p = expit(eta)
        r = y - p
        w = p * (1 - p) + 1e-9
        g1, g2 = bc(r), bc(r * T)
        h11, h12, h22 = bc(w) + 1e-6, bc(w * T), bc(w * T * T) + 1e-6
        det = h11 * h22 - h12 * h12
        db = (h22 * g1 - h12 * g2) / det
        dg = (h11 * g2 - h12 * g1) / det
        new_g = gamma + dg
        at_bound = new_g < lower
        # on the bound: the intercept alone
        db = np.where(at_bound, (g1 - h12 * (lower - gamma)) / h11, db)
        new_g = np.where(at_bound, lower, new_g)
        step = np.maximum(np.abs(db), np.abs(new_g - gamma))
        scale = np.minimum(1.0, 2.0 / np.maximum(step, 1e-12))  # damp long steps
        beta = beta + scale * db
        gamma = gamma + scale * (new_g - gamma)
        if step.max(initial=0.0) < 1e-7:
            break
    eta = o + beta[grp] + gamma[grp] * T
    ll_rows = y * eta - np.logaddexp(0.0, eta)
    return beta, gamma, np.bincount(grp, weights=ll_rows, minlength=n_grp)


def _binary_partitions(n: int, limit: int) -> np.ndarray:
    """All two-group partitions of n things (first thing always in group 0), as a (P, n) 0/1 array."""
    if n < 2:
        return np.zeros((0, n), dtype=np.int8)
    codes = np.arange(1, 2 ** (n - 1), dtype=np.int64)[:limit]
    bits = ((codes[:, None] >> np.arange(n - 1)[None, :]) & 1).astype(np.int8)
    return np.concatenate([np.zeros((len(codes), 1), dtype=np.int8), bits], axis=1)


# --------------------------------------------------------------------------- data structures


@dataclass
class _KC:
    rows: np.ndarray  # sorted row indices (rows are in learner, time order)
    T: np.ndarray  # prior opportunities of the learner at this KC, per row
    beta: float = 0.0
    gamma: float = 0.0
    origin: str = ""  # the start model's KC it came from


@dataclass
class _Model:
    kcs: dict[str, _KC]
    theta: np.ndarray
    ll: float = np.nan
    bic: float = np.nan
    aic: float = np.nan
    n_params: int = 0
    eta: np.ndarray | None = None


@dataclass
class Candidate:
    operator: str
    kcs: tuple[str, ...]  # the KCs changed
    detail: str  # factor, value or groups, in words
    new: dict[str, np.ndarray]  # new KC name -> rows
    removed: tuple[str, ...]
    d_params: int
    d_ll: float = np.nan
    start: dict[str, tuple[float, float]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)  # new KC -> its problems
    n_evaluated: int = 1  # candidate models scored to find this one (all partitions for split_items)

    @property
    def d_bic_restricted(self):
        return -2 * self.d_ll


@dataclass
class SearchResult:
    """The outcome of :func:`search`.

    Attributes
    ----------
    path : DataFrame
        The table ``kc_search``: one row per step of the search (step 0 is the start).
    best : DataFrame
        The chosen KC model per step: item_id, step_id, kc_model, kc.
    explanations : DataFrame
        One row per changed KC of the chosen model: kc, operator, message (gettext id),
        fields, text (English).
    best_step : int
        The step of the path chosen (0: no change supported).
    n_candidates, n_full_fits : int
        Candidates scored (restricted fits) and full AFM fits.
    seconds : float
    stopped : str
        Why the search stopped: ``converged``, ``max_steps``, ``budget`` or ``interrupted``.
    """

    path: pd.DataFrame
    best: pd.DataFrame
    explanations: pd.DataFrame
    best_step: int
    n_candidates: int
    n_full_fits: int
    seconds: float
    stopped: str
    start_model: str
    name: str
    changes: list[Candidate] = field(default_factory=list)

    @property
    def candidates_per_second(self) -> float:
        return self.n_candidates / max(self.seconds, 1e-9)


def _model_steps(steps: pd.DataFrame, kc_model: str) -> pd.DataFrame:
    """The student steps of KC model ``kc_model`` that have a KC (all steps with a KC when the
    frame has no ``kc_model`` column); a missing column, unknown model or no such step is an error."""
    need = {"step_row", "learner_id", "item_id", "step_id", "success", "kc", "opportunity"}
    missing = need - set(steps.columns)
    if missing:
        raise DataError(f"the student-step frame lacks column(s) {sorted(missing)}; build it with "
                        "research.estimate.opportunities.student_steps().")
    if "kc_model" in steps.columns:
        models = sorted(map(str, pd.unique(steps["kc_model"].dropna())))
        if kc_model not in models:
            raise ConfigError(f"KC model {kc_model!r} is not in the data; valid KC models are {models}.")
        long = steps[steps["kc_model"] == kc_model]
    else:
        long = steps
    long = long[long["kc"].notna()]
    if long.empty:
        raise DataError(f"no student steps with a KC for KC model {kc_model!r}.")
    return long


class _Search:
    def __init__(self, steps: pd.DataFrame, kc_model: str, *, items: pd.DataFrame | None, factors, step_fields,
                 step_patterns, learner_penalty: float, cv_folds: int, seed: int):
        long = _model_steps(steps, kc_model)
        rows = long.drop_duplicates("step_row")[["step_row", "learner_id", "item_id", "step_id", "success"]]
        rows = rows.sort_values("step_row", kind="stable").reset_index(drop=True)
        # rows in learner order, then time order (step_row is time order within learner)
        lcode, learners = pd.factorize(rows["learner_id"], sort=True)
        order = np.lexsort((rows["step_row"].to_numpy(), lcode))
        rows = rows.iloc[order].reset_index(drop=True)
        self.lid = lcode[order].astype(np.int64)
        self.learners = learners
        self.nL = len(learners)
        self.y = rows["success"].to_numpy(dtype=float)
        self.n = len(rows)
        self.item = rows["item_id"].astype(str).to_numpy()
        step_key = pd.MultiIndex.from_arrays([rows["item_id"].astype(str), rows["step_id"].astype(str)])
        self.step_code, self.step_index = pd.factorize(step_key)
        pos = pd.Series(np.arange(self.n), index=rows["step_row"].to_numpy())
        long_rows = pos.reindex(long["step_row"].to_numpy()).to_numpy()
        kcs = long["kc"].astype(str).to_numpy()
        self.kc_model = kc_model
        # factors per step (row): page, module, item features, custom fields, patterns
        self.factor_values: dict[str, np.ndarray] = {}
        self._add_factors(steps, items, factors)
        self._add_step_factors(step_fields, step_patterns)
        self.afm = AFM(learner_penalty=learner_penalty, free_slopes=False)
        self.cv_folds = cv_folds
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.fold_of_learner = rng.permutation(np.arange(self.nL) % cv_folds)
        self.start_kcs = self._start_model(long_rows, kcs)

    def _add_factors(self, steps: pd.DataFrame, items: pd.DataFrame | None, factors) -> None:
        """Put the values per step of each factor (``problem``, an items column, ``page`` or
        ``module`` of the steps) in :attr:`factor_values`; an unknown factor is a ConfigError."""
        steps_frame = pd.DataFrame({"item_id": [k[0] for k in self.step_index], "step_id": [k[1] for k in self.step_index]})
        items_cols = pd.DataFrame()
        if items is not None and len(items):
            items_cols = items.drop_duplicates("item_id").set_index(items["item_id"].drop_duplicates().astype(str))
        for f in factors:
            if f == "problem":
                vals = steps_frame["item_id"]
            elif f in items_cols.columns:
                vals = steps_frame["item_id"].map(items_cols[f])
            elif f in ("page", "module") and f in steps.columns:
                m = steps.drop_duplicates(["item_id", "step_id"]).set_index(["item_id", "step_id"])[f]
                vals = pd.Series(m.reindex(self.step_index).to_numpy())
            else:
                raise ConfigError(f"factor {f!r} is not known: not a column of the items table "
                                  f"({sorted(items_cols.columns) if len(items_cols) else 'no items table'}); "
                                  "valid factors are 'page', 'module', 'problem', an items column, "
                                  "a step field (step_fields=) or a step-name pattern (step_patterns=).")
            self.factor_values[f] = pd.Series(vals).astype("string").fillna("").to_numpy(dtype=object)

    def _add_step_factors(self, step_fields: dict | None, step_patterns) -> None:
        """Put the custom step fields and the step-name patterns (yes/no per step) in :attr:`factor_values`."""
        for name, mapping in (step_fields or {}).items():
            m = pd.Series(mapping)
            vals = [m.get(k, m.get(k[1], "")) for k in self.step_index]
            self.factor_values[name] = np.asarray([str(v) for v in vals], dtype=object)
        for pat in step_patterns or ():
            try:
                rx = re.compile(pat)
            except re.error as exc:
                raise ConfigError(f"step pattern {pat!r} is not a valid regular expression: {exc}.") from None
            self.factor_values[f"step name ~ {pat}"] = np.asarray(
                ["yes" if rx.search(k[1]) else "no" for k in self.step_index], dtype=object)

    def _start_model(self, long_rows: np.ndarray, kcs: np.ndarray) -> dict[str, _KC]:
        """The start model's KCs (name -> rows and opportunity counts) from the row (``long_rows``)
        and KC (``kcs``) of each student step and KC pair."""
        order = np.lexsort((long_rows, kcs))
        kcs_s, rows_s = kcs[order], long_rows[order]
        bounds = np.flatnonzero(np.r_[True, kcs_s[1:] != kcs_s[:-1], True])
        start = {}
        for a, b in zip(bounds[:-1], bounds[1:]):
            r = np.unique(rows_s[a:b])
            start[str(kcs_s[a])] = _KC(r, _cumcount(self.lid[r]), origin=str(kcs_s[a]))
        return start

    # ------------------------------------------------------------------ full fits
    def design(self, kcs: dict[str, _KC]):
        names = list(kcs)
        K = len(names)
        r = np.concatenate([kcs[k].rows for k in names])
        c = np.concatenate([np.full(len(kcs[k].rows), i) for i, k in enumerate(names)])
        T = np.concatenate([kcs[k].T for k in names]).astype(float)
        X = sp.csr_matrix((np.r_[np.ones(len(r)), T], (np.r_[r, r], np.r_[c, c + K])), shape=(self.n, 2 * K))
        return names, X

    def fit(self, kcs: dict[str, _KC], theta0=None, *, rows_mask=None) -> _Model:
        names, X = self.design(kcs)
        kcp0 = np.r_[[kcs[k].beta for k in names], [max(kcs[k].gamma, 0.0) for k in names]]
        y, lid, nL = self.y, self.lid, self.nL
        if rows_mask is not None:
            X, y = X[rows_mask], y[rows_mask]
            lid_codes, lid = np.unique(lid[rows_mask], return_inverse=True)
            nL = len(lid_codes)
            theta0 = None if theta0 is None else theta0[lid_codes]
        prob = self.afm._problem(y, lid.astype(np.int64), X, nL)
        theta, kcp, _conv, _it = self.afm._optimise(prob, theta0, kcp0)
        K = len(names)
        out = {k: _KC(kcs[k].rows, kcs[k].T, float(kcp[i]), float(kcp[K + i]), kcs[k].origin) for i, k in enumerate(names)}
        eta = prob.eta(theta, kcp)
        ll = -logistic_nll(eta, y)
        p = nL + 2 * K
        return _Model(out, theta, ll, p * np.log(len(y)) - 2 * ll, 2 * p - 2 * ll, p, eta)

    def cross_validate(self, model: _Model) -> tuple[float, float]:
        """Learner-stratified CV: RMSE and log-loss of held-out learners' first attempts.

        A held-out learner's intercept is the mean of the training learners' intercepts: the
        penalised fit identifies the sum of the learners' mean and a KC's intercept, not
        each (a change of the KC model moves the learners' mean, and with it every KC's
        intercept), so the prior mean 0 would shift every prediction by that move.
        """
        sq, ll, n = 0.0, 0.0, 0
        fold = self.fold_of_learner[self.lid]
        for f in range(self.cv_folds):
            train = fold != f
            m = self.fit(model.kcs, model.theta, rows_mask=train)
            names = list(m.kcs)
            kcp = np.r_[[m.kcs[k].beta for k in names], [m.kcs[k].gamma for k in names]]
            _, X = self.design(model.kcs)
            test = ~train
            p = np.clip(expit(float(np.mean(m.theta)) + X[test] @ kcp), 1e-12, 1 - 1e-12)
            yt = self.y[test]
            sq += float(((yt - p) ** 2).sum())
            ll += float(-(yt * np.log(p) + (1 - yt) * np.log(1 - p)).sum())
            n += int(test.sum())
        return float(np.sqrt(sq / n)), ll / n

    # ------------------------------------------------------------------ candidates
    def _offset_without(self, model: _Model, names) -> np.ndarray:
        eta = model.eta.copy()
        for k in names:
            kc = model.kcs[k]
            eta[kc.rows] -= kc.beta + kc.gamma * kc.T
        return eta

    def _score_groups(self, model, cand_rows, grp, n_grp, o, removed, T=None):
        r = cand_rows
        if T is None:
            T = _group_cumcount(self.lid[r], grp)
        b, g, llg = _group_newton(o[r], self.y[r], T, grp, n_grp)
        ll_old = self._ll_rows(model.eta[r], self.y[r])
        return b, g, float(llg.sum() - ll_old), T

    @staticmethod
    def _ll_rows(eta, y):
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    def split_candidates(self, model: _Model, min_rows: int) -> list[Candidate]:
        out = []
        for k, kc in model.kcs.items():
            o = self._offset_without(model, [k])
            for f, vals in self.factor_values.items():
                v = vals[self.step_code[kc.rows]]
                uniq, grp = np.unique(v, return_inverse=True)
                if len(uniq) < 2:
                    continue
                counts = np.bincount(grp)
                if counts.min() < min_rows:
                    continue
                b, g, dll, _ = self._score_groups(model, kc.rows, grp, len(uniq), o, [k])
                new = {f"{k} | {f}={u}": kc.rows[grp == i] for i, u in enumerate(uniq)}
                start = {name: (float(b[i]), float(g[i])) for i, name in enumerate(new)}
                groups = {name: sorted(set(self.item[rows])) for name, rows in new.items()}
                out.append(Candidate("split", (k,), f"{f}: " + ", ".join(map(str, uniq)), new, (k,),
                                     2 * (len(uniq) - 1), dll, start, groups))
        return out

    def split_item_candidates(self, model: _Model, min_rows: int, max_exhaustive: int) -> list[Candidate]:
        out = []
        for k, kc in model.kcs.items():
            r = kc.rows
            items_k, icode = np.unique(self.item[r], return_inverse=True)
            n_i = len(items_k)
            if n_i < 2:
                continue
            o = self._offset_without(model, [k])
            lid_r, y_r = self.lid[r], self.y[r]
            pos = kc.T.astype(np.int64)  # prior rows of the learner at this KC
            item_rows = np.bincount(icode, minlength=n_i)

            def evaluate(P):
                g = P[:, icode].astype(np.int64)  # (nP, m)
                cs = np.cumsum(g, axis=1) - g
                start_idx = np.arange(len(r)) - pos
                T1 = cs - cs[:, start_idx]
                T = np.where(g == 1, T1, pos[None, :] - T1)
                grp = (np.arange(len(P))[:, None] * 2 + g).ravel()
                oo, yy, TT = np.tile(o[r], len(P)), np.tile(y_r, len(P)), T.ravel()
                b, gm, llg = _group_newton(oo, yy, TT, grp, 2 * len(P))
                ll = llg.reshape(-1, 2).sum(axis=1)
                return b.reshape(-1, 2), gm.reshape(-1, 2), ll, ll

            if n_i <= max_exhaustive:
                P = _binary_partitions(n_i, 2 ** 20)
                sizes = P @ item_rows
                ok = (sizes >= min_rows) & (len(r) - sizes >= min_rows)
                P = P[ok]
                if not len(P):
                    continue
                chunk = max(1, 4_000_000 // max(len(r), 1))
                res = [evaluate(P[i:i + chunk]) for i in range(0, len(P), chunk)]
                B = np.concatenate([x[0] for x in res]); G = np.concatenate([x[1] for x in res])  # noqa: E702
                LL = np.concatenate([x[2] for x in res]); SC = np.concatenate([x[3] for x in res])  # noqa: E702
            else:  # hill climb of single-problem moves from the split by first-attempt success rate
                rate = np.bincount(icode, weights=y_r - expit(o[r]), minlength=n_i) / np.maximum(item_rows, 1)
                cur = (rate < np.median(rate)).astype(np.int8)
                best_ll = -np.inf
                B = G = LL = P = None
                n_scored = 0
                for _ in range(2 * n_i):
                    moves = np.repeat(cur[None, :], n_i + 1, axis=0)
                    moves[np.arange(1, n_i + 1), np.arange(n_i)] ^= 1
                    sizes = moves @ item_rows
                    ok = (sizes >= min_rows) & (len(r) - sizes >= min_rows)
                    if not ok.any():
                        break
                    b, gm, ll, sc = evaluate(moves[ok])
                    n_scored += int(ok.sum())
                    j = int(np.argmax(sc))
                    if sc[j] <= best_ll + 1e-9:
                        break
                    best_ll, cur = sc[j], moves[ok][j]
                    B, G, LL, P, SC = b[j:j + 1], gm[j:j + 1], ll[j:j + 1], moves[ok][j:j + 1], sc[j:j + 1]
                if P is None:
                    continue
            ll_old = self._ll_rows(model.eta[r], y_r)
            j = int(np.argmax(SC))  # the best partition of this KC is its candidate
            part = P[j]
            names = [f"{k} [a]", f"{k} [b]"]
            # [a] is the harder group at the first opportunity
            if B[j, 1] < B[j, 0]:
                part = 1 - part
                B[j] = B[j, ::-1]; G[j] = G[j, ::-1]  # noqa: E702
            rows_g = part[icode]
            new = {names[0]: r[rows_g == 0], names[1]: r[rows_g == 1]}
            groups = {names[0]: sorted(items_k[part == 0]), names[1]: sorted(items_k[part == 1])}
            start = {names[i]: (float(B[j, i]), float(G[j, i])) for i in range(2)}
            out.append(Candidate("split_items", (k,), "problems: " + " | ".join(", ".join(groups[nm]) for nm in names),
                                 new, (k,), 2, float(LL[j] - ll_old), start, groups))
            out[-1].n_evaluated = int(len(LL)) if n_i <= max_exhaustive else int(n_scored)
        return out

    def merge_candidates(self, model: _Model, max_pairs: int) -> list[Candidate]:
        names = list(model.kcs)
        if len(names) < 2:
            return []
        par = np.array([[model.kcs[k].beta, model.kcs[k].gamma * 5] for k in names])
        d = np.abs(par[:, None, :] - par[None, :, :]).sum(axis=2)
        iu = np.triu_indices(len(names), 1)
        order = np.argsort(d[iu], kind="stable")[:max_pairs]
        out = []
        for q in order:
            a, b = names[iu[0][q]], names[iu[1][q]]
            r = np.union1d(model.kcs[a].rows, model.kcs[b].rows)
            o = self._offset_without(model, [a, b])
            T = _cumcount(self.lid[r])
            bb, gg, llg = _group_newton(o[r], self.y[r], T, np.zeros(len(r), dtype=np.int64), 1,
                                        [(model.kcs[a].beta + model.kcs[b].beta) / 2],
                                        [(model.kcs[a].gamma + model.kcs[b].gamma) / 2])
            dll = float(llg.sum() - self._ll_rows(model.eta[r], self.y[r]))
            nm = f"{a} + {b}"
            out.append(Candidate("merge", (a, b), f"{a} and {b}", {nm: r}, (a, b), -2, dll,
                                 {nm: (float(bb[0]), float(gg[0]))}, {nm: sorted(set(self.item[r]))}))
        return out

    def add_candidates(self, model: _Model, min_rows: int) -> list[Candidate]:
        out = []
        for f, vals in self.factor_values.items():
            v = vals[self.step_code]
            uniq, inv = np.unique(v, return_inverse=True)
            if len(uniq) < 2:
                continue
            for i, u in enumerate(uniq):
                r = np.flatnonzero(inv == i)
                if len(r) < min_rows:
                    continue
                T = _cumcount(self.lid[r])
                bb, gg, llg = _group_newton(model.eta[r], self.y[r], T, np.zeros(len(r), dtype=np.int64), 1)
                dll = float(llg.sum() - self._ll_rows(model.eta[r], self.y[r]))
                nm = f"{f}={u}"
                if nm in model.kcs:
                    continue
                out.append(Candidate("add", (nm,), f"{f}: {u}", {nm: r}, (), 2, dll, {nm: (float(bb[0]), float(gg[0]))},
                                     {nm: sorted(set(self.item[r]))}))
        return out

    def apply(self, model: _Model, cand: Candidate) -> dict[str, _KC]:
        kcs = {k: v for k, v in model.kcs.items() if k not in cand.removed}
        origin = ", ".join(model.kcs[k].origin for k in cand.removed) if cand.removed else ""
        for nm, r in cand.new.items():
            b, g = cand.start.get(nm, (0.0, 0.0))
            kcs[nm] = _KC(r, _cumcount(self.lid[r]), b, g, origin or nm)
        return kcs

    def q_matrix(self, kcs: dict[str, _KC], name: str) -> pd.DataFrame:
        frames = []
        for k, kc in kcs.items():
            codes = np.unique(self.step_code[kc.rows])
            frames.append(pd.DataFrame({"item_id": [self.step_index[c][0] for c in codes],
                                        "step_id": [self.step_index[c][1] for c in codes], "kc": k}))
        q = pd.concat(frames, ignore_index=True).drop_duplicates()
        q.insert(2, "kc_model", name)
        return q.sort_values(["item_id", "step_id", "kc"]).reset_index(drop=True)


def _explain(c: Candidate) -> list[dict]:
    rows = []
    if c.operator == "split":
        factor, _, values = c.detail.partition(": ")
        fields = {"kc": c.kcs[0], "n": len(c.new), "factor": factor, "groups": values}
    elif c.operator == "split_items":
        names = list(c.new)
        fields = {"kc": c.kcs[0], "harder": ", ".join(c.groups[names[0]]), "easier": ", ".join(c.groups[names[1]])}
    elif c.operator == "merge":
        fields = {"kc": c.kcs[0], "other": c.kcs[1]}
    else:
        factor, _, value = c.detail.partition(": ")
        fields = {"factor": factor, "value": value}
    rows.append({"kc": c.kcs[0], "operator": c.operator, "message": EXPLANATIONS[c.operator], "fields": fields,
                 "text": EXPLANATIONS[c.operator].format(**fields), "new_kcs": " ~~ ".join(c.new)})
    return rows


def explain(explanations: pd.DataFrame, language: str = "en") -> list[str]:
    """The explanations of a search in a report language (sv, da, en)."""
    from research.report.i18n import translations

    t = translations(language)
    return [t.gettext(m).format(**f) for m, f in zip(explanations["message"], explanations["fields"])]


def search(steps: pd.DataFrame, *, kc_model: str, items: pd.DataFrame | None = None,
           factors=None, step_fields: dict | None = None, step_patterns=(),
           operators=OPERATORS, budget_s: float | None = 60.0, max_steps: int = 50, refit: int = 3,
           min_rows: int = 30, merge_candidates: int = 20, max_exhaustive_items: int = 12,
           learner_penalty: float = 1.0, cv_folds: int = 3, seed: int = 0, name: str | None = None,
           cv: str = "path", on_step=None) -> SearchResult:
    """Learning Factors Analysis from one KC model of a student-step frame (see the module docstring).

    Parameters
    ----------
    steps : student-step KC frame (:func:`research.estimate.opportunities.student_steps`)
    kc_model : the start model
    items : the items table, for item features as factors (any column)
    factors : factors to split by or add KCs for: ``page``, ``module``, ``problem`` or items columns
        (default: ``page`` and ``module`` when the items table has them)
    step_fields : custom factors, ``{name: {step_id or (item_id, step_id): value}}``
    step_patterns : regular expressions on the step name; each is a yes/no factor
    operators : which of ``split``, ``split_items``, ``merge``, ``add`` to use
    budget_s, max_steps : the time budget (seconds; None: none) and the step budget
    refit : candidates fitted in full per step (the best by restricted BIC)
    min_rows : smallest number of student steps of a new KC
    cv : ``"path"`` (CV of each accepted model, used to choose the best) or ``"none"``
    seed : seed of the CV folds (the search itself is deterministic)
    on_step : optional callback ``f(path_row: dict)`` after each accepted step

    Returns
    -------
    SearchResult
    """
    t0 = time.perf_counter()
    factors = _search_factors(steps, items, factors, operators=operators, max_steps=max_steps, budget_s=budget_s, cv=cv)
    s = _Search(steps, kc_model, items=items, factors=factors, step_fields=step_fields,
                step_patterns=list(step_patterns), learner_penalty=learner_penalty, cv_folds=cv_folds, seed=seed)
    name = name or f"{kc_model} (LFA)"
    deadline = None if budget_s is None else t0 + float(budget_s)
    path = _Path(s, kc_model, cv=cv, t0=t0, on_step=on_step)
    stopped = "converged"
    tf = time.perf_counter()
    current = s.fit(s.start_kcs)
    path.n_full += 1
    path.record(0, current, time.perf_counter() - tf, None, 0)
    try:
        for step in range(1, int(max_steps) + 1):
            if deadline is not None and time.perf_counter() > deadline:
                stopped = "budget"
                break
            cands = _candidates(s, current, operators, min_rows=min_rows, merge_candidates=merge_candidates,
                                max_exhaustive_items=max_exhaustive_items)
            n_step = sum(c.n_evaluated for c in cands)
            path.n_cand += n_step
            best, best_model, best_fit_s = _best_change(s, current, cands, path, refit=refit, deadline=deadline)
            if best is None or best_model.bic >= current.bic - 1e-9:
                stopped = "converged"
                break
            current = best_model
            path.changes.append(best)
            path.record(step, current, best_fit_s, best, n_step)
        else:
            stopped = "max_steps"
    except KeyboardInterrupt:
        stopped = "interrupted"
    return _search_result(s, path, stopped, cv=cv, kc_model=kc_model, name=name)


def _search_factors(steps: pd.DataFrame, items: pd.DataFrame | None, factors, *, operators, max_steps: int,
                    budget_s: float | None, cv: str) -> list:
    """:func:`search`'s settings checked; the factors to split by (given, or the defaults the data has)."""
    bad = [o for o in operators if o not in OPERATORS]
    if bad:
        raise ConfigError(f"unknown operator(s) {bad}; valid operators are {list(OPERATORS)}.")
    if int(max_steps) < 0 or (budget_s is not None and budget_s <= 0):
        raise ConfigError("max_steps must be >= 0 and budget_s > 0 (or None).")
    if cv not in ("path", "none"):
        raise ConfigError(f"cv={cv!r}; valid values are 'path' and 'none'.")
    if factors is None:  # the default factors the data has: an items column with values, or a column of the steps
        factors = [f for f in DEFAULT_FACTORS
                   if (items is not None and f in items.columns and items[f].notna().any()) or f in steps.columns]
    return list(factors)


class _Path:
    """The accepted steps of a search: one row per model (with its cross-validation), the models, the changes."""

    def __init__(self, s: "_Search", kc_model: str, *, cv: str, t0: float, on_step=None):
        self.s, self.kc_model, self.cv, self.t0, self.on_step = s, kc_model, cv, t0, on_step
        self.rows, self.models, self.changes = [], [], []
        self.n_cand = self.n_full = 0

    def record(self, step, model, fit_s, cand: Candidate | None, n_step_cands):
        rmse, logloss = self.s.cross_validate(model) if self.cv == "path" else (np.nan, np.nan)
        row = {"step": step, "kc_model": self.kc_model, "operator": cand.operator if cand else "start",
               "kcs": " ~~ ".join(cand.kcs) if cand else "", "detail": cand.detail if cand else self.kc_model,
               "new_kcs": " ~~ ".join(cand.new) if cand else "", "n_kcs": len(model.kcs),
               "n_params": model.n_params, "log_likelihood": model.ll, "bic": model.bic, "aic": model.aic,
               "cv_rmse": rmse, "cv_log_loss": logloss, "n_candidates": n_step_cands, "fit_seconds": fit_s,
               "elapsed_seconds": time.perf_counter() - self.t0}
        self.rows.append(row)
        self.models.append(model)
        if self.on_step is not None:
            self.on_step(row)


def _candidates(s: "_Search", current, operators, *, min_rows: int, merge_candidates: int,
                max_exhaustive_items: int) -> list:
    """Every change of the current KC model the operators propose, scored by restricted fits."""
    cands = []
    if "split" in operators and s.factor_values:
        cands += s.split_candidates(current, min_rows)
    if "split_items" in operators:
        cands += s.split_item_candidates(current, min_rows, max_exhaustive_items)
    if "merge" in operators:
        cands += s.merge_candidates(current, merge_candidates)
    if "add" in operators and s.factor_values:
        cands += s.add_candidates(current, min_rows)
    return cands


def _best_change(s: "_Search", current, cands: list, path: _Path, *, refit: int, deadline: float | None):
    """The best of the ``refit`` best-scored candidates fitted in full: ``(candidate, model, fit seconds)``.

    Candidates whose restricted score says they cannot lower the BIC are not fitted (once one was).
    """
    logN = np.log(s.n)
    scored = sorted(cands, key=lambda c: -2 * c.d_ll + c.d_params * logN)
    best, best_model, best_fit_s = None, None, 0.0
    for c in scored[:max(1, int(refit))]:
        if -2 * c.d_ll + c.d_params * logN >= 0 and best is not None:
            break
        tf = time.perf_counter()
        m = s.fit(s.apply(current, c), current.theta)
        path.n_full += 1
        if best_model is None or m.bic < best_model.bic:
            best, best_model, best_fit_s = c, m, time.perf_counter() - tf
        if deadline is not None and time.perf_counter() > deadline:
            break
    return best, best_model, best_fit_s


def _search_result(s: "_Search", p: _Path, stopped: str, *, cv: str, kc_model: str, name: str) -> SearchResult:
    """The path table, the chosen model (with its Q-matrix) and the explanations of its changes."""
    n_done = min(len(p.rows), len(p.models))  # a step interrupted half-way is dropped whole
    path_rows, models, changes = p.rows[:n_done], p.models[:n_done], p.changes[:n_done - 1]
    path = pd.DataFrame(path_rows)
    # the best model: the path up to the first change that cross-validation does not support
    # (held-out log-loss not lower than before the change); every change on it lowered the BIC
    if cv == "path":
        cvl = path["cv_log_loss"].to_numpy()
        bad = np.flatnonzero(~(cvl[1:] < cvl[:-1]))
        best_step = int(bad[0]) if len(bad) else len(path) - 1
    else:
        best_step = int(path["bic"].idxmin())
    path["chosen"] = path["step"] == best_step
    ex = [_explain(c)[0] for c in changes[:len(path) - 1]]
    path["explanation"] = [""] + [e["text"] for e in ex]
    path["explanation_fields"] = [""] + [json.dumps(e["fields"], ensure_ascii=False, sort_keys=True) for e in ex]
    best_q = s.q_matrix(models[best_step].kcs, name)
    # explanations: the changes on the way to the chosen model whose KCs it still has
    final = set(models[best_step].kcs)
    expl = []
    for c in changes[:best_step]:
        if c.operator == "merge" or any(k in final for k in c.new) or any(
                any(f.startswith(k) for f in final) for k in c.new):
            expl += _explain(c)
    explanations = pd.DataFrame(expl, columns=["kc", "operator", "message", "fields", "text", "new_kcs"])
    return SearchResult(path, best_q, explanations, best_step, p.n_cand, p.n_full, time.perf_counter() - p.t0,
                        stopped, kc_model, name, changes[:best_step])


def split_recovery(result: SearchResult, truth_items: pd.DataFrame, *, coarse: str = "kc_coarse",
                   fine: str = "kc_fine") -> pd.DataFrame:
    """Did the search split each merged KC back into its true parts? (simulated truth)

    For each KC of the coarse model that merges two or more true KCs, the first change of
    the chosen path that splits it is compared with the truth: it recovers the split when
    its problem groups equal the true KCs' problems. Problems that carry two of the merged
    true KCs may sit in either group. A *shared* problem also carries a true KC of another
    coarse KC (the simulator's second multi-KC problem of a module, e.g. ``M1-K4~~M1-K2``):
    its answers show only the sum of its two KCs' easiness, which is the same for both
    placements when the two coarse KCs' true pairs differ in opposite directions, so the
    data cannot place it; ``recovered`` counts it wherever it sits, ``recovered_strict``
    does not. One row per coarse KC: coarse_kc, fine_kcs, split_found,
    recovered, recovered_strict, n_misplaced (problems in the wrong group, shared ones
    excluded), n_shared_misplaced.
    """
    ti = truth_items[["item_id", coarse, fine]].astype(str)
    out = []
    for ck in sorted({k for v in ti[coarse] for k in v.split("~~")}):
        rows = ti[ti[coarse].str.split("~~").map(lambda ks: ck in ks)]
        fines = sorted({f for v in rows[fine] for f in v.split("~~")
                        if ti.loc[ti[fine].str.contains(re.escape(f), regex=True), coarse].str.contains(re.escape(ck)).all()})
        if len(fines) < 2:
            continue
        part, shared = {}, set()
        for it, fv in zip(rows["item_id"], rows[fine]):
            own = [f for f in fv.split("~~") if f in fines]
            if len(own) == 1:
                part[it] = own[0]
                if len(own) < len(fv.split("~~")):
                    shared.add(it)
        change = next((c for c in result.changes if c.operator in ("split", "split_items") and c.kcs[0] == ck), None)
        if change is None:
            out.append({"coarse_kc": ck, "fine_kcs": " ~~ ".join(fines), "split_found": False, "recovered": False,
                        "recovered_strict": False, "n_misplaced": np.nan, "n_shared_misplaced": np.nan})
            continue
        labels = [[(part[i], i in shared) for i in g if i in part] for g in change.groups.values()]
        # each group's truth: the majority label of its own (unshared) problems, else of all
        tops = [max({x for x, _ in v}, key=lambda x: ([y for y, sh in v if not sh].count(x), [y for y, _ in v].count(x)))
                for v in labels if v]
        misplaced = sum(1 for v, t in zip([v for v in labels if v], tops) for x, sh in v if x != t and not sh)
        shared_mis = sum(1 for v, t in zip([v for v in labels if v], tops) for x, sh in v if x != t and sh)
        ok = len(set(tops)) == len(tops) == len(fines) == len(change.groups)
        out.append({"coarse_kc": ck, "fine_kcs": " ~~ ".join(fines), "split_found": True,
                    "recovered": ok and misplaced == 0, "recovered_strict": ok and misplaced + shared_mis == 0,
                    "n_misplaced": misplaced, "n_shared_misplaced": shared_mis})
    return pd.DataFrame(out)


def search_cohort(cohort: str, kc_model: str, *, warehouse=None, **kwargs) -> SearchResult:
    """:func:`search` on a cohort of the warehouse, from its KC model ``kc_model`` (items as factors).

    What ``research kc-model search`` runs; keyword arguments go to :func:`search`.
    """
    from research.cohort import load
    from research.estimate.opportunities import student_steps

    data = load(cohort, warehouse)
    models = data.kc_models()
    if kc_model not in models:
        raise ConfigError(f"cohort {cohort!r} has no KC model {kc_model!r}; its KC models are {models}.")
    kcs = data.attempt_kcs[data.attempt_kcs["kc_model"] == kc_model]
    return search(student_steps(data.attempts, kcs), kc_model=kc_model, items=data.items, **kwargs)
