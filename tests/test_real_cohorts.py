"""Every real dataset in ../shared/data runs to a report through `research ingest` and `research run`.

The wide 0/1 matrices load through the mappings in tests/real_data_mappings/. To keep the
suite's time in bounds the datasets are grouped into cohorts, none holding two exports of the
same data: attempts with KC tags (two groups), attempts without KC tags plus a pre/post total,
tests only, and the platforms' own logs (OLI Torus XML and log_act, Torus, Open edX, cmi5 and
ADL xAPI). The OLI problem rollup is refused with a clear message. (A file of its own, so
that pytest-xdist runs it beside the simulated sizes of tests/test_any_cohort_runs.py.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REAL_DATA, require_real_data
from tests.test_any_cohort_runs import _config, _research, _run_and_check

MAPPINGS = Path(__file__).parent / "real_data_mappings"

#: cohort -> the files it is ingested from: (path under ../shared/data, --format, mapping file or None)
REAL_COHORTS = {
    "datashop-a": [
        ("datashop_ds76_geometry_area/ds76_tx_All_Data_74_2018_0912_070949_partial_7students.txt", "datashop", None),
        ("datashop_ds96_student_step_and_tx/ds96_student_step_export.txt", "datashop-step", None),
        ("oli_chemistry_datashop_tx/ds6224_tx_All_Data_8657_2024_0824_140746.txt", "datashop", None),
    ],
    "datashop-b": [
        ("datashop_ds76_geometry_area/ds76_student_step_partial_4students_48kcmodels.txt", "datashop-step", None),
        ("datashop_ds96_student_step_and_tx/ds96_tx_export_example.txt", "datashop", None),
        ("oli_chemistry_datashop_tx/oli_general_chemistry_1_2021_tx.txt", "datashop", None),
    ],
    "hci-attempts": [
        ("homeostasis_concept_inventory_hci/HCI.csv", "csv", "hci_attempts.mapping.yaml"),
        ("homeostasis_concept_inventory_hci/HCIprepost.csv", "csv", "hci_prepost.mapping.yaml"),
    ],
    "tests-only": [
        ("homeostasis_concept_inventory_hci/HCI.csv", "csv", "hci_test.mapping.yaml"),
        ("learning_to_learn_grade6_grade9_prepost/LearningToLearn.csv", "csv", "learning_to_learn.mapping.yaml"),
        ("oli_psychology_mooc_doer_effect/student-rollup-ds863-with-video.txt", "csv", "psychology_rollup.mapping.yaml"),
    ],
    # the platforms' own logs, format and xAPI profile sniffed per file (a pattern: one `research ingest` of all its files)
    "torus-logs": [
        ("datashop_xml/learnsphere_oli_log_act/stats_log_act.txt", None, None),
        ("datashop_xml/oli_torus_dataset_export/*.xml", None, None),
        ("datashop_xml/oli_torus_legacy_logs/*.xml", None, None),
        ("xapi_platform_statements/oli_torus/*.json*", None, None),
    ],
    "xapi-specs": [
        ("xapi_platform_statements/openedx_event_routing_backends/xapi_expected/*.json", None, None),
        ("xapi_platform_statements/cmi5_spec/scenarios/*/*_statement.json", None, None),
        ("xapi_platform_statements/adl_spec/*.json", None, None),
        ("xapi_platform_statements/ralph_potsie_video/*.jsonl.gz", None, None),
    ],
}

# ------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    for files in REAL_COHORTS.values():
        for rel, _fmt, _mapping in files:
            if "*" in rel:
                require_real_data(*Path(rel).parts[:2])
                assert sorted(REAL_DATA.glob(rel)), f"no file matches {rel}"
            else:
                require_real_data(*Path(rel).parts)
    home = tmp_path_factory.mktemp("real_home")
    warehouse = home / "warehouse.duckdb"
    configs = home / "cohorts"
    results = {}
    for cohort, files in REAL_COHORTS.items():
        for rel, fmt, mapping in files:
            paths = sorted(REAL_DATA.glob(rel)) if "*" in rel else [REAL_DATA / rel]
            args = ["ingest", *paths, "--cohort", cohort, "--warehouse", warehouse] + (["--format", fmt] if fmt else [])
            if mapping:
                args += ["--mapping", MAPPINGS / mapping]
            done = _research(home, *args)
            assert done.returncode in (0, 2), f"{rel}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        _config(configs, cohort, run_bayes=False, n_boot=100)
        results[cohort] = _run_and_check(home, cohort, warehouse, configs)
    for cohort, s in results.items():  # what each real cohort produced, for the record (pytest -s shows it)
        print(f"{cohort}: notebooks {len(s['notebooks'])}, skipped {s['skipped']}, adapted {s['adapted']}, "
              f"findings {s['findings']}, seconds per notebook {s['seconds']}")
    return home, results


def test_every_real_dataset_runs_to_a_report(real_runs):
    home, results = real_runs
    assert set(results) == set(REAL_COHORTS)
    for cohort in ("datashop-a", "datashop-b"):
        ran = set(results[cohort]["analyses"].query("status != 'skipped'")["analysis"])
        assert {"item_statistics", "kc_models", "learning_curves", "funnel", "findings_items"} <= ran, cohort
        assert results[cohort]["findings"] > 0
        assert "no_attempts" not in set(results[cohort]["analyses"]["reason"])


def test_the_platforms_logs_run_to_a_report_from_their_attempts(real_runs):
    home, results = real_runs
    for cohort in ("torus-logs", "xapi-specs"):
        a = results[cohort]["analyses"].set_index("analysis")
        assert a.loc["item_statistics", "status"] != "skipped" and a.loc["funnel", "status"] == "ran", cohort
        assert a.loc["gains", "status"] == "skipped" and a.loc["dif", "reason"] == "no_groups", cohort
        # the knowledge tracing is recorded with the reason the KC models were not fitted, not left out
        assert a.loc["mastery", "status"] == "skipped" and a.loc["mastery", "reason"] == a.loc["kc_models", "reason"], cohort
    counts = pd.read_csv(home / "reports" / "xapi-specs" / "ingest_summary.csv")
    assert counts.loc[counts["level"] == "cohort", "n_attempts"].iloc[0] > 0  # Open edX problem checks and cmi5 answers


def test_the_hci_matrix_as_attempts_has_one_kc_per_item_and_its_gains_come_from_the_prepost_totals(real_runs):
    _home, results = real_runs
    a = results["hci-attempts"]["analyses"].set_index("analysis")
    assert a.loc["item_statistics", "status"] == "ran" and a.loc["irt", "status"] == "ran"
    assert a.loc["kc_models", "reason"] == "one_kc_per_item_once"  # every item met once: no learning curve
    assert a.loc["gains", "status"] == "ran"
    assert a.loc["reliability", "reason"] == "no_item_scores"  # the pre/post file has totals only


def test_a_tests_only_cohort_skips_every_attempt_analysis_and_reports_gains_and_reliability(real_runs):
    home, results = real_runs
    a = results["tests-only"]["analyses"].set_index("analysis")
    for name in ("kc_models", "learning_curves", "dif", "funnel", "time_on_task"):
        assert a.loc[name, "status"] == "skipped" and a.loc[name, "reason"] == "no_attempts", name
    assert a.loc["item_statistics", "reason"] == "items_from_tests" and a.loc["irt", "status"] == "ran"
    assert a.loc["gains", "status"] == "ran" and a.loc["reliability", "status"] == "ran"
    items = pd.read_csv(home / "reports" / "tests-only" / "items.csv")
    assert len(items) == 20 + 41  # the HCI items and the grade-6 sitting of LearningToLearn (the psychology tests are totals)
    assert results["tests-only"]["findings"] > 0
    gains = pd.read_csv(home / "reports" / "tests-only" / "gains.csv")
    ltl = gains[(gains["module"] == "LearningToLearn") & (gains["group_variable"] == "all")]
    assert len(ltl) == 1 and int(ltl["n"].iloc[0]) == 782
    html = (home / "reports" / "tests-only" / "report.en.html").read_text()
    assert "What was not analysed, and why" in html
    assert "Learning curves: no attempts were loaded (practice data from the course)." in html
    nb = (home / "reports" / "tests-only" / "03_learning_curves.html").read_text()
    assert "no attempts were loaded" in nb


def test_the_problem_rollup_is_refused_with_a_clear_message(tmp_path):
    path = require_real_data("oli_chemistry_datashop_tx", "oli_general_chemistry_1_2021_problem_rollup.txt")
    done = _research(tmp_path, "ingest", path, "--cohort", "x", "--warehouse", tmp_path / "w.duckdb")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "a DataShop export of a kind we do not read" in done.stdout + done.stderr
