"""The Additive Factors Model: parameter recovery, agreement with lme4::glmer and with DataShop.

Reference values: tests/reference/afm/ holds glmer fits (lme4 1.1.31, made by
make_reference.py / make_reference.R) of the real ds96 and ds76 student-step files;
DataShop's own AFM output for ds76 (KC model "Original") and DataShop's predicted error
rates in the ds96 export are read in place from ../shared/data.
"""

from __future__ import annotations

import hashlib

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.bayes import SamplerSettings
from research.errors import ConfigError, DataError, SchemaError
from research.estimate.afm import AFM, compare_kc_models, fit_kc_models, predict_afm
from research.estimate.opportunities import count_opportunities, read_datashop_student_step
from research.simulate.afm import simulate_afm

REF = Path(__file__).parent / "reference" / "afm"
DS96 = ("datashop_ds96_student_step_and_tx", "ds96_student_step_export.txt")
DS76 = ("datashop_ds76_geometry_area", "ds76_student_step_partial_4students_48kcmodels.txt")
DS76_MODEL = ("datashop_ds76_geometry_area", "reference_ds76_afm_model_values_KC_Original_kcm472_2025_0225.txt")


@pytest.fixture(scope="module")
def sim2000():
    return simulate_afm(2000, 20, 10, no_learning_share=0.2, seed=7)


@pytest.fixture(scope="module")
def fit2000(sim2000):
    return AFM().fit(sim2000.steps)


# --------------------------------------------------------------- recovery
def test_parameter_recovery_at_2000_learners(sim2000, fit2000):
    k = fit2000.summary().merge(sim2000.kcs, on=["kc_model", "kc"])
    assert len(k) == 20
    assert np.corrcoef(k["intercept"], k["beta"])[0, 1] > 0.95
    assert np.corrcoef(k["slope"], k["gamma"])[0, 1] > 0.95
    assert (k["slope"] >= 0).all()
    th = fit2000.learners_.merge(sim2000.learners, on="learner_id")
    assert np.corrcoef(th["intercept"], th["theta"])[0, 1] > 0.7  # 100 steps per learner
    assert fit2000.converged_ and fit2000.n_iter_ < 30
    assert set(k["n_learners"]) == {2000} and set(k["n_obs"]) == {20000}


@pytest.mark.slow
def test_standard_errors_are_calibrated():
    """Over 60 KCs in 3 simulated cohorts, 95% Wald intervals of intercepts (relative to the
    cohort's mean learner) and slopes cover the truth about 95% of the time."""
    z_slope, z_int = [], []
    for seed in (31, 32, 33):
        sim = simulate_afm(1000, 20, 8, no_learning_share=0.0, seed=seed)
        m = AFM(nonnegative_slopes=False).fit(sim.steps)
        k = m.summary().merge(sim.kcs, on=["kc_model", "kc"])
        z_slope += list((k["slope"] - k["gamma"]) / k["slope_se"])
        shift = sim.learners["theta"].mean()  # intercepts are identified relative to the cohort's learners
        z_int += list((k["intercept"] - k["beta"] - shift) / k["intercept_se"])
    for z in (np.array(z_slope), np.array(z_int)):
        assert (np.abs(z) < 1.96).mean() >= 0.85
        assert 0.75 < z.std() < 1.3


def test_multi_kc_steps_add_up_and_are_recovered():
    sim = simulate_afm(800, 8, 12, multi_kc_share=0.4, seed=3)
    k = AFM().fit(sim.steps).summary().merge(sim.kcs, on=["kc_model", "kc"])
    assert np.corrcoef(k["intercept"], k["beta"])[0, 1] > 0.95
    assert np.corrcoef(k["slope"], k["gamma"])[0, 1] > 0.9


def test_newton_and_lbfgs_agree():
    sim = simulate_afm(300, 6, 8, seed=4)
    a = AFM(optimizer="newton").fit(sim.steps)
    b = AFM(optimizer="lbfgs", tol=1e-12).fit(sim.steps)
    assert np.abs(a.kc_params_ - b.kc_params_).max() < 2e-3
    assert a.stats_["loglik"] == pytest.approx(b.stats_["loglik"], abs=1e-2)


def test_slope_constraint_and_free_slopes():
    sim = simulate_afm(600, 4, 10, gamma_low=-0.2, gamma_high=-0.1, no_learning_share=0, seed=8)
    constrained = AFM().fit(sim.steps).summary()
    assert (constrained["slope"] == 0).all() and constrained["slope_at_bound"].all()
    free = AFM(nonnegative_slopes=False).fit(sim.steps).summary().merge(sim.kcs, on=["kc_model", "kc"])
    assert (free["slope"] < 0).all()
    assert np.abs(free["slope"] - free["gamma"]).max() < 0.05


