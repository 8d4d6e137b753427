"""research.loop: change logs, anchor linking, cohort comparison and recommendation status.

Recovery tests use simulated cohorts with known truth: research.simulate.simulate_followup
(a follow-up cohort in which some planted problems were truly fixed and others only
"revised" without effect) and research.simulate.linking (two Rasch cohorts with a known
ability shift and known item changes). Agreement tests compare with statsmodels (Newcombe
interval of a difference of proportions) and with R lme4 on real data (Learning to Learn,
Grade 6 vs Grade 9; values in tests/reference/loop/, script beside them).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError, DataError
from research.estimate.irt import Rasch
from research.loop import (
    COMPARISON_COLUMNS,
    STATUS_COLUMNS,
    CohortComparison,
    LinkingWarning,
    changelog_for_followup,
    changelog_from_versions,
    item_covariance,
    compare_metrics,
    link_difficulties,
    profile_cohort,
    read_changelog,
    recommendation_status,
)
from research.schema import output_schema, validate
from research.simulate import simulate_cohort, simulate_followup
from research.simulate.linking import simulate_linking_pair

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "reference" / "loop"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def sims():
    """A cohort and two follow-ups: one where the too-easy and mis-keyed items, the
    no-learning KC and the drop-out page were truly fixed, one where nothing was."""
    before = simulate_cohort(n_learners=400, seed=11)
    fixed = simulate_followup(before, fixed=("too_easy", "miskeyed", "no_learning", "dropout"), seed=12, cohort="fixed")
    nothing = simulate_followup(before, fixed=(), seed=13, cohort="unchanged")
    return before, fixed, nothing


@pytest.fixture(scope="session")
def profiles(sims):
    before, fixed, nothing = sims
    return profile_cohort(before), profile_cohort(fixed), profile_cohort(nothing, recommend=False)


@pytest.fixture(scope="session")
def fitted(sims, profiles):
    """The comparison of the fixed follow-up, with a change log that also claims revisions
    of the DIF item and the slow page that did not work (those problems persist)."""
    before, fixed, _ = sims
    pb, pf, _ = profiles
    doc = changelog_for_followup(before, fixed, claimed=("dif", "slow"), recommendations=pb.recommendations)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinkingWarning)
        return CohortComparison(seed=1).fit(pb, pf, doc), doc


def _targets(cmp):
    t = cmp.targets()
    return dict(zip(t["target_id"].astype(str), t["target_verdict"].astype(str)))


# --------------------------------------------------------------------------- recovery on simulated pairs


def test_fixed_items_kc_and_page_are_found_improved(sims, fitted):
    before, _, _ = sims
    cmp, _ = fitted
    verdict = _targets(cmp)
    truth = before.truth
    too_easy = truth.items.loc[truth.items["planted"] == "too_easy", "item_id"].item()
    miskeyed = truth.items.loc[truth.items["planted"] == "miskeyed", "item_id"].item()
    kc = truth.kcs.loc[truth.kcs["planted"] == "no_learning_kc", "kc"].item()
    dropout_page = truth.pages.loc[truth.pages["planted"] == "dropout_page", "page"].item()
    assert verdict[too_easy] == "improved"
    assert verdict[miskeyed] == "improved"
    assert verdict[kc] == "improved"
    assert verdict[dropout_page] == "improved"
    s = cmp.summary().set_index(["target_id", "metric"])
    # the mis-keyed item: item-rest correlation from negative to clearly positive
    assert s.loc[(miskeyed, "discrimination"), "before"] < 0 < s.loc[(miskeyed, "discrimination"), "ci_low"] + s.loc[(miskeyed, "discrimination"), "before"]
    # the too-easy item became harder on the linked scale; the true change is about +4.6 logits
    true_change = 0.98 - (-3.6)  # truth: difficulty after fix (about 1.0) minus before (-3.6), see truth.items
    row = s.loc[(too_easy, "difficulty")]
    assert row["ci_low"] > 2.0 and abs(row["difference"] - true_change) < 1.5
    # the no-learning KC: AFM slope 0 before, about 0.25 after
    lr = s.loc[(kc, "learning_rate")]
    assert lr["before"] < 0.1 and lr["ci_low"] < 0.25 < lr["ci_high"]


def test_revisions_that_did_not_work_show_no_detectable_change(sims, fitted):
    before, _, _ = sims
    cmp, _ = fitted
    verdict = _targets(cmp)
    truth = before.truth
    dif_item = truth.items.loc[truth.items["planted"] == "dif", "item_id"].item()
    slow_page = truth.pages.loc[truth.pages["planted"] == "slow_page", "page"].item()
    assert verdict[dif_item] == "no_detectable_change"
    assert verdict[slow_page] == "no_detectable_change"


def test_linking_on_the_simulated_pair(fitted):
    cmp, _ = fitted
    L = cmp.linking_
    # same learner population in both cohorts: the true shift is 0
    assert L.ci_low < 0 < L.ci_high
    assert abs(L.shift) < 0.15
    assert L.n_anchors >= 40 and not L.too_few_anchors
    # changed items and the items of the revised KC and pages are not anchors
    anchors = set(cmp.anchors()["item_id"])
    changed = set(cmp.changelog_.items())
    assert not anchors & changed
    ik = cmp.before_.item_kcs
    assert not anchors & set(ik.loc[ik["kc"] == "M2-K3", "item_id"])
    c = cmp.summary()
    assert (c["n_anchors"] == L.n_anchors).all() and not c["too_few_anchors"].any()


def test_false_verdicts_on_an_unchanged_cohort_are_rare(sims, profiles):
    """Nothing was fixed: every item 'revised', linked through all items. Improved/worse
    verdicts should come at about the nominal rate (2.5 % each way per metric)."""
    pb, _, pn = profiles
    items = sorted(pb.item_ids & pn.item_ids)
    doc = {"changes": [{"date": "2027-01-01", "type": "item_revised", "item": i} for i in items]}
    cmp = CohortComparison(seed=3, min_anchors=1).fit(pb, pn, doc, anchors=items)
    s = cmp.summary()
    judged = s[s["verdict"].isin(["improved", "worse", "no_detectable_change"])]
    assert len(judged) >= 3 * len(items)
    false_rate = float((judged["verdict"] != "no_detectable_change").mean())
    assert false_rate < 0.08, judged.groupby(["metric", "verdict"]).size()


def test_linking_recovers_a_known_ability_shift_and_item_changes():
    pair = simulate_linking_pair(800, 30, shift=0.6, changed={0: 1.2, 1: -0.9, 2: 0.7}, seed=5)
    rb = Rasch().fit(pair.before)
    ra = Rasch().fit(pair.after)
    changed = pair.items.loc[pair.items["changed"], "item_id"].tolist()
    L = link_difficulties(rb.item_params_, ra.item_params_, exclude=changed, cov_before=item_covariance(rb),
                          cov_after=item_covariance(ra))
    assert L.n_anchors == 27 and not L.too_few_anchors
    assert abs(L.shift - 0.6) < 3 * L.se and 0.03 < L.se < 0.1  # interval coverage: test_link_interval_coverage
    # the revised items' change on the linked scale
    pb = rb.item_params_.set_index("item_id")
    pa = ra.item_params_.set_index("item_id")
    se_b, se_a = L.contrast_se(changed, "before"), L.contrast_se(changed, "after")
    for n, (_, row) in enumerate(pair.items[pair.items["changed"]].iterrows()):
        est = L.to_before_scale(pa.loc[row["item_id"], "difficulty"]) - pb.loc[row["item_id"], "difficulty"]
        se = np.hypot(se_b[n], se_a[n])
        assert se < np.hypot(pa.loc[row["item_id"], "difficulty_se"], pb.loc[row["item_id"], "difficulty_se"])
        assert abs(est - row["change"]) < 3 * se, (row["item_id"], est, row["change"])
    # without the link the cohort's higher ability would pass for easier items
    naive = (pa["difficulty"] - pb["difficulty"]).reindex(changed).to_numpy()
    assert np.all(naive - pair.items.set_index("item_id").loc[changed, "change"].to_numpy() < -0.3)


@pytest.mark.slow
def test_link_interval_coverage():
    hits = []
    for seed in range(12):
        pair = simulate_linking_pair(300, 15, shift=-0.4, seed=100 + seed)
        rb, ra = Rasch().fit(pair.before), Rasch().fit(pair.after)
        L = link_difficulties(rb.item_params_, ra.item_params_, cov_before=item_covariance(rb),
                              cov_after=item_covariance(ra), warn=False)
        hits.append(L.ci_low < -0.4 < L.ci_high)
    assert sum(hits) >= 10, hits  # nominal 95 %: 10 or more of 12 with probability 0.98


def test_drift_screening_flags_an_undocumented_change():
    pair = simulate_linking_pair(800, 30, shift=0.3, changed={4: 2.0}, seed=9)
    L = link_difficulties(Rasch().fit(pair.before).item_params_, Rasch().fit(pair.after).item_params_)
    a = L.anchors.set_index("item_id")
    assert a.loc["I004", "drifted"] and not a.loc["I004", "used"]
    assert a["drifted"].sum() <= 2
    assert abs(L.shift - 0.3) < 0.12


# --------------------------------------------------------------------------- too few anchors


def test_too_few_anchors_warns_and_flags():
    pair = simulate_linking_pair(300, 12, shift=0.5, seed=2)
    rb, ra = Rasch().fit(pair.before), Rasch().fit(pair.after)
    with pytest.warns(LinkingWarning, match=r"only 3 anchor item\(s\).*at least 10"):
        L = link_difficulties(rb.item_params_, ra.item_params_, anchors=["I000", "I001", "I002"])
    assert L.too_few_anchors and L.n_anchors == 3
    assert L.summary()["too_few_anchors"].item()
    with pytest.raises(ConfigError, match=r"anchor item\(s\) \['nope'\] are not calibrated in both cohorts"):
        link_difficulties(rb.item_params_, ra.item_params_, anchors=["I000", "nope"])


def test_comparison_with_too_few_anchors_flags_every_row(sims, profiles):
    before, fixed, _ = sims
    pb, pf, _ = profiles
    items = sorted(pb.item_ids & pf.item_ids)
    keep = items[:4]
    doc = {"changes": [{"date": "2027-01-01", "type": "item_revised", "item": i} for i in items if i not in keep]}
    with pytest.warns(LinkingWarning, match="only 4 anchor"):
        cmp = CohortComparison().fit(pb, pf, doc)
    s = cmp.summary()
    assert s["too_few_anchors"].all() and (s["n_anchors"] == 4).all()
    # no anchors at all: difficulties cannot be compared
    doc_all = {"changes": [{"date": "2027-01-01", "type": "item_revised", "item": i} for i in items]}
    with pytest.warns(LinkingWarning, match="only 0 anchor"):
        cmp0 = CohortComparison().fit(pb, pf, doc_all)
    d = cmp0.summary()
    diff_rows = d[d["metric"] == "difficulty"]
    assert (diff_rows["verdict"] == "not_comparable").all()
    assert diff_rows["suppressed_reason"].str.contains("no anchor items").all()
    assert (d.loc[d["metric"] != "difficulty", "verdict"] != "not_comparable").any()


# --------------------------------------------------------------------------- change log validation


def _good_log():
    return {
        "course": "Test course",
        "changes": [
            {"id": "A", "date": "2027-01-10", "type": "item_revised", "item": "M1.P1.I2",
             "recommendations": ["rec_0123456789abcdef"]},
            {"date": "2027-01-10", "type": "kc_split", "kc_model": "Fine", "kc": "M1-K1", "into": ["M1-K1", "M1-K2"]},
            {"date": "2027-01-10", "type": "kc_merged", "kc_model": "Fine", "kcs": ["M1-K1", "M1-K2"], "into": "M1-K1"},
            {"date": "2027-01-10", "type": "page_revised", "page": "M3.P2"},
        ],
    }


@pytest.fixture(scope="session")
def known(profiles):
    pb, pf, _ = profiles
    return dict(items_before=pb.item_ids, items_after=pf.item_ids, kcs_before=pb.kcs[["kc_model", "kc"]],
                kcs_after=pf.kcs[["kc_model", "kc"]], pages_before=pb.page_ids, pages_after=pf.page_ids)


def test_changelog_reads_a_valid_log(known):
    log = read_changelog(_good_log(), **known)
    assert list(log.changes["change_id"]) == ["A", "C2", "C3", "C4"]
    assert log.items() == ["M1.P1.I2"] and log.pages() == ["M3.P2"]
    assert log.changes.loc[2, "target_id"] == "M1-K1+M1-K2"
    assert log.addressed().to_dict("records") == [{"recommendation_id": "rec_0123456789abcdef", "change_id": "A"}]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(colour="red"), r"unknown top-level key\(s\) \['colour'\]; valid keys: \['course'"),
        (lambda d: d["changes"][0].update(itme="M1.P1.I2"), r"unknown key\(s\) \['itme'\]; valid keys for item_revised"),
        (lambda d: d["changes"][0].update(type="item_rewritten"), r"unknown change type 'item_rewritten'; valid types: \['item_revised'"),
        (lambda d: d["changes"][0].update(item="M9.P9.I9"), r"unknown item\(s\) \(not in the before nor the after cohort\) \['M9.P9.I9'\]"),
        (lambda d: d["changes"][1].update(kc="Z-K9"), r"unknown KC\(s\) of model 'Fine' \(not in the before cohort\) \['Z-K9'\]"),
        (lambda d: d["changes"][1].update(kc_model="Tiny"), r"unknown kc_model 'Tiny' in the before cohort; valid: \['Coarse', 'Fine'\]"),
        (lambda d: d["changes"][3].update(page="M0.P0"), r"unknown page\(s\).*\['M0.P0'\]"),
        (lambda d: d["changes"][0].update(date="10/01/2027"), r"date '10/01/2027' is not an ISO date"),
        (lambda d: d["changes"][0].update(recommendations=["rec_123"]), r"malformed recommendation id\(s\) \['rec_123'\]"),
        (lambda d: d["changes"][0].pop("item"), r"missing key\(s\) \['item'\]"),
        (lambda d: d["changes"].append({"date": "2027-01-01", "type": "item_added", "item": "M1.P1.I1"}),
         r"item\(s\) \['M1.P1.I1'\] already exist"),
        (lambda d: d["changes"][1].update(into=["M1-K1"]), r"'into' needs at least 2 KCs"),
        (lambda d: d.pop("changes"), r"missing key 'changes'"),
    ],
)
def test_changelog_errors_name_the_bad_values(known, mutate, message):
    doc = copy.deepcopy(_good_log())
    mutate(doc)
    with pytest.raises(ConfigError, match=message):
        read_changelog(doc, **known)


def test_changelog_reports_every_problem_at_once(known):
    doc = copy.deepcopy(_good_log())
    doc["changes"][0]["item"] = "nope-1"
    doc["changes"][3]["page"] = "nope-2"
    with pytest.raises(ConfigError, match=r"2 problem\(s\)") as err:
        read_changelog(doc, **known)
    assert "nope-1" in str(err.value) and "nope-2" in str(err.value)


def test_changelog_from_item_versions(sims):
    before, fixed, nothing = sims
    log = changelog_from_versions(before.items, fixed.items)
    planted = before.truth.items.set_index("item_id")["planted"]
    assert log.items() == sorted(planted[planted.isin(["too_easy", "miskeyed"])].index)
    assert set(log.changes["type"]) == {"item_revised"}
    assert len(changelog_from_versions(before.items, nothing.items)) == 0


def test_changelog_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_changelog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("changes: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        read_changelog(bad)


def test_example_changelog_matches_its_json_schema_and_the_reader():
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads((ROOT / "data_schema" / "changelog.schema.json").read_text())
    doc = yaml.safe_load((ROOT / "examples" / "changelog.yaml").read_text())
    jsonschema.validate(doc, schema["jsonSchema"])
    log = read_changelog(ROOT / "examples" / "changelog.yaml")
    assert len(log) == 4
    # the JSON Schema refuses what the reader refuses
    for mutate in (lambda d: d.update(colour="red"), lambda d: d["changes"][0].update(itme="x"),
                   lambda d: d["changes"][0].update(recommendations=["rec_1"])):
        bad = copy.deepcopy(doc)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema["jsonSchema"])
        with pytest.raises(ConfigError):
            read_changelog(bad)


@pytest.mark.slow
def test_example_changelog_is_the_demo_log():
    import yaml

    from research.loop import demo_changelog

    assert yaml.safe_load((ROOT / "examples" / "changelog.yaml").read_text()) == demo_changelog("demo-2")


# --------------------------------------------------------------------------- the comparison kernel


def test_rate_difference_interval_agrees_with_newcombe():
    from statsmodels.stats.proportion import confint_proportions_2indep

    rows = pd.DataFrame({
        "kind": "rate", "direction": "lower_better",
        "k_before": [30, 120, 5], "n_before": [200, 400, 80],
        "k_after": [18, 150, 9], "n_after": [210, 380, 90],
    })
    out = compare_metrics(rows, n_draws=40000, seed=2)
    for i, r in rows.iterrows():
        lo, hi = confint_proportions_2indep(r.k_after, r.n_after, r.k_before, r.n_before, method="newcomb")
        assert abs(out.loc[i, "ci_low"] - lo) < 0.01 and abs(out.loc[i, "ci_high"] - hi) < 0.01
        assert out.loc[i, "difference"] == pytest.approx(r.k_after / r.n_after - r.k_before / r.n_before)


def test_normal_difference_interval_is_the_wald_interval():
    rows = pd.DataFrame({"kind": "normal", "direction": "higher_better", "est_before": [0.1, 0.3],
                         "se_before": [0.05, 0.2], "est_after": [0.3, 0.25], "se_after": [0.06, 0.2],
                         "n_before": 100, "n_after": 100})
    out = compare_metrics(rows, n_draws=40000, seed=1)
    half = 1.959964 * np.sqrt(rows["se_before"] ** 2 + rows["se_after"] ** 2)
    np.testing.assert_allclose(out["ci_low"], rows["est_after"] - rows["est_before"] - half, atol=0.01)
    np.testing.assert_allclose(out["ci_high"], rows["est_after"] - rows["est_before"] + half, atol=0.01)
    assert list(out["verdict"]) == ["improved", "no_detectable_change"]
    # p_improved is the normal probability of a positive difference
    from scipy.stats import norm

    assert out.loc[0, "p_improved"] == pytest.approx(norm.cdf(0.2 / np.sqrt(0.05**2 + 0.06**2)), abs=0.01)


def test_verdict_rules():
    rows = pd.DataFrame({
        "kind": "rate",
        "direction": ["toward_band", "toward_band", "toward_band", "lower_better", "none", "lower_better", "lower_better"],
        "band_low": 0.1, "band_high": 0.7,
        # 0: inside the band both times, moved -> no change in quality; 1: too easy -> inside; 2: inside -> too hard;
        # 3: worse; 4: no direction, clear change; 5: too little data; 6: small cell (suppressed)
        "k_before": [100, 4, 200, 20, 50, 2, 1], "n_before": [400, 400, 400, 400, 400, 10, 5],
        "k_after": [200, 100, 360, 60, 100, 8, 4], "n_after": [400, 400, 400, 400, 400, 10, 30],
    })
    out = compare_metrics(rows, min_n=20, min_cell_size=8)
    assert list(out["verdict"]) == ["no_detectable_change", "improved", "worse", "worse", "changed",
                                    "not_comparable", "not_comparable"]
    assert "too little data" in out.loc[5, "suppressed_reason"]
    assert "suppressed" in out.loc[6, "suppressed_reason"] and np.isnan(out.loc[6, "before"])
    with pytest.raises(ConfigError, match="ci_level must lie strictly between 0 and 1, got 1.5"):
        compare_metrics(rows, ci_level=1.5)


# --------------------------------------------------------------------------- recommendation status


def test_recommendation_status_by_stable_id():
    def recs(ids, rules):
        return pd.DataFrame({"recommendation_id": ids, "rule": rules, "family": "items", "target_type": "item",
                             "target_id": ["I1", "I2", "I3"][: len(ids)], "kc_model": None,
                             "rank": range(1, len(ids) + 1), "priority": [90.0, 50.0, 10.0][: len(ids)],
                             "title": "t"})

    a, b, c, d = (f"rec_{x * 16}" for x in "abcd")
    before = recs([a, b], ["too_easy", "too_hard"])
    after = recs([b, c], ["too_hard", "poor_fit"])
    log = read_changelog({"changes": [{"id": "X", "date": "2027-01-01", "type": "item_revised", "item": "I1",
                                        "recommendations": [a, d]}]})
    st = recommendation_status(before, after, log).set_index("recommendation_id")
    assert st.loc[a, "status"] == "resolved" and st.loc[a, "addressed_by"] == "X"
    assert st.loc[b, "status"] == "persisting" and pd.isna(st.loc[b, "addressed_by"])
    assert st.loc[c, "status"] == "new" and pd.isna(st.loc[c, "rank_before"]) and st.loc[c, "rank_after"] == 2
    assert list(recommendation_status(before, None).columns) == STATUS_COLUMNS
    with pytest.raises(DataError, match=r"lack column\(s\) \['rule'"):
        recommendation_status(before.drop(columns="rule"), after)


def test_recommendation_status_on_the_simulated_pair(sims, fitted):
    before, _, _ = sims
    cmp, doc = fitted
    st = cmp.recommendation_status_
    miskeyed = before.truth.items.loc[before.truth.items["planted"] == "miskeyed", "item_id"].item()
    neg = st[(st["rule"] == "negative_discrimination") & (st["target_id"] == miskeyed)]
    assert len(neg) == 1 and neg["status"].item() == "resolved" and neg["addressed_by"].item() == "C2"
    kc = st[(st["rule"] == "kc_no_learning") & (st["target_id"] == "M2-K3")]
    # a flat curve over items in a fixed order is weak evidence of no learning (the item
    # order error of the free AFM slope does not shrink with more learners), so the KC may
    # not be a finding at all; when it is, the fix resolves it
    assert len(kc) <= 1
    if len(kc):
        assert kc["status"].item() == "resolved"
    dif_item = before.truth.items.loc[before.truth.items["planted"] == "dif", "item_id"].item()
    dif = st[(st["rule"] == "dif_class_c") & (st["target_id"] == dif_item)]
    if len(dif):  # the DIF finding persists: the rewording did not work
        assert dif["status"].item() == "persisting"
    assert set(st["status"]) <= {"new", "persisting", "resolved"}


# --------------------------------------------------------------------------- outputs match their schemas


def test_outputs_match_their_table_schemas(fitted):
    cmp, _ = fitted
    for name, frame in (("comparison", cmp.summary()), ("recommendation_status", cmp.recommendation_status_),
                        ("anchors", cmp.anchors())):
        schema = output_schema(name)
        assert list(frame.columns) == schema.field_names, name
        checked = validate(frame, schema, source_file=f"{name}.csv")
        assert len(checked.rejects) == 0, checked.rejects.head()
    assert list(cmp.summary().columns) == COMPARISON_COLUMNS
    assert cmp.provenance_["version"] and cmp.provenance_["seed"] == 1


def test_unfitted_and_bad_settings():
    with pytest.raises(ConfigError, match="not fitted yet"):
        CohortComparison().summary()
    with pytest.raises(ConfigError, match="min_anchors must be at least 1, got 0"):
        CohortComparison(min_anchors=0)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['difficulty_se'\]"):
        link_difficulties(pd.DataFrame({"item_id": ["a"], "difficulty": [0.0]}), pd.DataFrame({"item_id": ["a"]}))


# --------------------------------------------------------------------------- real data: agreement with R lme4


@pytest.mark.realdata
def test_linking_agrees_with_lme4_on_learning_to_learn(real_data):
    """Grade 6 and Grade 9 of the Learning to Learn test (same 41 items) calibrated
    separately and linked through all items; R: lme4 glmer per occasion, same linking
    formula, and a concurrent glmer with an occasion effect (tests/reference/loop)."""
    ltl = pd.read_csv(real_data / "learning_to_learn_grade6_grade9_prepost" / "LearningToLearn.csv")
    items = [c[:-2] for c in ltl.columns if c.startswith("Item") and c.endswith("_6")]

    def long(grade):
        wide = ltl[[f"{i}_{grade}" for i in items]].set_axis(items, axis=1)
        wide.index = wide.index.astype(str)
        out = wide.stack().rename("correct").reset_index()
        out.columns = ["learner_id", "item_id", "correct"]
        return out.dropna()

    r6, r9 = Rasch().fit(long(6)), Rasch().fit(long(9))
    ref = json.loads((REF / "ltl_linking.json").read_text())
    params = pd.read_csv(REF / "ltl_lme4_separate.csv").set_index("item_id")
    # the same linking formula on lme4's estimates (independent item errors)
    var = params["se_grade6"] ** 2 + params["se_grade9"] ** 2
    w = (1 / var) / (1 / var).sum()
    d = params["displacement"]
    tau2 = max(0.0, float(d.var(ddof=1) - var.mean()))
    se_r = float(np.sqrt((w**2 * var).sum() + tau2 * (w**2).sum()))
    assert float((w * d).sum()) == pytest.approx(ref["separate_mean_mean"]["shift"], abs=1e-6)
    L = link_difficulties(r6.item_params_, r9.item_params_, drift_z=None)
    assert L.n_anchors == 41
    assert L.shift == pytest.approx(ref["separate_mean_mean"]["shift"], abs=0.03)
    assert L.se == pytest.approx(se_r, rel=0.1)
    disp = L.anchors.set_index("item_id")["displacement"]
    assert np.corrcoef(disp.reindex(params.index), d)[0, 1] > 0.99
    # with the full covariance of each calibration; the concurrent calibration (one occasion
    # effect, no item drift allowed) lands inside the linking interval
    Lc = link_difficulties(r6.item_params_, r9.item_params_, cov_before=item_covariance(r6), cov_after=item_covariance(r9))
    assert Lc.se >= L.se * 0.95
    assert Lc.ci_low < ref["concurrent"]["shift"] < Lc.ci_high


# --------------------------------------------------------------------------- the notebook on the demo pair


@pytest.mark.slow
def test_notebook_07_finds_the_demo_fixes(tmp_path):
    """Notebook 07 with its default parameters (demo-2 against demo, examples/changelog.yaml)
    in a fresh warehouse: the two truly fixed items improved, the two ineffective
    revisions show no detectable change, and the outputs match their schemas."""
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "reports"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "07_compare_cohorts.ipynb"), str(tmp_path / "07.ipynb"),
        parameters={"warehouse": str(tmp_path / "wh.duckdb"), "out_dir": str(out)},
        cwd=str(ROOT), kernel_name="python3", progress_bar=False,
    )
    comp = pd.read_csv(out / "comparison.csv")
    verdict = comp.drop_duplicates("change_id").set_index("change_id")["target_verdict"].to_dict()
    assert verdict == {"C1": "improved", "C2": "improved", "C3": "no_detectable_change", "C4": "no_detectable_change"}
    assert not comp["too_few_anchors"].any() and comp["n_anchors"].min() >= 40
    status = pd.read_csv(out / "recommendation_status.csv")
    addressed = status[status["addressed_by"].notna()].set_index(["rule", "target_id"])["status"]
    assert addressed[("negative_discrimination", "M2.P2.I1")] == "resolved"
    assert addressed[("kc_no_learning", "M2-K3")] == "persisting"
    # the DIF finding may fall below its threshold by chance although the problem persists; the
    # comparison's verdict on the change says what the data show
    dif = status[(status["rule"] == "dif_class_c") & (status["target_id"] == "M3.P2.I2")]
    assert dif["addressed_by"].tolist() == ["C3"] and dif["change_verdict"].tolist() == ["no_detectable_change"]
    assert status.loc[status["rule"] == "negative_discrimination", "change_verdict"].tolist() == ["improved"]
    for name in ("anchor_items", "comparison", "recommendation_status"):
        assert (out / "figures" / f"{name}.png").exists() and (out / "figures" / f"{name}.alt.txt").read_text().strip()
