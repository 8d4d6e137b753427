"""Exact generators of IRT data with known truth (Rasch / 1PL and 2PL), for parameter recovery.

Responses come out in long format (one row per observed learner x item cell), the shape the
estimators in :mod:`research.estimate.irt` take; cells are missing completely at random with
probability ``missing`` (not every learner meets every item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from research.errors import ConfigError

__all__ = ["SimulatedResponses", "simulate_2pl", "simulate_attempts", "simulate_rasch"]


@dataclass
class SimulatedResponses:
    """Simulated responses and the truth that generated them.

    Attributes
    ----------
    responses : DataFrame
        ``learner_id``, ``item_id``, ``correct`` (0/1 int): one row per observed cell.
    items : DataFrame
        ``item_id``, ``difficulty`` (logit, location of the item: P = 0.5 at theta = difficulty),
        ``discrimination`` (1 for Rasch).
    learners : DataFrame
        ``learner_id``, ``theta``.
    """

    responses: pd.DataFrame
    items: pd.DataFrame
    learners: pd.DataFrame


def _check(n_learners: int, n_items: int, missing: float) -> None:
    if int(n_learners) < 2:
        raise ConfigError(f"n_learners must be at least 2, got {n_learners}")
    if int(n_items) < 2:
        raise ConfigError(f"n_items must be at least 2, got {n_items}")
    if not 0.0 <= float(missing) < 1.0:
        raise ConfigError(f"missing must be a share in [0, 1), got {missing}")


def simulate_irt(
    n_learners: int = 1000,
    n_items: int = 20,
    *,
    missing: float = 0.3,
    theta_sd: float = 1.0,
    difficulty_sd: float = 1.0,
    discrimination: tuple[float, float] | None = None,
    seed: int | None = 0,
) -> SimulatedResponses:
    """Simulate dichotomous responses from a 2PL (or Rasch when ``discrimination`` is None).

    P(correct) = logistic(a_j * (theta_i - b_j)), theta ~ N(0, theta_sd^2), b ~ N(0, difficulty_sd^2),
    a ~ LogNormal(mean log a = log(a_mean), sd = a_sd) for ``discrimination=(a_mean, a_sd)``.
    Each cell is dropped with probability ``missing``; every learner keeps at least one item.
    """
    _check(n_learners, n_items, missing)
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, theta_sd, n_learners)
    b = rng.normal(0.0, difficulty_sd, n_items)
    if discrimination is None:
        a = np.ones(n_items)
    else:
        a_mean, a_sd = discrimination
        a = np.exp(rng.normal(np.log(a_mean), a_sd, n_items))
    eta = a[None, :] * (theta[:, None] - b[None, :])
    y = (rng.random((n_learners, n_items)) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    keep = rng.random((n_learners, n_items)) >= missing
    # every learner answers at least one item
    none = ~keep.any(axis=1)
    keep[none, rng.integers(0, n_items, none.sum())] = True
    rows, cols = np.nonzero(keep)
    width_l = len(str(n_learners))
    width_i = len(str(n_items))
    learner_ids = np.array([f"s{i:0{width_l}d}" for i in range(n_learners)])
    item_ids = np.array([f"i{j:0{width_i}d}" for j in range(n_items)])
    responses = pd.DataFrame(
        {"learner_id": learner_ids[rows], "item_id": item_ids[cols], "correct": y[rows, cols]}
    )
    items = pd.DataFrame({"item_id": item_ids, "difficulty": b, "discrimination": a})
    learners = pd.DataFrame({"learner_id": learner_ids, "theta": theta})
    return SimulatedResponses(responses=responses, items=items, learners=learners)


def simulate_rasch(
    n_learners: int = 1000,
    n_items: int = 20,
    *,
    missing: float = 0.3,
    theta_sd: float = 1.0,
    difficulty_sd: float = 1.0,
    seed: int | None = 0,
) -> SimulatedResponses:
    """Rasch (1PL) responses: P(correct) = logistic(theta_i - b_j). See :func:`simulate_irt`."""
    return simulate_irt(
        n_learners, n_items, missing=missing, theta_sd=theta_sd, difficulty_sd=difficulty_sd, seed=seed
    )


def simulate_2pl(
    n_learners: int = 1000,
    n_items: int = 20,
    *,
    missing: float = 0.3,
    theta_sd: float = 1.0,
    difficulty_sd: float = 1.0,
    a_mean: float = 1.2,
    a_sd: float = 0.3,
    seed: int | None = 0,
) -> SimulatedResponses:
    """2PL responses: P(correct) = logistic(a_j (theta_i - b_j)). See :func:`simulate_irt`."""
    return simulate_irt(
        n_learners,
        n_items,
        missing=missing,
        theta_sd=theta_sd,
        difficulty_sd=difficulty_sd,
        discrimination=(a_mean, a_sd),
        seed=seed,
    )


def simulate_attempts(
    sim: SimulatedResponses,
    *,
    hint_share: float = 0.2,
    retry_p: float = 0.6,
    max_attempts: int = 4,
    items_per_page: int = 5,
    options: str = "ABCD",
    cohort: str = "sim",
    seed: int | None = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn simulated first-attempt responses into canonical ``attempts`` and ``items`` tables.

    Each observed cell's first attempt is correct when the simulated response is 1; otherwise
    it is a hint request (probability ``hint_share``) or a wrong option. Later attempts succeed
    with probability ``retry_p`` each, up to ``max_attempts``. Every item is a single-step
    multiple-choice item whose key is the first of ``options``; wrong answers pick a
    distractor uniformly. Items sit on pages of ``items_per_page`` in one module.

    Returns (attempts, items) with canonical column names; learner ids are the raw simulated
    ids (not pseudonymised).
    """
    rng = np.random.default_rng(seed)
    r = sim.responses
    n = len(r)
    first_ok = r["correct"].to_numpy() == 1
    # number of attempts: 1 for correct first attempts, else 1 + geometric retries (capped)
    extra = np.minimum(rng.geometric(retry_p, n), max_attempts - 1)
    n_att = np.where(first_ok, 1, 1 + extra)
    cell = np.repeat(np.arange(n), n_att)
    att = np.arange(len(cell)) - np.repeat(np.cumsum(n_att) - n_att, n_att) + 1
    last = att == n_att[cell]
    reached_max = n_att[cell] == max_attempts
    final_ok = ~(reached_max & (rng.random(len(cell)) < 0.3))  # some give up without success
    ok = np.where(att == 1, first_ok[cell], last & final_ok)
    hint = (att == 1) & ~ok & (rng.random(len(cell)) < hint_share)
    outcome = np.where(ok, "correct", np.where(hint, "hint", "incorrect"))
    opts = np.array(list(options))
    wrong = opts[1 + rng.integers(0, len(opts) - 1, len(cell))]
    response = np.where(ok, opts[0], np.where(hint, None, wrong))
    item_codes = pd.factorize(sim.items["item_id"])[0]
    item_pos = pd.Series(item_codes, index=sim.items["item_id"]).reindex(r["item_id"]).to_numpy()[cell]
    learner_codes = pd.factorize(r["learner_id"], sort=True)[0][cell]
    base = pd.Timestamp("2026-01-05 08:00:00")
    ts = base + pd.to_timedelta(learner_codes * 86400 + item_pos * 300 + att * 20, unit="s")
    page = np.array([f"page{k // items_per_page + 1:02d}" for k in range(len(sim.items))])
    attempts = pd.DataFrame(
        {
            "cohort": cohort,
            "attempt_id": [f"a{k}" for k in range(len(cell))],
            "learner_id": r["learner_id"].to_numpy()[cell],
            "module": "m1",
            "page": page[item_pos],
            "item_id": r["item_id"].to_numpy()[cell],
            "step_id": r["item_id"].to_numpy()[cell],
            "problem_view": np.ones(len(cell), dtype=np.int64),
            "attempt": att.astype(np.int64),
            "outcome": outcome,
            "response": pd.array(response, dtype="string"),
            "timestamp": ts,
            "duration_s": np.round(rng.gamma(4.0, 8.0, len(cell)), 1),
        }
    )
    items = pd.DataFrame(
        {
            "cohort": cohort,
            "item_id": sim.items["item_id"].to_numpy(),
            "module": "m1",
            "page": page,
            "position": np.arange(1, len(sim.items) + 1, dtype=np.int64),
            "item_type": "multiple_choice",
            "answer_key": opts[0],
        }
    )
    return attempts, items
