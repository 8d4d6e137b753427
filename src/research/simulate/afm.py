"""An exact generator of the Additive Factors Model, for parameter-recovery tests and benchmarks.

``logit P(success) = theta_learner + sum over the step's KCs of (beta_kc + gamma_kc * prior opportunities)``

:func:`simulate_afm` draws learners, KCs and a practice sequence per learner, counts
opportunities the way DataShop does (in time order, multi-KC steps count for each KC)
and draws first-attempt outcomes from the model. The result holds the student-step KC
frame (the input of :class:`research.estimate.afm.AFM`), the truth, and
:meth:`SimulatedAFM.to_attempts` writes the same practice as canonical ``attempts`` +
``attempt_kcs`` (with retries, hints and transaction-level KC labels), so the
student-step roll-up can be checked against known step KCs and opportunities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from research.errors import ConfigError

__all__ = ["SimulatedAFM", "simulate_afm"]


@dataclass
class SimulatedAFM:
    """Simulated practice with known truth.

    Attributes
    ----------
    steps : DataFrame
        The student-step KC frame (see :func:`research.estimate.opportunities.student_steps`).
    kcs : DataFrame
        kc_model, kc, beta (intercept at the first opportunity, logit), gamma (slope per
        opportunity), no_learning (True where gamma is 0).
    learners : DataFrame
        learner_id, theta.
    seed : int
    """

    steps: pd.DataFrame
    kcs: pd.DataFrame
    learners: pd.DataFrame
    seed: int

    def to_attempts(self, *, cohort: str = "sim", hint_share: float = 0.3, give_up_share: float = 0.1,
                    error_kc_noise: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The practice as canonical ``attempts`` and ``attempt_kcs`` tables.

        A step whose first attempt failed gets a hint or an incorrect answer first
        (``hint_share`` hints), then a correct answer, except for ``give_up_share`` of them
        which stay unsolved. On solved steps, ``error_kc_noise`` of the error transactions
        carry an extra, wrong KC label ("noise") that DataShop's rule must ignore because
        the step's KCs come from its correct transaction.
        """
        rng = np.random.default_rng(self.seed + 1)
        one = self.steps.drop_duplicates("step_row").sort_values("step_row").reset_index(drop=True)
        n = len(one)
        failed = one["success"].to_numpy() == 0
        gave_up = failed & (rng.random(n) < give_up_share)
        first_out = np.where(~failed, "correct", np.where(rng.random(n) < hint_share, "hint", "incorrect"))
        # attempt 1 for every step; attempt 2 (correct) for failed steps that were solved.
        second = failed & ~gave_up
        idx = np.concatenate([np.arange(n), np.flatnonzero(second)])
        att = np.concatenate([np.ones(n, dtype=int), np.full(second.sum(), 2)])
        out = np.concatenate([first_out, np.full(second.sum(), "correct")])
        t0 = one["step_time"].to_numpy()
        # a step's time is when it was solved (DataShop's order); its first attempt is 10 s before
        ts = t0[idx] - np.where(att == 1, np.where(failed[idx] & ~gave_up[idx], 10, 0), 0).astype("timedelta64[s]")
        attempts = pd.DataFrame(
            {
                "cohort": cohort,
                "attempt_id": [f"a{i}" for i in range(len(idx))],
                "learner_id": one["learner_id"].to_numpy()[idx],
                "item_id": one["item_id"].to_numpy()[idx],
                "step_id": one["step_id"].to_numpy()[idx],
                "problem_view": one["problem_view"].to_numpy()[idx],
                "attempt": att,
                "outcome": out,
                "timestamp": ts,
                "duration_s": np.round(rng.gamma(4.0, 5.0, len(idx)), 1),
            }
        )
        attempts = attempts.sort_values(["learner_id", "timestamp", "attempt"], kind="stable").reset_index(drop=True)
        step_of_attempt = pd.Series(idx, index=[f"a{i}" for i in range(len(idx))])
        ak = attempts[["cohort", "attempt_id", "outcome"]].copy()
        ak["step_row"] = step_of_attempt.reindex(ak["attempt_id"].to_numpy()).to_numpy()
        kc_rows = self.steps[["step_row", "kc_model", "kc", "opportunity"]]
        attempt_kcs = ak.merge(kc_rows, on="step_row", how="inner")
        noisy = ak[(ak["outcome"] != "correct") & ~gave_up[ak["step_row"].to_numpy()]]
        noisy = noisy[rng.random(len(noisy)) < error_kc_noise]
        noise = noisy[["cohort", "attempt_id", "step_row"]].assign(kc="noise", opportunity=pd.NA)
        noise = noise.merge(kc_rows[["step_row", "kc_model"]].drop_duplicates(), on="step_row")
        attempt_kcs = pd.concat([attempt_kcs.drop(columns="outcome"), noise], ignore_index=True)
        attempt_kcs = attempt_kcs[["cohort", "attempt_id", "kc_model", "kc", "opportunity"]]
        attempt_kcs["opportunity"] = attempt_kcs["opportunity"].astype("Int64")
        for c in ("cohort", "attempt_id", "learner_id", "item_id", "step_id", "outcome"):
            attempts[c] = attempts[c].astype("string")
        for c in ("cohort", "attempt_id", "kc_model", "kc"):
            attempt_kcs[c] = attempt_kcs[c].astype("string")
        attempts["problem_view"] = attempts["problem_view"].astype("Int64")
        attempts["attempt"] = attempts["attempt"].astype("Int64")
        return attempts, attempt_kcs.reset_index(drop=True)


