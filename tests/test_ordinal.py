"""Ordinal item models (research.estimate.ordinal): agreement with R and recovery of known truth.

Reference values: tests/reference/surveys/make_reference.R (eRm::PCM by CML; lavaan ordinal CFA,
WLSMV) on the Learning to Learn Grade-6 subtest scores, read in place from ../shared/data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from research.errors import ConfigError, DataError
from research.estimate import ordinal

REF = Path(__file__).parent / "reference" / "surveys"
LTL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "learning_to_learn_grade6_grade9_prepost" / "LearningToLearn.csv"


@pytest.fixture(scope="module")
def ltl6():
    if not LTL.is_file():
        if os.environ.get("RESEARCH_REQUIRE_REAL_DATA"):
            pytest.fail(f"real data missing: {LTL}")
        pytest.skip(f"real data not found at {LTL}")
    d = pd.read_csv(LTL)
    items = [f"score_6_subtest{i}" for i in range(1, 8)]
    return (d[items].reset_index().melt(id_vars="index", var_name="item_id", value_name="category")
            .rename(columns={"index": "learner_id"}))


def test_pcm_cml_agrees_with_erm(ltl6):
    th = ordinal.pcm_cml(ltl6)
    ref = pd.read_csv(REF / "ltl6_erm_pcm_thresholds.csv")
    m = th.merge(ref, on=["item_id", "step"])
    assert len(m) == len(ref) == 41
    assert np.abs(m["estimate"] - (m["threshold"] - m["threshold"].mean())).max() < 0.05
    assert np.abs(m["se_x"] - m["se_y"]).max() < 0.05


def test_pcm_mml_agrees_with_erm_where_steps_are_informed(ltl6):
    """MML (normal population) and CML agree within 0.05 logits wherever eRm's SE is below 0.3;
    the sparse top steps (a handful of learners) differ by less than a quarter of their SE."""
    m = ordinal.OrdinalIRT("pcm").fit(ltl6)
    assert m.converged_
    ref = pd.read_csv(REF / "ltl6_erm_pcm_thresholds.csv")
    j = m.thresholds().merge(ref, on=["item_id", "step"])
    diff = (j["estimate"] - j["estimate"].mean()) - (j["threshold"] - j["threshold"].mean())
    informed = j["se_y"] < 0.3
    assert np.abs(diff[informed]).max() < 0.05
    assert (np.abs(diff) < 0.25 * j["se_y"]).all()


def test_grm_agrees_with_lavaan_ordinal_cfa(ltl6):
    m = ordinal.OrdinalIRT("grm").fit(ltl6)
    s = m.summary()
    lo = pd.read_csv(REF / "ltl6_lavaan_loadings.csv").merge(s, on="item_id")
    assert np.abs(lo["loading_x"] - lo["loading_y"]).max() < 0.05
    th = m.thresholds()
    ap = s.set_index("item_id")["discrimination"] / ordinal.D_PROBIT
    k = ap.loc[th["item_id"]].to_numpy()
    th["tau"] = th["estimate"] * k / np.sqrt(1 + k**2)
    rt = pd.read_csv(REF / "ltl6_lavaan_thresholds.csv").merge(th, on=["item_id", "step"])
    informed = rt["se_x"] < 0.1  # lavaan's SE: categories with enough learners
    gap = np.abs(rt["threshold"] - rt["tau"])[informed]  # logistic vs probit link, full vs limited information
    assert gap.max() < 0.15 and gap.median() < 0.03


def _simulate_grm(n, a, b, seed):
    rng = np.random.default_rng(seed)
    th = rng.normal(size=n)
    star = expit(a[None, :, None] * (th[:, None, None] - b[None]))
    y = (rng.random((n, len(a)))[:, :, None] < star).sum(axis=2)
    return pd.DataFrame({"learner_id": np.repeat(np.arange(n), len(a)).astype(str),
                         "item_id": np.tile([f"q{j}" for j in range(len(a))], n), "category": y.ravel()})


def test_grm_recovers_known_parameters_and_gradient_is_exact():
    a = np.array([0.8, 1.2, 1.6, 2.0, 1.4])
    b = np.array([[-1.5, -0.5, 0.4, 1.3]] * 5) + np.array([-0.4, 0.0, 0.3, -0.2, 0.5])[:, None]
    df = _simulate_grm(800, a, b, seed=3)
    m = ordinal.OrdinalIRT("grm").fit(df)
    s = m.summary()
    z_a = (s["discrimination"] - a) / s["discrimination_se"]
    th = m.thresholds()
    z_b = (th["estimate"] - b.ravel()) / th["se"]
    assert np.abs(z_a).max() < 3.5 and np.abs(z_b).max() < 3.5
    assert np.abs(s["infit"] - 1).max() < 0.1
    # analytic gradient (Fisher identity) against central differences
    spec, fit = m.fit_.spec, m.fit_
    p = spec.start()
    v = spec.pack(p)
    g = spec.pack(ordinal._evaluate(spec, p, fit.x, fit.log_w)[1])
    h = 1e-4
    num = [(ordinal._evaluate(spec, spec.unpack(v + h * e, p), fit.x, fit.log_w)[0]
            - ordinal._evaluate(spec, spec.unpack(v - h * e, p), fit.x, fit.log_w)[0]) / (2 * h) for e in np.eye(len(v))]
    assert np.allclose(num, g, atol=1e-3 * max(1.0, np.abs(g).max()))
    curves = m.category_curves(np.array([0.0]))
    assert np.allclose(curves.groupby("item_id")["probability"].sum(), 1.0)
    assert (m.information()["information"] > 0).all()


def test_invariance_rejects_scalar_when_an_item_shifts_for_a_group():
    a = np.array([1.5, 1.5, 1.5, 1.5, 1.5])
    b = np.array([[-1.0, 0.0, 1.0]] * 5)
    d1, d2 = _simulate_grm(400, a, b, seed=4), _simulate_grm(400, a, b - np.r_[1.5, 0, 0, 0, 0][:, None], seed=5)
    d1["grp"], d2["grp"] = "x", "y"
    d2["learner_id"] = "y" + d2["learner_id"]
    inv = ordinal.invariance(pd.concat([d1, d2]), group="grp")
    assert list(inv["level"]) == ["configural", "metric", "scalar"]
    assert bool(inv.set_index("level").loc["metric", "holds"])
    assert not bool(inv.set_index("level").loc["scalar", "holds"])
    dif = ordinal.ordinal_dif(pd.concat([d1, d2]), group="grp").set_index("item_id")
    assert dif.loc["q0", "dif_class"] == "C" and (dif.drop(index="q0")["dif_class"] == "A").all()


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="valid"):
        ordinal.OrdinalIRT("gpcm")
    bad = pd.DataFrame({"learner_id": ["a", "b"], "item_id": ["q", "q"], "category": [1, 2.5]})
    with pytest.raises(DataError, match="row 1, column 'category'"):
        ordinal.OrdinalIRT().fit(bad)
    one = pd.DataFrame({"learner_id": ["a", "b", "a", "b"], "item_id": ["q", "q", "r", "r"], "category": [1, 1, 0, 1]})
    with pytest.raises(DataError, match="item 'q'"):
        ordinal.OrdinalIRT().fit(one)


def test_proportional_odds_fit_agrees_with_statsmodels():
    import warnings

    from statsmodels.miscmodels.ordinal_model import OrderedModel

    rng = np.random.default_rng(7)
    X = np.column_stack([rng.normal(size=300), rng.integers(0, 2, 300)]).astype(float)
    cdf = expit(np.array([-1.0, 0.0, 1.2])[None, :] - (X @ np.array([0.8, -0.5]))[:, None])  # P(Y <= k)
    y = (rng.random(300)[:, None] > cdf).sum(axis=1)
    ll, beta, se = ordinal.polr(y, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = OrderedModel(y, X, distr="logit").fit(method="bfgs", disp=False, maxiter=2000)
    assert abs(ll - ref.llf) < 1e-4
    assert np.allclose(beta, np.asarray(ref.params)[:2], atol=1e-3)
    assert np.allclose(se, np.asarray(ref.bse)[:2], rtol=1e-2)


def test_learning_to_learn_grades_on_one_scale_and_their_invariance(ltl6):
    """Grade 6 and Grade 9 subtests of the same 782 students as two waves (real data).

    What it gives (recorded, not a truth): on the linked PCM scale Grade 9 lies 0.87 logits
    (SE 0.03) above Grade 6; scalar invariance across grades is rejected (subtests 6 and 7 show
    moderate, class B, ordinal DIF: they grow more than the rest), in line with the source's
    finding of differences "in the functioning of some items".
    """
    d = pd.read_csv(LTL)
    parts = []
    for grade, phase in ((6, "pre"), (9, "post")):
        cols = [f"score_{grade}_subtest{i}" for i in range(1, 8)]
        m = d[cols].reset_index().melt(id_vars="index", var_name="item_id", value_name="category")
        m["item_id"] = m["item_id"].str.replace(f"score_{grade}_", "", regex=False)
        parts.append(m.assign(phase=phase))
    long = pd.concat(parts).rename(columns={"index": "learner_id"})
    g = ordinal.OrdinalIRT("pcm").fit(long, group="phase", group_order=["pre", "post"]).group_means().set_index("group")
    assert 0.75 < g.loc["post", "mean"] < 1.0 and g.loc["post", "ci_low"] > 0
    inv = ordinal.invariance(long, group="phase", group_order=["pre", "post"]).set_index("level")
    assert bool(inv.loc["metric", "holds"]) and inv.loc["scalar", "p"] < 1e-4
    dif = ordinal.ordinal_dif(long, group="phase").set_index("item_id")
    assert set(dif.index[dif["dif_class"] != "A"]) == {"subtest6", "subtest7"}


def test_fits_on_response_patterns_and_by_group_equal_the_joint_fit_of_every_case():
    """The shortcuts of the invariance test give the likelihood of the plain fit: response patterns
    with their counts (every case its own row as the oracle), and the configural model fitted
    group by group (the joint fit of all groups as the oracle)."""
    a = np.array([1.5, 1.0, 2.0, 1.2])
    b = np.array([[-1.0, 0.0, 1.0]] * 4)
    d1, d2 = _simulate_grm(300, a, b, seed=8), _simulate_grm(300, a, b + 0.5, seed=9)
    d1["grp"], d2["grp"] = "x", "y"
    d2["learner_id"] = "y" + d2["learner_id"]
    d = ordinal._ord_data(pd.concat([d1, d2]), "learner_id", "item_id", "category", "grp")
    pat = ordinal._patterns(d)
    assert pat.weight is not None and len(pat.case_group) < len(d.case_group) and pat.weight.sum() == len(d.case_group)
    for model in ("grm", "pcm"):
        kw = dict(share_a=False, share_c=False, free_mu=False, free_sd=model == "pcm")
        spec_cases, spec_pat = ordinal._Spec(model, d, **kw), ordinal._Spec(model, pat, **kw)
        x, w = ordinal.quadrature(21)
        p0 = spec_cases.start()
        ll_c, g_c = ordinal._evaluate(spec_cases, p0, x, np.log(w))
        ll_p, g_p = ordinal._evaluate(spec_pat, p0, x, np.log(w))
        assert ll_p == pytest.approx(ll_c, rel=1e-12)
        assert np.allclose(spec_cases.pack(g_c), spec_pat.pack(g_p), rtol=1e-9, atol=1e-9)
        joint = ordinal._fit(d, model, n_quad=21, se=False, **kw)
        separate = ordinal._configural(d, model, n_quad=21, start=None, **kw)
        assert separate.loglik == pytest.approx(joint.loglik, abs=1e-5) and separate.n_params == joint.n_params
