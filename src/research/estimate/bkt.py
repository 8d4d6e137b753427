"""Bayesian Knowledge Tracing (BKT) per knowledge component, fitted by EM on all sequences at once.

BKT (Corbett & Anderson 1995) is a two-state hidden Markov model per KC: a learner
either knows the KC or not. Before the first opportunity they know it with probability
``prior``; after each opportunity an unknown KC becomes known with probability
``learn`` and, with the ``forgetting`` option, a known one is forgotten with probability
``forget`` (standard BKT: 0). A learner who knows the KC still errs with probability
``slip``; one who does not still succeeds with probability ``guess``. With
``item_guess_slip=True`` (KT-IDEM, Pardos & Heffernan 2011) guess and slip are per item
within the KC.

The data are the first attempts of the student-step KC frame
(:func:`research.estimate.opportunities.student_steps`): one sequence per learner and KC,
ordered by the warehouse's opportunity number (never by file order). A step with several
KCs in the KC model is an opportunity for each of its KCs (DataShop's rule, the one the
KC model declares), so its outcome enters the sequence of each of them.

**Speed.** The forward-backward pass runs over every sequence of every KC (and every
random start and bootstrap replicate) at once: sequences are laid out time-major and
sorted by length, so at step ``t`` the sequences still running are one contiguous block
and each step is a handful of numpy operations on it. The M-step is a few ``bincount``
calls. No compiler and no loop over rows or learners (see ``benchmarks/bench_bkt.py``).

**EM.** Several random starts per KC (drawn like pyBKT's: prior U(0, 1), learn
U(0, 0.4), guess U(0, 0.4), slip U(0, 0.3)); each (start, KC) stops when its
log-likelihood changes by less than ``tol``; the start with the highest log-likelihood
wins. Probabilities are kept inside [1e-6, 1 - 1e-6].

**Uncertainty.** ``n_boot`` bootstrap replicates resample learners within each KC and are
refitted (warm start at the point estimate), all in the same vectorised pass; the
summary gives the bootstrap standard error and the percentile interval at ``ci_level`` (95% by
default).

**Degenerate fits** are flagged, not hidden (Baker, Corbett & Aleven 2008): ``guess > 0.5``,
``slip > 0.5``, ``learn`` at a bound (< 0.001 or > 0.999), and ``guess + slip >= 1``
(a learner who knows the KC is no more likely to succeed than one who does not).

**Bad input** never raises for one KC: a KC with one learner, with one opportunity per
learner, with only correct (or only incorrect) first attempts, or whose opportunity
numbers do not follow time (duplicated numbers or timestamps running backwards) is
listed in the output with ``status = "skipped"`` and the reason, and is not fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from research.errors import ConfigError, DataError, SchemaError

__all__ = ["BKT", "fit_bkt", "simulate_bkt"]

EPS = 1e-6
PARAMETERS = ("prior", "learn", "forget", "guess", "slip")

#: why a KC is not fitted (value of ``reason`` in the output)
SKIP_REASONS = {
    "one_learner": "only one learner practised this KC",
    "one_opportunity": "no learner had more than one opportunity on this KC",
    "all_correct": "every first attempt on this KC was correct",
    "all_incorrect": "every first attempt on this KC was incorrect",
    "unordered": "opportunity numbers do not follow the timestamps (duplicated or running backwards)",
}


# ---------------------------------------------------------------------- numeric kernel


@dataclass
class _Layout:
    """Sequences laid out time-major: rows of time ``t`` are ``offsets[t]:offsets[t+1]``.

    Sequences are sorted by length (longest first), so the sequences still running at
    time ``t`` are ranks ``0 .. n_active[t]-1``, and row ``offsets[t] + r`` holds rank r.
    """

    obs: np.ndarray          # (N,) float 0/1, time-major
    group: np.ndarray        # (N,) group (KC or replicate) of the row
    gs: np.ndarray           # (N,) guess/slip index of the row
    seq_group: np.ndarray    # (n_seq,) group of each sequence, by rank
    offsets: np.ndarray      # (T+1,)
    n_active: np.ndarray     # (T,)
    has_next: np.ndarray     # (N,) bool: the row's sequence goes on after it
    perm: np.ndarray         # (N,) time-major position of each input row
    n_groups: int
    n_gs: int
    code: np.ndarray | None = None   # (N,) 2 * gs + obs: row of the emission tables
    seq_rows: tuple | None = None    # rows in sequence order for the compiled kernel
    row_seq: np.ndarray | None = None  # (N,) sequence of each time-major row
    weights: np.ndarray | None = None  # (S, n_seq) weight of each sequence per start (bootstrap counts)

    @property
    def T(self) -> int:
        return len(self.n_active)


def _layout(seq: np.ndarray, pos: np.ndarray, obs: np.ndarray, seq_group: np.ndarray, gs: np.ndarray,
            n_groups: int, n_gs: int) -> _Layout:
    """Build the time-major layout. ``seq`` in 0..n_seq-1, ``pos`` 0-based within the sequence."""
    n_seq = len(seq_group)
    lengths = np.bincount(seq, minlength=n_seq)
    rank_of_seq = np.empty(n_seq, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    rank_of_seq[order] = np.arange(n_seq)
    sorted_len = lengths[order]
    T = int(sorted_len[0]) if n_seq else 0
    # n_active[t] = number of sequences longer than t
    n_active = np.searchsorted(-sorted_len, -np.arange(1, T + 1), side="right").astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_active)])
    perm = offsets[pos] + rank_of_seq[seq]
    N = len(seq)
    o = np.empty(N)
    o[perm] = obs
    g = np.empty(N, dtype=np.int64)
    g[perm] = seq_group[seq]
    s = np.empty(N, dtype=np.int64)
    s[perm] = gs
    rs = np.empty(N, dtype=np.int64)
    rs[perm] = seq
    has_next = np.zeros(N, dtype=bool)
    for t in range(T - 1):
        has_next[offsets[t]:offsets[t] + n_active[t + 1]] = True
    # the same rows in sequence order (sequence by sequence) for the compiled kernel
    step = np.diff(seq)
    in_order = bool((step >= 0).all() and (np.diff(pos)[step == 0] > 0).all())  # the usual case: no sort needed
    by_seq = np.arange(N) if in_order else np.lexsort((pos, seq))
    seq_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # sequences group by group, so that the kernel passes over a converged group's sequences at no cost
    by_group = np.argsort(seq_group, kind="stable").astype(np.int64)
    group_start = np.searchsorted(seq_group[by_group], np.arange(n_groups + 1)).astype(np.int64)
    seq_rows = (obs[by_seq].astype(np.int8), seq_group[seq][by_seq].astype(np.int64), gs[by_seq].astype(np.int64),
                seq_starts, lengths.astype(np.int64), by_group, group_start)
    return _Layout(o, g, s, seq_group[order], offsets, n_active, has_next, perm, n_groups, n_gs,
                   code=2 * s + (o > 0.5), seq_rows=seq_rows, row_seq=rs)


def _weighted(lay: _Layout, weights: np.ndarray) -> _Layout:
    """``lay`` with a weight per start and sequence: start j counts sequence q ``weights[j, q]`` times.

    A bootstrap replicate is then one start over the original sequences (weights: how often each
    was drawn), the same sums as a layout that repeats the drawn sequences, without building it.
    """
    return replace(lay, weights=np.ascontiguousarray(weights, dtype=float))


@dataclass
class _Params:
    prior: np.ndarray   # (S, K)
    learn: np.ndarray   # (S, K)
    forget: np.ndarray  # (S, K)
    guess: np.ndarray   # (S, G)
    slip: np.ndarray    # (S, G)

    def clip(self, forgetting: bool) -> "_Params":
        hi = 1 - EPS
        return _Params(
            np.clip(self.prior, EPS, hi), np.clip(self.learn, EPS, hi),
            np.clip(self.forget, EPS, hi) if forgetting else np.zeros_like(self.forget),
            np.clip(self.guess, EPS, hi), np.clip(self.slip, EPS, hi),
        )

    def take(self, rows: np.ndarray, cols_k: np.ndarray | None = None) -> "_Params":
        return _Params(*(getattr(self, n)[rows] for n in PARAMETERS))


# Inside the kernel arrays are (N, S): rows by time-major position, one column per start,
# so the block of time t is one contiguous slice and sums by group are one sparse product.


def _emissions(lay: _Layout, p: _Params) -> tuple[np.ndarray, np.ndarray]:
    """P(obs | known) and P(obs | unknown) per row, shape (N, S): one gather from a small table."""
    S, G = p.guess.shape
    known = np.empty((2 * G, S))
    unknown = np.empty((2 * G, S))
    known[0::2], known[1::2] = p.slip.T, 1 - p.slip.T          # wrong, right | known
    unknown[0::2], unknown[1::2] = 1 - p.guess.T, p.guess.T    # wrong, right | unknown
    return known[lay.code], unknown[lay.code]


def _forward(lay: _Layout, p: _Params):
    """Predicted p(known) before each row, filtered p(known) after it, and P(obs) per row, (N, S)."""
    S, N = p.prior.shape[0], len(lay.obs)
    e1, e0 = _emissions(lay, p)
    learn_r = p.learn.T[lay.group]
    stay_r = 1 - p.forget.T[lay.group] if p.forget.any() else None
    gain_r = (stay_r if stay_r is not None else 1.0) - learn_r      # p(next known) = learn + f * gain
    P = np.empty((N, S))
    F = np.empty((N, S))
    C = np.empty((N, S))
    cur = p.prior.T[lay.seq_group] if lay.T else np.empty((0, S))
    off = lay.offsets
    for t in range(lay.T):
        a, b = off[t], off[t + 1]
        cur = cur[: b - a]
        num = cur * e1[a:b]
        c = num + (1 - cur) * e0[a:b]
        f = num / c
        P[a:b], F[a:b], C[a:b] = cur, f, c
        cur = learn_r[a:b] + f * gain_r[a:b]
    return P, F, C, learn_r, stay_r


def _indicators(lay: _Layout):
    """Sparse one-hot matrices (transposed) that sum (N, S) arrays by group or guess/slip index."""
    cached = getattr(lay, "_ind", None)
    if cached is not None:
        return cached
    N, K, Gn = len(lay.obs), lay.n_groups, lay.n_gs
    rows = np.arange(N)

    def onehot(mask, index, n):
        r = rows[mask]
        return sp.csr_matrix((np.ones(len(r)), (index[mask], r)), shape=(n, N))

    allrows = np.ones(N, dtype=bool)
    first = np.zeros(N, dtype=bool)
    first[: lay.n_active[0] if lay.T else 0] = True
    wrong = lay.obs < 0.5
    m_group = onehot(allrows, lay.group, K)
    m_hn = onehot(lay.has_next, lay.group, K)
    m_known = sp.vstack([m_hn, onehot(first, lay.group, K), onehot(allrows, lay.gs, Gn),
                         onehot(wrong, lay.gs, Gn)]).tocsr()
    lay._ind = (m_group, m_hn, m_known)
    return lay._ind


def _e_step(lay: _Layout, p: _Params, forgetting: bool = True):
    """Forward-backward; returns per-group log-likelihood (S, K) and the expected counts."""
    P, F, C, learn_r, stay_r = _forward(lay, p)
    N, S = P.shape
    G = np.empty((N, S))
    X = np.zeros((N, 2 * S))          # columns 0..S-1: expected 0->1 transitions, S..2S-1: 1->0
    off, na = lay.offsets, lay.n_active
    for t in range(lay.T - 1, -1, -1):
        a, b = off[t], off[t + 1]
        G[a:b] = F[a:b]
        if t == lay.T - 1:
            continue
        m = na[t + 1]
        a2 = off[t + 1]
        p1 = P[a2:a2 + m]
        s1 = G[a2:a2 + m]
        ff = F[a:a + m]
        r1 = s1 / np.maximum(p1, 1e-300)
        X[a:a + m, :S] = (1 - ff) * learn_r[a:a + m] * r1
        if forgetting:
            r0 = (1 - s1) / np.maximum(1 - p1, 1e-300)
            x10 = ff * (1 - stay_r[a:a + m]) * r0
            X[a:a + m, S:] = x10
            G[a:a + m] = ff * stay_r[a:a + m] * r1 + x10
        else:
            G[a:a + m] = ff * r1
    K, Gn = lay.n_groups, lay.n_gs
    m_group, m_hn, m_known = _indicators(lay)
    logc = np.log(C)
    if lay.weights is not None:
        wr = lay.weights.T[lay.row_seq]   # (N, S)
        logc, X, G = logc * wr, X * np.hstack([wr, wr]), G * wr
    ll = (m_group @ logc).T
    xs = (m_hn @ X).T
    gk = (m_known @ G).T
    known_hn, init = gk[:, :K], gk[:, K:2 * K]
    known, known_wrong = gk[:, 2 * K:2 * K + Gn], gk[:, 2 * K + Gn:]
    return ll, _stats(lay, init, xs[:S], xs[S:], known_hn, known, known_wrong)


def _stats(lay: _Layout, init, x01, x10, known_hn, known, known_wrong) -> dict:
    """The expected counts of the M-step from the E-step's sums (the fixed counts from the layout)."""
    c = _indicators_counts(lay)
    return {
        "init": init, "n_seq": c["n_seq"], "x01": x01, "x10": x10,
        "known_hn": known_hn, "unknown_hn": c["n_hn"] - known_hn,
        "known": known, "known_wrong": known_wrong, "unknown": c["n_gs"] - known,
        "unknown_right": c["n_right_gs"] - (known - known_wrong),
    }


