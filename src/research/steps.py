"""The guarded steps of notebooks 02-06: each runs what the cohort's data allows.

A notebook cell calls one step; the step checks its inputs, runs the estimate (or skips it
with a plain sentence recorded through :meth:`research.notebook.Context.skip`), writes its
table and returns what the cell shows. A step given the :class:`~research.analyses.Skipped`
result of an earlier step skips quietly (the earlier step already said why). So a cohort
with only test scores, only surveys, attempts without KC tags, or a single learner runs
every notebook to the end, and the report says what was not analysed.

Heavy libraries (PyMC, ArviZ) are imported only by the steps that sample.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from research.analyses import (
    Skipped,
    attempts_from_tests,
    cohort_learners,
    group_attributes,
    group_sizes_ok,
    has_item_scores,
    has_prepost,
    is_skipped,
    n_learners,
    one_kc_per_item,
)
from research.errors import ConfigError, DataError, ResearchError

__all__ = [
    "attrition", "bayes_diagnostics", "bayes_gains", "characteristic_curves", "describe_items", "dif_curves",
    "dif_flagged", "dif_not_analysed", "dif_table", "distractor_view", "distractors", "figure", "first_attempts",
    "fit_irt", "funnel", "gain_regression", "gain_table", "gain_view", "gaps", "group_attributes", "is_skipped",
    "item_statistics", "item_table", "item_view", "kc_model_figure", "kc_model_view", "kc_models", "kc_table_view",
    "learner_scores", "learning_curve_figure", "learning_curves", "mastery", "mastery_figures",
    "n_learners_in_cohort", "overall_curve", "posterior_view", "record_families", "reliability", "sigma",
    "significant_gaps", "step_summary", "student_steps", "survey_figures", "survey_items", "survey_table",
    "time_on_task", "top_drops", "wright_map",
]

#: Errors an estimator raises when the data cannot support it; anything else is a bug and propagates.
DATA_ERRORS = (DataError, ValueError, ZeroDivisionError, np.linalg.LinAlgError, FloatingPointError)


def _fail(ctx, analysis: str, exc: Exception) -> Skipped:
    return ctx.skip(analysis, "estimate_failed", detail=f"{type(exc).__name__}: {exc}")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def _table_step(ctx, analysis: str, name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run quietly; its table written as ``name`` and ``analysis`` recorded
    as run; a data error skips the analysis instead (estimate_failed)."""
    try:
        table = _quiet(fn, *args, **kwargs)
    except DATA_ERRORS as exc:
        return _fail(ctx, analysis, exc)
    ctx.write_table(table, name)
    ctx.ran(analysis)
    return table


def figure(ctx, name: str, plot, *inputs, alt_fn=None, **kwargs):
    """Draw ``plot(*inputs, **kwargs)`` and save it, unless an input was skipped or is empty.

    ``plot`` returns ``(figure, alt)``, or a figure when ``alt_fn(*inputs)`` gives the alt text.
    A figure that cannot be drawn from this data is left out with a sentence, never an error.
    """
    for x in inputs:
        if isinstance(x, Skipped):
            return x
        if x is None or (isinstance(x, pd.DataFrame) and x.empty):
            return "No figure: nothing to draw for this cohort."
    try:
        out = _quiet(plot, *inputs, **kwargs)
        fig, alt = (out, alt_fn(*inputs)) if alt_fn is not None else out
    except DATA_ERRORS + (KeyError, IndexError, TypeError, ResearchError) as exc:
        import matplotlib.pyplot as plt

        plt.close("all")
        return f"No figure: {type(exc).__name__}: {exc}"
    return ctx.save_figure(fig, name, alt=alt)


# ------------------------------------------------------------------ 02 item analysis


def item_statistics(ctx, thresholds):
    """Classical statistics of every item (written later with the IRT columns): ``(responses, stats)``."""
    attempts = ctx.data.attempts
    from_tests = False
    if attempts.empty:
        attempts = attempts_from_tests(ctx.data.assessments, ctx.cohort)
        if attempts is None:
            skipped = ctx.skip("item_statistics", "no_attempts")
            ctx.skip("irt", "no_attempts")
            ctx.skip("distractors", "no_attempts")
            return skipped
        from_tests = True
    from research.estimate import classical

    responses = classical.first_attempt_responses(attempts)
    stats = _quiet(classical.item_statistics, attempts, None if from_tests else ctx.data.items, min_n=thresholds.min_n,
                   responses=responses)
    n = n_learners(attempts)
    if n < thresholds.min_n:
        ctx.ran("item_statistics", "low_n_flags", n_learners=n, needed=thresholds.min_n)
    elif from_tests:
        ctx.ran("item_statistics", "items_from_tests")
    else:
        ctx.ran("item_statistics")
    return SimpleNamespace(responses=responses, stats=stats, attempts=attempts)


