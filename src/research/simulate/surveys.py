"""A staff survey in three waves (baseline, midway, end) with known truth and planted problems.

:func:`simulate_survey_waves` draws Likert answers from a graded response model,
``P(Y >= k) = logistic(a_j (theta - b_jk))``, for one construct (and a small second one),
with the construct's true mean per wave on one scale (baseline 0), attrition between waves,
learner groups (gender, role) and four planted item problems:

- ``reversed``: stored as reverse-coded but answered like the other items (respondents did
  not read the negation), so after reverse coding it runs against the construct;
- ``ceiling``: nearly everyone agrees (thresholds far below the learners);
- ``misfit``: hardly related to the construct (discrimination 0.15);
- ``dif``: works differently for one group: at the same level of the construct, the focal
  group (``gender == "female"``) answers ``dif_shift`` logits higher.

``truth`` holds the item parameters, the wave means, which item carries which problem and the
learners' latent values, so tests can check recovery and the recommendation rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from research.errors import ConfigError

__all__ = ["SimulatedSurveyWaves", "simulate_survey_waves", "with_survey_waves"]

WAVES = ("pre", "mid", "post")


@dataclass
class SimulatedSurveyWaves:
    surveys: pd.DataFrame
    learners: pd.DataFrame
    truth: dict = field(default_factory=dict)


def simulate_survey_waves(
    n_learners: int = 600,
    *,
    n_items: int = 8,
    wave_means: tuple[float, float, float] = (0.0, 0.4, 0.8),
    stay: tuple[float, float] = (0.85, 0.7),
    n_categories: int = 5,
    dif_shift: float = 1.2,
    planted: bool = True,
    cohort: str = "sim",
    seed: int | None = 0,
    learners: pd.DataFrame | None = None,
) -> SimulatedSurveyWaves:
    """Three waves of a Likert survey from a GRM, with attrition and planted item problems.

    Parameters
    ----------
    wave_means
        True mean of the construct in each wave (baseline 0), in SD units of the baseline.
    stay
        Share of learners who answer at midway and at the end (drawn independently, so some
        answer the end but not midway: partial responders).
    planted
        Plant the reversed, ceiling, misfit and DIF items (the last four items of the main
        construct ``self_efficacy``); without, all items behave.
    learners
        Survey these learners (``learner_id``, ``gender``, ``role``) instead of drawing them;
        ``n_learners`` is then their number.
    """
    if n_items < 6 and planted:
        raise ConfigError(f"n_items must be at least 6 to plant four problem items, got {n_items}")
    if len(wave_means) != 3 or len(stay) != 2:
        raise ConfigError("wave_means needs three values (pre, mid, post) and stay two (mid, post)")
    rng = np.random.default_rng(seed)
    ids = np.array([f"s{i:05d}" for i in range(n_learners)], dtype=object)
    gender = rng.choice(["female", "male"], size=n_learners, p=[0.5, 0.5])
    role = rng.choice(["caseworker", "team lead"], size=n_learners, p=[0.7, 0.3])
    if learners is not None:
        n_learners = len(learners)
        ids = learners["learner_id"].astype(str).to_numpy(dtype=object)
        gender = learners["gender"].astype(str).to_numpy(dtype=object)
        role = learners["role"].astype(str).to_numpy(dtype=object)
    learners = pd.DataFrame({"cohort": cohort, "learner_id": ids, "gender": gender, "role": role})

    a, b, roles, names, rev = _self_efficacy_items(rng, n_items, n_categories, planted)

    u = rng.normal(0.0, 1.0, n_learners)
    present = np.column_stack([np.ones(n_learners, bool), rng.random(n_learners) < stay[0],
                               rng.random(n_learners) < stay[1]])
    frames, thetas = [], {}
    for w, wave in enumerate(WAVES):
        theta = 0.8 * u + 0.6 * rng.normal(size=n_learners) + wave_means[w]  # SD 1 per wave
        thetas[wave] = theta
        eta = a[None, :, None] * (theta[:, None, None] - b[None, :, :])  # (learners, items, cats-1)
        if planted:
            eta[gender == "female", roles["dif"], :] += a[roles["dif"]] * dif_shift
        y = (rng.random((n_learners, n_items))[:, :, None] < 1 / (1 + np.exp(-eta))).sum(axis=2)  # 0..K-1
        stored = np.where(rev[None, :], (n_categories - 1) - y, y)
        if planted:  # the misread item: answered like a positive one, stored as it was answered
            stored[:, roles["reversed"]] = y[:, roles["reversed"]]
        keep = np.flatnonzero(present[:, w])
        frames.append(pd.DataFrame({
            "learner_id": np.repeat(ids[keep], n_items), "phase": wave, "construct": "self_efficacy",
            "item_id": np.tile(names, keep.size), "response": stored[keep].ravel() + 1,
            "scale_min": 1, "scale_max": n_categories, "reverse_coded": np.tile(rev, keep.size)}))
        frames.append(_belonging(rng, theta, ids, keep, wave, n_categories))
    s = pd.concat(frames, ignore_index=True)
    s.insert(0, "cohort", cohort)
    s = s.astype({"cohort": "string", "learner_id": "string", "phase": "string", "construct": "string",
                  "item_id": "string", "response": "Int64", "scale_min": "Int64", "scale_max": "Int64",
                  "reverse_coded": "boolean"})
    truth = {"a": dict(zip(names, a)), "b": {n: b[k] for k, n in enumerate(names)},
             "wave_means": dict(zip(WAVES, wave_means)),
             "planted": {k: (names[v] if v is not None else None) for k, v in roles.items()},
             "n_per_wave": dict(zip(WAVES, present.sum(axis=0).tolist())), "theta": thetas,
             "dif_group": ("gender", "female"), "dif_shift": dif_shift}
    return SimulatedSurveyWaves(surveys=s, learners=learners.astype({"cohort": "string", "learner_id": "string",
                                                                     "gender": "string", "role": "string"}),
                                truth=truth)


def _self_efficacy_items(rng, n_items: int, n_categories: int, planted: bool):
    """The self-efficacy items: discriminations, thresholds (items x categories-1), the planted
    problem items' indices (reversed, ceiling, misfit, dif; None unless ``planted``), names and
    the reverse-coded flags."""
    a = rng.uniform(1.2, 2.2, n_items)
    loc = rng.normal(0.0, 0.4, n_items)
    b = loc[:, None] + np.linspace(-1.8, 1.4, n_categories - 1)[None, :]
    roles = {"reversed": None, "ceiling": None, "misfit": None, "dif": None}
    if planted:
        j = n_items - 4
        roles = {"reversed": j, "ceiling": j + 1, "misfit": j + 2, "dif": j + 3}
        b[j + 1] = np.linspace(-4.5, -2.6, n_categories - 1)  # ceiling: nearly everyone agrees
        a[j + 2] = 0.15  # misfit: barely related to the construct
    names = np.array([f"se_{k + 1}" for k in range(n_items)], dtype=object)
    rev = np.zeros(n_items, bool)
    rev[1] = True  # a properly reversed item
    if planted:
        rev[roles["reversed"]] = True  # stored as reversed, answered as if not
    return a, b, roles, names, rev


def _belonging(rng, theta, ids, keep, wave: str, n_categories: int) -> pd.DataFrame:
    """A short second construct (three items, no problems) of one wave, for the learners ``keep``."""
    n_learners = len(theta)
    t2 = 0.5 * theta + np.sqrt(0.75) * rng.normal(size=n_learners)
    b2 = np.linspace(-1.5, 1.5, n_categories - 1)
    y2 = (rng.random((n_learners, 3))[:, :, None] < 1 / (1 + np.exp(-1.6 * (t2[:, None, None] - b2)))).sum(axis=2)
    return pd.DataFrame({
        "learner_id": np.repeat(ids[keep], 3), "phase": wave, "construct": "belonging",
        "item_id": np.tile(np.array(["be_1", "be_2", "be_3"], dtype=object), keep.size),
        "response": y2[keep].ravel() + 1, "scale_min": 1, "scale_max": n_categories, "reverse_coded": False})


def with_survey_waves(sim, *, seed: int = 0, planted: bool = True):
    """A simulated cohort whose survey is the three-wave one (its own learners, genders and roles).

    Called by :func:`research.simulate.simulate_cohort` with ``survey_waves=True``; everything
    else of the cohort stays as it was drawn. Answers are dated 15 minutes before the learner's
    first survey answer of the cohort (baseline), 30 and 60 days later. ``truth.surveys`` holds
    one row per construct and wave (``true_mean``, baseline 0) and the planted problem items.
    """
    import dataclasses

    waves = simulate_survey_waves(len(sim.learners), planted=planted, cohort=sim.cohort,
                                  seed=int(np.random.SeedSequence([seed, 18]).generate_state(1)[0]),
                                  learners=sim.learners)
    s = waves.surveys
    first = sim.surveys.groupby("learner_id", observed=True)["timestamp"].min() if "timestamp" in sim.surveys.columns \
        else pd.Series(dtype="datetime64[us]")
    base = s["learner_id"].map(first).fillna(pd.Timestamp("2026-09-01")).astype("datetime64[us]")
    offset = s["phase"].map({"pre": 0, "mid": 30, "post": 60}).astype(int)
    s["timestamp"] = (base - pd.Timedelta(minutes=15) + pd.to_timedelta(offset, unit="D")).astype("datetime64[us]")
    truth = pd.DataFrame([{"construct": "self_efficacy", "phase": p, "true_mean": m} for p, m in waves.truth["wave_means"].items()])
    for problem, item in waves.truth["planted"].items():
        truth[f"planted_{problem}"] = item
    return dataclasses.replace(sim, surveys=s[[c for c in sim.surveys.columns if c in s.columns]],
                               truth=dataclasses.replace(sim.truth, surveys=truth))