def test_fit_statistics_follow_datashop_definitions(fit2000):
    s = fit2000.stats_
    assert s["n_params"] == 2000 + 2 * 20
    assert s["aic"] == pytest.approx(2 * s["n_params"] - 2 * s["loglik"])
    assert s["bic"] == pytest.approx(s["n_params"] * np.log(s["n_obs"]) - 2 * s["loglik"])
    # DataShop's own numbers for ds76 obey the same formulas (AIC 5180.02, BIC 5761.89, LL -2501.01, 89 params)
    assert 2 * 89 + 2 * 2501.01136253178 == pytest.approx(5180.02272506357)
    assert 89 * np.log(5104) + 2 * 2501.01136253178 == pytest.approx(5761.88512949076)


def test_cross_validation_three_kinds(sim2000):
    sub = sim2000.steps[sim2000.steps["learner_id"].isin(sim2000.learners["learner_id"].iloc[:400])]
    m = AFM().fit(sub, cv=True)
    cv = m.cv_.set_index("cv_kind")["rmse"]
    assert set(cv.index) == {"learner", "item", "unstratified"}
    assert 0.3 < cv["unstratified"] < 0.5
    # unseen learners get the prior mean: learner-stratified CV is the hardest
    assert cv["learner"] > cv["unstratified"]
    assert cv["unstratified"] >= m.stats_["rmse"]
    stats = m.model_stats()
    assert stats.loc[0, "cv_rmse_item"] == pytest.approx(cv["item"])


def test_kc_model_comparison_prefers_the_true_model(sim2000):
    fine = sim2000.steps[sim2000.steps["learner_id"].isin(sim2000.learners["learner_id"].iloc[:600])].copy()
    coarse = fine.copy()
    coarse["kc_model"] = "Coarse"
    coarse["kc"] = coarse["kc"].str.slice(0, 3)  # kc00..kc09 -> kc0, kc10..kc19 -> kc1
    coarse = coarse.drop_duplicates(["step_row", "kc"])
    coarse["opportunity"] = count_opportunities(coarse)
    single = fine.assign(kc_model="Single", kc="all")
    single["opportunity"] = count_opportunities(single)
    both = pd.concat([fine, coarse, single], ignore_index=True)
    models = fit_kc_models(both, cv=True)
    table = compare_kc_models(models)
    assert list(table["kc_model"]) == ["Simulated", "Coarse", "Single"]
    assert table.loc[0, "rank_aic"] == 1 and table.loc[0, "rank_cv_unstratified"] == 1
    assert table.loc[0, "delta_bic"] == 0 and (table["delta_bic"].iloc[1:] > 0).all()
    assert {"loglik", "n_params", "n_obs", "aic", "bic", "cv_rmse_learner", "cv_rmse_item",
            "cv_rmse_unstratified"} <= set(table.columns)


def test_predict_new_learners_and_unknown_kcs(fit2000, sim2000):
    new = sim2000.steps.head(30).copy()
    new["learner_id"] = "p_ffffffffffffffff"
    new.loc[new.index[:5], "kc"] = "never_seen"
    p = fit2000.predict(new)
    assert p["p_correct"].between(0, 1).all()
    assert (p["n_unknown_kcs"] > 0).sum() >= 1
    own = fit2000.predict(sim2000.steps.head(50))
    train = fit2000.predict().set_index("step_row").loc[own["step_row"], "p_correct"].to_numpy()
    assert np.allclose(own["p_correct"], train)


def test_errors_name_the_bad_value(sim2000):
    with pytest.raises(ConfigError, match="optimizer='bfgs'.*valid optimizers"):
        AFM(optimizer="bfgs")
    with pytest.raises(ConfigError, match="learner_penalty"):
        AFM(learner_penalty=-1)
    with pytest.raises(ConfigError, match="kc_model='Nope'.*valid KC models are \\['Simulated'\\]"):
        AFM().fit(sim2000.steps, kc_model="Nope")
    with pytest.raises(SchemaError, match="success='correct'"):
        AFM().fit(sim2000.steps, success="correct")
    bad = sim2000.steps.head(100).assign(success=2)
    with pytest.raises(DataError, match="0 or 1"):
        AFM().fit(bad)
    with pytest.raises(ConfigError, match="not fitted"):
        AFM().summary()
    two = pd.concat([sim2000.steps.head(50), sim2000.steps.head(50).assign(kc_model="Other")])
    with pytest.raises(ConfigError, match="pick one"):
        AFM().fit(two)


