"""Gaps between groups: intervals checked against scipy/statsmodels, recovery of a planted
gap with interval coverage, small-cell suppression, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest

from research.errors import ConfigError, DataError
from research.estimate.gaps import GAP_COLUMNS, equity_gaps, group_gaps, learner_facility, learner_gain, wilson_interval
from research.simulate.dif import simulate_dif


@pytest.fixture
def cohort(rng):
    n = 300
    learners = pd.DataFrame({
        "learner_id": [f"L{i:03d}" for i in range(n)],
        "gender": rng.choice(["man", "woman"], n, p=[0.6, 0.4]),
        "region": rng.choice(["north", "south", "east"], n),
    })
    woman = (learners["gender"] == "woman").to_numpy()
    values = pd.DataFrame({"learner_id": learners["learner_id"], "value": rng.normal(0.6, 0.15, n) - 0.1 * woman})
    done = pd.DataFrame({"learner_id": learners["learner_id"],
                         "value": (rng.random(n) < np.where(woman, 0.5, 0.7)).astype(int)})
    return learners, values, done


def test_mean_gap_matches_scipy_welch(cohort):
    learners, values, _ = cohort
    out = group_gaps(values, learners, measure="facility", attributes=["gender"])
    assert list(out.columns) == GAP_COLUMNS
    assert out["group"].tolist() == ["all", "man", "woman"]
    merged = values.merge(learners, on="learner_id")
    a = merged.loc[merged["gender"] == "woman", "value"]
    b = merged.loc[merged["gender"] == "man", "value"]
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    row = out[out["group"] == "woman"].iloc[0]
    assert row["difference"] == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert row["difference_p"] == pytest.approx(res.pvalue, rel=1e-10)
    assert (row["difference_ci_low"], row["difference_ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    one = stats.ttest_1samp(a, 0).confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((one.low, one.high), rel=1e-10)
    assert row["n"] == len(a)
    ref = out[out["group"] == "man"].iloc[0]
    assert pd.isna(ref["difference"]) and ref["reference_group"] == "man"


def test_proportion_gap_matches_statsmodels(cohort):
    learners, _, done = cohort
    out = group_gaps(done, learners, measure="completion", kind="proportion", attributes=["gender"], target=0.8)
    merged = done.merge(learners, on="learner_id")
    k1, n1 = merged.loc[merged["gender"] == "woman", "value"].sum(), (merged["gender"] == "woman").sum()
    k0, n0 = merged.loc[merged["gender"] == "man", "value"].sum(), (merged["gender"] == "man").sum()
    row = out[out["group"] == "woman"].iloc[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(proportion_confint(k1, n1, method="wilson"), rel=1e-10)
    lo, hi = confint_proportions_2indep(k1, n1, k0, n0, method="newcomb", compare="diff")
    assert (row["difference_ci_low"], row["difference_ci_high"]) == pytest.approx((lo, hi), rel=1e-8)
    _, p = proportions_ztest([k1, k0], [n1, n0])
    assert row["difference_p"] == pytest.approx(p, rel=1e-8)
    assert row["target_p"] == pytest.approx(stats.binomtest(int(k1), int(n1), 0.8, alternative="less").pvalue, rel=1e-8)
    assert not row["meets_target"]


def test_wilson_interval_edge_cases():
    lo, hi = wilson_interval([0, 10, 5], [10, 10, 0])
    assert lo[0] == 0 and hi[0] == pytest.approx(proportion_confint(0, 10, method="wilson")[1])
    assert hi[1] == 1
    assert np.isnan(lo[2]) and np.isnan(hi[2])


@pytest.mark.slow
def test_planted_gap_is_recovered_with_nominal_coverage():
    """Difference intervals cover a planted facility gap in about 95% of repetitions."""
    hits = []
    for rep in range(100):
        r = np.random.default_rng(300 + rep)
        n = 200
        g = r.random(n) < 0.5
        learners = pd.DataFrame({"learner_id": np.arange(n).astype(str), "role": np.where(g, "b", "a")})
        values = pd.DataFrame({"learner_id": learners["learner_id"], "value": r.normal(0, 1, n) - 0.3 * g})
        row = group_gaps(values, learners, reference={"role": "a"}).query("group == 'b'").iloc[0]
        hits.append(row["difference_ci_low"] <= -0.3 <= row["difference_ci_high"])
    assert 0.89 <= np.mean(hits) <= 0.99


def test_small_groups_are_suppressed_and_differences_need_a_reference(cohort):
    learners, values, _ = cohort
    learners = learners.copy()
    learners.loc[:4, "region"] = "islands"  # 5 learners
    out = group_gaps(values, learners, attributes=["region"], min_cell_size=10)
    isl = out[out["group"] == "islands"].iloc[0]
    assert pd.isna(isl["n"]) and pd.isna(isl["estimate"]) and pd.isna(isl["difference"])
    assert "minimum cell size 10" in isl["suppressed_reason"]
    # a cohort below the cell size shows nothing at all
    tiny = group_gaps(values.head(5), learners, attributes=["gender"], min_cell_size=10)
    assert tiny["estimate"].isna().all() and (tiny["suppressed_reason"] != "").all()


def test_learner_gain_uses_instruments_taken_in_both_phases():
    assessments = pd.DataFrame({
        "learner_id": ["a"] * 6 + ["b"] * 2,
        "instrument": ["m1", "m1", "m1", "m1", "m2", "m2", "m1", "m1"],
        "phase": ["pre", "pre", "post", "post", "pre", "pre", "pre", "pre"],
        "item_id": ["q1", "q2", "q1", "q2", "q1", "q2", "q1", "q2"],
        "score": [0, 1, 1, 1, 0, 0, 1, 1],
        "max_score": [1] * 8,
    })
    out = learner_gain(assessments).set_index("learner_id")
    assert out.index.tolist() == ["a"]  # b has no post-test; a's m2 has no post-test and is left out
    assert out.loc["a", "value"] == pytest.approx(1.0 - 0.5)
    with pytest.raises(ConfigError, match=r"instrument 'm7'.*instruments: \['m1', 'm2'\]"):
        learner_gain(assessments, instrument="m7")


def test_equity_gaps_combines_measures():
    sim = simulate_dif(400, 10, dif_items=(), impact=-0.5, seed=4)
    n = len(sim.learners)
    r = np.random.default_rng(1)
    assessments = pd.concat([
        pd.DataFrame({"learner_id": sim.learners["learner_id"], "instrument": "t", "phase": ph, "item_id": "total",
                      "score": r.integers(0, 11, n).astype(float), "max_score": 10.0})
        for ph in ("pre", "post")
    ])
    completion = pd.DataFrame({"learner_id": sim.learners["learner_id"], "completed": r.integers(0, 2, n)})
    out = equity_gaps(sim.responses, sim.learners, assessments=assessments, completion=completion)
    assert set(out["measure"]) == {"facility", "gain", "completion"}
    fac = out[(out["measure"] == "facility") & (out["group"] == "woman")].iloc[0]
    assert fac["difference_ci_high"] < 0  # the focal group is half an SD less able
    assert out.loc[out["measure"] == "completion", "target"].eq(0.8).all()
    facility = learner_facility(sim.responses)
    assert facility["value"].between(0, 1).all() and (facility["n_items"] == 10).all()


def test_errors_name_the_bad_value(cohort):
    learners, values, done = cohort
    with pytest.raises(ConfigError, match=r"kind='median'.*'mean', 'proportion'"):
        group_gaps(values, learners, kind="median")
    with pytest.raises(DataError, match=r"must be 0/1.*kind='proportion'"):
        group_gaps(values, learners, kind="proportion")
    with pytest.raises(ConfigError, match=r"target=1.2"):
        group_gaps(done, learners, kind="proportion", target=1.2)
    with pytest.raises(DataError, match="more than one row for learner"):
        group_gaps(pd.concat([values, values.head(1)]), learners)
    with pytest.raises(DataError, match="nothing to compare"):
        equity_gaps(None, learners)


def test_output_validates_against_its_table_schema(cohort):
    from research.schema import validate

    learners, values, done = cohort
    learners = learners.copy()
    learners.loc[:2, "region"] = "islands"
    responses = pd.DataFrame({"learner_id": values["learner_id"], "correct": (values["value"] > 0.5).astype(int)})
    out = equity_gaps(responses, learners, completion=done.rename(columns={"value": "completed"}))
    checked = validate(out, "outputs/gaps")
    assert len(checked.rejects) == 0, checked.rejects["reason"].tolist()[:3]
    hidden = out[out["suppressed_reason"] != ""]
    # islands (3 learners) in facility and completion, and in each the next-smallest region,
    # so that islands cannot be worked out as the cohort minus the other regions
    assert len(hidden) == 4 and set(hidden["attribute"]) == {"region"}
    assert (hidden["group"] == "islands").sum() == 2
    assert hidden["suppressed_reason"].str.contains("worked out from the total").sum() == 2
    assert hidden["n"].isna().all() and hidden["estimate"].isna().all()


def test_gaps_chart_leaves_out_suppressed_groups(cohort):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from research.plots.equity import gaps_chart

    learners, values, done = cohort
    learners = learners.copy()
    learners.loc[:2, "region"] = "islands"
    out = group_gaps(values, learners, measure="facility")
    fig, alt = gaps_chart(out)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "region: islands" not in labels and "gender: woman" in labels
    assert "2 group rows are not shown" in alt  # islands and the region hidden beside it
    plt.close("all")


def test_no_learner_attributes_gives_the_cohort_row_only(cohort):
    learners, values, _ = cohort
    out = group_gaps(values, learners[["learner_id"]], measure="facility")
    assert out["attribute"].tolist() == ["all"] and out["n"].iloc[0] == len(values)