def _check_afm_settings(*, n_learners, n_kcs, n_opportunities, items_per_kc, no_learning_share, multi_kc_share,
                        mastery_streak) -> None:
    for name, value in (("n_learners", n_learners), ("n_kcs", n_kcs), ("n_opportunities", n_opportunities),
                        ("items_per_kc", items_per_kc)):
        if int(value) < 1:
            raise ConfigError(f"{name} must be at least 1, got {value!r}.")
    if not 0 <= no_learning_share <= 1 or not 0 <= multi_kc_share <= 1:
        raise ConfigError(
            f"no_learning_share ({no_learning_share!r}) and multi_kc_share ({multi_kc_share!r}) must lie in [0, 1]."
        )
    if mastery_streak is not None and multi_kc_share > 0:
        raise ConfigError("mastery_streak works with single-KC steps only; set multi_kc_share=0.")
    if n_kcs < 2 and multi_kc_share > 0:
        raise ConfigError("multi_kc_share > 0 needs at least 2 KCs.")


def _before_mastery(long: pd.DataFrame, success: np.ndarray, n_kcs: int, mastery_streak: int) -> np.ndarray:
    """Per step row: whether it comes before the learner's first streak of ``mastery_streak`` successes on its
    KC (in opportunity order); the later steps are dropped, as mastery learning stops practice."""
    keep_step = np.ones(success.size, dtype=bool)
    o = long.sort_values(["learner", "kc", "opportunity"])
    s = success[o["step_row"].to_numpy()]
    grp = (o["learner"].to_numpy() * n_kcs + o["kc"].to_numpy())
    fails = pd.Series(1 - s).groupby(grp).cumsum().to_numpy()
    run = pd.Series(s).groupby([grp, fails]).cumsum().to_numpy()
    reached = pd.Series(run >= mastery_streak).groupby(grp).cummax().to_numpy()
    done_before = pd.Series(reached).groupby(grp).shift(1, fill_value=False).to_numpy().astype(bool)
    keep_step[o["step_row"].to_numpy()[done_before]] = False
    return keep_step