def test_provenance_and_tidy_outputs(fit2000):
    prov = fit2000.provenance_
    assert prov["model"] == "AFM" and prov["settings"]["learner_penalty"] == 1.0 and "version" in prov
    coef = fit2000.coefficients()
    assert list(coef.columns[:3]) == ["kc_model", "kc", "parameter"]
    assert {"estimate", "se", "ci_low", "ci_high", "n", "method"} <= set(coef.columns)
    assert len(coef) == 40


# --------------------------------------------------------------- real data
def _glmer(name):
    stats = pd.read_csv(REF / f"{name}_glmer_nagq0_stats.csv").iloc[0]
    fe = pd.read_csv(REF / f"{name}_glmer_nagq0_fixef.csv").set_index("parameter")
    re = pd.read_csv(REF / f"{name}_glmer_nagq0_ranef.csv").set_index("learner")["intercept"]
    return stats, fe, re


def _ours(model):
    k = model.summary()
    est = pd.concat([pd.Series(k["intercept"].to_numpy(), index="b__" + k["kc"].astype(str)),
                     pd.Series(k["slope"].to_numpy(), index="g__" + k["kc"].astype(str))])
    se = pd.concat([pd.Series(k["intercept_se"].to_numpy(), index="b__" + k["kc"].astype(str)),
                    pd.Series(k["slope_se"].to_numpy(), index="g__" + k["kc"].astype(str))])
    return est, se


@pytest.mark.realdata
@pytest.mark.parametrize(
    "data,kc_model,identified",
    [(DS96, "Single-KC", True), (DS96, "Default", False), (DS76, "Original", True), (DS76, "Area", True),
     (DS76, "Textbook", False)],
)
def test_agrees_with_lme4_glmer_on_real_data(real_data, data, kc_model, identified):
    """Unconstrained AFM with penalty 1/sigma^2 is glmer(nAGQ=0)'s penalised IRLS solution.

    Compare to lme4::glmer(y ~ 0 + X + (1 | learner), binomial, nAGQ = 0) with X the AFM
    design; sigma is glmer's estimate. Where KCs always co-occur (ds96 Default) or nearly
    separate (ds76 Textbook) single KC parameters are not identified, so there the
    predictions (conditional log-likelihood) and learner intercepts are compared.
    """
    name = ("language96" if data is DS96 else "geometry76") + "_" + kc_model.replace("-", "_")
    stats, fe, re = _glmer(name)
    steps = read_datashop_student_step(real_data.joinpath(*data), kc_models=[kc_model])
    m = AFM(learner_penalty=1 / stats["sigma_learner"] ** 2, nonnegative_slopes=False).fit(steps)
    assert m.stats_["n_obs"] == stats["n_obs"]
    assert m.stats_["loglik"] == pytest.approx(stats["loglik_conditional"], abs=1e-5)
    # the reference files name learners by a hash of DataShop's id (make_reference.learner_hash)
    ours = m.learners_.assign(learner=m.learners_["learner_id"].map(
        lambda x: "h_" + hashlib.sha256(str(x).encode("utf-8")).hexdigest()[:16]))
    theta = ours.set_index("learner")["intercept"].reindex(re.index)
    assert np.abs(theta.to_numpy() - re.to_numpy()).max() < 1e-5
    if identified:
        est, se = _ours(m)
        assert np.abs(est.reindex(fe.index) - fe["estimate"]).max() < 1e-5
        assert np.abs(se.reindex(fe.index) / fe["se"] - 1).max() < 1e-3


@pytest.mark.realdata
def test_ds96_predictions_match_datashop_single_kc(real_data):
    """DataShop's Predicted Error Rate (Single-KC) on the whole ds96 file, from our AFM with
    its defaults (N(0,1) penalty on learners, slopes >= 0): within 0.0035 on every row."""
    path = real_data.joinpath(*DS96)
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    steps = read_datashop_student_step(path, kc_models=["Single-KC"])
    m = AFM().fit(steps)
    pred = m.predict().merge(steps[["step_row", "source_row"]].drop_duplicates(), on="step_row")
    datashop = pd.to_numeric(raw["Predicted Error Rate (Single-KC)"].iloc[pred["source_row"]]).to_numpy()
    diff = np.abs(pred["p_error"].to_numpy() - datashop)
    assert len(diff) == 951
    assert diff.max() < 0.0035 and diff.mean() < 0.002


