"""Tests of research.estimate.surveys: psych (alpha, omega) and ordinal::clm reference values
on our simulated Likert set (tests/reference/gains/), recovery of omega and of the Bayesian
change, reverse coding, suppression and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError, DataError, SchemaError
from research.estimate import surveys as S
from research.simulate.gains import simulate_factor, simulate_likert

REF = Path(__file__).parent / "reference" / "gains"


@pytest.fixture(scope="module")
def ref():
    df = pd.read_csv(REF / "sim_likert_reference.csv")
    return dict(zip(df["statistic"], df["value"]))


@pytest.fixture(scope="module")
def likert_ref_set():
    """The stored simulated set in canonical survey columns (already reverse-scored)."""
    s = pd.read_csv(REF / "sim_likert.csv")
    return pd.DataFrame({"cohort": "sim", "learner_id": s["learner_id"], "phase": s["phase"],
                         "construct": "self_efficacy", "item_id": s["item_id"], "response": s["score"],
                         "scale_min": 1, "scale_max": 5, "reverse_coded": False})


def test_alpha_and_omega_match_psych(likert_ref_set, ref):
    """Compare to psych::alpha (raw_alpha, Feldt interval) and psych::omega(nfactors = 1)$omega.tot."""
    rel = S.reliability(likert_ref_set, phase="pre", n_boot=300).iloc[0]
    assert rel["n"] == ref["n_pre"]
    assert rel["alpha"] == pytest.approx(ref["alpha"], rel=1e-9)
    assert rel["alpha_ci_low"] == pytest.approx(ref["alpha_feldt_low"], rel=1e-7)
    assert rel["alpha_ci_high"] == pytest.approx(ref["alpha_feldt_high"], rel=1e-7)
    assert rel["omega"] == pytest.approx(ref["omega_tot_psych_omega"], abs=1e-5)
    assert rel["omega_ci_low"] < rel["omega"] < rel["omega_ci_high"]
    wide = likert_ref_set[likert_ref_set["phase"] == "pre"].pivot(index="learner_id", columns="item_id",
                                                                  values="response")
    om = S.mcdonald_omega(wide, n_boot=0)
    assert om["loadings"].sum() == pytest.approx(ref["loading_sum"], abs=1e-4)


def test_ordered_model_matches_clm(likert_ref_set, ref):
    """Compare to ordinal::clm(y ~ post + item, link = 'logit')."""
    res = S.ordinal_change(likert_ref_set, construct="self_efficacy").iloc[0]
    assert res["estimate"] == pytest.approx(ref["clm_post"], abs=1e-4)
    assert res["se"] == pytest.approx(ref["clm_post_se"], rel=1e-3)
    assert res["n"] == 250 and res["n_responses"] == 3000 and res["method"] == "ordered_logit"


def test_ordinal_change_on_counts_equals_statsmodels_on_answers(likert_ref_set):
    """The fit on counts per item x phase x answer is statsmodels' OrderedModel on one row per
    answer (polished by Newton steps, so both sit at the maximum): estimate, SE and p."""
    import warnings

    from statsmodels.miscmodels.ordinal_model import OrderedModel

    s = likert_ref_set[likert_ref_set["item_id"].isin(sorted(likert_ref_set["item_id"].unique())[:4])]
    res = S.ordinal_change(s, construct="self_efficacy").iloc[0]
    sc = S.scored_responses(s)
    X = pd.concat([pd.DataFrame({"post": (sc["phase"] == "post").to_numpy(dtype=float)}),
                   pd.get_dummies(sc["item_id"].to_numpy(), drop_first=True, dtype=float)], axis=1)
    y = pd.Categorical(sc["category"].to_numpy(), ordered=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = OrderedModel(y, X, distr="logit")
        ref = m.fit(method="newton", disp=False, start_params=m.fit(method="bfgs", disp=False, maxiter=2000).params)
    assert res["estimate"] == pytest.approx(ref.params["post"], abs=1e-6)
    assert res["se"] == pytest.approx(ref.bse["post"], rel=1e-4)
    assert res["p"] == pytest.approx(ref.pvalues["post"], rel=1e-3)


def test_omega_recovers_known_factor_model():
    x, true_omega = simulate_factor(3000, loadings=(0.8, 0.7, 0.6, 0.5, 0.7, 0.4), seed=4)
    om = S.mcdonald_omega(x, n_boot=400, seed=1)
    assert om["ci_low"] <= true_omega <= om["ci_high"]
    assert om["estimate"] == pytest.approx(true_omega, abs=0.01)
    assert np.allclose(om["loadings"], [0.8, 0.7, 0.6, 0.5, 0.7, 0.4], atol=0.05)


def test_alpha_hand_worked():
    """3 learners x 2 items: [[1,2],[2,3],[3,3]]; item variances 1 and 1/3, total variance
    of sums (3,5,6) = 7/3; alpha = 2 * (1 - (4/3)/(7/3)) = 6/7."""
    al = S.cronbach_alpha(np.array([[1, 2], [2, 3], [3, 3]]))
    assert al["estimate"] == pytest.approx(6 / 7)


def test_reverse_coding_and_construct_scores():
    s = pd.DataFrame({"learner_id": ["a", "a", "a", "a"], "phase": ["pre", "pre", "post", "post"],
                      "construct": "se", "item_id": ["q1", "q2", "q1", "q2"], "response": [2, 4, 3, 1],
                      "scale_min": 1, "scale_max": 5, "reverse_coded": [False, True, False, True]})
    sc = S.construct_scores(s).set_index("phase")
    assert sc.loc["pre", "score"] == pytest.approx((2 + 2) / 2)  # 1 + 5 - 4 = 2
    assert sc.loc["post", "score"] == pytest.approx((3 + 5) / 2)
    assert (sc["n_items"] == 2).all()


def test_simulated_reverse_items_correlate_after_scoring():
    sim = simulate_likert(300, constructs={"se": 5}, reverse_items=2, seed=3)
    scored = S.scored_responses(sim.surveys)
    wide = scored[scored["phase"] == "pre"].pivot(index="learner_id", columns="item_id", values="score")
    assert (np.corrcoef(wide.to_numpy().T)[np.triu_indices(5, 1)] > 0).all()


@pytest.fixture(scope="module")
def survey_sim():
    return simulate_likert(200, constructs={"self_efficacy": 5, "problem_solving": 4},
                           shift={"self_efficacy": 0.8, "problem_solving": 0.0}, learner_sd=1.0, seed=5)


def test_survey_summary_detects_change_and_no_change(survey_sim):
    out = S.survey_summary(survey_sim.surveys, n_boot=200).set_index("construct")
    se, ps = out.loc["self_efficacy"], out.loc["problem_solving"]
    assert se["change_ci_low"] > 0 and se["ordinal_ci_low"] > 0 and se["d_z_ci_low"] > 0
    assert ps["change_ci_low"] < 0 < ps["change_ci_high"]
    assert ps["ordinal_ci_low"] < 0 < ps["ordinal_ci_high"]
    assert int(se["n"]) == 200 and int(se["n_items"]) == 5 and se["reliability_phase"] == "pre"
    assert 0 < se["alpha"] < 1 and se["omega_ci_low"] < se["omega"] < se["omega_ci_high"]
    assert pd.isna(se["bayes_log_odds"]) and se["method"] == "classical"


def test_small_constructs_are_suppressed():
    sim = simulate_likert(8, constructs={"se": 4}, seed=1)
    out = S.survey_summary(sim.surveys, min_cell_size=10, n_boot=50).iloc[0]
    assert "fewer than 10" in out["suppressed_reason"]
    assert pd.isna(out["n"]) and pd.isna(out["change"]) and pd.isna(out["alpha"])


def test_survey_errors():
    sim = simulate_likert(20, constructs={"se": 3}, seed=1)
    bad = sim.surveys.copy()
    bad["response"] = bad["response"].astype("Int64")
    bad.loc[3, "response"] = 9
    with pytest.raises(DataError, match=r"response 9 is not a whole number on the scale 1..5"):
        S.scored_responses(bad)
    with pytest.raises(SchemaError, match="construct='scale'"):
        S.scored_responses(sim.surveys, construct="scale")
    only_pre = sim.surveys[sim.surveys["phase"] == "pre"]
    with pytest.raises(DataError, match="a change needs both 'pre' and 'post'"):
        S.ordinal_change(only_pre, construct="se")
    with pytest.raises(ConfigError, match="min_cell_size"):
        S.survey_summary(sim.surveys, min_cell_size=0)
    with pytest.raises(DataError, match="at least 3 learners"):
        S.cronbach_alpha(np.ones((2, 3)))


@pytest.mark.slow
def test_bayesian_ordinal_change_recovers_shift(survey_sim):
    from research.bayes import SamplerSettings

    m = S.BayesianOrdinalChange(SamplerSettings(draws=300, tune=400, chains=2, seed=2)).fit(
        survey_sim.surveys, construct="self_efficacy")
    res = m.summary().iloc[0]
    truth = survey_sim.truth["shift"]["self_efficacy"]
    assert res["ci_low"] <= truth <= res["ci_high"]
    assert res["prob_positive"] > 0.99
    assert m.summary().attrs["max_r_hat"] < 1.05
    # with learner effects the change is larger than the marginal (OrderedModel) one
    marg = S.ordinal_change(survey_sim.surveys, construct="self_efficacy")["estimate"].iloc[0]
    assert res["estimate"] > marg
    out = S.survey_summary(survey_sim.surveys, n_boot=100, bayes={"self_efficacy": m.summary()})
    row = out.set_index("construct").loc["self_efficacy"]
    assert row["prob_positive"] > 0.99 and row["method"] == "classical+bayesian"
