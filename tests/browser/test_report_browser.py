"""The report in headless Chromium: WCAG 2.1 A/AA (axe-core), keyboard use, offline, screenshot.

Needs Debian's ``chromium``, ``node`` and the npm dev dependencies (``npm ci`` in the
project root installs axe-core and playwright-core into node_modules/). Without them the
tests skip with the reason, unless RESEARCH_REQUIRE_BROWSER=1 (set by CI), where they fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.recommend import recommend

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("check_report.mjs")
LANGS = ["sv", "da", "en"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _require_browser() -> tuple[str, str]:
    node = shutil.which("node")
    chromium = _chromium()
    missing = []
    if not node:
        missing.append("node")
    if not chromium:
        missing.append("chromium (apt-get install chromium)")
    for pkg in ("playwright-core", "axe-core"):
        if not (ROOT / "node_modules" / pkg / "package.json").is_file():
            missing.append(f"node_modules/{pkg} (run `npm ci` in {ROOT})")
    if missing:
        message = "browser tests need " + ", ".join(missing)
        if os.environ.get("RESEARCH_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return node, chromium


@pytest.fixture(scope="module")
def browser_reports(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from test_recommend import all_estimates, distractors_table, kcs_table
    from test_report_content import curves_table

    from research.report import write_report

    recs = recommend(all_estimates(), cohort="browser", n_learners=400)
    rng = np.random.default_rng(5)
    learners = pd.DataFrame(
        {
            "learner_id": [f"l{i}" for i in range(400)],
            "gender": rng.choice(["woman", "man"], 400).tolist(),
            "region": ["north"] * 200 + ["south"] * 190 + ["islands"] * 7 + ["mountains"] * 3,
        }
    )
    # what a report with a predecessor shows at its top (notebook 07's tables), item titles and links,
    # hidden answer options and learning curves with n
    ids = list(recs["recommendation_id"])
    status = pd.DataFrame({
        "recommendation_id": ids[:3] + ["rec_0000000000000001"],
        "rule": list(recs["rule"][:3]) + ["too_easy"], "family": list(recs["family"][:3]) + ["items"],
        "target_type": list(recs["target_type"][:3]) + ["item"], "target_id": list(recs["target_id"][:3]) + ["i_old"],
        "kc_model": list(recs["kc_model"][:3]) + [None], "status": ["persisting", "new", "new", "resolved"],
        "addressed_by": [None, None, None, "C1"], "change_verdict": [None, None, None, "improved"],
        "title": list(recs["title"][:3]) + ["Too easy"]})
    comparison = pd.DataFrame({
        "target_type": ["item", "item"], "target_id": ["i_old", "i_old"], "kc_model": [None, None],
        "change_id": ["C1", "C1"], "change_type": ["item_revised"] * 2, "metric": ["error_rate", "difficulty"],
        "direction": ["toward_band", "toward_band"], "before": [0.03, -2.9], "after": [0.2, -1.2],
        "difference": [0.17, 1.7], "ci_low": [0.1, 1.1], "ci_high": [0.24, 2.3], "p_improved": [0.999, 0.999],
        "n_before": [300, 300], "n_after": [280, 280], "verdict": ["improved", "improved"],
        "target_verdict": ["improved", "improved"], "too_few_anchors": [False, False]})
    dis = distractors_table().assign(suppressed_reason=[None, "fewer than 10 learners"] + [None] * 6)
    items = pd.DataFrame({"item_id": ["d1"], "title": ["Which form comes first?"], "url": ["https://course.example.org/d1"]})
    out = tmp_path_factory.mktemp("browser_reports")
    return {
        lang: write_report(recs, out, language=lang, learners=learners, generated=dt.date(2025, 3, 5),
                           predecessor="earlier", status=status, comparison=comparison, items=items,
                           estimates={"kcs": kcs_table(), "item_distractors": dis, "learning_curves": curves_table()})["html"]
        for lang in LANGS
    }


def _check(node: str, chromium: str, html: Path, shot: Path) -> dict:
    proc = subprocess.run(
        [node, str(SCRIPT), str(html), str(shot), chromium],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("lang", LANGS)
def test_report_passes_axe_keyboard_offline_and_renders(browser_reports, lang, tmp_path):
    node, chromium = _require_browser()
    shot = tmp_path / f"report.{lang}.png"
    html = browser_reports[lang].read_text(encoding="utf-8")
    assert 'id="since"' in html and "https://course.example.org/d1" in html  # the new parts are checked too
    result = _check(node, chromium, browser_reports[lang], shot)

    assert result["lang"] == lang
    assert result["violations"] == [], json.dumps(result["violations"], indent=1)[:4000]
    assert result["axe_passes"] > 10
    assert result["external_requests"] == []
    assert result["console_errors"] == []
    kb = result["keyboard"]
    assert kb["reached_sort_button"], "Tab never reaches the table's sort buttons"
    assert kb["aria_sort_after"] in ("ascending", "descending") and kb["aria_sort_after"] != kb["aria_sort_before"]
    assert kb["order_changed"], "Enter on a sort button did not reorder the rows"
    assert kb["aria_sort_again"] != kb["aria_sort_after"]
    assert result["filter"]["visible"] > 0 and result["filter"]["visible_not_high"] == 0

    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[0] >= 600 and img.shape[1] >= 1000
    assert img.std() > 10, "the screenshot is blank"
    assert (img < 200).mean() > 0.01, "the screenshot shows almost no text"
