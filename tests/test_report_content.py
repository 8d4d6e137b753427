"""What the course developer's report shows: cards, curves with n, hidden options, labels,
item titles and links, the comparison with the predecessor, and no English in sv/da.

The predecessor pair is simulated with known truth (research.simulate: the too-easy and
mis-keyed items, the no-learning KC and the drop-out page fixed; a DIF item and a slow
page "revised" without effect) and compared by research.loop as notebook 07 does.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest
from test_recommend import all_estimates, distractors_table, kcs_table
from test_report import Page

from research.cohort_config import parse
from research.errors import ConfigError
from research.recommend import load_config, recommend, write_recommendations
from research.report import refresh_report, render_report
from research.report.since import finding_outcome, finding_outcomes

DAY = dt.date(2026, 5, 4)

# Common English function words and report words that never belong in a Swedish or Danish
# page. Words that are also Swedish or Danish ("at", "by", "for", "in", "to", "all", "have",
# "model", "interval") are left out on purpose.
ENGLISH = set(
    """the and of with this that these those which what where when here from are was were been has should would
    could than into there their they you your its not or an is it if how why who about after before only also
    more most less each every any none some other others whatever either neither between within without
    item items learner learners finding findings page pages threshold confidence option options share opportunity
    error rate key report cohort evidence fixed still new hidden shown show worse better change changes changed
    worked effect difference severity priority rank target measure estimate found since never shown learning curve
    observed fitted please open course knowledge component answer answers correct wrong group groups""".split()
)


def english_words(html: str, data_values: set[str]) -> list[str]:
    """English words in the visible text and the alt texts of a page, data values taken out."""
    page = Page(html)
    text = " ".join(page.text + [img.get("alt", "") for img in page.imgs])
    for value in sorted(data_values | {"course-research"}, key=len, reverse=True):
        if value:  # whole values only: "man" (a group) must not hide "many"
            text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", " ", text)
    words = re.findall(r"[A-Za-zÅÄÖÆØåäöæø]+", text)
    return sorted({w for w in words if w.lower() in ENGLISH})


def curves_table() -> pd.DataFrame:
    """Observed error rates of k_none at 7 opportunities; the 7th has fewer learners than the cell size."""
    n = [300, 280, 250, 200, 120, 40, 5]
    return pd.DataFrame({
        "kc_model": "Fine", "kc": "k_none", "measure": "error_rate", "opportunity": range(1, 8),
        "estimate": [0.5, 0.49, 0.5, 0.48, 0.5, 0.47, 0.5], "se": 0.02,
        "ci_low": [0.45, 0.44, 0.45, 0.43, 0.43, 0.35, 0.1], "ci_high": [0.55, 0.54, 0.55, 0.53, 0.57, 0.6, 0.9],
        "n": n, "n_obs": n, "share_of_start": [x / 300 for x in n], "predicted": 0.49, "method": "mean_cluster_se",
    })


def learners_table() -> pd.DataFrame:
    gender = ["female"] * 200 + ["male"] * 180 + ["other"] * 20
    role = ["team lead"] * 100 + ["specialist"] * 300
    return pd.DataFrame({"cohort": "c1", "learner_id": [f"x{i}" for i in range(400)], "gender": gender, "role": role})


LABELS = {"role": {"team lead": "teamledare", "specialist": "specialist"}, "attributes": {"role": "yrkesroll"},
          "kc_model": {"Fine": "Fin"}}


@pytest.fixture(scope="module")
def recs() -> pd.DataFrame:
    return recommend(all_estimates(), cohort="c1", n_learners=400)


@pytest.fixture(scope="module")
def estimates() -> dict[str, pd.DataFrame]:
    # option B of d1 (chosen by one learner) is suppressed by the estimate module
    dis = distractors_table().assign(suppressed_reason=[None, "fewer than 10 learners", None, None] + [None] * 4)
    return {"kcs": kcs_table(), "item_distractors": dis, "learning_curves": curves_table()}


def _items() -> pd.DataFrame:
    return pd.DataFrame({"cohort": "c1", "item_id": ["d1", "i_easy", "i_neg"],
                         "title": ["Which form do you send <b>first</b>?", "Hur många dagar?", "Lång text " * 30],
                         "url": ["https://course.example.org/items/d1", "javascript:alert(1)", None]})


# --------------------------------------------------------------------------- cards, options, curves


def test_fix_first_has_one_card_per_target(recs):
    # the 8 best-ranked targets include item d1, with a strong distractor (rank 7) and an unused option (rank 14)
    html = render_report(recs, language="en", generated=DAY, config=load_config({"priority": {"top_n": 8}}))
    fix_first = html.split('id="fix-first"')[1].split('id="all-findings"')[0]
    ranked = recs.sort_values("rank")
    first = ranked[ranked["fix_first"].astype("boolean").fillna(False)]  # only conclusive findings are fixed first
    targets = list(dict.fromkeys(zip(first["target_type"], first["target_id"], first["kc_model"].astype(str))))
    assert fix_first.count('<li class="card') == min(8, len(targets)) > 0
    # a second finding on a target of the top cards joins that card instead of taking a card of its own
    top_targets = targets[:8]
    joined = ranked[[t in top_targets for t in zip(ranked["target_type"], ranked["target_id"], ranked["kc_model"].astype(str))]]
    assert len(joined) > len(top_targets), "the fixture should have a target with two findings among the top cards"
    assert fix_first.count("Also found for this target:") == sum(joined.groupby(["target_type", "target_id"]).size() > 1)
    for title in joined["title"]:
        assert title in fix_first


def test_hidden_answer_options_are_said_not_dropped(recs, estimates):
    html = render_report(recs, language="en", estimates=estimates, evidence_figures=False)
    d1 = html.split('id="t-item-d1"')[1].split("</article>")[0]
    assert "Answer options chosen by fewer than 10 learners are not shown: 1." in d1
    alt = next(img["alt"] for img in Page(d1).imgs if img["alt"].startswith("Answer options"))
    assert "B:" not in alt and "A (key)" in alt
    da = render_report(recs, language="da", estimates=estimates, evidence_figures=False)
    assert "Svarmuligheder, som færre end 10 deltagere valgte, vises ikke: 1." in da


def test_learning_curve_shows_every_opportunity_with_its_n(recs, estimates):
    html = render_report(recs, language="en", estimates=estimates, evidence_figures=False)
    alts = [img["alt"] for img in Page(html).imgs if img["alt"].startswith("Learning curve of Knowledge component k_none")]
    assert len(alts) == 1
    for opportunity, n in zip(range(1, 7), [300, 280, 250, 200, 120, 40]):
        assert f"opportunity {opportunity}: " in alts[0] and f"(n = {n})" in alts[0]
    assert "opportunity 7" not in alts[0], "a point about fewer learners than the cell size is drawn"
    sv = render_report(recs, language="sv", estimates=estimates, evidence_figures=False)
    assert "övningstillfälle 1: 50,0\u00a0% (n = 300)" in sv


def test_data_values_are_translated_or_labelled(recs, estimates):
    html = render_report(recs, language="sv", learners=learners_table(), labels=LABELS, estimates=estimates,
                         evidence_figures=False)
    visible = Page(html).visible
    assert "kvinna" in visible and "man" in visible and "annat" in visible  # translated
    assert "female" not in visible and "other" not in visible
    assert "teamledare" in visible and "team lead" not in visible  # labelled by the cohort configuration
    assert "Deltagare efter yrkesroll" in visible
    assert "(kunskapskomponentmodell Fin)" in visible and "(kunskapskomponentmodell Fine)" not in visible
    with pytest.raises(ConfigError, match=r"labels\['gender'\] must be a mapping of value to label"):
        render_report(recs, labels={"gender": "kvinna"})


def test_items_show_their_title_and_a_safe_link(recs):
    html = render_report(recs, language="en", items=_items(), evidence_figures=False)
    page = Page(html)
    assert "Item d1 – Which form do you send <b>first</b>?" in page.visible  # shown as text
    assert "<b>first</b>" not in html and "&lt;b&gt;first&lt;/b&gt;" in html
    assert "https://course.example.org/items/d1" in page.links
    assert "Item i_easy – Hur många dagar?" in page.visible
    assert not [u for u in page.urls if u.startswith("javascript")]
    # a long item text is cut to 100 characters
    long = next(t for t in page.text if t.startswith("Item i_neg – "))
    assert long.endswith("…") and len(long) == len("Item i_neg – ") + 100


# --------------------------------------------------------------------------- the predecessor


@pytest.fixture(scope="module")
def pair():
    from research.loop import CohortComparison, changelog_for_followup, profile_cohort
    from research.simulate import simulate_cohort, simulate_followup

    before = simulate_cohort(n_learners=300, seed=11, cohort="autumn")
    after = simulate_followup(before, fixed=("too_easy", "miskeyed", "no_learning", "dropout"), seed=12, cohort="spring")
    pb, pa = profile_cohort(before), profile_cohort(after)
    doc = changelog_for_followup(before, after, claimed=("dif", "slow"), recommendations=pb.recommendations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = CohortComparison(seed=1).fit(pb, pa, doc)
    return {"before": before, "after": after, "recs": pa.recommendations, "status": cmp.recommendation_status_,
            "comparison": cmp.summary(), "targets": cmp.targets()}


def test_finding_outcome_says_fixed_only_with_evidence():
    assert finding_outcome("resolved", "C1", "improved") == "fixed"
    assert finding_outcome("resolved", "C1", "no_detectable_change") == "gone_not_shown"
    assert finding_outcome("resolved", "C1;C2", "improved;no_detectable_change") == "gone_not_shown"
    assert finding_outcome("resolved", "C1", None) == "gone_not_shown"
    assert finding_outcome("resolved", None, None) == "gone_unchanged"
    assert finding_outcome("persisting", "C5", "no_detectable_change") == "still_there"
    assert finding_outcome("new", None, None) == "new"


@pytest.mark.slow
def test_report_opens_with_what_became_of_last_times_findings(pair):
    status, comparison = pair["status"], pair["comparison"]
    outcomes = finding_outcomes(status)
    html = render_report(pair["recs"], language="en", predecessor="autumn", status=status, comparison=comparison,
                         generated=DAY, evidence_figures=False)
    page = Page(html)
    # the comparison is the first section of the page, and the contents list it first
    assert html.index('id="since"') < html.index('id="fix-first"')
    assert page.links.index("#since") < page.links.index("#fix-first")
    since = html.split('id="since"')[1].split('id="fix-first"')[0]
    n = outcomes.value_counts()
    earlier = int(n.get("fixed", 0) + n.get("still_there", 0) + n.get("gone_not_shown", 0) + n.get("gone_unchanged", 0))
    assert (f"Findings of cohort autumn: {earlier}. Fixed: {n.get('fixed', 0)}. "
            f"Still there: {n.get('still_there', 0)}.") in Page(since).visible
    assert n.get("fixed", 0) > 0 and n.get("still_there", 0) > 0
    # "fixed" exactly for the findings gone after a change that improved
    truly_fixed = (status["status"] == "resolved") & status["addressed_by"].notna() & (status["change_verdict"] == "improved")
    assert since.count('class="outcome-fixed"') == int(truly_fixed.sum())
    assert since.count('class="outcome-still_there"') == int((status["status"] == "persisting").sum())
    # every change of the log with its verdict: the slow page's revision had no detectable effect
    targets = pair["targets"]
    assert since.count("<caption>Change ") == len(targets)
    for row in targets.itertuples():
        word = {"improved": "worked", "no_detectable_change": "effect not shown"}.get(row.target_verdict)
        if word:
            assert re.search(rf"Change {row.change_id} \([^)]*\), [^:<]*{re.escape(str(row.target_id))}[^:<]*: {word}</caption>", since)
    assert "no_detectable_change" in set(targets["target_verdict"])
    for lang in ("sv", "da"):
        other = render_report(pair["recs"], language=lang, predecessor="autumn", status=status, comparison=comparison,
                              evidence_figures=False)
        assert {"sv": "Sedan kursomgången autumn", "da": "Siden holdet autumn"}[lang] in other


@pytest.mark.slow
def test_refresh_report_renders_the_comparison_after_notebook_07(pair, tmp_path):
    """What the pipeline does after the last notebook: the report from the run folder and the warehouse."""
    from research.warehouse import Warehouse

    wh_path = tmp_path / "wh.duckdb"
    with Warehouse(wh_path) as wh:
        for key in ("before", "after"):
            sim = pair[key]
            written = sim.write(tmp_path / sim.cohort, formats=("datashop",))
            items = pd.read_csv(written["items"], dtype=str)
            items["Title"] = "Titel " + items["Item"]
            items["Link"] = "https://course.example.org/" + items["Item"]
            items.to_csv(written["items"], index=False)
            mapping = written["items_mapping"].read_text().replace("columns:\n", "columns:\n  title: Title\n  url: Link\n")
            written["items_mapping"].write_text(mapping)
            wh.ingest([written[k] for k in ("datashop", "learners", "items")], cohort=sim.cohort)
    run = tmp_path / "run"
    run.mkdir()
    write_recommendations(pair["recs"], run)
    pair["status"].to_csv(run / "recommendation_status.csv", index=False)
    pair["comparison"].to_csv(run / "comparison.csv", index=False)
    config = parse({"cohort": "spring", "language": "da", "predecessor": "autumn",
                    "labels": {"gender": {"female": "kvinder"}}})
    paths = refresh_report(run, cohort="spring", warehouse=wh_path, config=config)
    html = paths["html"].read_text(encoding="utf-8")
    assert paths["html"].name == "report.da.html"
    assert "Siden holdet autumn" in html and "Virkede hver ændring?" in html
    assert "kvinder" in Page(html).visible
    first_item = pair["recs"].loc[pair["recs"]["target_type"] == "item", "target_id"].iloc[0]
    assert f"Titel {first_item}" in html and f"https://course.example.org/{first_item}" in Page(html).links
    # a run folder without findings (notebook 06 did not run) is left alone
    assert refresh_report(tmp_path / "empty", cohort="spring", warehouse=wh_path, config=config) is None


def test_a_refreshed_report_describes_the_rules_its_findings_were_made_with():
    """The page rendered again after notebook 07 states notebook 06's settings, never others."""
    from research.report.refresh import _recommend_config
    from research.report.render import _resolve_config

    made = load_config({"rules": {"too_easy": {"facility_min": 0.97}}}, kc_model="Fine")
    recs = pd.DataFrame({"rule": ["too_easy"]})
    recs.attrs["provenance"] = {"config": made.settings}
    cohort_file = parse({"cohort": "spring", "kc_model": "Coarse",
                         "thresholds": {"rules": {"too_easy": {"facility_min": 0.9}}}})
    assert _resolve_config(recs, _recommend_config(recs, cohort_file)).settings == made.settings
    # findings written before their settings were recorded: the cohort file's, KC model included
    recs.attrs["provenance"] = {}
    fallback = _resolve_config(recs, _recommend_config(recs, cohort_file))
    assert fallback.kc_model == "Coarse" and fallback.rule("too_easy")["facility_min"] == 0.9


