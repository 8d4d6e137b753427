"""Survey questions and waves (research.estimate.survey_models) on a simulated 3-wave survey with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.estimate import survey_models as sm
from research.recommend import load_config, recommend
from research.schema import output_schema, validate
from research.simulate.surveys import simulate_survey_waves


@pytest.fixture(scope="module")
def sim():
    return simulate_survey_waves(400, seed=2)


@pytest.fixture(scope="module")
def items(sim):
    return sm.survey_items(sim.surveys, sim.learners)


@pytest.fixture(scope="module")
def invariance(sim, items):
    return sm.survey_invariance(sim.surveys, sim.learners, items=items)


def test_planted_questions_are_found_and_only_they(sim, items):
    recs = recommend({"survey_items": items}, load_config())
    found = dict(zip(recs["rule"], recs["target_id"]))
    p = sim.truth["planted"]
    assert found == {"survey_reversed": p["reversed"], "survey_ceiling": p["ceiling"], "survey_misfit": p["misfit"],
                     "survey_dif": p["dif"]}
    row = items.set_index("item_id").loc[p["dif"]]
    assert row["dif_group_attribute"] == "gender" and row["dif_group_class"] == "C"


def test_three_waves_recover_known_change_and_keep_partial_responders(sim, items, invariance):
    waves = sm.survey_waves(sim.surveys, items=items, invariance=invariance)
    w = waves.set_index(["construct", "phase"]).loc["self_efficacy"]
    truth = sim.truth["wave_means"]
    for ph in ("mid", "post"):  # the planted items bias nothing: they behave the same in every wave
        assert w.loc[ph, "ci_low"] - 0.1 < truth[ph] < w.loc[ph, "ci_high"] + 0.1
    assert w.loc["pre", "estimate"] == 0
    n = sim.truth["n_per_wave"]
    assert list(w["n"]) == [n["pre"], n["mid"], n["post"]]
    assert list(w["n_attrition"]) == [0, n["pre"] - n["mid"], n["pre"] - n["post"]]
    assert w["invariance"].iloc[0] == "scalar" and w["comparable"].all()
    for name, table in (("survey_waves", waves), ("survey_items", items)):
        schema = output_schema(name)
        assert not len(validate(table[schema.field_names], schema, source_file=f"{name}.csv").rejects)


def test_group_invariance_says_when_comparing_groups_is_not_safe(sim, invariance):
    inv = invariance.set_index(["construct", "comparison"])
    g = inv.loc[("self_efficacy", "gender")]
    assert g["level"] in ("configural", "metric") and not g["comparable"]
    assert g["dif_items"] == sim.truth["planted"]["dif"] and "not safe" in g["note"]
    assert bool(inv.loc[("belonging", "gender"), "comparable"])
    schema = output_schema("survey_invariance")
    assert not len(validate(inv.reset_index()[schema.field_names], schema, source_file="x.csv").rejects)


def test_a_question_that_changes_meaning_makes_waves_unsafe():
    s = simulate_survey_waves(250, seed=5, planted=False).surveys
    s = s[s["construct"] == "self_efficacy"].copy()
    late = (s["phase"] == "post") & (s["item_id"] == "se_1")
    s.loc[late, "response"] = np.maximum(1, s.loc[late, "response"] - 2)  # same learners, harder to agree at the end
    it = sm.survey_items(s)
    w = sm.survey_waves(s, items=it)
    se = w[w["construct"] == "self_efficacy"]
    assert not se["comparable"].any()
    assert "not safe" in se["note"].iloc[0] and "se_1" in se["note"].iloc[0]


def test_bad_input_is_named_and_skipped_never_shown():
    sim = simulate_survey_waves(120, n_items=4, planted=False, seed=3)
    s = sim.surveys[sim.surveys["phase"] != "post"].copy()
    s["response"] = s["response"].astype("Int64")
    s.loc[5, "response"] = 9  # off the 1..5 scale
    one = s[(s["construct"] == "belonging") & (s["item_id"] == "be_1")].copy()
    one["construct"] = "lonely"
    few = s[(s["construct"] == "belonging") & (s["phase"] == "mid")].head(3 * 4).copy()
    few["construct"], few["phase"] = "tiny", "mid"
    fuller = s[(s["construct"] == "belonging") & (s["phase"] == "pre")].copy()
    fuller["construct"] = "tiny"
    s = pd.concat([s, one, few, fuller], ignore_index=True)
    scored, notes = sm.clean_surveys(s, min_cell_size=10)
    notes = " | ".join(notes)
    assert "outside the item's scale" in notes and "row 5" in notes
    assert "'lonely' has one question only" in notes
    assert "wave 'mid' of construct 'tiny'" in notes
    assert "s0" not in notes  # never a learner id
    assert "lonely" not in set(scored["construct"]) and 9 not in set(scored["score"])
    w = sm.survey_waves(s[s["construct"] == "tiny"], min_cell_size=10)
    assert set(w.loc[w["construct"] == "tiny", "phase"]) == {"pre"}


@pytest.mark.slow
def test_bayesian_waves_sample_few_draws():
    from research.bayes import SamplerSettings

    s = simulate_survey_waves(60, n_items=3, planted=False, seed=1).surveys
    s = s[s["construct"] == "belonging"]
    b = sm.BayesianWaves(SamplerSettings(draws=150, tune=150, chains=2, seed=1)).fit(s, construct="belonging")
    out = b.summary()
    assert list(out["phase"]) == ["pre", "mid", "post"]
    assert out["estimate"].iloc[0] == 0 and (out["ci_high"] >= out["ci_low"]).all()


def test_simulated_cohort_with_three_waves_keeps_everything_else():
    from research.simulate import simulate_cohort

    plain = simulate_cohort(n_learners=300, seed=4)
    waves = simulate_cohort(n_learners=300, seed=4, survey_waves=True)
    for name in ("attempts", "attempt_kcs", "assessments", "learners", "items"):
        pd.testing.assert_frame_equal(getattr(plain, name), getattr(waves, name))
    s = waves.surveys
    assert list(s.columns) == list(plain.surveys.columns)
    assert set(s["phase"]) == {"pre", "mid", "post"} and set(s["learner_id"]) <= set(waves.learners["learner_id"])
    t = waves.truth.surveys
    assert list(t["true_mean"]) == [0.0, 0.4, 0.8] and t["planted_reversed"].iloc[0] == "se_5"
    assert (s.dtypes == plain.surveys.dtypes).all()  # canonical dtypes, raw ids (pseudonymised at ingest)
    found = recommend({"survey_items": sm.survey_items(s, waves.learners)}, load_config())
    assert set(found["target_id"]) == {"se_5", "se_6", "se_7", "se_8"}


def test_a_question_everyone_agrees_with_is_kept_as_a_ceiling_and_left_out_of_the_model():
    s = simulate_survey_waves(120, n_items=4, planted=False, seed=8).surveys
    s = s[s["construct"] == "belonging"].copy()
    s.loc[s["item_id"] == "be_3", "response"] = 5
    it = sm.survey_items(s, min_cell_size=10).set_index("item_id")
    assert it.loc["be_3", "share_top"] == 1.0 and np.isnan(it.loc["be_3", "loading"])
    assert any("'be_3' the same answer" in n for n in it.attrs["notes"])
    recs = recommend({"survey_items": it.reset_index()}, load_config())
    assert list(recs["rule"]) == ["survey_ceiling"] and list(recs["target_id"]) == ["be_3"]
    w = sm.survey_waves(s, min_cell_size=10)
    assert w["estimate"].notna().all()
