"""Tests of research.estimate.gains: hand-worked cases, R reference values (tests/reference/gains/),
real public data, parameter recovery on simulated cohorts, and the Bayesian gain model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError, DataError, SchemaError
from research.estimate import gains as G
from research.simulate.gains import simulate_prepost

REF = Path(__file__).parent / "reference" / "gains"

try:  # the shared fixture's rule (skip, or fail under RESEARCH_REQUIRE_REAL_DATA=1)
    from conftest import require_real_data
except ImportError:  # pragma: no cover
    from tests.conftest import require_real_data


def _ref(name: str) -> dict[str, float]:
    df = pd.read_csv(REF / name)
    return dict(zip(df["statistic"], df["value"]))


def _totals(pre, post, max_score, instrument="T1", learner_prefix="L") -> pd.DataFrame:
    n = len(pre)
    ids = [f"{learner_prefix}{i}" for i in range(n)]
    return pd.concat([
        pd.DataFrame({"learner_id": ids, "instrument": instrument, "phase": "pre", "item_id": "total",
                      "score": np.asarray(pre, float), "max_score": float(max_score)}),
        pd.DataFrame({"learner_id": ids, "instrument": instrument, "phase": "post", "item_id": "total",
                      "score": np.asarray(post, float), "max_score": float(max_score)}),
    ], ignore_index=True)


# ----------------------------------------------------------------------------- hand-worked cases


def test_hand_worked_small_table():
    """Four learners, max 10: pre 2, 4, 6, 10; post 6, 5, 9, 8.

    Proportions pre .2 .4 .6 1.0, post .6 .5 .9 .8; gains .4 .1 .3 -.2.
    Individual g: .4/.8 = .5, .1/.6 = 1/6, .3/.4 = .75, and learner 4 is at ceiling (no g).
    g_avg = (0.5 + 1/6 + 0.75) / 3 = 0.472222...
    Class averages: pre .55, post .70 -> g_class = .15 / .45 = 1/3 ("medium").
    c: .5, 1/6, .75 (post > pre); learner 4 post < pre: -.2 / 1.0 = -.2 -> c_avg = (0.5+1/6+0.75-0.2)/4.
    Differences .4 .1 .3 -.2: mean .15, sd = sqrt(((.25)^2+(.05)^2+(.15)^2+(.35)^2)/3) = sqrt(0.21/3).
    d_z = .15 / sqrt(.07) = 0.566947; d_av = .15 / ((sd_pre + sd_post)/2).
    """
    a = _totals([2, 4, 6, 10], [6, 5, 9, 8], 10)
    scores = G.learner_scores(a, cohort=None)
    lg = G.learner_gains(scores).set_index("learner_id").loc[["L0", "L1", "L2", "L3"]]
    assert lg["g"].iloc[:3].tolist() == pytest.approx([0.5, 1 / 6, 0.75])
    assert np.isnan(lg["g"].iloc[3]) and lg["g_status"].iloc[3] == "pre_at_ceiling"
    assert lg["c"].tolist() == pytest.approx([0.5, 1 / 6, 0.75, -0.2])
    assert lg["gain_points"].tolist() == pytest.approx([4, 1, 3, -2])
    st = G.paired_statistics(G.learner_gains(scores)).iloc[0]
    assert st["n"] == 4 and st["n_g"] == 3 and st["n_pre_at_ceiling"] == 1
    assert st["g_avg"] == pytest.approx((0.5 + 1 / 6 + 0.75) / 3)
    assert st["g_class"] == pytest.approx(1 / 3)
    assert st["hake_band"] == "medium"
    assert st["c_avg"] == pytest.approx((0.5 + 1 / 6 + 0.75 - 0.2) / 4)
    assert st["gain"] == pytest.approx(0.15)
    assert st["d_z"] == pytest.approx(0.15 / np.sqrt(0.07))
    sd_pre = np.std([0.2, 0.4, 0.6, 1.0], ddof=1)
    sd_post = np.std([0.6, 0.5, 0.9, 0.8], ddof=1)
    d_av = 0.15 / ((sd_pre + sd_post) / 2)
    assert st["d_av"] == pytest.approx(d_av)
    # Hedges' exact J for df = 3: Γ(1.5) / (sqrt(1.5) Γ(1)) = 0.886227 / 1.224745 = 0.723601
    assert st["hedges_g"] == pytest.approx(0.7236012545582677 * d_av)
    # the two g's differ, as the report says
    assert st["g_avg"] != pytest.approx(st["g_class"])


def test_normalized_change_rules():
    # Marx & Cummings: up -> /(max-pre); down -> /pre; equal -> 0; equal at 0 or max -> dropped
    c = G.normalized_change([0.5, 0.5, 0.5, 0.0, 1.0, 0.0], [0.75, 0.25, 0.5, 0.0, 1.0, 0.4])
    assert c[:4].tolist()[:3] == pytest.approx([0.5, -0.5, 0.0])
    assert np.isnan(c[3]) and np.isnan(c[4])
    assert c[5] == pytest.approx(0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never a division-by-zero warning
        g = G.normalized_gain([1.0, 1.0, 0.5], [1.0, 0.5, 1.0])
    assert np.isnan(g[0]) and np.isnan(g[1]) and g[2] == pytest.approx(1.0)


def test_hake_bands_as_defined():
    bands = G.hake_band([-0.1, 0.0, 0.2999, 0.3, 0.5, 0.6999, 0.7, 0.95, np.nan])
    assert bands.tolist() == ["low", "low", "low", "medium", "medium", "medium", "high", "high", None]


def test_class_average_all_at_ceiling_is_empty_not_an_error():
    a = _totals([10, 10, 10], [10, 9, 10], 10)
    st = G.paired_statistics(G.learner_gains(G.learner_scores(a, cohort=None))).iloc[0]
    assert np.isnan(st["g_class"]) and st["n_g"] == 0 and st["n_pre_at_ceiling"] == 3
    assert pd.isna(st["hake_band"])


def test_totals_win_over_items_and_items_are_summed():
    a = pd.DataFrame({
        "learner_id": ["A"] * 5 + ["B"] * 4,
        "instrument": "T",
        "phase": ["pre", "pre", "pre", "post", "post", "pre", "pre", "post", "post"],
        "item_id": ["q1", "q2", "total", "q1", "q2", "q1", "q2", "q1", "q2"],
        "score": [1, 0, 7, 1, 1, 0, 1, 1, 1],
        "max_score": [1, 1, 10, 1, 1, 1, 1, 1, 1],
    })
    sc = G.learner_scores(a, cohort=None).set_index("learner_id")
    assert sc.loc["A", "pre"] == 7 and sc.loc["A", "pre_max"] == 10
    assert sc.loc["A", "post"] == 2 and sc.loc["A", "post_pct"] == 1.0
    assert sc.loc["B", "pre_pct"] == 0.5
    assert sc.attrs["item_rows_beside_total"] == 2
    lg = G.learner_gains(sc.reset_index()).set_index("learner_id")
    assert np.isnan(lg.loc["A", "gain_points"])  # different maxima: no points gain, proportions still
    assert lg.loc["A", "gain"] == pytest.approx(0.3)


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_bad_value():
    a = _totals([2, 4], [3, 5], 10)
    with pytest.raises(SchemaError, match=r"phase='stage'.*columns are"):
        G.learner_scores(a, phase="stage", cohort=None)
    bad = a.copy()
    bad.loc[0, "phase"] = "during"
    with pytest.raises(DataError, match=r"'during'.*valid phases are \['pre', 'mid', 'post'\]"):
        G.learner_scores(bad, cohort=None)
    over = a.copy()
    over.loc[1, "score"] = 11.0
    with pytest.raises(DataError, match=r"score 11.0 is above its max_score 10.0"):
        G.learner_scores(over, cohort=None)
    neg = a.copy()
    neg.loc[0, "score"] = -1.0
    with pytest.raises(DataError, match=r"column 'score', row 0: value -1.0"):
        G.learner_scores(neg, cohort=None)
    with pytest.raises(DataError, match="empty"):
        G.learner_scores(a.iloc[:0], cohort=None)
    only_pre = a[a["phase"] == "pre"]
    with pytest.raises(DataError, match="'post'"):
        G.learner_gains(G.learner_scores(only_pre, cohort=None))
    with pytest.raises(ConfigError, match="min_cell_size must be"):
        G.gain_summary(a, min_cell_size=0, cohort=None)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        G.gain_summary(a, ci_level=95, cohort=None)
    with pytest.raises(ConfigError, match="needs the learners table"):
        G.gain_summary(a, group="role", cohort=None)


# ----------------------------------------------------------------------------- R references, real data


@pytest.mark.realdata
def test_hci_prepost_matches_r():
    """16 students of the Homeostasis Concept Inventory (max 20): R t.test, wilcox.test and
    effect-size formulas (tests/reference/gains/make_reference.R)."""
    path = require_real_data("homeostasis_concept_inventory_hci", "HCIprepost.csv")
    h = pd.read_csv(path)
    a = _totals(h["score.pre"], h["score.post"], 20, instrument="HCI")
    st = G.gain_summary(a, min_cell_size=5, cohort=None).iloc[0]
    ref = _ref("hci_prepost.csv")
    assert st["n"] == ref["n"] == 16
    for key in ("pre_mean", "post_mean", "gain", "gain_ci_low", "gain_ci_high", "t", "df", "p_t", "wilcoxon_v",
                "p_wilcoxon", "d_z", "d_z_ci_low", "d_z_ci_high", "d_av", "hedges_g", "g_class", "g_avg", "c_avg"):
        assert float(st[key]) == pytest.approx(ref[key], rel=1e-6, abs=1e-9), key


@pytest.mark.realdata
def test_learning_to_learn_ancova_matches_r_and_paper():
    """782 Czech students, grade 6 -> 9, two tracks. R lm(score_9/41 ~ score_6/41 + track); the
    paper reports no significant track effect on the total score."""
    path = require_real_data("learning_to_learn_grade6_grade9_prepost", "LearningToLearn.csv")
    ltl = pd.read_csv(path, usecols=["track", "score_6", "score_9"])
    data = pd.DataFrame({"pre_pct": ltl["score_6"] / 41, "post_pct": ltl["score_9"] / 41, "track": ltl["track"]})
    res = G.ancova(data, group="track").set_index("term")
    ref = pd.read_csv(REF / "ltl_ancova.csv").set_index("term")
    for term in ("Intercept", "pre", "track[T.BS]"):
        for col in ("estimate", "se", "ci_low", "ci_high", "t", "p"):
            assert res.loc[term, col] == pytest.approx(ref.loc[term, col], rel=1e-6), (term, col)
    assert res.loc["track[T.BS]", "p"] > 0.05  # as the paper: no significant track effect
    assert (res["n"] == 782).all()
    # paired statistics of the whole sample via the canonical path
    ids = [f"s{i}" for i in range(len(ltl))]
    a = pd.concat([
        pd.DataFrame({"learner_id": ids, "instrument": "LtL", "phase": "pre", "item_id": "total",
                      "score": ltl["score_6"].astype(float), "max_score": 41.0}),
        pd.DataFrame({"learner_id": ids, "instrument": "LtL", "phase": "post", "item_id": "total",
                      "score": ltl["score_9"].astype(float), "max_score": 41.0})])
    learners = pd.DataFrame({"learner_id": ids, "track": ltl["track"]})
    summ = G.gain_summary(a, learners, group="track", cohort=None)
    top = summ[summ["group_variable"] == "all"].iloc[0]
    ref2 = _ref("ltl_paired.csv")
    for key in ("gain", "t", "wilcoxon_v", "d_z", "g_class"):
        assert float(top[key]) == pytest.approx(ref2[key], rel=1e-6), key
    assert float(top["p_wilcoxon"]) == pytest.approx(ref2["p_wilcoxon"], rel=1e-3)
    assert set(summ.loc[summ["group_variable"] == "track", "group"]) == {"AS", "BS"}


@pytest.mark.realdata
def test_oli_psychology_pretest_final_with_attrition():
    """OLI Psychology MOOC: pretest (0-20) for 902 of 939 learners, final exam for all 939.
    PROVENANCE quotes the means; learners without a pretest are counted, never dropped silently."""
    path = require_real_data("oli_psychology_mooc_doer_effect", "student-rollup-ds863-with-video.txt")
    d = pd.read_csv(path, sep="\t")
    assert d["Final Exam"].mean() == pytest.approx(26.294, abs=5e-4)
    ids = d["id"].astype(str)
    pre = d["Pretest"]
    a = pd.concat([
        pd.DataFrame({"learner_id": ids[pre.notna()], "instrument": "psy", "phase": "pre", "item_id": "total",
                      "score": pre[pre.notna()].astype(float), "max_score": 20.0}),
        pd.DataFrame({"learner_id": ids, "instrument": "psy", "phase": "post", "item_id": "total",
                      "score": d["Final Exam"].astype(float), "max_score": 40.0})])
    summ = G.gain_summary(a, cohort=None).iloc[0]
    assert summ["n_post"] == len(d) == 939
    assert summ["n_post_only"] == int(pre.isna().sum())
    assert summ["n"] == summ["n_pre"] == len(d) - int(pre.isna().sum())
    assert float(summ["post_mean"]) == pytest.approx(d.loc[pre.notna(), "Final Exam"].mean() / 40)
    assert float(summ["pre_mean"]) == pytest.approx(pre.mean() / 20)


def test_mixed_model_matches_lme4():
    """lme4::lmer(post_pct ~ pre_pct + role + (1 | module), REML) on our simulated set."""
    d = pd.read_csv(REF / "sim_mixed.csv")
    res = G.gain_mixed_model(d, group="role").set_index("term")
    ref = pd.read_csv(REF / "sim_mixed_lme4.csv").set_index("term")
    pairs = {"Intercept": "(Intercept)", "pre": "pre_pct", "role[T.B]": "roleB",
             "var(module)": "var(module)", "var(residual)": "var(residual)"}
    for ours, theirs in pairs.items():
        assert res.loc[ours, "estimate"] == pytest.approx(ref.loc[theirs, "estimate"], rel=2e-3), ours
    for ours, theirs in list(pairs.items())[:3]:
        assert res.loc[ours, "se"] == pytest.approx(ref.loc[theirs, "se"], rel=2e-3), ours
    assert (res["method"] == "mixedlm_reml").all()


def test_mixed_model_falls_back_to_ancova_and_handles_cohorts():
    sim = simulate_prepost(120, n_modules=1, item_level=False, seed=5)
    g = G.learner_gains(G.learner_scores(sim.assessments)).merge(sim.learners, on=["cohort", "learner_id"])
    one = G.gain_mixed_model(g, group="role")
    assert one["method"].iloc[0].startswith("ancova_ols")
    sim2 = simulate_prepost(120, n_modules=3, item_level=False, seed=6, cohort="c2")
    g2 = G.learner_gains(G.learner_scores(sim2.assessments)).merge(sim2.learners, on=["cohort", "learner_id"])
    sim3 = simulate_prepost(120, n_modules=3, item_level=False, seed=7, cohort="c1")
    g3 = G.learner_gains(G.learner_scores(sim3.assessments)).merge(sim3.learners, on=["cohort", "learner_id"])
    both = G.gain_mixed_model(pd.concat([g2, g3]), group="role")
    assert {"var(module)", "var(module_x_cohort)", "var(residual)"} <= set(both["term"])
    assert any(t.startswith("cohort[T.") for t in both["term"])


# ----------------------------------------------------------------------------- simulated cohorts


@pytest.fixture(scope="module")
def sim():
    return simulate_prepost(600, n_modules=3, group_levels=("A", "B", "C"), group_effect=[0.0, -0.04, 0.03],
                            module_gain=[0.05, 0.12, 0.22], item_level=True, max_score=15, mid=True, seed=42)


def test_recovery_classical_intervals_cover_truth(sim):
    summ = G.gain_summary(sim.assessments, sim.learners, group="role", min_cell_size=10)
    cells = summ[summ["group_variable"] == "role"].merge(
        sim.truth["cell_gain"], on=["module", "group"], suffixes=("", "_true"))
    assert len(cells) == 9
    covered = (cells["gain_ci_low"].astype(float) <= cells["gain_true"]) & (
        cells["gain_true"] <= cells["gain_ci_high"].astype(float))
    assert covered.sum() >= 8  # 95% intervals: at most one miss in nine by chance
    r = np.corrcoef(cells["gain"].astype(float), cells["gain_true"])[0, 1]
    assert r > 0.95
    # mid sits between pre and post on average
    allrows = summ[summ["group_variable"] == "all"]
    assert (allrows["pre_mean"] < allrows["mid_mean"]).all() and (allrows["mid_mean"] < allrows["post_mean"]).all()


def test_attrition_is_counted_and_compared(sim):
    scores = G.learner_scores(sim.assessments)
    att = G.attrition(scores, sim.learners, group="role", min_cell_size=10)
    truth = sim.truth["pairs"]
    top = att[att["group_variable"] == "all"].set_index("module")
    dropped_true = truth.groupby("module")["dropped"].sum()
    assert (top["n_dropped"].astype(int) == dropped_true.loc[top.index]).all()
    assert (top["n_completed"] + top["n_dropped"] == top["n_pre"]).all()
    # weaker learners drop out in the simulation: dropouts' pre-test mean is lower
    assert (top["pre_diff"].astype(float) < 0).all()
    assert (top["pre_diff_ci_high"].astype(float) < 0).sum() >= 2
    assert att.loc[att["group_variable"] == "role", "composition_p"].notna().all()
    # gains state how many learners they rest on, attrition included
    summ = G.gain_summary(sim.assessments, sim.learners, min_cell_size=10)
    assert (summ["n"] + summ["n_pre_only"] == summ["n_pre"]).all()


def test_small_groups_are_suppressed_with_reason():
    sim = simulate_prepost(80, n_modules=1, group_levels=("big", "tiny"), item_level=False, dropout=0.0, seed=3)
    learners = sim.learners.copy()
    learners.loc[learners.index[:6], "role"] = "tiny"
    learners.loc[learners.index[6:], "role"] = "big"
    summ = G.gain_summary(sim.assessments, learners, group="role", min_cell_size=10)
    tiny = summ[summ["group"] == "tiny"].iloc[0]
    big = summ[summ["group"] == "big"].iloc[0]
    assert "fewer than 10" in tiny["suppressed_reason"]
    numeric = [c for c in summ.columns if c not in ("instrument", "module", "group_variable", "group", "method",
                                                    "suppressed_reason", "hake_band")]
    assert all(pd.isna(tiny[c]) for c in numeric)  # never a number, not even n
    assert pd.isna(tiny["hake_band"])
    # with only two groups, showing the big one would give the tiny one away (all minus big):
    # complementary suppression hides it too, and the whole-cohort row stays
    assert "cannot be worked out from the total" in big["suppressed_reason"] and pd.isna(big["n"])
    assert int(summ.loc[summ["group_variable"] == "all", "n"].iloc[0]) == 80
    att = G.attrition(G.learner_scores(sim.assessments), learners, group="role", min_cell_size=10)
    assert att.loc[att["group"] == "tiny", "n_pre"].isna().all()


def test_ceiling_learners_are_counted_not_divided(sim):
    s2 = simulate_prepost(300, n_modules=1, ceiling_share=0.2, item_level=False, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        summ = G.gain_summary(s2.assessments, min_cell_size=10)
    row = summ.iloc[0]
    n_ceil = int(row["n_pre_at_ceiling"])
    assert n_ceil > 30
    assert int(row["n_g"]) == int(row["n"]) - n_ceil
    assert np.isfinite(float(row["g_avg"])) and np.isfinite(float(row["c_avg"]))


def test_classical_path_is_vectorised_and_fast():
    import time

    big = simulate_prepost(2000, n_modules=5, item_level=False, seed=1)
    t = time.perf_counter()
    G.gain_summary(big.assessments, big.learners, group="role", min_cell_size=10)
    assert time.perf_counter() - t < 5.0


# ----------------------------------------------------------------------------- Bayesian


@pytest.fixture(scope="module")
def bayes_fit():
    from research.bayes import SamplerSettings

    s = simulate_prepost(400, n_modules=4, group_levels=("A", "B"), module_gain=[0.0, 0.08, 0.15, 0.25],
                         group_effect=[0.02, -0.02], item_level=False, max_score=20, seed=11)
    g = G.learner_gains(G.learner_scores(s.assessments)).merge(s.learners, on=["cohort", "learner_id"])
    model = G.BayesianGainModel(SamplerSettings(draws=400, tune=600, chains=2, seed=3, target_accept=0.95)).fit(g, group="role")
    return s, g, model


@pytest.mark.slow
def test_bayesian_gain_model_recovers_truth(bayes_fit):
    s, g, model = bayes_fit
    summ = model.summary()
    assert summ.attrs["divergences"] <= 3 and summ.attrs["max_r_hat"] < 1.05
    cells = summ[(summ["module"] != "all") & (summ["group"] != "all")].merge(
        s.truth["cell_gain"].rename(columns={"gain": "gain_true"}), on=["module", "group"])
    assert len(cells) == 8
    covered = (cells["ci_low"] <= cells["gain_true"]) & (cells["gain_true"] <= cells["ci_high"])
    assert covered.sum() >= 7
    mods = summ[(summ["group_variable"] == "all") & (summ["module"] != "all")].set_index("module")
    # the zero-gain module is uncertain, the big ones surely positive
    assert mods.loc["M04", "prob_positive"] > 0.99
    assert 0.02 < mods.loc["M01", "prob_positive"] < 0.98 or abs(mods.loc["M01", "estimate"]) < 0.02
    assert (summ["n"] > 0).all() and (summ["method"] == "bayes_hierarchical").all()
    assert model.provenance_["seed"] == 3


def test_bayesian_posterior_joins_the_summary(bayes_fit):
    s, g, model = bayes_fit
    summ = G.gain_summary(s.assessments, s.learners, group="role", posterior=model.summary())
    assert summ["prob_positive"].notna().all()
    assert (summ["method"] == "classical+bayesian").all()
    # the posterior mean and the classical mean agree closely for cells of ~100 learners
    diff = (summ["posterior_gain"].astype(float) - summ["gain"].astype(float)).abs()
    assert diff.max() < 0.03


def test_bayesian_model_validates():
    with pytest.raises(ConfigError, match="SamplerSettings"):
        G.BayesianGainModel(sampler={"draws": 10})
    with pytest.raises(ConfigError, match="call fit"):
        G.BayesianGainModel().summary()
    with pytest.raises(SchemaError, match="group='team'"):
        G.BayesianGainModel().fit(pd.DataFrame({"module": ["a"], "gain": [0.1]}), group="team")


def test_ancova_table_recovers_group_effects_and_matches_its_schema(sim):
    from research.schema import output_schema, validate

    table = G.gains_with_groups(G.learner_scores(sim.assessments), sim.learners, "role")
    out = G.ancova_table(table, group=["role"], min_cell_size=10)
    checked = validate(out, output_schema("ancova"), source_file="ancova.csv")
    assert len(checked.rejects) == 0
    assert set(out["group_variable"]) == {"all", "role"}
    # the simulator's true group effects on the gain are 0, -0.04 and +0.03 (A is the reference)
    truth = {"role[T.B]": -0.04, "role[T.C]": 0.03}
    terms = out[out["term"].isin(list(truth))]
    assert len(terms) == 3 * 2
    covered = (terms["ci_low"] <= terms["term"].map(truth)) & (terms["term"].map(truth) <= terms["ci_high"])
    assert covered.sum() >= 5
    pre = out[(out["term"] == "pre") & (out["group_variable"] == "all")]
    assert (pre["estimate"] > 0).all() and (pre["n"] > 300).all()
    # agrees with the single-model ANCOVA it is built from
    one = G.ancova(table[table["module"] == table["module"].iloc[0]], group="role")
    first = out[(out["module"] == table["module"].iloc[0]) & (out["group_variable"] == "role")]
    np.testing.assert_allclose(first["estimate"].to_numpy(), one["estimate"].to_numpy())


def test_ancova_table_leaves_small_groups_out_and_says_why():
    sim = simulate_prepost(60, n_modules=1, group_levels=("big", "tiny"), item_level=False, dropout=0.0, seed=3)
    learners = sim.learners.copy()
    learners.loc[learners.index[:6], "role"] = "tiny"
    learners.loc[learners.index[6:], "role"] = "big"
    table = G.gains_with_groups(G.learner_scores(sim.assessments), learners, "role")
    out = G.ancova_table(table, group=["role"], min_cell_size=10)
    role = out[out["group_variable"] == "role"]
    assert len(role) == 1 and role["term"].iloc[0] == "(not fitted)"
    assert role["estimate"].isna().all() and role["n"].isna().all()
    assert "minimum cell size" in role["suppressed_reason"].iloc[0]
    assert not out["term"].str.contains("tiny").any()


def test_ancova_design_equals_the_formula_model():
    """The ANCOVA builds its design directly; statsmodels' formula (patsy) is the oracle: the same
    terms in the same order, the same estimates, standard errors and p values."""
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(1)
    d = pd.DataFrame({"pre_pct": rng.random(300), "role": rng.choice(["b", "a", "c d", "Z"], 300),
                      "gender": rng.choice(["f", "m"], 300)})
    d["post_pct"] = 0.5 * d["pre_pct"] + 0.1 * (d["role"] == "a") + rng.normal(0, 0.1, 300)
    d.loc[3, "pre_pct"] = np.nan
    out = G.ancova(d, group=["role", "gender"])
    frame = pd.DataFrame({"post": d["post_pct"], "pre": d["pre_pct"], "g0": d["role"].astype(object),
                          "g1": d["gender"].astype(object)}).dropna()
    ref = smf.ols("post ~ pre + C(g0) + C(g1)", data=frame).fit()
    assert list(out["term"]) == [t.replace("C(g0)", "role").replace("C(g1)", "gender") for t in ref.params.index]
    assert np.allclose(out["estimate"], ref.params, rtol=1e-10, atol=1e-12)
    assert np.allclose(out["se"], ref.bse, rtol=1e-10) and np.allclose(out["p"], ref.pvalues, rtol=1e-8, atol=1e-300)
    assert out.attrs["r_squared"] == pytest.approx(ref.rsquared, rel=1e-12)