# --------------------------------------------------------------------------- no English in sv and da


def _data_values(recs: pd.DataFrame, extra=()) -> set[str]:
    values = set()
    for col in ("target_id", "kc_model", "detail", "module", "page", "cohort", "recommendation_id"):
        if col in recs.columns:
            values |= {str(v) for v in recs[col].dropna()}
    return values | set(extra)


def test_swedish_and_danish_reports_have_no_english(recs, estimates, pair):
    """Render everything the report can show, in sv and da, and scan the visible text and alt texts."""
    learners = learners_table()
    data = _data_values(recs, ["c1", "Fine", "Coarse", "specialist", "man", "woman", "north", "south", "islands"])
    for lang in ("sv", "da"):
        html = render_report(recs, language=lang, learners=learners, labels=LABELS, estimates=estimates,
                             items=_items(), generated=DAY, n_learners=400)
        left = english_words(html, data | {"Which form do you send <b>first</b>?"})
        assert not left, f"{lang}: English words in the report: {left}"
        since = render_report(pair["recs"], language=lang, predecessor="autumn", status=pair["status"],
                              comparison=pair["comparison"], generated=DAY, max_figure_targets=3)
        data2 = _data_values(pair["recs"], ["autumn", "spring"] + list(pair["status"]["target_id"].dropna().astype(str))
                             + list(pair["comparison"]["change_id"].dropna().astype(str)))
        left = english_words(since, data2)
        assert not left, f"{lang}: English words in the comparison: {left}"
    # the scan does find English: the English report is full of it
    assert len(english_words(render_report(recs, language="en"), data)) > 20


