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
