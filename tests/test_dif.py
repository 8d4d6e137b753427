"""Differential item functioning: agreement with R and statsmodels, recovery of planted DIF,
false-positive rate, small-cell suppression, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import StratifiedTable
from statsmodels.stats.multitest import multipletests

from research.errors import ConfigError, DataError, SchemaError
from research.estimate.dif import (
    DIF_COLUMNS,
    benjamini_hochberg,
    dif_success_curves,
    ets_classify,
    first_attempt_responses,
    mantel_haenszel_dif,
)
from research.simulate.dif import simulate_dif

REFERENCE = Path(__file__).parent / "reference" / "dif"


# --------------------------------------------------------------------------- real data vs R


@pytest.fixture(scope="module")
def hci():
    # module-scoped, so it calls the rule behind the `real_data` fixture directly
    # (skip when ../shared/data is absent; fail under RESEARCH_REQUIRE_REAL_DATA=1)
    from conftest import require_real_data

    wide = pd.read_csv(require_real_data("homeostasis_concept_inventory_hci", "HCI.csv"))
    wide["learner_id"] = [f"s{i:03d}" for i in range(len(wide))]
    items = [f"Item {j}" for j in range(1, 21)]
    responses = wide.melt(id_vars="learner_id", value_vars=items, var_name="item_id", value_name="correct")
    responses["correct"] = responses["correct"].astype(int)
    learners = pd.DataFrame({"learner_id": wide["learner_id"],
                             "gender": np.where(wide["gender"] == 1, "female", "male")})
    return responses, learners


@pytest.fixture(scope="module")
def hci_dif(hci):
    responses, learners = hci
    return mantel_haenszel_dif(responses, learners, attributes=["gender"], reference={"gender": "male"})


@pytest.mark.realdata
def test_mh_matches_r_mantelhaen_test_on_hci(hci_dif):
    """Compare to base R mantelhaen.test(correct = TRUE) and p.adjust(method = "BH"),
    tests/reference/dif/make_reference.R, HCI data (McFarland et al. 2017)."""
    ref = pd.read_csv(REFERENCE / "hci_gender_mh.csv")
    got = hci_dif.set_index("item_id").loc[ref["item_id"]]
    for col in ["mh_odds_ratio", "mh_odds_ratio_ci_low", "mh_odds_ratio_ci_high", "mh_chi2", "p_value",
                "p_adjusted", "mh_delta"]:
        np.testing.assert_allclose(got[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-7, err_msg=col)
    np.testing.assert_array_equal(got["n_reference"].to_numpy(int), ref["n_reference"])
    np.testing.assert_array_equal(got["n_focal"].to_numpy(int), ref["n_focal"])


@pytest.mark.realdata
def test_logistic_dif_matches_r_glm_on_hci(hci_dif):
    """Compare to R glm(binomial) likelihood-ratio statistics and Nagelkerke R2 differences."""
    ref = pd.read_csv(REFERENCE / "hci_gender_mh.csv")
    got = hci_dif.set_index("item_id").loc[ref["item_id"]]
    for col in ["lr_uniform_chi2", "lr_nonuniform_chi2", "lr_effect_size"]:
        np.testing.assert_allclose(got[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-5, atol=1e-8,
                                   err_msg=col)


@pytest.mark.realdata
def test_hci_has_no_dif_as_published(hci_dif):
    """McFarland et al. (2017): 'We found no evidence of differential item functioning'."""
    assert (hci_dif["ets_class"] == "A").all()
    assert (hci_dif["p_adjusted"] > 0.05).all()
    assert (hci_dif["lr_effect_class"] == "A").all()


@pytest.mark.realdata
def test_mh_matches_statsmodels_stratified_table(hci, hci_dif):
    """Second implementation: statsmodels StratifiedTable (RBG variance, corrected MH test)."""
    responses, learners = hci
    wide = responses.pivot(index="learner_id", columns="item_id", values="correct")
    total = wide.sum(axis=1)
    female = (learners.set_index("learner_id")["gender"] == "female").reindex(wide.index).to_numpy()
    for item in ["Item 1", "Item 7", "Item 19"]:
        y = wide[item].to_numpy()
        tables = []
        for s in np.unique(total):
            m = (total == s).to_numpy()
            if m.sum() < 2:
                continue
            a = np.sum(m & ~female & (y == 1)); b = np.sum(m & ~female & (y == 0))
            c = np.sum(m & female & (y == 1)); d = np.sum(m & female & (y == 0))
            tables.append([[a, b], [c, d]])
        st = StratifiedTable(np.array(tables, dtype=float).transpose(1, 2, 0))
        row = hci_dif.set_index("item_id").loc[item]
        assert row["mh_odds_ratio"] == pytest.approx(st.oddsratio_pooled, rel=1e-10)
        assert row["mh_delta_se"] / 2.35 == pytest.approx(st.logodds_pooled_se, rel=1e-10)
        test = st.test_null_odds(correction=True)
        assert row["mh_chi2"] == pytest.approx(test.statistic, rel=1e-10)
        assert row["p_value"] == pytest.approx(test.pvalue, rel=1e-8)


def test_mh_hand_computed_two_strata():
    """Two strata worked by hand: alpha = (10*20/50 + 30*10/60) / (5*15/50 + 12*8/60)."""
    # stratum 1: ref 10 correct, 5 wrong; focal 15 correct, 20 wrong (T = 50)
    # stratum 2: ref 30 correct, 12 wrong; focal 8 correct, 10 wrong (T = 60)
    cells = [(1, "r", 1, 10), (1, "r", 0, 5), (1, "f", 1, 15), (1, "f", 0, 20),
             (2, "r", 1, 30), (2, "r", 0, 12), (2, "f", 1, 8), (2, "f", 0, 10)]
    rows = []
    for stratum, g, y, n in cells:
        rows += [(stratum, g, y)] * n
    df = pd.DataFrame(rows, columns=["stratum", "g", "y"])
    df["learner_id"] = [f"x{i}" for i in range(len(df))]
    # the studied item plus `stratum - 1` + (1 - y) anchor items correct gives total = stratum + constant
    anchor = (df["stratum"] - 1) * 2 + (1 - df["y"])  # total = y + anchor = 2*stratum - 1 for everyone in a stratum
    long = [df[["learner_id"]].assign(item_id="studied", correct=df["y"])]
    for k in range(3):
        long.append(df[["learner_id"]].assign(item_id=f"a{k}", correct=(anchor > k).astype(int)))
    responses = pd.concat(long, ignore_index=True)
    learners = df[["learner_id"]].assign(group=np.where(df["g"] == "r", "ref", "foc"))
    out = mantel_haenszel_dif(responses, learners, attributes="group", reference={"group": "ref"}, min_cell_size=1,
                              logistic=False)
    row = out.set_index("item_id").loc["studied"]
    alpha = (10 * 20 / 50 + 30 * 10 / 60) / (5 * 15 / 50 + 12 * 8 / 60)
    assert row["mh_odds_ratio"] == pytest.approx(alpha, rel=1e-12)
    assert row["mh_delta"] == pytest.approx(-2.35 * np.log(alpha), rel=1e-12)
    ea = 15 * 25 / 50 + 42 * 38 / 60
    va = 15 * 35 * 25 * 25 / (50**2 * 49) + 42 * 18 * 38 * 22 / (60**2 * 59)
    assert row["mh_chi2"] == pytest.approx((abs(40 - ea) - 0.5) ** 2 / va, rel=1e-12)
    assert row["n_strata"] == 2


# --------------------------------------------------------------------------- recovery


@pytest.fixture(scope="module")
def planted():
    sim = simulate_dif(1200, 20, dif_items=(0, 5, 12), dif_size=[1.0, -1.0, 1.2], nonuniform_items=(17,),
                       nonuniform_discrimination=0.2, impact=-0.5, seed=11)
    return sim, mantel_haenszel_dif(sim.responses, sim.learners, purify=True)


def test_planted_dif_items_are_class_c(planted):
    sim, out = planted
    by_item = out.set_index("item_id")
    for j, sign in [(0, "reference"), (5, "focal"), (12, "reference")]:
        row = by_item.loc[f"I{j:03d}"]
        assert row["ets_class"] == "C", row
        assert row["favours"] == sign
    # delta recovers the planted shift: delta = -2.35 * shift under the Rasch model
    truth = sim.truth_items.set_index("item_id")
    for item in ["I000", "I005", "I012"]:
        row = by_item.loc[item]
        true_delta = -2.35 * truth.loc[item, "shift"]
        assert abs(row["mh_delta"] - true_delta) < 2.5 * row["mh_delta_se"]


def test_clean_items_are_not_flagged_despite_impact(planted):
    sim, out = planted
    clean = sim.truth_items.loc[~sim.truth_items["dif"], "item_id"]
    rows = out[out["item_id"].isin(clean)]
    assert (rows["ets_class"] == "A").mean() >= 0.9
    assert not (rows["ets_class"] == "C").any()


def test_nonuniform_dif_found_by_logistic_regression(planted):
    _, out = planted
    row = out.set_index("item_id").loc["I017"]
    assert row["lr_nonuniform_p_adjusted"] < 0.01
    others = out[~out["item_id"].isin(["I000", "I005", "I012", "I017"])]
    assert (others["lr_nonuniform_p_adjusted"] > 0.05).mean() >= 0.9


@pytest.mark.slow
def test_false_positive_rate_near_nominal_over_repetitions():
    """No DIF planted (but a real ability gap between groups): the MH test at .05 rejects
    about 5% of items over repetitions (slightly fewer: the continuity correction is
    conservative; 200 repetitions gave 4.0%), and class C stays rare (chance alone gives
    p < .001 in 0.1% of tests)."""
    rejections, classes = [], []
    for rep in range(25):
        sim = simulate_dif(500, 15, dif_items=(), impact=-0.5, seed=1000 + rep)
        out = mantel_haenszel_dif(sim.responses, sim.learners, logistic=False)
        rejections.append(out["p_value"].to_numpy() < 0.05)
        classes.append(out["ets_class"].to_numpy())
    rate = np.concatenate(rejections).mean()  # 375 tests
    assert 0.015 <= rate <= 0.09, rate
    assert (np.concatenate(classes) == "C").mean() <= 0.01


@pytest.mark.slow
def test_purification_keeps_false_positives_near_nominal_with_dif_present():
    rates = []
    for rep in range(15):
        sim = simulate_dif(600, 15, dif_items=(0, 1, 2), dif_size=1.0, seed=2000 + rep)
        out = mantel_haenszel_dif(sim.responses, sim.learners, purify=True, logistic=False)
        clean = out[~out["item_id"].isin(["I000", "I001", "I002"])]
        rates.append(clean["p_value"].to_numpy() < 0.05)
        assert (out.set_index("item_id").loc[["I000", "I001", "I002"], "ets_class"] != "A").all()
    rate = np.concatenate(rates).mean()  # 180 tests
    assert rate <= 0.10, rate


def test_dif_found_with_incomplete_data():
    sim = simulate_dif(1500, 20, dif_items=(3,), dif_size=1.2, missing=0.3, seed=5)
    out = mantel_haenszel_dif(sim.responses, sim.learners, logistic=False)
    by_item = out.set_index("item_id")
    assert by_item.loc["I003", "ets_class"] == "C"
    assert (by_item.drop(index="I003")["ets_class"] != "C").all()
    # learners answering an item, by group
    assert by_item.loc["I003", "n_reference"] + by_item.loc["I003", "n_focal"] == (sim.responses["item_id"] == "I003").sum()


def test_logistic_kernel_matches_statsmodels():
    sim = simulate_dif(400, 8, dif_items=(1,), nonuniform_items=(2,), seed=3)
    out = mantel_haenszel_dif(sim.responses, sim.learners).set_index("item_id")
    wide = sim.responses.pivot(index="learner_id", columns="item_id", values="correct")
    total = wide.sum(axis=1)
    s = ((total - total.mean()) / total.std(ddof=0)).to_numpy()
    g = (sim.learners.set_index("learner_id")["gender"] == "woman").reindex(wide.index).astype(float).to_numpy()
    for item in ["I001", "I002", "I005"]:
        y = wide[item].to_numpy()
        ll = [sm.Logit(y, X).fit(disp=0).llf for X in (np.column_stack([np.ones_like(s), s]),
                                                        np.column_stack([np.ones_like(s), s, g]),
                                                        np.column_stack([np.ones_like(s), s, g, s * g]))]
        assert out.loc[item, "lr_uniform_chi2"] == pytest.approx(2 * (ll[1] - ll[0]), rel=1e-6, abs=1e-8)
        assert out.loc[item, "lr_nonuniform_chi2"] == pytest.approx(2 * (ll[2] - ll[1]), rel=1e-6, abs=1e-8)


# --------------------------------------------------------------------------- suppression, columns, helpers


def test_small_groups_are_suppressed_without_numbers():
    sim = simulate_dif(300, 6, dif_items=(), seed=8)
    learners = sim.learners.copy()
    learners["region"] = np.where(np.arange(len(learners)) < 4, "north", "south")
    out = mantel_haenszel_dif(sim.responses, learners, attributes=["gender", "region"], min_cell_size=10)
    region = out[out["attribute"] == "region"]
    assert len(region) == 6
    assert (region["suppressed_reason"].str.contains("minimum cell size 10")).all()
    numeric = ["n_reference", "n_focal", "mh_odds_ratio", "mh_delta", "mh_delta_se", "p_value", "p_adjusted",
               "lr_uniform_p", "lr_effect_size"]
    assert region[numeric].isna().all().all()
    assert (region["ets_class"] == "").all()
    assert not region["suppressed_reason"].str.contains(r"\b4\b").any()  # the small count is never shown
    gender = out[out["attribute"] == "gender"]
    assert (gender["suppressed_reason"] == "").all() and gender["p_value"].notna().all()
    assert list(out.columns) == ["item_id", *DIF_COLUMNS]


def test_benjamini_hochberg_matches_statsmodels(rng):
    p = rng.uniform(0, 0.2, 40)
    p[[3, 9]] = np.nan
    got = benjamini_hochberg(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(got[ok], multipletests(p[ok], method="fdr_bh")[1], rtol=1e-12)
    assert np.isnan(got[~ok]).all()


def test_ets_rules_at_the_boundaries():
    # |delta| < 1 -> A; not significant -> A; |delta| >= 1.5 and (|d|-1)/se > 1.645 -> C; else B
    delta = np.array([-0.9, -1.6, -1.6, 1.6, -1.2, -2.0, np.nan])
    se = np.array([0.1, 0.1, 0.5, 0.3, 0.1, 0.5, 0.1])
    p = np.array([0.001, 0.3, 0.001, 0.001, 0.001, 0.001, 0.001])
    assert list(ets_classify(delta, se, p)) == ["A", "A", "B", "C", "B", "C", ""]
    # exact threshold of the one-sided test: (2.0 - 1) / se = 1.645 is not > 1.645 -> B
    assert ets_classify([2.0], [1 / 1.6448536269514722 + 1e-9], [0.001])[0] == "B"


def test_first_attempt_responses_uses_first_attempt_of_first_step():
    t = pd.Timestamp("2025-01-01")
    attempts = pd.DataFrame({
        "learner_id": ["a", "a", "a", "a", "b", "b"],
        "item_id": ["q1", "q1", "q1", "q2", "q1", "q2"],
        "step_id": ["s2", "s1", "s1", "q2", "s1", "q2"],
        "attempt": [1, 1, 2, 1, 1, 1],
        "outcome": ["correct", "incorrect", "correct", "hint", "correct", "correct"],
        "timestamp": [t + pd.Timedelta(minutes=5), t, t + pd.Timedelta(minutes=1), t, t, t],
    })
    out = first_attempt_responses(attempts).set_index(["learner_id", "item_id"])["correct"]
    assert out.to_dict() == {("a", "q1"): 0, ("a", "q2"): 0, ("b", "q1"): 1, ("b", "q2"): 1}


def test_success_curves_show_the_gap_and_suppress_small_cells(planted):
    sim, _ = planted
    curves = dif_success_curves(sim.responses, sim.learners, items=["I000"], attribute="gender", n_bands=4,
                                min_cell_size=10)
    wide = curves.pivot(index="band", columns="group", values="estimate")
    assert (wide["man"] > wide["woman"]).all()  # planted: harder for the focal group at every score band
    tiny = dif_success_curves(sim.responses, sim.learners, items=["I000"], attribute="gender", n_bands=4,
                              min_cell_size=10_000)
    assert tiny[["n", "estimate", "ci_low", "ci_high"]].isna().all().all()
    assert (tiny["suppressed_reason"] != "").all()


# --------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def small():
    sim = simulate_dif(60, 5, dif_items=(), seed=1)
    return sim.responses, sim.learners


def test_unknown_attribute_lists_valid_ones(small):
    responses, learners = small
    with pytest.raises(ConfigError, match=r"unknown learner attribute.*'religion'.*valid attributes.*gender"):
        mantel_haenszel_dif(responses, learners, attributes=["religion"])


def test_unknown_reference_group_lists_groups(small):
    responses, learners = small
    with pytest.raises(ConfigError, match=r"reference group 'other'.*groups: \['man', 'woman'\]"):
        mantel_haenszel_dif(responses, learners, reference={"gender": "other"})


def test_non_binary_scores_are_refused(small):
    responses, learners = small
    bad = responses.assign(correct=responses["correct"] * 2)
    with pytest.raises(DataError, match=r"'correct' must hold 0/1.*2"):
        mantel_haenszel_dif(bad, learners)


def test_duplicate_responses_are_refused(small):
    responses, learners = small
    with pytest.raises(DataError, match="more than one row for learner"):
        mantel_haenszel_dif(pd.concat([responses, responses.iloc[:1]]), learners)


def test_missing_column_is_named(small):
    responses, learners = small
    with pytest.raises(SchemaError, match=r"correct='score'.*columns are"):
        mantel_haenszel_dif(responses, learners, correct="score")


def test_bad_options_are_refused(small):
    responses, learners = small
    with pytest.raises(ConfigError, match=r"classify_on='raw'.*p_adjusted"):
        mantel_haenszel_dif(responses, learners, classify_on="raw")
    with pytest.raises(ConfigError, match="alpha=1.5"):
        mantel_haenszel_dif(responses, learners, alpha=1.5)


def test_output_validates_against_its_table_schema():
    from research.schema import validate

    sim = simulate_dif(300, 8, dif_items=(0,), seed=2)
    learners = sim.learners.assign(region=np.where(np.arange(300) < 4, "x", "y"))  # a suppressed group
    out = mantel_haenszel_dif(sim.responses, learners)
    checked = validate(out, "outputs/dif")
    assert len(checked.rejects) == 0, checked.rejects["reason"].tolist()[:3]
    assert len(checked.valid) == len(out)


@pytest.mark.slow
def test_cohort_simulator_planted_dif_item_is_class_c_and_nothing_else_is():
    """End to end on research.simulate.simulate_cohort: first attempts from attempts, all
    five learner attributes, purified matching score."""
    from research.simulate import simulate_cohort

    cohort = simulate_cohort(n_learners=1500, seed=0)
    truth = cohort.truth.items
    planted_items = truth.loc[truth["planted"].astype(str).str.contains("dif"), ["item_id", "dif_group"]]
    assert len(planted_items) >= 1
    out = mantel_haenszel_dif(first_attempt_responses(cohort.attempts), cohort.learners, purify=True)
    flagged = out[out["ets_class"] == "C"]
    for row in planted_items.itertuples():
        attribute, group = row.dif_group.split("=")
        hit = flagged[(flagged["item_id"] == row.item_id) & (flagged["attribute"] == attribute)]
        assert len(hit) == 1, (row, flagged)
        assert group in (hit["focal_group"].iloc[0], hit["reference_group"].iloc[0])
    clean = out[~out["item_id"].isin(planted_items["item_id"])]
    assert (clean["ets_class"] == "C").sum() == 0
    assert (clean["ets_class"].isin(["B", "C"])).mean() < 0.01


def test_plots_of_dif_have_titles_and_alt_text(planted):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from research.estimate.dif import flagged_success_curves
    from research.plots.equity import dif_deltas, success_curves

    sim, out = planted
    fig, alt = dif_deltas(out)
    assert fig.axes[0].get_title().startswith("DIF by gender") and fig.axes[0].get_xlabel()
    n_c = int((out["ets_class"] == "C").sum())
    assert f"{n_c} class C" in alt and "I000" in alt
    curves = flagged_success_curves(sim.responses, sim.learners, out, classes=("C",))
    assert set(curves["item_id"]) == set(out.loc[out["ets_class"] == "C", "item_id"]) >= {"I000", "I005", "I012"}
    fig2, alt2 = success_curves(curves)
    assert len([a for a in fig2.axes if a.get_title()]) == n_c and "I000 by gender" in alt2
    plt.close("all")


def test_cohort_without_learner_attributes_gives_an_empty_table(small):
    responses, learners = small
    out = mantel_haenszel_dif(responses, learners[["learner_id"]])
    assert out.empty and list(out.columns) == ["item_id", *DIF_COLUMNS]
    with pytest.raises(ConfigError, match="unknown learner attribute"):
        mantel_haenszel_dif(responses, learners[["learner_id"]], attributes=["gender"])


@pytest.mark.parametrize("classes", [("C",), ("B", "C")])
def test_two_stage_purification_drops_the_stage_one_classes_from_the_matching_score(classes):
    sim = simulate_dif(1200, 15, dif_items=(0, 1, 2), dif_size=[1.5, 1.0, 0.6], seed=77)
    stage1 = mantel_haenszel_dif(sim.responses, sim.learners, logistic=False)
    dropped = set(stage1.loc[stage1["ets_class"].isin(classes), "item_id"])
    assert dropped and len(dropped) < 13
    out = mantel_haenszel_dif(sim.responses, sim.learners, purify=True, purify_classes=classes, logistic=False)
    assert out["purified"].all() and out.attrs["purify_classes"] == list(classes)
    # stage 2 of a kept item is MH on the total score of the kept items only (complete data)
    kept = sim.responses[~sim.responses["item_id"].isin(dropped)]
    plain = mantel_haenszel_dif(kept, sim.learners, logistic=False).set_index("item_id")
    got = out.set_index("item_id").loc[plain.index]
    np.testing.assert_allclose(got["mh_delta"].astype(float), plain["mh_delta"].astype(float), rtol=1e-10)
    np.testing.assert_allclose(got["p_value"].astype(float), plain["p_value"].astype(float), rtol=1e-10)
    # a dropped item is matched on the kept items plus itself
    for item in dropped:
        own = sim.responses[~sim.responses["item_id"].isin(dropped - {item})]
        one = mantel_haenszel_dif(own, sim.learners, logistic=False).set_index("item_id").loc[item]
        assert float(out.set_index("item_id").loc[item, "mh_delta"]) == pytest.approx(float(one["mh_delta"]), rel=1e-10)
    with pytest.raises(ConfigError, match="purify_classes"):
        mantel_haenszel_dif(sim.responses, sim.learners, purify=True, purify_classes=("A",))


def test_reference_group_is_configurable():
    sim = simulate_dif(600, 10, dif_items=(0,), dif_size=1.2, seed=8)
    default = mantel_haenszel_dif(sim.responses, sim.learners, logistic=False)
    swapped = mantel_haenszel_dif(sim.responses, sim.learners, reference={"gender": "woman"}, logistic=False)
    assert set(default["reference_group"]) == {"man"} and set(swapped["reference_group"]) == {"woman"}
    d = default.set_index("item_id")["mh_delta"].astype(float)
    s = swapped.set_index("item_id")["mh_delta"].astype(float)
    np.testing.assert_allclose(d, -s, rtol=1e-8)