# ---------------------------------------------------------------------- compiled kernel (optional)
#
# numba comes with PyMC (through pytensor), so it is there wherever this package is; it
# compiles at run time, no compiler is needed at install. When it cannot be imported the
# numpy kernel above does the same work (tests check that both give the same numbers).

_KERNEL: list = []


def _compiled_kernel():
    """The numba-compiled :func:`_e_step_seq_py`, or None without numba (imported on first use)."""
    if not _KERNEL:
        try:
            import numba
        except Exception:  # noqa: BLE001 - any import problem means: use numpy
            _KERNEL.append(None)
        else:
            _KERNEL.append(numba.njit(cache=True, nogil=True)(_e_step_seq_py))
    return _KERNEL[0]


def _e_step_seq_py(obs, grp, gs, starts, lengths, by_group, group_start, prior, learn, forget, guess, slip,
                   ll, init, x01, x10, known_hn, known, known_wrong, P, F, skip, w):
    """Forward-backward one sequence at a time (rows sorted by sequence), adding expected counts.

    Sequences are visited group by group (``by_group[group_start[k]:group_start[k + 1]]`` are
    group k's). Sequence ``q`` counts ``w[q]`` times (1 for a fit, the times it was drawn in a
    bootstrap replicate; 0 leaves it out). Groups with ``skip[k]`` (converged) are left out.
    """
    for k in range(len(group_start) - 1):
        if skip[k]:
            continue
        for idx in range(group_start[k], group_start[k + 1]):
            q = by_group[idx]
            wq = w[q]
            if wq == 0:
                continue
            a = starts[q]
            T = lengths[q]
            le = learn[k]
            fo = forget[k]
            cur = prior[k]
            lp = 1.0   # product of P(obs) along the sequence: one log per sequence, not per row
            lq = 0.0
            for t in range(T):
                i = a + t
                g = guess[gs[i]]
                sl = slip[gs[i]]
                if obs[i] > 0:
                    e1 = 1.0 - sl
                    e0 = g
                else:
                    e1 = sl
                    e0 = 1.0 - g
                num = cur * e1
                c = num + (1.0 - cur) * e0
                f = num / c
                P[i] = cur
                F[i] = f
                lp *= c
                if lp < 1e-200:
                    lq += np.log(lp)
                    lp = 1.0
                cur = f * (1.0 - fo) + (1.0 - f) * le
            ll[k] += wq * (lq + np.log(lp))
            i = a + T - 1
            sm = F[i]
            known[gs[i]] += wq * sm
            if obs[i] == 0:
                known_wrong[gs[i]] += wq * sm
            for t in range(T - 2, -1, -1):
                i = a + t
                p1 = P[i + 1]
                ff = F[i]
                r1 = sm / max(p1, 1e-300)
                r0 = (1.0 - sm) / max(1.0 - p1, 1e-300)
                x01[k] += wq * (1.0 - ff) * le * r1
                b10 = ff * fo * r0
                x10[k] += wq * b10
                sm = ff * (1.0 - fo) * r1 + b10
                known_hn[k] += wq * sm
                known[gs[i]] += wq * sm
                if obs[i] == 0:
                    known_wrong[gs[i]] += wq * sm
            init[k] += wq * sm


