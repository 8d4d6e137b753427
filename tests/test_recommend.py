"""Tests of research.recommend on small hand-made estimate tables with known findings."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from research.errors import ConfigError, DataError, SchemaError
from research.recommend import (
    RULES,
    load_config,
    priority_score,
    read_recommendations,
    recommend,
    record_columns,
    stable_id,
    validate_recommendations,
    write_recommendations,
)


def items_table(**changes) -> pd.DataFrame:
    """Six items: one per item rule planted, plus a clean one (i_clean) and a small one (i_small)."""
    df = pd.DataFrame(
        {
            "item_id": ["i_easy", "i_hard", "i_neg", "i_low", "i_hint", "i_misfit", "i_clean", "i_small"],
            "module": "m1",
            "page": ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4"],
            "n_learners": [300, 300, 300, 300, 300, 300, 300, 8],
            "facility": [0.97, 0.18, 0.55, 0.60, 0.65, 0.62, 0.64, 0.99],
            "facility_ci_low": [0.945, 0.14, 0.49, 0.54, 0.59, 0.56, 0.58, 0.6],
            "facility_ci_high": [0.985, 0.23, 0.61, 0.66, 0.70, 0.67, 0.69, 1.0],
            "discrimination": [0.05, 0.30, -0.30, 0.08, 0.40, 0.35, 0.45, -0.5],
            "hint_rate": [0.01, 0.10, 0.05, 0.05, 0.45, 0.05, 0.05, 0.9],
            "infit_mnsq": [1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.0, 1.0],
            "infit_z": [0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0],
            "outfit_mnsq": [1.0, 1.0, 1.2, 1.1, 1.0, 1.6, 1.0, 2.0],
            "outfit_z": [0.0, 0.0, 1.9, 1.0, 0.0, 4.0, 0.0, 5.0],
        }
    )
    for k, v in changes.items():
        df[k] = v
    return df


def distractors_table() -> pd.DataFrame:
    # item d1: B is never picked (unused), C is picked by strong learners; item d2 is clean
    return pd.DataFrame(
        {
            "item_id": ["d1"] * 4 + ["d2"] * 4,
            "option": ["A", "B", "C", "D"] * 2,
            "is_key": [True, False, False, False, True, False, False, False],
            "n": [120, 1, 60, 19, 130, 25, 25, 20],
            "share": [0.6, 0.005, 0.3, 0.095, 0.65, 0.125, 0.125, 0.1],
            "mean_ability": [0.1, -1.0, 0.6, -0.8, 0.5, -0.3, -0.4, -0.6],
            "sd_ability": [0.9, None, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9],
        }
    )


def kcs_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kc_model": ["Fine"] * 5 + ["Coarse"] * 2,
            "kc": ["k_none", "k_high", "k_flat", "k_little", "k_good", "c1", "c2"],
            "intercept": [0.0, 1.0, -2.5, 0.1, 0.5, 0.0, 0.0],
            "slope": [0.01, 0.15, 0.02, 0.2, 0.3, 0.1, 0.0],
            "slope_se": [0.02, 0.03, 0.02, 0.3, 0.03, 0.02, 0.02],
            "slope_ci_low": [-0.03, 0.09, -0.02, -0.4, 0.24, 0.06, -0.04],
            "slope_ci_high": [0.05, 0.21, 0.06, 0.8, 0.36, 0.14, 0.04],
            "n_obs": [2000, 2000, 2000, 30, 2000, 5000, 5000],
            "n_learners": [300, 300, 300, 15, 300, 300, 300],
            "category": ["no_learning", "still_high", "low_and_flat", "too_little_data", "good", "good", "no_learning"],
            "category_probability": [0.9, 0.8, 0.7, 1.0, 0.95, 0.9, 0.9],
            "category_confidence": ["confident", "confident", "uncertain", "confident", "confident", "confident",
                                    "confident"],
        }
    )


def dif_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "attribute": ["gender", "gender", "region", "region"],
            "reference_group": ["man", "man", "north", "north"],
            "focal_group": ["woman", "woman", "south", "islands"],
            "n_reference": [150, 150, 200, 200],
            "n_focal": [140, 140, 90, None],
            "mh_odds_ratio": [3.0, 1.1, 1.6, None],
            "mh_delta": [-2.58, -0.22, -1.1, None],
            "mh_delta_se": [0.35, 0.3, 0.3, None],
            "p_value": [1e-6, 0.5, 0.001, None],
            "p_adjusted": [1e-5, 0.9, 0.004, None],
            "ets_class": ["C", "A", "B", None],
            "suppressed_reason": [None, None, None, "focal group below the minimum cell size (10)"],
        }
    )


def funnel_table() -> pd.DataFrame:
    reached = np.array([400, 392, 385, 377, 300, 294, 288, 282], dtype=float)
    nxt = np.append(reached[1:], 276)
    drop = reached - nxt
    return pd.DataFrame(
        {
            "position": np.arange(1, 9),
            "module": "m1",
            "page": [f"page{i}" for i in range(1, 9)],
            "next_page": [f"page{i}" for i in range(2, 9)] + [None],
            "reached": reached,
            "share": reached / 400,
            "drop": drop,
            "hazard": drop / reached,
        }
    )


def time_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "level": "page",
            "page": ["page1", "page2", "page3"],
            "n": [300, 300, 300],
            "median_s": [60.0, 700.0, 100.0],
            "ci_low": [55.0, 650.0, 90.0],
            "ci_high": [66.0, 760.0, 111.0],
            "planned_duration_s": [60.0, 120.0, 90.0],
            "ratio_to_planned": [1.0, 700 / 120, 100 / 90],
        }
    )


def all_estimates() -> dict[str, pd.DataFrame]:
    return {
        "items": items_table(),
        "distractors": distractors_table(),
        "kcs": kcs_table(),
        "dif": dif_table(),
        "funnel": funnel_table(),
        "time_on_task": time_table(),
    }


@pytest.fixture(scope="module")
def recs() -> pd.DataFrame:
    return recommend(all_estimates(), cohort="c1", n_learners=400)


def fired(recs: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(recs["rule"], recs["target_id"]))


def test_each_planted_item_problem_is_found_and_clean_items_are_not(recs):
    f = fired(recs)
    for pair in [
        ("too_easy", "i_easy"),
        ("too_hard", "i_hard"),
        ("negative_discrimination", "i_neg"),
        ("low_discrimination", "i_low"),
        ("heavy_hint_use", "i_hint"),
        ("poor_fit", "i_misfit"),
    ]:
        assert pair in f
    targets = set(recs["target_id"])
    assert "i_clean" not in targets
    # fewer learners than min_n: no finding, whatever the numbers say
    assert "i_small" not in targets
    # a too-easy item is not reported again as merely low-discriminating
    assert ("low_discrimination", "i_easy") not in f
    assert ("low_discrimination", "i_neg") not in f


def test_distractor_rules(recs):
    d = recs[recs["family"] == "distractors"]
    assert set(zip(d["rule"], d["target_id"], d["detail"])) == {
        ("unused_distractor", "d1", "B"),
        ("strong_distractor", "d1", "C"),
    }
    strong = d[d["rule"] == "strong_distractor"].iloc[0]
    assert strong["estimate"] == pytest.approx(0.5)  # 0.6 - 0.1 ability gap to the key
    # learners affected: those who chose the option
    assert strong["n_affected"] == 60
    # confidence: the gap of two means (se from their SDs) times the share's
    se_gap = np.sqrt(0.8**2 / 60 + 0.9**2 / 120)
    assert strong["se"] == pytest.approx(se_gap)
    c_share = stats.norm.cdf((0.3 - 0.1) / np.sqrt(0.3 * 0.7 / 200))
    assert strong["confidence"] == pytest.approx(stats.norm.cdf(0.5 / se_gap) * c_share)


def test_kc_categories_map_to_rules_for_the_chosen_model(recs):
    k = recs[recs["family"] == "kcs"]
    assert set(zip(k["rule"], k["target_id"])) == {
        ("kc_no_learning", "k_none"),
        ("kc_still_high", "k_high"),
        ("kc_low_and_flat", "k_flat"),
        ("kc_too_little_data", "k_little"),
        ("kc_no_learning", "c2"),
    }
    none = k[k["target_id"] == "k_none"].iloc[0]
    assert none["kc_model"] == "Fine"
    assert none["confidence"] == pytest.approx(0.9)
    assert none["method"] == "category"


def test_kc_model_auto_picks_the_lowest_bic_and_a_named_model_is_checked():
    est = {"kcs": kcs_table(), "kc_models": pd.DataFrame({"kc_model": ["Fine", "Coarse"], "bic": [1000.0, 1200.0]})}
    r = recommend(est)
    assert set(r["kc_model"]) == {"Fine"}
    r2 = recommend(est, {"kc_model": "Coarse"})
    assert set(r2["target_id"]) == {"c2"}
    with pytest.raises(ConfigError, match=r"kc_model='Nope'.*valid: \['auto', 'all', 'Coarse', 'Fine'\]"):
        recommend(est, {"kc_model": "Nope"})


def test_dif_class_c_fires_and_suppressed_rows_never_do(recs):
    d = recs[recs["family"] == "dif"]
    assert list(d["target_id"]) == ["i1"]
    row = d.iloc[0]
    assert row["detail"] == "gender=woman/man"  # harder for woman than for man
    assert row["n_affected"] == 140
    # confidence = Phi((|delta| - 1.5) / se)
    assert row["confidence"] == pytest.approx(stats.norm.cdf((2.58 - 1.5) / 0.35))
    # class B is off by default; switching it on reports i3
    r = recommend({"dif": dif_table()}, {"rules": {"dif_class_b": {"enabled": True}}})
    assert set(r["target_id"]) == {"i1", "i3"}


def test_dropout_hotspot_and_slow_page(recs):
    f = recs[recs["family"].isin(["funnel", "time_on_task"])]
    assert set(zip(f["rule"], f["target_type"], f["target_id"])) == {
        ("dropout_hotspot", "page", "page5"),
        ("slow_page", "page", "page2"),
    }
    hot = f[f["rule"] == "dropout_hotspot"].iloc[0]
    # 77 learners answered page4 and nothing after it: they left at the start of page5,
    # which the finding names
    assert hot["page"] == "page5" and pd.isna(hot["detail"])
    assert hot["estimate"] == pytest.approx(77 / 377)
    assert hot["estimate_2"] == 77
    assert hot["n_affected"] == 77  # the learners who left, not all who got there
    # the threshold that fired is max(hazard_min, ratio * median hazard)
    h = funnel_table()["hazard"]
    assert hot["threshold"] == pytest.approx(max(0.08, 2.0 * h.median()))


def test_priority_formula_is_exact():
    cfg = load_config()
    got = priority_score(["high", "medium", "low"], [0.9, 0.5, 1.0], [1.0, 0.2, 0.0], cfg)
    expected = [100 * 1.0 * 0.9 * 1.0, 100 * 0.6 * 0.5 * (0.5 + 0.5 * 0.2), 100 * 0.3 * 1.0 * 0.5]
    assert got == pytest.approx(expected)
    with pytest.raises(ConfigError, match=r"unknown severity \['urgent'\]; valid"):
        priority_score(["urgent"], [1.0], [1.0], cfg)


def test_records_are_ranked_by_priority_and_the_priority_matches_the_formula(recs):
    assert list(recs["rank"]) == list(range(1, len(recs) + 1))
    assert recs["priority"].is_monotonic_decreasing
    cfg = load_config()
    assert recs["priority"].to_numpy() == pytest.approx(
        priority_score(recs["severity"], recs["confidence"], recs["reach"], cfg)
    )
    # a sure, high-severity finding on everyone (mis-keyed item) outranks a low-severity one
    rank = dict(zip(zip(recs["rule"], recs["target_id"]), recs["rank"]))
    assert rank[("negative_discrimination", "i_neg")] < rank[("heavy_hint_use", "i_hint")]
    assert rank[("dif_class_c", "i1")] < rank[("unused_distractor", "d1")]


def test_evidence_carries_uncertainty_n_and_the_threshold(recs):
    easy = recs[(recs["rule"] == "too_easy")].iloc[0]
    assert easy["metric"] == "facility" and easy["estimate"] == pytest.approx(0.97)
    assert easy["ci_low"] == pytest.approx(0.945) and easy["ci_high"] == pytest.approx(0.985)
    assert easy["se"] == pytest.approx((0.985 - 0.945) / (2 * stats.norm.ppf(0.975)))
    assert easy["n"] == 300 and easy["threshold"] == 0.9 and easy["threshold_op"] == ">"
    assert easy["metric_2"] == "discrimination" and easy["threshold_2"] == 0.2
    neg = recs[recs["rule"] == "negative_discrimination"].iloc[0]
    # Fisher z: Phi(|atanh(r) - atanh(0)| * sqrt(n - 3))
    assert neg["confidence"] == pytest.approx(stats.norm.cdf(abs(np.arctanh(-0.3)) * np.sqrt(297)))
    assert neg["ci_low"] < -0.3 < neg["ci_high"]
    assert (recs["title"].str.len() > 0).all() and (recs["action"].str.len() > 0).all()


def test_stable_ids_do_not_depend_on_values_or_cohort():
    a = recommend({"items": items_table()}, cohort="2025-spring")
    b = recommend(
        {"items": items_table(facility=items_table()["facility"].to_numpy() * 0.999, n_learners=350)},
        cohort="2025-autumn",
    )
    ida = dict(zip(zip(a["rule"], a["target_id"]), a["recommendation_id"]))
    idb = dict(zip(zip(b["rule"], b["target_id"]), b["recommendation_id"]))
    common = set(ida) & set(idb)
    assert len(common) >= 5
    assert all(ida[k] == idb[k] for k in common)
    assert a["recommendation_id"].str.fullmatch(r"rec_[0-9a-f]{16}").all()
    assert stable_id("too_easy", "item", "i1") != stable_id("too_hard", "item", "i1")
    assert stable_id("too_easy", "item", "i1") != stable_id("too_easy", "item", "i2")
    assert stable_id("kc_no_learning", "kc", "k", "Fine") != stable_id("kc_no_learning", "kc", "k", "Coarse")
    assert stable_id(["too_easy"], ["item"], ["i1"], [None], [None]) == [stable_id("too_easy", "item", "i1")]


def test_families_switch_on_only_with_their_table_and_rules_can_be_switched_off():
    only_items = recommend({"items": items_table()})
    assert set(only_items["family"]) == {"items"}
    off = recommend({"items": items_table()}, {"rules": {"too_easy": {"enabled": False}}})
    assert "too_easy" not in set(off["rule"])
    # without IRT fit columns the poor-fit rule stays silent, the others still run
    no_fit = recommend({"items": items_table().drop(columns=["outfit_mnsq", "outfit_z", "infit_mnsq", "infit_z"])})
    assert "poor_fit" not in set(no_fit["rule"]) and "too_easy" in set(no_fit["rule"])
    empty = recommend({})
    assert list(empty.columns) == record_columns() and len(empty) == 0
    validate_recommendations(empty)


def test_overrides_change_thresholds():
    stricter = recommend({"items": items_table()}, {"rules": {"too_easy": {"facility_min": 0.98}}})
    assert "too_easy" not in set(stricter["rule"])
    r = recommend({"items": items_table()}, {"rules": {"too_hard": {"severity": "high"}}})
    assert r.loc[r["rule"] == "too_hard", "severity"].iloc[0] == "high"


def test_config_errors_name_the_bad_key_and_list_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['facility_minimum'\] in rules.too_easy; valid keys: "
                       r"\['discrimination_max', 'enabled', 'facility_min', 'min_n', 'severity'\]"):
        load_config({"rules": {"too_easy": {"facility_minimum": 0.95}}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['too_eazy'\] in rules; valid keys: .*'too_easy'"):
        load_config({"rules": {"too_eazy": {}}})
    with pytest.raises(ConfigError, match=r"rules.too_easy.severity='urgent' is not a severity; valid: \['high', 'medium', 'low'\]"):
        load_config({"rules": {"too_easy": {"severity": "urgent"}}})
    with pytest.raises(ConfigError, match=r"rules.too_easy.facility_min=1.5 is a proportion"):
        load_config({"rules": {"too_easy": {"facility_min": 1.5}}})
    with pytest.raises(ConfigError, match=r"rules.too_easy.enabled must be true or false, got 'yes'"):
        load_config({"rules": {"too_easy": {"enabled": "yes"}}})
    with pytest.raises(ConfigError, match=r"rules.too_hard.min_n must be a number, got 'many'"):
        load_config({"rules": {"too_hard": {"min_n": "many"}}})
    # a cohort config file: the recommend section is read
    cfg_file = tmp_path / "cohort.yaml"
    cfg_file.write_text("recommend:\n  rules:\n    too_easy:\n      facility_min: 0.95\n", encoding="utf-8")
    assert load_config(cfg_file).rule("too_easy")["facility_min"] == 0.95
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_defaults_document_every_rule():
    cfg = load_config()
    assert set(cfg.rules) == set(RULES)
    text = resources.files("research.config").joinpath("recommend_defaults.yaml").read_text(encoding="utf-8")
    assert "priority = 100 * severity_weight * confidence" in text
    for name in RULES:
        assert f"\n  {name}:" in text


def test_bad_estimates_raise_data_errors():
    with pytest.raises(DataError, match=r"unknown estimate table\(s\) \['item'\]; valid: .*'items'"):
        recommend({"item": items_table()})
    with pytest.raises(DataError, match=r"estimates\['items'\] must be a DataFrame, got list"):
        recommend({"items": [1, 2]})
    dup = pd.concat([items_table(), items_table()])
    with pytest.raises(DataError, match="two findings share one id"):
        recommend({"items": dup})


def test_output_validates_and_round_trips(recs, tmp_path):
    validate_recommendations(recs)
    csv_path, json_path = write_recommendations(recs, tmp_path)
    back_csv = read_recommendations(csv_path)
    back_json = read_recommendations(json_path)
    for back in (back_csv, back_json):
        assert list(back["recommendation_id"]) == list(recs["recommendation_id"])
        assert back["priority"].to_numpy() == pytest.approx(recs["priority"].to_numpy())
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    assert payload["provenance"]["config"]["rules"]["too_easy"]["facility_min"] == 0.9
    bad = recs.copy()
    bad.loc[0, "severity"] = "urgent"
    with pytest.raises(SchemaError, match=r"column 'severity': 'urgent' is not one of \['high', 'medium', 'low'\]"):
        validate_recommendations(bad)
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['rank'\]"):
        validate_recommendations(recs.drop(columns="rank"))


# ---------------------------------------------------------------- end to end on the demo cohort


@pytest.fixture(scope="module")
def demo_estimates():
    """The demo cohort's settings (research.demo.DEMO_SETTINGS), simulated with known truth,
    through the real estimate modules: classical + Rasch items, distractors, AFM curves,
    Mantel-Haenszel DIF, page funnel and time on task."""
    from research.demo import DEMO_SETTINGS
    from research.estimate import afm, classical, curves, dif, engagement, irt, opportunities
    from research.simulate import simulate_cohort

    sim = simulate_cohort(**DEMO_SETTINGS)
    rasch = irt.fit_rasch(classical.first_attempt_responses(sim.attempts))
    steps = opportunities.student_steps(sim.attempts, sim.attempt_kcs)
    models = afm.fit_kc_models(steps, cv=False)
    estimates = {
        "items": irt.item_table(classical.item_statistics(sim.attempts, sim.items), rasch=rasch),
        "item_distractors": classical.distractor_table(sim.attempts, sim.items),
        "kcs": curves.kc_table(models, steps),
        "kc_models": afm.compare_kc_models(models),
        "dif": dif.mantel_haenszel_dif(dif.first_attempt_responses(sim.attempts), sim.learners),
        "funnel": engagement.funnel(sim.attempts, sim.items, level="page"),
        "time_on_task": engagement.time_on_task(sim.attempts, sim.items, level="page"),
    }
    return sim, estimates


def test_demo_planted_problems_are_found_and_ranked_above_clean_items(demo_estimates):
    sim, estimates = demo_estimates
    recs = recommend(estimates, cohort="demo")
    validate_recommendations(recs)
    truth = sim.truth
    planted_items = truth.items.loc[truth.items["planted"] != "", ["item_id", "planted"]]
    by = {p: set(planted_items.loc[planted_items["planted"] == p, "item_id"]) for p in planted_items["planted"]}
    rank_of = lambda mask: int(recs.loc[mask, "rank"].min()) if mask.any() else None  # noqa: E731

    ranks = {
        "too_easy": rank_of((recs["rule"] == "too_easy") & recs["target_id"].isin(by["too_easy"])),
        "miskeyed": rank_of(
            recs["rule"].isin(["negative_discrimination", "strong_distractor"]) & recs["target_id"].isin(by["miskeyed"])
        ),
        "dif": rank_of((recs["rule"] == "dif_class_c") & recs["target_id"].isin(by["dif"])),
    }
    no_learning = set(truth.kcs.loc[truth.kcs["planted"] == "no_learning_kc", "kc"])
    ranks["no_learning_kc"] = rank_of((recs["rule"] == "kc_no_learning") & recs["target_id"].isin(no_learning))
    dropout = set(truth.pages.loc[truth.pages["planted"] == "dropout_page", "page"])
    # attempts show the last page a learner answered: leaving at the start of page P shows
    # as the drop of the page before, which the finding names in its detail
    hot = recs["rule"] == "dropout_hotspot"
    ranks["dropout_page"] = rank_of(hot & (recs["target_id"].isin(dropout) | recs["detail"].isin(dropout)))
    slow = set(truth.pages.loc[truth.pages["planted"] == "slow_page", "page"])
    ranks["slow_page"] = rank_of((recs["rule"] == "slow_page") & recs["target_id"].isin(slow))
    assert all(r is not None for r in ranks.values()), ranks

    # every planted problem ranks above every finding about a clean item
    clean = (recs["target_type"] == "item") & ~recs["target_id"].isin(planted_items["item_id"])
    first_clean = int(recs.loc[clean, "rank"].min())
    four = {k: ranks[k] for k in ("too_easy", "miskeyed", "dif", "dropout_page")}
    assert max(four.values()) < first_clean, (four, first_clean)
    # the no-learning KC is listed, but a flat curve over items in a fixed order cannot show
    # that there is no learning: it is never High, and no learning KC is called "no learning"
    # with conclusive evidence
    nl = recs[recs["rule"] == "kc_no_learning"]
    assert not nl["conclusive"].any() and not (nl["severity"] == "high").any()
    # every finding to fix first is conclusive and true by the simulator's truth (a planted
    # problem, or a KC whose later items truly are harder: research.recommend.accuracy)
    from research.recommend.accuracy import judge_findings

    first = judge_findings(recs, truth)
    first = first[first["fix_first"]]
    assert len(first) >= 3 and first["conclusive"].all()
    assert (first["verdict"] == "true").all(), first[["rule", "target_id", "verdict"]]
    # the mis-keyed item is the first thing to fix, with the DIF item's focal group named
    assert ranks["miskeyed"] == 1
    dif_rec = recs[(recs["rule"] == "dif_class_c") & recs["target_id"].isin(by["dif"])].iloc[0]
    assert dif_rec["detail"].startswith("gender=")
    # nothing about a clean item is rated high severity
    assert not (clean & (recs["severity"] == "high")).any()


def test_load_estimates_reads_the_notebooks_tables_and_says_what_is_missing(tmp_path):
    from research.recommend import load_estimates

    items_table().to_csv(tmp_path / "items.csv", index=False)
    funnel_table().assign(level="page").to_csv(tmp_path / "funnel.csv", index=False)
    tables, sources = load_estimates(tmp_path)
    assert set(tables) == {"items", "funnel"}
    src = dict(zip(sources["table"], sources["source"]))
    assert src["items"] == "file" and src["funnel"] == "file" and src["dif"] == "missing"
    assert tables["items"]["item_id"].dtype == "string"
    r = recommend(tables)
    assert set(r["family"]) == {"items", "funnel"}
    assert set(r.loc[r["family"] == "funnel", "target_type"]) == {"page"}


def test_notebook_06_follows_the_notebook_contract():
    import nbformat

    from research.paths import notebooks_dir

    nb = nbformat.read(notebooks_dir() / "06_recommendations.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"]
    for name in ("cohort = \"demo\"", "out_dir = \"reports/demo\"", "min_cell_size = 10", "language = "):
        assert name in code[0].source
    assert code[1].source.count("research.notebook.setup(") == 1
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert not any(re.search(r"^\s*(def|class) ", c.source, re.M) for c in code)
    assert any("write_report" in c.source for c in code)


# ---------------------------------------------------------------- column contract and evidence


def test_every_rule_declares_its_columns_and_they_match_the_output_schemas():
    from research.paths import schema_dir

    for rule in RULES.values():
        raw = json.loads((schema_dir() / "outputs" / f"{rule.table}.schema.json").read_text(encoding="utf-8"))
        types = {f["name"]: f["type"] for f in raw["fields"]}
        assert rule.inputs, f"rule {rule.name} declares no input columns"
        for col, kind in rule.columns.items():
            assert col in types, f"rule {rule.name} reads {col!r}, which {rule.table}.schema.json does not have"
            assert types[col] == kind, f"rule {rule.name} reads {col!r} as {kind}; the schema says {types[col]}"
        for req in rule.requires:  # one name per column: no alternative spellings
            assert req in rule.columns, (rule.name, req)


def test_a_label_in_a_numeric_column_is_refused_not_read_as_a_number():
    kcs = kcs_table()
    kcs["category_probability"] = kcs["category_confidence"]  # the old bug: the label read as a number
    with pytest.raises(DataError, match=r"column 'category_probability', row 0: rule 'kc_no_learning' reads a number"):
        recommend({"kcs": kcs})


def test_rules_see_only_their_declared_columns():
    seen = {}
    from research.recommend import rules as R

    original = R.RULES["too_hard"].func

    def spy(df, cfg, ctx):
        seen["columns"] = set(df.columns)
        return original(df, cfg, ctx)

    import dataclasses

    R.RULES["too_hard"] = dataclasses.replace(R.RULES["too_hard"], func=spy)
    try:
        recommend({"items": items_table(extra=1.0)})
    finally:
        R.RULES["too_hard"] = dataclasses.replace(R.RULES["too_hard"], func=original)
    assert seen["columns"] <= set(R.RULES["too_hard"].columns)
    assert "extra" not in seen["columns"] and "hint_rate" not in seen["columns"]


def test_confidence_is_never_a_count_of_learners():
    # a slow page whose table gives no interval of the median: listed, but with no
    # confidence, never conclusive, never high and never to fix first, however many learners
    t = time_table().drop(columns=["ci_low", "ci_high"])
    r = recommend({"time_on_task": t}, {"rules": {"slow_page": {"severity": "high"}}})
    assert list(r["target_id"]) == ["page2"]
    row = r.iloc[0]
    assert pd.isna(row["confidence"]) and row["method"] == "no_interval"
    assert not row["conclusive"] and not row["fix_first"] and row["severity"] == "medium"
    assert row["priority"] == 0
    from research.recommend import rules as R

    assert not hasattr(R, "n_only_confidence")


def test_an_interval_that_spans_the_threshold_is_not_high_and_not_fixed_first():
    # 25 learners, item-rest r = -0.12: the 95 % interval (about -0.49 to 0.29) spans 0,
    # so "check the answer key" is listed but not High and not among the first to fix
    items = items_table(n_learners=[25] * 8, discrimination=[0.4, 0.4, -0.12, 0.4, 0.4, 0.4, 0.4, 0.4],
                        facility=[0.6] * 8, hint_rate=[0.05] * 8, outfit_z=[0.0] * 8, infit_z=[0.0] * 8)
    r = recommend({"items": items})
    neg = r[r["rule"] == "negative_discrimination"].iloc[0]
    assert neg["ci_low"] < 0 < neg["ci_high"]
    assert neg["severity"] == "medium" and not neg["conclusive"] and not neg["fix_first"]
    # at 300 learners the same r is conclusive: High and first to fix
    r = recommend({"items": items.assign(n_learners=300)})
    neg = r[r["rule"] == "negative_discrimination"].iloc[0]
    assert neg["ci_high"] < 0 and neg["severity"] == "high" and neg["conclusive"] and neg["fix_first"]


def test_fix_first_is_the_best_ranked_conclusive_findings(recs):
    cfg = load_config()
    first = recs[recs["fix_first"]]
    assert first["conclusive"].all() and first["severity"].isin(["high", "medium"]).all()
    eligible = recs["conclusive"] & recs["severity"].isin(cfg.priority["fix_first_severities"])
    assert (recs["conclusive"] & (recs["severity"] == "low")).any(), "the fixture should have a conclusive low finding"
    assert len(first) == min(int(cfg.priority["top_n"]), int(eligible.sum()))
    conclusive_ranks = recs.loc[eligible, "rank"].sort_values()
    assert list(first["rank"].sort_values()) == list(conclusive_ranks[: len(first)])
    assert not (~recs["conclusive"] & (recs["severity"] == "high")).any()


def test_a_clearly_negative_free_slope_is_a_finding_of_its_own():
    kcs = pd.DataFrame({
        "kc_model": "Fine", "kc": ["k_mixed", "k_flat", "k_learns"],
        "category": ["no_learning", "no_learning", "good"], "category_probability": [0.4, 0.4, 1.0],
        "slope": [0.0, 0.0, 0.3], "slope_se": [0.02, 0.02, 0.02],
        "slope_free": [-0.25, -0.02, 0.3], "slope_free_se": [0.13, 0.13, 0.13], "slope_order_se": [0.12, 0.12, 0.12],
        "n_obs": [2000, 2000, 2000], "n_learners": [400, 400, 400],
    })
    r = recommend({"kcs": kcs})
    mixed = r[r["rule"] == "kc_mixed_skills"]
    assert list(mixed["target_id"]) == ["k_mixed"]
    row = mixed.iloc[0]
    # the claim is the observed trend, so its evidence is the sampling error alone
    se = np.sqrt(0.13**2 - 0.12**2)
    assert row["se"] == pytest.approx(se) and row["confidence"] == pytest.approx(stats.norm.cdf(0.25 / se))
    assert row["metric"] == "slope" and row["estimate"] == pytest.approx(-0.25) and row["ci_high"] < 0
    # without free slopes in the table the rule does not run
    assert "kc_mixed_skills" not in set(recommend({"kcs": kcs_table()})["rule"])


def test_the_recommendations_schema_names_every_rule_and_family():
    """A rule added without its name in recommendations.schema.json fails every cohort run that finds it."""
    from pathlib import Path

    from research.recommend.rules import RULES

    schema = json.loads((Path(__file__).resolve().parents[1] / "data_schema" / "recommendations.schema.json").read_text())
    enums = {f["name"]: set(f.get("constraints", {}).get("enum", ())) for f in schema["fields"]}
    assert enums["rule"] == set(RULES)
    assert {r.family for r in RULES.values()} <= enums["family"]
    assert {r.target_type for r in RULES.values()} <= enums["target_type"]


def test_the_config_ci_level_sets_every_finding_interval_and_leaves_the_evidence_alone(recs):
    """At ci_level 0.9 each interval is the normal one with z(0.95) = 1.645; se and confidence do not move."""
    narrow = recommend(all_estimates(), {"ci_level": 0.9}, cohort="c1", n_learners=400)
    key = ["rule", "target_id", "detail"]
    both = recs.merge(narrow, on=key, suffixes=("", "_90"))
    assert len(both) == len(recs) == len(narrow)
    for col in ("estimate", "se", "confidence", "priority"):
        np.testing.assert_allclose(both[col].astype(float), both[f"{col}_90"].astype(float), equal_nan=True)
    z90 = stats.norm.ppf(0.95)
    est, se = both["estimate"].astype(float), both["se"].astype(float)
    normal = both["method"].isin(["normal", "mean_diff*normal", "normal*fisher_z"]) & se.notna() & both["ci_low"].notna()
    shares = both["metric"].isin(["facility", "hazard", "share", "over_practice_share", "under_practice_share"])
    lo = np.where(shares, np.clip(est - z90 * se, 0, 1), est - z90 * se)
    hi = np.where(shares, np.clip(est + z90 * se, 0, 1), est + z90 * se)
    assert normal.sum() >= 5
    np.testing.assert_allclose(both.loc[normal, "ci_low_90"].astype(float), lo[normal], rtol=1e-9)
    np.testing.assert_allclose(both.loc[normal, "ci_high_90"].astype(float), hi[normal], rtol=1e-9)
    # a correlation's interval is built on Fisher's z scale, so it narrows too, by the same ratio there
    fisher = both[both["method"] == "fisher_z"]
    assert len(fisher) and (fisher["ci_high_90"] - fisher["ci_low_90"] < fisher["ci_high"] - fisher["ci_low"]).all()
    with pytest.raises(ConfigError, match="ci_level must be a level strictly between 0 and 1"):
        load_config({"ci_level": 95})
