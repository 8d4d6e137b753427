"""Bayesian Knowledge Tracing (research.estimate.bkt): recovery, agreement with pyBKT, bad input.

pyBKT (Badrinath, Wang & Pardos 2021; installed with the test extra) is the reference
implementation. Its ``Model`` class does not import with scikit-learn >= 1.8 (its metric
registry calls ``log_loss`` on lists) and its EM stores a (1, 1) array in one cell, which
numpy >= 2.4 refuses; so we call its numeric core (``pyBKT.fit.EM_fit`` with starts from
``pyBKT.generate.random_model_uni``, exactly what ``Model._fit`` does) and unwrap that one
array. pyBKT's E-step also leaves out the answers of sequences of length 1 from the guess
and slip counts (``inner`` only counts emissions inside its backward loop), so the ds76
comparison uses learners with at least two opportunities on a KC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError, SchemaError
from research.estimate.bkt import BKT, fit_bkt, simulate_bkt

DS76_STEP = ("datashop_ds76_geometry_area", "ds76_student_step_partial_4students_48kcmodels.txt")
DS76_HMM = ("datashop_ds76_geometry_area", "reference_ds76_bkt_hmmscalable_KC_Original_yudelson2019.txt")

TRUTH = {
    "fractions": {"prior": 0.25, "learn": 0.15, "guess": 0.20, "slip": 0.10},
    "decimals": {"prior": 0.50, "learn": 0.30, "guess": 0.25, "slip": 0.05},
    "percent": {"prior": 0.10, "learn": 0.08, "guess": 0.15, "slip": 0.15},
}


def pybkt_fit(sequences, *, num_fits=5, seed=0, init=None) -> dict:
    """pyBKT's EM on a list of 0/1 sequences (one KC): the best of ``num_fits`` starts."""
    pytest.importorskip("pyBKT")
    from pyBKT.fit import EM_fit
    from pyBKT.generate import random_model_uni

    if not getattr(EM_fit.run, "_scalar_loglik", False):
        original = EM_fit.run

        def run(*args, **kwargs):
            result = original(*args, **kwargs)
            result["total_loglike"] = float(np.asarray(result["total_loglike"]).ravel()[0])
            return result

        run._scalar_loglik = True
        EM_fit.run = run
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    starts = np.concatenate([[1], 1 + np.cumsum(lengths)[:-1]]).astype(np.int64)
    obs = np.concatenate(sequences).astype(np.int32) + 1  # pyBKT: 1 = incorrect, 2 = correct
    data = {"data": obs[None, :], "starts": starts, "lengths": lengths, "resources": np.ones(len(obs), dtype=np.int64)}
    rand = np.random.RandomState(seed)
    best, best_ll = None, -np.inf
    for _ in range(num_fits):
        model = random_model_uni.random_model_uni(1, 1, rand=rand)
        if init is not None:
            model["As"][0] = [[1 - init["learn"], 0.0], [init["learn"], 1.0]]
            model["learns"], model["forgets"] = np.array([init["learn"]]), np.array([0.0])
            model["guesses"], model["slips"] = np.array([init["guess"]]), np.array([init["slip"]])
            model["prior"], model["pi_0"] = init["prior"], np.array([[1 - init["prior"]], [init["prior"]]])
        model, ll = EM_fit.EM_fit(model, data, parallel=False)
        if ll[-1][0] > best_ll:
            best, best_ll = model, ll[-1][0]
    return {"prior": float(best["pi_0"][1][0]), "learn": float(best["As"][0, 1, 0]),
            "guess": float(best["guesses"][0]), "slip": float(best["slips"][0]), "loglik": float(best_ll)}


def sequences(frame: pd.DataFrame, kc: str, learner="learner_id", kc_col="kc") -> list[np.ndarray]:
    one = frame[frame[kc_col] == kc].sort_values([learner, "opportunity"], kind="stable")
    return [g["success"].to_numpy() for _, g in one.groupby(learner, sort=True)]


@pytest.fixture(scope="session")
def simulated():
    return simulate_bkt(1500, np.arange(4, 16), TRUTH, seed=11)


@pytest.fixture(scope="session")
def fitted(simulated):
    return BKT(n_boot=20, seed=3).fit(simulated)


