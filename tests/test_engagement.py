"""Engagement: completion funnel, drop-out hazard, completion against a target, time on task."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError, SchemaError
from research.estimate.engagement import (
    FUNNEL_COLUMNS,
    TIME_COLUMNS,
    completion_rate,
    course_sequence,
    event_durations,
    funnel,
    learner_completion,
    time_on_task,
)
from research.simulate.dif import simulate_engagement

SPIKES = {5: 0.35, 16: 0.25}


@pytest.fixture(scope="module")
def sim():
    return simulate_engagement(800, spikes=SPIKES, focal_hazard_ratio=2.0, slow_items={8: 4.0}, seed=7)


@pytest.fixture(scope="module")
def item_funnel(sim):
    return funnel(sim.attempts, sim.items)


def test_funnel_counts_equal_the_truth(sim, item_funnel):
    far = sim.furthest.to_numpy()
    expected = np.array([(far >= p).sum() for p in item_funnel["position"]])
    np.testing.assert_array_equal(item_funnel["reached"].to_numpy(), expected)
    np.testing.assert_allclose(item_funnel["share"], expected / len(far))
    drops = np.array([(far == p).sum() for p in item_funnel["position"]])
    drops[-1] = 0
    np.testing.assert_array_equal(item_funnel["drop"].to_numpy(), drops)
    assert list(item_funnel.columns) == FUNNEL_COLUMNS


def test_hazard_intervals_cover_the_true_hazard(sim, item_funnel):
    truth = sim.truth.set_index("item_id")
    share_focal = (sim.learners["gender"] == "woman").mean()
    # the cohort mixes two groups; the true marginal hazard at p depends on who is left,
    # so compare with the hazard of the reference group only, computed on its learners
    ref_ids = sim.learners.loc[sim.learners["gender"] == "man", "learner_id"]
    ref = funnel(sim.attempts[sim.attempts["learner_id"].isin(ref_ids)], sim.items)
    inner = ref.iloc[:-1]
    true_h = truth.loc[inner["item_id"], "hazard_reference"].to_numpy()
    covered = (inner["hazard_ci_low"] <= true_h) & (true_h <= inner["hazard_ci_high"])
    assert covered.mean() >= 0.85, (covered.mean(), share_focal)
    # the planted drop-out points are the two biggest drops
    top = item_funnel.sort_values("rank_of_drop").head(2)["position"].tolist()
    assert sorted(top) == sorted(SPIKES)
    assert pd.isna(item_funnel["rank_of_drop"].iloc[-1])


def test_appearance_order_recovers_the_course_sequence(sim):
    seq = course_sequence(sim.attempts)  # no items table: order of first appearance
    assert seq["item_id"].tolist() == sim.items["item_id"].tolist()
    assert (seq["order_source"] == "appearance").all()
    assert (course_sequence(sim.attempts, sim.items)["order_source"] == "items.position").all()


def test_page_and_module_funnels_agree_with_item_funnel(sim, item_funnel):
    page = funnel(sim.attempts, sim.items, level="page")
    module = funnel(sim.attempts, sim.items, level="module")
    first_item_of_page = item_funnel.groupby("page", sort=False)["reached"].first()
    np.testing.assert_array_equal(page["reached"].to_numpy(), first_item_of_page.loc[page["page"]].to_numpy())
    first_item_of_module = item_funnel.groupby("module", sort=False)["reached"].first()
    np.testing.assert_array_equal(module["reached"].to_numpy(),
                                  first_item_of_module.loc[module["module"]].to_numpy())
    assert page["item_id"].isna().all() and module["page"].isna().all()
    # at page level, stopping anywhere on the last page is completing
    assert page["drop"].sum() == page["n_cohort"].iloc[0] - page["reached"].iloc[-1]


def test_enrolled_learners_without_attempts_count_in_the_cohort(sim):
    extra = pd.DataFrame({"learner_id": ["never1", "never2"], "gender": ["man", "woman"]})
    learners = pd.concat([sim.learners, extra], ignore_index=True)
    f = funnel(sim.attempts, sim.items, learners=learners)
    assert f["n_cohort"].iloc[0] == len(learners)
    assert f.attrs["not_started"] == 2
    assert f["share"].iloc[0] == pytest.approx(800 / 802)


def test_completion_by_learner_and_configured_goal(sim):
    comp = learner_completion(sim.attempts, sim.items).set_index("learner_id")
    truth = sim.furthest == len(sim.items)
    np.testing.assert_array_equal(comp.loc[truth.index, "completed"].to_numpy(), truth.astype(int).to_numpy())
    mid = learner_completion(sim.attempts, sim.items, completion_item="I010").set_index("learner_id")
    np.testing.assert_array_equal(mid.loc[truth.index, "completed"].to_numpy(), (sim.furthest >= 10).astype(int))
    mod = learner_completion(sim.attempts, sim.items, completion_module="M1").set_index("learner_id")
    np.testing.assert_array_equal(mod.loc[truth.index, "completed"].to_numpy(), (sim.furthest >= 9).astype(int))


def test_completion_rate_against_target_by_group(sim):
    out = completion_rate(sim.attempts, sim.learners, sim.items, target=0.8, min_cell_size=10)
    overall = out[out["attribute"] == "all"].iloc[0]
    truth = (sim.furthest == len(sim.items)).mean()
    assert overall["estimate"] == pytest.approx(truth)
    assert overall["target"] == 0.8 and not overall["meets_target"] and overall["target_p"] < 1e-6
    woman = out[(out["attribute"] == "gender") & (out["group"] == "woman")].iloc[0]
    assert woman["reference_group"] == "man"
    assert woman["difference_ci_high"] < 0  # focal learners drop out at twice the hazard
    easy = completion_rate(sim.attempts, sim.learners, sim.items, target=0.05)
    assert easy.loc[easy["attribute"] == "all", "meets_target"].iloc[0]


def test_completion_groups_below_cell_size_are_suppressed(sim):
    learners = sim.learners.assign(region=np.where(np.arange(len(sim.learners)) < 3, "island", "mainland"))
    out = completion_rate(sim.attempts, learners, sim.items, attributes=["region"], min_cell_size=10)
    island = out[out["group"] == "island"].iloc[0]
    assert pd.isna(island["n"]) and pd.isna(island["estimate"]) and pd.isna(island["meets_target"])
    assert "minimum cell size 10" in island["suppressed_reason"]


def test_event_durations_fill_gaps_from_timestamps_and_cap():
    t0 = pd.Timestamp("2025-02-01 10:00")
    attempts = pd.DataFrame({
        "learner_id": ["a", "a", "a", "a", "b"],
        "timestamp": [t0, t0 + pd.Timedelta(seconds=40), t0 + pd.Timedelta(hours=3),
                      t0 + pd.Timedelta(hours=3, seconds=30), t0],
        "duration_s": [np.nan, np.nan, 20.0, np.nan, 5000.0],
    })
    out = event_durations(attempts, cap_s=600, session_gap_s=1800)
    # 40 s gap; then a 3 h gap is a new session (no time); given 20 s; last event unknown; 5000 s capped
    np.testing.assert_allclose(out["seconds"].to_numpy(), [40, np.nan, 20, np.nan, 600])
    assert out["capped"].tolist() == [False, False, False, False, True]
    sess = attempts.assign(session_id=["s1", "s1", "s1", "s1", "s9"])
    out2 = event_durations(sess, cap_s=600)  # one session by id: the 3 h gap counts, capped
    np.testing.assert_allclose(out2["seconds"].to_numpy(), [40, 600, 20, np.nan, 600])


def test_time_on_task_recovers_medians_and_flags_slow_item(sim):
    out = time_on_task(sim.attempts, sim.items, cap_s=600, over_factor=2.0)
    assert list(out.columns) == TIME_COLUMNS
    truth = sim.truth.set_index("item_id")["median_s"]
    ok = out[out["suppressed_reason"] == ""]
    med = ok.set_index("item_id")["median_s"]
    rel = (med / truth.loc[med.index]).to_numpy()
    assert np.all(np.abs(rel - 1) < 0.15), rel  # idle events (2-10 h) do not move the median
    assert ok.set_index("item_id").loc["I008", "over_planned"]
    assert ok.set_index("item_id").drop(index="I008")["over_planned"].eq(False).all()
    cover = (ok["ci_low"] <= truth.loc[ok["item_id"]].to_numpy()) & (truth.loc[ok["item_id"]].to_numpy() <= ok["ci_high"])
    assert cover.mean() >= 0.8
    assert ok["n_capped"].sum() > 0
    # without the cap, idle time inflates the means
    uncapped = time_on_task(sim.attempts, sim.items, cap_s=1e9)
    assert uncapped["mean_s"].mean() > 3 * ok["mean_s"].mean()


def test_time_on_task_from_timestamps_only(sim):
    no_dur = sim.attempts.drop(columns="duration_s")
    out = time_on_task(no_dur, sim.items).set_index("item_id")
    ref = time_on_task(sim.attempts, sim.items).set_index("item_id")
    both = out.index[(out["suppressed_reason"] == "") & (ref["suppressed_reason"] == "")]
    rel = out.loc[both, "median_s"] / ref.loc[both, "median_s"]
    assert np.all(np.abs(rel - 1) < 0.1)


def test_time_on_task_by_page_and_suppression(sim):
    page = time_on_task(sim.attempts, sim.items, level="page")
    assert page["item_id"].isna().all()
    assert (page["planned_duration_s"] == 180).all()
    assert page.set_index("page").loc["P3", "over_planned"]  # holds the slow item
    tiny = time_on_task(sim.attempts, sim.items, min_cell_size=10_000)
    assert tiny[["n", "median_s", "q25_s", "q75_s", "mean_s"]].isna().all().all()
    assert (tiny["suppressed_reason"] != "").all()


def test_bad_options_are_refused(sim):
    with pytest.raises(ConfigError, match=r"level='lesson'.*'item', 'page', 'module'"):
        funnel(sim.attempts, sim.items, level="lesson")
    with pytest.raises(ConfigError, match=r"completion_item='nope'.*items include"):
        learner_completion(sim.attempts, sim.items, completion_item="nope")
    with pytest.raises(ConfigError, match=r"completion_module='M9'.*modules: \['M1', 'M2', 'M3'\]"):
        learner_completion(sim.attempts, sim.items, completion_module="M9")
    with pytest.raises(ConfigError, match="cap_s=0"):
        time_on_task(sim.attempts, sim.items, cap_s=0)
    with pytest.raises(SchemaError, match=r"timestamp='when'"):
        funnel(sim.attempts, sim.items, timestamp="when")


def test_outputs_validate_against_their_table_schemas(sim, item_funnel):
    from research.schema import validate

    for name, frame in [
        ("funnel", item_funnel),
        ("funnel", funnel(sim.attempts, sim.items, level="module")),
        ("time_on_task", time_on_task(sim.attempts, sim.items)),
        ("time_on_task", time_on_task(sim.attempts, sim.items, level="page", min_cell_size=500)),
    ]:
        checked = validate(frame, f"outputs/{name}")
        assert len(checked.rejects) == 0, (name, checked.rejects["reason"].tolist()[:3])


@pytest.mark.slow
def test_cohort_simulator_dropout_page_and_slow_page_are_found():
    from research.simulate import simulate_cohort

    cohort = simulate_cohort(n_learners=1500, seed=0)
    pages = cohort.truth.pages
    dropout = pages.loc[pages["planted"] == "dropout_page", "page"].tolist()
    slow = pages.loc[pages["planted"] == "slow_page", "page"].tolist()
    f = funnel(cohort.attempts, cohort.items, level="page")
    worst = f.sort_values("rank_of_drop").iloc[0]
    # learners who give up on a page without answering show up as the drop of the page before
    assert worst["next_page"] in dropout or worst["page"] in dropout
    t = time_on_task(cohort.attempts, cohort.items, level="page")
    assert sorted(t.loc[t["over_planned"].fillna(False).astype(bool), "page"]) == sorted(slow)


def test_funnel_chart_names_the_biggest_drops(item_funnel):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from research.plots.equity import funnel_chart

    fig, alt = funnel_chart(item_funnel)
    assert fig.axes[0].get_title() == "Completion funnel" and fig.axes[0].get_ylabel()
    assert "I005" in alt and "I016" in alt and "800 learners" in alt
    plt.close("all")
