"""Tests of research.estimate.irt: parameter recovery, agreement with R, item fit, Bayes, errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.bayes import ConvergenceWarning, SamplerSettings, diagnostics
from research.errors import ConfigError, DataError
from research.estimate.classical import item_statistics, wide_to_long
from research.estimate.irt import (
    ITEM_TABLE_COLUMNS,
    Rasch,
    TwoPL,
    drop_unestimable,
    item_fit_statistics,
    item_table,
)
from research.simulate.irt import simulate_2pl, simulate_attempts, simulate_rasch

REF = Path(__file__).parent / "reference" / "irt"


def _merge_truth(model, sim):
    return model.item_params_.merge(sim.items, on="item_id", suffixes=("", "_true"))


# --------------------------------------------------------------------------- recovery


@pytest.fixture(scope="session")
def rasch_big():
    sim = simulate_rasch(2000, 40, missing=0.3, seed=11)
    return sim, Rasch().fit(sim.responses)


@pytest.fixture(scope="session")
def twopl_big():
    sim = simulate_2pl(2000, 40, missing=0.3, seed=12)
    return sim, TwoPL().fit(sim.responses)


def test_rasch_recovers_difficulties(rasch_big):
    sim, m = rasch_big
    ip = _merge_truth(m, sim)
    assert m.converged_
    assert np.corrcoef(ip["difficulty"], ip["difficulty_true"])[0, 1] > 0.98
    # the scale is anchored by the population mean ability 0, as in the simulation
    assert abs((ip["difficulty"] - ip["difficulty_true"]).mean()) < 0.1
    assert abs(m.sigma_ - 1.0) < 0.1
    covered = (ip["difficulty_ci_low"] <= ip["difficulty_true"]) & (ip["difficulty_true"] <= ip["difficulty_ci_high"])
    assert covered.mean() >= 0.85


def test_rasch_abilities_recovered(rasch_big):
    sim, m = rasch_big
    ab = m.abilities().merge(sim.learners.rename(columns={"theta": "truth"}), on="learner_id")
    assert np.corrcoef(ab["theta"], ab["truth"])[0, 1] > 0.9
    assert np.corrcoef(ab["theta_wle"], ab["truth"])[0, 1] > 0.9
    assert (ab["theta_se"] > 0).all() and (ab["n_items"] >= 1).all()
    # EAP SEs describe the spread of the truth around the estimate
    z = (ab["truth"] - ab["theta"]) / ab["theta_se"]
    assert 0.85 < z.std() < 1.15


def test_twopl_recovers_parameters(twopl_big):
    sim, m = twopl_big
    ip = _merge_truth(m, sim)
    assert m.converged_
    assert np.corrcoef(ip["difficulty"], ip["difficulty_true"])[0, 1] > 0.98
    assert np.corrcoef(ip["discrimination"], ip["discrimination_true"])[0, 1] > 0.85
    cov_b = ((ip["difficulty_ci_low"] <= ip["difficulty_true"]) & (ip["difficulty_true"] <= ip["difficulty_ci_high"])).mean()
    cov_a = (
        (ip["discrimination_ci_low"] <= ip["discrimination_true"]) & (ip["discrimination_true"] <= ip["discrimination_ci_high"])
    ).mean()
    assert cov_b >= 0.85 and cov_a >= 0.85


@pytest.mark.slow
def test_interval_coverage_over_repeated_simulations():
    """95 % Wald intervals of Rasch difficulties cover the truth at close to 95 %."""
    hits, total = 0, 0
    for rep in range(25):
        sim = simulate_rasch(600, 15, missing=0.3, seed=1000 + rep)
        ip = _merge_truth(Rasch().fit(sim.responses), sim)
        hits += int(((ip["difficulty_ci_low"] <= ip["difficulty_true"]) & (ip["difficulty_true"] <= ip["difficulty_ci_high"])).sum())
        total += len(ip)
    coverage = hits / total
    # 375 intervals: a binomial 95 % band around 0.95 is about +-0.022
    assert 0.92 <= coverage <= 0.98, coverage


def test_quadrature_is_accurate_with_many_items():
    """Many items per learner make narrow posteriors; the grid must still give the right SD."""
    sim = simulate_rasch(1500, 80, missing=0.2, theta_sd=1.5, seed=5)
    m = Rasch(se="crossprod").fit(sim.responses)
    fine = Rasch(se="crossprod", n_quadrature=81).fit(sim.responses)
    assert abs(m.sigma_ - fine.sigma_) < 0.005
    assert abs(m.loglik_ - fine.loglik_) < 0.5
    assert abs(m.sigma_ - 1.5) < 0.1


def test_crossprod_and_hessian_se_agree_in_large_samples(rasch_big):
    sim, m = rasch_big
    xpd = Rasch(se="crossprod").fit(sim.responses)
    ratio = xpd.item_params_["difficulty_se"] / m.item_params_["difficulty_se"]
    assert np.allclose(xpd.item_params_["difficulty"], m.item_params_["difficulty"], atol=1e-4)
    assert 0.85 < ratio.median() < 1.15


@pytest.mark.parametrize("se", ["hessian", "crossprod"])
def test_rasch_on_complete_data_takes_the_sum_score_path_with_the_same_numbers(monkeypatch, se):
    """Complete data go through the raw-score sufficient statistics; the general path agrees."""
    import research.estimate.irt as irt

    sim = simulate_rasch(400, 12, missing=0.0, seed=21)
    used = []
    monkeypatch.setattr(irt, "_SumScores", lambda design, cls=irt._SumScores: used.append(1) or cls(design))
    fast = Rasch(se=se).fit(sim.responses)
    assert used, "complete data should take the sum-score path"
    monkeypatch.setattr(irt, "_complete", lambda design: False)
    slow = Rasch(se=se).fit(sim.responses)
    cols = ["difficulty", "difficulty_se", "difficulty_ci_low", "difficulty_ci_high"]
    assert np.allclose(fast.item_params_[cols], slow.item_params_[cols], rtol=0, atol=1e-8)
    assert np.allclose(fast.abilities_[["theta", "theta_se", "theta_wle", "theta_wle_se"]],
                       slow.abilities_[["theta", "theta_se", "theta_wle", "theta_wle_se"]], rtol=0, atol=1e-8)
    assert abs(fast.sigma_ - slow.sigma_) < 1e-10 and abs(fast.sigma_se_ - slow.sigma_se_) < 1e-8
    assert abs(fast.loglik_ - slow.loglik_) < 1e-8
    assert fast.n_iter_ == slow.n_iter_


# --------------------------------------------------------------------------- agreement with R


@pytest.fixture(scope="session")
def hci_responses():
    from conftest import require_real_data

    path = require_real_data("homeostasis_concept_inventory_hci", "HCI.csv")
    hci = pd.read_csv(path)
    X = hci[[f"Item {i}" for i in range(1, 21)]]
    X.index = [f"s{i:03d}" for i in range(len(X))]
    return wide_to_long(X)


@pytest.fixture(scope="session")
def hci_rasch(hci_responses):
    return Rasch().fit(hci_responses)


@pytest.mark.realdata
def test_rasch_mml_matches_lme4_on_hci(hci_rasch):
    """Compare to lme4::glmer(y ~ 0 + item + (1 | person), nAGQ = 25) on the HCI data."""
    ref = pd.read_csv(REF / "hci_lme4_rasch_mml.csv").set_index("item_id")
    summary = json.loads((REF / "hci_summary.json").read_text())
    ip = hci_rasch.item_params_.set_index("item_id").loc[ref.index]
    assert np.max(np.abs(ip["difficulty"] - ref["difficulty"])) < 0.02
    assert np.max(np.abs(ip["difficulty"] - ref["difficulty"])) < 1e-3  # in fact far closer
    assert np.max(np.abs(ip["difficulty_se"] - ref["se"])) < 1e-3
    assert abs(hci_rasch.sigma_ - summary["lme4_sigma_person"]) < 1e-3
    assert abs(hci_rasch.loglik_ - summary["lme4_loglik"]) < 0.01


@pytest.mark.realdata
def test_rasch_matches_erm_cml_after_centering(hci_rasch):
    """Compare to eRm::RM (conditional ML, difficulties summing to 0) on HCI: centre ours."""
    ref = pd.read_csv(REF / "hci_erm_rasch_cml.csv").set_index("item_id")
    ip = hci_rasch.item_params_.set_index("item_id").loc[ref.index]
    centred = ip["difficulty"] - ip["difficulty"].mean()
    assert np.max(np.abs(centred - ref["difficulty"])) < 0.02
    assert np.max(np.abs(ip["difficulty_se"] - ref["se"])) < 0.02


@pytest.mark.realdata
def test_item_fit_close_to_erm(hci_rasch):
    """eRm::itemfit uses ML person estimates, we use WLE: mean squares agree closely, not exactly."""
    ref = pd.read_csv(REF / "hci_erm_rasch_cml.csv").set_index("item_id")
    fit = hci_rasch.item_fit().set_index("item_id").loc[ref.index]
    assert np.max(np.abs(fit["infit_mnsq"] - ref["infit_mnsq"])) < 0.05
    assert np.max(np.abs(fit["outfit_mnsq"] - ref["outfit_mnsq"])) < 0.1
    assert np.corrcoef(fit["outfit_z"], ref["outfit_z"])[0, 1] > 0.98
    # the same items cross the 0.7-1.3 band
    assert set(fit.index[fit["fit_flag"] != ""]) == set(
        ref.index[(ref[["infit_mnsq", "outfit_mnsq"]].max(axis=1) > 1.3) | (ref[["infit_mnsq", "outfit_mnsq"]].min(axis=1) < 0.7)]
    )


# --------------------------------------------------------------------------- item fit and flags


def test_item_fit_flags_a_reversed_item():
    sim = simulate_rasch(800, 20, missing=0.2, seed=21)
    r = sim.responses.copy()
    bad = r["item_id"] == "i05"
    r.loc[bad, "correct"] = 1 - r.loc[bad, "correct"]
    m = Rasch().fit(r)
    fit = m.item_fit().set_index("item_id")
    assert fit.loc["i05", "fit_flag"] == "underfit"
    assert fit.loc["i05", "outfit_mnsq"] > 1.3 and fit.loc["i05", "infit_z"] > 2
    others = fit.drop(index="i05")
    assert (others["infit_mnsq"].between(0.8, 1.2)).all()


def test_item_fit_statistics_function_matches_method(rasch_big):
    sim, m = rasch_big
    direct = item_fit_statistics(
        sim.responses, m.item_params_, m.abilities_[["learner_id", "theta_wle"]].rename(columns={"theta_wle": "theta"})
    )
    pd.testing.assert_frame_equal(direct, m.item_fit())


def test_item_fit_near_one_under_the_model(rasch_big):
    _, m = rasch_big
    fit = m.item_fit()
    assert abs(fit["infit_mnsq"].mean() - 1) < 0.06
    assert abs(fit["outfit_mnsq"].mean() - 1) < 0.08
    assert (fit["fit_flag"] == "").mean() > 0.9


def test_item_table_combines_and_flags():
    sim = simulate_rasch(400, 12, missing=0.2, seed=4)
    r = sim.responses.copy()
    bad = r["item_id"] == "i03"
    r.loc[bad, "correct"] = 1 - r.loc[bad, "correct"]
    attempts, items = simulate_attempts(type(sim)(r, sim.items, sim.learners), seed=2)
    classical = item_statistics(attempts, items)
    from research.estimate.classical import first_attempt_responses

    fa = first_attempt_responses(attempts)
    table = item_table(classical, rasch=Rasch().fit(fa), twopl=TwoPL().fit(fa))
    assert list(table.columns) == ITEM_TABLE_COLUMNS
    assert table["item_id"].is_unique and len(table) == 12
    top = table.iloc[0]
    assert top["item_id"] == "i03"
    assert "negative_discrimination" in top["flags"] and "underfit" in top["flags"]
    assert (table["concern"].diff().dropna() <= 0).all()
    assert set(table["irt_method"]) == {"rasch_mml+2pl_mml"}
    # the table passes its own Table Schema
    from research.schema import output_schema, validate

    checked = validate(table, output_schema("items"))
    assert len(checked.rejects) == 0, checked.rejects["reason"].head().tolist()


def test_drop_unestimable_lists_items():
    r = pd.DataFrame(
        {
            "learner_id": list("abcdabcd"),
            "item_id": ["x"] * 4 + ["y"] * 4,
            "correct": [1, 1, 1, 1, 0, 1, 0, 1],
        }
    )
    out = drop_unestimable(r)
    assert out.attrs["dropped_items"] == ["x"]
    assert set(out["item_id"]) == {"y"}


def test_icc_shape_and_monotone(rasch_big):
    _, m = rasch_big
    icc = m.icc(items=["i00", "i01"])
    assert list(icc.columns) == ["item_id", "theta", "p_correct"]
    assert len(icc) == 2 * 81
    assert (icc.groupby("item_id")["p_correct"].apply(lambda s: s.is_monotonic_increasing)).all()


def test_summary_is_tidy(rasch_big, twopl_big):
    _, m = rasch_big
    s = m.summary()
    assert list(s.columns) == ["item_id", "parameter", "estimate", "se", "ci_low", "ci_high", "n", "method"]
    assert set(s["parameter"]) == {"difficulty", "sigma"}
    assert (s["method"] == "rasch_mml").all()
    s2 = twopl_big[1].summary()
    assert set(s2["parameter"]) == {"difficulty", "discrimination"}
    assert m.provenance_["version"] and m.provenance_["model"] == "rasch"


# --------------------------------------------------------------------------- Bayes


@pytest.fixture(scope="session")
def rasch_bayes():
    sim = simulate_rasch(300, 12, missing=0.3, seed=31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 200 draws: ESS limits may fail
        m = Rasch(method="bayes", sampler=SamplerSettings(draws=200, tune=300, chains=2, seed=3)).fit(sim.responses)
    return sim, m


def test_bayes_rasch_samples_and_agrees_with_ml(rasch_bayes):
    sim, m = rasch_bayes
    ml = Rasch().fit(sim.responses)
    s, s_ml = m.summary(), ml.summary()
    assert list(s.columns) == list(s_ml.columns)
    assert (s["method"] == "rasch_bayes").all()
    b, b_ml = m.item_params_["difficulty"], ml.item_params_["difficulty"]
    assert np.corrcoef(b, b_ml)[0, 1] > 0.98
    assert np.max(np.abs(b - b_ml)) < 0.25
    ip = _merge_truth(m, sim)
    assert np.corrcoef(ip["difficulty"], ip["difficulty_true"])[0, 1] > 0.9
    diag = m.diagnostics_
    assert {"parameter", "r_hat", "ess_bulk", "ess_tail", "ok"} <= set(diag.columns)
    assert diag.attrs["divergences"] == 0
    assert diag["r_hat"].max() < 1.1
    assert m.idata_.attrs["sampler_backend"] in {"nutpie", "pymc"}
    assert m.provenance_["seed"] == 3


def test_bayes_diagnostics_warn_on_too_few_draws(rasch_bayes):
    _, m = rasch_bayes
    short = m.idata_.sel(draw=slice(0, 15))
    with pytest.warns(ConvergenceWarning, match="effective sample size"):
        diagnostics(short, var_names=["b"])


def test_bayes_2pl_samples():
    sim = simulate_2pl(200, 8, missing=0.2, seed=41)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = TwoPL(method="bayes", sampler=SamplerSettings(draws=150, tune=250, chains=2, seed=4)).fit(sim.responses)
    s = m.summary()
    assert set(s["parameter"]) == {"difficulty", "discrimination"}
    assert (s["method"] == "2pl_bayes").all()
    ip = _merge_truth(m, sim)
    assert np.corrcoef(ip["difficulty"], ip["difficulty_true"])[0, 1] > 0.9
    assert (ip["discrimination"] > 0).all()


# --------------------------------------------------------------------------- errors


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="method='mle' is not known.*'ml', 'bayes'"):
        Rasch(method="mle")
    with pytest.raises(ConfigError, match="se='sandwich' is not known"):
        Rasch(se="sandwich")
    with pytest.raises(ConfigError, match="n_quadrature must be at least 5"):
        TwoPL(n_quadrature=2)
    with pytest.raises(ConfigError, match="sampler must be a research.bayes.SamplerSettings"):
        Rasch(method="bayes", sampler={"draws": 10})
    with pytest.raises(ConfigError, match="not fitted yet"):
        Rasch().summary()


def test_bad_data_are_refused():
    good = simulate_rasch(50, 5, seed=1).responses
    with pytest.raises(DataError, match=r"lack column\(s\) \['correct'\]"):
        Rasch().fit(good.drop(columns="correct"))
    bad = good.assign(correct=good["correct"] * 2)
    with pytest.raises(DataError, match="must hold 0/1.*found 2"):
        Rasch().fit(bad)
    with pytest.raises(DataError, match="duplicate learner x item"):
        Rasch().fit(pd.concat([good, good.head(1)]))
    extreme = good.copy()
    extreme.loc[extreme["item_id"] == "i1", "correct"] = 1
    with pytest.raises(DataError, match=r"\['i1'\] were answered all correct or all incorrect"):
        Rasch().fit(extreme)
    with pytest.raises(DataError, match="at least 2 items"):
        Rasch().fit(good[good["item_id"] == "i0"])
    with pytest.raises(ConfigError, match="unknown item"):
        Rasch().fit(good).icc(items=["nope"])


# --------------------------------------------------------------------------- the simulated course


@pytest.fixture(scope="module")
def cohort_items():
    from research.estimate.classical import distractor_table, first_attempt_responses
    from research.simulate import simulate_cohort

    sim = simulate_cohort(n_learners=400, seed=3)
    stats = item_statistics(sim.attempts, sim.items)
    fa = drop_unestimable(first_attempt_responses(sim.attempts), min_n=30)
    rasch = Rasch().fit(fa)
    table = item_table(stats, rasch=rasch)
    dist = distractor_table(sim.attempts, sim.items, ability=rasch.abilities())
    return sim, table, rasch, dist


def test_planted_item_problems_are_flagged(cohort_items):
    """The cohort simulator plants a too-easy and a mis-keyed item: the item table finds both."""
    sim, table, _, _ = cohort_items
    truth = sim.truth.items.set_index("item_id")
    t = table.set_index("item_id")
    miskeyed = truth.index[truth["planted"] == "miskeyed"][0]
    too_easy = truth.index[truth["planted"] == "too_easy"][0]
    assert "negative_discrimination" in t.loc[miskeyed, "flags"]
    assert table.iloc[0]["item_id"] == miskeyed  # the most concerning item comes first
    assert "too_easy" in t.loc[too_easy, "flags"]
    # difficulties follow the simulator's effective difficulties (the mis-keyed item aside)
    ok = truth.index[truth["planted"] != "miskeyed"].intersection(t.index[t["difficulty"].notna()])
    assert np.corrcoef(t.loc[ok, "difficulty"], truth.loc[ok, "difficulty"])[0, 1] > 0.9


def test_miskeyed_item_distractors_point_at_the_true_key(cohort_items):
    sim, _, _, dist = cohort_items
    truth = sim.truth.items.set_index("item_id")
    miskeyed = truth.index[truth["planted"] == "miskeyed"][0]
    d = dist[dist["item_id"] == miskeyed].set_index("option")
    # the course's key is chosen by weaker learners than some "wrong" option
    assert d.loc[d["is_key"], "mean_ability"].iloc[0] < d.loc[~d["is_key"], "mean_ability"].max()
