"""Exact generator of two Rasch cohorts on one scale, for tests of cohort linking.

Two cohorts answer the same items; the second cohort's ability distribution is shifted
by ``shift`` logits, and the items in ``changed`` were revised between the cohorts (their
true difficulty moves by the given amount). Everything else is the Rasch model::

    P(correct) = logistic(theta_i - b_j),  theta ~ N(mu_cohort, theta_sd^2)

with ``mu = 0`` before and ``mu = shift`` after. Separate calibrations of each cohort
(population mean 0) put the after cohort's item difficulties ``shift`` logits lower; a
correct link through the unchanged (anchor) items recovers ``shift`` and the true change
of each revised item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from research.errors import ConfigError

__all__ = ["SimulatedPair", "simulate_linking_pair"]


@dataclass
class SimulatedPair:
    """Two cohorts' long responses and the truth.

    Attributes
    ----------
    before, after : DataFrame
        ``learner_id``, ``item_id``, ``correct`` (0/1 int), one row per observed cell.
    items : DataFrame
        ``item_id``, ``difficulty_before``, ``difficulty_after`` (both on the before
        cohort's scale), ``change`` (after - before), ``changed`` (bool).
    shift : float
        True mean ability of the after cohort minus that of the before cohort.
    """

    before: pd.DataFrame
    after: pd.DataFrame
    items: pd.DataFrame
    shift: float


def _cohort(rng, n, b, mu, theta_sd, missing, prefix):
    theta = rng.normal(mu, theta_sd, n)
    eta = theta[:, None] - b[None, :]
    y = (rng.random(eta.shape) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    keep = rng.random(eta.shape) >= missing
    none = ~keep.any(axis=1)
    keep[none, rng.integers(0, len(b), none.sum())] = True
    rows, cols = np.nonzero(keep)
    width = len(str(n))
    return pd.DataFrame(
        {
            "learner_id": np.char.add(prefix, np.char.zfill(rows.astype(str), width)),
            "item_id": np.char.add("I", np.char.zfill(cols.astype(str), 3)),
            "correct": y[rows, cols],
        }
    )


def simulate_linking_pair(
    n_learners: int = 500,
    n_items: int = 30,
    *,
    shift: float = 0.5,
    changed: dict[int, float] | None = None,
    missing: float = 0.2,
    theta_sd: float = 1.0,
    difficulty_sd: float = 1.0,
    n_learners_after: int | None = None,
    seed: int = 0,
) -> SimulatedPair:
    """Simulate a before and an after cohort of a Rasch test with a known ability shift.

    Parameters
    ----------
    n_learners, n_learners_after
        Learners in the before cohort and in the after cohort (default: the same).
    n_items
        Items (``I000``, ``I001``, ...).
    shift
        True mean ability of the after cohort minus the before cohort's (logits).
    changed
        ``{item index: true change in difficulty}`` of the revised items.
    missing
        Probability that a learner x item cell is not observed (completely at random).
    """
    changed = dict(changed or {})
    if int(n_learners) < 2 or int(n_items) < 2:
        raise ConfigError(f"need n_learners >= 2 and n_items >= 2; got {n_learners} and {n_items}")
    if not 0.0 <= float(missing) < 1.0:
        raise ConfigError(f"missing must be a share in [0, 1), got {missing}")
    bad = [k for k in changed if not 0 <= int(k) < n_items]
    if bad:
        raise ConfigError(f"changed names item index(es) {bad} outside 0..{n_items - 1}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2027]))
    b = rng.normal(0.0, difficulty_sd, n_items)
    delta = np.zeros(n_items)
    for k, v in changed.items():
        delta[int(k)] = float(v)
    b_after = b + delta
    before = _cohort(rng, int(n_learners), b, 0.0, theta_sd, missing, "B")
    after = _cohort(rng, int(n_learners_after or n_learners), b_after, float(shift), theta_sd, missing, "A")
    items = pd.DataFrame(
        {
            "item_id": [f"I{j:03d}" for j in range(n_items)],
            "difficulty_before": b,
            "difficulty_after": b_after,
            "change": delta,
            "changed": delta != 0,
        }
    )
    return SimulatedPair(before=before, after=after, items=items, shift=float(shift))