def test_recovers_simulated_parameters(fitted):
    t = fitted.params_.set_index("kc")
    assert (t["status"] == "fit").all() and not t["degenerate"].any()
    for kc, truth in TRUTH.items():
        for name, value in truth.items():
            est, se = t.loc[kc, name], t.loc[kc, name + "_se"]
            assert abs(est - value) < 0.03, (kc, name, est, value)
            # the truth lies within 3.5 bootstrap standard errors
            assert abs(est - value) < 3.5 * se + 0.005, (kc, name, est, value, se)
            assert t.loc[kc, name + "_ci_low"] <= est <= t.loc[kc, name + "_ci_high"]
    assert (t["iterations"] < 200).all() and t["converged"].all()
    summary = fitted.summary()
    assert set(summary["parameter"]) == {"prior", "learn", "forget", "guess", "slip"}
    assert {"estimate", "se", "ci_low", "ci_high", "n", "method"} <= set(summary.columns)


def test_agrees_with_pybkt_on_a_simulated_cohort():
    data = simulate_bkt(100, 8, {"k": {"prior": 0.3, "learn": 0.2, "guess": 0.2, "slip": 0.1}}, seed=5)
    ours = BKT().fit(data).params_.iloc[0]
    ref = pybkt_fit(sequences(data, "k"), num_fits=2, seed=1)
    for name in ("prior", "learn", "guess", "slip"):
        assert abs(ours[name] - ref[name]) < 0.02, (name, ours[name], ref[name])
    assert abs(ours["loglik"] - ref["loglik"]) < 1e-3 * abs(ref["loglik"])


def test_agrees_with_pybkt_on_ds76(real_data):
    from research.estimate.opportunities import read_datashop_student_step

    steps = read_datashop_student_step(real_data.joinpath(*DS76_STEP), kc_models=["Original"])
    # pyBKT drops the answer of length-1 sequences from its counts: compare on the others
    length = steps.groupby(["kc", "learner_id"])["step_row"].transform("size")
    steps = steps[length >= 2].reset_index(drop=True)
    model = BKT(n_starts=20, seed=0).fit(steps, kc_model="Original")
    table = model.params_.set_index("kc")
    fitted = table.index[table["status"] == "fit"]
    assert len(fitted) >= 10
    for kc in fitted:
        seqs = sequences(steps, kc)
        ours = table.loc[kc]
        # (1) pyBKT's best of 5 random starts reaches no higher likelihood than ours
        ref = pybkt_fit(seqs, num_fits=5, seed=1)
        assert ours["loglik"] >= ref["loglik"] - 1e-3 * abs(ref["loglik"]), (kc, ours["loglik"], ref["loglik"])
        # (2) our estimate is a fixed point of pyBKT's EM: started there it stays (parameters
        # within 0.02, log-likelihood within 0.1%)
        init = {n: float(ours[n]) for n in ("prior", "learn", "guess", "slip")}
        again = pybkt_fit(seqs, num_fits=1, init=init)
        for name, value in init.items():
            assert abs(again[name] - value) < 0.02, (kc, name, value, again[name])
        assert abs(again["loglik"] - ours["loglik"]) <= 1e-3 * abs(ours["loglik"]), (kc, again["loglik"], ours["loglik"])


def test_ds76_reference_file_parses_and_names_the_same_kcs(real_data):
    """The published hmm-scalable BKT of the full ds76 (59 learners) names the 15 KCs of
    KC model Original; our partial file (4 learners) holds the same KCs. The values are
    compared in benchmarks/bench_bkt.py (4 learners cannot reproduce a 59-learner fit)."""
    from research.estimate.opportunities import read_datashop_student_step

    text = real_data.joinpath(*DS76_HMM).read_text().splitlines()
    ref_kcs = [line.split("\t")[1] for line in text if line.split("\t")[0].isdigit()]
    steps = read_datashop_student_step(real_data.joinpath(*DS76_STEP), kc_models=["Original"])
    assert sorted(ref_kcs) == sorted(steps["kc"].astype(str).unique())


def test_forgetting_is_recovered():
    truth = {"k": {"prior": 0.3, "learn": 0.25, "forget": 0.08, "guess": 0.15, "slip": 0.1}}
    data = simulate_bkt(2000, 15, truth, seed=2)
    with_f = BKT(forgetting=True, seed=1).fit(data).params_.iloc[0]
    without = BKT(seed=1).fit(data).params_.iloc[0]
    assert abs(with_f["forget"] - 0.08) < 0.03
    assert abs(with_f["learn"] - 0.25) < 0.05
    assert without["forget"] == 0
    assert with_f["loglik"] > without["loglik"] + 10
    assert with_f["method"] == "bkt_em+forget"


