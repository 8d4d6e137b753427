"""Every cohort runs to a report: real papermill runs through the `research` command.

- Every real dataset in ../shared/data goes through `research ingest` and `research run`
  (the wide 0/1 matrices through the mappings in tests/real_data_mappings/). To keep the
  suite's time in bounds the datasets are grouped into four cohorts, none holding two exports
  of the same data: attempts with KC tags (two groups), attempts without KC tags plus a pre/post
  total, and tests only. The OLI problem rollup is refused with a clear message.
- Simulated cohorts of 3 and 25 learners run in the default suite; 60, 400 and 8,000 learners
  are marked slow (8,000 takes minutes on a laptop: the size the design promises).

Each run must exit 0, write the report in its language and the record of analyses, and the
notebooks and the report must say which analyses were skipped and why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT, REAL_DATA, require_real_data

MAPPINGS = Path(__file__).parent / "real_data_mappings"
RESEARCH = [sys.executable, "-m", "research.cli"]

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
NOTEBOOKS = ("01_ingest_and_validate", "02_item_analysis", "03_learning_curves", "04_learning_gains",
             "05_equity_and_engagement", "06_recommendations")


def _env(home: Path) -> dict:
    env = dict(os.environ)
    env["RESEARCH_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("RESEARCH_PSEUDONYM_KEY", "test-key-not-secret")
    return env


def _research(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*RESEARCH, *map(str, args)], cwd=home, env=_env(home), capture_output=True, text=True,
                          timeout=timeout)


def _config(folder: Path, cohort: str, language: str = "en", **parameters) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"cohort": cohort, "language": language, "parameters": parameters}
    (folder / f"{cohort}.yaml").write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML


def _summary(report: Path) -> dict:
    analyses = pd.read_csv(report / "analyses.csv", dtype=str, keep_default_na=False)
    recs = pd.read_csv(report / "recommendations.csv") if (report / "recommendations.csv").is_file() else pd.DataFrame()
    manifest = json.loads((report / "manifest.json").read_text())
    return {
        "notebooks": [n["notebook"] for n in manifest["notebooks"] if n["outcome"] == "ok"],
        "seconds": {n["notebook"][:2]: round(n["seconds"], 1) for n in manifest["notebooks"]},
        "skipped": sorted(analyses.loc[analyses["status"] == "skipped", "analysis"]),
        "adapted": sorted(analyses.loc[analyses["status"] == "adapted", "analysis"]),
        "findings": len(recs),
        "analyses": analyses,
    }


def _run_and_check(home: Path, cohort: str, warehouse: Path, config_dir: Path, language: str = "en") -> dict:
    run = _research(home, "run", "--cohort", cohort, "--warehouse", warehouse, "--out", home / "reports",
                    "--config-dir", config_dir)
    assert run.returncode == 0, f"{cohort}: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr
    report = home / "reports" / cohort
    assert (report / f"report.{language}.html").is_file()
    summary = _summary(report)
    assert summary["notebooks"] == [f"{n}.ipynb" for n in NOTEBOOKS]
    return summary


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


# ------------------------------------------------------------------ simulated sizes


def _simulated_run(home: Path, n: int, *, language: str = "en") -> tuple[dict, Path]:
    from research.simulate import simulate_cohort

    cohort = f"sim-{n}"
    sim = simulate_cohort(n_learners=n, seed=n, cohort=cohort)
    written = sim.write(home / "exports" / cohort, formats=("datashop",))
    warehouse = home / "warehouse.duckdb"
    files = [written[k] for k in ("datashop", "assessments", "surveys", "learners", "items")]
    done = _research(home, "ingest", *files, "--cohort", cohort, "--warehouse", warehouse)
    assert done.returncode in (0, 2), done.stdout + done.stderr
    _config(home / "cohorts", cohort, language=language, run_bayes=False, n_boot=100)
    return _run_and_check(home, cohort, warehouse, home / "cohorts", language=language), home / "reports" / cohort


@pytest.fixture(scope="module")
def sim_home(tmp_path_factory):
    return tmp_path_factory.mktemp("sim_home")


def test_a_cohort_of_3_learners_runs_and_says_why_the_models_were_skipped_in_swedish(sim_home):
    summary, report = _simulated_run(sim_home, 3, language="sv")
    a = summary["analyses"].set_index("analysis")
    assert a.loc["irt", "message"] == "Rasch and 2PL models: 3 learners; this needs 30 per item: set min_n to go lower"
    assert a.loc["item_statistics", "status"] == "adapted"
    assert {"irt", "dif", "learning_curves"} <= set(summary["skipped"])
    html = (report / "report.sv.html").read_text()
    assert "Vad som inte analyserades, och varför" in html
    assert "Rasch- och 2PL-modeller: 3 deltagare; det krävs 30 per uppgift: sänk min_n för att gå lägre." in html
    nb = (report / "02_item_analysis.html").read_text()
    assert "3 learners; this needs 30 per item: set min_n to go lower" in nb


def test_a_cohort_of_25_learners_runs_with_item_tables_flagged_low_n(sim_home):
    summary, report = _simulated_run(sim_home, 25)
    items = pd.read_csv(report / "items.csv")
    assert len(items) > 0 and items["low_n"].all()
    a = summary["analyses"].set_index("analysis")
    assert a.loc["irt", "reason"] == "too_few_learners"
    html = (report / "report.en.html").read_text()
    assert "Rasch and 2PL models: 25 learners; this needs 30 per item: set min_n to go lower." in html


@pytest.mark.slow
@pytest.mark.parametrize("n", [60, 400])
def test_mid_sized_cohorts_run_every_analysis(sim_home, n):
    summary, _report = _simulated_run(sim_home, n)
    assert {"item_statistics", "irt", "kc_models", "learning_curves", "gains", "surveys", "funnel"} <= set(
        summary["analyses"].query("status == 'ran'")["analysis"])
    assert summary["findings"] > 0


@pytest.mark.slow
def test_a_cohort_of_8000_learners_runs_to_a_report(sim_home):
    summary, _report = _simulated_run(sim_home, 8000)
    assert "irt" not in summary["skipped"] and summary["findings"] > 0