def _e_step_compiled(lay: _Layout, p: _Params, forgetting: bool = True, skip: np.ndarray | None = None):
    """The E-step of :func:`_e_step` by the compiled kernel, one start at a time."""
    seq_rows = lay.seq_rows
    S, K = p.prior.shape
    Gn = lay.n_gs
    out = {n: np.zeros((S, K)) for n in ("ll", "init", "x01", "x10", "known_hn")}
    out.update({n: np.zeros((S, Gn)) for n in ("known", "known_wrong")})
    P = np.empty(len(lay.obs))
    F = np.empty(len(lay.obs))
    obs, grp, gs, starts, lengths, by_group, group_start = seq_rows
    kernel = _compiled_kernel()
    skip = np.zeros((S, K), dtype=np.bool_) if skip is None else np.ascontiguousarray(skip, dtype=np.bool_)
    ones = np.ones(len(starts)) if lay.weights is None else None
    for j in range(S):
        kernel(obs, grp, gs, starts, lengths, by_group, group_start, p.prior[j], p.learn[j], p.forget[j], p.guess[j], p.slip[j],
               out["ll"][j], out["init"][j], out["x01"][j], out["x10"][j], out["known_hn"][j],
               out["known"][j], out["known_wrong"][j], P, F, skip[j],
               ones if lay.weights is None else lay.weights[j])
    return out["ll"], _stats(lay, out["init"], out["x01"], out["x10"], out["known_hn"], out["known"],
                             out["known_wrong"])


