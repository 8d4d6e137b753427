"""Learning Factors Analysis on simulated truth: Coarse (merged pairs of true KCs) vs Fine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError
from research.estimate import opportunities
from research.kcmodel.search import EXPLANATIONS, explain, search, split_recovery
from research.simulate import simulate_cohort


#: the planted effect size: the two Fine KCs each Coarse KC merges differ in easiness by at least
#: this many logits at every opportunity (simulate_cohort(fine_pair_gap=...)); item offsets keep sd 0.3
GAP = 1.5


@pytest.fixture(scope="module")
def sim400():
    sim = simulate_cohort(n_learners=400, seed=3, planted=False, fine_pair_gap=GAP)
    return sim, opportunities.student_steps(sim.attempts, sim.attempt_kcs)


@pytest.fixture(scope="module")
def from_coarse(sim400):
    sim, steps = sim400
    return search(steps, kc_model="Coarse", items=sim.items, max_steps=10, budget_s=60, seed=0)


def test_search_from_coarse_splits_merged_kcs_and_improves_bic_and_cv(sim400, from_coarse):
    sim, _ = sim400
    res = from_coarse
    path = res.path
    assert path.loc[0, "operator"] == "start" and res.best_step > 0
    chosen = path[path["chosen"]].iloc[0]
    assert chosen["bic"] < path.loc[0, "bic"] - 100 and chosen["cv_log_loss"] < path.loc[0, "cv_log_loss"]
    assert (np.diff(path["bic"]) < 0).all()  # best-first: every accepted step lowers BIC
    rec = split_recovery(res, sim.truth.items)
    assert len(rec) == 8 and rec["split_found"].all()  # every merged pair is split
    # At least 80% of the merged pairs split back into exactly the true problem groups, for pairs
    # that differ by GAP logits (a problem that also carries a KC of another Coarse KC may sit in
    # either group). Across seeds 1-5: benchmarks/bench_lfa.py --recovery, figures in the README.
    assert rec["recovered"].mean() >= 0.8, rec
    assert rec["n_misplaced"].sum() <= 1
    # the best model covers every step and names the change in words
    assert set(res.best["kc_model"]) == {res.name}
    assert len(res.explanations) and res.explanations["text"].str.contains("behaves as").any()


def test_search_from_fine_proposes_nothing_cv_does_not_support(sim400):
    sim, steps = sim400
    res = search(steps, kc_model="Fine", items=sim.items, max_steps=4, budget_s=30, seed=0)
    cvl = res.path["cv_log_loss"].to_numpy()
    # every change up to the chosen model lowered the held-out log-loss; the next one (if any) did not
    assert (np.diff(cvl[:res.best_step + 1]) < 0).all()
    assert res.best_step == len(cvl) - 1 or cvl[res.best_step + 1] >= cvl[res.best_step]
    assert len(res.changes) == res.best_step


def test_search_is_seeded_bounded_and_interruptible(sim400):
    sim, steps = sim400
    a = search(steps, kc_model="Coarse", max_steps=2, seed=3, operators=("split", "merge"), cv="path")
    b = search(steps, kc_model="Coarse", max_steps=2, seed=3, operators=("split", "merge"), cv="path")
    cols = ["operator", "kcs", "detail", "bic", "cv_rmse", "cv_log_loss"]
    pd.testing.assert_frame_equal(a.path[cols], b.path[cols])
    assert len(a.path) <= 3 and a.stopped in ("max_steps", "converged")

    def stop(row):
        if row["step"] == 1:
            raise KeyboardInterrupt

    c = search(steps, kc_model="Coarse", max_steps=5, operators=("split_items",), on_step=stop)
    assert c.stopped == "interrupted" and len(c.path) == 2 and c.path["chosen"].sum() == 1
    with pytest.raises(ConfigError, match="unknown operator"):
        search(steps, kc_model="Coarse", operators=("explode",))
    with pytest.raises(ConfigError, match="factor 'colour' is not known"):
        search(steps, kc_model="Coarse", factors=("colour",))
    with pytest.raises(ConfigError, match="KC model 'Nope' is not in the data"):
        search(steps, kc_model="Nope")


def test_explanations_are_translated(from_coarse):
    ex = from_coarse.explanations
    en, sv, da = explain(ex, "en"), explain(ex, "sv"), explain(ex, "da")
    assert en == list(ex["text"])
    assert sv[0] != en[0] and da[0] != en[0] and sv[0] != da[0]
    assert all(m in EXPLANATIONS.values() for m in ex["message"])


def test_search_path_matches_its_table_schema(from_coarse):
    from research.schema import output_schema, validate

    schema = output_schema("kc_search")
    assert list(from_coarse.path.columns) == schema.field_names
    checked = validate(from_coarse.path, schema, source_file="kc_search.csv")
    assert checked.rejects.empty, checked.rejects.head()


def test_kc_recommendations_name_the_change_the_search_supports(from_coarse):
    from research.kcmodel.advice import supported_changes

    changed = from_coarse.explanations["kc"].iloc[0]
    recs = pd.DataFrame({"recommendation_id": ["rec_0000000000000001", "rec_0000000000000002"],
                         "rule": ["kc_no_learning", "kc_still_high"], "kc_model": ["Coarse", "Coarse"],
                         "target_id": [changed, "unchanged KC"]})
    en = supported_changes(recs, from_coarse.explanations, kc_model="Coarse")
    assert list(en["recommendation_id"]) == ["rec_0000000000000001"]
    assert en["text"].iloc[0].startswith("A search over KC models") and changed in en["text"].iloc[0]
    da = supported_changes(recs, from_coarse.explanations, kc_model="Coarse", language="da")
    assert da["text"].iloc[0].startswith("En søgning blandt KC-modeller")


def test_split_curves_show_each_changed_kc_before_and_after(sim400, from_coarse):
    from research.kcmodel.notebook import split_curves

    _, steps = sim400
    c = split_curves(from_coarse, steps, min_learners=10)
    start_kcs = set(steps.loc[steps["kc_model"] == "Coarse", "kc"])  # a further split of a new KC shows in its curve
    split = {ch.kcs[0] for ch in from_coarse.changes if ch.operator.startswith("split") and ch.kcs[0] in start_kcs}
    assert set(c["kc_before"]) == split
    for k, g in c.groupby("kc_before"):
        assert set(g["when"]) == {"before", "after"} and g.loc[g["when"] == "after", "curve"].nunique() == 2
        assert (g["n"] >= 10).all() and g["error_rate"].between(0, 1).all()


def test_supported_changes_read_back_from_a_report_folder(from_coarse, tmp_path):
    from research.kcmodel.advice import supported_changes_in
    from research.names import write_csv

    write_csv(from_coarse.path, tmp_path / "kc_search.csv")
    changed = from_coarse.explanations["kc"].iloc[0]
    recs = pd.DataFrame({"recommendation_id": ["rec_0000000000000001"], "rule": ["kc_no_learning"],
                         "kc_model": ["Coarse"], "target_id": [changed]})
    sv = supported_changes_in(recs, tmp_path, language="sv")
    assert len(sv) == 1 and sv["text"].iloc[0].startswith("En sökning bland KC-modeller") and changed in sv["text"].iloc[0]
    assert supported_changes_in(recs, tmp_path / "nowhere").empty


def test_problem_groups_beyond_the_exhaustive_limit_are_found_by_hill_climbing(sim400):
    sim, steps = sim400
    res = search(steps, kc_model="Coarse", operators=("split_items",), max_exhaustive_items=3, max_steps=2,
                 cv="none")
    assert res.best_step == 2 and (res.path["operator"].iloc[1:] == "split_items").all()
    assert res.path["bic"].iloc[2] < res.path["bic"].iloc[0] and res.n_candidates > 2
    assert all(len(g) >= 1 for c in res.changes for g in c.groups.values())


def test_the_supported_change_reaches_the_report_and_its_csv_and_json(from_coarse, tmp_path):
    """Point 5: the finding "No learning" for a KC names the split, in the HTML (en/sv/da), CSV and JSON."""
    import json

    from markupsafe import escape
    from test_recommend import all_estimates

    from research.kcmodel.advice import supported_changes, with_supported_changes
    from research.names import write_csv
    from research.recommend import read_recommendations, recommend
    from research.report import write_report

    write_csv(from_coarse.path, tmp_path / "kc_search.csv")
    changed = from_coarse.explanations["kc"].iloc[0]
    recs = recommend(all_estimates(), cohort="c", n_learners=400)
    no_learning = recs.index[recs["rule"] == "kc_no_learning"][0]
    recs.loc[no_learning, ["kc_model", "target_id"]] = ["Coarse", changed]
    rec_id = recs.loc[no_learning, "recommendation_id"]
    named = with_supported_changes(recs, tmp_path)
    assert named["kc_model_change"].notna().sum() == 1
    english = named.loc[no_learning, "kc_model_change"]
    assert english.startswith("A search over KC models") and changed in english
    for lang in ("en", "sv", "da"):
        paths = write_report(named, tmp_path, language=lang, min_cell_size=10)
        page = paths["html"].read_text(encoding="utf-8")
        want = supported_changes(named.loc[[no_learning]], from_coarse.explanations, language=lang)["text"].iloc[0]
        assert str(escape(want)) in page, lang  # the whole sentence, translated, as the page escapes it
    csv = read_recommendations(paths["csv"])
    assert csv.set_index("recommendation_id").loc[rec_id, "kc_model_change"] == english
    records = json.loads(paths["json"].read_text(encoding="utf-8"))["records"]
    assert [r["kc_model_change"] for r in records if r["recommendation_id"] == rec_id] == [english]


def test_fine_pair_gap_plants_the_stated_effect_size(sim400):
    sim, _ = sim400
    kcs = sim.truth.kcs.set_index("kc")
    for pair in kcs.loc[kcs["kc_model"] == "Coarse", "fine_kcs"]:
        a, b = kcs.loc[pair.split("~~")].sort_values("beta").itertuples()
        assert b.beta - a.beta >= GAP - 1e-12 and b.gamma >= a.gamma  # apart at every opportunity
    assert sim.settings["fine_pair_gap"] == GAP
    with pytest.raises(ConfigError, match="fine_pair_gap must be a number of logits"):
        simulate_cohort(n_learners=5, fine_pair_gap=-1)


def test_a_cohort_without_an_items_table_searches_without_page_or_module(sim400):
    """The canonical items table of a log-only cohort has the page and module columns but no rows:
    the default factors are those the data has, so the search runs (problem groups) instead of stopping."""
    sim, steps = sim400
    empty = sim.items.iloc[0:0]
    res = search(steps.drop(columns=[c for c in ("page", "module") if c in steps.columns]), kc_model="Coarse",
                 items=empty, max_steps=1, budget_s=20, seed=0)
    assert len(res.path) >= 1 and not res.path["detail"].str.contains("page|module").any()


class _Ctx:
    """What kcmodel.notebook.kc_search uses of a notebook context, recording what it is told."""

    def __init__(self, items):
        self.data = type("Data", (), {"items": items})()
        self.records, self.tables = [], {}

    def write_table(self, frame, name):
        self.tables[name] = frame

    def ran(self, analysis, reason="", **numbers):
        self.records.append((analysis, reason, numbers))

    def skip(self, analysis, reason, **numbers):  # pragma: no cover - the cohort has KC tags and 400 learners
        raise AssertionError(f"{analysis} skipped: {reason}")


def test_the_notebooks_search_is_bounded_by_steps_so_the_same_data_give_the_same_search(sim400):
    """Notebook 03's search stops after its steps, not after some seconds: its result is the machine's
    to take longer over, never to change. A time limit that does stop it is recorded as such."""
    from types import SimpleNamespace

    from research.analyses import REASONS
    from research.kcmodel.notebook import kc_search

    sim, steps = sim400
    fitted = SimpleNamespace(best="Fine")
    cols = ["step", "operator", "kcs", "detail", "bic", "cv_log_loss", "chosen"]
    runs = []
    for _ in range(2):
        ctx = _Ctx(sim.items)
        result = kc_search(ctx, steps, fitted, max_steps=1, budget_s=None)
        assert result.stopped in ("max_steps", "converged") and ctx.records == [("kc_search", "", {})]
        runs.append(ctx.tables["kc_search"][cols])
    pd.testing.assert_frame_equal(runs[0], runs[1])
    ctx = _Ctx(sim.items)
    result = kc_search(ctx, steps, fitted, max_steps=5, budget_s=1e-6)
    assert result.stopped == "budget"
    assert ctx.records == [("kc_search", "search_time_limit", {"seconds": 1e-6, "max_steps": 5})]
    assert "1e-06 seconds before its 5 steps" in REASONS["search_time_limit"].format(seconds=1e-6, max_steps=5)
