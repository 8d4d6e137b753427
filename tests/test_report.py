"""Tests of the course developer's report: languages, locale formats, structure, outputs."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from test_recommend import all_estimates

from research.errors import ConfigError, DataError
from research.recommend import read_recommendations, recommend
from research.report import Formatter, render_report, write_report
from research.report.i18n import locale_dir

LANGS = ["sv", "da", "en"]
ROOT = Path(__file__).resolve().parents[1]


class Page(HTMLParser):
    """Collects what the tests look at: headings, images, links, ids, tables, visible text."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.headings: list[int] = []
        self.imgs: list[dict] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.urls: list[str] = []
        self.tables = 0
        self.tables_with_th = 0
        self.text: list[str] = []
        self._skip = 0
        self._table_stack: list[bool] = []
        self.html_lang = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href", "action", "data", "poster"):
            if a.get(key):
                self.urls.append(a[key])
        if tag == "html":
            self.html_lang = a.get("lang")
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag in ("script", "style"):
            self._skip += 1
        elif tag == "table":
            self.tables += 1
            self._table_stack.append(False)
        elif tag == "th" and self._table_stack:
            self._table_stack[-1] = True

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag == "table" and self._table_stack:
            self.tables_with_th += self._table_stack.pop()

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.text.append(data.strip())

    @property
    def visible(self) -> str:
        return " ".join(self.text)


@pytest.fixture(scope="module")
def recs() -> pd.DataFrame:
    return recommend(all_estimates(), cohort="2025-autumn", n_learners=400)


@pytest.fixture(scope="module")
def reports(recs) -> dict[str, str]:
    return {
        lang: render_report(recs, language=lang, generated=dt.date(2025, 3, 5), n_learners=400) for lang in LANGS
    }


@pytest.mark.parametrize("lang", LANGS)
def test_report_has_the_promised_sections(reports, recs, lang):
    page = Page(reports[lang])
    assert page.html_lang == lang
    assert {"fix-first", "all-findings", "rules", "about", "main"} <= page.ids
    assert {"section-item", "section-kc", "section-page"} <= page.ids
    # one row per finding in the sortable table, linking to its evidence section
    assert reports[lang].count('<tr data-severity="') == len(recs)
    assert reports[lang].count('class="sort"') == 6


@pytest.mark.parametrize("lang", LANGS)
def test_every_link_lands_on_evidence_and_headings_are_in_order(reports, lang):
    page = Page(reports[lang])
    internal = [h[1:] for h in page.links if h.startswith("#")]
    assert internal and all(target in page.ids for target in internal), set(internal) - page.ids
    assert page.headings[0] == 1 and page.headings.count(1) == 1
    jumps = [b - a for a, b in zip(page.headings, page.headings[1:])]
    assert max(jumps) <= 1, "a heading level is skipped"
    assert page.imgs and all(img.get("alt", "").strip() for img in page.imgs)
    assert page.tables == page.tables_with_th


@pytest.mark.parametrize("lang", LANGS)
def test_report_is_self_contained(reports, lang):
    html = reports[lang]
    page = Page(html)
    # assets are inline; the only other links are to sibling pages of the same run folder
    # (its index and the cohort comparison), which need no network either
    sibling = re.compile(r"[\w.-]+\.html")
    assert page.urls and all(u.startswith(("#", "data:image/png;base64,")) or sibling.fullmatch(u) for u in page.urls), [
        u[:40] for u in page.urls if not u.startswith(("#", "data:")) and not sibling.fullmatch(u)
    ]
    assert not [u for u in page.urls if sibling.fullmatch(u) and "src=\"" + u in html]  # never loaded as an asset
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_visible_text_is_translated(reports):
    """No English message is left in the Swedish and Danish pages (every string goes through gettext)."""
    pot = read_po((locale_dir() / "messages.pot").open("rb"))
    english = [m.id for m in pot if m.id and len(m.id) > 12]
    english_text = [re.split(r"%\(\w+\)s", m)[0].strip() for m in english]
    english_text = [t for t in english_text if len(t) > 12]
    for lang in ("sv", "da"):
        visible = Page(reports[lang]).visible
        left = [t for t in english_text if t in visible]
        assert not left, f"{lang}: untranslated text {left[:5]}"
    assert "Fix these first" in Page(reports["en"]).visible
    assert "Åtgärda dessa först" in reports["sv"] and "Ret disse først" in reports["da"]


def test_numbers_and_dates_follow_the_locale(reports):
    # facility of i_easy is 0.97; the DIF delta -2.58; the date 5 March 2025
    assert "97,0\u00a0%" in reports["sv"] and "97,0\u00a0%" in reports["da"] and "97.0%" in reports["en"]
    assert "5 mars 2025" in reports["sv"]
    assert "5. marts 2025" in reports["da"]
    assert "5 March 2025" in reports["en"]
    assert "2,58" in reports["sv"] and "2.58" in reports["en"]
    f = Formatter("da")
    assert f.integer(12345) == "12.345" and f.number(1234.5, 1) == "1.234,5"
    assert Formatter("sv").integer(12345) == "12\u00a0345"
    assert Formatter("en").duration(700) == "12 minutes"


