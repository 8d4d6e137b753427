"""Exact small generators for the gain and survey models, with their known truth.

* :func:`simulate_prepost` — pre/(mid/)post tests whose true mean gain per module and
  group is known exactly (on the proportion-of-maximum scale), with attrition that
  depends on the pre-test score and optional learners at ceiling.
* :func:`simulate_likert` — Likert surveys from a cumulative-logit model with learner
  effects and a known pre-to-post shift per construct (some items reverse-coded).
* :func:`simulate_factor` — continuous one-factor data with known loadings, hence a
  known McDonald's omega.

Ids follow the canonical pseudonym pattern ``p_<16 hex>`` so the tables validate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from research.errors import ConfigError

__all__ = ["SimulatedGains", "SimulatedSurvey", "simulate_factor", "simulate_likert", "simulate_prepost"]


@dataclass
class SimulatedGains:
    assessments: pd.DataFrame
    learners: pd.DataFrame
    truth: dict = field(default_factory=dict)


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    ids = np.char.add("p_", np.char.zfill(np.char.mod("%x", raw), 16))
    if len(set(ids)) < n:  # astronomically unlikely; keep ids unique
        ids = np.char.add("p_", np.char.zfill(np.char.mod("%x", np.arange(n) + 1), 16))
    return ids


def simulate_prepost(
    n_learners: int = 400,
    *,
    n_modules: int = 3,
    group_levels: tuple[str, ...] = ("A", "B"),
    module_gain: np.ndarray | list[float] | None = None,
    group_effect: np.ndarray | list[float] | None = None,
    gain_sd: float = 0.08,
    max_score: int = 20,
    item_level: bool = True,
    dropout: float = 0.15,
    dropout_slope: float = 3.0,
    ceiling_share: float = 0.0,
    mid: bool = False,
    modules_per_learner: int | None = None,
    cohort: str = "sim",
    seed: int | None = 0,
) -> SimulatedGains:
    """Pre/post test scores with known true gains.

    Each learner's true pre proportion is ``Uniform(0.1, 0.5)`` (or 1.0 for a
    ``ceiling_share`` of learners, whose post is then also 1.0); their true gain in
    module m is ``module_gain[m] + group_effect[k] + Normal(0, gain_sd)``; observed
    scores are Binomial(max_score, true proportion) (item level: ``max_score`` items of 1
    point). The truth ``cell_gain`` is therefore the expected gain of module x group
    (proportion of maximum, ceiling learners excluded). Learners drop out before the
    post-test with probability ``logistic(logit(dropout) - dropout_slope * (pre - 0.3))``
    (weaker learners drop out more).

    Returns
    -------
    SimulatedGains with ``assessments`` (canonical columns), ``learners`` (cohort,
    learner_id, role) and ``truth``: ``cell_gain`` (module, group, gain), ``module_gain``
    and ``group_effect`` arrays, ``dropped`` (learner x module flags).
    """
    if n_learners < 1 or n_modules < 1 or max_score < 1:
        raise ConfigError(
            f"n_learners, n_modules and max_score must be at least 1, got {n_learners}, {n_modules}, {max_score}")
    rng = np.random.default_rng(seed)
    modules = [f"M{m + 1:02d}" for m in range(n_modules)]
    mg = np.asarray(module_gain if module_gain is not None else np.linspace(0.05, 0.25, n_modules), dtype=float)
    ge = np.asarray(group_effect if group_effect is not None else np.linspace(0.0, -0.05, len(group_levels)), dtype=float)
    if mg.shape != (n_modules,) or ge.shape != (len(group_levels),):
        raise ConfigError(
            f"module_gain needs {n_modules} values and group_effect {len(group_levels)}; got {mg.shape} and {ge.shape}")
    ids = _ids(rng, n_learners)
    grp = rng.integers(0, len(group_levels), size=n_learners)
    learners = pd.DataFrame({"cohort": cohort, "learner_id": ids,
                             "role": np.asarray(group_levels, dtype=object)[grp]}).astype(
        {"cohort": "string", "learner_id": "string", "role": "string"})
    li, mi = _learner_modules(rng, n_learners, n_modules, modules_per_learner)
    n_pairs = len(li)
    at_ceiling = rng.random(n_pairs) < ceiling_share
    p_pre = np.where(at_ceiling, 1.0, rng.uniform(0.1, 0.5, n_pairs))
    gain = mg[mi] + ge[grp[li]] + rng.normal(0.0, gain_sd, n_pairs)
    p_post = np.where(at_ceiling, 1.0, np.clip(p_pre + gain, 0.0, 1.0))
    p_mid = np.clip(p_pre + gain / 2, 0.0, 1.0)
    logit0 = np.log(dropout / (1 - dropout)) if 0 < dropout < 1 else (-np.inf if dropout <= 0 else np.inf)
    p_drop = 1 / (1 + np.exp(-(logit0 - dropout_slope * (p_pre - 0.3))))
    dropped = rng.random(n_pairs) < p_drop
    phases = [("pre", p_pre, np.ones(n_pairs, bool)), ("post", p_post, ~dropped)]
    if mid:
        phases.insert(1, ("mid", p_mid, ~dropped))
    a = _assessment_rows(rng, phases, ids, li, mi, modules, max_score, item_level, cohort)
    cells = pd.DataFrame([(m, g, mg[i] + ge[j]) for i, m in enumerate(modules) for j, g in enumerate(group_levels)],
                         columns=["module", "group", "gain"])
    truth = {
        "cell_gain": cells,
        "module_gain": pd.Series(mg, index=modules),
        "group_effect": pd.Series(ge, index=list(group_levels)),
        "gain_sd": gain_sd,
        "pairs": pd.DataFrame({"learner_id": ids[li], "module": np.asarray(modules)[mi],
                               "role": np.asarray(group_levels)[grp[li]], "dropped": dropped,
                               "at_ceiling": at_ceiling, "p_pre": p_pre, "p_post": p_post}),
    }
    return SimulatedGains(assessments=a, learners=learners, truth=truth)


def _learner_modules(rng, n_learners: int, n_modules: int, modules_per_learner: int | None):
    """The learner x module pairs (learner index, module index): every module, or
    ``modules_per_learner`` modules drawn at random for each learner."""
    if modules_per_learner is None or modules_per_learner >= n_modules:
        li = np.repeat(np.arange(n_learners), n_modules)
        mi = np.tile(np.arange(n_modules), n_learners)
    else:
        pick = np.argsort(rng.random((n_learners, n_modules)), axis=1)[:, :modules_per_learner]
        li = np.repeat(np.arange(n_learners), modules_per_learner)
        mi = pick.ravel()
    return li, mi


def _assessment_rows(rng, phases, ids, li, mi, modules, max_score: int, item_level: bool, cohort: str) -> pd.DataFrame:
    """The canonical assessments table: for each (phase, success probability per pair, pair present)
    the scores of the present pairs, item by item or as a binomial total."""
    frames = []
    for name, p, present in phases:
        sel = np.flatnonzero(present)
        if item_level:
            resp = (rng.random((len(sel), max_score)) < p[sel, None]).astype(float)
            frames.append(pd.DataFrame({
                "learner_id": np.repeat(ids[li[sel]], max_score),
                "module": np.repeat(np.asarray(modules, dtype=object)[mi[sel]], max_score),
                "phase": name,
                "item_id": np.tile(np.char.add("q", np.arange(1, max_score + 1).astype(str)), len(sel)),
                "score": resp.ravel(), "max_score": 1.0}))
        else:
            frames.append(pd.DataFrame({
                "learner_id": ids[li[sel]], "module": np.asarray(modules, dtype=object)[mi[sel]], "phase": name,
                "item_id": "total", "score": rng.binomial(max_score, p[sel]).astype(float),
                "max_score": float(max_score)}))
    a = pd.concat(frames, ignore_index=True)
    a.insert(0, "cohort", cohort)
    a.insert(2, "instrument", "test_" + a["module"].astype(str))
    a = a.astype({"cohort": "string", "learner_id": "string", "instrument": "string", "module": "string",
                  "phase": "string", "item_id": "string"})
    return a


@dataclass
class SimulatedSurvey:
    surveys: pd.DataFrame
    truth: dict = field(default_factory=dict)


def simulate_likert(
    n_learners: int = 300,
    *,
    constructs: dict[str, int] | None = None,
    shift: dict[str, float] | None = None,
    n_categories: int = 5,
    learner_sd: float = 1.2,
    reverse_items: int = 1,
    phases: tuple[str, ...] = ("pre", "post"),
    cohort: str = "sim",
    seed: int | None = 0,
) -> SimulatedSurvey:
    """Likert responses from a cumulative-logit model with learner effects.

    For learner i, item j of construct k, phase t (0 pre, 1 post):
    ``P(Y <= c) = logistic(kappa[j, c] - (u[i, k] + shift[k] * t))`` with
    ``u ~ Normal(0, learner_sd)``. Kappa are item thresholds (evenly spread around an
    item location). The first ``reverse_items`` items of each construct are stored
    reverse-coded (``scale_min + scale_max - y``, ``reverse_coded = True``).

    Returns
    -------
    SimulatedSurvey with ``surveys`` (canonical columns) and ``truth``: ``shift`` (true
    log-odds shift per construct, conditional on the learner), ``learner_sd``,
    ``thresholds``.
    """
    constructs = constructs or {"self_efficacy": 6, "problem_solving": 5}
    shift = shift or {k: 0.6 if i == 0 else 0.0 for i, k in enumerate(constructs)}
    unknown = set(shift) - set(constructs)
    if unknown:
        raise ConfigError(f"shift names unknown construct(s) {sorted(unknown)}; constructs are {sorted(constructs)}")
    if n_categories < 2:
        raise ConfigError(f"n_categories must be at least 2, got {n_categories}")
    rng = np.random.default_rng(seed)
    ids = _ids(rng, n_learners)
    frames = []
    thresholds = {}
    for k, (name, n_items) in enumerate(constructs.items()):
        u = rng.normal(0.0, learner_sd, n_learners)
        loc = rng.normal(0.0, 0.5, n_items)
        base = np.linspace(-2.0, 2.0, n_categories - 1)
        kappa = loc[:, None] + base[None, :]  # (items, cats-1)
        thresholds[name] = kappa
        for t, ph in enumerate(phases):
            eta = u[:, None] + shift.get(name, 0.0) * (t / max(len(phases) - 1, 1))  # (learners, 1)
            cum = 1 / (1 + np.exp(-(kappa[None, :, :] - eta[:, :, None])))  # (learners, items, cats-1)
            draw = rng.random((n_learners, n_items))
            y = 1 + (draw[:, :, None] > cum).sum(axis=2)  # categories 1..n_categories
            rev = np.arange(n_items) < reverse_items
            y = np.where(rev[None, :], (1 + n_categories) - y, y)
            frames.append(pd.DataFrame({
                "learner_id": np.repeat(ids, n_items), "phase": ph, "construct": name,
                "item_id": np.tile(np.char.add(f"{name}_", np.arange(1, n_items + 1).astype(str)), n_learners),
                "response": y.ravel(), "scale_min": 1, "scale_max": n_categories,
                "reverse_coded": np.tile(rev, n_learners)}))
    s = pd.concat(frames, ignore_index=True)
    s.insert(0, "cohort", cohort)
    s = s.astype({"cohort": "string", "learner_id": "string", "phase": "string", "construct": "string",
                  "item_id": "string", "response": "Int64", "scale_min": "Int64", "scale_max": "Int64",
                  "reverse_coded": "boolean"})
    return SimulatedSurvey(surveys=s, truth={"shift": dict(shift), "learner_sd": learner_sd,
                                             "thresholds": thresholds})


def simulate_factor(n: int = 500, loadings=(0.8, 0.7, 0.6, 0.5, 0.7), *, seed: int | None = 0) -> tuple[pd.DataFrame, float]:
    """Continuous one-factor data (unit item variances) and its true omega total.

    ``x_j = lambda_j f + e_j``, ``f ~ N(0, 1)``, ``e_j ~ N(0, 1 - lambda_j^2)``;
    omega = (sum lambda)^2 / ((sum lambda)^2 + sum(1 - lambda^2)).
    """
    lam = np.asarray(loadings, dtype=float)
    if np.any(np.abs(lam) >= 1):
        raise ConfigError(f"standardised loadings must lie strictly between -1 and 1, got {lam.tolist()}")
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 1))
    x = f * lam[None, :] + rng.normal(size=(n, len(lam))) * np.sqrt(1 - lam**2)[None, :]
    omega = lam.sum() ** 2 / (lam.sum() ** 2 + (1 - lam**2).sum())
    return pd.DataFrame(x, columns=[f"x{j + 1}" for j in range(len(lam))]), float(omega)