def test_kt_idem_recovers_item_guesses():
    truth = {"k": {"prior": 0.2, "learn": 0.15, "guess": 0.2, "slip": 0.1, "item_guess": [0.05, 0.45]}}
    data = simulate_bkt(2000, 10, truth, seed=4)
    idem = BKT(item_guess_slip=True, seed=1).fit(data)
    items = idem.item_params_.set_index("item_id")
    assert abs(items.loc["k-i0", "guess"] - 0.05) < 0.04
    assert abs(items.loc["k-i1", "guess"] - 0.45) < 0.05
    plain = BKT(seed=1).fit(data)
    assert idem.params_["loglik"].iloc[0] > plain.params_["loglik"].iloc[0] + 20


def test_bad_kcs_are_named_and_skipped_never_raised():
    good = simulate_bkt(50, 6, {"ok": TRUTH["fractions"]}, seed=1)
    one_learner = good[good["learner_id"] == "s000001"].assign(kc="solo")
    one_opp = good[good["opportunity"] == 1].assign(kc="once")
    all_right = good[good["kc"] == "ok"].assign(kc="easy", success=1)
    unordered = good.assign(kc="jumbled").copy()
    # opportunity 2 of one learner happens before opportunity 1
    first = (unordered["learner_id"] == "s000002") & (unordered["opportunity"] == 1)
    unordered.loc[first, "step_time"] = unordered["step_time"].max() + pd.Timedelta(days=1)
    frame = pd.concat([good, one_learner, one_opp, all_right, unordered], ignore_index=True)
    table = BKT().fit(frame).params_.set_index("kc")
    assert table.loc["ok", "status"] == "fit"
    expected = {"solo": "only one learner", "once": "more than one opportunity", "easy": "every first attempt",
                "jumbled": "do not follow the timestamps"}
    for kc, words in expected.items():
        assert table.loc[kc, "status"] == "skipped"
        assert words in table.loc[kc, "reason"]
        assert np.isnan(table.loc[kc, "learn"])


def test_uses_opportunity_order_not_file_order(simulated):
    small = simulated[simulated["kc"] == "decimals"].head(3000)
    a = BKT(seed=1).fit(small).params_
    shuffled = small.sample(frac=1.0, random_state=7)
    b = BKT(seed=1).fit(shuffled).params_
    pd.testing.assert_frame_equal(a, b)


def test_all_kcs_at_once_equal_each_kc_alone(simulated):
    small = simulated[simulated["learner_id"] < "s000300"]
    together = BKT(seed=1, n_starts=3, screen_iter=0).fit(small).params_.set_index("kc")
    for kc in TRUTH:
        alone = BKT(seed=1, n_starts=3, screen_iter=0).fit(small[small["kc"] == kc]).params_.iloc[0]
        assert abs(alone["loglik"] - together.loc[kc, "loglik"]) < 1e-3
        for name in ("prior", "learn", "guess", "slip"):
            assert abs(alone[name] - together.loc[kc, name]) < 2e-3


def test_trace_likelihood_matches_the_fit(fitted):
    total = fitted.params_["loglik"].sum()
    assert fitted.loglik() == pytest.approx(total, rel=1e-6)
    tr = fitted.trace()
    assert tr["p_known_after"].between(0, 1).all() and tr["p_correct"].between(0, 1).all()
    # p(known) rises after a correct answer at the same prior
    first = tr[tr["opportunity"] == 1]
    by = first.groupby(["kc", "success"])["p_known_after"].mean().unstack()
    assert (by[1] > by[0]).all()


def test_multi_kc_steps_count_for_each_kc():
    from research.estimate.opportunities import student_steps_from_frame

    raw = pd.DataFrame({
        "learner": ["a"] * 3 + ["b"] * 3,
        "item": ["p1", "p2", "p3"] * 2,
        "step": ["s"] * 6,
        "time": pd.date_range("2026-01-01", periods=6, freq="h"),
        "first": ["incorrect", "correct", "correct", "correct", "incorrect", "correct"],
        "kcs": ["x~~y", "x", "y~~x", "y", "x~~y", "x"],
    })
    steps = student_steps_from_frame(raw, kc_columns={"M": "kcs"}, learner="learner", item="item", step="step",
                                     first_attempt="first", time="time")
    table = BKT().fit(steps, kc_model="M").params_.set_index("kc")
    assert table.loc["x", "n_obs"] == 5 and table.loc["y", "n_obs"] == 4


def test_clear_errors_for_wrong_input(simulated):
    with pytest.raises(SchemaError, match="lacks column"):
        BKT().fit(simulated.drop(columns="success"))
    two = pd.concat([simulated.head(50).assign(kc_model="A"), simulated.head(50).assign(kc_model="B")])
    with pytest.raises(ConfigError, match="several KC models"):
        BKT().fit(two)
    with pytest.raises(ConfigError, match="valid"):
        BKT().fit(two, kc_model="C")
    with pytest.raises(ConfigError, match="n_starts"):
        BKT(n_starts=0)
    assert len(fit_bkt(two, kc_model="A")) >= 1


