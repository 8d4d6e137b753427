"""Privacy of the report: no learner id, no figure about a group below the minimum cell size,
and no hidden figure that can be worked out by subtraction."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_recommend import dif_table, items_table
from test_report import Page

from research.errors import ConfigError, DataError
from research.pseudonym import Pseudonymiser
from research.recommend import recommend
from research.report import group_sizes, render_report, suppress_records, suppression_mask, write_report

K = 10
PSEUDONYM = re.compile(r"p_[0-9a-f]{16}")


def test_primary_and_complementary_suppression():
    counts = [200, 150, 3, 40, 5, 100, 120]
    sets = ["g", "g", "g", "g", "r", "r", "r"]
    got = suppression_mask(counts, sets, min_cell_size=K).tolist()
    assert got == [pd.NA, pd.NA, "primary", "complementary", "primary", "complementary", pd.NA]
    # small cells whose sum is still small: keep hiding until the hidden cells hold >= k
    got = suppression_mask([200, 150, 3, 4, 2], min_cell_size=K).tolist()
    assert got == [pd.NA, "complementary", "primary", "primary", "primary"]
    assert suppression_mask([200, 150, 30], min_cell_size=K).isna().all()
    with pytest.raises(ConfigError, match="min_cell_size=0 must be a positive whole number"):
        suppression_mask([1], min_cell_size=0)
    with pytest.raises(DataError, match="counts must not be negative, got -1"):
        suppression_mask([5, -1])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60)), min_size=1, max_size=25),
    st.integers(1, 20),
)
def test_no_hidden_cell_can_be_derived(cells, k):
    """Within each set: nothing hidden without a small cell; otherwise every small cell is
    hidden, at least two cells are hidden (or all), and the hidden ones hold at least k."""
    sets = [f"s{s}" for s, _ in cells]
    counts = [c for _, c in cells]
    reason = suppression_mask(counts, sets, min_cell_size=k)
    df = pd.DataFrame({"set": sets, "n": counts, "hidden": reason.notna().to_numpy()})
    for _, part in df.groupby("set"):
        small = part["n"] < k
        if not small.any():
            assert not part["hidden"].any()
            continue
        assert part.loc[small, "hidden"].all()
        hidden = part[part["hidden"]]
        if len(hidden) < len(part):
            assert len(hidden) >= 2 and hidden["n"].sum() >= k


@pytest.fixture(scope="module")
def tiny_cohort():
    """A cohort of 437 learners with tiny groups: 3 on Gotland, 4 in 'other' gender, 7 in role 'chef'."""
    pseudo = Pseudonymiser(key=b"privacy-test-key")
    raw_ids = [f"stud{i:05d}@agency.example" for i in range(437)]
    learners = pd.DataFrame(
        {
            "cohort": "tiny",
            "learner_id": [pseudo.one(r) for r in raw_ids],
            "gender": ["woman"] * 220 + ["man"] * 213 + ["other"] * 4,
            "region": ["north"] * 250 + ["south"] * 170 + ["east"] * 14 + ["Gotland"] * 3,
            "role": ["advisor"] * 300 + ["manager"] * 130 + ["chef"] * 7,
        }
    )
    dif = dif_table()
    dif.loc[3, ["attribute", "reference_group", "focal_group", "n_focal", "mh_delta", "mh_delta_se", "p_adjusted",
                "ets_class", "suppressed_reason"]] = ["gender", "man", "other", 4, -3.1, 0.9, 0.01, "C", None]
    items = items_table()
    # a lax cohort config lets rules fire on tiny items: the report must still hide their figures
    recs = recommend(
        {"items": items, "dif": dif},
        {"rules": {name: {"min_n": 1} for name in ("too_easy", "too_hard", "negative_discrimination", "heavy_hint_use", "poor_fit")}},
        cohort="tiny",
        n_learners=437,
    )
    return learners, raw_ids, recs


def test_tiny_groups_are_hidden_in_html_csv_and_json(tiny_cohort, tmp_path):
    learners, raw_ids, recs = tiny_cohort
    out = {}
    for lang in ("sv", "da", "en"):
        out[lang] = write_report(
            recs, tmp_path, language=lang, learners=learners, min_cell_size=K, generated=dt.date(2025, 1, 1)
        )
    texts = {p.name: p.read_text(encoding="utf-8") for paths in out.values() for p in paths.values()}
    assert set(texts) == {"report.sv.html", "report.da.html", "report.en.html", "recommendations.csv", "recommendations.json",
                          "datapackage.json"}
    for name, text in texts.items():
        assert not PSEUDONYM.search(text), f"{name} shows a learner id"
        assert not any(r in text for r in raw_ids[:50] + raw_ids[-10:]), f"{name} shows a raw learner id"
        assert "agency.example" not in text

    # the sizes of the tiny groups and their shares of 437 appear nowhere in the group tables
    sizes = group_sizes(learners, ["gender", "region", "role"], min_cell_size=K)
    hidden = sizes[sizes["suppressed_reason"].notna()]
    assert set(hidden["group"]) == {"other", "man", "Gotland", "east", "chef", "manager"}
    assert set(hidden.loc[hidden["suppressed_reason"] == "primary", "group"]) == {"other", "Gotland", "chef"}
    html = texts["report.en.html"]
    page = Page(html)
    for group, n in [("other", 4), ("Gotland", 3), ("chef", 7), ("man", 213), ("east", 14), ("manager", 130)]:
        share = f"{100 * n / 437:.1f}%"
        row = re.search(rf'<tr class="hidden-cell"><th scope="row">{group}</th><td>(.*?)</td><td>(.*?)</td></tr>', html)
        assert row, f"group {group} is not marked hidden"
        assert row.groups() == ("hidden", "hidden")
        assert share not in html, f"share of {group} ({share}) is in the report"
    # subtraction: within each attribute at least two groups are hidden and they hold >= k learners
    for attribute, part in sizes.groupby("attribute"):
        true = learners[attribute].value_counts()
        if part["n"].isna().any():
            assert part["n"].isna().sum() >= 2
            assert true[part.loc[part["n"].isna(), "group"]].sum() >= K
    # the figure's alt text names only the shown groups
    alts = " ".join(img["alt"] for img in page.imgs)
    assert "Gotland" not in alts and "chef:" not in alts

    # the DIF finding on the 4 'other' learners keeps its place but shows no number
    rec = json.loads(texts["recommendations.json"])["records"]
    small_dif = [r for r in rec if r["rule"] == "dif_class_c" and "other" in r["detail"].partition("=")[2].split("/")]
    assert small_dif and small_dif[0]["estimate"] is None and small_dif[0]["n"] is None
    assert small_dif[0]["n_affected"] is None and small_dif[0]["suppressed_reason"].startswith("fewer than 10")
    csv = pd.read_csv(tmp_path / "recommendations.csv")
    small_rows = csv[csv["suppressed_reason"].notna()]
    assert set(small_rows["target_id"]) == {"i4", "i_small"}
    assert small_rows[["estimate", "se", "ci_low", "ci_high", "n", "n_affected", "estimate_2"]].isna().all().all()
    assert "-3,10" not in texts["report.sv.html"] and "-3.10" not in html


def test_suppress_records_hides_learner_counts_used_as_evidence():
    recs = recommend(
        {
            "funnel": pd.DataFrame(
                {"page": ["a", "b", "c", "d"], "reached": [100.0, 98, 96, 90], "drop": [2.0, 2, 6, 1],
                 "hazard": [0.02, 0.0204, 0.0625, 0.011]}
            )
        },
        {"rules": {"dropout_hotspot": {"min_drop": 1, "hazard_min": 0.05}}},
    )
    assert list(recs["target_id"]) == ["c"]
    safe = suppress_records(recs, min_cell_size=K)
    # 6 learners stopped on page c: a group below k, so the drop count and hazard are hidden
    assert safe.loc[0, ["estimate", "estimate_2", "n"]].isna().all()
    assert safe.loc[0, "suppressed_reason"].startswith("fewer than 10")


def test_a_learner_id_in_the_data_stops_the_report():
    recs = recommend({"items": items_table(item_id=[f"p_{i:016x}" for i in range(8)])})
    with pytest.raises(DataError, match="learner ids must never reach a report"):
        render_report(recs)


def test_group_sizes_counts_missing_values_as_a_group():
    learners = pd.DataFrame({"learner_id": [f"l{i}" for i in range(30)], "gender": ["a"] * 15 + ["b"] * 12 + [None] * 3})
    sizes = group_sizes(learners, min_cell_size=K)
    assert list(sizes["group"]) == ["(not stated)", "a", "b"]
    assert sizes["n"].isna().tolist() == [True, False, True]
    with pytest.raises(DataError, match=r"learners has no column\(s\) \['age'\]"):
        group_sizes(learners, ["age"])
    assert np.isclose(sizes.loc[1, "share"], 0.5)