def _datashop_ds76_values(path):
    text = path.read_text(encoding="utf-8").splitlines()
    i = text.index("KC Values for Original model") + 2
    kcs = []
    while text[i].strip():
        parts = text[i].split("\t")
        kcs.append({"kc": parts[0], "intercept": float(parts[3]), "slope": float(parts[5])})
        i += 1
    j = next(n for n, line in enumerate(text) if line.startswith("Anon Student Id")) + 1
    learners = [dict(zip(("learner_id", "intercept"), line.split("\t"))) for line in text[j:] if line.strip()]
    learners = pd.DataFrame(learners)
    learners["intercept"] = pd.to_numeric(learners["intercept"], errors="coerce")
    return pd.DataFrame(kcs), learners.dropna()


@pytest.mark.realdata
def test_ds76_datashop_parameters_reproduce_its_predictions(real_data):
    """DataShop's exported AFM values for KC model Original (full ds76) reproduce its
    Predicted Error Rate (Original) column to the 4-decimal rounding of the export."""
    kcs, learners = _datashop_ds76_values(real_data.joinpath(*DS76_MODEL))
    assert len(kcs) == 15 and len(learners) == 59
    path = real_data.joinpath(*DS76)
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    steps = read_datashop_student_step(path, kc_models=["Original"])
    pred = predict_afm(steps, kcs, learners).merge(steps[["step_row", "source_row"]].drop_duplicates(), on="step_row")
    datashop = pd.to_numeric(raw["Predicted Error Rate (Original)"].iloc[pred["source_row"]]).to_numpy()
    assert (pred["n_unknown_kcs"] == 0).all()
    assert np.abs(pred["p_error"].to_numpy() - datashop).max() < 5.1e-5


