"""Findings are judged against a simulated cohort's truth (research.recommend.accuracy).

The full measurement is benchmarks/bench_findings.py (25 to 8,000 learners, several seeds);
this runs one moderate cohort so that a regression in the precision of "fix these first"
or in the recall of planted problems fails CI.
"""

from __future__ import annotations

import pytest

from research.recommend.accuracy import accuracy_table, cohort_findings, judge_findings
from research.simulate import simulate_cohort


@pytest.fixture(scope="module")
def judged_400():
    sim = simulate_cohort(n_learners=400, seed=0, cohort="acc-400")
    recs, estimates = cohort_findings(sim)
    judged = judge_findings(recs, sim.truth)
    judged.attrs["estimates"] = estimates
    return sim, judged


def test_fix_first_is_precise_and_planted_problems_are_found_at_400_learners(judged_400):
    sim, judged = judged_400
    per_rule, recall = accuracy_table(judged, sim.truth)
    first = judged[judged["fix_first"]]
    assert len(first) >= 3
    judged_first = first[first["verdict"] != "unjudged"]
    precision = (judged_first["verdict"] == "true").mean()
    assert precision >= 0.9, first[["rule", "target_id", "verdict"]]
    # recall of the six planted problems: the too-easy and mis-keyed items, the drop-out and
    # slow pages are found; DIF at 400 learners does not survive the correction for the
    # hundreds of item x group tests, and the no-learning KC is not told apart from
    # learning KCs whose later items are harder (see the README's accuracy table)
    found = set(recall.loc[recall["found"] == 1, "planted"])
    assert {"too_easy", "miskeyed", "dropout_page", "slow_page"} <= found, found
    assert recall["found"].mean() >= 4 / 6
    # the drop-out finding names the page the simulator makes learners leave from, and
    # counts the learners who left there
    drop = judged[(judged["rule"] == "dropout_hotspot") & (judged["planted"] == "dropout_page")].iloc[0]
    assert drop["n_affected"] == drop["estimate_2"] < drop["n"]
    assert (per_rule["fix_first_false"] == 0).all()


def test_at_25_learners_no_inconclusive_finding_is_fixed_first():
    sim = simulate_cohort(n_learners=25, seed=0, cohort="acc-25")
    recs, _ = cohort_findings(sim)
    first = recs[recs["fix_first"]]
    assert first["conclusive"].all()
    # an interval that spans its threshold is never High nor fixed first
    spans = (recs["ci_low"] < recs["threshold"]) & (recs["threshold"] < recs["ci_high"])
    assert not (spans & recs["fix_first"]).any()
    assert not (spans & (recs["severity"] == "high")).any()


def test_the_estimate_tables_behind_the_findings_match_their_output_schemas(judged_400, tmp_path):
    from research.recommend import validate_recommendations, write_recommendations
    from research.schema import output_schema, validate

    _, judged = judged_400
    estimates = judged.attrs["estimates"]
    for name, table in (("kcs", "kcs"), ("distractors", "item_distractors"), ("dif", "dif"), ("funnel", "funnel")):
        schema = output_schema(table)
        frame = estimates[name]
        if name == "distractors":  # notebook 02 writes it with small cells suppressed
            from research.estimate.classical import suppress_small_cells

            frame = suppress_small_cells(frame, 10)
        assert set(schema.field_names) <= set(frame.columns), (name, set(schema.field_names) - set(frame.columns))
        checked = validate(frame[list(schema.field_names)], schema, source_file=f"{table}.csv")
        assert len(checked.rejects) == 0, (table, checked.rejects.head(3).to_dict("records"))
    recs = judged.drop(columns=["verdict", "planted"])
    validate_recommendations(recs)
    write_recommendations(recs, tmp_path)
    from research.recommend import read_recommendations

    back = read_recommendations(tmp_path / "recommendations.csv")
    assert back["fix_first"].tolist() == recs["fix_first"].tolist()