@pytest.mark.parametrize("forgetting", [False, True])
def test_compiled_and_numpy_kernels_agree(forgetting):
    pytest.importorskip("numba")
    truth = {k: {**v, "forget": 0.03} for k, v in TRUTH.items()}
    data = simulate_bkt(200, np.arange(1, 12), truth, seed=9)
    a = BKT(engine="numpy", forgetting=forgetting, n_boot=3).fit(data).params_
    b = BKT(engine="numba", forgetting=forgetting, n_boot=3).fit(data).params_
    cols = ["prior", "learn", "forget", "guess", "slip", "loglik", "learn_se"]
    np.testing.assert_allclose(a[cols].to_numpy(float), b[cols].to_numpy(float), atol=1e-9)
    assert a["iterations"].tolist() == b["iterations"].tolist()


def test_accelerated_em_reaches_plain_em_s_fixed_point_in_fewer_steps():
    """SQUAREM (the default) and plain EM run to a tight tolerance find the same optimum."""
    data = simulate_bkt(300, np.arange(3, 14), TRUTH, seed=21)
    fast = BKT(n_starts=2, seed=4).fit(data).params_.set_index("kc")
    slow = BKT(n_starts=2, seed=4, accelerate=False, tol=1e-9, max_iter=5000).fit(data).params_.set_index("kc")
    for name in ("prior", "learn", "guess", "slip"):
        np.testing.assert_allclose(fast[name], slow[name], atol=5e-3)
    np.testing.assert_allclose(fast["loglik"], slow["loglik"], atol=1e-2)
    assert fast["converged"].all() and (fast["iterations"] < slow["iterations"]).all()


def test_ci_level_sets_the_bootstrap_intervals():
    """The same replicates (same seed) give a narrower 90% interval than the 95% one; a level outside (0, 1) is refused."""
    data = simulate_bkt(150, np.arange(3, 10), TRUTH, seed=5)
    wide = BKT(n_starts=2, n_boot=12, seed=2).fit(data).params_.set_index("kc")
    narrow = BKT(n_starts=2, n_boot=12, seed=2, ci_level=0.9).fit(data).params_.set_index("kc")
    for name in ("prior", "learn", "guess", "slip"):
        assert (narrow[name + "_ci_low"] >= wide[name + "_ci_low"]).all()
        assert (narrow[name + "_ci_high"] <= wide[name + "_ci_high"]).all()
        assert ((narrow[name + "_ci_high"] - narrow[name + "_ci_low"])
                < (wide[name + "_ci_high"] - wide[name + "_ci_low"])).any()
        np.testing.assert_allclose(narrow[name + "_se"], wide[name + "_se"])
    with pytest.raises(ConfigError, match="ci_level"):
        BKT(ci_level=95)


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_a_weighted_sequence_counts_as_that_many_copies(engine):
    """The bootstrap's weights: a start whose sequences carry counts has the E-step sums of the data set
    that repeats each sequence that many times."""
    from research.estimate import bkt as B

    if engine == "numba":
        pytest.importorskip("numba")
    data = simulate_bkt(40, np.arange(2, 9), TRUTH, seed=8)
    model = BKT(n_starts=1, engine=engine).fit(data)
    lay = model._build(model.data_)[0]
    d = model.data_
    _, seq, starts, _ = B._sequences(d, pd.Index(model.kcs_))
    counts = np.random.default_rng(1).integers(0, 4, size=(2, len(starts))).astype(float)
    p = B._Params(*(np.repeat(getattr(model.params_arr_, n), 2, axis=0) for n in B.PARAMETERS))
    e_step = B._e_step_compiled if engine == "numba" else B._e_step
    ll, st = e_step(B._weighted(lay, counts), p, False)
    for j in range(2):  # the same start on the data set with the repeated sequences
        copies = [d[seq == q].assign(learner=f"{q}-{c}") for q in range(len(starts)) for c in range(int(counts[j, q]))]
        lay_j = model._build(pd.concat(copies, ignore_index=True))[0]
        ll_j, st_j = e_step(lay_j, p.take(np.array([j])), False)
        np.testing.assert_allclose(ll[j], ll_j[0], rtol=1e-10)
        for name in ("init", "x01", "known_hn", "known", "known_wrong", "n_seq", "unknown", "unknown_right"):
            np.testing.assert_allclose(st[name][j], st_j[name][0], rtol=1e-10, atol=1e-9, err_msg=name)
