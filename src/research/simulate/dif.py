"""An exact generator of differential item functioning (DIF) with known truth.

Responses follow a two-parameter logistic model in which the focal group's item
parameters differ from the reference group's on the planted DIF items:

    P(correct | theta, group) = logistic(a_g * (theta - b_j - shift_j * [group = focal]))

``shift_j`` (logits) is *uniform* DIF: the item is harder for the focal group at every
ability when it is positive. *Non-uniform* DIF changes the focal group's discrimination
``a_g`` on an item, so the gap changes sign along the ability scale. Ability may differ
between the groups (``impact``), which is not DIF and must not be flagged.

Used by the DIF recovery tests and the equity benchmark; the full cohort simulator
(:mod:`research.simulate`) plants DIF in a whole course.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from research.errors import ConfigError

__all__ = ["SimulatedDIF", "SimulatedEngagement", "simulate_dif", "simulate_engagement"]


@dataclass
class SimulatedDIF:
    """Responses and truth of one :func:`simulate_dif` draw.

    Attributes
    ----------
    responses : DataFrame
        learner_id, item_id, correct (0/1 int); one row per answered learner x item.
    learners : DataFrame
        learner_id and the group attribute column (named ``attribute``); abilities live in
        ``truth_learners``.
    truth_items : DataFrame
        item_id, difficulty, shift (uniform DIF in logits, 0 for clean items),
        discrimination_reference, discrimination_focal, dif (bool), kind
        (``"none"``, ``"uniform"``, ``"nonuniform"``).
    truth_learners : DataFrame
        learner_id, group, theta.
    settings : dict
        The arguments of the draw.
    """

    responses: pd.DataFrame
    learners: pd.DataFrame
    truth_items: pd.DataFrame
    truth_learners: pd.DataFrame
    settings: dict = field(default_factory=dict)


def simulate_dif(
    n_learners: int = 1000,
    n_items: int = 20,
    *,
    dif_items: tuple[int, ...] | list[int] = (0, 1),
    dif_size: float | list[float] = 1.0,
    nonuniform_items: tuple[int, ...] | list[int] = (),
    nonuniform_discrimination: float = 0.3,
    focal_share: float = 0.4,
    impact: float = 0.0,
    missing: float = 0.0,
    attribute: str = "gender",
    groups: tuple[str, str] = ("man", "woman"),
    seed: int | None = 0,
) -> SimulatedDIF:
    """Draw dichotomous responses with planted DIF.

    Parameters
    ----------
    n_learners, n_items : int
        Size of the response matrix.
    dif_items : sequence of int
        0-based indices of items with uniform DIF against the focal group.
    dif_size : float or list of float
        Difficulty shift for the focal group (logits) on each ``dif_items`` item; a
        positive shift makes the item harder for the focal group. One value for all, or
        one per item. A shift of 1 logit is an MH D-DIF of about -2.35 (ETS class C).
    nonuniform_items : sequence of int
        0-based indices of items whose discrimination is ``nonuniform_discrimination`` in
        the focal group (1 in the reference group): non-uniform DIF.
    focal_share : float
        Expected share of learners in the focal group (0 < share < 1).
    impact : float
        Focal group's mean ability minus the reference group's (not DIF).
    missing : float
        Share of learner x item cells left unanswered, completely at random.
    attribute : str
        Name of the group column in ``learners``.
    groups : (str, str)
        Names of the reference and the focal group.
    seed : int or None
        Seed of ``numpy.random.default_rng``.
    """
    dif_items, nonuniform_items, sizes = _dif_settings(n_learners, n_items, dif_items, dif_size, nonuniform_items,
                                                       focal_share, missing, groups)

    rng = np.random.default_rng(seed)
    focal = rng.random(n_learners) < focal_share
    theta = rng.normal(0.0, 1.0, n_learners) + impact * focal
    difficulty = np.linspace(-1.5, 1.5, n_items) + rng.normal(0, 0.2, n_items)
    shift = np.zeros(n_items)
    shift[dif_items] = sizes
    a_ref = np.ones(n_items)
    a_focal = np.ones(n_items)
    a_focal[nonuniform_items] = nonuniform_discrimination

    b = difficulty[None, :] + shift[None, :] * focal[:, None]
    a = np.where(focal[:, None], a_focal[None, :], a_ref[None, :])
    p = 1.0 / (1.0 + np.exp(-a * (theta[:, None] - b)))
    y = (rng.random((n_learners, n_items)) < p).astype(int)
    answered = rng.random((n_learners, n_items)) >= missing

    responses, learners, truth_items, learner_ids, group = _dif_tables(
        y, answered, focal, difficulty, shift, a_ref, a_focal, dif_items, nonuniform_items, attribute, groups)
    truth_learners = pd.DataFrame({"learner_id": learner_ids, "group": group, "theta": theta})
    settings = dict(
        n_learners=n_learners, n_items=n_items, dif_items=dif_items.tolist(), dif_size=sizes.tolist(),
        nonuniform_items=nonuniform_items.tolist(), nonuniform_discrimination=nonuniform_discrimination,
        focal_share=focal_share, impact=impact, missing=missing, attribute=attribute,
        groups=tuple(groups), seed=seed,
    )
    return SimulatedDIF(responses, learners, truth_items, truth_learners, settings)


def _dif_settings(n_learners, n_items, dif_items, dif_size, nonuniform_items, focal_share, missing, groups):
    """:func:`simulate_dif`'s settings checked: the DIF and non-uniform item indices as arrays and
    the shift of each DIF item."""
    if n_learners < 2 or n_items < 2:
        raise ConfigError(f"n_learners and n_items must be at least 2, got n_learners={n_learners}, n_items={n_items}")
    if not 0 < focal_share < 1:
        raise ConfigError(f"focal_share={focal_share!r} must lie strictly between 0 and 1")
    if not 0 <= missing < 1:
        raise ConfigError(f"missing={missing!r} must lie in [0, 1)")
    dif_items = np.asarray(list(dif_items), dtype=int)
    nonuniform_items = np.asarray(list(nonuniform_items), dtype=int)
    for name, idx in (("dif_items", dif_items), ("nonuniform_items", nonuniform_items)):
        if idx.size and (idx.min() < 0 or idx.max() >= n_items):
            raise ConfigError(f"{name}={idx.tolist()} has indices outside 0..{n_items - 1}")
    sizes = np.broadcast_to(np.asarray(dif_size, dtype=float), dif_items.shape) if dif_items.size else np.zeros(0)
    if len(groups) != 2 or groups[0] == groups[1]:
        raise ConfigError(f"groups={groups!r} must be two different names (reference, focal)")
    return dif_items, nonuniform_items, sizes


def _dif_tables(y, answered, focal, difficulty, shift, a_ref, a_focal, dif_items, nonuniform_items, attribute, groups):
    """:func:`simulate_dif`'s responses (answered cells), learners and item truth tables, with the
    learner ids and group labels."""
    n_learners, n_items = y.shape
    width = len(str(n_learners))
    learner_ids = np.array([f"L{i:0{width}d}" for i in range(n_learners)])
    item_ids = np.array([f"I{j:03d}" for j in range(n_items)])
    li, ij = np.nonzero(answered)
    responses = pd.DataFrame(
        {"learner_id": learner_ids[li], "item_id": item_ids[ij], "correct": y[li, ij]}
    )
    group = np.where(focal, groups[1], groups[0])
    learners = pd.DataFrame({"learner_id": learner_ids, attribute: group})
    kind = np.full(n_items, "none", dtype=object)
    kind[nonuniform_items] = "nonuniform"
    kind[dif_items] = "uniform"
    truth_items = pd.DataFrame(
        {
            "item_id": item_ids,
            "difficulty": difficulty,
            "shift": shift,
            "discrimination_reference": a_ref,
            "discrimination_focal": a_focal,
            "dif": kind != "none",
            "kind": kind.astype(str),
        }
    )
    return responses, learners, truth_items, learner_ids, group


@dataclass
class SimulatedEngagement:
    """Attempts and truth of one :func:`simulate_engagement` draw.

    Attributes
    ----------
    attempts : DataFrame
        Canonical-like attempts: learner_id, session_id, module, page, item_id, step_id,
        attempt (1), outcome, timestamp, duration_s (missing for a share of events).
    items : DataFrame
        item_id, module, page, position, planned_duration_s.
    learners : DataFrame
        learner_id and the group attribute.
    truth : DataFrame
        Per position: item_id, hazard_reference, hazard_focal, median_s (true median
        seconds on the item, before idle events).
    furthest : Series
        True furthest position per learner (0 = never started).
    """

    attempts: pd.DataFrame
    items: pd.DataFrame
    learners: pd.DataFrame
    truth: pd.DataFrame
    furthest: pd.Series


def simulate_engagement(
    n_learners: int = 500,
    n_modules: int = 3,
    pages_per_module: int = 3,
    items_per_page: int = 3,
    *,
    base_hazard: float = 0.01,
    spikes: dict[int, float] | None = None,
    focal_hazard_ratio: float = 1.0,
    focal_share: float = 0.4,
    attribute: str = "gender",
    groups: tuple[str, str] = ("man", "woman"),
    median_s: float = 60.0,
    slow_items: dict[int, float] | None = None,
    idle_share: float = 0.02,
    missing_duration: float = 0.3,
    seed: int | None = 0,
) -> SimulatedEngagement:
    """Learners walking through a course and stopping with a known hazard per position.

    Each learner starts at position 1 and, after each position ``p`` (1-based), stops with
    probability ``hazard_p`` (``base_hazard``, or ``spikes[p]`` where given), multiplied
    by ``focal_hazard_ratio`` for the focal group (capped at 1). The last position is
    completing. Time on an item is log-normal with median ``median_s`` (times
    ``slow_items[p]`` where given); a share ``idle_share`` of events are idle (the learner
    left the tab: 2 to 10 hours). A share ``missing_duration`` of events has no
    ``duration_s``; their time can be recovered from the next event's timestamp.
    """
    spikes = dict(spikes or {})
    slow_items = dict(slow_items or {})
    n_pos = n_modules * pages_per_module * items_per_page
    bad = [p for p in [*spikes, *slow_items] if not 1 <= p <= n_pos]
    if bad:
        raise ConfigError(f"positions {bad} in spikes/slow_items are outside 1..{n_pos}")
    rng = np.random.default_rng(seed)
    focal = rng.random(n_learners) < focal_share
    hazard, h_focal, furthest = _stopping(rng, focal, n_pos, base_hazard, spikes, focal_hazard_ratio)
    med = np.full(n_pos, float(median_s))
    for p, f in slow_items.items():
        med[p - 1] *= f

    li, pj = np.nonzero(np.arange(n_pos)[None, :] < furthest[:, None])
    sec, ts, session = _event_times(rng, li, med[pj], idle_share, n_learners)
    width = len(str(n_learners))
    lid = np.array([f"L{i:0{width}d}" for i in range(n_learners)])
    module = (np.arange(n_pos) // (pages_per_module * items_per_page)) + 1
    page = (np.arange(n_pos) // items_per_page) + 1
    item_ids = np.array([f"I{p + 1:03d}" for p in range(n_pos)])
    dur = np.where(rng.random(li.size) < missing_duration, np.nan, sec)
    attempts = pd.DataFrame(
        {
            "learner_id": lid[li],
            "session_id": [f"{a}-s{b}" for a, b in zip(lid[li], session)],
            "module": np.char.add("M", module[pj].astype(str)),
            "page": np.char.add("P", page[pj].astype(str)),
            "item_id": item_ids[pj],
            "step_id": item_ids[pj],
            "attempt": 1,
            "outcome": np.where(rng.random(li.size) < 0.7, "correct", "incorrect"),
            "timestamp": ts,
            "duration_s": dur,
        }
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "module": np.char.add("M", module.astype(str)),
            "page": np.char.add("P", page.astype(str)),
            "position": np.arange(1, n_pos + 1),
            "planned_duration_s": float(median_s),
        }
    )
    learners = pd.DataFrame({"learner_id": lid, attribute: np.where(focal, groups[1], groups[0])})
    truth = pd.DataFrame({"item_id": item_ids, "hazard_reference": hazard, "hazard_focal": h_focal, "median_s": med})
    return SimulatedEngagement(attempts, items, learners, truth, pd.Series(furthest, index=lid, name="furthest"))


def _stopping(rng, focal, n_pos: int, base_hazard: float, spikes: dict, focal_hazard_ratio: float):
    """The stopping hazard per position (reference and focal group; none after the last) and
    each learner's furthest position, drawn."""
    n_learners = len(focal)
    hazard = np.full(n_pos, float(base_hazard))
    for p, h in spikes.items():
        hazard[p - 1] = h
    hazard[-1] = 0.0
    h_focal = np.minimum(hazard * focal_hazard_ratio, 1.0)
    h = np.where(focal[:, None], h_focal[None, :], hazard[None, :])
    stop = rng.random((n_learners, n_pos)) < h
    stop[:, -1] = True
    furthest = stop.argmax(axis=1) + 1  # first position at which the learner stops
    return hazard, h_focal, furthest


def _event_times(rng, li, median, idle_share: float, n_learners: int):
    """Seconds per event (log-normal around ``median``, or idle: 2 to 10 hours), timestamps
    (cumulative within learner ``li``, from a random start) and session numbers (a new one after idle)."""
    true_sec = np.exp(np.log(median) + rng.normal(0, 0.5, li.size))
    idle = rng.random(li.size) < idle_share
    sec = np.where(idle, rng.uniform(7200, 36000, li.size), true_sec)
    # timestamps: cumulative time within learner (rows are sorted by learner, position)
    start = pd.Timestamp("2025-01-06 08:00") + pd.to_timedelta(rng.integers(0, 14 * 24 * 3600, n_learners), unit="s")
    cum = pd.Series(sec).groupby(li).cumsum().to_numpy() - sec
    ts = start[li] + pd.to_timedelta(cum, unit="s")
    # a new session starts after an idle event
    session = pd.Series(idle.astype(int)).groupby(li).cumsum().to_numpy() - idle
    return sec, ts, session