# --------------------------------------------------------------- Bayesian AFM
@pytest.fixture(scope="module")
def bayes_fit():
    import warnings

    from research.bayes import ConvergenceWarning
    from research.estimate.afm_bayes import BayesianAFM

    sim = simulate_afm(120, 5, 8, no_learning_share=0.4, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # few draws on purpose: a plumbing-sized real run
        model = BayesianAFM(sampler=SamplerSettings(draws=200, tune=300, chains=2, seed=1)).fit(sim.steps)
    return sim, model


@pytest.mark.slow
def test_bayesian_afm_samples_and_agrees_with_pmle(bayes_fit):
    sim, model = bayes_fit
    k = model.summary()
    pmle = AFM().fit(sim.steps).summary()
    assert list(k.columns) == list(pmle.columns)  # same output shape as the PMLE fit
    assert (k["slope_ci_low"] <= k["slope"]).all() and (k["slope"] <= k["slope_ci_high"]).all()
    assert np.corrcoef(k["slope"], pmle["slope"])[0, 1] > 0.9
    assert np.corrcoef(k["intercept"], pmle["intercept"])[0, 1] > 0.9
    truth = k.merge(sim.kcs, on=["kc_model", "kc"])
    covered = ((truth["slope_ci_low"] <= truth["gamma"] + 0.02) & (truth["gamma"] <= truth["slope_ci_high"])).mean()
    assert covered >= 0.8
    assert (truth.loc[truth["no_learning"], "slope_ci_high"] < 0.1).all()
    assert (k["slope"] > 0).all()  # log-normal pooled slopes
    assert {"r_hat", "ess_bulk"} <= set(model.diagnostics_.columns)
    assert model.diagnostics_.attrs["divergences"] == 0
    assert set(model.hyper_["parameter"]) >= {"sigma_theta", "mu_beta", "sigma_beta"}
    assert model.provenance_["model"] == "BayesianAFM"


def test_bayesian_afm_settings_are_checked():
    from research.estimate.afm_bayes import BayesianAFM

    with pytest.raises(ConfigError, match="slopes='positive'.*valid values"):
        BayesianAFM(slopes="positive")
    with pytest.raises(ConfigError, match="not fitted"):
        BayesianAFM().summary()


def test_output_tables_match_their_schemas(sim2000):
    from research.estimate.afm import add_predictions
    from research.estimate.curves import all_learning_curves, kc_table
    from research.schema import output_schema, validate

    sub = sim2000.steps[sim2000.steps["learner_id"].isin(sim2000.learners["learner_id"].iloc[:300])]
    models = fit_kc_models(sub, cv=True)
    steps = add_predictions(sub, models)
    tables = {"kc_models": compare_kc_models(models), "kcs": kc_table(models, steps, n_boot=50),
              "learning_curves": all_learning_curves(steps, predicted="p_error")}
    for name, frame in tables.items():
        schema = output_schema(name)
        assert set(schema.field_names) == set(frame.columns), name
        checked = validate(frame[schema.field_names], schema)
        assert checked.rejects.empty, (name, checked.rejects.head())


# ---------------------------------------------------------------- slope bound and free slopes


@pytest.fixture(scope="module")
def fixed_order_fits():
    """AFM on simulated cohorts whose items come in a fixed order (as in every OLI course)."""
    from research.estimate import opportunities
    from research.simulate import simulate_cohort

    out = []
    for seed in (0, 1):
        sim = simulate_cohort(n_learners=600, seed=seed, planted=False)
        steps = opportunities.student_steps(sim.attempts, sim.attempt_kcs)
        fine = steps[steps["kc_model"] == "Fine"]
        out.append((sim, fine, AFM().fit(fine)))
    return out


def test_free_slope_interval_covers_the_true_rate_despite_fixed_item_order(fixed_order_fits):
    parts = []
    for sim, _, model in fixed_order_fits:
        parts.append(model.summary().merge(sim.truth.kcs[["kc", "gamma"]], on="kc"))
    k = pd.concat(parts, ignore_index=True)
    covered = (k["slope_free_ci_low"] <= k["gamma"]) & (k["gamma"] <= k["slope_free_ci_high"])
    sampling_se = np.sqrt(k["slope_free_se"] ** 2 - k["slope_order_se"] ** 2)
    naive = ((k["slope_free"] - 1.96 * sampling_se) <= k["gamma"]) & (k["gamma"] <= (k["slope_free"] + 1.96 * sampling_se))
    # item difficulties that go with the opportunity number are not sampling error: without
    # the item-order part the intervals miss the true learning rate most of the time
    assert covered.mean() >= 0.75, covered.mean()
    assert covered.mean() >= naive.mean() + 0.25, (covered.mean(), naive.mean())
    assert (k["slope_order_se"] > 0).all()
    # where the bound is not active the free slope is the bounded one
    free = ~k["slope_at_bound"]
    np.testing.assert_allclose(k.loc[free, "slope_free"], k.loc[free, "slope"], atol=0.03)


def test_slope_bound_is_a_parameter(fixed_order_fits):
    _, fine, bounded = fixed_order_fits[0]
    free = AFM(slope_lower_bound=None).fit(fine).summary()
    legacy = AFM(nonnegative_slopes=False).fit(fine).summary()
    np.testing.assert_allclose(free["slope"], legacy["slope"], atol=1e-6)
    assert not free["slope_at_bound"].any()
    # unbounded: the free slope columns repeat the fit (no refit needed)
    np.testing.assert_allclose(free["slope_free"], free["slope"])
    low = AFM(slope_lower_bound=-0.05).fit(fine).summary()
    assert (low["slope"] >= -0.05 - 1e-9).all()
    assert (low["slope_ci_low"] >= -0.05 - 1e-9).all()
    b = bounded.summary()
    # the bounded fit's free columns agree with the unbounded fit
    np.testing.assert_allclose(b["slope_free"], free["slope"], atol=1e-4)
    with pytest.raises(ConfigError, match="slope_lower_bound"):
        AFM(slope_lower_bound=float("inf"))


def test_random_item_order_adds_no_item_order_error():
    from research.simulate.afm import simulate_afm

    sim = simulate_afm(n_learners=300, seed=3)
    model = AFM().fit(sim.steps)
    k = model.summary()
    assert (k["slope_order_se"] < 0.5 * k["slope_free_se"]).all(), k[["slope_order_se", "slope_free_se"]]


@pytest.mark.realdata
def test_free_slopes_on_real_data_equal_the_unbounded_fit(real_data):
    """ds96, KC model Default: the bounded AFM holds most slopes at 0; its free slopes are
    those of the unbounded fit, and some are clearly negative even with the item-order error."""
    steps = read_datashop_student_step(real_data.joinpath(*DS96), kc_models=["Default"])
    bounded = AFM().fit(steps).summary().set_index("kc")
    free = AFM(slope_lower_bound=None).fit(steps).summary().set_index("kc").loc[bounded.index]
    assert np.abs(bounded["slope_free"] - free["slope"]).max() < 1e-4
    at_bound = bounded["slope_at_bound"]
    assert at_bound.sum() >= len(bounded) // 2  # 14 of 20 on this file
    # (a KC at the bound may still get a positive free slope here: in this model KCs always
    # co-occur, and freeing one slope moves the others)
    assert (bounded.loc[at_bound, "slope_free"] < 0).sum() >= len(bounded) // 4
    assert (bounded["slope_free_ci_high"] < 0).sum() >= 1  # 2 of 20: "later items are harder"