def _source_messages() -> set[str]:
    method_map = [
        ("src/research/recommend/**.py", "python"),
        ("src/research/report/**.py", "python"),
        ("src/research/analyses.py", "python"),
        ("src/research/kcmodel/**.py", "python"),
        ("src/research/report/templates/**.j2", "jinja2"),
    ]
    options = {"src/research/report/templates/**.j2": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found = set()
    for _fn, _lineno, message, _comments, _ctx in extract_from_dir(
        str(ROOT), method_map, options, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_catalogues_cover_every_message_and_the_mo_files_are_current():
    messages = _source_messages()
    pot_ids = {m.id for m in read_po((locale_dir() / "messages.pot").open("rb")) if m.id}
    assert messages == pot_ids, f"re-extract messages.pot (see babel.cfg): new {messages - pot_ids}, gone {pot_ids - messages}"
    for lang in LANGS:
        po_path = locale_dir() / lang / "LC_MESSAGES" / "messages.po"
        catalog = read_po(po_path.open("rb"), locale=lang)
        ids = {m.id for m in catalog if m.id}
        assert ids == pot_ids, f"{lang}: update messages.po from messages.pot"
        if lang != "en":
            untranslated = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]
            assert not untranslated, f"{lang}: untranslated {untranslated[:5]}"
            problems = [(m.id, errs) for m, errs in catalog.check()]
            assert not problems, f"{lang}: placeholder problems {problems[:3]}"
        mo = read_mo((po_path.with_suffix(".mo")).open("rb"))
        compiled = {m.id: m.string for m in mo if m.id}
        source = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
        assert compiled == source, f"{lang}: messages.mo is stale; run pybabel compile -d src/research/locale"


def test_write_report_writes_html_csv_json_that_validate(recs, tmp_path):
    paths = write_report(recs, tmp_path / "reports" / "c1", language="sv", generated=dt.date(2025, 3, 5))
    assert paths["html"].name == "report.sv.html" and paths["html"].is_file()
    for kind in ("csv", "json"):
        back = read_recommendations(paths[kind])
        assert list(back["recommendation_id"]) == list(recs["recommendation_id"])


def test_bad_parameters_are_refused(recs):
    with pytest.raises(ConfigError, match=r"language='fi' is not available; valid: \['da', 'en', 'sv'\]"):
        render_report(recs, language="fi")
    with pytest.raises(ConfigError, match=r"min_cell_size=0 must be a positive whole number"):
        render_report(recs, min_cell_size=0)
    with pytest.raises(DataError, match="recommendations must be a DataFrame"):
        render_report(recs.to_dict("records"))


def test_empty_findings_still_render(tmp_path):
    empty = recommend({})
    html = render_report(empty, language="da", cohort="x")
    assert "Ingen fund" in html


def test_item_and_kc_sections_get_their_curve_and_options_figures(recs):
    from test_recommend import distractors_table, kcs_table

    estimates = {"kcs": kcs_table(), "item_distractors": distractors_table()}
    html = render_report(recs, language="sv", estimates=estimates, evidence_figures=False)
    alts = [img["alt"] for img in Page(html).imgs]
    assert any(a.startswith("Inlärningskurva för Kunskapskomponent k_none") for a in alts)
    options = [a for a in alts if a.startswith("Svarsalternativ för Uppgift d1")]
    # shares in Swedish format, the key named
    assert options and "A (rätt svar): 60,0\u00a0%" in options[0] and "C: 30,0\u00a0%" in options[0]
    # the fitted error rate at the first opportunity of k_none: 1 - logistic(0.0) = 50 %
    kc_alt = next(a for a in alts if "k_none" in a)
    assert "50,0\u00a0%" in kc_alt
    # suppressed rows are not drawn
    hidden = distractors_table().assign(suppressed_reason=["fewer than 10 learners"] * 4 + [""] * 4)
    html2 = render_report(recs, language="en", estimates={"item_distractors": hidden}, evidence_figures=False)
    assert not any(a.startswith("Answer options of Item d1") for a in (img["alt"] for img in Page(html2).imgs))


def test_figures_can_be_limited_to_the_most_important_targets(recs):
    html = render_report(recs, language="en", max_figure_targets=2)
    page = Page(html)
    assert len(page.imgs) == 2
    assert "Figures are drawn for the 2 targets with the most important findings" in html
    # every target keeps its section
    assert set(_anchors(recs)) <= page.ids


def _anchors(recs):
    from research.report.render import _anchor

    return [_anchor(t, i, m) for t, i, m in zip(recs["target_type"], recs["target_id"], recs["kc_model"].astype(object).where(recs["kc_model"].notna(), None))]