def fit_irt(ctx, classical_result, thresholds, *, fit_2pl: bool = True, bayesian: bool = False, sampler=None):
    """Rasch (and 2PL) on the items that can be calibrated; skipped with a sentence when none can."""
    if is_skipped(classical_result):
        return ctx.skipped("irt", classical_result)
    from research.estimate import irt

    responses = classical_result.responses
    fit_data = irt.drop_unestimable(responses, min_n=thresholds.min_n)
    n = n_learners(responses)
    if fit_data["item_id"].nunique() < 2 or n_learners(fit_data) < 3:
        if n < thresholds.min_n:
            return ctx.skip("irt", "too_few_learners", n_learners=n, needed=thresholds.min_n)
        return ctx.skip("irt", "no_calibratable_items", needed=thresholds.min_n)
    try:
        rasch = _quiet(irt.Rasch(method="bayes" if bayesian else "ml", sampler=sampler if bayesian else None).fit, fit_data)
        twopl = _quiet(irt.TwoPL().fit, fit_data) if fit_2pl else None
    except DATA_ERRORS as exc:
        return _fail(ctx, "irt", exc)
    ctx.ran("irt")
    return SimpleNamespace(fit_data=fit_data, rasch=rasch, twopl=twopl, dropped=fit_data.attrs["dropped_items"])


def item_table(ctx, classical_result, irt_result, thresholds):
    """The item table (``items.csv``): classical statistics with the IRT columns where they were fitted."""
    if is_skipped(classical_result):
        return ctx.skipped("item_statistics", classical_result)
    from research.estimate import irt

    fitted = not is_skipped(irt_result)
    table = irt.item_table(classical_result.stats, rasch=irt_result.rasch if fitted else None,
                           twopl=irt_result.twopl if fitted else None, thresholds=thresholds)
    for col in ("discrimination", "upper_lower_index"):  # correlations rounded just past +-1 on tiny cohorts
        table[col] = table[col].clip(-1.0, 1.0)
    ctx.write_table(table, "items")
    return table


def flagged_items(table, irt_result) -> list[str]:
    """Items for the characteristic curves: flagged ones, else the three of most concern."""
    if is_skipped(irt_result) or is_skipped(table):
        return []
    fitted = table["item_id"].isin(irt_result.rasch.item_params_["item_id"])
    flagged = table.loc[table["flags"].str.contains("underfit|negative_discrimination|low_discrimination") & fitted, "item_id"]
    return flagged.head(6).tolist() or table.loc[fitted, "item_id"].head(3).tolist()


def distractors(ctx, classical_result, irt_result):
    """The options chosen on multiple-choice items (``item_distractors.csv``), small cells suppressed."""
    if is_skipped(classical_result):
        return ctx.skipped("distractors", classical_result)
    from research.estimate import classical

    attempts = classical_result.attempts
    if "response" not in attempts.columns or attempts["response"].isna().all():
        return ctx.skip("distractors", "no_options")
    ability = None if is_skipped(irt_result) else irt_result.rasch.abilities()
    try:
        table = classical.suppress_small_cells(classical.distractor_table(attempts, ctx.data.items, ability=ability,
                                                                          responses=classical_result.responses),
                                               ctx.min_cell_size)
    except DATA_ERRORS as exc:
        return _fail(ctx, "distractors", exc)
    ctx.write_table(table, "item_distractors")
    ctx.ran("distractors")
    return table


def reliability(ctx, thresholds):
    """Cronbach's alpha of every test instrument and phase with item scores."""
    assessments = ctx.data.assessments
    if assessments.empty:
        return ctx.skip("reliability", "no_assessments")
    if not has_item_scores(assessments):
        return ctx.skip("reliability", "no_item_scores")
    from research.estimate import classical

    table = _quiet(classical.reliability_by_instrument, assessments, min_n=thresholds.min_n)
    if table["estimate"].notna().any():
        ctx.ran("reliability")
    else:
        ctx.skip("reliability", "too_few_learners_total", n_learners=n_learners(assessments), needed=3)
    return table


# ------------------------------------------------------------------ 03 learning curves


def student_steps(ctx):
    """Student steps with DataShop's opportunity counts; one KC per item when the data has no KC tags."""
    attempts = ctx.data.attempts
    if attempts.empty:
        ctx.skip("kc_models", "no_attempts")
        return ctx.skip("learning_curves", "no_attempts")
    from research.estimate import opportunities

    kcs = ctx.data.attempt_kcs
    tagged = not kcs.empty and _any_in(kcs["attempt_id"], attempts["attempt_id"])
    steps = opportunities.student_steps(attempts, kcs if tagged else one_kc_per_item(attempts))
    steps.attrs["one_kc_per_item"] = not tagged
    return steps


