"""Mastery per KC for the course developer: how much practice learners need, and how much they get.

From a fitted :class:`research.estimate.bkt.BKT` each learner's p(known) is traced
opportunity by opportunity (after the answer and the learning step that follows it, the
value a tutor compares with its mastery threshold, 0.95 by default). Per KC:

``opportunities_median``, ``opportunities_low``, ``opportunities_high``
    The opportunity at which learners first reach the threshold: median and the middle
    half of learners (25th and 75th percentiles), over the learners who reached it.
``over_practice_share``
    The share of the KC's practice opportunities that came after the learner had
    already reached mastery.
``under_practice_share``
    The share of learners who left the KC (their last opportunity) below mastery.
``hours_after_mastery``
    The cohort's time spent on opportunities after mastery, from the steps' durations:
    what cutting the practice to the mastery point would have saved. A step with several
    KCs counts for each of them.

KCs that BKT could not fit (one learner, one opportunity, all correct, unordered times)
keep their row with ``status = "skipped"`` and the reason; degenerate fits keep their
numbers but are flagged (``degenerate``, ``flags``), and the recommendation rules ignore
them.

:func:`cohort_mastery` is the one call for a cohort run: student steps from the
warehouse tables (DataShop's KC and opportunity rules), BKT per KC, the ``mastery``
table and the ``student_models`` comparison.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research.errors import ConfigError, DataError
from research.estimate.bkt import BKT

__all__ = ["MASTERY_COLUMNS", "MAX_CV_LEARNERS", "cohort_mastery", "mastery_table"]

#: learners the student models are compared on by default: above it, a random sample of this many
#: (the comparison's AUC is then known to about +-0.005, and 8,000 learners take a quarter of the time)
MAX_CV_LEARNERS = 2000

MASTERY_COLUMNS = [
    "kc_model", "kc", "status", "reason", "n_learners", "n_obs",
    "prior", "learn", "forget", "guess", "slip", "learn_se", "degenerate", "flags",
    "threshold", "n_mastered", "opportunities_median", "opportunities_low", "opportunities_high",
    "over_practice_share", "n_after_mastery", "under_practice_share", "n_under",
    "hours_after_mastery", "method",
]


def mastery_table(model: BKT, *, threshold: float = 0.95, steps: pd.DataFrame | None = None,
                  duration: str = "duration_s") -> pd.DataFrame:
    """The ``mastery`` table of a fitted :class:`BKT` (columns in :data:`MASTERY_COLUMNS`).

    ``steps`` is the frame the model was fitted on, needed only for durations (a
    ``duration`` column aligned row by row with it); without it ``hours_after_mastery``
    is empty.
    """
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be a probability between 0 and 1, got {threshold!r}")
    params = model.params_.copy()
    tr = model.trace()
    if len(tr):
        if steps is not None and duration in steps.columns:
            sel = steps
            if model.kc_model_ is not None and model.columns.get("kc_model_column") in steps.columns:
                sel = steps[steps[model.columns["kc_model_column"]].astype(str) == model.kc_model_]
            dur = pd.to_numeric(sel[duration], errors="coerce").to_numpy(dtype=float)
            tr["duration_s"] = dur[tr["row"].to_numpy()]
        else:
            tr["duration_s"] = np.nan
        tr = tr.sort_values(["kc", "learner", "opportunity"], kind="stable")
        tr["mastered"] = tr["p_known_after"].to_numpy() >= threshold
        g = tr.groupby(["kc", "learner"], sort=False, observed=True)
        tr["seq_pos"] = g.cumcount() + 1
        # opportunities after mastery: rows after the first mastered row of the sequence
        tr["after"] = (g["mastered"].cumsum() - tr["mastered"].astype(int)) > 0
        first = tr[tr["mastered"]].groupby(["kc", "learner"], sort=False, observed=True)["seq_pos"].min()
        last = g["p_known_after"].last()
        per_kc = tr.groupby("kc", sort=False, observed=True).agg(
            n_after_mastery=("after", "sum"), n_rows=("after", "size"),
        )
        dur_after = tr["duration_s"].where(tr["after"])
        per_kc["hours_after_mastery"] = dur_after.groupby(tr["kc"]).sum(min_count=1) / 3600.0
        has_dur = tr["duration_s"].notna().groupby(tr["kc"]).any()
        per_kc.loc[~has_dur.reindex(per_kc.index).fillna(False).to_numpy(bool), "hours_after_mastery"] = np.nan
        per_kc.loc[has_dur.reindex(per_kc.index).fillna(False).to_numpy(bool) & per_kc["hours_after_mastery"].isna(),
                   "hours_after_mastery"] = 0.0
        fq = first.groupby(level=0)
        per_kc["n_mastered"] = fq.size()
        per_kc["opportunities_median"] = fq.median()
        per_kc["opportunities_low"] = fq.quantile(0.25)
        per_kc["opportunities_high"] = fq.quantile(0.75)
        under = (last < threshold).groupby(level=0)
        per_kc["n_under"] = under.sum()
        per_kc["under_practice_share"] = under.mean()
        per_kc["over_practice_share"] = per_kc["n_after_mastery"] / per_kc["n_rows"]
        per_kc = per_kc.drop(columns=["n_rows"])
        params = params.merge(per_kc, left_on="kc", right_index=True, how="left")
    for c in MASTERY_COLUMNS:
        if c not in params.columns:
            params[c] = np.nan
    params["threshold"] = threshold
    fit = params["status"] == "fit"
    params.loc[fit, "n_mastered"] = params.loc[fit, "n_mastered"].fillna(0)
    params.loc[fit, "n_after_mastery"] = params.loc[fit, "n_after_mastery"].fillna(0)
    params.loc[fit, "n_under"] = params.loc[fit, "n_under"].fillna(0)
    for c in ("n_learners", "n_obs", "n_mastered", "n_after_mastery", "n_under"):
        params[c] = pd.to_numeric(params[c]).round().astype("Int64")
    for c in ("kc_model", "kc", "status", "reason", "flags", "method"):
        params[c] = params[c].astype("object").where(params[c].notna(), None).astype("string")
    params["degenerate"] = params["degenerate"].astype("boolean")
    params["method"] = params["method"].fillna("bkt_em") + f"; mastery at p(known) >= {threshold:g}"
    return params[MASTERY_COLUMNS].reset_index(drop=True)


def choose_kc_model(steps: pd.DataFrame, kc_model: str | None) -> str:
    """``kc_model`` when given (checked), else the model that tags the most student steps."""
    models = steps["kc_model"].dropna().astype(str)
    present = sorted(models.unique())
    if not present:
        raise DataError("the cohort's steps have no KC tags in any KC model: there is nothing to trace.")
    if kc_model is not None:
        if kc_model not in present:
            raise ConfigError(f"kc_model={kc_model!r} is not in the cohort; its KC models are {present}")
        return kc_model
    counts = steps.groupby(models, observed=True)["step_row"].nunique()
    return str(counts.sort_index().idxmax())


def cohort_mastery(data, *, kc_model: str | None = None, threshold: float = 0.95, forgetting: bool = False,
                   item_guess_slip: bool = False, n_starts: int = 5, n_boot: int = 20, ci_level: float = 0.95,
                   models=("rasch", "afm", "pfa", "best_lr", "bkt"), n_folds: int = 5, seed: int = 0,
                   steps: pd.DataFrame | None = None,
                   max_learners: int | None = MAX_CV_LEARNERS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mastery and student-model comparison for one cohort: ``(mastery, student_models)``.

    Parameters
    ----------
    data
        The cohort's canonical tables (``ctx.data`` in a notebook; needs ``attempts`` and
        ``attempt_kcs``), or ``None`` when ``steps`` is given.
    kc_model
        KC model to trace; default the one that tags the most steps.
    threshold
        p(known) that counts as mastery.
    forgetting, item_guess_slip, n_starts, n_boot, ci_level
        BKT options (:class:`research.estimate.bkt.BKT`; ``ci_level`` is the level of the
        bootstrap intervals of its parameters).
    models, n_folds
        Student models to compare (any subset; empty for none) and folds of the
        learner-grouped cross-validation. With fewer learners than folds the comparison
        table is empty.
    max_learners
        Learners the student models are compared on (:data:`MAX_CV_LEARNERS` by default;
        None for all): above it a seeded random sample of that many is cross-validated,
        and the table's ``method`` says so. The mastery table always uses every learner.
    steps
        A ready student-step KC frame instead of ``data``.
    """
    from research.estimate import opportunities, student_models

    if steps is None:
        if data is None:
            raise ConfigError("give the cohort's tables (data=...) or a student-step frame (steps=...)")
        steps = opportunities.student_steps(data.attempts, data.attempt_kcs)
    model_name = choose_kc_model(steps, kc_model)
    one = steps[steps["kc_model"].astype(str) == model_name].reset_index(drop=True)
    bkt = BKT(forgetting=forgetting, item_guess_slip=item_guess_slip, n_starts=n_starts, n_boot=n_boot,
              ci_level=ci_level, seed=seed).fit(one, kc_model=model_name)
    mastery = mastery_table(bkt, threshold=threshold, steps=one)
    empty = pd.DataFrame(columns=student_models.TABLE_COLUMNS)
    if not models or one["learner_id"].nunique() < n_folds:
        return mastery, empty
    comp = student_models.compare_student_models(one, models=models, n_folds=n_folds, seed=seed,
                                                 kc_model=model_name, bkt_settings={"n_starts": n_starts},
                                                 max_learners=max_learners)
    return mastery, comp[student_models.TABLE_COLUMNS]