def _numbered_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """Problem views (a learner who meets the same item again opens a new view of it), step rows
    renumbered 0.. in time order within learner (as student_steps does), and the canonical dtypes."""
    first = steps.drop_duplicates("step_row")
    views = first.groupby(["learner_id", "item_id"], sort=False).cumcount() + 1
    steps["problem_view"] = pd.Series(views.to_numpy(), index=first["step_row"].to_numpy()).reindex(
        steps["step_row"].to_numpy()).to_numpy()
    codes, _ = pd.factorize(steps["step_row"], sort=True)
    steps["step_row"] = codes.astype("int64")
    steps["opportunity"] = steps["opportunity"].astype("Int64")
    for c in ("learner_id", "item_id", "step_id", "first_attempt", "kc_model", "kc"):
        steps[c] = steps[c].astype("string")
    return steps


def simulate_afm(
    n_learners: int = 500,
    n_kcs: int = 10,
    n_opportunities: int = 10,
    *,
    items_per_kc: int = 5,
    sigma_theta: float = 1.0,
    beta_mean: float = 0.3,
    beta_sd: float = 0.8,
    gamma_low: float = 0.05,
    gamma_high: float = 0.35,
    no_learning_share: float = 0.2,
    multi_kc_share: float = 0.0,
    mastery_streak: int | None = None,
    kc_model: str = "Simulated",
    seed: int = 0,
) -> SimulatedAFM:
    """Simulate first-attempt outcomes from the Additive Factors Model.

    Every learner meets every KC ``n_opportunities`` times in an interleaved random order
    (a step uses one of ``items_per_kc`` items of its KC). ``multi_kc_share`` of the steps
    also exercise a second, random KC (a compensatory sum, as in AFM and DataShop).
    ``no_learning_share`` of the KCs have slope 0; the others draw a slope uniformly from
    [gamma_low, gamma_high]. ``mastery_streak`` (single-KC only) stops a learner's practice
    of a KC after that many successes in a row, as mastery learning does, so the weaker
    learners stay longest on the curve.

    Returns
    -------
    SimulatedAFM
    """
    _check_afm_settings(n_learners=n_learners, n_kcs=n_kcs, n_opportunities=n_opportunities, items_per_kc=items_per_kc,
                        no_learning_share=no_learning_share, multi_kc_share=multi_kc_share, mastery_streak=mastery_streak)
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, sigma_theta, n_learners)
    beta = rng.normal(beta_mean, beta_sd, n_kcs)
    gamma = rng.uniform(gamma_low, gamma_high, n_kcs)
    n_zero = int(round(no_learning_share * n_kcs))
    zero = np.zeros(n_kcs, dtype=bool)
    zero[rng.choice(n_kcs, n_zero, replace=False)] = True
    gamma[zero] = 0.0
    width = max(len(str(n_kcs - 1)), 2)
    kc_names = np.array([f"kc{k:0{width}d}" for k in range(n_kcs)])
    learner_ids = np.array([f"p_{h:016x}" for h in rng.integers(0, 2**63, n_learners, dtype=np.int64)])

    long, first_kc = _practice_order(rng, n_learners, n_kcs, n_opportunities, multi_kc_share)
    n_steps = n_learners * n_kcs * n_opportunities
    learner = np.repeat(np.arange(n_learners), n_kcs * n_opportunities)
    contrib = beta[long["kc"].to_numpy()] + gamma[long["kc"].to_numpy()] * (long["opportunity"].to_numpy() - 1)
    eta = theta[learner] + np.bincount(long["step_row"].to_numpy(), weights=contrib, minlength=n_steps)
    success = (rng.random(n_steps) < expit(eta)).astype("int64")

    keep_step = np.ones(n_steps, dtype=bool)
    if mastery_streak is not None:
        keep_step = _before_mastery(long, success, n_kcs, mastery_streak)
    steps = _afm_steps(rng, long, first_kc, keep_step, success, learner_ids, kc_names, n_kcs * n_opportunities,
                       items_per_kc, kc_model)
    kcs = pd.DataFrame({"kc_model": kc_model, "kc": kc_names, "beta": beta, "gamma": gamma, "no_learning": zero})
    kcs["kc_model"] = kcs["kc_model"].astype("string")
    kcs["kc"] = kcs["kc"].astype("string")
    learners = pd.DataFrame({"learner_id": pd.array(learner_ids, dtype="string"), "theta": theta})
    return SimulatedAFM(steps=steps, kcs=kcs, learners=learners, seed=seed)