def test_scan_catches_an_untranslated_sentence():
    html = "<html><body><p>Antal deltagare: 12. Learners who stop here are hidden.</p></body></html>"
    assert english_words(html, set()) == ["Learners", "are", "here", "hidden", "who"]
    assert english_words(html, {"Learners", "hid"}) == ["are", "here", "hidden", "who"]


# --------------------------------------------------------------------------- cohort configuration


def test_cohort_configuration_takes_labels():
    cfg = parse({"cohort": "c", "labels": {"gender": {"female": "kvinna"}, "kc_model": {"Fine": "Fin"}}})
    assert cfg.labels == {"gender": {"female": "kvinna"}, "kc_model": {"Fine": "Fin"}}
    assert parse({"cohort": "c"}).labels == {}
    with pytest.raises(ConfigError, match="labels must map a kind"):
        parse({"cohort": "c", "labels": {"gender": ["kvinna"]}})


def test_a_failed_refresh_keeps_notebook_06s_report_and_says_why(tmp_path):
    from research.pipeline import _refresh_report

    (tmp_path / "recommendations.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "report.en.html").write_text("notebook 06's report", encoding="utf-8")
    manifest: dict = {}
    _refresh_report(tmp_path, "c1", tmp_path / "missing.duckdb", None, manifest)
    assert manifest["report_refresh"].startswith("the report was not rendered again: JSONDecodeError")
    assert (tmp_path / "report.en.html").read_text(encoding="utf-8") == "notebook 06's report"


def test_the_report_is_rendered_again_only_when_a_later_notebook_or_labels_change_it():
    from types import SimpleNamespace

    from research.pipeline import report_needs_refresh

    run = [Path(f"{n}.ipynb") for n in ("01_ingest_and_validate", "05_equity_and_engagement", "06_recommendations")]
    assert not report_needs_refresh(run, None)  # notebook 06's report is the final one: drawn once
    assert not report_needs_refresh(run, SimpleNamespace(labels={}))
    assert report_needs_refresh(run, SimpleNamespace(labels={"gender": {"female": "kvinna"}}))
    assert report_needs_refresh(run + [Path("07_compare_cohorts.ipynb")], None)
    assert not report_needs_refresh(run[:2], None)  # no report notebook: nothing to render again


# --------------------------------------------------------------------------- the page, pinned

PINNED = Path(__file__).parent / "reference" / "report" / "report_content.sv.html"


def pinned_form(html: str) -> str:
    """The page without what changes on its own: inline CSS and JS, PNG bytes, the version."""
    html = re.sub(r"(<style>).*?(</style>)", r"\1\2", html, flags=re.S)
    html = re.sub(r"(<script>).*?(</script>)", r"\1\2", html, flags=re.S)
    html = re.sub(r'src="data:image/png;base64,[^"]*"', 'src="data:image/png"', html)
    return re.sub(r"course-research \d[^\s<\"]*", "course-research VERSION", html)


def test_the_page_is_pinned(recs, estimates):
    """The whole page (Swedish, labels, item titles and links, group sizes, curves, hidden options)
    equals the pinned copy; after an intended change of the page, write it anew with
    ``RESEARCH_REPIN=1 pytest tests/test_report_content.py -k pinned`` and read the diff."""
    html = render_report(recs, language="sv", generated=DAY, estimates=estimates, learners=learners_table(),
                         labels=LABELS, items=_items(), n_learners=400, max_figure_targets=4)
    got = pinned_form(html)
    if os.environ.get("RESEARCH_REPIN"):
        PINNED.parent.mkdir(parents=True, exist_ok=True)
        PINNED.write_text(got, encoding="utf-8")
    assert got == PINNED.read_text(encoding="utf-8")


def test_the_template_gets_plain_values_only(recs, estimates):
    """report_view_model gives the template text, numbers and lists, never a table or a record to format."""
    from research.report.figures import EmbeddedFigure
    from research.report.render import report_view_model

    model = report_view_model(recs, language="da", generated=DAY, estimates=estimates, learners=learners_table(),
                              labels=LABELS, items=_items(), max_figure_targets=2)

    def walk(x, where):
        if isinstance(x, dict):
            for key, v in x.items():
                walk(v, f"{where}.{key}")
        elif isinstance(x, (list, tuple)) and not isinstance(x, EmbeddedFigure):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")
        else:
            assert x is None or isinstance(x, (str, int, float, bool, EmbeddedFigure)), (where, type(x))

    walk(model, "model")
    assert model["top"] and all(card["confidence_t"] for card in model["recs"])
    assert model["figure_note"].startswith("Figurer vises for de 2 ")