def _any_in(values: pd.Series, pool: pd.Series) -> bool:
    """Whether any of ``values`` is in ``pool`` (Arrow's hash lookup: pandas' ``isin`` on Arrow strings
    builds a Python object per value of ``pool``, seconds for a large cohort)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        left, right = pa.array(values, from_pandas=True), pa.array(pool, from_pandas=True)
        if isinstance(right, pa.ChunkedArray):
            right = right.combine_chunks()
        if left.type != right.type:
            right = right.cast(left.type)
        return bool(pc.any(pc.is_in(left, value_set=right)).as_py())
    except (pa.ArrowException, TypeError, ValueError):  # mixed types: pandas compares them as objects
        return bool(values.isin(pool).any())


def step_summary(steps):
    if is_skipped(steps):
        return steps
    return steps.groupby("kc_model").agg(student_steps=("step_row", "nunique"), kcs=("kc", "nunique"),
                                         learners=("learner_id", "nunique"), max_opportunity=("opportunity", "max"))


def kc_models(ctx, steps, kc_models=None, *, cv_top: int = 5, slope_lower_bound: float | None = 0.0,
              ci_level: float = 0.95):
    """Fit the AFM per KC model and compare the models (``kc_models.csv``): ``(models, comparison)``.

    ``slope_lower_bound`` bounds every learning rate from below (0: DataShop's AFM; None: free
    slopes); the free slope and its test are in ``kcs.csv`` either way.

    Every KC model is fitted; the ``cv_top`` best by BIC are also cross-validated (a DataShop
    export can carry dozens of KC models, and cross-validating each takes minutes). The others'
    cross-validation columns are empty.
    """
    if is_skipped(steps):
        return ctx.skipped("kc_models", steps)
    from research.estimate import afm

    wanted = [m for m in (kc_models or []) if m in set(steps["kc_model"])] or None
    if steps["opportunity"].max() < 2:
        reason = "one_kc_per_item_once" if steps.attrs.get("one_kc_per_item") else "no_learning_data"
        ctx.skip("kc_models", reason)
        return ctx.skip("learning_curves", reason)
    n = n_learners(steps)
    try:
        models = _quiet(afm.fit_kc_models, steps, kc_models=wanted, cv=False, slope_lower_bound=slope_lower_bound,
                        ci_level=ci_level)
        if n >= 3 and cv_top > 0:
            for m in afm.compare_kc_models(models)["kc_model"].head(int(cv_top)):
                try:  # the fitted model is cross-validated as it stands (the same as refitting it with cv=True)
                    _quiet(models[m].cross_validate)
                except DATA_ERRORS:  # too little data to hold learners or items out: the model keeps its fit without CV
                    for kind in afm.CV_KINDS:
                        models[m].stats_.pop(f"cv_rmse_{kind}", None)
                    models[m].cv_ = None
        comparison = afm.compare_kc_models(models)
    except DATA_ERRORS as exc:
        _fail(ctx, "kc_models", exc)
        return ctx.skip("learning_curves", "estimate_failed", detail="the AFM could not be fitted")
    ctx.write_table(comparison, "kc_models")
    if steps.attrs.get("one_kc_per_item"):
        ctx.ran("kc_models", "one_kc_per_item")
    else:
        ctx.ran("kc_models")
    return SimpleNamespace(models=models, comparison=comparison, best=comparison["kc_model"].iloc[0])


def learning_curves(ctx, steps, fitted, *, student_threshold: int = 10, n_boot: int = 400, kc_model: str | None = None):
    """KC categories (``kcs.csv``) and learning curves (``learning_curves.csv``): ``(kc_table, curves)``.

    ``kc_model`` (a cohort file's ``kc_model``) is the KC model shown; by default the best by BIC.
    """
    if is_skipped(steps):
        return ctx.skipped("learning_curves", steps)
    if is_skipped(fitted):
        return ctx.skipped("learning_curves", fitted)
    from research.estimate import afm, curves

    n = n_learners(steps)
    if n < student_threshold:
        return ctx.skip("learning_curves", "too_few_learners_total", n_learners=n, needed=student_threshold)
    try:
        with_pred = _quiet(afm.add_predictions, steps, fitted.models)
        kc_table = _quiet(curves.kc_table, fitted.models, with_pred, student_threshold=student_threshold, n_boot=n_boot)
        lc = _quiet(curves.all_learning_curves, with_pred, predicted="p_error",
                    min_learners=max(student_threshold, ctx.min_cell_size))
    except DATA_ERRORS + (IndexError,) as exc:
        return _fail(ctx, "learning_curves", exc)
    ctx.write_table(kc_table, "kcs")
    ctx.write_table(lc, "learning_curves")
    if steps.attrs.get("one_kc_per_item"):
        ctx.ran("learning_curves", "one_kc_per_item")
    else:
        ctx.ran("learning_curves")
    shown = [m for m in fitted.comparison["kc_model"] if m in set(lc["kc_model"])]
    if kc_model is not None:
        if kc_model not in set(fitted.comparison["kc_model"]):
            raise ConfigError(f"kc_model={kc_model!r} is not a KC model of cohort {ctx.cohort!r}; "
                              f"valid: {', '.join(map(str, fitted.comparison['kc_model']))}")
        return SimpleNamespace(kc_table=kc_table, curves=lc, best=kc_model)
    # the best KC model by BIC, or the best of those with a curve point of enough learners to show
    return SimpleNamespace(kc_table=kc_table, curves=lc, best=shown[0] if shown else fitted.best)


def kc_table_view(result):
    if is_skipped(result):
        return result
    cols = ["kc", "category", "category_confidence", "category_probability", "category_alternative", "intercept",
            "intercept_prob", "slope", "slope_ci_low", "slope_ci_high", "slope_free", "slope_free_ci_low",
            "slope_free_ci_high", "slope_order_se", "first_error_rate", "last_error_rate",
            "n_learners_first", "n_learners_last", "n_obs"]
    t = result.kc_table
    return t[t["kc_model"] == result.best][[c for c in cols if c in t.columns]].sort_values(["category", "slope"])


def overall_curve(result):
    if is_skipped(result):
        return result
    from research.estimate import curves

    lc = result.curves
    return lc[(lc["kc_model"] == result.best) & (lc["kc"] == curves.OVERALL)][
        ["measure", "opportunity", "estimate", "ci_low", "ci_high", "n", "share_of_start", "predicted"]]


def mastery(ctx, steps, fitted, *, threshold: float = 0.95, forgetting: bool = False, n_folds: int = 5, seed: int = 0,
            max_learners: int | None = 2000, ci_level: float = 0.95):
    """Knowledge tracing per KC (``mastery.csv``) and the comparison of student models (``student_models.csv``).

    Traces the KC model the AFM ranked best. Returns ``(mastery, student_models)``, or the
    sentence of why not. With fewer learners than ``n_folds`` the student models are not compared;
    above ``max_learners`` (notebook 03's parameter; 2,000 as
    :data:`research.estimate.mastery.MAX_CV_LEARNERS`; None for all) they are compared on a seeded
    random sample of that many. ``ci_level`` is the level of the BKT parameters' bootstrap intervals.
    """
    if max_learners is not None and (isinstance(max_learners, bool) or not isinstance(max_learners, int)
                                     or max_learners < 2):
        raise ConfigError(f"max_learners must be a whole number of at least 2 (or None for every learner), "
                          f"got {max_learners!r}")
    for upstream in (steps, fitted):
        if is_skipped(upstream):  # recorded with the reason the models were not fitted
            why = upstream.record
            ctx.skip("student_models", why.reason, detail=why.detail, **why.numbers)
            return ctx.skip("mastery", why.reason, detail=why.detail, **why.numbers)
    from research.estimate import mastery as mastery_mod

    n = n_learners(steps)
    models = ("rasch", "afm", "pfa", "best_lr", "bkt") if n >= n_folds else ()
    try:
        table, compared = _quiet(mastery_mod.cohort_mastery, None, steps=steps, kc_model=fitted.best, threshold=threshold,
                                 forgetting=forgetting, models=models, n_folds=n_folds, seed=seed,
                                 max_learners=max_learners, ci_level=ci_level)
    except DATA_ERRORS as exc:
        _fail(ctx, "student_models", exc)
        return _fail(ctx, "mastery", exc)
    ctx.write_table(table, "mastery")
    if steps.attrs.get("one_kc_per_item"):
        ctx.ran("mastery", "one_kc_per_item")
    else:
        ctx.ran("mastery")
    if models:
        ctx.write_table(compared, "student_models")
        n_traced = n_learners(steps[steps["kc_model"].astype(str) == str(fitted.best)])
        n_compared = int(compared["n_learners"].iloc[0]) if len(compared) else n_traced
        if n_compared < n_traced:  # above max_learners the models are compared on a sample of learners
            ctx.ran("student_models", "learners_sampled", n_sampled=n_compared, n_learners=n_traced)
        else:
            ctx.ran("student_models")
    else:
        ctx.skip("student_models", "too_few_learners_total", n_learners=n, needed=n_folds)
    return SimpleNamespace(mastery=table, student_models=compared)


def mastery_figures(ctx, result):
    if is_skipped(result):
        return result
    from research.plots import mastery as plots

    if len(result.student_models):
        ctx.save_figure(plots.plot_student_models(result.student_models), "student_models",
                        alt=plots.student_models_alt(result.student_models))
    ctx.save_figure(plots.plot_practice(result.mastery), "mastery", alt=plots.practice_alt(result.mastery))
    cols = ["kc", "status", "reason", "n_learners", "learn", "guess", "slip", "opportunities_median", "over_practice_share",
            "under_practice_share", "hours_after_mastery"]
    return result.mastery[[c for c in cols if c in result.mastery.columns]]


# ------------------------------------------------------------------ 04 learning gains


def learner_scores(ctx):
    """Each learner's pre/post scores per instrument; skipped (with every gain analysis) when there are none."""
    assessments = ctx.data.assessments
    reason = "no_assessments" if assessments.empty else ("no_prepost" if not has_prepost(assessments) else None)
    if reason:
        for name in ("gains", "bayes_gains", "gain_regression", "attrition"):
            last = ctx.skip(name, reason)
        return last
    from research.estimate import gains

    return gains.learner_scores(assessments)


def attrition(ctx, scores, groups):
    if is_skipped(scores):
        return ctx.skipped("attrition", scores)
    from research.estimate import gains

    table = _table_step(ctx, "attrition", "attrition", gains.attrition, scores, ctx.data.learners, group=groups,
                        min_cell_size=ctx.min_cell_size)
    if is_skipped(table):
        return table
    return table[table["group_variable"] == "all"]


def bayes_gains(ctx, scores, groups, bayes_group, settings, *, run: bool = True):
    """The Bayesian hierarchical gain model over ``bayes_group`` (PyMC), when asked and possible."""
    if is_skipped(scores):
        return None
    if not run:
        return None
    if bayes_group not in groups:
        ctx.skip("bayes_gains", "bayes_group_missing", attribute=bayes_group)
        return None
    if not group_sizes_ok(ctx.data.learners, [bayes_group], ctx.min_cell_size):
        ctx.skip("bayes_gains", "groups_too_small", min_cell_size=ctx.min_cell_size)
        return None
    from research.estimate import gains

    try:
        learner_gains = gains.gains_with_groups(scores, ctx.data.learners, bayes_group)
        posterior = gains.BayesianGainModel(settings).fit(learner_gains, group=bayes_group).summary()
    except DATA_ERRORS as exc:
        _fail(ctx, "bayes_gains", exc)
        return None
    ctx.ran("bayes_gains")
    return posterior


def gain_table(ctx, scores, groups, posterior=None):
    if is_skipped(scores):
        return ctx.skipped("gains", scores)
    from research.estimate import gains

    return _table_step(ctx, "gains", "gains", gains.summarise_scores, scores, ctx.data.learners, group=groups,
                       min_cell_size=ctx.min_cell_size, posterior=posterior)


def gain_regression(ctx, scores, groups, bayes_group):
    if is_skipped(scores):
        return ctx.skipped("gain_regression", scores)
    from research.estimate import gains

    try:
        learner_table = gains.gains_with_groups(scores, ctx.data.learners, groups)
        out = _quiet(gains.gain_mixed_model, learner_table, group=[g for g in groups if g == bayes_group] or None)
        ancova = _quiet(gains.ancova_table, learner_table, group=list(groups) or None, min_cell_size=ctx.min_cell_size)
    except DATA_ERRORS as exc:
        return _fail(ctx, "gain_regression", exc)
    ctx.write_table(ancova, "ancova")  # post ~ pre + group per test and attribute
    ctx.ran("gain_regression")
    return out


def survey_table(ctx, *, seed: int = 0, bayes: bool = False, settings=None):
    surveys_df = ctx.data.surveys
    if surveys_df.empty:
        return ctx.skip("surveys", "no_surveys")
    from research.estimate import surveys

    try:
        bayes_tables = None
        if bayes:
            bayes_tables = {c: surveys.BayesianOrdinalChange(settings).fit(surveys_df, construct=c).summary()
                            for c in sorted(surveys_df["construct"].unique())}
        table = _quiet(surveys.survey_summary, surveys_df, min_cell_size=ctx.min_cell_size, seed=seed, bayes=bayes_tables)
    except DATA_ERRORS as exc:
        return _fail(ctx, "surveys", exc)
    ctx.write_table(table, "surveys")
    ctx.ran("surveys")
    return table


def survey_items(ctx, *, bayes: bool = False, settings=None):
    """Ordinal item models, waves on one scale, invariance: ``survey_items`` and ``survey_waves``.

    Also ``survey_invariance`` (waves and learner groups). What was left out (answers off the
    scale, one-question constructs, small waves) and comparisons that are not safe are shown as
    plain sentences; returns ``(items, waves, invariance)`` or a ``Skipped``.
    """
    surveys_df = ctx.data.surveys
    if surveys_df.empty:
        return ctx.skip("survey_items", "no_surveys")
    from research.estimate import survey_models

    try:
        models = _quiet(survey_models.fit_constructs, surveys_df, min_cell_size=ctx.min_cell_size)  # fitted once for both tables
        items = _quiet(survey_models.survey_items, surveys_df, ctx.data.learners, min_cell_size=ctx.min_cell_size,
                       models=models)
        bayes_tables = None
        if bayes:
            bayes_tables = {c: survey_models.BayesianWaves(settings).fit(surveys_df, construct=c,
                                                                          min_cell_size=ctx.min_cell_size).summary()
                            for c in sorted(items["construct"].unique())}
        invariance = _quiet(survey_models.survey_invariance, surveys_df, ctx.data.learners,
                            min_cell_size=ctx.min_cell_size, items=items)
        waves = _quiet(survey_models.survey_waves, surveys_df, min_cell_size=ctx.min_cell_size, items=items,
                       invariance=invariance, bayes=bayes_tables, models=models)
    except DATA_ERRORS as exc:
        return _fail(ctx, "survey_items", exc)
    ctx.write_table(items, "survey_items")
    ctx.write_table(waves, "survey_waves")
    ctx.write_table(invariance, "survey_invariance")
    ctx.ran("survey_items")
    for note in dict.fromkeys(items.attrs.get("notes", []) + waves.attrs.get("notes", [])):
        print(note)
    for note in invariance["note"].dropna():
        if "not safe" in note:
            print(note)
    # unsafe comparisons go to the record, so the report says them in its language
    for analysis, is_wave in (("survey_wave_comparison", True), ("survey_group_comparison", False)):
        rows = invariance[(invariance["comparison"] == "wave") == is_wave]
        unsafe = rows[~rows["comparable"].astype("boolean").fillna(True)]
        if len(unsafe):
            which = sorted(set(unsafe["construct"].astype(str) + ("" if is_wave else " (" + unsafe["comparison"].astype(str) + ")")))
            bad = sorted({i for v in unsafe["dif_items"].fillna("") for i in str(v).split(" | ") if i})
            ctx.ran(analysis, "comparison_not_safe", constructs=", ".join(which), items=", ".join(bad) or "-")
        elif len(rows):
            ctx.ran(analysis)
    return items, waves, invariance


def survey_figures(ctx, result):
    """The question map and the wave means of :func:`survey_items`' tables (or its ``Skipped``)."""
    from research.plots import surveys as survey_plots

    if isinstance(result, Skipped):
        return result
    items, waves, _ = result
    return (figure(ctx, "survey_items", survey_plots.item_map, items),
            figure(ctx, "survey_waves", survey_plots.wave_means, waves))


# ------------------------------------------------------------------ 05 equity and engagement


def first_attempts(ctx):
    if ctx.data.attempts.empty:
        for name in ("dif", "funnel", "time_on_task"):
            last = ctx.skip(name, "no_attempts")
        return last
    from research.estimate import dif

    return dif.first_attempt_responses(ctx.data.attempts)


def _group_reason(ctx, attributes):
    learners = ctx.data.learners
    present = [a for a in (attributes or group_attributes(learners)) if a in learners.columns]
    if learners.empty or not present:
        return "no_groups", {}
    if not group_sizes_ok(learners, present, ctx.min_cell_size):
        return "groups_too_small", {"min_cell_size": ctx.min_cell_size}
    return None, {}


def dif_table(ctx, responses, *, attributes=None, reference=None, purify=True, purify_classes=("B", "C"),
              ci_level: float = 0.95):
    if is_skipped(responses):
        return ctx.skipped("dif", responses)
    reason, numbers = _group_reason(ctx, attributes)
    if reason:
        return ctx.skip("dif", reason, **numbers)
    from research.estimate import dif

    return _table_step(ctx, "dif", "dif", dif.mantel_haenszel_dif, responses, ctx.data.learners, attributes=attributes,
                       reference=reference or {}, min_cell_size=ctx.min_cell_size, purify=purify,
                       purify_classes=purify_classes, ci_level=ci_level)


def dif_flagged(table):
    if is_skipped(table):
        return table
    return table[table["ets_class"].isin(["B", "C"])].sort_values(["ets_class", "mh_delta"], ascending=[False, True])


def dif_curves(ctx, responses, table):
    if is_skipped(responses) or is_skipped(table):
        return None
    from research.estimate import dif

    try:
        return _quiet(dif.flagged_success_curves, responses, ctx.data.learners, table, min_cell_size=ctx.min_cell_size)
    except DATA_ERRORS:
        return None


def dif_not_analysed(table):
    if is_skipped(table):
        return table
    return table.loc[table["suppressed_reason"] != "", ["attribute", "focal_group", "suppressed_reason"]].drop_duplicates()


def funnel(ctx, responses, *, level: str = "page", ci_level: float = 0.95):
    if is_skipped(responses):
        return ctx.skipped("funnel", responses)
    from research.estimate import engagement

    try:
        table = engagement.funnel(ctx.data.attempts, ctx.data.items, level=level, learners=ctx.data.learners,
                                  ci_level=ci_level)
    except DATA_ERRORS as exc:
        return _fail(ctx, "funnel", exc)
    ctx.write_table(table, "funnel")
    ctx.ran("funnel")
    return table


def top_drops(table, n: int = 5):
    if is_skipped(table):
        return table
    return table.sort_values("rank_of_drop").head(n)


def gaps(ctx, responses, *, attributes=None, reference=None, completion_target: float = 0.8, ci_level: float = 0.95):
    reason, numbers = _group_reason(ctx, attributes)
    if reason:
        return ctx.skip("gaps", reason, **numbers)
    from research.estimate import engagement, gaps as gaps_mod

    attempts = ctx.data.attempts
    resp = None if is_skipped(responses) else responses
    if resp is None and not has_prepost(ctx.data.assessments):
        return ctx.skip("gaps", "no_attempts")
    try:
        completion = engagement.learner_completion(attempts, ctx.data.items, learners=ctx.data.learners) if resp is not None else None
        table = _quiet(gaps_mod.equity_gaps, resp, ctx.data.learners, assessments=ctx.data.assessments,
                       completion=completion, completion_target=completion_target, attributes=attributes,
                       reference=reference or {}, min_cell_size=ctx.min_cell_size, ci_level=ci_level)
    except DATA_ERRORS + (TypeError, AttributeError, KeyError) as exc:
        return _fail(ctx, "gaps", exc)
    ctx.write_table(table, "gaps")
    ctx.ran("gaps")
    return table


def significant_gaps(table):
    if is_skipped(table):
        return table
    return table[(table["difference_p_adjusted"] < 0.05) | (table["attribute"] == "all")]


def time_on_task(ctx, responses, *, cap_s: float = 600, over_factor: float = 2.0, ci_level: float = 0.95):
    if is_skipped(responses):
        return ctx.skipped("time_on_task", responses)
    from research.estimate import engagement

    try:
        table = engagement.time_on_task(ctx.data.attempts, ctx.data.items, level="page", cap_s=cap_s,
                                        over_factor=over_factor, min_cell_size=ctx.min_cell_size, ci_level=ci_level)
    except DATA_ERRORS as exc:
        return _fail(ctx, "time_on_task", exc)
    ctx.write_table(table, "time_on_task")
    ctx.ran("time_on_task")
    return table


# ------------------------------------------------------------------ 06 recommendations

#: Rule family (analysis code) -> the estimate tables it reads.
FAMILIES = {
    "findings_items": ("items", "distractors"),
    "findings_kcs": ("kcs", "kc_models"),
    "findings_dif": ("dif",),
    "findings_pages": ("funnel", "time_on_task"),
    "findings_mastery": ("mastery",),
    "findings_surveys": ("survey_items",),
}


def record_families(ctx, estimates, record) -> None:
    """Record each rule family as run (its tables are there) or skipped, with the reason upstream."""
    for family, tables in FAMILIES.items():
        if any(t in estimates and len(estimates[t]) for t in tables):
            ctx.ran(family)
            continue
        upstream = record[record["analysis"].isin(_UPSTREAM[family]) & (record["status"] == "skipped")]
        if len(upstream):
            row = upstream.iloc[0]
            ctx.skip(family, row["reason"], **_numbers(row["numbers"]))
        else:
            ctx.skip(family, "not_written")


_UPSTREAM = {
    "findings_items": ("item_statistics", "irt"),
    "findings_kcs": ("learning_curves", "kc_models"),
    "findings_dif": ("dif",),
    "findings_pages": ("funnel", "time_on_task"),
    "findings_mastery": ("mastery", "kc_models"),
    "findings_surveys": ("survey_items",),
}


def _numbers(text: str) -> dict:
    import json

    return json.loads(text) if text else {}


def n_learners_in_cohort(ctx) -> int | None:
    """The cohort's size as the denominator of a finding's reach, or None where the report may not publish it.

    ``reach`` (n_affected / cohort size) is published beside ``n_affected``, so it gives the
    cohort size back: below the minimum cell size, or when the privacy check hid the cohort
    size in ``funnel.csv`` (so that learners who never started cannot be worked out), reach is
    taken relative to the largest ``n_affected`` instead.
    """
    n = cohort_learners(ctx.data)
    if n < ctx.min_cell_size:
        return None
    funnel = Path(ctx.out_dir) / "funnel.csv"
    if funnel.is_file():
        published = pd.read_csv(funnel)
        if "n_cohort" in published.columns and len(published) and published["n_cohort"].isna().all():
            return None
    return n


# ------------------------------------------------------------------ what the notebook cells show


def describe_items(result):
    """Summary of the classical item statistics (mean, min, median, max of each column)."""
    if is_skipped(result):
        return result
    return result.stats.describe().T[["mean", "min", "50%", "max"]]


def sigma(result):
    """The items left out of the IRT models, and the Rasch model's ability spread."""
    if is_skipped(result):
        return result
    print("left out of the IRT models:", result.dropped or "none")
    return result.rasch.summary().query("parameter == 'sigma'")


def item_view(table, n: int = 20):
    if is_skipped(table):
        return table
    return table[["item_id", "n_learners", "facility", "discrimination", "difficulty", "difficulty_se", "infit_mnsq",
                  "outfit_mnsq", "flags"]].head(n)


def wright_map(ctx, irt_result):
    from research.plots import items as plots

    if is_skipped(irt_result):
        return irt_result
    return figure(ctx, "wright_map", plots.wright_map, irt_result.rasch.abilities(), irt_result.rasch.item_params_)


def characteristic_curves(ctx, table, irt_result):
    from research.plots import items as plots

    if is_skipped(irt_result):
        return irt_result
    shown = flagged_items(table, irt_result)
    return figure(ctx, "item_characteristic_curves", plots.item_characteristic_curves,
                  irt_result.rasch.icc(items=shown), abilities=irt_result.rasch.abilities(), responses=irt_result.fit_data)


def distractor_view(distractors_table, table, n: int = 5):
    if is_skipped(distractors_table) or is_skipped(table):
        return distractors_table
    return distractors_table[distractors_table["item_id"].isin(table["item_id"].head(n))]


def bayes_diagnostics(ctx, irt_result, bayesian: bool):
    from research.plots import items as plots

    if not bayesian:
        return "Not sampled: bayesian = False."
    if is_skipped(irt_result):
        return irt_result
    return figure(ctx, "bayes_diagnostics", plots.convergence_diagnostics, irt_result.rasch.diagnostics_)


def kc_model_figure(ctx, fitted):
    from research.plots import curves as plots

    if is_skipped(fitted):
        return fitted
    return figure(ctx, "kc_model_comparison", plots.plot_kc_model_comparison, fitted.comparison,
                  alt_fn=plots.kc_model_comparison_alt)


def kc_model_view(fitted):
    if is_skipped(fitted):
        return fitted
    cols = ["kc_model", "n_kcs", "n_obs", "loglik", "n_params", "aic", "bic", "delta_bic", "cv_rmse_learner",
            "cv_rmse_item", "cv_rmse_unstratified", "rank_bic"]
    return fitted.comparison[[c for c in cols if c in fitted.comparison.columns]]


def learning_curve_figure(ctx, result):
    from research.plots import curves as plots

    if is_skipped(result):
        return result
    return figure(ctx, "learning_curves", plots.plot_learning_curve_grid, result.curves, result.kc_table,
                  kc_model=result.best,
                  alt_fn=lambda lc, kt: plots.learning_curve_grid_alt(lc, kt, kc_model=result.best))


def gain_view(table):
    if is_skipped(table):
        return table
    cols = ["module", "group_variable", "group", "n", "pre_mean", "post_mean", "gain", "gain_ci_low", "gain_ci_high",
            "g_avg", "g_class", "hake_band", "c_avg", "d_z", "hedges_g", "prob_positive", "suppressed_reason"]
    return table[cols]


def posterior_view(posterior):
    if posterior is None:
        return "No Bayesian gain model: not asked for, or not possible with this cohort (see the end of the notebook)."
    print(f"converged: {posterior.attrs['converged']}, divergences: {posterior.attrs['divergences']}, "
          f"max R-hat: {posterior.attrs['max_r_hat']:.3f}, sampler: {posterior.attrs['sampler_backend']}")
    return posterior