def _practice_order(rng, n_learners: int, n_kcs: int, n_opportunities: int,
                    multi_kc_share: float) -> tuple[pd.DataFrame, np.ndarray]:
    """The KC rows of every step (step_row, learner, position, kc, opportunity) in step order,
    and each step's primary KC.

    Per learner a random permutation of each KC repeated ``n_opportunities`` times; with
    ``multi_kc_share`` a step also exercises a second, random KC (its own row).
    """
    T = n_kcs * n_opportunities
    primary = np.tile(np.repeat(np.arange(n_kcs), n_opportunities), (n_learners, 1))
    primary = np.take_along_axis(primary, rng.random((n_learners, T)).argsort(axis=1), axis=1)
    learner = np.repeat(np.arange(n_learners), T)
    position = np.tile(np.arange(T), n_learners)
    kc1 = primary.ravel()
    step_row = np.arange(n_learners * T)
    rows = [pd.DataFrame({"step_row": step_row, "learner": learner, "position": position, "kc": kc1})]
    if multi_kc_share > 0:
        multi = rng.random(step_row.size) < multi_kc_share
        other = (kc1[multi] + rng.integers(1, n_kcs, multi.sum())) % n_kcs
        rows.append(pd.DataFrame({"step_row": step_row[multi], "learner": learner[multi], "position": position[multi],
                                  "kc": other}))
    long = pd.concat(rows, ignore_index=True).sort_values(["step_row", "kc"], kind="stable")
    long["opportunity"] = long.sort_values(["learner", "kc", "position"]).groupby(["learner", "kc"]).cumcount() + 1
    return long, kc1


def _afm_steps(rng, long: pd.DataFrame, first_kc: np.ndarray, keep_step: np.ndarray, success: np.ndarray,
               learner_ids: np.ndarray, kc_names: np.ndarray, steps_per_learner: int, items_per_kc: int,
               kc_model: str) -> pd.DataFrame:
    """The DataShop-like step table of the kept steps (one row per step x KC), numbered."""
    n_learners = len(learner_ids)
    n_steps = success.size
    learner = np.repeat(np.arange(n_learners), steps_per_learner)
    position = np.tile(np.arange(steps_per_learner), n_learners)
    long = long[keep_step[long["step_row"].to_numpy()]]
    start = np.datetime64("2025-01-06T08:00:00") + (rng.integers(0, 30, n_learners) * 86400).astype("timedelta64[s]")
    item_no = rng.integers(0, items_per_kc, n_steps)
    item = np.char.add(np.char.add(kc_names[first_kc], "_item"), item_no.astype(str))
    fa = np.where(success == 1, "correct", "incorrect")
    sr = long["step_row"].to_numpy()
    steps = pd.DataFrame(
        {
            "step_row": sr,
            "learner_id": learner_ids[learner[sr]],
            "item_id": item[sr],
            "step_id": item[sr],
            "problem_view": 1,
            "step_time": start[learner[sr]] + (position[sr] * 45).astype("timedelta64[s]"),
            "first_attempt": fa[sr],
            "success": success[sr],
            "incorrects": 1 - success[sr],
            "hints": 0,
            "corrects": 1,
            "assistance": 1 - success[sr],
            "duration_s": np.round(20 + 15 * (1 - success[sr]) + rng.gamma(2.0, 5.0, sr.size), 1),
            "kc_model": kc_model,
            "kc": kc_names[long["kc"].to_numpy()],
            "opportunity": long["opportunity"].to_numpy(),
        }
    )
    return _numbered_steps(steps).reset_index(drop=True)