def _indicators_counts(lay: _Layout) -> dict:
    """Sequences, transitions, observations and successes per group (guess/slip index), (1 or S, K or G)."""
    cached = getattr(lay, "_counts", None)
    if cached is None:
        K, Gn, N = lay.n_groups, lay.n_gs, len(lay.obs)
        first = np.zeros(N, dtype=bool)
        first[: lay.n_active[0] if lay.T else 0] = True
        n_seq = len(lay.seq_group)
        w = np.ones((1, n_seq)) if lay.weights is None else lay.weights

        def by(index, mask, n):
            # rows -> (sequence, index) counts, then summed over sequences with their weights
            m = sp.csr_matrix((np.ones(int(mask.sum())), (lay.row_seq[mask], index[mask])), shape=(n_seq, n))
            return np.asarray((m.T @ w.T).T)

        allrows = np.ones(N, dtype=bool)
        cached = {
            "n_seq": by(lay.group, first, K),
            "n_hn": by(lay.group, lay.has_next, K),
            "n_gs": by(lay.gs, allrows, Gn),
            "n_right_gs": by(lay.gs, lay.obs > 0.5, Gn),
        }
        lay._counts = cached
    return cached


def _m_step(st: dict, forgetting: bool) -> _Params:
    with np.errstate(divide="ignore", invalid="ignore"):
        prior = st["init"] / st["n_seq"]
        learn = st["x01"] / st["unknown_hn"]
        forget = st["x10"] / st["known_hn"] if forgetting else np.zeros_like(learn)
        guess = st["unknown_right"] / st["unknown"]
        slip = st["known_wrong"] / st["known"]
    return _Params(prior, learn, forget, guess, slip)


def _em(lay: _Layout, p: _Params, *, forgetting: bool, max_iter: int, tol: float, compiled: bool | None = None,
        accelerate: bool = False):
    """EM until every (start, group) has converged. Returns params, log-lik, iterations, converged.

    ``accelerate`` runs SQUAREM (:func:`_squarem`) instead of plain EM steps.
    """
    p = p.clip(forgetting)
    S, K = p.prior.shape
    use = compiled is not False and _compiled_kernel() is not None
    e_step = _e_step_compiled if use else _e_step
    done = np.zeros((S, K), dtype=bool)
    # guess/slip index -> group, to freeze converged groups' emissions too
    gs_group = np.zeros(lay.n_gs, dtype=np.int64)
    gs_group[lay.gs] = lay.group

    def em_map(p: _Params) -> tuple[np.ndarray, _Params]:
        """One EM step from ``p``: log-likelihood at ``p`` and the M-step (converged groups kept)."""
        # the compiled kernel skips the sequences of converged groups (their log-likelihood reads 0)
        ll, st = e_step(lay, p, forgetting, skip=done) if use else e_step(lay, p, forgetting)
        new = _m_step(st, forgetting)
        keep_k, keep_g = done, done[:, gs_group]
        return ll, _Params(
            np.where(keep_k, p.prior, np.nan_to_num(new.prior, nan=0.5)),
            np.where(keep_k, p.learn, np.nan_to_num(new.learn, nan=EPS)),
            np.where(keep_k, p.forget, np.nan_to_num(new.forget, nan=EPS)),
            np.where(keep_g, p.guess, np.nan_to_num(new.guess, nan=0.5)),
            np.where(keep_g, p.slip, np.nan_to_num(new.slip, nan=0.5)),
        ).clip(forgetting)

    if accelerate:
        return _squarem(em_map, p, done, gs_group, forgetting=forgetting, max_iter=max_iter, tol=tol,
                        final=lambda q: e_step(lay, q, forgetting))
    iters = np.zeros((S, K), dtype=np.int64)
    prev = np.full((S, K), -np.inf)
    for _ in range(max_iter):
        ll, new = em_map(p)
        ll = np.where(done, prev, ll)
        done |= np.abs(ll - prev) < tol
        prev = ll
        if done.all():
            break
        p = new
        iters += ~done
    else:
        ll, _ = e_step(lay, p, forgetting)
    return p, ll, iters, done


def _group_sum(p: _Params, gs_group: np.ndarray) -> np.ndarray:
    """Per (start, group): the sum of a parameter-shaped quantity over the group's parameters."""
    out = p.prior + p.learn + p.forget
    np.add.at(out.T, gs_group, (p.guess + p.slip).T)
    return out


def _squarem(em_map, p0: _Params, done: np.ndarray, gs_group: np.ndarray, *, forgetting: bool, max_iter: int,
             tol: float, final):
    """SQUAREM (Varadhan & Roland 2008, scheme S3) per (start, group), monotone in the likelihood.

    A cycle takes two EM steps ``p1 = F(p0)``, ``p2 = F(p1)``, extrapolates along them
    (``p0 - 2 a r + a^2 v`` with ``r = p1 - p0``, ``v = p2 - 2 p1 + p0``, ``a = -|r| / |v|`` at
    most -1) and takes one EM step from there; where the extrapolated point is worse than
    ``p1`` the cycle ends at ``p2`` instead. It reaches EM's fixed point in a fraction of the
    steps where plain EM crawls (flat likelihoods, parameters near a bound). Iterations count
    EM steps (three per cycle); a group has converged when its log-likelihood changes by less
    than ``tol`` from one cycle to the next.
    """
    S, K = p0.prior.shape
    iters = np.zeros((S, K), dtype=np.int64)
    prev = np.full((S, K), -np.inf)
    fields = ("prior", "learn", "forget", "guess", "slip")
    steps = 0
    while steps + 1 <= max_iter:
        ll0, p1 = em_map(p0)
        steps += 1
        ll0 = np.where(done, prev, ll0)
        done |= np.abs(ll0 - prev) < tol
        prev = ll0
        if done.all() or steps + 2 > max_iter:
            if not done.all():
                p0 = p1
                iters += ~done
            break
        ll1, p2 = em_map(p1)
        r = _Params(*(getattr(p1, f) - getattr(p0, f) for f in fields))
        v = _Params(*(getattr(p2, f) - 2 * getattr(p1, f) + getattr(p0, f) for f in fields))
        rr = _group_sum(_Params(*(getattr(r, f) ** 2 for f in fields)), gs_group)
        vv = _group_sum(_Params(*(getattr(v, f) ** 2 for f in fields)), gs_group)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = -np.sqrt(rr / vv)
        a = np.where(np.isfinite(a), np.minimum(a, -1.0), -1.0)
        ak, ag = a, a[:, gs_group]
        p3 = _Params(*(getattr(p0, f) - 2 * (ak if f in fields[:3] else ag) * getattr(r, f)
                       + (ak if f in fields[:3] else ag) ** 2 * getattr(v, f) for f in fields)).clip(forgetting)
        ll3, p4 = em_map(p3)
        steps += 2
        good = np.isfinite(ll3) & (ll3 >= ll1)
        gk, gg = good, good[:, gs_group]
        p0 = _Params(*(np.where(gk if f in fields[:3] else gg, getattr(p4, f), getattr(p2, f)) for f in fields))
        iters += 3 * ~done
    if not done.all():
        ll0, _ = final(p0)
        ll0 = np.where(done, prev, ll0)
    return p0, ll0, iters, done


