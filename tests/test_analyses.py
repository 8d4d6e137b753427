"""Any cohort runs: the guarded notebook steps (research.steps) and the record of skipped analyses.

These call the same step functions the notebooks call, on real simulated tables with parts
taken away (no attempts, no tests, no surveys, no KC tags, 1 and 25 learners, items all
correct), so the decisions are tested here and not only through papermill
(tests/test_any_cohort_runs.py runs the notebooks).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from research import steps
from research.analyses import REASONS, Skipped, sentence
from research.bayes import SamplerSettings
from research.cohort import CohortData
from research.estimate.classical import ItemThresholds
from research.notebook import Context
from research.simulate import simulate_cohort


@pytest.fixture(scope="module")
def sim_tables():
    return simulate_cohort(n_learners=40, seed=11, cohort="c").tables


def _ctx(tmp_path, tables: dict, notebook: str = "02_item_analysis", min_cell_size: int = 5) -> Context:
    ctx = Context(cohort="c", warehouse=tmp_path / "unused.duckdb", out_dir=tmp_path / "out", min_cell_size=min_cell_size,
                  notebook=notebook)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    ctx.__dict__["data"] = CohortData(cohort="c", **tables)  # the tables a warehouse load would give
    return ctx


def _empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[0:0].copy()


def _only(tables: dict, keep: set[str]) -> dict:
    return {name: (t if name in keep else _empty(t)) for name, t in tables.items()}


def _learners(tables: dict, n: int) -> dict:
    ids = tables["attempts"]["learner_id"].drop_duplicates().head(n)
    return {name: (t[t["learner_id"].isin(ids)].copy() if "learner_id" in t.columns else t) for name, t in tables.items()} | {
        "attempt_kcs": tables["attempt_kcs"][tables["attempt_kcs"]["attempt_id"].isin(
            tables["attempts"].loc[tables["attempts"]["learner_id"].isin(ids), "attempt_id"])].copy()}


def _record(ctx) -> pd.DataFrame:
    return ctx.analyses().set_index("analysis")


def test_25_learners_write_item_statistics_flagged_low_n_and_skip_irt_with_the_min_n_sentence(tmp_path, sim_tables):
    ctx = _ctx(tmp_path, _learners(sim_tables, 25))
    th = ItemThresholds(min_n=30)
    stats = steps.item_statistics(ctx, th)
    models = steps.fit_irt(ctx, stats, th)
    table = steps.item_table(ctx, stats, models, th)
    assert isinstance(models, Skipped)
    assert "25 learners; this needs 30 per item: set min_n to go lower" in repr(models)
    assert table["low_n"].all() and table["difficulty"].isna().all()
    assert (ctx.out_dir / "items.csv").is_file()
    rec = _record(ctx)
    assert rec.loc["irt", "status"] == "skipped" and rec.loc["irt", "reason"] == "too_few_learners"
    assert json.loads(rec.loc["irt", "numbers"]) == {"n_learners": 25, "needed": 30}
    assert rec.loc["item_statistics", "status"] == "adapted"
    # with min_n lowered the same learners are calibrated
    ctx2 = _ctx(tmp_path / "low", _learners(sim_tables, 25))
    th2 = ItemThresholds(min_n=10)
    fitted = steps.fit_irt(ctx2, steps.item_statistics(ctx2, th2), th2)
    assert not isinstance(fitted, Skipped) and fitted.rasch.item_params_["difficulty"].notna().all()


def test_a_tests_only_cohort_analyses_the_test_items_skips_the_attempt_analyses_and_computes_gains(tmp_path, sim_tables):
    tables = _only(sim_tables, {"assessments", "learners", "items"})
    ctx = _ctx(tmp_path, tables)
    th = ItemThresholds(min_n=30)
    stats = steps.item_statistics(ctx, th)
    models = steps.fit_irt(ctx, stats, th)
    table = steps.item_table(ctx, stats, models, th)
    assert not isinstance(models, Skipped)
    a = tables["assessments"]
    instruments = a["instrument"].nunique()
    items = a.loc[a["item_id"] != "total"].groupby("instrument")["item_id"].nunique().sum()
    assert len(table) == items and table["n_learners"].max() <= 40 and instruments > 1
    assert isinstance(steps.distractors(ctx, stats, models), Skipped)  # tests have no chosen options
    ctx3 = _ctx(tmp_path, tables, notebook="03_learning_curves")
    assert isinstance(steps.kc_models(ctx3, steps.student_steps(ctx3)), Skipped)
    ctx4 = _ctx(tmp_path, tables, notebook="04_learning_gains")
    scores = steps.learner_scores(ctx4)
    gains = steps.gain_table(ctx4, scores, steps.group_attributes(tables["learners"]))
    assert not isinstance(gains, Skipped) and (ctx.out_dir / "gains.csv").is_file()
    assert isinstance(steps.survey_table(ctx4), Skipped)
    rec = ctx.analyses().set_index("analysis")
    assert rec.loc["item_statistics", "reason"] == "items_from_tests" and rec.loc["irt", "status"] == "ran"
    for name, reason in (("distractors", "no_options"), ("kc_models", "no_attempts"), ("learning_curves", "no_attempts"),
                         ("surveys", "no_surveys")):
        assert rec.loc[name, "status"] == "skipped" and rec.loc[name, "reason"] == reason, name
    assert rec.loc["gains", "status"] == "ran"


def test_a_cohort_with_only_test_totals_skips_item_analysis(tmp_path, sim_tables):
    a = sim_tables["assessments"]
    totals = a.groupby(["cohort", "learner_id", "instrument", "module", "phase"], as_index=False, observed=True).agg(
        score=("score", "sum"), max_score=("max_score", "sum")).assign(item_id="total")
    ctx = _ctx(tmp_path, dict(_only(sim_tables, set()), assessments=totals[a.columns.intersection(totals.columns)]))
    stats = steps.item_statistics(ctx, ItemThresholds(min_n=30))
    assert isinstance(stats, Skipped) and stats.record.reason == "no_attempts"
    assert steps.reliability(ctx, ItemThresholds()).record.reason == "no_item_scores"


def test_a_surveys_only_cohort_runs_the_survey_table_and_skips_the_rest(tmp_path, sim_tables):
    tables = _only(sim_tables, {"surveys"})
    ctx = _ctx(tmp_path, tables, notebook="04_learning_gains")
    scores = steps.learner_scores(ctx)
    assert isinstance(scores, Skipped) and "no test results were loaded" in repr(scores)
    assert isinstance(steps.gain_table(ctx, scores, []), Skipped)
    assert not isinstance(steps.survey_table(ctx), Skipped)
    assert not isinstance(steps.survey_items(ctx), Skipped)
    ctx5 = _ctx(tmp_path, tables, notebook="05_equity_and_engagement")
    responses = steps.first_attempts(ctx5)
    assert isinstance(steps.dif_table(ctx5, responses), Skipped)
    assert isinstance(steps.funnel(ctx5, responses), Skipped)
    gaps = steps.gaps(ctx5, responses)
    assert isinstance(gaps, Skipped) and gaps.record.reason == "no_groups"


def test_attempts_without_kc_tags_met_once_say_that_there_is_no_curve(tmp_path, sim_tables):
    ctx = _ctx(tmp_path, dict(sim_tables, attempt_kcs=_empty(sim_tables["attempt_kcs"])), notebook="03_learning_curves")
    result = steps.kc_models(ctx, steps.student_steps(ctx))
    assert isinstance(result, Skipped) and result.record.reason == "one_kc_per_item_once"
    assert "each item was treated as a KC of its own, and no learner met an item more than once" in repr(result)


def test_attempts_without_kc_tags_get_one_kc_per_item_and_say_so(tmp_path, sim_tables):
    first = sim_tables["attempts"]
    again = first.assign(attempt_id=first["attempt_id"] + "-again", problem_view=2,
                         timestamp=first["timestamp"] + pd.Timedelta(days=7))  # every item met a second time
    tables = dict(sim_tables, attempts=pd.concat([first, again], ignore_index=True),
                  attempt_kcs=_empty(sim_tables["attempt_kcs"]))
    ctx = _ctx(tmp_path, tables, notebook="03_learning_curves")
    student_steps = steps.student_steps(ctx)
    assert set(student_steps["kc_model"]) == {"Item"}
    assert student_steps.groupby("kc")["item_id"].nunique().eq(1).all()
    fitted = steps.kc_models(ctx, student_steps)
    result = steps.learning_curves(ctx, student_steps, fitted, n_boot=20)
    assert not isinstance(result, Skipped) and set(result.kc_table["kc_model"]) == {"Item"}
    rec = _record(ctx)
    assert rec.loc["learning_curves", "status"] == "adapted" and rec.loc["learning_curves", "reason"] == "one_kc_per_item"
    assert "each item was treated as a KC of its own" in rec.loc["kc_models", "message"]


def test_one_learner_runs_every_step_without_an_error(tmp_path, sim_tables):
    tables = _learners(sim_tables, 1)
    ctx = _ctx(tmp_path, tables)
    th = ItemThresholds(min_n=30)
    stats = steps.item_statistics(ctx, th)
    models = steps.fit_irt(ctx, stats, th)
    steps.item_table(ctx, stats, models, th)
    steps.distractors(ctx, stats, models)
    steps.reliability(ctx, th)
    ctx3 = _ctx(tmp_path, tables, notebook="03_learning_curves")
    s = steps.student_steps(ctx3)
    steps.learning_curves(ctx3, s, steps.kc_models(ctx3, s), n_boot=20)
    ctx4 = _ctx(tmp_path, tables, notebook="04_learning_gains")
    scores = steps.learner_scores(ctx4)
    groups = steps.group_attributes(tables["learners"])
    steps.attrition(ctx4, scores, groups)
    post = steps.bayes_gains(ctx4, scores, groups, "role", SamplerSettings(draws=20, tune=20, chains=1), run=True)
    assert post is None  # one learner: no group reaches the minimum cell size, nothing sampled
    steps.gain_table(ctx4, scores, groups, post)
    steps.gain_regression(ctx4, scores, groups, "role")
    steps.survey_table(ctx4)
    steps.survey_items(ctx4)
    ctx5 = _ctx(tmp_path, tables, notebook="05_equity_and_engagement")
    r = steps.first_attempts(ctx5)
    steps.dif_table(ctx5, r)
    steps.funnel(ctx5, r)
    steps.gaps(ctx5, r)
    steps.time_on_task(ctx5, r)
    rec = ctx.analyses()
    assert set(rec["status"]) <= {"ran", "adapted", "skipped"}
    assert rec.loc[rec["analysis"] == "irt", "status"].item() == "skipped"
    assert rec.loc[rec["analysis"] == "bayes_gains", "reason"].item() == "groups_too_small"
    assert rec.loc[rec["analysis"] == "dif", "reason"].item() == "groups_too_small"


def test_items_all_correct_cannot_be_calibrated_and_say_so(tmp_path, sim_tables):
    attempts = sim_tables["attempts"].copy()
    attempts["outcome"] = "correct"
    ctx = _ctx(tmp_path, dict(sim_tables, attempts=attempts))
    th = ItemThresholds(min_n=10)
    models = steps.fit_irt(ctx, steps.item_statistics(ctx, th), th)
    assert isinstance(models, Skipped) and models.record.reason == "no_calibratable_items"
    assert "no item was answered both right and wrong by at least 10 learners" in repr(models)


def test_the_record_keeps_one_row_per_notebook_and_analysis_and_validates(tmp_path, sim_tables):
    ctx = _ctx(tmp_path, sim_tables)
    ctx.skip("irt", "too_few_learners", n_learners=3, needed=30)
    ctx.ran("irt")
    other = _ctx(tmp_path, sim_tables, notebook="05_equity_and_engagement")
    other.skip("dif", "no_groups")
    rec = ctx.analyses()
    assert len(rec) == 2 and rec.set_index("analysis").loc["irt", "status"] == "ran"
    assert ctx.not_analysed().empty and len(other.not_analysed()) == 1
    with pytest.raises(Exception, match="unknown reason 'no_such_reason'"):
        ctx.skip("irt", "no_such_reason")


def test_every_reason_formats_with_its_numbers_in_every_language():
    from research.report.i18n import translations

    numbers = {"n_learners": 25, "needed": 30, "min_cell_size": 10, "attribute": "role", "constructs": "c", "items": "q",
               "n_sampled": 20, "seconds": 60.0, "max_steps": 1}
    for lang in ("en", "sv", "da"):
        gettext = translations(lang).gettext
        for reason in REASONS:
            text = sentence("irt", "skipped", reason, numbers, gettext=gettext)
            assert "{" not in text, (lang, reason, text)
    sv = sentence("irt", "skipped", "too_few_learners", numbers, gettext=translations("sv").gettext)
    assert sv == "Rasch- och 2PL-modeller: 25 deltagare; det krävs 30 per uppgift: sänk min_n för att gå lägre"


def test_the_report_lists_what_was_not_analysed_in_its_language(tmp_path, sim_tables):
    from research.report import render_report

    ctx = _ctx(tmp_path, sim_tables)
    ctx.skip("irt", "too_few_learners", n_learners=25, needed=30)
    ctx.ran("kc_models", "one_kc_per_item")
    from research.recommend import recommend

    recs = recommend({}, cohort="c")
    en = render_report(recs, language="en", cohort="c", analyses=ctx.analyses())
    da = render_report(recs, language="da", cohort="c", analyses=ctx.analyses())
    assert "What was not analysed, and why" in en
    assert "Rasch and 2PL models: 25 learners; this needs 30 per item: set min_n to go lower." in en
    assert "each item was treated as a KC of its own" in en
    assert "Hvad der ikke blev analyseret, og hvorfor" in da
    assert "Rasch- og 2PL-modeller: 25 deltagere; det kræver 30 pr. opgave: sænk min_n for at gå lavere." in da
    assert "What was not analysed" not in render_report(recs, language="en", cohort="c", analyses=None)


def test_reach_never_gives_back_a_cohort_size_the_report_hides(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from research import steps

    monkeypatch.setattr(steps, "cohort_learners", lambda data: 40)
    ctx = SimpleNamespace(data=None, out_dir=tmp_path, min_cell_size=10)
    assert steps.n_learners_in_cohort(ctx) == 40  # no funnel yet: the size is published with the findings
    pd.DataFrame({"position": [1, 2], "n_cohort": [40, 40], "reached": [35, 30]}).to_csv(tmp_path / "funnel.csv", index=False)
    assert steps.n_learners_in_cohort(ctx) == 40
    pd.DataFrame({"position": [1, 2], "n_cohort": [None, None], "reached": [35, 30]}).to_csv(tmp_path / "funnel.csv", index=False)
    assert steps.n_learners_in_cohort(ctx) is None  # hidden by the privacy check: reach must not reveal it
    monkeypatch.setattr(steps, "cohort_learners", lambda data: 7)
    (tmp_path / "funnel.csv").unlink()
    assert steps.n_learners_in_cohort(ctx) is None  # a cohort below the minimum cell size


def test_has_prepost_needs_one_learner_with_both_tests_of_one_instrument():
    from research.analyses import has_prepost

    def frame(learners, instruments, phases):
        return pd.DataFrame({"learner_id": learners, "instrument": instruments, "phase": phases})

    assert has_prepost(frame(["a", "a", "b"], ["x", "x", "x"], ["pre", "post", "pre"]))
    assert not has_prepost(frame(["a", "b"], ["x", "x"], ["pre", "post"]))  # two learners
    assert not has_prepost(frame(["a", "a"], ["x", "y"], ["pre", "post"]))  # two instruments
    assert not has_prepost(frame(["a", "a"], [None, None], ["pre", "post"]))  # no instrument
    assert not has_prepost(frame([], [], []))
