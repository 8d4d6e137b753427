"""Mastery per KC (research.estimate.mastery) and the rules 'cut practice' / 'add practice'.

The over- and under-practice numbers are checked against a plain per-learner count on the
traced p(known); the cohort call runs on a simulated cohort written as a DataShop export,
ingested into a real DuckDB warehouse and read back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.errors import ConfigError
from research.estimate.bkt import BKT, simulate_bkt
from research.estimate.mastery import MASTERY_COLUMNS, cohort_mastery, mastery_table
from research.recommend import recommend, validate_recommendations
from research.schema import output_schema, validate

TRUTH = {
    # learned fast, practised long: over-practice
    "quick": {"prior": 0.4, "learn": 0.4, "guess": 0.2, "slip": 0.08},
    # learned slowly, practised briefly: learners leave below mastery
    "slow": {"prior": 0.05, "learn": 0.05, "guess": 0.2, "slip": 0.1},
}


@pytest.fixture(scope="session")
def model_and_steps():
    quick = simulate_bkt(300, 14, {"quick": TRUTH["quick"]}, seed=1)
    slow = simulate_bkt(300, 4, {"slow": TRUTH["slow"]}, seed=2)
    steps = pd.concat([quick, slow], ignore_index=True)
    steps["kc_model"] = "sim"
    return BKT(seed=1).fit(steps, kc_model="sim"), steps


@pytest.fixture(scope="session")
def table(model_and_steps):
    model, steps = model_and_steps
    return mastery_table(model, steps=steps)


def test_mastery_numbers_follow_the_traced_knowledge(model_and_steps, table):
    model, steps = model_and_steps
    tr = model.trace().sort_values(["kc", "learner", "opportunity"])
    tr["duration_s"] = steps["duration_s"].to_numpy()[tr["row"].to_numpy()]
    t = table.set_index("kc")
    for kc, one in tr.groupby("kc"):
        after, total, under, firsts, hours = 0, 0, 0, [], 0.0
        for _, seq in one.groupby("learner"):
            known = seq["p_known_after"].to_numpy() >= 0.95
            total += len(seq)
            if known.any():
                i = int(np.argmax(known))
                firsts.append(i + 1)
                after += len(seq) - i - 1
                hours += seq["duration_s"].to_numpy()[i + 1:].sum() / 3600
            if not known[-1]:
                under += 1
        assert t.loc[kc, "over_practice_share"] == pytest.approx(after / total)
        assert t.loc[kc, "n_after_mastery"] == after
        assert t.loc[kc, "n_under"] == under
        assert t.loc[kc, "under_practice_share"] == pytest.approx(under / one["learner"].nunique())
        assert t.loc[kc, "opportunities_median"] == pytest.approx(np.median(firsts))
        assert t.loc[kc, "hours_after_mastery"] == pytest.approx(hours)
    assert t.loc["quick", "over_practice_share"] > 0.5
    assert t.loc["slow", "under_practice_share"] > 0.8
    assert list(table.columns) == MASTERY_COLUMNS
    assert len(validate(table, output_schema("mastery"), source_file="mastery.csv").rejects) == 0


def test_rules_cut_and_add_practice(table):
    recs = recommend({"mastery": table}, cohort="sim")
    validate_recommendations(recs)
    found = set(zip(recs["rule"], recs["target_id"]))
    assert ("mastery_cut_practice", "quick") in found
    assert ("mastery_add_practice", "slow") in found
    assert ("mastery_cut_practice", "slow") not in found and ("mastery_add_practice", "quick") not in found
    cut = recs[recs["rule"] == "mastery_cut_practice"].iloc[0]
    assert cut["metric_2"] == "hours_after_mastery" and cut["estimate_2"] > 0
    assert cut["ci_low"] <= cut["estimate"] <= cut["ci_high"] and cut["kc_model"] == "sim"


def test_rules_ignore_degenerate_skipped_and_small_kcs(table):
    t = table.copy()
    t.loc[t["kc"] == "quick", "degenerate"] = True
    t.loc[t["kc"] == "slow", "n_learners"] = 5
    assert recommend({"mastery": t}).empty
    assert len(recommend({"mastery": table}, {"rules": {"mastery_cut_practice": {"over_practice_min": 0.99}}})) == 1


def test_rule_titles_are_translated():
    from babel.support import Translations

    from research.recommend import RULES

    for lang, word in (("sv", "övning"), ("da", "øvelse")):
        tr = Translations.load(str(_locale_dir()), [lang])
        for name in ("mastery_cut_practice", "mastery_add_practice"):
            rule = RULES[name]
            for text in (rule.title, rule.explanation, rule.action):
                translated = tr.gettext(text)
                assert translated != text, (lang, text)
            assert word in tr.gettext(rule.title).lower(), (lang, tr.gettext(rule.title))


def _locale_dir():
    import research

    from pathlib import Path

    return Path(research.__file__).parent / "locale"


def test_cohort_mastery_from_the_warehouse(tmp_path):
    from research.cohort import load
    from research.simulate import simulate_cohort
    from research.simulate.exports import write_exports
    from research.warehouse import Warehouse

    sim = simulate_cohort(n_learners=60, seed=5, cohort="m", n_modules=2, planted=False)
    files = write_exports(sim, tmp_path / "exports")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.ingest([files["datashop"]], cohort="m")
    data = load("m", tmp_path / "w.duckdb")
    mastery, models = cohort_mastery(data, n_boot=5, n_folds=3, models=("pfa", "bkt"))
    # what notebook 03 does with them (the cell given to the notebooks' owner)
    import matplotlib

    matplotlib.use("Agg")
    from research.notebook import Context
    from research.plots import mastery as mastery_plots

    ctx = Context(cohort="m", warehouse=tmp_path / "w.duckdb", out_dir=tmp_path / "out", min_cell_size=10)
    ctx.write_table(mastery, "mastery")
    ctx.write_table(models, "student_models")
    ctx.save_figure(mastery_plots.plot_student_models(models), "student_models",
                    alt=mastery_plots.student_models_alt(models))
    ctx.save_figure(mastery_plots.plot_practice(mastery), "mastery", alt=mastery_plots.practice_alt(mastery))
    assert (tmp_path / "out" / "mastery.csv").is_file() and (tmp_path / "out" / "student_models.csv").is_file()
    assert mastery["kc_model"].nunique() == 1 and mastery["kc_model"].iloc[0] in data.kc_models()
    assert (mastery["status"] == "fit").sum() >= 3
    fitted = mastery[mastery["status"] == "fit"]
    assert fitted["learn_se"].notna().all()
    assert len(validate(mastery, output_schema("mastery"), source_file="mastery.csv").rejects) == 0
    assert sorted(models["model"]) == ["bkt", "pfa"]
    assert len(validate(models, output_schema("student_models"), source_file="student_models.csv").rejects) == 0
    with pytest.raises(ConfigError, match="not in the cohort"):
        cohort_mastery(data, kc_model="nope")


def test_tables_round_trip_through_csv_into_the_rules_and_plots(table, tmp_path):
    """What the cohort run writes (mastery.csv) is what notebook 06 reads back (load_estimates)."""
    import matplotlib

    matplotlib.use("Agg")
    from research.plots import mastery as plots
    from research.recommend import load_estimates

    table.to_csv(tmp_path / "mastery.csv", index=False)
    tables, status = load_estimates(tmp_path)
    assert status.set_index("table").loc["mastery", "source"] == "file"
    recs = recommend(tables)
    assert {"mastery_cut_practice", "mastery_add_practice"} <= set(recs["rule"])
    fig = plots.plot_practice(table)
    assert "quick" in plots.practice_alt(table)
    matplotlib.pyplot.close(fig)


def test_a_cohort_where_no_kc_can_be_traced_gives_a_table_not_a_traceback():
    steps = simulate_bkt(30, 1, {"once": TRUTH["quick"]}, seed=3)   # one opportunity each
    steps = pd.concat([steps, simulate_bkt(1, 5, {"solo": TRUTH["slow"]}, seed=4)], ignore_index=True)
    steps["kc_model"] = "sim"
    steps["step_row"] = np.arange(len(steps))
    mastery, models = cohort_mastery(None, steps=steps, n_boot=3, n_folds=3, models=("pfa", "bkt"))
    assert (mastery["status"] == "skipped").all()
    assert set(mastery["reason"]) == {"no learner had more than one opportunity on this KC",
                                      "only one learner practised this KC"}
    assert len(validate(mastery, output_schema("mastery"), source_file="mastery.csv").rejects) == 0
    assert recommend({"mastery": mastery}).empty
    assert set(models["model"]) == {"pfa", "bkt"}


def test_report_shows_the_mastery_findings_in_swedish_and_danish(table, tmp_path):
    import re

    from research.report.render import write_report

    recs = recommend({"mastery": table}, cohort="sim")
    for lang, words in (("sv", ["Minska övningen", "Andel övning efter behärskning", "Timmar efter behärskning"]),
                        ("da", ["Skær ned på øvelsen", "Andel øvelse efter beherskelse", "Timer efter beherskelse"])):
        html = write_report(recs, tmp_path / lang, language=lang)["html"].read_text(encoding="utf-8")
        text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S))
        for w in words:
            assert w in text, (lang, w)
        assert "over_practice_share" not in text and "hours_after_mastery" not in text