def _pick(p: _Params, best: np.ndarray, gs_group: np.ndarray) -> _Params:
    """One start per group: ``best[k]`` for group k (and its guess/slip slots)."""
    K, G = p.prior.shape[1], p.guess.shape[1]
    return _Params(
        p.prior[best, np.arange(K)][None], p.learn[best, np.arange(K)][None],
        p.forget[best, np.arange(K)][None], p.guess[best[gs_group], np.arange(G)][None],
        p.slip[best[gs_group], np.arange(G)][None],
    )


def _random_params(rng: np.random.Generator, S: int, K: int, G: int, forgetting: bool) -> _Params:
    return _Params(
        rng.uniform(0, 1, (S, K)), rng.uniform(0, 0.4, (S, K)),
        rng.uniform(0, 0.2, (S, K)) if forgetting else np.zeros((S, K)),
        rng.uniform(0, 0.4, (S, G)), rng.uniform(0, 0.3, (S, G)),
    )


# ---------------------------------------------------------------------- input checks


def _prepare(frame: pd.DataFrame, *, learner: str, kc: str, opportunity: str, success: str,
             time: str | None, item: str | None, kc_model: str | None, kc_model_column: str):
    need = [learner, kc, opportunity, success]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"the student-step frame lacks column(s) {missing}; its columns are {list(frame.columns)}. "
            "Build it with research.estimate.opportunities.student_steps or pass the column names."
        )
    df = frame
    if kc_model_column in df.columns:
        models = sorted(df[kc_model_column].dropna().astype(str).unique())
        if kc_model is None:
            if len(models) > 1:
                raise ConfigError(f"the frame holds several KC models {models}; choose one with kc_model=...")
        elif kc_model not in models:
            raise ConfigError(f"kc_model={kc_model!r} is not in the frame; valid: {models}")
        else:
            df = df[df[kc_model_column].astype(str) == kc_model]
    if df.empty:
        raise DataError("there are no student steps to fit BKT on.")
    out = pd.DataFrame({
        "learner": _as_category(df[learner]),
        "kc": _as_category(df[kc]),
        "opportunity": pd.to_numeric(df[opportunity], errors="coerce").to_numpy(dtype=float),
        "success": pd.to_numeric(df[success], errors="coerce").to_numpy(dtype=float),
        "row": np.arange(len(df)),
    })
    bad = ~np.isin(out["success"].to_numpy(), [0.0, 1.0])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"column {success!r} must be 0 or 1; row {i} has {df[success].iloc[i]!r}.")
    out["item"] = df[item].astype("string").to_numpy() if item and item in df.columns else "_"
    out["time"] = pd.to_datetime(df[time]).to_numpy() if time and time in df.columns else pd.NaT
    out = out[out["kc"].notna() & out["learner"].notna()]
    return out, df.index


def _as_category(values: pd.Series) -> pd.Categorical:
    """Ids as a categorical of strings; only the distinct values are converted (fast on big frames)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    names = pd.Index(uniques).astype(str)
    return pd.Categorical.from_codes(codes, categories=names) if names.is_unique else \
        pd.Categorical(pd.Series(values).astype("string"))


def check_kcs(prepared: pd.DataFrame) -> pd.DataFrame:
    """One row per KC: ``kc``, ``n_learners``, ``n_obs``, ``status`` (fit / skipped) and ``reason``."""
    d = prepared
    g = d.groupby("kc", sort=True, observed=True)
    per = g.agg(n_learners=("learner", "nunique"), n_obs=("success", "size"), mean=("success", "mean"))
    seq = d.groupby(["kc", "learner"], sort=False, observed=True)
    longest = seq.size().groupby(level=0).max().reindex(per.index)
    # opportunity numbers must be unique per learner and KC, present, and follow time
    bad = d["opportunity"].isna().to_numpy() | d.duplicated(["kc", "learner", "opportunity"]).to_numpy()
    if d["time"].notna().any():
        srt = d.sort_values(["kc", "learner", "opportunity"], kind="stable")
        back = srt.groupby(["kc", "learner"], sort=False, observed=True)["time"].diff() < pd.Timedelta(0)
        bad = bad | back.reindex(d.index).to_numpy(dtype=bool)
    bad_kcs = set(d.loc[bad, "kc"].astype(str))
    unordered = np.array([k in bad_kcs for k in per.index.astype(str)], dtype=bool)
    reason = np.full(len(per), None, dtype=object)
    conds = [
        ("unordered", unordered),
        ("one_learner", per["n_learners"].to_numpy() < 2),
        ("one_opportunity", longest.to_numpy() < 2),
        ("all_correct", per["mean"].to_numpy() == 1),
        ("all_incorrect", per["mean"].to_numpy() == 0),
    ]
    for name, mask in reversed(conds):  # the first condition in the list wins
        reason = np.where(mask, name, reason)
    out = per.reset_index()[["kc", "n_learners", "n_obs"]]
    out["status"] = np.where(pd.isna(reason), "fit", "skipped")
    out["reason"] = reason
    return out


def _sort(d: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by KC, learner, opportunity (then input order), on integer codes."""
    kc = pd.factorize(d["kc"], sort=True)[0]
    learner = pd.factorize(d["learner"], sort=True)[0]
    order = np.lexsort((d["row"].to_numpy(), d["opportunity"].to_numpy(), learner, kc))
    return d.iloc[order]


