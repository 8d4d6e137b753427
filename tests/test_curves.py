"""Student steps, DataShop opportunities, learning curves and curve categories.

Truth comes from (a) the exact AFM simulator in research.simulate.afm, (b) hand-made
frames whose numbers can be checked by hand, and (c) DataShop's own Opportunity columns
in the real ds96 and ds76 student-step exports (../shared/data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError, DataError, SchemaError
from research.estimate.afm import AFM
from research.estimate.curves import CATEGORIES, OVERALL, categorize_curves, kc_table, learning_curves
from research.estimate.opportunities import (
    count_opportunities,
    read_datashop_student_step,
    segment_sum,
    student_steps,
    student_steps_from_frame,
)
from research.simulate.afm import simulate_afm

DS96 = ("datashop_ds96_student_step_and_tx", "ds96_student_step_export.txt")
DS96_TX = ("datashop_ds96_student_step_and_tx", "ds96_tx_export_example.txt")
DS76 = ("datashop_ds76_geometry_area", "ds76_student_step_partial_4students_48kcmodels.txt")


# ------------------------------------------------------------------ opportunities
def _tx(rows):
    """Hand-made canonical attempts + attempt_kcs from (id, learner, item, attempt, outcome, minute, kcs)."""
    att = pd.DataFrame(
        [
            {"attempt_id": i, "learner_id": l, "item_id": it, "step_id": it, "attempt": a, "outcome": o,
             "timestamp": pd.Timestamp("2025-01-01 10:00") + pd.Timedelta(minutes=m), "duration_s": 10.0}
            for i, l, it, a, o, m, _ in rows
        ]
    )
    kcs = pd.DataFrame([{"attempt_id": i, "kc_model": "M", "kc": k} for i, *_, ks in rows for k in ks])
    return att, kcs


def test_datashop_step_kc_rule_by_hand():
    att, kcs = _tx(
        [
            # step s1: incorrect tagged A+B, then correct tagged A -> KCs of the correct transaction: A
            ("t1", "u", "s1", 1, "incorrect", 0, ["A", "B"]),
            ("t2", "u", "s1", 2, "correct", 1, ["A"]),
            # step s2: never correct; incorrect tagged A, hint tagged B -> union A, B
            ("t3", "u", "s2", 1, "incorrect", 2, ["A"]),
            ("t4", "u", "s2", 2, "hint", 3, ["B"]),
            # step s3: correct at first try, tagged A
            ("t5", "u", "s3", 1, "correct", 4, ["A"]),
        ]
    )
    s = student_steps(att, kcs)
    got = {(r.step_id, r.kc): (r.opportunity, r.success, r.first_attempt, r.assistance) for r in s.itertuples()}
    assert got == {
        ("s1", "A"): (1, 0, "incorrect", 1),
        ("s2", "A"): (2, 0, "incorrect", 2),
        ("s2", "B"): (1, 0, "incorrect", 2),
        ("s3", "A"): (3, 1, "correct", 0),
    }
    assert s.loc[s["step_id"] == "s1", "duration_s"].iloc[0] == 20.0


def test_segment_sum_is_bit_for_bit_series_sum():
    """The vectorised roll-up sums durations exactly as ``Series.sum(min_count=1)`` per group."""
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 40, 400)
    values = rng.random(lengths.sum()) * 1e3
    values[rng.random(len(values)) < 0.1] *= 1e-9
    values[rng.random(len(values)) < 0.2] = np.nan
    values[: lengths[0]] = np.nan  # a segment with no known value
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    expected = [pd.Series(values[a:a + n]).sum(min_count=1) for a, n in zip(starts, lengths)]
    np.testing.assert_array_equal(segment_sum(values, starts), expected)


def test_student_steps_durations_ties_and_long_steps():
    """Steps of many attempts, unknown durations and tied times roll up like a pandas groupby."""
    rng = np.random.default_rng(8)
    n = 600
    att = pd.DataFrame({
        "attempt_id": [f"a{i}" for i in range(n)],
        "learner_id": rng.choice(["u1", "u2", "u3"], n),
        "item_id": rng.choice(["i1", "i2"], n),
        "step_id": rng.choice(["s1", "s2", "s3"], n),
        "attempt": rng.integers(1, 5, n),
        "outcome": rng.choice(["correct", "incorrect", "hint"], n),
        "timestamp": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 50, n), unit="min"),
        "duration_s": np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 100),
    })
    att.loc[att["learner_id"] == "u3", "duration_s"] = np.nan
    kcs = pd.DataFrame({"attempt_id": att["attempt_id"], "kc_model": "M", "kc": "K"})
    s = student_steps(att, kcs)
    keys = ["learner_id", "item_id", "step_id"]
    # summed in the step's transaction order (attempt number, then time, then input order)
    ref = att.sort_values([*keys, "attempt", "timestamp"], kind="stable").groupby(keys).agg(
        duration_s=("duration_s", lambda d: d.sum(min_count=1)), corrects=("outcome", lambda o: (o == "correct").sum()),
        n=("outcome", "size"),
    )
    got = s.set_index(keys)[["duration_s", "corrects", "incorrects", "hints"]].loc[ref.index]
    np.testing.assert_array_equal(got["duration_s"].to_numpy(), ref["duration_s"].to_numpy())
    assert (got["corrects"] == ref["corrects"]).all()
    assert ((got["corrects"] + got["incorrects"] + got["hints"]) == ref["n"]).all()
    assert got.loc["u3", "duration_s"].isna().all()
    assert s.groupby("learner_id")["opportunity"].apply(lambda o: sorted(o) == list(range(1, len(o) + 1))).all()


def test_simulated_attempts_roll_up_to_the_true_steps_and_opportunities():
    sim = simulate_afm(60, 4, 6, multi_kc_share=0.3, seed=11)
    attempts, attempt_kcs = sim.to_attempts(error_kc_noise=0.5)
    assert (attempt_kcs["kc"] == "noise").sum() > 20  # the wrong labels are there to be ignored
    s = student_steps(attempts, attempt_kcs)
    keys = ["learner_id", "item_id", "problem_view", "kc"]
    m = sim.steps.merge(s, on=keys, how="outer", indicator=True, suffixes=("_true", ""))
    assert (m["_merge"] == "both").all()
    assert (m["opportunity_true"] == m["opportunity"]).all()
    assert (m["success_true"] == m["success"]).all()
    assert (m["source_opportunity"] == m["opportunity"]).all()


def test_roll_up_is_the_same_when_its_keys_are_too_wide_to_pack(monkeypatch):
    """Sort keys are packed into one int64 where they fit; the np.lexsort fallback orders alike.

    Also a text-order check: unicode names, a blank KC and a KC row of an unknown attempt.
    """
    from research.estimate import opportunities

    rng = np.random.default_rng(15)
    n = 400
    att = pd.DataFrame({
        "attempt_id": [f"a{i}" for i in range(n)],
        "learner_id": rng.choice(["Ö", "u", "ä", "U2"], n),
        "item_id": rng.choice(["i1", "i2", "Ü"], n),
        "step_id": rng.choice(["s1", "s2"], n),
        "problem_view": rng.integers(1, 3, n),
        "attempt": rng.integers(1, 4, n),
        "outcome": rng.choice(["correct", "incorrect", "hint"], n),
        "timestamp": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 30, n), unit="min"),
    })
    kcs = pd.DataFrame({"attempt_id": [*att["attempt_id"], *att["attempt_id"][:50], "nope"],
                        "kc_model": ["M"] * n + ["N"] * 50 + ["M"],
                        "kc": [*rng.choice(["K1", "K2", "ß", " "], n), *rng.choice(["A", "B"], 50), "K1"],
                        "opportunity": rng.integers(1, 9, n + 51)})
    packed = student_steps(att, kcs)
    monkeypatch.setattr(opportunities, "_packed", lambda keys, sizes: None)
    pd.testing.assert_frame_equal(student_steps(att, kcs), packed)
    assert not (packed["kc"].str.strip() == "").any()
    order = packed.sort_values(["kc_model", "learner_id", "step_time", "step_row", "kc"], kind="stable")
    assert (order.index == packed.index).all()  # rows in text order, as sort_values puts them
    # the opportunity counts a learner's steps with the KC in time order
    ref = packed.groupby(["learner_id", "kc_model", "kc"]).cumcount() + 1
    assert (ref == packed["opportunity"]).all()


def test_student_steps_errors():
    att, kcs = _tx([("t1", "u", "s1", 1, "correct", 0, ["A"])])
    with pytest.raises(SchemaError, match="outcome"):
        student_steps(att.drop(columns="outcome"), kcs)
    bad = att.assign(outcome="CORRECT")
    with pytest.raises(DataError, match=r"\['CORRECT'\].*valid outcomes"):
        student_steps(bad, kcs)
    with pytest.raises(DataError, match="empty"):
        student_steps(att.iloc[0:0], kcs)
    with pytest.raises(SchemaError, match="kc_columns is empty"):
        student_steps_from_frame(att, kc_columns={})


def test_student_steps_from_frame_counts_in_time_order():
    f = pd.DataFrame({
        "learner_id": ["a", "a", "a", "b"],
        "item_id": ["i1", "i2", "i3", "i1"],
        "step_id": ["x", "x", "x", "x"],
        "success": [0, 1, 1, 1],
        "step_time": pd.to_datetime(["2025-01-01 10:05", "2025-01-01 10:00", "2025-01-01 10:10", "2025-01-01 09:00"]),
        "kcs": ["A~~B", "A", "", "B"],
    })
    s = student_steps_from_frame(f, kc_columns={"M": "kcs"}, success="success")
    got = {(r.learner_id, r.item_id, r.kc): r.opportunity for r in s.itertuples()}
    assert got == {("a", "i2", "A"): 1, ("a", "i1", "A"): 2, ("a", "i1", "B"): 1, ("b", "i1", "B"): 1}
    with pytest.raises(DataError, match="must hold 0 or 1"):
        student_steps_from_frame(f.assign(success=[0, 2, 1, 1]), kc_columns={"M": "kcs"}, success="success")


@pytest.mark.realdata
@pytest.mark.parametrize("parts", [DS96, DS76], ids=["ds96", "ds76"])
def test_opportunities_equal_datashop_on_real_student_step_exports(real_data, parts):
    s = read_datashop_student_step(real_data.joinpath(*parts))
    assert s["source_opportunity"].notna().all()
    mismatch = s[s["opportunity"] != s["source_opportunity"]]
    assert mismatch.empty, mismatch.head()
    assert s["kc_model"].nunique() == (3 if parts is DS96 else 48)


@pytest.mark.realdata
def test_ds96_transactions_roll_up_to_datashop_student_steps(real_data):
    """The DataShop KC rule and roll-up on real transactions, checked against DataShop's own step export.

    The two ds96 files are separate exports with different anonymous ids; learners are
    matched by their step times. One learner's export holds transactions that the step
    export lacks (later attempts at three never-solved steps), which shifts that learner's
    counts; the other six must agree exactly.
    """
    from research.ingest import datashop_tx
    from research.pseudonym import Pseudonymiser

    res = datashop_tx.read(real_data.joinpath(*DS96_TX), cohort="ds96", pseudonymiser=Pseudonymiser(key=b"k"))
    s = student_steps(res.tables["attempts"], res.tables["attempt_kcs"]).rename(columns={"item_id": "item"})
    e = read_datashop_student_step(real_data.joinpath(*DS96))
    e["item"] = e["item_id"].str.split(" / ").str[-1]
    steps_key = ["item", "step_id", "problem_view", "step_time"]
    pairs = s.drop_duplicates("step_row").merge(e.drop_duplicates("step_row"), on=steps_key)
    mapping = pairs.groupby("learner_id_x")["learner_id_y"].agg(lambda v: v.mode().iloc[0])
    s["learner_id"] = s["learner_id"].map(mapping)
    m = s.merge(e, on=["learner_id", "item", "step_id", "problem_view", "kc_model", "kc"], how="outer", indicator=True)
    assert (m["_merge"] == "both").all()  # same KC per step for all 3 models, multi-skill included
    assert len(m) == 4755
    assert (m["success_x"] == m["success_y"]).all()
    agree = (m["opportunity_x"] == m["opportunity_y"]).groupby(m["learner_id"]).mean()
    assert (agree == 1.0).sum() == 6, agree


# ---------------------------------------------------------------- learning curves
def _frame(rows):
    """rows: (learner, kc, opportunity, success, assistance, duration)."""
    df = pd.DataFrame(rows, columns=["learner_id", "kc", "opportunity", "success", "assistance", "duration_s"])
    df["kc_model"] = "M"
    df["step_row"] = np.arange(len(df))
    df["item_id"] = df["kc"] + "_i"
    return df


def test_learning_curve_points_and_clustered_se_by_hand():
    rows = [(f"l{i}", "A", 1, int(i < 3), 1 - int(i < 3), 10.0 + i) for i in range(5)]  # error 2/5
    rows += [(f"l{i}", "A", 2, int(i < 4), 0, 5.0) for i in range(4)]  # error 0/4... l3 correct
    rows += [(f"l{i}", "B", 1, 0, 2, 7.0) for i in range(2)]  # B: 2 learners, both wrong
    c = learning_curves(_frame(rows), min_learners=1)
    a1 = c[(c.kc == "A") & (c.opportunity == 1)].iloc[0]
    assert a1.estimate == pytest.approx(0.4)
    assert a1.se == pytest.approx(np.sqrt(0.4 * 0.6 / 4))  # p(1-p)/(n-1) for one step per learner
    assert a1.n == 5 and a1.n_obs == 5 and a1.share_of_start == 1.0
    a2 = c[(c.kc == "A") & (c.opportunity == 2)].iloc[0]
    assert a2.estimate == 0 and a2.n == 4 and a2.share_of_start == pytest.approx(0.8)
    o1 = c[(c.kc == OVERALL) & (c.opportunity == 1)].iloc[0]
    # overall: l0, l1 have 2 steps (A ok, B wrong); l2 one correct step; l3, l4 one wrong step each
    assert o1.estimate == pytest.approx(4 / 7) and o1.n == 5 and o1.n_obs == 7
    s = np.array([1, 1, 0, 1, 1.0])
    m = np.array([2, 2, 1, 1, 1.0])
    assert o1.se == pytest.approx(np.sqrt(5 / 4 * np.sum((s - 4 / 7 * m) ** 2)) / 7)
    # cut: B has 2 learners
    c10 = learning_curves(_frame(rows), min_learners=3)
    assert "B" not in set(c10.kc)
    dur = learning_curves(_frame(rows), measure="step_duration", min_learners=1, overall=False)
    assert dur.loc[(dur.kc == "A") & (dur.opportunity == 1), "estimate"].iloc[0] == pytest.approx(12.0)
    ass = learning_curves(_frame(rows), measure="assistance_score", min_learners=1, overall=False)
    assert ass.loc[(ass.kc == "B"), "estimate"].iloc[0] == 2.0


def test_learning_curve_errors():
    f = _frame([("l1", "A", 1, 1, 0, 1.0)])
    with pytest.raises(ConfigError, match="measure='speed'.*valid measures"):
        learning_curves(f, measure="speed")
    with pytest.raises(ConfigError, match="'Nope'.*valid KC models are \\['M'\\]"):
        learning_curves(f, kc_model="Nope")
    with pytest.raises(SchemaError, match="predicted='p_err'"):
        learning_curves(f, predicted="p_err")


def test_mastery_learning_shrinks_n_along_the_curve():
    sim = simulate_afm(300, 3, 12, mastery_streak=3, no_learning_share=0, seed=5)
    c = learning_curves(sim.steps, min_learners=10)
    per_kc = c[c.kc != OVERALL]
    first = per_kc.groupby("kc")["n"].first()
    last = per_kc.groupby("kc")["n"].last()
    assert (first == 300).all() and (last < first).all()
    assert per_kc["share_of_start"].min() < 0.5
    assert per_kc["n"].min() >= 10


# ------------------------------------------------------------------ categories
def _curve_steps(rates_by_kc, n_learners=400, seed=0):
    """Steps whose error rate per KC and opportunity is exactly the given rate."""
    rows = []
    for kc, rates in rates_by_kc.items():
        for o, r in enumerate(rates, start=1):
            n_err = int(round(r * n_learners))
            succ = np.r_[np.zeros(n_err, int), np.ones(n_learners - n_err, int)]
            np.random.default_rng(seed + o).shuffle(succ)
            rows.append(pd.DataFrame({"learner_id": [f"l{i}" for i in range(n_learners)], "kc": kc,
                                      "opportunity": o, "success": succ}))
    df = pd.concat(rows, ignore_index=True)
    df["kc_model"] = "M"
    df["step_row"] = np.arange(len(df))
    return df


def test_categories_follow_datashop_rules_in_code_order():
    rates = {
        "short": [0.5, 0.4],                        # 2 points < opportunity threshold 3
        "lowflat": [0.15, 0.1, 0.08, 0.05],         # all below 20%, even with a clear slope
        "dips": [0.5, 0.35, 0.15, 0.3],             # dips below 20% once: not low and flat
        "flat": [0.3, 0.3, 0.3, 0.3],               # slope 0
        "high": [0.7, 0.6, 0.55, 0.5],              # learns, but last point >= 40%
        "good": [0.5, 0.35, 0.25, 0.15],
    }
    steps = _curve_steps(rates)
    kcs = pd.DataFrame({"kc_model": "M", "kc": list(rates),
                        "slope": [0.3, 0.3, 0.25, 0.0, 0.2, 0.3], "slope_se": [0.05, 0.04, 0.04, 0.03, 0.03, 0.04]})
    cat = categorize_curves(steps, kcs, n_boot=300).set_index("kc")
    assert cat.loc["short", "category"] == "too_little_data"
    assert cat.loc["lowflat", "category"] == "low_and_flat"
    assert cat.loc["dips", "category"] == "good"
    assert cat.loc["flat", "category"] == "no_learning"
    assert cat.loc["high", "category"] == "still_high"
    assert cat.loc["good", "category"] == "good"
    assert set(cat["category"]) <= set(CATEGORIES)
    assert (cat["category_confidence"] == "confident").all(), cat
    assert cat.loc["lowflat", "last_error_rate"] == pytest.approx(0.05)
    assert cat.loc["high", "n_points"] == 4 and cat.loc["short", "n_points"] == 2


@pytest.mark.parametrize("n_boot", [0, 50])
def test_a_cohort_smaller_than_the_student_threshold_has_too_little_data_not_an_error(n_boot):
    """No KC has a point with enough learners (8 against 10): every KC is too_little_data, with no
    last rate, and nothing fails; a KC with points beside KCs without keeps its own category."""
    rates = {"short": [0.5, 0.4], "good": [0.5, 0.35, 0.25, 0.15]}
    kcs = pd.DataFrame({"kc_model": "M", "kc": list(rates), "slope": [0.3, 0.3], "slope_se": [0.05, 0.04]})
    cat = categorize_curves(_curve_steps(rates, n_learners=8), kcs, n_boot=n_boot).set_index("kc")
    assert (cat["category"] == "too_little_data").all() and cat["last_error_rate"].isna().all()
    assert (cat["n_points"] == 0).all()
    mixed = pd.concat([_curve_steps({"good": rates["good"]}), _curve_steps({"sparse": [0.5, 0.4, 0.3]}, n_learners=8)
                       .assign(learner_id=lambda d: "s" + d["learner_id"])], ignore_index=True)
    kcs2 = pd.DataFrame({"kc_model": "M", "kc": ["good", "sparse"], "slope": [0.3, 0.3], "slope_se": [0.04, 0.04]})
    cat2 = categorize_curves(mixed, kcs2, n_boot=n_boot).set_index("kc")
    assert cat2.loc["good", "category"] == "good" and cat2.loc["sparse", "category"] == "too_little_data"


def test_category_confidence_separates_clear_from_noisy():
    # last point right at the 40% threshold with few learners: could go either way
    rates = {"edge": [0.6, 0.5, 0.45, 0.4], "clear": [0.8, 0.75, 0.7, 0.7]}
    steps = _curve_steps(rates, n_learners=30)
    kcs = pd.DataFrame({"kc_model": "M", "kc": ["edge", "clear"], "slope": [0.2, 0.2], "slope_se": [0.02, 0.02]})
    cat = categorize_curves(steps, kcs, n_boot=400, seed=1).set_index("kc")
    assert cat.loc["clear", "category"] == "still_high" and cat.loc["clear", "category_confidence"] == "confident"
    assert cat.loc["edge", "category"] == "still_high"
    assert cat.loc["edge", "category_confidence"] == "uncertain"
    assert 0.3 < cat.loc["edge", "category_probability"] < 0.8
    assert cat.loc["edge", "category_alternative"] == "good"


def test_slope_rules_differ_for_a_small_positive_slope():
    steps = _curve_steps({"k": [0.5, 0.5, 0.48, 0.47]})
    kcs = pd.DataFrame({"kc_model": "M", "kc": ["k"], "slope": [0.01], "slope_se": [0.02]})
    assert categorize_curves(steps, kcs, n_boot=0)["category"].iloc[0] == "no_learning"
    assert categorize_curves(steps, kcs, n_boot=0, slope_rule="datashop")["category"].iloc[0] == "still_high"
    with pytest.raises(ConfigError, match="slope_rule='loose'.*valid rules"):
        categorize_curves(steps, kcs, slope_rule="loose")
    with pytest.raises(ConfigError, match="low_error"):
        categorize_curves(steps, kcs, low_error=0.5, high_error=0.4)
    with pytest.raises(SchemaError, match="slope_se"):
        categorize_curves(steps, kcs.drop(columns="slope_se"))


@pytest.mark.slow
def test_zero_slope_kcs_are_found_as_no_learning_at_2000_learners():
    """Three simulated cohorts of 2,000 learners, 12 KCs of which 3 have no learning.

    "No learning" is a one-sided 5% test of the slope, so a truly flat KC is missed
    about 1 time in 20: of the 9 flat KCs at least 8 must be found, and no KC that
    learns (slopes 0.1 to 0.3) may be called flat.
    """
    found, flat, false_alarms = 0, 0, 0
    for seed in (21, 22, 23):
        sim = simulate_afm(2000, 12, 10, no_learning_share=0.25, beta_mean=0.0, beta_sd=0.5, gamma_low=0.1,
                           gamma_high=0.3, seed=seed)
        model = AFM().fit(sim.steps)
        table = kc_table({"Simulated": model}, sim.steps, n_boot=200).merge(sim.kcs, on=["kc_model", "kc"])
        zero = table[table["no_learning"]]
        flat += len(zero)
        found += int((zero["category"] == "no_learning").sum())
        false_alarms += int((table.loc[~table["no_learning"], "category"] == "no_learning").sum())
        assert {"intercept", "slope", "category", "category_confidence", "last_error_rate"} <= set(table.columns)
    assert flat == 9
    assert found >= 8
    assert false_alarms == 0


def test_a_learning_kc_is_never_confidently_no_learning():
    """Fixed item order can hold a learning KC's slope at the zero bound; that is not evidence of no learning."""
    from research.estimate import afm, opportunities
    from research.estimate.curves import kc_table
    from research.simulate import simulate_cohort

    rows = []
    for seed in (0, 1):
        sim = simulate_cohort(n_learners=400, seed=seed)
        steps = opportunities.student_steps(sim.attempts, sim.attempt_kcs)
        models = afm.fit_kc_models(steps, kc_models=["Fine"], cv=False)
        k = kc_table(models, steps, n_boot=200).merge(sim.truth.kcs[["kc", "gamma"]], on="kc")
        rows.append(k)
    k = pd.concat(rows, ignore_index=True)
    learning = k["gamma"] >= 0.1
    nl = k["category"] == "no_learning"
    # some learning KCs do come out "no learning" (their slope sits at the bound) ...
    assert (learning & nl & k["slope_at_bound"]).any()
    # ... but never with confidence
    assert not (learning & nl & (k["category_confidence"] == "confident")).any()
    assert (k.loc[learning & nl, "category_probability"] < 0.8).all()