def _sequences(d: pd.DataFrame, kc_idx: pd.Index):
    """For rows sorted by :func:`_sort`: KC index per row, sequence per row, sequence starts, position."""
    kcode, kuniq = pd.factorize(d["kc"])
    k = kc_idx.get_indexer(pd.Index(kuniq).astype(str))[kcode]
    lcode = pd.factorize(d["learner"])[0]
    n = len(d)
    new = np.ones(n, dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (lcode[1:] != lcode[:-1])
    seq = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    return k, seq, starts, np.arange(n) - starts[seq]


# ---------------------------------------------------------------------- the model


@dataclass
class BKT:
    """Bayesian Knowledge Tracing per KC, fitted by EM (vectorised over all KCs and starts).

    Parameters
    ----------
    forgetting
        Also fit ``forget`` (probability of losing a known KC between opportunities).
    item_guess_slip
        KT-IDEM: guess and slip per item within each KC (``item`` column).
    n_starts
        Random starts of EM per KC; the best log-likelihood wins.
    max_iter, tol
        EM stops for a KC when its log-likelihood changes by less than ``tol``.
    screen_iter
        All starts run this many EM iterations; then each KC goes on from its best start
        only (the usual short-runs-then-long strategy; ``starts_at_best`` in the output
        counts the starts within 1 log-likelihood unit of the best at that point).
        0 runs every start to convergence.
    accelerate
        SQUAREM-accelerated EM (Varadhan & Roland 2008): the same fixed point as plain EM
        in a fraction of the iterations (``iterations`` counts EM steps either way); False
        runs plain EM.
    engine
        ``"auto"`` (the compiled kernel when numba imports, else numpy), ``"numpy"`` or
        ``"numba"``. Both give the same numbers.
    n_boot
        Bootstrap replicates (learners resampled within KC) for standard errors and
        intervals; 0 for none.
    ci_level
        Level of the bootstrap percentile intervals (``*_ci_low``, ``*_ci_high``).
    seed
        Seed of the random starts and the bootstrap.
    """

    forgetting: bool = False
    item_guess_slip: bool = False
    n_starts: int = 5
    max_iter: int = 200
    tol: float = 1e-4
    n_boot: int = 0
    ci_level: float = 0.95
    seed: int = 0
    screen_iter: int = 10
    engine: str = "auto"
    accelerate: bool = True
    columns: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.n_starts < 1:
            raise ConfigError(f"n_starts must be at least 1, got {self.n_starts}")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter must be at least 1, got {self.max_iter}")
        if self.n_boot < 0:
            raise ConfigError(f"n_boot must be 0 or more, got {self.n_boot}")
        if not 0 < float(self.ci_level) < 1:
            raise ConfigError(f"ci_level must be between 0 and 1 (for example 0.95), got {self.ci_level!r}")
        if self.engine not in ("auto", "numpy", "numba"):
            raise ConfigError(f"engine={self.engine!r} is not valid; valid: 'auto', 'numpy', 'numba'")
        if self.engine == "numba" and _compiled_kernel() is None:
            raise ConfigError("engine='numba' needs numba, which cannot be imported here; use engine='numpy'")

    @property
    def _compiled(self) -> bool | None:
        return {"auto": None, "numpy": False, "numba": True}[self.engine]

    # -- fitting
    def fit(self, steps: pd.DataFrame, *, kc_model: str | None = None, learner: str = "learner_id",
            kc: str = "kc", opportunity: str = "opportunity", success: str = "success",
            time: str | None = "step_time", item: str | None = "item_id",
            kc_model_column: str = "kc_model") -> "BKT":
        """Fit every KC of ``steps`` (the student-step KC frame, one KC model)."""
        self.kc_model_ = kc_model
        self.columns = dict(learner=learner, kc=kc, opportunity=opportunity, success=success, time=time,
                            item=item, kc_model_column=kc_model_column)
        d, _ = _prepare(steps, kc_model=kc_model, **self.columns)
        self.checks_ = check_kcs(d)
        fit_kcs = self.checks_.loc[self.checks_["status"] == "fit", "kc"].astype(str).tolist()
        self.kcs_ = fit_kcs
        d = _sort(d[d["kc"].isin(fit_kcs)])
        self.data_ = d.reset_index(drop=True)
        rng = np.random.default_rng(self.seed)
        if not fit_kcs:
            self._finish(None, None, None, None, None)
            return self
        lay, kc_idx, gs_names = self._build(self.data_)
        K, G = lay.n_groups, lay.n_gs
        S = self.n_starts
        start = _random_params(rng, S, K, G, self.forgetting)
        gs_group = np.zeros(G, dtype=np.int64)
        gs_group[lay.gs] = lay.group
        screen = self.screen_iter if (self.screen_iter and S > 1) else self.max_iter
        p, ll, iters, conv = _em(lay, start, forgetting=self.forgetting, max_iter=min(screen, self.max_iter),
                                 tol=self.tol, compiled=self._compiled, accelerate=self.accelerate)
        if screen < self.max_iter and not conv.all():
            # go on from the best start of each KC only (all starts agree on most KCs by now)
            best = np.argmax(np.where(np.isfinite(ll), ll, -np.inf), axis=0)
            p1, ll1, it1, conv1 = _em(lay, _pick(p, best, gs_group), forgetting=self.forgetting,
                                      max_iter=self.max_iter - screen, tol=self.tol, compiled=self._compiled,
                                      accelerate=self.accelerate)
            self.starts_at_best_ = (np.abs(ll - ll[best, np.arange(K)][None]) < 1.0).sum(axis=0)
            p, ll, iters, conv = p1, ll1, it1 + iters[best, np.arange(K)], conv1
        else:
            best = np.argmax(np.where(np.isfinite(ll), ll, -np.inf), axis=0)
            self.starts_at_best_ = (np.abs(ll - ll[best, np.arange(K)][None]) < 1e-2).sum(axis=0)
            p, ll, iters, conv = _pick(p, best, gs_group), ll[best, np.arange(K)][None], \
                iters[best, np.arange(K)][None], conv[best, np.arange(K)][None]
        pick = p
        self.params_arr_ = pick
        self.gs_names_ = gs_names
        self.gs_group_ = gs_group
        self.loglik_ = ll[0]
        self.iterations_ = iters[0]
        self.converged_ = conv[0]
        boot = self._bootstrap(rng, lay) if self.n_boot else None
        self._finish(pick, boot, lay, kc_idx, gs_names)
        return self

    def _build(self, d: pd.DataFrame, kcs: list[str] | None = None, gs_names: list | None = None):
        kcs = self.kcs_ if kcs is None else kcs
        kc_idx = pd.Index(kcs)
        k, seq, starts, pos = _sequences(d, kc_idx)
        seq_group = k[starts]
        if self.item_guess_slip:
            key = d["kc"].astype(str) + "\x1f" + d["item"].astype(str)
            if gs_names is None:
                gs, gs_uniq = pd.factorize(key, sort=True)
                gs_names = list(gs_uniq)
            else:
                gs = pd.Index(gs_names).get_indexer(key)
                # items unseen in fitting use the KC's first item slot (their KC's parameters)
                fallback = pd.Series([i for i, n in enumerate(gs_names)],
                                     index=[n.split("\x1f")[0] for n in gs_names])
                fallback = fallback[~fallback.index.duplicated()]
                gs = np.where(gs < 0, fallback.reindex(d["kc"].astype(str)).to_numpy(), gs)
        else:
            gs, gs_names = k, list(kcs)
        lay = _layout(seq, pos, d["success"].to_numpy(dtype=float), seq_group, np.asarray(gs, dtype=np.int64),
                      len(kcs), len(gs_names))
        return lay, kc_idx, gs_names

    def _bootstrap(self, rng: np.random.Generator, lay: _Layout) -> dict:
        """Refit on ``n_boot`` resamples of learners within KC, all at once (warm start).

        Replicate b is start b of one EM run over the fitted sequences, each sequence weighted
        by the times it was drawn (:func:`_weighted`), so no resampled data set is built.
        """
        d = self.data_
        k, _, starts, _ = _sequences(d, pd.Index(self.kcs_))
        kc_of_seq = k[starts]
        K, B, n_seq = len(self.kcs_), self.n_boot, len(starts)
        pools = [np.flatnonzero(kc_of_seq == j) for j in range(K)]
        weights = np.zeros((B, n_seq))
        for b in range(B):
            for pool in pools:
                np.add.at(weights[b], rng.choice(pool, size=len(pool), replace=True), 1.0)
        p0 = self.params_arr_
        warm = _Params(*(np.repeat(getattr(p0, n), B, axis=0) for n in PARAMETERS))
        p, _, _, _ = _em(_weighted(lay, weights), warm, forgetting=self.forgetting, max_iter=self.max_iter,
                         tol=self.tol, compiled=self._compiled, accelerate=self.accelerate)
        return {n: getattr(p, n) for n in PARAMETERS}

    def _finish(self, pick, boot, lay, kc_idx, gs_names):
        rows = []
        checks = self.checks_.set_index("kc")
        for kc_name, r in checks.iterrows():
            rows.append({"kc": kc_name, "n_learners": int(r["n_learners"]), "n_obs": int(r["n_obs"]),
                         "status": r["status"], "reason": SKIP_REASONS.get(r["reason"]) if r["reason"] else None})
        table = pd.DataFrame(rows)
        for c in PARAMETERS + ("loglik",):
            table[c] = np.nan
        for c in PARAMETERS:
            table[c + "_se"] = np.nan
            table[c + "_ci_low"] = np.nan
            table[c + "_ci_high"] = np.nan
        table["iterations"] = pd.array([pd.NA] * len(table), dtype="Int64")
        table["converged"] = pd.array([pd.NA] * len(table), dtype="boolean")
        table["starts_at_best"] = pd.array([pd.NA] * len(table), dtype="Int64")
        if pick is not None:
            pos = pd.Index(table["kc"].astype(str)).get_indexer(self.kcs_)
            kc_vals = self._kc_values(pick)
            for c in PARAMETERS:
                table.loc[pos, c] = kc_vals[c]
            table.loc[pos, "loglik"] = self.loglik_
            table.loc[pos, "iterations"] = self.iterations_
            table.loc[pos, "converged"] = self.converged_
            table.loc[pos, "starts_at_best"] = self.starts_at_best_
            if boot is not None:
                for c in PARAMETERS:
                    arr = boot[c]
                    if c in ("guess", "slip"):
                        arr = np.stack([self._kc_values(_Params(*(
                            boot[n][b][None] for n in PARAMETERS)))[c] for b in range(arr.shape[0])])
                    table.loc[pos, c + "_se"] = arr.std(axis=0, ddof=1) if arr.shape[0] > 1 else np.nan
                    tail = (1 - float(self.ci_level)) / 2
                    table.loc[pos, c + "_ci_low"] = np.quantile(arr, tail, axis=0)
                    table.loc[pos, c + "_ci_high"] = np.quantile(arr, 1 - tail, axis=0)
        if not self.forgetting:
            table.loc[table["status"] == "fit", [c for c in table.columns if c.startswith("forget")]] = 0.0
        flags = []
        for r in table.itertuples():
            f = []
            if r.status == "fit":
                if r.guess > 0.5:
                    f.append("guess>0.5")
                if r.slip > 0.5:
                    f.append("slip>0.5")
                if r.learn < 1e-3 or r.learn > 0.999:
                    f.append("learn_at_bound")
                if r.guess + r.slip >= 1:
                    f.append("guess+slip>=1")
            flags.append(";".join(f) if f else None)
        table["flags"] = pd.array(flags, dtype="string")
        table["degenerate"] = pd.array(np.where(table["status"] == "fit", table["flags"].notna(), None),
                                       dtype="boolean")
        table.insert(0, "kc_model", self.kc_model_)
        table["method"] = "bkt_em" + ("+forget" if self.forgetting else "") + ("+idem" if self.item_guess_slip else "")
        self.params_ = table

    def _kc_values(self, p: _Params) -> dict:
        """Per-KC values; with KT-IDEM guess and slip are the observation-weighted means over items."""
        out = {n: getattr(p, n)[0] for n in ("prior", "learn", "forget")}
        if not self.item_guess_slip:
            out["guess"], out["slip"] = p.guess[0], p.slip[0]
        else:
            key = self.data_["kc"].astype(str) + "\x1f" + self.data_["item"].astype(str)
            w = pd.Index(self.gs_names_).get_indexer(key)
            cnt = np.bincount(w, minlength=len(self.gs_names_)).astype(float)
            K = len(self.kcs_)
            for n in ("guess", "slip"):
                num = np.bincount(self.gs_group_, weights=getattr(p, n)[0] * cnt, minlength=K)
                den = np.bincount(self.gs_group_, weights=cnt, minlength=K)
                out[n] = num / den
        return out

    # -- results
    def summary(self) -> pd.DataFrame:
        """Tidy: one row per KC x parameter with ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n``, ``method``."""
        t = self.params_[self.params_["status"] == "fit"]
        parts = []
        for c in PARAMETERS:
            parts.append(pd.DataFrame({
                "kc_model": t["kc_model"], "kc": t["kc"], "parameter": c, "estimate": t[c], "se": t[c + "_se"],
                "ci_low": t[c + "_ci_low"], "ci_high": t[c + "_ci_high"], "n": t["n_learners"],
                "method": t["method"] + np.where(self.n_boot, f"; bootstrap({self.n_boot})", ""),
            }))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @property
    def item_params_(self) -> pd.DataFrame:
        """KT-IDEM guess and slip per KC and item (one row per KC when ``item_guess_slip`` is off)."""
        if not hasattr(self, "params_arr_"):
            return pd.DataFrame(columns=["kc", "item_id", "guess", "slip"])
        names = pd.Series(self.gs_names_).str.split("\x1f", n=1, expand=True) if self.item_guess_slip else None
        return pd.DataFrame({
            "kc": names[0] if names is not None else self.gs_names_,
            "item_id": names[1] if names is not None else None,
            "guess": self.params_arr_.guess[0], "slip": self.params_arr_.slip[0],
        })

    def trace(self, steps: pd.DataFrame | None = None) -> pd.DataFrame:
        """Knowledge tracing row by row, for the fitted data or new learners' ``steps``.

        Returns the rows of fitted KCs ordered by KC, learner and opportunity with
        ``learner``, ``kc``, ``opportunity``, ``success``, ``row`` (position in the input
        frame), ``p_correct`` (one-step-ahead prediction of the first attempt from the
        earlier opportunities), ``p_known_before`` and ``p_known_after`` (p(known) after
        this opportunity's answer and the learning step that follows it: the value a tutor
        compares with the mastery threshold).
        """
        if not hasattr(self, "params_arr_"):
            return pd.DataFrame(columns=["learner", "kc", "opportunity", "success", "row", "p_correct",
                                         "p_known_before", "p_known_after"])
        if steps is None:
            d = self.data_
        else:
            cols = {k: v for k, v in self.columns.items()}
            d, _ = _prepare(steps, kc_model=self.kc_model_, **cols)
            d = _sort(d[d["kc"].isin(self.kcs_)])
            d = d.reset_index(drop=True)
        if d.empty:
            return d.assign(p_correct=np.nan, p_known_before=np.nan, p_known_after=np.nan)
        lay, _, _ = self._build(d, gs_names=self.gs_names_ if self.item_guess_slip else None)
        p = self.params_arr_
        P, F, C, learn_r, stay_r = _forward(lay, p)
        g, s = p.guess.T[lay.gs], p.slip.T[lay.gs]
        pc = (P * (1 - s) + (1 - P) * g)[:, 0]
        after = ((F * stay_r if stay_r is not None else F) + (1 - F) * learn_r)[:, 0]
        out = d[["learner", "kc", "opportunity", "success", "row"]].copy()
        if "time" in d.columns:
            out["time"] = d["time"].to_numpy()
        out["p_correct"] = pc[lay.perm]
        out["p_known_before"] = P[:, 0][lay.perm]
        out["p_known_after"] = after[lay.perm]
        return out

    def loglik(self, steps: pd.DataFrame | None = None) -> float:
        """Total log-likelihood of the fitted KCs on ``steps`` (default: the fitted data)."""
        tr = self.trace(steps)
        pc = np.clip(tr["p_correct"].to_numpy(), 1e-12, 1 - 1e-12)
        y = tr["success"].to_numpy()
        return float(np.sum(y * np.log(pc) + (1 - y) * np.log(1 - pc)))


def fit_bkt(steps: pd.DataFrame, *, kc_model: str | None = None, **settings) -> pd.DataFrame:
    """Fit :class:`BKT` and return its per-KC table (``params_``). ``settings`` go to :class:`BKT`."""
    return BKT(**settings).fit(steps, kc_model=kc_model).params_


def simulate_bkt(n_learners: int, n_opportunities: int | np.ndarray, params: dict[str, dict[str, float]], *,
                 seed: int = 0) -> pd.DataFrame:
    """Simulate first attempts from known BKT parameters (``{kc: {prior, learn, forget, guess, slip}}``).

    ``n_opportunities`` is one length for every sequence or an array of lengths to draw
    from. Opportunity t uses item ``{kc}-i{t mod m}``; an optional ``item_guess`` list (length
    m, default 4 items with the KC's guess) gives each item its own guess (KT-IDEM truth). Returns a student-step KC frame (``learner_id``, ``kc``, ``opportunity``,
    ``success``, ``item_id``, ``step_time``, ``duration_s``) in time order.
    """
    rng = np.random.default_rng(seed)
    parts = []
    base = pd.Timestamp("2026-01-01")
    for kc_i, (kc, par) in enumerate(params.items()):
        lens = (np.full(n_learners, int(n_opportunities)) if np.isscalar(n_opportunities)
                else rng.choice(np.asarray(n_opportunities), size=n_learners))
        T = int(lens.max())
        known = rng.random(n_learners) < par["prior"]
        ys = np.zeros((n_learners, T), dtype=np.int64)
        item_guess = np.asarray(par.get("item_guess", [par["guess"]] * 4), dtype=float)
        for t in range(T):
            g, s = item_guess[t % len(item_guess)], par["slip"]
            ys[:, t] = np.where(known, rng.random(n_learners) > s, rng.random(n_learners) < g)
            forget = par.get("forget", 0.0)
            u = rng.random(n_learners)
            known = np.where(known, u >= forget, u < par["learn"])
        mask = np.arange(T)[None, :] < lens[:, None]
        li, ti = np.nonzero(mask)
        parts.append(pd.DataFrame({
            "learner_id": pd.array([f"s{i:06d}" for i in li], dtype="string"),
            "kc": kc, "opportunity": ti + 1, "success": ys[li, ti],
            "item_id": pd.array([f"{kc}-i{t % len(item_guess)}" for t in ti], dtype="string"),
            "step_time": base + pd.to_timedelta(ti * 60 + kc_i, unit="m"),
            "duration_s": rng.gamma(2.0, 15.0, size=len(li)),
        }))
    out = pd.concat(parts, ignore_index=True)
    out["kc"] = out["kc"].astype("string")
    return out
